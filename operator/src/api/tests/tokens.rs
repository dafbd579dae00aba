//! Tokens and scopes: 401 and 403, a runner's credential limited to its run, revocation, the bootstrap token.

use super::*;

#[tokio::test]
async fn api_bad_tokens_are_401_and_missing_scopes_403() {
    let f = fx().await;
    for auth in [
        None,
        Some("Bearer nope"),
        Some("Basic abc"),
        Some("Bearer "),
    ] {
        let mut req = Request::get("/api/v1/runs");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = f.send(req.body(Body::empty()).unwrap()).await;
        assert_error(
            &r,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid bearer token",
        );
    }
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.reader,
            json!({"pipeline": "build", "source": {"git": {"url": "u", "revision": "r"}}}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        "missing scope runs:trigger",
    );
    assert_eq!(r.json()["scope"], "runs:trigger");
    let r = f.get("/api/v1/admin/tokens", &f.trigger).await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        "missing scope admin",
    );
    let r = f
        .json(Method::POST, "/api/v1/uploads", &f.reader, manifest(&[]))
        .await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        "missing scope runs:trigger",
    );
    // Health, readiness and metrics need no token.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = f.call(Method::GET, path, None, Body::empty()).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    let r = f.get("/api/v1/whoami", &f.reader).await;
    assert_eq!(r.json()["principal"], "bob");
    assert_eq!(r.json()["scopes"], json!(["runs:read"]));
}

#[tokio::test]
async fn api_runner_credential_is_limited_to_its_run() {
    let f = fx().await;
    let mine = f.upload(&[("a", "mine")]).await;
    let other = f.upload(&[("b", "other")]).await;
    let (ns, name) = f.trigger_run(&mine).await;
    let (_, other_run) = f.trigger_run(&other).await;
    let runner = f
        .runs
        .runner_token(&ns, &name)
        .expect("runner token stored");
    assert!(runner.starts_with("swr_"));

    // Allowed: its upload, its logs, its job states, its run.
    let r = f.get(&format!("/api/v1/uploads/{mine}"), &runner).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let sha = sha256_hex(b"mine");
    let r = f
        .get(&format!("/api/v1/uploads/{mine}/blobs/{sha}"), &runner)
        .await;
    assert_eq!(r.body, "mine");
    let batch = json!([{"job": "build", "seq": 1, "line": "hello"}]);
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/logs"),
            &runner,
            batch.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f
        .json(
            Method::PUT,
            &format!("/api/v1/runs/{ns}/{name}/jobs/build"),
            &runner,
            json!({"state": "running"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &runner).await;
    assert_eq!(r.json()["jobs"]["build"]["state"], "running");

    // Refused: anything else, naming the scope.
    let r = f.get(&format!("/api/v1/uploads/{other}"), &runner).await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        "missing scope runs:trigger",
    );
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{other_run}/logs"),
            &runner,
            batch.clone(),
        )
        .await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        &format!("missing scope run:{ns}/{other_run}"),
    );
    let r = f.get("/api/v1/runs", &runner).await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        "missing scope runs:read",
    );
    let r = f
        .json(Method::POST, "/api/v1/uploads", &runner, manifest(&[]))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = f
        .call(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/cancel"),
            Some(&runner),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Users with runs:trigger cannot write a run's logs either.
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/logs"),
            &f.trigger,
            batch,
        )
        .await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        &format!("missing scope run:{ns}/{name}"),
    );

    // Finishing archives the run and retires the credential.
    let r = f
        .call(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/finish"),
            Some(&runner),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(f.st.store.archived(&ns, &name).await.unwrap().is_some());
    let r = f.get(&format!("/api/v1/uploads/{mine}"), &runner).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn api_revocation_applies_to_the_next_request() {
    let f = fx().await;
    let r = f
        .json(
            Method::POST,
            "/api/v1/admin/tokens",
            &f.admin,
            json!({"principal": "ci", "scopes": ["runs:read"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v = r.json();
    let (token, id) = (v["token"].as_str().unwrap(), v["id"].as_str().unwrap());
    assert_eq!(f.get("/api/v1/runs", token).await.status, StatusCode::OK);

    // Only hashes are stored.
    let stored = f.st.store.meta.list_tokens().await.unwrap();
    let rec = stored.iter().find(|r| r.id == id).unwrap();
    assert_eq!(rec.hash, sha256_hex(token.as_bytes()));
    assert!(!format!("{stored:?}").contains(token));

    let r = f.get("/api/v1/admin/tokens", &f.admin).await;
    let listed = r.json();
    let row = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap()
        .clone();
    assert_eq!(row["principal"], "ci");
    assert!(row.get("hash").is_none() && row.get("token").is_none());

    let r = f
        .call(
            Method::DELETE,
            &format!("/api/v1/admin/tokens/{id}"),
            Some(&f.admin),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = f.get("/api/v1/runs", token).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized", "bearer");

    // Revocation is in the store: a restarted API (or another replica) sees it.
    let reopened = f.stores.reopen().await;
    assert!(reopened.lookup_token(token).await.unwrap().is_none());
    assert!(reopened.lookup_token(&f.admin).await.unwrap().is_some());

    let r = f
        .json(
            Method::POST,
            "/api/v1/admin/tokens",
            &f.admin,
            json!({"principal": "ci", "scopes": ["run:default/x"]}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "valid scopes");
}

#[tokio::test]
async fn api_bootstrap_admin_token_from_file() {
    let f = fx().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap");
    std::fs::write(&path, "swt_bootstrap-secret-0123456789\n").unwrap();
    assert!(f.st.bootstrap_admin_from_file(&path).await.unwrap());
    assert!(!f.st.bootstrap_admin_from_file(&path).await.unwrap());
    let r = f
        .get("/api/v1/whoami", "swt_bootstrap-secret-0123456789")
        .await;
    assert_eq!(r.json()["scopes"], json!(["admin"]));
    assert!(!f
        .st
        .bootstrap_admin_from_file(&dir.path().join("absent"))
        .await
        .unwrap());
    std::fs::write(&path, "short").unwrap();
    assert!(matches!(
        f.st.bootstrap_admin_from_file(&path).await,
        Err(ApiInitError::WeakBootstrapToken { .. })
    ));
}
