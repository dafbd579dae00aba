//! `POST /api/v1/runs`: who triggered, a sub-pipeline's parent, run settings, the pipeline chain.

use super::*;

#[tokio::test]
async fn api_trigger_fills_triggered_by_from_the_token() {
    let f = fx().await;
    let id = f.upload(&[("a", "1")]).await;
    let mut req = Request::post("/api/v1/runs")
        .header("authorization", format!("Bearer {}", f.trigger))
        .header("x-forwarded-for", "6.6.6.6")
        .body(Body::from(
            json!({"pipeline": "Build App", "args": {"env": "prod"},
                   "source": {"upload": {"id": id}}})
            .to_string(),
        ))
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([10, 1, 2, 3], 40000))));
    let r = f.send(req).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v = r.json();
    let (ns, name) = (
        v["namespace"].as_str().unwrap(),
        v["name"].as_str().unwrap(),
    );
    assert_eq!(ns, "default");
    assert!(name.starts_with("build-app-"), "{name}");
    let run = f.runs.run(ns, name).unwrap();
    let by = run.spec.triggered_by.unwrap();
    assert_eq!(by.principal, "alice@example.com");
    assert_eq!(by.host.as_deref(), Some("10.1.2.3"));
    assert_eq!(by.via, TriggerVia::Cli);
    assert_eq!(run.spec.args["env"], "prod");
    assert!(matches!(run.spec.source, Source::Upload(ref u) if u.id == id));

    // The client cannot write triggeredBy.
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "build", "source": {"upload": {"id": id}},
                   "triggeredBy": {"principal": "mallory", "via": "webhook"}}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "triggeredBy");

    // An upload that lacks blobs, or does not exist, cannot be run.
    let r = f
        .json(
            Method::POST,
            "/api/v1/uploads",
            &f.trigger,
            manifest(&[("z", "zz")]),
        )
        .await;
    let partial = r.json()["id"].as_str().unwrap().to_string();
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "build", "source": {"upload": {"id": partial}}}),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", "lacks 1 blobs");
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "build", "source": {"upload": {"id": "nope"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A local path needs admin.
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "build", "source": {"local": {"path": "/src"}}}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        "missing scope admin",
    );
    // The spec's own checks apply.
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "build", "timeout": "soon",
                   "source": {"git": {"url": "https://x/y.git", "revision": "main"}}}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "spec.timeout");
}

#[tokio::test]
async fn api_trigger_records_the_parent_of_a_sub_pipeline() {
    let f = fx().await;
    let id = f.upload(&[("a", "1")]).await;
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "child", "source": {"upload": {"id": id}},
                   "parent": {"run": "run-20261127-163356-1a2b3c", "job": "deploy", "host": "laptop.local"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v = r.json();
    let (ns, name) = (
        v["namespace"].as_str().unwrap().to_string(),
        v["name"].as_str().unwrap().to_string(),
    );
    let run = f.runs.run(&ns, &name).unwrap();
    let a = run.metadata.annotations.as_ref().unwrap();
    assert_eq!(a["sparkwing.dev/parent-run"], "run-20261127-163356-1a2b3c");
    assert_eq!(a["sparkwing.dev/parent-job"], "deploy");
    assert_eq!(a["sparkwing.dev/parent-host"], "laptop.local");
    let got = f
        .get(&format!("/api/v1/runs/{ns}/{name}"), &f.trigger)
        .await
        .json();
    assert_eq!(
        got["parent"],
        json!({"run": "run-20261127-163356-1a2b3c", "job": "deploy", "host": "laptop.local"}),
        "{got}"
    );
    let list = f.get("/api/v1/runs", &f.trigger).await.json();
    assert_eq!(list["runs"][0]["parent"]["job"], "deploy", "{list}");

    // A parent on a cluster (`ns/name`), without a host.
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "child", "source": {"upload": {"id": id}},
                   "parent": {"run": "ci/parent-1a2b3c4d", "job": "deploy"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let name2 = r.json()["name"].as_str().unwrap().to_string();
    let got = f
        .get(&format!("/api/v1/runs/{ns}/{name2}"), &f.trigger)
        .await
        .json();
    assert_eq!(
        got["parent"],
        json!({"run": "ci/parent-1a2b3c4d", "job": "deploy"}),
        "{got}"
    );
    // A run without a parent shows none.
    let (ns3, name3) = f.trigger_run(&id).await;
    let got = f
        .get(&format!("/api/v1/runs/{ns3}/{name3}"), &f.trigger)
        .await
        .json();
    assert!(got.get("parent").is_none(), "{got}");

    // Bad parents are refused before anything is created.
    let count = || async {
        f.get("/api/v1/runs", &f.trigger).await.json()["runs"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = count().await;
    let long = "r".repeat(254);
    for (parent, want) in [
        (json!({"run": "", "job": "deploy"}), "invalid parent.run"),
        (json!({"run": long, "job": "deploy"}), "invalid parent.run"),
        (
            json!({"run": "a/b/c", "job": "deploy"}),
            "invalid parent.run",
        ),
        (
            json!({"run": "../x", "job": "deploy"}),
            "invalid parent.run",
        ),
        (
            json!({"run": "run 1", "job": "deploy"}),
            "invalid parent.run",
        ),
        (json!({"run": "run-1", "job": "de/ploy"}), "parent.job"),
        (json!({"run": "run-1", "job": ""}), "parent.job"),
        (
            json!({"run": "run-1", "job": "deploy", "host": "a b"}),
            "invalid parent.host",
        ),
        (
            json!({"run": "run-1", "job": "deploy", "host": ""}),
            "invalid parent.host",
        ),
        (json!({"run": "run-1", "job": "deploy", "pid": 7}), "pid"),
        (json!({"run": "run-1"}), "job"),
    ] {
        let r = f
            .json(
                Method::POST,
                "/api/v1/runs",
                &f.trigger,
                json!({"pipeline": "child", "source": {"upload": {"id": id}}, "parent": parent}),
            )
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", want);
    }
    assert_eq!(count().await, before);
}

#[tokio::test]
async fn api_trigger_checks_run_settings_before_creating() {
    let f = fx().await;
    let id = f.upload(&[("a", "1")]).await;
    let trigger = |extra: Value| {
        let mut body = json!({"pipeline": "deploy", "source": {"upload": {"id": id}}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        f.json(Method::POST, "/api/v1/runs", &f.trigger, body)
    };
    let count = || async {
        f.get("/api/v1/runs", &f.trigger).await.json()["runs"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = count().await;
    for (extra, want) in [
        (json!({"timeout": "soon"}), "spec.timeout: "),
        (
            json!({"timeout": "0s"}),
            "timeout must be greater than zero",
        ),
        (
            json!({"maxAttempts": 0}),
            "maxAttempts must be between 1 and",
        ),
        (
            json!({"maxAttempts": 1000}),
            "maxAttempts must be between 1 and",
        ),
        (
            json!({"ttlSecondsAfterFinished": -1}),
            "ttlSecondsAfterFinished must not be negative",
        ),
    ] {
        let r = trigger(extra.clone()).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", want);
    }
    assert_eq!(count().await, before, "nothing created for bad settings");
    // Good ones reach the PipelineRun.
    let r =
        trigger(json!({"timeout": "30m", "maxAttempts": 1, "ttlSecondsAfterFinished": 60})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v = r.json();
    let run = f
        .runs
        .run(
            v["namespace"].as_str().unwrap(),
            v["name"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(run.spec.timeout.as_deref(), Some("30m"));
    assert_eq!(run.spec.max_attempts, 1);
    assert_eq!(run.spec.ttl_seconds_after_finished, Some(60));
}

#[tokio::test]
async fn api_trigger_records_the_pipeline_chain_and_refuses_cycles() {
    let f = fx().await;
    let id = f.upload(&[("a", "1")]).await;
    let trigger = |body: Value| f.json(Method::POST, "/api/v1/runs", &f.trigger, body);
    let r = trigger(
        json!({"pipeline": "deploy", "source": {"upload": {"id": id}},
                           "pipelineChain": ["ship", "build-2"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v = r.json();
    let run = f
        .runs
        .run(
            v["namespace"].as_str().unwrap(),
            v["name"].as_str().unwrap(),
        )
        .unwrap();
    let a = run.metadata.annotations.as_ref().unwrap();
    assert_eq!(a["sparkwing.dev/pipeline-chain"], "ship,build-2");
    // The runner reads it from the run view's PipelineRun.
    let got = f
        .get(
            &format!(
                "/api/v1/runs/{}/{}",
                v["namespace"].as_str().unwrap(),
                v["name"].as_str().unwrap()
            ),
            &f.trigger,
        )
        .await
        .json();
    assert_eq!(
        got["run"]["metadata"]["annotations"]["sparkwing.dev/pipeline-chain"], "ship,build-2",
        "{got}"
    );
    // An empty chain, or none, records nothing.
    for extra in [json!({"pipelineChain": []}), json!({})] {
        let mut body = json!({"pipeline": "deploy", "source": {"upload": {"id": id}}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = trigger(body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let v = r.json();
        let run = f
            .runs
            .run(
                v["namespace"].as_str().unwrap(),
                v["name"].as_str().unwrap(),
            )
            .unwrap();
        assert!(
            run.metadata
                .annotations
                .as_ref()
                .is_none_or(|a| !a.contains_key("sparkwing.dev/pipeline-chain")),
            "{:?}",
            run.metadata
        );
    }

    // A pipeline already in the chain, and bad chains, are refused before anything is created.
    let count = || async {
        f.get("/api/v1/runs", &f.trigger).await.json()["runs"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = count().await;
    let r = trigger(json!({"pipeline": "a", "source": {"upload": {"id": id}},
                           "pipelineChain": ["x", "a", "b"]}))
    .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "cycle of pipelines awaiting each other: a -> b -> a",
    );
    assert_eq!(
        r.json()["message"],
        "cycle of pipelines awaiting each other: a -> b -> a"
    );
    let deep: Vec<String> = (0..33).map(|i| format!("p{i}")).collect();
    let at_cap: Vec<String> = (0..32).map(|i| format!("p{i}")).collect();
    for (chain, want) in [
        (json!(deep), "at most 32"),
        (json!(["ok", "Upper"]), "invalid pipelineChain[1] \"Upper\""),
        (json!([""]), "invalid pipelineChain[0]"),
        (json!(["-x"]), "invalid pipelineChain[0]"),
        (json!(["a,b"]), "invalid pipelineChain[0]"),
        (json!(["a b"]), "invalid pipelineChain[0]"),
        (json!(["p".repeat(65)]), "invalid pipelineChain[0]"),
        (
            json!(["b", "c", "b"]),
            "pipelineChain: cycle of pipelines awaiting each other: b -> c -> b",
        ),
        (json!("a,b"), "expected a sequence"),
        (json!([1]), "expected a string"),
    ] {
        let r = trigger(
            json!({"pipeline": "deploy", "source": {"upload": {"id": id}},
                               "pipelineChain": chain}),
        )
        .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", want);
    }
    assert_eq!(count().await, before);
    // 32 deep is allowed.
    let r = trigger(
        json!({"pipeline": "deploy", "source": {"upload": {"id": id}},
                           "pipelineChain": at_cap}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}
