//! A run of the API (its PipelineRun and the job states its runner reported) as the dashboard's
//! pages show it, and the frame of every cluster page.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use serde_json::Value;
use sparkwing_api::wire::{JobStateReport, ReportedJobState};
use sparkwing_core::time::parse_rfc3339;
use sparkwing_core::JobState;
use sparkwing_crds::pipeline_run::Source;
use sparkwing_dashboard::html::esc;
use sparkwing_dashboard::model::{Job, Run};
use sparkwing_dashboard::render;

use crate::api::handlers::runs;
use crate::api::session::Session;
use crate::api::{ApiError, ApiState};
use crate::labels::BRANCH_ANNOTATION;

/// A run as `GET /api/v1/runs/{ns}/{name}` answers it.
pub type RunView = sparkwing_api::wire::RunView<sparkwing_crds::pipeline_run::PipelineRun>;

/// The run `ns/name` with its job states, read as the session's caller.
pub async fn read_run(
    st: &ApiState,
    session: &Session,
    ns: &str,
    name: &str,
) -> Result<RunView, ApiError> {
    let axum::Json(v) = runs::get_run(
        State(st.clone()),
        session.principal.clone(),
        Path((ns.to_string(), name.to_string())),
    )
    .await?;
    Ok(v)
}

fn short(s: &str) -> &str {
    &s[..s.len().min(12)]
}

/// The run as the pages show it (a list entry has no PipelineRun: names, phase and trigger only).
pub fn run_model(v: &RunView) -> Run {
    let run = v.run.as_ref();
    let status = run.and_then(|r| r.status.as_ref());
    let (repo, commit) = match run.map(|r| &r.spec.source) {
        Some(Source::Git(g)) => (g.url.clone(), Some(g.revision.clone())),
        Some(Source::Upload(u)) => (format!("upload {}", short(&u.id)), None),
        Some(Source::Local(l)) => (l.path.clone(), None),
        Some(Source::External(_)) => ("external".to_string(), None),
        None => (String::new(), None),
    };
    let who = match &v.triggered_by {
        Some(t) => match t.host.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => format!("{}@{h}", t.principal),
            None => t.principal.clone(),
        },
        None => String::new(),
    };
    let args = run
        .map(|r| {
            Value::Object(
                r.spec
                    .args
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )
        })
        .unwrap_or(Value::Null);
    let error = status
        .filter(|s| s.phase == sparkwing_core::RunPhase::Failed)
        .and_then(|s| s.condition("Succeeded"))
        .map(|c| {
            if c.message.is_empty() {
                c.reason.clone()
            } else {
                format!("{}: {}", c.reason, c.message)
            }
        });
    Run {
        id: format!("{}/{}", v.namespace, v.name),
        href: format!("/runs/{}/{}", v.namespace, v.name),
        pipeline: v.pipeline.clone(),
        entrypoint: v.pipeline.clone(),
        runner: status
            .and_then(|s| s.runner.clone())
            .or_else(|| run.and_then(|r| r.spec.runner_pool.clone()))
            .unwrap_or_else(|| "kubernetes".to_string()),
        status: v.phase,
        args,
        repo,
        git_branch: run
            .and_then(|r| r.metadata.annotations.as_ref())
            .and_then(|a| a.get(BRANCH_ANNOTATION))
            .cloned(),
        git_commit: commit,
        who,
        pid: None,
        created_at: v.created.as_deref().and_then(parse_rfc3339).unwrap_or(0),
        started_at: status.and_then(|s| s.start_time).map(|t| t.0),
        finished_at: status.and_then(|s| s.completion_time).map(|t| t.0),
        exit_code: None,
        error,
        pull_request: v.triggered_by.as_ref().and_then(|t| t.pull_request.clone()),
    }
}

fn parse_state(s: &str) -> JobState {
    if s == "retrying" {
        return JobState::Running;
    }
    serde_json::from_value(Value::String(s.to_string())).unwrap_or(JobState::Pending)
}

fn reported_job(name: &str, v: &Value) -> Job {
    let mut j = Job::new(name, JobState::Pending);
    if let Ok(r) = serde_json::from_value::<JobStateReport>(v.clone()) {
        j.state = match r.state {
            ReportedJobState::Job(s) => s,
            ReportedJobState::Retrying => JobState::Running,
        };
        j.attempt = r.attempt;
        j.started_at = r.started_at.as_deref().and_then(parse_rfc3339);
        j.finished_at = r.finished_at.as_deref().and_then(parse_rfc3339);
        j.exit_code = r.exit_code;
        j.reason = r.reason;
        j.needs = r.needs;
    } else if let Some(s) = v.get("state").and_then(Value::as_str) {
        j.state = parse_state(s);
    }
    j
}

/// The run's jobs: in the order of the PipelineRun's status, each as its runner last reported
/// it (the state layer's job states, with the `needs` its runner reports: the graph's edges),
/// then any job reported but not in the status.
pub fn job_models(v: &RunView) -> Vec<Job> {
    let reported: BTreeMap<String, Value> = v.jobs.clone().unwrap_or_default();
    let listed = v
        .run
        .as_ref()
        .and_then(|r| r.status.as_ref())
        .map(|s| s.jobs.clone())
        .unwrap_or_default();
    let mut out: Vec<Job> = listed
        .iter()
        .map(|js| match reported.get(&js.name) {
            Some(r) => reported_job(&js.name, r),
            None => {
                let mut j = Job::new(&js.name, parse_state(&js.state));
                j.reason = js.reason.clone();
                j.attempt = js.attempt;
                j.exit_code = js.exit_code;
                j.started_at = js.started_at.map(|t| t.0);
                j.finished_at = js.finished_at.map(|t| t.0);
                j
            }
        })
        .collect();
    for (name, r) in &reported {
        if !listed.iter().any(|j| &j.name == name) {
            out.push(reported_job(name, r));
        }
    }
    out
}

/// A whole cluster page: the shared frame with who is logged in and the Log out button.
pub fn page(title: &str, active: &str, session: Option<&Session>, body: &str) -> String {
    let extra = match session {
        Some(s) => format!(
            "<form method=\"post\" action=\"/logout\" class=\"session\"><span class=\"muted\">{}</span> \
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\" id=\"logout\">Log out</button></form>",
            esc(&s.principal.name),
            esc(&s.csrf)
        ),
        None => String::new(),
    };
    render::page(title, active, &[("/", "Runs", "runs")], &extra, body)
}
