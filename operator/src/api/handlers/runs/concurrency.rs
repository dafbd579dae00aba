//! `/api/v1/runs/{ns}/{name}/concurrency`: the concurrency groups of cluster runs. A run's
//! runner enters its group (`POST`, with the run's token), looks again every 500 ms while it
//! waits and renews its lease every 5 s while it holds a slot, and leaves it (`DELETE`) when the
//! run ends; the end of a run (`finish`) and collection also free its entries. A job's own group
//! works the same per job attempt (`"job"` in the body, `?job=` on `DELETE`): its entry is
//! keyed by group, run and job, apart from the run's own entry.
//!
//! The group's entries are in the state layer (`MetadataStore::change_group`), so every replica
//! answers the same; what a run does next is core's decision (`concurrency::shared_turn`: FIFO,
//! a lapsed lease passed over, `cancel_in_progress` cancelling older runs once), as for a local
//! run. The older runs to cancel are cancelled here, as `POST .../cancel` does.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use sparkwing_api::names::CANCELLED_BY_ANNOTATION;
use sparkwing_api::wire::{GroupRequest, GroupState, GroupStatus};
use sparkwing_core::concurrency::{self, GroupStep, SharedEntry};
use sparkwing_core::time::Time;
use sparkwing_crds::pipeline_run::CancelMode;
use sparkwing_state::{change_group_with, GroupEntry, RunKey};

use crate::api::auth::{Principal, Scope};
use crate::api::{check_object_name, read_json, ApiError, ApiState};
use crate::runs::backend::is_terminal;

/// `NS/NAME`: how a run is named in a group.
fn run_ref(k: &RunKey) -> String {
    format!("{}/{}", k.namespace, k.name)
}

/// The job of an entry as core names it (`None`: the run's own entry).
fn job_of(job: &str) -> Option<String> {
    (!job.is_empty()).then(|| job.to_string())
}

/// How a group's views name an entry: `NS/NAME`, or `NS/NAME/JOB` for a job's.
fn label(e: &GroupEntry) -> String {
    concurrency::shared_label(&run_ref(&e.run), job_of(&e.job).as_deref())
}

fn shared(entries: &[GroupEntry]) -> Vec<SharedEntry> {
    entries
        .iter()
        .map(|e| SharedEntry {
            run: run_ref(&e.run),
            job: job_of(&e.job),
            holding: e.holding,
            lease_until_ms: e.lease_until_ms,
            cancel_asked: e.cancel_asked,
        })
        .collect()
}

/// The status of run `me`'s entry in `group` (`job`: that job's entry; empty: the run's own)
/// from the group's entries at `now_ms` (`None`: it has no such entry).
pub(super) fn status_of(
    group: &str,
    entries: &[GroupEntry],
    me: &RunKey,
    job: &str,
    now_ms: i64,
) -> Option<GroupStatus> {
    let mine = entries.iter().find(|e| &e.run == me && e.job == job)?;
    let (view, _) = concurrency::shared_view(&shared(entries), &label(mine), mine.limit, now_ms);
    let waiting = !mine.holding;
    Some(GroupStatus {
        group: group.to_string(),
        job: job_of(job),
        limit: mine.limit,
        cancel_in_progress: mine.cancel_in_progress,
        state: if waiting {
            GroupState::Waiting
        } else {
            GroupState::Holding
        },
        since: Time(mine.since_ms),
        lease_until: Time(mine.lease_until_ms),
        waiting: waiting.then(|| concurrency::waiting_line(group, &view)),
        holders: if waiting { view.holders } else { Vec::new() },
        ahead: if waiting { view.ahead } else { Vec::new() },
        cancelled: Vec::new(),
    })
}

/// The run's place in its own group as a run view shows it (its first group: a run has one;
/// its jobs' entries are not shown).
pub(super) async fn run_status(
    st: &ApiState,
    key: &RunKey,
) -> Result<Option<GroupStatus>, ApiError> {
    let groups = st.store.meta.run_groups(key).await?;
    Ok(groups
        .iter()
        .find_map(|(g, entries)| status_of(g, entries, key, "", now_ms())))
}

/// The places of the run's jobs in their own groups (the jobs' entries, in group order): each
/// job's attempt holding or waiting for a slot now.
pub(super) async fn job_statuses(
    st: &ApiState,
    key: &RunKey,
) -> Result<Vec<GroupStatus>, ApiError> {
    let groups = st.store.meta.run_groups(key).await?;
    let now = now_ms();
    Ok(groups
        .iter()
        .flat_map(|(g, entries)| {
            entries
                .iter()
                .filter(|e| &e.run == key && !e.job.is_empty())
                .filter_map(move |e| status_of(g, entries, key, &e.job, now))
        })
        .collect())
}

/// What a turn decided, beside the entries it stored.
struct Turn {
    step: GroupStep,
    lapsed: Vec<String>,
    /// The renewal of a slot that is no longer there.
    lost: bool,
}

/// `POST .../concurrency` with `{"group", "limit"?, "cancelInProgress"?, "renew"?, "job"?}`: the
/// run's runner enters its group (or, with `job`, that job's attempt enters the job's group),
/// looks again, or renews its slot; where the entry stands now.
pub async fn enter(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
    body: Body,
) -> Result<Json<GroupStatus>, ApiError> {
    check_object_name("namespace", &ns)?;
    check_object_name("run name", &name)?;
    p.require(Scope::run(&ns, &name))?;
    let req: GroupRequest =
        read_json(body, st.config.limits.json_body, "concurrency request").await?;
    if !concurrency::valid_key(&req.group) {
        return Err(ApiError::BadRequest(format!(
            "concurrency group {:?} is invalid: use 1 to 128 letters, digits, '-', '_' and '.', not starting with '.'",
            req.group
        )));
    }
    if req.limit == 0 {
        return Err(ApiError::BadRequest(format!(
            "concurrency group {} has limit 0; a group admits at least one run",
            req.group
        )));
    }
    let job = req.job.clone().unwrap_or_default();
    if req.job.is_some() && !concurrency::valid_key(&job) {
        return Err(ApiError::BadRequest(format!(
            "job {job:?} is invalid: a job's concurrency group entry names the job by its id, 1 to 128 letters, digits, '-', '_' and '.', not starting with '.'"
        )));
    }
    let run = st
        .runs
        .get(&ns, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {ns}/{name} not found")))?;
    if is_terminal(&run) {
        return Err(ApiError::Conflict(format!(
            "run {ns}/{name} already finished; it cannot hold a slot of concurrency group {}",
            req.group
        )));
    }
    let key = RunKey::new(&ns, &name);
    let me = run_ref(&key);
    let who = if job.is_empty() {
        format!("run {me}")
    } else {
        format!("job {job} of run {me}")
    };
    let now = now_ms();
    let lease_ms = i64::try_from(st.config.group_lease.as_millis()).unwrap_or(i64::MAX);
    let lease_until = now.saturating_add(lease_ms);
    let (group, limit, cip, renew) = (
        req.group.clone(),
        req.limit,
        req.cancel_in_progress,
        req.renew,
    );
    let (me_in, job_in) = (key.clone(), job.clone());
    let (turn, entries) = change_group_with(st.store.meta.as_ref(), &req.group, move |entries| {
        let (me, job) = (me_in, job_in);
        let is_me = |e: &GroupEntry| e.run == me && e.job == job;
        if !entries.iter().any(is_me) {
            if renew {
                return (
                    Turn {
                        step: GroupStep::Wait,
                        lapsed: Vec::new(),
                        lost: true,
                    },
                    entries.clone(),
                );
            }
            let position = entries.iter().map(|e| e.position).max().unwrap_or(0) + 1;
            entries.push(GroupEntry {
                run: me.clone(),
                job: job.clone(),
                position,
                holding: false,
                limit,
                cancel_in_progress: cip,
                since_ms: now,
                lease_until_ms: lease_until,
                cancel_asked: false,
            });
        }
        let me_label = concurrency::shared_label(&run_ref(&me), job_of(&job).as_deref());
        let t = concurrency::shared_turn(&shared(entries), &me_label, limit, cip, now);
        entries.retain(|e| !t.lapsed.contains(&label(e)));
        for e in entries.iter_mut() {
            if is_me(e) {
                e.lease_until_ms = lease_until;
                e.limit = limit;
                e.cancel_in_progress = cip;
                if t.step == GroupStep::Take && !e.holding {
                    e.holding = true;
                    e.since_ms = now;
                }
            } else if let GroupStep::Cancel(older) = &t.step {
                if older.contains(&run_ref(&e.run)) {
                    e.cancel_asked = true;
                }
            }
        }
        (
            Turn {
                step: t.step,
                lapsed: t.lapsed,
                lost: false,
            },
            entries.clone(),
        )
    })
    .await?;
    if turn.lost {
        return Err(ApiError::Conflict(format!(
            "{who} no longer holds a slot of concurrency group {group}: its lease ended (no word from its runner for {} ms)",
            lease_ms
        )));
    }
    if !turn.lapsed.is_empty() {
        tracing::info!(%group, runs = ?turn.lapsed, "concurrency group: entries whose lease ended were removed");
    }
    let mut cancelled = Vec::new();
    if let GroupStep::Cancel(older) = &turn.step {
        let by = format!("concurrency group {group} (run {me})");
        for other in older {
            if cancel_older(&st, other, &by).await {
                cancelled.push(other.clone());
            }
        }
    }
    let mut status = status_of(&group, &entries, &key, &job, now).ok_or_else(|| {
        ApiError::Internal(format!(
            "{who} has no entry in concurrency group {group} after entering it"
        ))
    })?;
    status.cancelled = cancelled;
    Ok(Json(status))
}

/// Cancel the older run `other` (`NS/NAME`) of a group, as `POST .../cancel` does, recording
/// why in its `sparkwing.dev/cancelled-by` annotation. A run that is gone or already finished
/// needs nothing; a failure is logged (the newer run waits for the slot either way, and the
/// older run's lease frees it if its runner is gone). Whether a cancel was asked.
async fn cancel_older(st: &ApiState, other: &str, by: &str) -> bool {
    let Some((ns, name)) = other.split_once('/') else {
        return false;
    };
    match st.runs.get(ns, name).await {
        Ok(Some(run)) if !is_terminal(&run) => {}
        Ok(_) => return false,
        Err(e) => {
            tracing::warn!(run = %other, error = %e, "concurrency group: cannot read an older run to cancel it");
            return false;
        }
    }
    let note = BTreeMap::from([(CANCELLED_BY_ANNOTATION.to_string(), Some(by.to_string()))]);
    if let Err(e) = st.runs.annotate(ns, name, &note).await {
        tracing::warn!(run = %other, error = %e, "concurrency group: cannot record who cancelled a run");
    }
    match st.runs.cancel(ns, name, CancelMode::Cancelled).await {
        Ok(Some(_)) => {
            tracing::info!(run = %other, %by, "run cancel requested");
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(run = %other, error = %e, "concurrency group: cancelling an older run failed");
            false
        }
    }
}

/// The query of `DELETE .../concurrency`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaveQuery {
    /// The job whose attempt leaves the job's own group; none: the run's own group.
    job: Option<String>,
}

/// `DELETE .../concurrency[?job=JOB]`: the run's runner leaves its group (the run ended), or
/// the job's attempt leaves the job's group (the attempt ended); the run's other entries stay.
/// 204, also when there was no such entry.
pub async fn leave(
    State(st): State<ApiState>,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
    query: Result<Query<LeaveQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    check_object_name("namespace", &ns)?;
    check_object_name("run name", &name)?;
    p.require(Scope::run(&ns, &name))?;
    let Query(q) = query.map_err(|e| {
        ApiError::BadRequest(format!(
            "leaving a concurrency group: {e}; the only parameter is job=JOB"
        ))
    })?;
    let job = q.job.unwrap_or_default();
    let key = RunKey::new(&ns, &name);
    let mut left = Vec::new();
    for (group, entries) in st.store.meta.run_groups(&key).await? {
        if !entries.iter().any(|e| e.run == key && e.job == job) {
            continue;
        }
        let (k, j) = (key.clone(), job.clone());
        st.store
            .meta
            .change_group(
                &group,
                Box::new(move |entries| entries.retain(|e| !(e.run == k && e.job == j))),
            )
            .await?;
        left.push(group);
    }
    if !left.is_empty() {
        if job.is_empty() {
            tracing::info!(%ns, %name, groups = ?left, "run left its concurrency group");
        } else {
            tracing::info!(%ns, %name, %job, groups = ?left, "job left its concurrency group");
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Free the entries of a run that ended (its finish) or is gone; errors are logged: the lease
/// frees them anyway.
pub(crate) async fn release(st: &ApiState, key: &RunKey) {
    match st.store.meta.leave_groups(key).await {
        Ok(left) if !left.is_empty() => {
            tracing::info!(run = %run_ref(key), groups = ?left, "run left its concurrency group");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(run = %run_ref(key), error = %e, "cannot free the run's concurrency group entry; its lease frees it");
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
