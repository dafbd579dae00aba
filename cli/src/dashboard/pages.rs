//! The local dashboard's pages: the run store read into the shared dashboard's model
//! (`sparkwing-dashboard`), rendered by it. The live parts (`runs_list_html`, `run_sections`)
//! are re-sent by the page streams, so the small script only swaps HTML in.

use super::api::{self, ApiError};
use super::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;
use sparkwing_core::RunPhase;
use sparkwing_dashboard::html::{esc, state_icon, state_word, url_enc};
use sparkwing_dashboard::model::{Job, Run};
use sparkwing_dashboard::render::{self, badge, basename, duration_html, time_html};
use sparkwing_engine::now_ms;
use sparkwing_engine::store::dashboard_queries::RunQuery;
use sparkwing_engine::store::{JobRecord, RunRecord};
use std::collections::HashMap;
use std::fmt::Write;

/// A stored run as the pages show it.
pub fn run_view(r: &RunRecord) -> Run {
    Run {
        id: r.id.clone(),
        href: format!("/runs/{}", url_enc(&r.id)),
        pipeline: r.pipeline.clone(),
        entrypoint: r.entrypoint.clone(),
        runner: r.runner.clone(),
        status: r.status,
        args: r.args.clone(),
        repo: r.repo_root.clone(),
        git_branch: r.git_branch.clone(),
        git_commit: r.git_commit.clone(),
        who: format!("{}@{}", r.user, r.host),
        pid: Some(r.pid),
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        exit_code: r.exit_code,
        error: r.error.clone(),
        pull_request: None,
    }
}

/// A stored job as the pages show it.
pub fn job_view(j: &JobRecord) -> Job {
    Job {
        job_id: j.job_id.clone(),
        needs: j.needs.clone(),
        optional: j.optional,
        is_finally: j.is_finally,
        state: j.state,
        reason: j.reason.clone(),
        attempt: j.attempt,
        started_at: j.started_at,
        finished_at: j.finished_at,
        exit_code: j.exit_code,
    }
}

fn page(title: &str, active: &str, body: &str) -> String {
    render::page(
        title,
        active,
        &[
            ("/", "Runs", "runs"),
            ("/pipelines", "Pipelines", "pipelines"),
        ],
        "",
        body,
    )
}

fn empty_store_html() -> String {
    "<section class=\"empty\" id=\"empty-store\"><h2>No runs yet</h2>\
     <p>This dashboard shows the runs that <code>sparkwing run</code> records on this machine \
     (in <code>$SPARKWING_HOME</code>). Start a first run from a project that has a \
     <code>.sparkwing/</code> directory:</p>\
     <pre><code>cd your-project\nsparkwing pipeline list\nsparkwing run &lt;pipeline&gt;</code></pre>\
     <p>No pipeline yet? <code>sparkwing pipeline new --name hello</code> scaffolds one that runs as it is.</p>\
     <p class=\"muted\">The run appears here as soon as it starts; there is no need to reload.</p></section>"
        .into()
}

fn query_string(q: &RunQuery, before: Option<&str>) -> String {
    let mut parts = Vec::new();
    if !q.pipelines.is_empty() {
        parts.push(format!("pipeline={}", url_enc(&q.pipelines.join(","))));
    }
    if !q.statuses.is_empty() {
        parts.push(format!("status={}", url_enc(&q.statuses.join(","))));
    }
    if let Some(r) = &q.repo {
        parts.push(format!("repo={}", url_enc(r)));
    }
    if q.limit != api::DEFAULT_LIMIT {
        parts.push(format!("limit={}", q.limit));
    }
    if let Some(b) = before {
        parts.push(format!("before={}", url_enc(b)));
    }
    parts.join("&")
}

/// The runs list (or the empty-store guide); re-sent live by `/ui/runs/stream`.
pub fn runs_list_html(runs: &[RunRecord], any_runs: bool, q: &RunQuery, now: i64) -> String {
    if !any_runs {
        return empty_store_html();
    }
    let views: Vec<Run> = runs.iter().map(run_view).collect();
    let more = (runs.len() as u32 == q.limit)
        .then(|| runs.last())
        .flatten()
        .map(|last| format!("/runs?{}", query_string(q, Some(&last.id))));
    render::runs_table(&views, now, more.as_deref())
}

fn html_response(status: StatusCode, html: String) -> Response {
    (status, Html(html)).into_response()
}

fn error_page(e: ApiError) -> Response {
    html_response(e.status, page("Error", "", &render::error_body(&e.message)))
}

/// `GET /` and `GET /runs`: the runs list with its filters.
pub async fn runs_page(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let q = match api::run_query(&params) {
        Ok(q) => q,
        Err(e) => return error_page(e),
    };
    let q2 = q.clone();
    let read = state
        .db
        .read(move |s| {
            let runs = s.query_runs(&q2)?;
            let total = s.count_runs(&q2)?;
            let any = total > 0 || s.count_runs(&RunQuery::default())? > 0;
            Ok((runs, total, any, s.pipeline_names()?))
        })
        .await;
    let (runs, total, any, names) = match read {
        Ok(v) => v,
        Err(e) => return error_page(ApiError::internal(e)),
    };
    let mut body = String::from("<div class=\"page-head\"><h1>Runs</h1>");
    if any {
        let _ = write!(
            body,
            "<p class=\"muted\" id=\"runs-count\">{total} run{}{}</p>",
            if total == 1 { "" } else { "s" },
            if q.pipelines.is_empty() && q.statuses.is_empty() && q.repo.is_none() {
                ""
            } else {
                " match"
            }
        );
    }
    body.push_str("</div>");
    let sel = |cur: &[String], v: &str| {
        if cur.len() == 1 && cur[0] == v {
            " selected"
        } else {
            ""
        }
    };
    body.push_str("<form class=\"filters\" method=\"get\" action=\"/runs\" id=\"filters\"><label>Pipeline <select name=\"pipeline\"><option value=\"\">All pipelines</option>");
    for n in &names {
        let _ = write!(
            body,
            "<option value=\"{v}\"{s}>{v}</option>",
            v = esc(n),
            s = sel(&q.pipelines, n)
        );
    }
    if q.pipelines.len() == 1 && !names.contains(&q.pipelines[0]) {
        let _ = write!(
            body,
            "<option value=\"{v}\" selected>{v}</option>",
            v = esc(&q.pipelines[0])
        );
    }
    body.push_str("</select></label><label>Status <select name=\"status\"><option value=\"\">Any status</option>");
    for s in RunPhase::ALL {
        let _ = write!(
            body,
            "<option value=\"{v}\"{s}>{w}</option>",
            v = s.local_str(),
            s = sel(&q.statuses, s.local_str()),
            w = state_word(s.local_str())
        );
    }
    body.push_str("</select></label>");
    if let Some(r) = &q.repo {
        let _ = write!(
            body,
            "<input type=\"hidden\" name=\"repo\" value=\"{}\"><span class=\"chip\">repo {}</span>",
            esc(r),
            esc(basename(r))
        );
    }
    body.push_str("<button type=\"submit\" class=\"js-hide\">Filter</button> <a href=\"/runs\">Clear</a></form>");
    let mut stream_q = q.clone();
    stream_q.before = None;
    let stream_url = format!("/ui/runs/stream?{}", query_string(&stream_q, None));
    let _ = write!(
        body,
        "<div id=\"runs-list\" data-stream=\"{}\" data-live=\"{}\">{}</div>",
        esc(&stream_url),
        q.before.is_none(),
        runs_list_html(&runs, any, &q, now_ms())
    );
    html_response(StatusCode::OK, page("Runs", "runs", &body))
}

fn run_not_found(id: &str) -> Response {
    let body = format!(
        "<section class=\"empty\" id=\"not-found\"><h1>Run not found</h1>\
         <p>There is no run <code>{}</code> in this store. It may have been recorded under another \
         <code>SPARKWING_HOME</code>.</p><p><a href=\"/\">See all runs</a></p></section>",
        esc(id)
    );
    html_response(StatusCode::NOT_FOUND, page("Run not found", "", &body))
}

/// Any unknown path.
pub async fn not_found_page(uri: Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return ApiError::new(StatusCode::NOT_FOUND, format!("no route {}", uri.path()))
            .into_response();
    }
    let body = render::not_found_body(uri.path());
    html_response(StatusCode::NOT_FOUND, page("Not found", "", &body))
}

/// The live sections of a run page, as HTML by section id.
pub fn run_sections(
    run: &RunRecord,
    jobs: &[JobRecord],
    gates: &[sparkwing_engine::store::GateRecord],
    selected: Option<&str>,
    now: i64,
) -> Value {
    let jobs: Vec<Job> = jobs.iter().map(job_view).collect();
    render::run_sections(
        &run_view(run),
        &jobs,
        super::gates::gates_html(run, gates),
        selected,
        now,
    )
}

/// `GET /runs/{id}`: one run: summary, graph, timeline, and a job's live log.
pub async fn run_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let rid = id.clone();
    let read = state
        .db
        .read(move |s| match s.find_run(&rid) {
            Ok(run) => {
                let jobs = s.jobs(&run.id)?;
                let gates = s.gates(&run.id)?;
                let artifacts = s.artifacts(&run.id)?;
                Ok(Some((run, jobs, gates, artifacts)))
            }
            Err(sparkwing_engine::store::StoreError::RunNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        })
        .await;
    let (run, jobs, gates, artifacts) = match read {
        Ok(Some(v)) => v,
        Ok(None) => return run_not_found(&id),
        Err(e) => return error_page(ApiError::internal(e)),
    };
    let asked = params.get("job").map(String::as_str);
    let views: Vec<Job> = jobs.iter().map(job_view).collect();
    let sel = render::default_job(&views, asked).map(|j| j.job_id.clone());
    let v = run_sections(&run, &jobs, &gates, sel.as_deref(), now_ms());
    let stream = format!(
        "/ui/runs/{}/stream{}",
        url_enc(&run.id),
        sel.as_deref()
            .map(|j| format!("?job={}", url_enc(j)))
            .unwrap_or_default()
    );
    let log_json = sel
        .as_deref()
        .map(|j| format!("/api/runs/{}/jobs/{}/logs", url_enc(&run.id), url_enc(j)));
    let body = render::run_body(
        &run_view(&run),
        &v,
        &render::RunPageParts {
            stream: &stream,
            selected: sel.as_deref(),
            actions: "",
            extra: &artifacts_section(&run.id, &artifacts),
            log_json: log_json.as_deref(),
        },
    );
    let title = v["title"].as_str().unwrap_or("Run").to_string();
    html_response(StatusCode::OK, page(&title, "runs", &body))
}

/// The run page's list of what its jobs published, with the command that downloads each (empty
/// when there is none).
fn artifacts_section(
    run_id: &str,
    artifacts: &[sparkwing_engine::store::ArtifactRecord],
) -> String {
    use sparkwing_dashboard::artifacts::{section, ArtifactRow, Download};
    let rows: Vec<ArtifactRow> = artifacts
        .iter()
        .map(|a| ArtifactRow {
            job: a.job_id.clone(),
            name: a.name.clone(),
            path: Some(a.path.clone()),
            size_bytes: a.size_bytes,
            download: Download::Command(format!(
                "sparkwing runs artifacts --run {run_id} --download {}/{}",
                a.job_id, a.name
            )),
        })
        .collect();
    section(&rows)
}

/// `GET /pipelines`: each repository's pipelines with their latest runs.
pub async fn pipelines_page(State(state): State<AppState>) -> Response {
    let summaries = match state.db.read(|s| s.pipeline_summaries(10)).await {
        Ok(v) => v,
        Err(e) => return error_page(ApiError::internal(e)),
    };
    let now = now_ms();
    let mut body = String::from("<div class=\"page-head\"><h1>Pipelines</h1></div>");
    if summaries.is_empty() {
        body.push_str(&empty_store_html());
        return html_response(StatusCode::OK, page("Pipelines", "pipelines", &body));
    }
    let mut repos: Vec<&str> = Vec::new();
    for s in &summaries {
        if !repos.contains(&s.repo_root.as_str()) {
            repos.push(&s.repo_root);
        }
    }
    for repo in repos {
        let _ = write!(
            body,
            "<section class=\"repo\"><h2>{} <span class=\"muted small\">{}</span></h2>\
             <table class=\"runs\"><thead><tr><th scope=\"col\">Pipeline</th><th scope=\"col\">Runs</th>\
             <th scope=\"col\">Last run</th><th scope=\"col\">Started</th><th scope=\"col\">Duration</th>\
             <th scope=\"col\">Recent runs (newest first)</th></tr></thead><tbody>",
            esc(basename(repo)),
            esc(repo)
        );
        for s in summaries.iter().filter(|s| s.repo_root == repo) {
            let Some(last) = s.recent.first() else {
                continue;
            };
            let start = last.started_at.unwrap_or(last.created_at);
            let mut recent = String::from("<span class=\"recent\">");
            for r in &s.recent {
                let _ = write!(
                    recent,
                    "<a href=\"/runs/{idu}\" class=\"mini st-{st}\" title=\"{id}: {w}\" aria-label=\"{id}: {w}\">{icon}</a>",
                    idu = url_enc(&r.id),
                    st = r.status.local_str(),
                    id = esc(&r.id),
                    w = state_word(r.status.local_str()),
                    icon = state_icon(r.status.local_str()),
                );
            }
            recent.push_str("</span>");
            let _ = write!(
                body,
                "<tr data-pipeline=\"{p}\"><td><a href=\"/runs?pipeline={pu}&amp;repo={ru}\"><strong>{p}</strong></a></td>\
                 <td class=\"num\">{n}</td><td>{badge} <a href=\"/runs/{idu}\">{id}</a></td><td>{t}</td><td class=\"num\">{d}</td><td>{recent}</td></tr>",
                p = esc(&s.pipeline),
                pu = url_enc(&s.pipeline),
                ru = url_enc(&s.repo_root),
                n = s.runs,
                badge = badge(last.status.local_str()),
                idu = url_enc(&last.id),
                id = esc(&last.id),
                t = time_html(start),
                d = duration_html(start, last.finished_at, now),
            );
        }
        body.push_str("</tbody></table></section>");
    }
    html_response(StatusCode::OK, page("Pipelines", "pipelines", &body))
}
