//! The cluster dashboard: login and its cookie, sessions in the state layer, CSRF, scopes, the
//! pages and their streams over the API's storage.

use axum::http::HeaderMap;

use super::*;
use crate::api::session::SESSION_COOKIE;

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn request(
    f: &Fx,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    extra: &[(&str, &str)],
    body: &str,
) -> Page {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("{SESSION_COOKIE}={c}"));
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let res = f
        .app()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Page {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Log in with `token`: the session cookie's value and the whole `Set-Cookie`.
async fn login(f: &Fx, token: &str) -> (String, String) {
    let r = request(
        f,
        Method::POST,
        "/login",
        None,
        &[],
        &format!("token={token}&next=%2Fruns"),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), "/runs");
    assert!(!r.body.contains(token));
    let set = r.headers["set-cookie"].to_str().unwrap().to_string();
    let value = set
        .strip_prefix(&format!("{SESSION_COOKIE}="))
        .and_then(|s| s.split(';').next())
        .unwrap()
        .to_string();
    (value, set)
}

/// The CSRF token the session's pages carry.
async fn csrf(f: &Fx, cookie: &str) -> String {
    let r = request(f, Method::GET, "/", Some(cookie), &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let at = r.body.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    r.body[at..at + 32].to_string()
}

async fn running_run(f: &Fx) -> (String, String) {
    let upload = f.upload(&[("a.txt", "a")]).await;
    let (ns, name) = f.trigger_run(&upload).await;
    f.runs.set_phase(&ns, &name, RunPhase::Running);
    (ns, name)
}

#[tokio::test]
async fn dashboard_login_sets_a_session_cookie_and_never_returns_the_token() {
    let f = fx().await;
    let r = request(&f, Method::GET, "/login", None, &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("name=\"token\"") && r.body.contains("type=\"password\""));
    let (cookie, set) = login(&f, &f.reader).await;
    assert_eq!(cookie.len(), 64, "{set}");
    for attr in ["Path=/", "HttpOnly", "SameSite=Strict", "Max-Age=43200"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    // Only the secret's hash is stored.
    let stored =
        f.st.store
            .meta
            .find_session(&sha256_hex(cookie.as_bytes()))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(stored.principal, "bob");
    assert_eq!(stored.scopes, ["runs:read"]);
    // The pages open with it, and never carry the token.
    let r = request(&f, Method::GET, "/", Some(&cookie), &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("<h1>Runs</h1>") && r.body.contains("Log out"));
    assert!(!r.body.contains(&f.reader));

    // Behind TLS the cookie is Secure.
    let tls = fx_with(ApiConfig {
        secure_cookies: true,
        ..ApiConfig::default()
    })
    .await;
    let (_, set) = login(&tls, &tls.reader).await;
    assert!(set.ends_with("; Secure"), "{set}");
}

#[tokio::test]
async fn dashboard_login_refuses_unknown_runner_and_cross_site_tokens() {
    let f = fx().await;
    let r = request(&f, Method::POST, "/login", None, &[], "token=swt_nothing").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("login-error") && r.headers.get("set-cookie").is_none());
    let (_, _, runner) = trigger_external(&f).await;
    let r = request(
        &f,
        Method::POST,
        "/login",
        None,
        &[],
        &format!("token={runner}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("runs:read"), "{}", r.body);
    // A form posted from another site's page.
    let r = request(
        &f,
        Method::POST,
        "/login",
        None,
        &[("origin", "https://evil.example"), ("host", "ci.example")],
        &format!("token={}", f.reader),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // `next` never leaves the site.
    let r = request(
        &f,
        Method::POST,
        "/login",
        None,
        &[],
        &format!("token={}&next=%2F%2Fevil.example", f.reader),
    )
    .await;
    assert_eq!(r.location(), "/");
}

#[tokio::test]
async fn dashboard_without_a_session_redirects_pages_and_refuses_streams() {
    let f = fx().await;
    let (ns, name) = running_run(&f).await;
    for path in ["/", "/runs?phase=Running", &format!("/runs/{ns}/{name}")] {
        let r = request(&f, Method::GET, path, None, &[], "").await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert!(
            r.location().starts_with("/login?next=%2F"),
            "{}",
            r.location()
        );
    }
    for path in ["/ui/runs/stream", &format!("/ui/runs/{ns}/{name}/stream")] {
        let r = request(&f, Method::GET, path, None, &[], "").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            serde_json::from_str::<Value>(&r.body).unwrap()["error"],
            "unauthorized"
        );
    }
    // JSON asked of a page: 401 too.
    let r = request(
        &f,
        Method::GET,
        "/",
        None,
        &[("accept", "application/json")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A bearer token is not a session.
    let r = request(
        &f,
        Method::GET,
        "/",
        None,
        &[("authorization", &format!("Bearer {}", f.admin))],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    // A forged cookie (the token itself, or random) is refused.
    for forged in [f.reader.as_str(), &"ab".repeat(32)] {
        let r = request(&f, Method::GET, "/", Some(forged), &[], "").await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
    }
}

#[tokio::test]
async fn dashboard_cancel_needs_csrf_and_runs_trigger() {
    let f = fx().await;
    let (ns, name) = running_run(&f).await;
    let run_path = format!("/runs/{ns}/{name}");
    let cancel = format!("{run_path}/cancel");

    // A read-only session sees no Cancel button, and its POST gets 403 even with its CSRF token.
    let (reader, _) = login(&f, &f.reader).await;
    let r = request(&f, Method::GET, &run_path, Some(&reader), &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains(&format!("{ns}/{name}")));
    assert!(!r.body.contains("cancel-run"));
    let token = csrf(&f, &reader).await;
    let r = request(
        &f,
        Method::POST,
        &cancel,
        Some(&reader),
        &[],
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("runs:trigger"), "{}", r.body);

    // A trigger session sees it; without the CSRF token, or with another one, 403.
    let (trigger, _) = login(&f, &f.trigger).await;
    let r = request(&f, Method::GET, &run_path, Some(&trigger), &[], "").await;
    assert!(r.body.contains("id=\"cancel-run\""), "{}", r.body);
    let token = csrf(&f, &trigger).await;
    for body in ["", "csrf=", "csrf=0123456789abcdef0123456789abcdef"] {
        let r = request(&f, Method::POST, &cancel, Some(&trigger), &[], body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{body}: {}", r.body);
        assert_eq!(
            serde_json::from_str::<Value>(&r.body).unwrap()["error"],
            "csrf"
        );
    }
    // The reader's CSRF token is not the trigger session's.
    let other = csrf(&f, &reader).await;
    let r = request(
        &f,
        Method::POST,
        &cancel,
        Some(&trigger),
        &[],
        &format!("csrf={other}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(f.runs.run(&ns, &name).unwrap().spec.cancel.is_none());
    // The right one (form field or header) cancels and goes back to the run.
    let r = request(
        &f,
        Method::POST,
        &cancel,
        Some(&trigger),
        &[("x-csrf-token", &token)],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), run_path);
    assert!(f.runs.run(&ns, &name).unwrap().spec.cancel.is_some());
}

#[tokio::test]
async fn dashboard_logout_and_expiry_end_a_session() {
    let f = fx().await;
    let (cookie, _) = login(&f, &f.trigger).await;
    let token = csrf(&f, &cookie).await;
    // Logout is state-changing: CSRF first.
    let r = request(&f, Method::POST, "/logout", Some(&cookie), &[], "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = request(
        &f,
        Method::POST,
        "/logout",
        Some(&cookie),
        &[],
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/login");
    assert!(r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let r = request(&f, Method::GET, "/", Some(&cookie), &[], "").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);

    // Revoking the token ends the sessions it opened.
    let (cookie, _) = login(&f, &f.reader).await;
    let id =
        f.st.store
            .lookup_token(&f.reader)
            .await
            .unwrap()
            .unwrap()
            .id;
    let r = f
        .call(
            Method::DELETE,
            &format!("/api/v1/admin/tokens/{id}"),
            Some(&f.admin),
            Body::empty(),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let r = request(&f, Method::GET, "/", Some(&cookie), &[], "").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);

    // A session past its expiry is refused and removed.
    let short = fx_with(ApiConfig {
        session_ttl: std::time::Duration::ZERO,
        ..ApiConfig::default()
    })
    .await;
    let (cookie, _) = login(&short, &short.reader).await;
    let r = request(&short, Method::GET, "/", Some(&cookie), &[], "").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let hash = sha256_hex(cookie.as_bytes());
    assert!(short
        .st
        .store
        .meta
        .find_session(&hash)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn dashboard_sessions_are_shared_by_replicas() {
    // Two API processes on the same stores: a session made by one opens pages on the other.
    let f = fx().await;
    let other = ApiState::new(f.stores.store.clone(), f.runs.clone(), ApiConfig::default());
    let (cookie, _) = login(&f, &f.reader).await;
    let req = Request::builder()
        .uri("/")
        .header("cookie", format!("{SESSION_COOKIE}={cookie}"))
        .body(Body::empty())
        .unwrap();
    let res = router(other).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn dashboard_lists_runs_with_filters_and_shows_a_run_with_its_jobs_and_log() {
    let f = fx().await;
    let (ns, name, runner) = trigger_external(&f).await;
    let (cookie, _) = login(&f, &f.reader).await;
    let r = request(&f, Method::GET, "/", Some(&cookie), &[], "").await;
    assert!(
        r.body.contains(&format!("href=\"/runs/{ns}/{name}\"")),
        "{}",
        r.body
    );
    let r = request(
        &f,
        Method::GET,
        "/runs?phase=Succeeded",
        Some(&cookie),
        &[],
        "",
    )
    .await;
    assert!(r.body.contains("id=\"no-match\""), "{}", r.body);
    let r = request(&f, Method::GET, "/runs?phase=Done", Some(&cookie), &[], "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // The runner posts a log and a job state; the run ends.
    let logs = json!([{"job": "build", "seq": 1, "line": "compiling"},
                      {"job": "build", "seq": 2, "stream": "stderr", "line": "warning: <x>"}]);
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/logs"),
            &runner,
            logs,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f
        .json(
            Method::PUT,
            &format!("/api/v1/runs/{ns}/{name}/jobs/build"),
            &runner,
            json!({"state": "failed", "exitCode": 3}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    f.runs.set_phase(&ns, &name, RunPhase::Running);
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/finish"),
            &runner,
            json!({"phase": "Failed", "message": "job build failed"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let r = request(
        &f,
        Method::GET,
        &format!("/runs/{ns}/{name}"),
        Some(&cookie),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("data-job=\"build\""), "{}", r.body);
    assert!(r.body.contains("failed (exit 3)"), "{}", r.body);
    assert!(r.body.contains("job build failed"), "{}", r.body);
    assert!(r.body.contains(&format!(
        "data-stream=\"/ui/runs/{ns}/{name}/stream?job=build\""
    )));
    let r = request(
        &f,
        Method::GET,
        &format!("/runs/{ns}/nothing"),
        Some(&cookie),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // The run's stream: its sections, the log, the job's end, then done (the run is over).
    let r = request(
        &f,
        Method::GET,
        &format!("/ui/runs/{ns}/{name}/stream?job=build"),
        Some(&cookie),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let b = &r.body;
    let (view, logs, end, done) = (
        b.find("event: view").unwrap(),
        b.find("event: logs").unwrap(),
        b.find("event: log-end").unwrap(),
        b.find("event: done").unwrap(),
    );
    assert!(view < logs && logs < end && end < done, "{b}");
    assert!(
        b.contains("\"line\":\"compiling\"") && b.contains("\"stream\":\"stderr\""),
        "{b}"
    );
    assert!(b.contains("id: 2"), "{b}");
    // The run is over: no Cancel button in its live sections.
    assert!(
        b.contains("\"actions\":\"\"") && !b.contains("cancel-run"),
        "{b}"
    );
    // Resumed after the last line seen: no lines again.
    let r = request(
        &f,
        Method::GET,
        &format!("/ui/runs/{ns}/{name}/stream?job=build"),
        Some(&cookie),
        &[("last-event-id", "2")],
        "",
    )
    .await;
    assert!(
        !r.body.contains("event: logs") && r.body.contains("event: done"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn dashboard_serves_the_shared_assets() {
    let f = fx().await;
    for (path, kind) in [
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
    ] {
        let r = request(&f, Method::GET, path, None, &[], "").await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
        assert!(!r.body.is_empty());
    }
}

#[tokio::test]
async fn dashboard_runs_stream_sends_the_list_at_once() {
    let f = fx().await;
    let (ns, name) = running_run(&f).await;
    let (cookie, _) = login(&f, &f.reader).await;
    let req = Request::builder()
        .uri("/ui/runs/stream?phase=Running")
        .header("cookie", format!("{SESSION_COOKIE}={cookie}"))
        .body(Body::empty())
        .unwrap();
    let res = f.app().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // The stream never ends by itself: read its first event only, with a deadline.
    let mut body = res.into_body();
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
        .await
        .expect("the first event within 10 s")
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(frame.data_ref().unwrap()).into_owned();
    assert!(text.starts_with("event: list"), "{text}");
    assert!(text.contains(&format!("/runs/{ns}/{name}")), "{text}");
    // A bad filter is refused before the stream starts.
    let r = request(
        &f,
        Method::GET,
        "/ui/runs/stream?phase=Done",
        Some(&cookie),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// The first event of a stream that does not end by itself (read with a deadline).
async fn first_event(f: &Fx, path: &str, cookie: &str) -> String {
    let req = Request::builder()
        .uri(path)
        .header("cookie", format!("{SESSION_COOKIE}={cookie}"))
        .body(Body::empty())
        .unwrap();
    let res = f.app().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
        .await
        .expect("the first event within 10 s")
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(frame.data_ref().unwrap()).into_owned()
}

fn api_error(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (
        v["error"].as_str().unwrap_or_default().to_string(),
        v["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn dashboard_gates_show_and_an_approver_decides_with_the_csrf_token() {
    let mut f = fx().await;
    let pipelines = Arc::new(MemoryPipelines::default());
    f.st =
        f.st.clone()
            .with_webhooks(Webhooks::new(None, pipelines.clone()));
    let (ns, name, _) = waiting_run(&f).await;
    let run_path = format!("/runs/{ns}/{name}");
    let post = format!("{run_path}/gates/approve-prod");
    let api_gate = format!("/api/v1/runs/{ns}/{name}/gates/approve-prod");

    // A reader sees the gates (message, state) but no buttons, and its POST gets the API's 403.
    let (reader, _) = login(&f, &f.reader).await;
    let r = request(&f, Method::GET, &run_path, Some(&reader), &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for want in [
        "id=\"h-gates\"",
        "data-gate-id=\"approve-prod\"",
        "<span class=\"gate-message\">Ship it?</span>",
        "waiting for a decision",
        "data-gate-id=\"approve-eu\"",
        "<span class=\"muted\">pending</span>",
    ] {
        assert!(r.body.contains(want), "{want} in {}", r.body);
    }
    assert!(!r.body.contains("data-gate-decision"), "{}", r.body);
    let reader_csrf = csrf(&f, &reader).await;
    let r = request(
        &f,
        Method::POST,
        &post,
        Some(&reader),
        &[],
        &format!("decision=approve&csrf={reader_csrf}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(
        api_error(&r.body),
        (
            "forbidden".to_string(),
            format!("missing scope approvals:write; run {ns}/{name} was not started from a Pipeline, so it has no approvers")
        )
    );

    // ana may decide: the run's Pipeline lists her. Her page has the form with her CSRF token.
    started_from(&f, &ns, &name, "deploy");
    pipelines.set(vec![deploy(&ns, &["ana@example.com"])]);
    let ana_token = token(&f.st, "ana@example.com", &["runs:read"]).await;
    let (ana, _) = login(&f, &ana_token).await;
    let ana_csrf = csrf(&f, &ana).await;
    let r = request(&f, Method::GET, &run_path, Some(&ana), &[], "").await;
    assert!(
        r.body.contains(&format!(
            "<form class=\"gate-form\" method=\"post\" action=\"{post}\" data-gate=\"approve-prod\"><input type=\"hidden\" name=\"csrf\" value=\"{ana_csrf}\">"
        )),
        "{}",
        r.body
    );
    assert_eq!(
        r.body.matches("<form class=\"gate-form\"").count(),
        1,
        "only the waiting gate"
    );
    // The reader still has none.
    let r = request(&f, Method::GET, &run_path, Some(&reader), &[], "").await;
    assert!(!r.body.contains("data-gate-decision"), "{}", r.body);
    // So does the page's stream.
    let view = first_event(&f, &format!("/ui{run_path}/stream"), &ana).await;
    assert!(view.starts_with("event: view"), "{view}");
    assert!(
        view.contains("data-gate-decision=\\\"approve\\\""),
        "{view}"
    );

    // Without the CSRF token, with a wrong one or another session's: 403 csrf, nothing recorded.
    for body in [
        "decision=approve".to_string(),
        "decision=approve&csrf=".to_string(),
        "decision=approve&csrf=0123456789abcdef0123456789abcdef".to_string(),
        format!("decision=approve&csrf={reader_csrf}"),
    ] {
        let r = request(&f, Method::POST, &post, Some(&ana), &[], &body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{body}: {}", r.body);
        assert_eq!(api_error(&r.body).0, "csrf", "{body}");
    }
    // A bad decision is the API's 400; the pending gate the API's 409.
    let r = request(
        &f,
        Method::POST,
        &post,
        Some(&ana),
        &[],
        &format!("decision=maybe&csrf={ana_csrf}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = request(
        &f,
        Method::POST,
        &format!("{run_path}/gates/approve-eu"),
        Some(&ana),
        &[],
        &format!("decision=approve&csrf={ana_csrf}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(api_error(&r.body)
        .1
        .contains("is not waiting for a decision (it is pending)"));
    assert!(f
        .get(&api_gate, &f.reader)
        .await
        .json()
        .get("decided")
        .is_none());

    // Approve with a comment: recorded as the API records it, then back to the run's page.
    let r = request(
        &f,
        Method::POST,
        &post,
        Some(&ana),
        &[],
        &format!("decision=approve&comment=looks+good&csrf={ana_csrf}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), run_path);
    let d = f.get(&api_gate, &f.reader).await.json()["decided"].clone();
    assert_eq!(
        (d["decision"].clone(), d["by"].clone(), d["comment"].clone()),
        (
            json!("approve"),
            json!("ana@example.com"),
            json!("looks good")
        )
    );
    // The page says who decided and why; the buttons are gone.
    let r = request(&f, Method::GET, &run_path, Some(&ana), &[], "").await;
    assert!(
        r.body
            .contains("data-decision=\"approve\">approved by ana@example.com: looks good</span>"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("data-gate-decision"), "{}", r.body);
    // A second decision: the API's 409 naming the standing one.
    let r = request(
        &f,
        Method::POST,
        &post,
        Some(&ana),
        &[("x-csrf-token", &ana_csrf)],
        "decision=reject",
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        api_error(&r.body)
            .1
            .ends_with("was already approved by ana@example.com: looks good"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn dashboard_gate_buttons_need_approvals_write_and_a_live_run() {
    let f = fx().await;
    let (ns, name, _) = waiting_run(&f).await;
    let run_path = format!("/runs/{ns}/{name}");
    let approver = token(&f.st, "carol", &["runs:read", "approvals:write"]).await;
    for t in [&approver, &f.admin] {
        let (cookie, _) = login(&f, t).await;
        let r = request(&f, Method::GET, &run_path, Some(&cookie), &[], "").await;
        assert!(
            r.body.contains("data-gate-decision=\"reject\""),
            "{}",
            r.body
        );
    }
    // A run without gates has no gates section.
    let (other_ns, other) = running_run(&f).await;
    let (cookie, _) = login(&f, &approver).await;
    let r = request(
        &f,
        Method::GET,
        &format!("/runs/{other_ns}/{other}"),
        Some(&cookie),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(!r.body.contains("h-gates"), "{}", r.body);
    // The run ended while the gate waited: no buttons, and a POST is the API's 409.
    f.runs.set_phase(&ns, &name, RunPhase::Cancelled);
    let r = request(&f, Method::GET, &run_path, Some(&cookie), &[], "").await;
    assert!(r.body.contains("h-gates"), "{}", r.body);
    assert!(!r.body.contains("data-gate-decision"), "{}", r.body);
    let token = csrf(&f, &cookie).await;
    let r = request(
        &f,
        Method::POST,
        &format!("{run_path}/gates/approve-prod"),
        Some(&cookie),
        &[],
        &format!("decision=approve&csrf={token}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        api_error(&r.body)
            .1
            .contains("already finished (cancelled)"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn dashboard_run_page_shows_the_pull_request_and_the_needs_its_runner_reported() {
    use kube::ResourceExt;
    let f = fx().await;
    let (ns, name) = running_run(&f).await;
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    // Play a pull request delivery: the run of a fork's pull request #12, fix into main.
    let mut run = f.runs.run(&ns, &name).unwrap();
    run.spec.triggered_by.as_mut().unwrap().pull_request =
        Some(sparkwing_core::run_spec::TriggeringPullRequest {
            number: 12,
            base: "main".into(),
            head: "fix".into(),
            fork: true,
        });
    run.annotations_mut().insert(
        crate::labels::BRANCH_ANNOTATION.to_string(),
        "fix".to_string(),
    );
    f.runs.insert(run);
    for (job, state) in [
        ("build", json!({"state": "success", "attempt": 1})),
        (
            "test",
            json!({"state": "running", "attempt": 1, "needs": ["build"]}),
        ),
    ] {
        let r = f
            .json(
                Method::PUT,
                &format!("/api/v1/runs/{ns}/{name}/jobs/{job}"),
                &runner,
                state,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    }
    let (cookie, _) = login(&f, &f.reader).await;
    let r = request(
        &f,
        Method::GET,
        &format!("/runs/{ns}/{name}"),
        Some(&cookie),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for want in [
        "<dt>Pull request</dt><dd><span id=\"pull-request\" data-number=\"12\">#12 <code>fix</code> → <code>main</code>, from a fork</span></dd>",
        "<dt>Branch</dt><dd>fix</dd>",
        "class=\"edge\" data-from=\"build\" data-to=\"test\"",
    ] {
        assert!(r.body.contains(want), "{want} in {}", r.body);
    }
    assert_eq!(r.body.matches("class=\"edge\"").count(), 1, "{}", r.body);
    // A run of no pull request says none.
    let (other_ns, other) = running_run(&f).await;
    let r = request(
        &f,
        Method::GET,
        &format!("/runs/{other_ns}/{other}"),
        Some(&cookie),
        &[],
        "",
    )
    .await;
    assert!(!r.body.contains("Pull request"), "{}", r.body);
}

#[tokio::test]
async fn dashboard_rerun_needs_csrf_runs_trigger_and_a_finished_run() {
    let f = fx().await;
    let (ns, name) = running_run(&f).await;
    let run_path = format!("/runs/{ns}/{name}");
    let rerun = format!("{run_path}/rerun");
    let (reader, _) = login(&f, &f.reader).await;
    let (trigger, _) = login(&f, &f.trigger).await;

    // While the run runs: Cancel, no Re-run.
    let r = request(&f, Method::GET, &run_path, Some(&trigger), &[], "").await;
    assert!(r.body.contains("id=\"cancel-run\""), "{}", r.body);
    assert!(!r.body.contains("rerun-run"), "{}", r.body);

    // Finished: a trigger session sees Re-run (and no Cancel), posting to the rerun route.
    f.runs.set_phase(&ns, &name, RunPhase::Failed);
    let r = request(&f, Method::GET, &run_path, Some(&trigger), &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.contains(&format!("action=\"{rerun}\""))
            && r.body.contains("id=\"rerun-run\"")
            && !r.body.contains("cancel-run"),
        "{}",
        r.body
    );
    // The run's stream shows the same.
    let ev = first_event(&f, &format!("/ui/runs/{ns}/{name}/stream"), &trigger).await;
    assert!(ev.contains("rerun-run"), "{ev}");

    // A reader sees no button, and its POST gets 403 even with its CSRF token.
    let r = request(&f, Method::GET, &run_path, Some(&reader), &[], "").await;
    assert!(!r.body.contains("rerun-run"), "{}", r.body);
    let token = csrf(&f, &reader).await;
    let r = request(
        &f,
        Method::POST,
        &rerun,
        Some(&reader),
        &[],
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("runs:trigger"), "{}", r.body);

    // Without the session's CSRF token: 403 csrf, and no run is made.
    let before = f.runs.list(None).await.unwrap().len();
    let other = csrf(&f, &reader).await;
    for body in [String::new(), "csrf=".to_string(), format!("csrf={other}")] {
        let r = request(&f, Method::POST, &rerun, Some(&trigger), &[], &body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{body}: {}", r.body);
        assert_eq!(
            serde_json::from_str::<Value>(&r.body).unwrap()["error"],
            "csrf"
        );
    }
    assert_eq!(f.runs.list(None).await.unwrap().len(), before);

    // With it: a new run, and on to its page.
    let token = csrf(&f, &trigger).await;
    let r = request(
        &f,
        Method::POST,
        &rerun,
        Some(&trigger),
        &[],
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let new_page = r.location().to_string();
    let new_name = new_page
        .strip_prefix(&format!("/runs/{ns}/"))
        .unwrap_or_else(|| panic!("{new_page}"));
    assert_ne!(new_name, name);
    let new = f.runs.run(&ns, new_name).unwrap();
    assert_eq!(
        new.spec.triggered_by.unwrap().principal,
        "alice@example.com"
    );
    assert_eq!(
        new.metadata.annotations.unwrap()[sparkwing_api::names::RERUN_OF_ANNOTATION],
        format!("{ns}/{name}")
    );
    let r = request(&f, Method::GET, &new_page, Some(&trigger), &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // The API's refusals come through: an unknown run is 404.
    let r = request(
        &f,
        Method::POST,
        &format!("/runs/{ns}/no-such-run/rerun"),
        Some(&trigger),
        &[("x-csrf-token", &token)],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
}

#[tokio::test]
async fn dashboard_run_page_lists_artifacts_with_sizes_and_downloads_them() {
    let f = fx().await;
    let (ns, name) = running_run(&f).await;
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    let (cookie, _) = login(&f, &f.reader).await;
    let page = request(
        &f,
        Method::GET,
        &format!("/runs/{ns}/{name}"),
        Some(&cookie),
        &[],
        "",
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        !page.body.contains("id=\"artifacts\""),
        "no artifacts, no section"
    );
    // The runner publishes a file artifact of two chunks.
    let (one, two): (&[u8], &[u8]) = (b"hello ", b"world");
    let r = f
        .call(
            Method::POST,
            "/api/v1/blobs",
            Some(&runner),
            Body::from(gzip(&blob_batch(&[one, two]))),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let manifest = json!({"kind": "file", "chunks": [
        {"sha256": sha256_hex(one), "size": 6}, {"sha256": sha256_hex(two), "size": 5}]});
    let r = f
        .json(
            Method::PUT,
            &format!("/api/v1/runs/{ns}/{name}/artifacts/build/report.txt"),
            &runner,
            json!({"manifest": manifest, "sizeBytes": 11, "files": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let page = request(
        &f,
        Method::GET,
        &format!("/runs/{ns}/{name}"),
        Some(&cookie),
        &[],
        "",
    )
    .await;
    assert!(
        page.body.contains("<h2 id=\"h-artifacts\">Artifacts</h2>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("<td class=\"num\">11 B</td>"),
        "{}",
        page.body
    );
    let href = format!("/runs/{ns}/{name}/artifacts/build/report.txt");
    assert!(
        page.body.contains(&format!(
            "<a href=\"{href}\" download=\"report.txt\">Download</a>"
        )),
        "{}",
        page.body
    );
    let got = request(&f, Method::GET, &href, Some(&cookie), &[], "").await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (StatusCode::OK, "hello world")
    );
    assert_eq!(
        got.headers["content-disposition"],
        "attachment; filename=\"report.txt\""
    );
    let missing = request(
        &f,
        Method::GET,
        &format!("/runs/{ns}/{name}/artifacts/build/nope"),
        Some(&cookie),
        &[],
        "",
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
    assert!(
        missing
            .body
            .contains("artifact nope of job build not found"),
        "{}",
        missing.body
    );
    // Without a session: to the login page, nothing downloaded.
    let anon = request(&f, Method::GET, &href, None, &[], "").await;
    assert_ne!(anon.status, StatusCode::OK);
    assert!(!anon.body.contains("hello world"));
}
