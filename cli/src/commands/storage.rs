//! `sparkwing cache list|prune` and `sparkwing runs artifacts`: jobs' dependency caches and a
//! run's artifacts, on this machine or, with `--profile`, on a cluster through its API.

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

fn store() -> Result<LocalCacheStore, CliError> {
    Ok(LocalCacheStore::of_home(&Home::from_env())?)
}

pub fn cache_list(args: CacheListArgs) -> CmdResult {
    if args.profile.is_some() {
        return remote::cache_list(args);
    }
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
    if args.profile.is_some() {
        return remote::cache_prune(args);
    }
    let store = store()?;
    let entries = store.list()?;
    let since = args
        .older_than
        .map(|d| now_ms() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let chosen = match &args.key {
        Some(key) if entries.iter().any(|e| &e.key == key) => vec![key.clone()],
        Some(key) => return Err(CacheError::NotFound(key.clone()).into()),
        None => sparkwing_core::cache::prune_choice(&entries, args.all, since),
    };
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
    if args.run.profile.is_some() {
        return remote::artifacts(args);
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
            OutputFormat::Pretty => artifact_table(
                &out,
                "PATH",
                published
                    .iter()
                    .map(|a| (&*a.job_id, &*a.name, a.size_bytes, a.files, a.path.clone())),
            ),
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

/// The table of `runs artifacts`, a local run's and `--profile`'s: job, name, size and files,
/// then `last` (a local artifact's path, a cluster one's kind).
fn artifact_table<'a, F: std::fmt::Display>(
    out: &Printer,
    last: &str,
    rows: impl Iterator<Item = (&'a str, &'a str, u64, F, String)>,
) {
    const TABLE: [Column; 4] = [
        Column::left(20),
        Column::left(20),
        Column::right(10),
        Column::right(6),
    ];
    out.row(&TABLE, &[&"JOB", &"NAME", &"SIZE", &"FILES", &last]);
    for (job, name, size, files, tail) in rows {
        out.row(&TABLE, &[&job, &name, &bytes(size), &files, &tail]);
    }
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

/// The same commands on a cluster, through its API.
mod remote {
    use super::*;
    use crate::commands::api_error;
    use crate::remote::target::{self, Target};
    use sparkwing_api::wire::{ArtifactView, CacheEntryView, CachePrune};
    use sparkwing_api::RemoteError;

    fn not_found_or(t: &Target, e: RemoteError) -> CliError {
        match &e {
            RemoteError::Status {
                status: 404,
                message,
                ..
            } => CliError::new(
                ExitCode::NotFound,
                format!("{message} (the API at {})", t.client.base_url()),
            ),
            RemoteError::Status {
                status: 400,
                message,
                ..
            } => CliError::new(ExitCode::Usage, message.clone()),
            _ => api_error(t, e),
        }
    }

    fn entry_table(out: &Printer, entries: &[CacheEntryView]) {
        const TABLE: [Column; 5] = [
            Column::left(16),
            Column::left(36),
            Column::left(36),
            Column::right(10),
            Column::left(20),
        ];
        out.row(
            &TABLE,
            &[
                &"NAMESPACE",
                &"SCOPE",
                &"KEY",
                &"SIZE",
                &"SAVED",
                &"LAST USED",
            ],
        );
        for e in entries {
            out.row(
                &TABLE,
                &[
                    &e.namespace,
                    &e.scope,
                    &e.key,
                    &bytes(e.size_bytes),
                    &format_time(e.created.0),
                    &format_time(e.last_used.0),
                ],
            );
        }
    }

    /// `cache list --profile P`: the cluster's entries, most recently used first.
    pub fn cache_list(args: CacheListArgs) -> CmdResult {
        let t = target::resolve(args.profile.as_deref())?;
        let mut entries = t
            .client
            .list_caches(args.namespace.as_deref())
            .map_err(|e| not_found_or(&t, e))?
            .entries;
        entries.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.key.cmp(&b.key)));
        let out = Printer::new(args.output);
        match args.output {
            OutputFormat::Json => {
                for e in &entries {
                    out.json_line(e);
                }
            }
            OutputFormat::Pretty => {
                entry_table(&out, &entries);
                let total: u64 = entries.iter().map(|e| e.size_bytes).sum();
                out.line(format!("{} entries, {}", entries.len(), bytes(total)));
            }
        }
        Ok(ExitCode::Success)
    }

    /// `cache prune --profile P`: removed by the API (`admin`).
    pub fn cache_prune(args: CachePruneArgs) -> CmdResult {
        let t = target::resolve(args.profile.as_deref())?;
        let req = CachePrune {
            namespace: args.namespace.clone(),
            scope: None,
            key: args.key.clone(),
            unused_for_secs: args.older_than.map(|d| d.as_secs()),
            all: args.all,
        };
        let removed = t
            .client
            .prune_caches(&req)
            .map_err(|e| not_found_or(&t, e))?
            .removed;
        let freed: u64 = removed.iter().map(|e| e.size_bytes).sum();
        let out = Printer::new(args.output);
        match args.output {
            OutputFormat::Json => out.json_document(&json!({
                "removed": removed.iter().map(|e| &e.key).collect::<Vec<_>>(),
                "freed_bytes": freed
            })),
            OutputFormat::Pretty => {
                for e in &removed {
                    out.line(format!(
                        "removed {} ({} in {})",
                        e.key, e.scope, e.namespace
                    ));
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

    /// `runs artifacts --profile P`: a cluster run's artifacts; `--download` fetches one's
    /// chunks and puts it in `--to` (a file under its name, a directory's content in a
    /// directory of its name).
    pub fn artifacts(args: ArtifactsArgs) -> CmdResult {
        let t = target::resolve(args.run.profile.as_deref())?;
        let (ns, name) = crate::commands::remote_runs::resolve_run(&t, args.run.id())?;
        let published = t
            .client
            .list_artifacts(&ns, &name)
            .map_err(|e| not_found_or(&t, e))?
            .artifacts;
        let out = Printer::new(args.output);
        let Some(wanted) = &args.download else {
            match args.output {
                OutputFormat::Json => {
                    for a in &published {
                        out.json_line(a);
                    }
                }
                OutputFormat::Pretty => artifact_table(
                    &out,
                    "KIND",
                    published.iter().map(|a| {
                        (
                            &*a.job,
                            &*a.name,
                            a.size_bytes,
                            a.files,
                            a.kind.as_str().to_string(),
                        )
                    }),
                ),
            }
            return Ok(ExitCode::Success);
        };
        let a = pick(&published, wanted, &format!("{ns}/{name}"))?;
        let full = t
            .client
            .get_artifact(&ns, &name, &a.job, &a.name)
            .map_err(|e| not_found_or(&t, e))?;
        let manifest = full.manifest.ok_or_else(|| {
            CliError::new(
                ExitCode::Api,
                format!(
                    "the API at {} answered artifact {} without its manifest",
                    t.client.base_url(),
                    a.name
                ),
            )
        })?;
        let to = args
            .to
            .clone()
            .unwrap_or_else(|| crate::commands::start_dir(None));
        let dest = to.join(&a.name);
        let tmp = std::env::temp_dir().join("sparkwing-artifacts");
        sparkwing_runner::stores::download(&t.client, &manifest, &dest, tmp).map_err(|e| {
            CliError::new(
                ExitCode::Api,
                format!("downloading artifact {} of job {}: {e}", a.name, a.job),
            )
        })?;
        match args.output {
            OutputFormat::Json => out.json_document(&json!({
                "job_id": a.job, "name": a.name, "path": dest, "size_bytes": a.size_bytes
            })),
            OutputFormat::Pretty => out.line(format!(
                "artifact {} of job {} → {} ({})",
                a.name,
                a.job,
                dest.display(),
                bytes(a.size_bytes)
            )),
        }
        Ok(ExitCode::Success)
    }

    /// The artifact `wanted` (`NAME` or `JOB/NAME`) among `published`.
    fn pick<'a>(
        published: &'a [ArtifactView],
        wanted: &str,
        run: &str,
    ) -> Result<&'a ArtifactView, CliError> {
        let (job, name) = match wanted.split_once('/') {
            Some((j, n)) => (Some(j), n),
            None => (None, wanted),
        };
        let matches: Vec<&ArtifactView> = published
            .iter()
            .filter(|a| a.name == name && job.is_none_or(|j| a.job == j))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => {
                let have: Vec<String> = published
                    .iter()
                    .map(|a| format!("{}/{}", a.job, a.name))
                    .collect();
                let have = if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                };
                Err(CliError::new(
                    ExitCode::NotFound,
                    format!("artifact {wanted} not found in run {run} (it has: {have})"),
                ))
            }
            many => {
                let jobs: Vec<&str> = many.iter().map(|a| a.job.as_str()).collect();
                Err(CliError::new(
                    ExitCode::Usage,
                    format!(
                        "artifact {name} is published by jobs {}; name one as JOB/{name}",
                        jobs.join(", ")
                    ),
                ))
            }
        }
    }
}
