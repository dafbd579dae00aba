//! Warm pools: a pool token traded for the claiming run's token, and how a pod's claim is read.

use super::*;

#[tokio::test]
async fn api_pool_token_is_exchanged_for_the_claiming_runs_token() {
    let f = fx().await;
    let mine = f.upload(&[("a", "mine")]).await;
    let (ns, name) = f.trigger_run(&mine).await;
    let (_, other_run) = f.trigger_run(&mine).await;
    let pool = pool_token(&f, &ns, "warm").await;
    let claims = format!("/api/v1/pools/{ns}/warm/claims");
    let ask = |pod: &str, run: &str| json!({"pod": pod, "run": run});

    // An idle pod of the pool: not claimed yet.
    f.runs.set_pod_claim(
        &ns,
        "warm-1",
        PodClaim {
            pool: "warm".into(),
            pool_uid: "uid-warm".into(),
            claim: None,
        },
    );
    let r = f
        .json(Method::POST, &claims, &pool, ask("warm-1", &name))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", "is not claimed (yet)");

    // Claimed for this run: the run's runner token, which reads its run and upload and posts
    // its logs, and nothing of another run.
    f.runs.set_pod_claim(
        &ns,
        "warm-1",
        PodClaim {
            pool: "warm".into(),
            pool_uid: "uid-warm".into(),
            claim: Some((name.clone(), 2)),
        },
    );
    let r = f
        .json(Method::POST, &claims, &pool, ask("warm-1", &name))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = r.json();
    assert_eq!(v["attempt"], 2);
    let runner = v["token"].as_str().unwrap().to_string();
    assert!(runner.starts_with("swr_"), "{runner}");
    let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &runner).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f.get(&format!("/api/v1/uploads/{mine}"), &runner).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/logs"),
            &runner,
            json!([{"job": "build", "seq": 1, "line": "hello"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f
        .get(&format!("/api/v1/runs/{ns}/{other_run}"), &runner)
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "runs:read");

    // Asking for another run than the claim names.
    let r = f
        .json(Method::POST, &claims, &pool, ask("warm-1", &other_run))
        .await;
    assert_error(
        &r,
        StatusCode::CONFLICT,
        "conflict",
        &format!("is claimed by run {name}, not {other_run}"),
    );

    // A pod of another pool: 403 naming that pool's scope.
    f.runs.set_pod_claim(
        &ns,
        "fast-1",
        PodClaim {
            pool: "fast".into(),
            pool_uid: "uid-fast".into(),
            claim: Some((name.clone(), 1)),
        },
    );
    let r = f
        .json(Method::POST, &claims, &pool, ask("fast-1", &name))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "pool:");
    assert_eq!(r.json()["scope"], format!("pool:{ns}/fast"));

    // The token of another pool, a runner token, a reader: 403 naming this pool's scope.
    let fast = pool_token(&f, &ns, "fast").await;
    for token in [&fast, &runner, &f.reader, &f.trigger] {
        let r = f
            .json(Method::POST, &claims, token, ask("warm-1", &name))
            .await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "pool:");
        assert_eq!(r.json()["scope"], format!("pool:{ns}/warm"));
    }
    // The token of an earlier pool of the same name (another uid): refused.
    let (stale, _) =
        f.st.store
            .create_token(
                "pool",
                vec![format!("pool:{ns}/warm")],
                Some(crate::tokens::RunnerGrant {
                    upload: None,
                    pool_uid: Some("uid-deleted-warm".into()),
                }),
            )
            .await
            .unwrap();
    let r = f
        .json(Method::POST, &claims, &stale, ask("warm-1", &name))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "pool:");
    // The pool token gives nothing else: no run, no logs, no trigger.
    let r = f.get(&format!("/api/v1/runs/{ns}/{name}"), &pool).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "runs:read");
    let r = f.get("/api/v1/runs", &pool).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);

    // No such pod; a malformed body.
    let r = f
        .json(Method::POST, &claims, &pool, ask("gone", &name))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", "pod");
    let r = f
        .json(Method::POST, &claims, &pool, json!({"pod": "warm-1"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // A finished run gets no new token.
    f.runs.set_phase(&ns, &name, RunPhase::Succeeded);
    let r = f
        .json(Method::POST, &claims, &pool, ask("warm-1", &name))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", "already finished");
}

#[test]
fn pod_claims_are_read_from_the_pods_owner_labels_and_annotations() {
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "warm-1", "namespace": "ci",
            "labels": {"sparkwing.dev/claimed-by": "r1"},
            "annotations": {"sparkwing.dev/run": "r1", "sparkwing.dev/attempt": "3"},
            "ownerReferences": [
                {"apiVersion": "sparkwing.dev/v1alpha1", "kind": "RunnerPool", "name": "warm",
                 "uid": "u1", "controller": true},
                {"apiVersion": "sparkwing.dev/v1alpha1", "kind": "PipelineRun", "name": "r1",
                 "uid": "u2"}
            ]
        }
    }))
    .unwrap();
    assert_eq!(
        crate::runs::backend::pod_claim_of(&pod),
        Some(PodClaim {
            pool: "warm".into(),
            pool_uid: "u1".into(),
            claim: Some(("r1".into(), 3))
        })
    );
    // Annotations without the claim label (or the reverse) are not a claim.
    let mut idle = pod.clone();
    idle.metadata.labels = None;
    assert_eq!(
        crate::runs::backend::pod_claim_of(&idle).unwrap().claim,
        None
    );
    // A pod no pool controls is nobody's.
    let mut stray = pod;
    stray.metadata.owner_references.as_mut().unwrap()[0].controller = None;
    assert_eq!(crate::runs::backend::pod_claim_of(&stray), None);
}
