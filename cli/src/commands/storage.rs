//! `sparkwing cache list|prune` and `sparkwing runs artifacts`: jobs' dependency caches and a
//! run's artifacts on this machine.

use super::{format_time, CliError, CmdResult};
use crate::cli::{ArtifactsArgs, CacheListArgs, CachePruneArgs, OutputFormat};
use crate::exit::ExitCode;
use crate::printer::{Column, Printer};
use serde_json::json;
use sparkwing_engine::abandoned;
use sparkwing_engine::artifact_store::{ArtifactStore, LocalArtifactStore};
use sparkwing_engine::cache_store::{CacheError, CacheStore, LocalCacheStore};
use sparkwing_engine::home::Home;
use sparkwing_engine::job_storage::bytes;
use sparkwing_engine::now_ms;
use std::path::{Path, PathBuf};

impl From<CacheError> for CliError {
    fn from(e: CacheError) -> Self {
        let code = match e {
            CacheError::BadCap(_) => ExitCode::Usage,
            CacheError::NotFound(_) => ExitCode::NotFound,
            _ => ExitCode::Internal,
        };
        CliError::new(code, e.to_string())
    }
}

/// Caches on a cluster (through its API) are not there yet: say so, as a usage error.
fn not_on_a_cluster(profile: &Option<String>) -> Result<(), CliError> {
    match profile {
        None => Ok(()),
        Some(p) => Err(CliError::new(
            ExitCode::Usage,
            format!(
                "caches are not yet on a cluster (profile {p:?}): `sparkwing cache` lists and prunes this machine's caches only; leave out --profile"
            ),
        )),
    }
}

fn store() -> Result<LocalCacheStore, CliError> {
    Ok(LocalCacheStore::of_home(&Home::from_env())?)
}

pub fn cache_list(args: CacheListArgs) -> CmdResult {
    not_on_a_cluster(&args.profile)?;
    let store = store()?;
    let mut entries = store.list()?;
    entries.sort_by(|a, b| b.last_used_ms.cmp(&a.last_used_ms).then(a.key.cmp(&b.key)));
    let out = Printer::new(args.output);
    match args.output {
        OutputFormat::Json => {
            for e in &entries {
                out.json_line(e);
            }
        }
        OutputFormat::Pretty => {
            const TABLE: [Column; 3] = [Column::left(40), Column::right(10), Column::left(20)];
            out.row(&TABLE, &[&"KEY", &"SIZE", &"SAVED", &"LAST USED"]);
            for e in &entries {
                out.row(
                    &TABLE,
                    &[
                        &e.key,
                        &bytes(e.size_bytes),
                        &format_time(e.created_ms),
                        &format_time(e.last_used_ms),
                    ],
                );
            }
            let total: u64 = entries.iter().map(|e| e.size_bytes).sum();
            out.line(format!(
                "{} entries, {} of {}",
                entries.len(),
                bytes(total),
                bytes(store.cap_bytes())
            ));
        }
    }
    Ok(ExitCode::Success)
}

pub fn cache_prune(args: CachePruneArgs) -> CmdResult {
    not_on_a_cluster(&args.profile)?;
    let store = store()?;
    let entries = store.list()?;
    let since = args
        .older_than
        .map(|d| now_ms() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let chosen = sparkwing_core::cache::prune_choice(&entries, args.all, since);
    let mut freed = 0;
    let mut removed = Vec::new();
    for key in chosen {
        match store.remove(&key) {
            Ok(()) => {
                freed += entries
                    .iter()
                    .find(|e| e.key == key)
                    .map_or(0, |e| e.size_bytes);
                removed.push(key);
            }
            // Removed meanwhile (another prune, an eviction).
            Err(CacheError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let out = Printer::new(args.output);
    match args.output {
        OutputFormat::Json => out.json_document(&json!({"removed": removed, "freed_bytes": freed})),
        OutputFormat::Pretty => {
            for k in &removed {
                out.line(format!("removed {k}"));
            }
            out.line(format!(
                "removed {} entries, freed {}",
                removed.len(),
                bytes(freed)
            ));
        }
    }
    Ok(ExitCode::Success)
}

pub fn artifacts(args: ArtifactsArgs) -> CmdResult {
    if let Some(p) = &args.run.profile {
        return Err(CliError::new(
            ExitCode::Usage,
            format!("artifacts are not yet on a cluster (profile {p:?}): `sparkwing runs artifacts` reads local runs only; leave out --profile"),
        ));
    }
    let home = Home::from_env();
    let store = abandoned::open_store(&home)?;
    let run = store.find_run(args.run.id())?;
    let published = store.artifacts(&run.id)?;
    let out = Printer::new(args.output);
    let Some(wanted) = &args.download else {
        match args.output {
            OutputFormat::Json => {
                for a in &published {
                    out.json_line(a);
                }
            }
            OutputFormat::Pretty => {
                const TABLE: [Column; 4] = [
                    Column::left(20),
                    Column::left(20),
                    Column::right(10),
                    Column::right(6),
                ];
                out.row(&TABLE, &[&"JOB", &"NAME", &"SIZE", &"FILES", &"PATH"]);
                for a in &published {
                    out.row(
                        &TABLE,
                        &[&a.job_id, &a.name, &bytes(a.size_bytes), &a.files, &a.path],
                    );
                }
            }
        }
        return Ok(ExitCode::Success);
    };
    let (job, name) = match wanted.split_once('/') {
        Some((j, n)) => (Some(j), n),
        None => (None, wanted.as_str()),
    };
    let matches: Vec<_> = published
        .iter()
        .filter(|a| a.name == name && job.is_none_or(|j| a.job_id == j))
        .collect();
    let a = match matches.as_slice() {
        [one] => *one,
        [] => {
            let have: Vec<String> = published
                .iter()
                .map(|a| format!("{}/{}", a.job_id, a.name))
                .collect();
            let have = if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            };
            return Err(CliError::new(
                ExitCode::NotFound,
                format!(
                    "artifact {wanted} not found in run {} (it has: {have})",
                    run.id
                ),
            ));
        }
        many => {
            let jobs: Vec<&str> = many.iter().map(|a| a.job_id.as_str()).collect();
            return Err(CliError::new(
                ExitCode::Usage,
                format!(
                    "artifact {name} is published by jobs {}; name one as JOB/{name}",
                    jobs.join(", ")
                ),
            ));
        }
    };
    let to = args.to.clone().unwrap_or_else(|| super::start_dir(None));
    let base = Path::new(&a.path)
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(&a.name));
    let dest = to.join(base);
    let artifacts = LocalArtifactStore::of_run(Path::new(&run.log_dir))
        .map_err(|e| CliError::new(ExitCode::Usage, e.to_string()))?;
    artifacts.fetch(&a.job_id, &a.name, &dest).map_err(|e| {
        CliError::new(
            match e {
                sparkwing_engine::artifact_store::ArtifactError::NotFound { .. } => {
                    ExitCode::NotFound
                }
                _ => ExitCode::Internal,
            },
            e.to_string(),
        )
    })?;
    match args.output {
        OutputFormat::Json => out.json_document(&json!({
            "job_id": a.job_id, "name": a.name, "path": dest, "size_bytes": a.size_bytes
        })),
        OutputFormat::Pretty => out.line(format!(
            "artifact {} of job {} → {} ({})",
            a.name,
            a.job_id,
            dest.display(),
            bytes(a.size_bytes)
        )),
    }
    Ok(ExitCode::Success)
}

/// `runs status`'s lines on a run's caches and artifacts (nothing when it has none).
pub fn print_run_storage(
    store: &sparkwing_engine::store::Store,
    run_id: &str,
) -> Result<(), CliError> {
    let caches = store.job_caches(run_id)?;
    if !caches.is_empty() {
        println!();
        for c in &caches {
            let from = match (c.outcome.as_str(), &c.restored_key) {
                ("fallback", Some(k)) => format!(" from {k}"),
                _ => String::new(),
            };
            let saved = c
                .saved
                .as_deref()
                .map(|s| format!(", {}", s.replace('_', " ")))
                .unwrap_or_default();
            println!(
                "cache:    {} {}: {}{from} (key {}){saved}",
                c.job_id, c.name, c.outcome, c.key
            );
        }
    }
    let artifacts = store.artifacts(run_id)?;
    if !artifacts.is_empty() {
        println!();
        for a in &artifacts {
            println!(
                "artifact: {} {}: {} ({})",
                a.job_id,
                a.name,
                a.path,
                bytes(a.size_bytes)
            );
        }
    }
    Ok(())
}
