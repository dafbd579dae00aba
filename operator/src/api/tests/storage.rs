//! Caches and artifacts of cluster runs: `/api/v1/runs/{ns}/{name}/caches`,
//! `.../artifacts`, `/api/v1/caches`, `GET /api/v1/blobs/{sha}`, and their collection.

use super::*;

/// A triggered run with its runner token.
async fn running(f: &Fx) -> (String, String, String) {
    let up = f.upload(&[("a", "x")]).await;
    let (ns, name) = f.trigger_run(&up).await;
    f.runs.set_phase(&ns, &name, RunPhase::Running);
    let runner = f.runs.runner_token(&ns, &name).unwrap();
    (ns, name, runner)
}

fn chunk_manifest(kind: &str, chunks: &[&[u8]]) -> Value {
    json!({
        "kind": kind,
        "chunks": chunks.iter().map(|c| json!({"sha256": sha256_hex(c), "size": c.len()})).collect::<Vec<_>>(),
    })
}

async fn post_batch(f: &Fx, token: &str, chunks: &[&[u8]]) -> Res {
    f.call(
        Method::POST,
        "/api/v1/blobs",
        Some(token),
        Body::from(gzip(&blob_batch(chunks))),
    )
    .await
}

/// Commit `chunks` as cache `key` of the run: missing first, then uploaded, then saved.
async fn save(f: &Fx, run: &(String, String, String), key: &str, chunks: &[&[u8]]) -> Res {
    let (ns, name, runner) = run;
    let path = format!("/api/v1/runs/{ns}/{name}/caches/{key}");
    let body = json!({"manifest": chunk_manifest("tar", chunks)});
    let r = f.json(Method::POST, &path, runner, body.clone()).await;
    if r.status == StatusCode::OK && r.json()["state"] == "missing" {
        let r = post_batch(f, runner, chunks).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        return f.json(Method::POST, &path, runner, body).await;
    }
    r
}

#[tokio::test]
async fn a_cache_is_committed_after_its_chunks_and_the_first_commit_stands() {
    let f = fx().await;
    let run = running(&f).await;
    let (ns, name, runner) = &run;
    let path = format!("/api/v1/runs/{ns}/{name}/caches/cargo-abc");
    let body = json!({"manifest": chunk_manifest("tar", &[b"one", b"two", b"one"])});
    let r = f.json(Method::POST, &path, runner, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"state": "missing", "missing": [sha256_hex(b"one"), sha256_hex(b"two")], "sizeBytes": 9})
    );
    // Nothing stored yet: a lookup misses.
    let r = f.get(&path, runner).await;
    assert_eq!(r.json(), json!({"outcome": "miss"}), "{}", r.body);
    // A runner token may send blobs.
    let r = post_batch(&f, runner, &[b"one"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f.json(Method::POST, &path, runner, body.clone()).await;
    assert_eq!(
        r.json()["missing"],
        json!([sha256_hex(b"two")]),
        "{}",
        r.body
    );
    let r = post_batch(&f, runner, &[b"two"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f.json(Method::POST, &path, runner, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.json(), json!({"state": "saved", "sizeBytes": 9}));
    // A second commit of the key (other content) is dropped; the first entry stays.
    let r = save(&f, &run, "cargo-abc", &[b"other"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["state"], "alreadySaved");
    let r = f.get(&path, runner).await;
    let v = r.json();
    assert_eq!(v["outcome"], "hit");
    assert_eq!(v["key"], "cargo-abc");
    assert_eq!(v["sizeBytes"], 9);
    assert_eq!(v["manifest"]["chunks"].as_array().unwrap().len(), 3);
    // The chunks are read back by a runner or a reader, by address.
    let r = f
        .get(&format!("/api/v1/blobs/{}", sha256_hex(b"two")), runner)
        .await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "two"));
    let r = f
        .get(&format!("/api/v1/blobs/{}", sha256_hex(b"two")), &f.reader)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f
        .get(&format!("/api/v1/blobs/{}", sha256_hex(b"nope")), &f.reader)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
}

#[tokio::test]
async fn concurrent_commits_of_one_key_keep_one() {
    let f = fx().await;
    let run = running(&f).await;
    let r = post_batch(&f, &run.2, &[b"a", b"b"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (a, b) = tokio::join!(
        save(&f, &run, "race-1", &[b"a"]),
        save(&f, &run, "race-1", &[b"b"])
    );
    let mut states = vec![
        a.json()["state"].as_str().unwrap().to_string(),
        b.json()["state"].as_str().unwrap().to_string(),
    ];
    states.sort();
    assert_eq!(states, ["alreadySaved", "saved"]);
}

#[tokio::test]
async fn a_lookup_falls_back_to_the_newest_of_the_prefix_within_the_scope() {
    let f = fx().await;
    let run = running(&f).await;
    let (ns, name, runner) = &run;
    for (key, content) in [("cargo-1", b"1"), ("cargo-2", b"2")] {
        let r = save(&f, &run, key, &[content]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        // Saved at distinct milliseconds, so "newest" is decided by time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let t = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        while k8s_openapi::jiff::Timestamp::now().as_millisecond() == t {
            assert!(std::time::Instant::now() < deadline);
            tokio::task::yield_now().await;
        }
    }
    let v = f
        .get(
            &format!("/api/v1/runs/{ns}/{name}/caches/cargo-9?fallback=cargo-"),
            runner,
        )
        .await
        .json();
    assert_eq!(
        (v["outcome"].as_str(), v["key"].as_str()),
        (Some("fallback"), Some("cargo-2"))
    );
    let v = f
        .get(&format!("/api/v1/runs/{ns}/{name}/caches/cargo-9"), runner)
        .await
        .json();
    assert_eq!(v["outcome"], "miss");
    // Another run of the same pipeline shares the scope; a run of another pipeline does not.
    let other = running(&f).await;
    let r = f
        .get(
            &format!("/api/v1/runs/{}/{}/caches", other.0, other.1),
            &other.2,
        )
        .await;
    let keys: Vec<String> = r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["cargo-1", "cargo-2"], "{}", r.body);
    let up = f.upload(&[("a", "x")]).await;
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "deploy", "source": {"upload": {"id": up}}}),
        )
        .await;
    let v = r.json();
    let (dns, dname) = (
        v["namespace"].as_str().unwrap(),
        v["name"].as_str().unwrap(),
    );
    let dtoken = f.runs.runner_token(dns, dname).unwrap();
    let r = f
        .get(
            &format!("/api/v1/runs/{dns}/{dname}/caches/cargo-1"),
            &dtoken,
        )
        .await;
    assert_eq!(r.json()["outcome"], "miss", "{}", r.body);
    // Another run's token may not use this run's caches; a reader may not either.
    let r = f
        .get(&format!("/api/v1/runs/{ns}/{name}/caches/cargo-1"), &dtoken)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = f
        .get(
            &format!("/api/v1/runs/{ns}/{name}/caches/cargo-1"),
            &f.reader,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
}

async fn prune(f: &Fx, body: Value, token: &str) -> Res {
    f.json(Method::POST, "/api/v1/caches/prune", token, body)
        .await
}

#[tokio::test]
async fn caches_are_listed_by_readers_and_pruned_by_admins() {
    let f = fx().await;
    let run = running(&f).await;
    for key in ["cargo-1", "npm-1"] {
        let r = save(&f, &run, key, &[key.as_bytes()]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let r = f.get("/api/v1/caches", &f.reader).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let entries = r.json()["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["key"], "cargo-1");
    assert_eq!(entries[0]["scope"], "pipeline:build");
    assert_eq!(entries[0]["namespace"], run.0.as_str());
    assert_eq!(entries[0]["sizeBytes"], 7);
    let r = f.get("/api/v1/caches?namespace=elsewhere", &f.reader).await;
    let f = &f;
    assert_eq!(r.json()["entries"], json!([]));
    let r = prune(f, json!({"key": "cargo-1"}), &f.reader).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "admin");
    let r = prune(f, json!({"key": "nope-1"}), &f.admin).await;
    assert_error(
        &r,
        StatusCode::NOT_FOUND,
        "not_found",
        "cache entry nope-1 not found",
    );
    let r = prune(f, json!({}), &f.admin).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "exactly one of");
    let r = prune(f, json!({"all": true, "key": "cargo-1"}), &f.admin).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = prune(f, json!({"key": "cargo-1"}), &f.admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["removed"][0]["key"], "cargo-1");
    // Used just now: not unused for an hour.
    let r = prune(f, json!({"unusedForSecs": 3600}), &f.admin).await;
    assert_eq!(r.json()["removed"], json!([]), "{}", r.body);
    let r = prune(f, json!({"all": true}), &f.admin).await;
    assert_eq!(r.json()["removed"][0]["key"], "npm-1", "{}", r.body);
    let r = f.get("/api/v1/caches", &f.reader).await;
    assert_eq!(r.json()["entries"], json!([]));
}

#[tokio::test]
async fn the_scope_keeps_to_its_cap_least_recently_used_first() {
    let f = fx_with(ApiConfig {
        cache_max_bytes: 10,
        ..ApiConfig::default()
    })
    .await;
    let run = running(&f).await;
    let r = save(&f, &run, "big-1", &[b"eleven byte"]).await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "10 bytes",
    );
    for key in ["a-1", "b-1", "c-1"] {
        let r = save(&f, &run, key, &[format!("{key}-").as_bytes()]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    // 4 bytes each, 10 at most: the oldest went when the third came.
    let r = f.get("/api/v1/caches", &f.reader).await;
    let keys: Vec<String> = r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["b-1", "c-1"], "{}", r.body);
}

#[tokio::test]
async fn artifacts_are_published_listed_and_collected_with_their_run() {
    let f = fx().await;
    let run = running(&f).await;
    let (ns, name, runner) = &run;
    let path = format!("/api/v1/runs/{ns}/{name}/artifacts/build/dist");
    let body =
        json!({"manifest": chunk_manifest("tar", &[b"dist-chunk"]), "sizeBytes": 8, "files": 2});
    let r = f.json(Method::PUT, &path, runner, body.clone()).await;
    assert_eq!(r.json()["state"], "missing", "{}", r.body);
    let r = post_batch(&f, runner, &[b"dist-chunk"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f.json(Method::PUT, &path, runner, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // A reader may not publish.
    let r = f
        .json(
            Method::PUT,
            &path,
            &f.reader,
            json!({"manifest": chunk_manifest("file", &[]), "sizeBytes": 0, "files": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = f
        .get(&format!("/api/v1/runs/{ns}/{name}/artifacts"), &f.reader)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let a = &r.json()["artifacts"][0];
    assert_eq!(
        (
            a["job"].as_str(),
            a["name"].as_str(),
            a["kind"].as_str(),
            a["sizeBytes"].as_u64(),
            a["files"].as_u64()
        ),
        (Some("build"), Some("dist"), Some("tar"), Some(8), Some(2))
    );
    assert!(a.get("manifest").is_none());
    let r = f.get(&path, &f.reader).await;
    assert_eq!(r.json()["manifest"]["chunks"][0]["size"], 10, "{}", r.body);
    let r = f
        .get(
            &format!("/api/v1/runs/{ns}/{name}/artifacts/build/nope"),
            runner,
        )
        .await;
    assert_error(
        &r,
        StatusCode::NOT_FOUND,
        "not_found",
        "artifact nope of job build not found",
    );
    let r = f
        .get(
            &format!("/api/v1/runs/{ns}/{name}/artifacts/build/a%20b"),
            runner,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = f
        .json(
            Method::PUT,
            &format!("/api/v1/runs/{ns}/{name}/artifacts/build/a%20b"),
            runner,
            json!({"manifest": chunk_manifest("file", &[]), "sizeBytes": 0, "files": 1}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "invalid artifact name",
    );
    // A cache entry of the same run keeps its chunk through collection.
    let r = save(&f, &run, "keep-1", &[b"kept-chunk"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // The run ends and its object is deleted: retention removes its records and artifacts, and
    // the artifact's chunk goes (no manifest names it); the cache entry's stays.
    f.runs.set_phase(ns, name, RunPhase::Succeeded);
    let r = f.get("/api/v1/runs", &f.reader).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    f.runs.delete(ns, name);
    let r = f
        .json(
            Method::POST,
            "/api/v1/admin/gc",
            &f.admin,
            json!({"graceSeconds": 0, "retainFinishedRuns": 0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["runsDeleted"], 1, "{}", r.body);
    let key = sparkwing_state::RunKey::new(ns, name);
    assert!(f
        .st
        .store
        .meta
        .list_artifacts(&key)
        .await
        .unwrap()
        .is_empty());
    let content = &f.st.store.content;
    assert!(!content
        .blob_exists(&sha256_hex(b"dist-chunk"))
        .await
        .unwrap());
    assert!(content
        .blob_exists(&sha256_hex(b"kept-chunk"))
        .await
        .unwrap());
}

#[tokio::test]
async fn bad_manifests_and_keys_are_refused() {
    let f = fx().await;
    let (ns, name, runner) = running(&f).await;
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/caches/k-1"),
            &runner,
            json!({"manifest": {"kind": "tar", "chunks": [{"sha256": "XY", "size": 1}]}}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "chunk 0: sha256 must be 64 lowercase hex digits",
    );
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/caches/.hidden"),
            &runner,
            json!({"manifest": chunk_manifest("tar", &[b"x"])}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "invalid cache key",
    );
    // A chunk stored with another size than the manifest says.
    let r = post_batch(&f, &runner, &[b"four"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = f
        .json(
            Method::POST,
            &format!("/api/v1/runs/{ns}/{name}/caches/k-1"),
            &runner,
            json!({"manifest": {"kind": "tar", "chunks": [{"sha256": sha256_hex(b"four"), "size": 5}]}}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "is 4 bytes, not 5",
    );
}

/// A commit that found a chunk stored (nothing naming it yet, older than the grace) records its
/// entry before collection lists what names chunks, or after collection's deletions: never in
/// between, where the chunk would be deleted under the new entry.
#[tokio::test]
async fn a_chunk_found_stored_by_a_commit_survives_a_collection_at_the_same_time() {
    use sparkwing_state::BlobLockMode;
    use std::time::Duration;
    let f = fx().await;
    let run = running(&f).await;
    let r = post_batch(&f, &run.2, &[b"reused-chunk"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // The commit has found the chunk stored, and has not recorded its entry yet.
    let commit =
        f.st.store
            .meta
            .lock_blobs(BlobLockMode::Reuse)
            .await
            .unwrap();
    let st = f.st.clone();
    let mut gc = tokio::spawn(async move {
        crate::api::collect::collect(&st, Duration::ZERO, Default::default())
            .await
            .unwrap()
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut gc)
            .await
            .is_err(),
        "collection swept while a commit was between its check and its record"
    );
    let manifest = chunk_manifest("tar", &[b"reused-chunk"]).to_string();
    let committed =
        f.st.store
            .meta
            .commit_cache_entry(&sparkwing_state::CacheRecord {
                namespace: run.0.clone(),
                scope: "pipeline:demo".into(),
                key: "reused".into(),
                manifest,
                size_bytes: 12,
                created_ms: 1,
                last_used_ms: 1,
            })
            .await
            .unwrap();
    assert!(committed);
    drop(commit);
    let report = tokio::time::timeout(Duration::from_secs(30), gc)
        .await
        .expect("collection ends once the commit is recorded")
        .unwrap();
    assert_eq!(report.blobs_deleted, 0, "{report:?}");
    assert!(f
        .st
        .store
        .content
        .blob_exists(&sha256_hex(b"reused-chunk"))
        .await
        .unwrap());
}
