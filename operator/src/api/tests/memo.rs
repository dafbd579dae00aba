//! Memoized jobs of cluster runs: `PUT /api/v1/runs/{ns}/{name}/memo/{job}` and
//! `POST .../memo/{job}/lookup`.

use super::*;

/// A triggered, running run of `pipeline` with its runner token.
async fn running_of(f: &Fx, pipeline: &str) -> (String, String, String) {
    let up = f.upload(&[("a", "x")]).await;
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": pipeline, "source": {"upload": {"id": up}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v = r.json();
    let (ns, name) = (
        v["namespace"].as_str().unwrap().to_string(),
        v["name"].as_str().unwrap().to_string(),
    );
    f.runs.set_phase(&ns, &name, RunPhase::Running);
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    (ns, name, runner)
}

/// Publish `content` as artifact `bin` of job `build` of the run.
async fn publish_bin(f: &Fx, run: &(String, String, String), content: &[u8]) {
    let (ns, name, runner) = run;
    let r = f
        .call(
            Method::POST,
            "/api/v1/blobs",
            Some(runner),
            Body::from(gzip(&blob_batch(&[content]))),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let manifest =
        json!({"kind": "file", "chunks": [{"sha256": sha256_hex(content), "size": content.len()}]});
    let r = f
        .json(
            Method::PUT,
            &format!("/api/v1/runs/{ns}/{name}/artifacts/build/bin"),
            runner,
            json!({"manifest": manifest, "sizeBytes": content.len(), "files": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

async fn record(f: &Fx, run: &(String, String, String), hash: &str, outputs: Value) -> Res {
    let (ns, name, runner) = run;
    f.json(
        Method::PUT,
        &format!("/api/v1/runs/{ns}/{name}/memo/build"),
        runner,
        json!({"hash": hash, "outputs": outputs}),
    )
    .await
}

async fn lookup(f: &Fx, run: &(String, String, String), body: Value) -> Value {
    let (ns, name, runner) = run;
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/memo/build/lookup"),
            runner,
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.json()
}

const HOUR_MS: u64 = 3_600_000;

#[tokio::test]
async fn a_success_is_found_by_a_later_run_of_the_scope_with_its_outputs_and_artifacts() {
    let f = fx().await;
    let h = "a".repeat(64);
    let a = running_of(&f, "build").await;
    publish_bin(&f, &a, b"bin v1").await;
    let r = record(&f, &a, &h, json!({"digest": "d1"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.json()["scope"], "pipeline:build", "{}", r.body);

    let b = running_of(&f, "build").await;
    let found = lookup(
        &f,
        &b,
        json!({"hash": h, "ttlMs": HOUR_MS, "artifacts": ["bin"]}),
    )
    .await;
    assert_eq!(found["outcome"], "hit", "{found}");
    assert_eq!(found["fromRun"], a.1.as_str());
    assert_eq!(found["outputs"], json!({"digest": "d1"}));
    assert_eq!(found["artifacts"][0]["name"], "bin");
    assert_eq!(found["artifacts"][0]["sizeBytes"], 6);
    // The artifact is now run B's too: listed and fetchable, the same chunks.
    let (ns, name, _) = &b;
    let r = f
        .get(
            &format!("/api/v1/runs/{ns}/{name}/artifacts/build/bin"),
            &f.reader,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.json()["manifest"]["chunks"][0]["sha256"],
        sha256_hex(b"bin v1")
    );

    // Another hash, another pipeline (scope), a run's own record: misses.
    let other = "b".repeat(64);
    let miss = lookup(&f, &b, json!({"hash": other, "ttlMs": HOUR_MS})).await;
    assert_eq!(miss, json!({"outcome": "miss"}));
    let c = running_of(&f, "deploy").await;
    let miss = lookup(&f, &c, json!({"hash": h, "ttlMs": HOUR_MS})).await;
    assert_eq!(miss, json!({"outcome": "miss"}));
    let own = lookup(&f, &a, json!({"hash": h, "ttlMs": HOUR_MS})).await;
    assert_eq!(own, json!({"outcome": "miss"}));

    // A newer success wins.
    let d = running_of(&f, "build").await;
    publish_bin(&f, &d, b"bin v2").await;
    let r = record(&f, &d, &h, json!({"digest": "d2"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let found = lookup(&f, &c, json!({"hash": h, "ttlMs": HOUR_MS})).await;
    assert_eq!(found["outcome"], "miss", "another scope still: {found}");
    let e = running_of(&f, "build").await;
    let found = lookup(
        &f,
        &e,
        json!({"hash": h, "ttlMs": HOUR_MS, "artifacts": ["bin"]}),
    )
    .await;
    assert_eq!(found["fromRun"], d.1.as_str(), "{found}");
    assert_eq!(found["outputs"], json!({"digest": "d2"}));

    // An artifact the record's run lacks, or whose chunk is gone: a miss, nothing registered.
    let g = running_of(&f, "build").await;
    let miss = lookup(
        &f,
        &g,
        json!({"hash": h, "ttlMs": HOUR_MS, "artifacts": ["bin", "docs"]}),
    )
    .await;
    assert_eq!(miss, json!({"outcome": "miss"}));
    f.st.store
        .content
        .delete_blob(&sha256_hex(b"bin v2"))
        .await
        .unwrap();
    let miss = lookup(
        &f,
        &g,
        json!({"hash": h, "ttlMs": HOUR_MS, "artifacts": ["bin"]}),
    )
    .await;
    assert_eq!(miss, json!({"outcome": "miss"}));
    let r = f
        .get(
            &format!("/api/v1/runs/{}/{}/artifacts", g.0, g.1),
            &f.reader,
        )
        .await;
    assert_eq!(r.json()["artifacts"], json!([]), "{}", r.body);
}

#[tokio::test]
async fn only_results_within_the_ttl_count() {
    let f = fx().await;
    let h = "c".repeat(64);
    let a = running_of(&f, "build").await;
    let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    // A success two hours old.
    f.st.store
        .meta
        .record_memo(&sparkwing_state::MemoRecord {
            namespace: a.0.clone(),
            scope: "pipeline:build".into(),
            job: "build".into(),
            hash: h.clone(),
            run: "old-run".into(),
            outputs: "{}".into(),
            finished_ms: now - 2 * HOUR_MS as i64,
        })
        .await
        .unwrap();
    let miss = lookup(&f, &a, json!({"hash": h, "ttlMs": HOUR_MS})).await;
    assert_eq!(miss, json!({"outcome": "miss"}));
    let hit = lookup(&f, &a, json!({"hash": h, "ttlMs": 3 * HOUR_MS})).await;
    assert_eq!(hit["outcome"], "hit", "{hit}");
    assert_eq!(hit["fromRun"], "old-run");
}

#[tokio::test]
async fn memo_routes_need_the_runs_runner_and_refuse_bad_input() {
    let f = fx().await;
    let h = "d".repeat(64);
    let a = running_of(&f, "build").await;
    let b = running_of(&f, "build").await;
    let (ns, name, runner) = &a;
    let path = format!("/api/v1/runs/{ns}/{name}/memo/build");
    let body = json!({"hash": h});
    // A reader, another run's runner, no token.
    for token in [&f.reader, &b.2] {
        let r = f.json(Method::PUT, &path, token, body.clone()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        let r = f
            .json(
                Method::POST,
                &format!("{path}/lookup"),
                token,
                json!({"hash": h, "ttlMs": 1}),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    }
    let r = f
        .call(Method::PUT, &path, None, Body::from(body.to_string()))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    // Bad input.
    let r = f
        .json(Method::PUT, &path, runner, json!({"hash": "xyz"}))
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "invalid memo input hash \"xyz\": 64 lowercase hex digits",
    );
    let r = f
        .json(Method::PUT, &path, runner, json!({"hash": h, "ttl": 5}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = f
        .json(
            Method::PUT,
            &format!("/api/v1/runs/{ns}/{name}/memo/.x"),
            runner,
            body.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let big = "x".repeat(sparkwing_api::wire::MAX_JOB_OUTPUTS_BYTES + 1);
    let r = f
        .json(
            Method::PUT,
            &path,
            runner,
            json!({"hash": h, "outputs": {"o": big}}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "job build: its outputs hold",
    );
    let r = f
        .json(
            Method::POST,
            &format!("{path}/lookup"),
            runner,
            json!({"hash": h}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "ttlMs");
    let r = f
        .json(
            Method::POST,
            &format!("{path}/lookup"),
            runner,
            json!({"hash": h, "ttlMs": 1, "artifacts": ["../x"]}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "invalid artifact name",
    );
    // A run that does not exist.
    let r = f
        .json(
            Method::PUT,
            &format!("/api/v1/runs/{ns}/nope/memo/build"),
            &f.admin,
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
}
