//! Server-rendered pages. The live parts (`runs_list_html`, `run_sections`) are rendered here
//! too and re-sent by the page streams, so the small script only swaps HTML in.

use super::api::{self, ApiError};
use super::html::{esc, job_state_label, state_icon, state_word, url_enc};
use super::{dag, AppState};
use crate::text::format_time;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{json, Value};
use sparkwing_core::{JobState, RunPhase};
use sparkwing_engine::now_ms;
use sparkwing_engine::output::human_duration;
use sparkwing_engine::store::dashboard_queries::RunQuery;
use sparkwing_engine::store::{JobRecord, RunRecord};
use std::collections::HashMap;
use std::fmt::Write;

fn badge(state: &str) -> String {
    format!(
        "<span class=\"badge st-{s}\" data-state=\"{s}\"><span aria-hidden=\"true\">{icon}</span> {word}</span>",
        s = esc(state),
        icon = state_icon(state),
        word = esc(state_word(state)),
    )
}

fn time_html(ms: i64) -> String {
    format!(
        "<time datetime=\"{ms}\" data-ts=\"{ms}\">{} UTC</time>",
        format_time(ms)
    )
}

fn duration_html(start: i64, end: Option<i64>, now: i64) -> String {
    match end {
        Some(e) => format!(
            "<span class=\"dur\" data-start=\"{start}\" data-end=\"{e}\">{}</span>",
            human_duration(e - start)
        ),
        None => format!(
            "<span class=\"dur live\" data-start=\"{start}\">{}</span>",
            human_duration(now - start)
        ),
    }
}

fn basename(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(path)
}

fn short_commit(c: &str) -> &str {
    &c[..c.len().min(10)]
}

fn page(title: &str, active: &str, body: &str) -> String {
    let nav = |href: &str, name: &str, key: &str| {
        format!(
            "<a href=\"{href}\"{}>{name}</a>",
            if active == key {
                " aria-current=\"page\""
            } else {
                ""
            }
        )
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Sparkwing</title>\
         <link rel=\"stylesheet\" href=\"/assets/app.css\">\
         <script src=\"/assets/app.js\" defer></script></head>\
         <body><header class=\"top\"><a class=\"brand\" href=\"/\"><span aria-hidden=\"true\">◆</span> Sparkwing</a>\
         <nav aria-label=\"Main\">{runs}{pipelines}</nav>\
         <span id=\"live\" class=\"conn\" role=\"status\" aria-live=\"polite\"></span></header>\
         <main>{body}</main></body></html>",
        title = esc(title),
        runs = nav("/", "Runs", "runs"),
        pipelines = nav("/pipelines", "Pipelines", "pipelines"),
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

fn run_row(r: &RunRecord, now: i64) -> String {
    let start = r.started_at.unwrap_or(r.created_at);
    let git = match (&r.git_branch, &r.git_commit) {
        (Some(b), Some(c)) => format!(
            "<span class=\"git\">{} @ <code>{}</code></span>",
            esc(b),
            esc(short_commit(c))
        ),
        (Some(b), None) => format!("<span class=\"git\">{}</span>", esc(b)),
        (None, Some(c)) => format!("<code>{}</code>", esc(short_commit(c))),
        _ => String::new(),
    };
    format!(
        "<tr data-run=\"{id}\" data-status=\"{st}\"><td>{badge}</td>\
         <td><a class=\"run-link\" href=\"/runs/{idu}\">{id}</a></td>\
         <td><a href=\"/runs?pipeline={pu}\">{pipeline}</a></td>\
         <td>{started}</td><td class=\"num\">{dur}</td>\
         <td>{user}@{host}</td>\
         <td><span title=\"{repo}\">{repo_base}</span> {git}</td></tr>",
        id = esc(&r.id),
        idu = url_enc(&r.id),
        st = r.status.local_str(),
        badge = badge(r.status.local_str()),
        pu = url_enc(&r.pipeline),
        pipeline = esc(&r.pipeline),
        started = time_html(start),
        dur = duration_html(start, r.finished_at, now),
        user = esc(&r.user),
        host = esc(&r.host),
        repo = esc(&r.repo_root),
        repo_base = esc(basename(&r.repo_root)),
    )
}

/// The runs list (or the empty-store guide); re-sent live by `/ui/runs/stream`.
pub fn runs_list_html(runs: &[RunRecord], any_runs: bool, q: &RunQuery, now: i64) -> String {
    if !any_runs {
        return empty_store_html();
    }
    if runs.is_empty() {
        return "<p class=\"empty\" id=\"no-match\">No runs match these filters. <a href=\"/runs\">Show all runs</a>.</p>".into();
    }
    let mut out = String::from(
        "<table class=\"runs\"><thead><tr><th scope=\"col\">Status</th><th scope=\"col\">Run</th>\
         <th scope=\"col\">Pipeline</th><th scope=\"col\">Started</th><th scope=\"col\">Duration</th>\
         <th scope=\"col\">Who</th><th scope=\"col\">Where</th></tr></thead><tbody>",
    );
    for r in runs {
        out.push_str(&run_row(r, now));
    }
    out.push_str("</tbody></table>");
    if runs.len() as u32 == q.limit {
        if let Some(last) = runs.last() {
            let _ = write!(
                out,
                "<p class=\"more\"><a href=\"/runs?{}\">Older runs →</a></p>",
                esc(&query_string(q, Some(&last.id)))
            );
        }
    }
    out
}

fn html_response(status: StatusCode, html: String) -> Response {
    (status, Html(html)).into_response()
}

fn error_page(e: ApiError) -> Response {
    let body = format!(
        "<h1>Error</h1><p class=\"error-box\">{}</p><p><a href=\"/\">Back to runs</a></p>",
        esc(&e.message)
    );
    html_response(e.status, page("Error", "", &body))
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
    let body = format!(
        "<section class=\"empty\"><h1>Page not found</h1><p>Nothing here at <code>{}</code>.</p>\
         <p><a href=\"/\">See all runs</a></p></section>",
        esc(uri.path())
    );
    html_response(StatusCode::NOT_FOUND, page("Not found", "", &body))
}

/// The job a run page shows the log of: the asked one, else a running one, else the first
/// failed one, else the first that ran.
pub fn default_job<'a>(jobs: &'a [JobRecord], asked: Option<&str>) -> Option<&'a JobRecord> {
    if let Some(a) = asked {
        if let Some(j) = jobs.iter().find(|j| j.job_id == a) {
            return Some(j);
        }
    }
    jobs.iter()
        .find(|j| j.state == JobState::Running)
        .or_else(|| jobs.iter().find(|j| j.state == JobState::Failed))
        .or_else(|| jobs.iter().find(|j| j.started_at.is_some()))
        .or_else(|| jobs.first())
}

fn summary_html(run: &RunRecord, now: i64) -> String {
    let start = run.started_at.unwrap_or(run.created_at);
    let mut out = format!(
        "<div class=\"run-head\"><h1><span class=\"run-status\" id=\"run-status\" data-state=\"{st}\">{badge}</span> \
         {pipeline} <span class=\"muted run-id\">{id}</span></h1></div>",
        st = run.status.local_str(),
        badge = badge(run.status.local_str()),
        pipeline = esc(&run.pipeline),
        id = esc(&run.id),
    );
    if let Some(e) = &run.error {
        let _ = write!(
            out,
            "<div class=\"error-box\" role=\"alert\"><strong>Error:</strong> {}</div>",
            esc(e)
        );
    }
    out.push_str("<dl class=\"facts\">");
    let mut fact = |k: &str, v: String| {
        let _ = write!(out, "<div><dt>{k}</dt><dd>{v}</dd></div>");
    };
    fact("Started", time_html(start));
    fact("Duration", duration_html(start, run.finished_at, now));
    fact(
        "Exit code",
        run.exit_code
            .map(|c| format!("<code>{c}</code>"))
            .unwrap_or_else(|| "<span class=\"muted\">—</span>".into()),
    );
    fact(
        "Who",
        format!(
            "{}@{} <span class=\"muted\">(pid {})</span>",
            esc(&run.user),
            esc(&run.host),
            run.pid
        ),
    );
    fact(
        "Repository",
        format!(
            "<span title=\"{}\">{}</span>",
            esc(&run.repo_root),
            esc(&run.repo_root)
        ),
    );
    fact(
        "Branch",
        run.git_branch
            .as_deref()
            .map(esc)
            .unwrap_or_else(|| "<span class=\"muted\">—</span>".into()),
    );
    fact(
        "Commit",
        run.git_commit
            .as_deref()
            .map(|c| format!("<code title=\"{}\">{}</code>", esc(c), esc(short_commit(c))))
            .unwrap_or_else(|| "<span class=\"muted\">—</span>".into()),
    );
    fact(
        "Entrypoint",
        format!(
            "<code>{}</code> <span class=\"muted\">({})</span>",
            esc(&run.entrypoint),
            esc(&run.runner)
        ),
    );
    out.push_str("</dl>");
    out.push_str("<h2>Args</h2>");
    match run.args.as_object().filter(|o| !o.is_empty()) {
        None => out.push_str("<p class=\"muted\">No args.</p>"),
        Some(o) => {
            out.push_str("<table class=\"args\"><tbody>");
            for (k, v) in o {
                let shown = match v {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                let _ = write!(
                    out,
                    "<tr><th scope=\"row\"><code>--{}</code></th><td><code>{}</code></td></tr>",
                    esc(k),
                    esc(&shown)
                );
            }
            out.push_str("</tbody></table><p class=\"muted small\">Secret values are masked before they are recorded.</p>");
        }
    }
    out
}

fn timeline_html(run: &RunRecord, jobs: &[JobRecord], now: i64) -> String {
    if jobs.is_empty() {
        return "<p class=\"muted\">No jobs yet.</p>".into();
    }
    let t0 = run.started_at.unwrap_or(run.created_at);
    let ends = jobs.iter().filter_map(|j| j.finished_at);
    let t1 = run
        .finished_at
        .unwrap_or(now)
        .max(ends.max().unwrap_or(t0))
        .max(t0 + 1);
    let span = (t1 - t0) as f64;
    let mut out =
        String::from("<div class=\"timeline\" role=\"table\" aria-label=\"Job timeline\">");
    let _ = write!(
        out,
        "<div class=\"tl-axis\" role=\"row\"><span role=\"columnheader\">Job</span><span role=\"columnheader\" class=\"tl-scale\"><span>0s</span><span>{}</span></span><span role=\"columnheader\">Time</span></div>",
        human_duration(t1 - t0)
    );
    for j in jobs {
        let label = job_state_label(j);
        let (bar, dur) = match j.started_at {
            Some(s) => {
                let e = j.finished_at.unwrap_or(now).max(s);
                let left = ((s - t0).max(0) as f64 / span * 100.0).min(100.0);
                let width = ((e - s) as f64 / span * 100.0).min(100.0 - left).max(0.4);
                (
                    format!(
                        "<span class=\"tl-bar st-{st}\" style=\"left:{left:.2}%;width:{width:.2}%\" title=\"{id}: {label}, {d}\"></span>",
                        st = j.state.as_str(),
                        id = esc(&j.job_id),
                        label = esc(&label),
                        d = human_duration(e - s),
                    ),
                    duration_html(s, j.finished_at, now),
                )
            }
            None => (
                format!("<span class=\"tl-none\">{}</span>", esc(&label)),
                "<span class=\"muted\">—</span>".to_string(),
            ),
        };
        let _ = write!(
            out,
            "<div class=\"tl-row\" role=\"row\" data-job=\"{id}\"><span role=\"cell\" class=\"tl-name\">{b}<a href=\"?job={idu}#logs\">{id}</a></span><span role=\"cell\" class=\"tl-track\">{bar}</span><span role=\"cell\" class=\"num\">{dur}</span></div>",
            id = esc(&j.job_id),
            idu = url_enc(&j.job_id),
            b = format_args!("<span class=\"mini st-{}\" title=\"{}\" aria-label=\"{}\">{}</span> ", j.state.as_str(), esc(&label), esc(&label), state_icon(j.state.as_str())),
        );
    }
    out.push_str("</div>");
    out
}

fn job_tabs_html(jobs: &[JobRecord], selected: Option<&str>) -> String {
    let mut out = String::from("<ul class=\"job-tabs\">");
    for j in jobs {
        let cur = selected == Some(j.job_id.as_str());
        let _ = write!(
            out,
            "<li><a href=\"?job={idu}#logs\" class=\"st-{st}\"{cur} data-job=\"{id}\"><span aria-hidden=\"true\">{icon}</span> {id} <span class=\"visually-hidden\">({label})</span></a></li>",
            idu = url_enc(&j.job_id),
            st = j.state.as_str(),
            cur = if cur { " aria-current=\"true\"" } else { "" },
            id = esc(&j.job_id),
            icon = state_icon(j.state.as_str()),
            label = esc(&job_state_label(j)),
        );
    }
    out.push_str("</ul>");
    out
}

/// The live sections of a run page, as HTML by section id.
pub fn run_sections(
    run: &RunRecord,
    jobs: &[JobRecord],
    gates: &[sparkwing_engine::store::GateRecord],
    selected: Option<&str>,
    now: i64,
) -> Value {
    let sel = default_job(jobs, selected).map(|j| j.job_id.clone());
    let sel_job = sel
        .as_deref()
        .and_then(|s| jobs.iter().find(|j| j.job_id == s));
    json!({
        "status": run.status.local_str(),
        "terminal": run.status.is_terminal(),
        "title": format!("{} {} · {}", state_icon(run.status.local_str()), run.pipeline, state_word(run.status.local_str())),
        "sections": {
            "summary": summary_html(run, now),
            "gates": super::gates::gates_html(run, gates),
            "dag": dag::svg(jobs, sel.as_deref()),
            "timeline": timeline_html(run, jobs, now),
            "job-tabs": job_tabs_html(jobs, sel.as_deref()),
            "log-job-state": sel_job.map(|j| {
                let label = job_state_label(j);
                let detail = label.strip_prefix(state_word(j.state.as_str())).unwrap_or(&label);
                let detail = detail.trim_start_matches([':', ' ']);
                format!("{} <span class=\"muted\">{}</span>", badge(j.state.as_str()), esc(detail))
            }).unwrap_or_default(),
        }
    })
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
    let sel = default_job(&jobs, asked).map(|j| j.job_id.clone());
    let v = run_sections(&run, &jobs, &gates, sel.as_deref(), now_ms());
    let sec = |k: &str| v["sections"][k].as_str().unwrap_or_default().to_string();
    let stream = format!(
        "/ui/runs/{}/stream{}",
        url_enc(&run.id),
        sel.as_deref()
            .map(|j| format!("?job={}", url_enc(j)))
            .unwrap_or_default()
    );
    let mut body = format!(
        "<nav class=\"crumbs\" aria-label=\"Breadcrumb\"><a href=\"/\">Runs</a> › <a href=\"/runs?pipeline={pu}\">{p}</a> › <span>{id}</span></nav>\
         <div id=\"run\" data-stream=\"{stream}\" data-run=\"{id}\" data-job=\"{job}\" data-terminal=\"{term}\">\
         <section id=\"summary\" data-section=\"summary\">{summary}</section>\
         <section id=\"gates\" data-section=\"gates\">{gates}</section>\
         <section aria-labelledby=\"h-dag\"><h2 id=\"h-dag\">Jobs</h2><div class=\"dag-wrap\" id=\"dag\" data-section=\"dag\">{dag}</div></section>\
         <section aria-labelledby=\"h-tl\"><h2 id=\"h-tl\">Timeline</h2><div id=\"timeline\" data-section=\"timeline\">{tl}</div></section>",
        pu = url_enc(&run.pipeline),
        p = esc(&run.pipeline),
        id = esc(&run.id),
        stream = esc(&stream),
        job = esc(sel.as_deref().unwrap_or("")),
        term = run.status.is_terminal(),
        summary = sec("summary"),
        gates = sec("gates"),
        dag = sec("dag"),
        tl = sec("timeline"),
    );
    body.push_str(&artifacts_section(&run.id, &artifacts));
    let _ = write!(
        body,
        "<section id=\"logs\" aria-labelledby=\"h-logs\"><h2 id=\"h-logs\">Logs</h2>\
         <nav aria-label=\"Job logs\" data-section=\"job-tabs\">{tabs}</nav>",
        tabs = sec("job-tabs")
    );
    match sel.as_deref() {
        None => body.push_str("<p class=\"muted\">No jobs yet.</p>"),
        Some(job) => {
            let _ = write!(
                body,
                "<div class=\"log-head\"><h3 class=\"log-title\"><code>{job}</code> <span data-section=\"log-job-state\">{st}</span></h3>\
                 <div class=\"log-tools\"><label for=\"log-search\" class=\"visually-hidden\">Search this log</label>\
                 <input type=\"search\" id=\"log-search\" placeholder=\"Search this log\" autocomplete=\"off\">\
                 <span id=\"log-matches\" class=\"muted\" aria-live=\"polite\"></span>\
                 <label class=\"follow\"><input type=\"checkbox\" id=\"log-follow\" checked> Follow</label>\
                 <a href=\"/api/runs/{ridu}/jobs/{jobu}/logs\" class=\"small\">JSON</a></div></div>\
                 <div id=\"log\" class=\"log\" role=\"log\" aria-label=\"Log of {job}\" tabindex=\"0\"></div>\
                 <p id=\"log-status\" class=\"muted small\">Loading the log…</p>",
                job = esc(job),
                st = sec("log-job-state"),
                ridu = url_enc(&run.id),
                jobu = url_enc(job),
            );
        }
    }
    body.push_str("</section></div>");
    let title = v["title"].as_str().unwrap_or("Run").to_string();
    html_response(StatusCode::OK, page(&title, "runs", &body))
}

/// The run page's list of what its jobs published, with the command that downloads each (empty
/// when there is none).
fn artifacts_section(
    run_id: &str,
    artifacts: &[sparkwing_engine::store::ArtifactRecord],
) -> String {
    if artifacts.is_empty() {
        return String::new();
    }
    let mut rows = String::new();
    for a in artifacts {
        let _ = write!(
            rows,
            "<tr><td><code>{name}</code></td><td>{job}</td><td><code>{path}</code></td><td class=\"num\">{size}</td>\
             <td><code>sparkwing runs artifacts --run {run} --download {job}/{name}</code></td></tr>",
            name = esc(&a.name),
            job = esc(&a.job_id),
            path = esc(&a.path),
            size = esc(&sparkwing_engine::job_storage::bytes(a.size_bytes)),
            run = esc(run_id),
        );
    }
    format!(
        "<section id=\"artifacts\" aria-labelledby=\"h-artifacts\"><h2 id=\"h-artifacts\">Artifacts</h2>\
         <table><thead><tr><th>Name</th><th>Job</th><th>Path</th><th>Size</th><th>Download</th></tr></thead>\
         <tbody>{rows}</tbody></table></section>"
    )
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
