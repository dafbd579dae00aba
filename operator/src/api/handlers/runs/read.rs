//! `GET /api/v1/runs` (a page, newest first, live and archived) and `GET /api/v1/runs/{ns}/{name}`
//! (one run with its job states).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use sparkwing_core::reconcile::status::RunPhase;
use sparkwing_core::state::JobState;
use sparkwing_crds::pipeline_run::PipelineRun;

use sparkwing_state::{parse_run_cursor, run_cursor, RunFilter, RunKey, RunSummary};

use super::view::{archive_if_finished, archive_if_finished_given, view, RunList, RunView};
use crate::api::auth::{Principal, Scope};
use crate::api::{check_object_name, ApiError, ApiState};
use crate::store::{created_ms, Store};

pub const MAX_RUN_PAGE: usize = 500;
pub const DEFAULT_RUN_PAGE: usize = 100;

#[derive(Deserialize, Debug)]
pub struct ListQuery {
    #[serde(default)]
    pub namespace: Option<String>,
    /// Only runs of this pipeline (`spec.pipeline`).
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Only runs in this phase (`Pending`, `Running`, `Succeeded`, `Failed`, `Cancelled`).
    #[serde(default)]
    pub phase: Option<String>,
    /// Most runs in the answer (1 to [`MAX_RUN_PAGE`]; [`DEFAULT_RUN_PAGE`]).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Only runs created at or after this time (RFC 3339, e.g. `2026-12-01T00:00:00Z`).
    #[serde(default)]
    pub since: Option<String>,
    /// Where the previous page ended (its `next`).
    #[serde(default)]
    pub cursor: Option<String>,
}

/// A run's place in the list: newest first (creation time in ms), then namespace and name —
/// the run index's order, so its cursor is the list's.
type ListKey = (std::cmp::Reverse<i64>, String, String);

/// [`ListKey`] borrowing the run's names: a list orders every live run, and copies only its page's.
type LiveKey<'a> = (std::cmp::Reverse<i64>, &'a str, &'a str);

fn live_key(run: &PipelineRun) -> LiveKey<'_> {
    (
        std::cmp::Reverse(created_ms(run)),
        run.metadata.namespace.as_deref().unwrap_or_default(),
        run.metadata.name.as_deref().unwrap_or_default(),
    )
}

fn owned(k: LiveKey<'_>) -> ListKey {
    (k.0, k.1.to_string(), k.2.to_string())
}

fn parse_phase(s: &str) -> Result<RunPhase, ApiError> {
    RunPhase::from_phase_str(s).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "invalid phase {s:?}: Pending, Running, Succeeded, Failed or Cancelled"
        ))
    })
}

/// A `since` filter: an RFC 3339 time, as Unix ms.
fn parse_since(s: &str) -> Result<i64, ApiError> {
    s.parse::<k8s_openapi::jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid since {s:?}: an RFC 3339 time, e.g. 2026-12-01T00:00:00Z"
            ))
        })
}

/// `GET /api/v1/runs`: a page of runs, newest first, live and archived, filtered by namespace,
/// pipeline and phase on the server. The live runs come from one list of the backend, the
/// archived ones from the run index, a page at a time after the cursor (no archive read per run);
/// only the page's finished live runs are archived on the way.
pub async fn list(
    State(st): State<ApiState>,
    p: Principal,
    Query(q): Query<ListQuery>,
) -> Result<Json<RunList>, ApiError> {
    p.require(Scope::RunsRead)?;
    if let Some(ns) = &q.namespace {
        check_object_name("namespace", ns)?;
    }
    let phase = q.phase.as_deref().map(parse_phase).transpose()?;
    let limit = match q.limit {
        None => DEFAULT_RUN_PAGE,
        Some(n @ 1..=MAX_RUN_PAGE) => n,
        Some(n) => {
            return Err(ApiError::BadRequest(format!(
                "limit {n}: between 1 and {MAX_RUN_PAGE} runs"
            )))
        }
    };
    let after: Option<ListKey> = match q.cursor.as_deref() {
        None => None,
        Some(c) => {
            let (ms, ns, name) = parse_run_cursor(c).map_err(|_| {
                ApiError::BadRequest(format!("invalid cursor {c:?}: pass a list's `next`"))
            })?;
            Some((std::cmp::Reverse(ms), ns, name))
        }
    };
    let since_ms = q.since.as_deref().map(parse_since).transpose()?;
    let wanted = |run: &PipelineRun| {
        q.pipeline.as_ref().is_none_or(|p| *p == run.spec.pipeline)
            && phase.is_none_or(|ph| run.status.as_ref().map(|s| s.phase).unwrap_or_default() == ph)
            && since_ms.is_none_or(|t| created_ms(run) >= t)
    };
    let after_cursor = |k: &LiveKey<'_>| {
        after
            .as_ref()
            .is_none_or(|a| (k.0, k.1, k.2) > (a.0, a.1.as_str(), a.2.as_str()))
    };
    let live = st.runs.list(q.namespace.as_deref()).await?;
    // The first `limit + 1` live runs after the cursor, in list order: no more can be on the page
    // or show that a next one exists.
    let mut wanted_live: Vec<(LiveKey<'_>, &Arc<PipelineRun>)> = live
        .iter()
        .filter(|r| wanted(r))
        .map(|r| (live_key(r), r))
        .filter(|(k, _)| after_cursor(k))
        .collect();
    if wanted_live.len() > limit + 1 {
        wanted_live.select_nth_unstable_by(limit, |a, b| a.0.cmp(&b.0));
        wanted_live.truncate(limit + 1);
    }
    let mut out: BTreeMap<ListKey, (Arc<PipelineRun>, bool)> = wanted_live
        .into_iter()
        .map(|(k, r)| (owned(k), (r.clone(), true)))
        .collect();
    // Whether an index entry is a live run (shown as live): built at the first entry that needs
    // it, which a page of live runs never reaches.
    let mut live_keys: Option<HashSet<(&str, &str)>> = None;
    let live_names = || -> HashSet<(&str, &str)> {
        live.iter()
            .map(|r| {
                (
                    r.metadata.namespace.as_deref().unwrap_or_default(),
                    r.metadata.name.as_deref().unwrap_or_default(),
                )
            })
            .collect()
    };
    // Archived runs after the cursor, until a page's worth that are not live (a live run shows
    // as live) or the index has no more.
    // The (limit+1)-th live run after the cursor: an index entry listed after it can be neither
    // on this page nor the sign of a next one, so the index is read no further, and is asked
    // only for entries created no earlier (a busy cluster's first page is all live runs: then the
    // index answers none). Finished runs whose PipelineRun is kept are in the index too, and
    // skipped here: without this bound a list read past every one of them, page by page.
    let bound: Option<ListKey> = out.keys().nth(limit).cloned();
    let filter = RunFilter {
        namespace: q.namespace.clone(),
        pipeline: q.pipeline.clone(),
        phase: phase.map(|p| p.phase_str().to_string()),
        since_ms: since_ms.max(bound.as_ref().map(|b| b.0 .0)),
    };
    let mut cursor = q.cursor.clone();
    let mut archived = 0;
    loop {
        let page = st
            .store
            .meta
            .list_runs(&filter, cursor.as_deref(), limit + 1)
            .await?;
        let mut past_bound = false;
        for summary in &page.runs {
            let key = (
                std::cmp::Reverse(summary.created_ms),
                summary.key.namespace.clone(),
                summary.key.name.clone(),
            );
            if bound.as_ref().is_some_and(|b| key > *b) {
                past_bound = true;
                break;
            }
            if live_keys
                .get_or_insert_with(live_names)
                .contains(&(key.1.as_str(), key.2.as_str()))
            {
                continue;
            }
            let run = Arc::new(Store::summary_run(summary)?);
            out.insert(key, (run, false));
            archived += 1;
        }
        match page.next {
            Some(next) if archived <= limit && !past_bound => cursor = Some(next),
            _ => break,
        }
    }
    // The page's live runs' index entries, in one lookup (whether each is archived already).
    let live_in_page: Vec<RunKey> = out
        .iter()
        .take(limit)
        .filter(|(_, (_, is_live))| *is_live)
        .map(|(k, _)| RunKey::new(&k.1, &k.2))
        .collect();
    let indexed: HashMap<RunKey, RunSummary> = st
        .store
        .meta
        .get_runs(&live_in_page)
        .await?
        .into_iter()
        .map(|s| (s.key.clone(), s))
        .collect();
    let mut page = Vec::with_capacity(limit);
    let mut next = None;
    for (key, (run, is_live)) in &out {
        if page.len() == limit {
            // A run after a full page: there is a next one.
            next = page
                .last()
                .map(|(k, _): &(ListKey, RunView)| run_cursor(k.0 .0, &k.1, &k.2));
            break;
        }
        let v = if *is_live {
            let stored = indexed.get(&RunKey::new(&key.1, &key.2));
            let archived = archive_if_finished_given(&st, run, stored).await?;
            view(run, true, archived)
        } else {
            view(run, false, true)
        };
        page.push((key.clone(), v));
    }
    Ok(Json(RunList {
        runs: page.into_iter().map(|(_, v)| v).collect(),
        next,
    }))
}

pub async fn get_run(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<RunView>, ApiError> {
    check_object_name("namespace", &ns)?;
    check_object_name("run name", &name)?;
    p.require_read_run(&ns, &name)?;
    let mut v = match st.runs.get(&ns, &name).await? {
        Some(run) => {
            let archived = archive_if_finished(&st, &run).await?;
            let mut v = view(&run, true, archived);
            v.run = Some(run);
            v
        }
        None => match st.store.read_archive(&ns, &name).await? {
            Some(a) => {
                let mut v = view(&a.run, false, true);
                v.run = Some(a.run);
                v
            }
            None => return Err(ApiError::NotFound(format!("run {ns}/{name} not found"))),
        },
    };
    let mut jobs: BTreeMap<String, serde_json::Value> = st
        .store
        .meta
        .job_states(&RunKey::new(&ns, &name))
        .await?
        .into_iter()
        .collect();
    if v.phase.is_terminal() {
        let why = v.run.as_ref().map(end_reason).unwrap_or_default();
        settle_jobs(v.phase, &why, &mut jobs);
    }
    v.jobs = Some(jobs);
    if v.live && !v.phase.is_terminal() {
        v.concurrency = super::concurrency::run_status(&st, &RunKey::new(&ns, &name)).await?;
        v.job_groups = super::concurrency::job_statuses(&st, &RunKey::new(&ns, &name)).await?;
    }
    Ok(Json(v))
}

/// `Reason: message` of a finished run's `Succeeded` condition.
fn end_reason(run: &PipelineRun) -> String {
    run.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Succeeded"))
        .map(|c| {
            if c.message.is_empty() {
                c.reason.clone()
            } else {
                format!("{}: {}", c.reason, c.message)
            }
        })
        .unwrap_or_default()
}

/// A finished run whose runner died never reports the end of the jobs it was running: show them
/// as ended with the run (`cancelled` when the run was cancelled, else `failed`), with the run's
/// reason and `"settled": true`, instead of `running` forever. What the runner reported stays
/// stored as it was.
pub fn settle_jobs(phase: RunPhase, why: &str, jobs: &mut BTreeMap<String, serde_json::Value>) {
    for state in jobs.values_mut() {
        // Open: pending, running, or an approval gate still waiting.
        let open = state
            .get("state")
            .and_then(|s| serde_json::from_value::<JobState>(s.clone()).ok())
            .is_some_and(|s| !s.is_terminal());
        if !open {
            continue;
        }
        if let Some(obj) = state.as_object_mut() {
            let ended = if phase == RunPhase::Cancelled {
                JobState::Cancelled
            } else {
                JobState::Failed
            };
            obj.insert("state".into(), ended.as_str().into());
            obj.insert(
                "reason".into(),
                format!(
                    "the run ended {} before its runner reported this job's end{}",
                    phase.phase_str(),
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({why})")
                    }
                )
                .into(),
            );
            obj.insert("settled".into(), true.into());
        }
    }
}
