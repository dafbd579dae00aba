//! `GET /` and `/runs` (runs across namespaces, newest first, filtered as `GET /api/v1/runs`
//! filters), `GET /runs/{ns}/{name}` (a run, with its approval gates from [`super::gates`]),
//! `POST /runs/{ns}/{name}/cancel` (its Cancel button) and `POST /runs/{ns}/{name}/rerun` (its
//! Re-run button; both `runs:trigger` and the session's CSRF token).

use std::collections::HashMap;
use std::fmt::Write;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use sparkwing_core::RunPhase;
use sparkwing_crds::pipeline_run::Source;
use sparkwing_dashboard::html::{esc, state_word, url_enc};
use sparkwing_dashboard::model::Run;
use sparkwing_dashboard::render;

use super::gates::gates_section;
use super::login::csrf_of;
use super::view::{job_models, page, read_run, run_model, RunView};
use crate::api::auth::Scope;
use crate::api::handlers::runs::{self, ListQuery};
use crate::api::handlers::storage;
use crate::api::session::Session;
use crate::api::{ApiError, ApiState, ClientAddr};

/// Runs on one page of the list.
pub const PAGE_RUNS: usize = 50;

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

fn error_page(session: &Session, e: ApiError) -> Response {
    (
        e.status(),
        Html(page(
            "Error",
            "",
            Some(session),
            &render::error_body(&e.public_message()),
        )),
    )
        .into_response()
}

/// The list's filters from the query: `namespace`, `pipeline`, `phase`, `since` (empty: any),
/// `cursor`.
pub fn list_query(params: &HashMap<String, String>, limit: usize) -> ListQuery {
    let get = |k: &str| params.get(k).filter(|v| !v.is_empty()).cloned();
    ListQuery {
        namespace: get("namespace"),
        pipeline: get("pipeline"),
        phase: get("phase"),
        since: get("since"),
        limit: Some(limit),
        cursor: get("cursor"),
    }
}

/// The filters as a query string (without the cursor unless given).
pub fn query_string(q: &ListQuery, cursor: Option<&str>) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("namespace", &q.namespace),
        ("pipeline", &q.pipeline),
        ("phase", &q.phase),
        ("since", &q.since),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={}", url_enc(v)));
        }
    }
    if let Some(c) = cursor {
        parts.push(format!("cursor={}", url_enc(c)));
    }
    parts.join("&")
}

/// A page of the runs list as the session's caller sees it: the runs, the next page's cursor.
pub async fn list_runs(
    st: &ApiState,
    session: &Session,
    q: ListQuery,
) -> Result<(Vec<Run>, Option<String>), ApiError> {
    let axum::Json(list) =
        runs::list(State(st.clone()), session.principal.clone(), Query(q)).await?;
    Ok((list.runs.iter().map(run_model).collect(), list.next))
}

/// The runs table with its link to older runs; re-sent live by `/ui/runs/stream`.
pub fn runs_list_html(runs: &[Run], next: Option<&str>, q: &ListQuery, now: i64) -> String {
    let filtered = q.namespace.is_some() || q.pipeline.is_some() || q.phase.is_some();
    if runs.is_empty() && !filtered && q.cursor.is_none() {
        return "<section class=\"empty\" id=\"empty-store\"><h2>No runs yet</h2>\
                <p>Runs started on this cluster (<code>sparkwing run --remote</code>, \
                <code>sparkwing trigger</code>, webhooks, schedules) appear here as they start.</p></section>"
            .into();
    }
    let more = next.map(|c| format!("/runs?{}", query_string(q, Some(c))));
    render::runs_table(runs, now, more.as_deref())
}

/// `GET /` and `GET /runs`.
pub async fn runs_page(
    State(st): State<ApiState>,
    session: Session,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let q = list_query(&params, PAGE_RUNS);
    let (runs, next) = match list_runs(&st, &session, list_query(&params, PAGE_RUNS)).await {
        Ok(v) => v,
        Err(e) => return error_page(&session, e),
    };
    let mut body = String::from("<div class=\"page-head\"><h1>Runs</h1></div>");
    body.push_str("<form class=\"filters\" method=\"get\" action=\"/runs\" id=\"filters\">");
    let _ = write!(
        body,
        "<label>Namespace <input name=\"namespace\" value=\"{}\" size=\"12\"></label>\
         <label>Pipeline <input name=\"pipeline\" value=\"{}\" size=\"12\"></label>\
         <label>Status <select name=\"phase\"><option value=\"\">Any status</option>",
        esc(q.namespace.as_deref().unwrap_or("")),
        esc(q.pipeline.as_deref().unwrap_or("")),
    );
    for p in RunPhase::ALL {
        let _ = write!(
            body,
            "<option value=\"{v}\"{s}>{w}</option>",
            v = p.phase_str(),
            s = if q.phase.as_deref() == Some(p.phase_str()) {
                " selected"
            } else {
                ""
            },
            w = state_word(p.local_str())
        );
    }
    body.push_str(
        "</select></label><button type=\"submit\">Filter</button> <a href=\"/runs\">Clear</a></form>",
    );
    let stream_url = format!("/ui/runs/stream?{}", query_string(&q, None));
    let _ = write!(
        body,
        "<div id=\"runs-list\" data-stream=\"{}\" data-live=\"{}\">{}</div>",
        esc(&stream_url),
        q.cursor.is_none(),
        runs_list_html(&runs, next.as_deref(), &q, now_ms())
    );
    Html(page("Runs", "runs", Some(&session), &body)).into_response()
}

/// The run's buttons for a `runs:trigger` session: Cancel while the run is live and unfinished,
/// Re-run once it has finished (`Succeeded`, `Failed`, `Cancelled`) unless it was executed
/// outside the cluster (a live section: the buttons change when the run ends).
pub fn actions_html(session: &Session, v: &RunView) -> String {
    if !session.principal.has(&Scope::RunsTrigger) {
        return String::new();
    }
    let (ns, name) = (&v.namespace, &v.name);
    let form = |action: &str, id: &str, label: &str| {
        format!(
            "<form method=\"post\" action=\"/runs/{ns}/{name}/{action}\" class=\"run-actions\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\" id=\"{id}\">{label}</button></form>",
            esc(&session.csrf)
        )
    };
    let external = v
        .run
        .as_ref()
        .is_some_and(|r| matches!(r.spec.source, Source::External(_)));
    if v.live && !v.phase.is_terminal() {
        form("cancel", "cancel-run", "Cancel run")
    } else if v.phase.is_terminal() && !external {
        form("rerun", "rerun-run", "Re-run")
    } else {
        String::new()
    }
}

/// `GET /runs/{ns}/{name}?job=J`.
pub async fn run_page(
    State(st): State<ApiState>,
    session: Session,
    Path((ns, name)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let v = match read_run(&st, &session, &ns, &name).await {
        Ok(v) => v,
        Err(e) => return error_page(&session, e),
    };
    let gates = match gates_section(&st, &session, &v).await {
        Ok(g) => g,
        Err(e) => return error_page(&session, e),
    };
    let run = run_model(&v);
    let jobs = job_models(&v);
    let asked = params.get("job").map(String::as_str);
    let sel = render::default_job(&jobs, asked).map(|j| j.job_id.clone());
    let sections = render::run_sections(&run, &jobs, gates, sel.as_deref(), now_ms());
    let stream = format!(
        "/ui/runs/{ns}/{name}/stream{}",
        sel.as_deref()
            .map(|j| format!("?job={}", url_enc(j)))
            .unwrap_or_default()
    );
    let actions = format!(
        "<div data-section=\"actions\">{}</div>",
        actions_html(&session, &v)
    );
    let artifacts = match artifacts_section(&st, &ns, &name).await {
        Ok(a) => a,
        Err(e) => return error_page(&session, e),
    };
    let body = render::run_body(
        &run,
        &sections,
        &render::RunPageParts {
            stream: &stream,
            selected: sel.as_deref(),
            actions: &actions,
            extra: &artifacts,
            log_json: None,
        },
    );
    let title = sections["title"].as_str().unwrap_or("Run").to_string();
    Html(page(&title, "runs", Some(&session), &body)).into_response()
}

/// The run page's artifacts, each with a link to [`download_artifact`].
async fn artifacts_section(st: &ApiState, ns: &str, name: &str) -> Result<String, ApiError> {
    use sparkwing_dashboard::artifacts::{section, ArtifactRow, Download};
    let rows: Vec<ArtifactRow> = storage::artifacts_of(st, ns, name)
        .await?
        .into_iter()
        .map(|a| ArtifactRow {
            download: Download::Link {
                href: format!(
                    "/runs/{ns}/{name}/artifacts/{}/{}",
                    url_enc(&a.job),
                    url_enc(&a.name)
                ),
                file: download_name(&a.name, a.kind),
            },
            job: a.job,
            name: a.name,
            path: None,
            size_bytes: a.size_bytes,
        })
        .collect();
    Ok(section(&rows))
}

/// What a download saves as: a file artifact under its name, a directory's as `NAME.tar`.
fn download_name(name: &str, kind: sparkwing_core::chunked::ChunkedKind) -> String {
    match kind {
        sparkwing_core::chunked::ChunkedKind::File => name.to_string(),
        sparkwing_core::chunked::ChunkedKind::Tar => format!("{name}.tar"),
    }
}

/// `GET /runs/{ns}/{name}/artifacts/{job}/{artifact}` (a session that may read the run): the
/// artifact's content — a file's bytes, or a directory as a tar — as an attachment.
pub async fn download_artifact(
    State(st): State<ApiState>,
    session: Session,
    Path((ns, name, job, artifact)): Path<(String, String, String, String)>,
) -> Result<Response, ApiError> {
    session.principal.require_read_run(&ns, &name)?;
    let a = storage::find_artifact(&st, &ns, &name, &job, &artifact).await?;
    let manifest: sparkwing_core::chunked::ChunkManifest = serde_json::from_str(&a.manifest)
        .map_err(|e| {
            ApiError::Internal(format!("the stored manifest of artifact {artifact}: {e}"))
        })?;
    let file = download_name(&artifact, manifest.kind);
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{file}\""))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut res = storage::artifact_body(&st, manifest).into_response();
    res.headers_mut()
        .insert(axum::http::header::CONTENT_DISPOSITION, disposition);
    res.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(res)
}

/// `POST /runs/{ns}/{name}/cancel`: the CSRF token (form field `csrf` or `X-CSRF-Token`), then
/// `runs:trigger`; back to the run's page.
pub async fn cancel(
    State(st): State<ApiState>,
    session: Session,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    session.check_csrf(csrf_of(&headers, body).await?.as_deref())?;
    let _accepted = runs::cancel(
        State(st),
        session.principal.clone(),
        Path((ns.clone(), name.clone())),
        Body::empty(),
    )
    .await?;
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(l) = HeaderValue::from_str(&format!("/runs/{ns}/{name}")) {
        res.headers_mut().insert(LOCATION, l);
    }
    Ok(res)
}

/// `POST /runs/{ns}/{name}/rerun`: the CSRF token (form field `csrf` or `X-CSRF-Token`), then what
/// `POST /api/v1/runs/{ns}/{name}/rerun` does, as the session's principal; on to the new run's
/// page.
pub async fn rerun(
    State(st): State<ApiState>,
    session: Session,
    ClientAddr(host): ClientAddr,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    session.check_csrf(csrf_of(&headers, body).await?.as_deref())?;
    let created = runs::rerun_run(&st, &session.principal, host, &ns, &name).await?;
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(l) = HeaderValue::from_str(&format!("/runs/{}/{}", created.namespace, created.name)) {
        res.headers_mut().insert(LOCATION, l);
    }
    Ok(res)
}
