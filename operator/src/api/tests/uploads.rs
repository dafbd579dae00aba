//! Uploads and blobs: incremental uploads, hash and path checks, body and manifest limits, blob batches.

use super::*;

#[tokio::test]
async fn api_incremental_upload_sends_only_missing_blobs() {
    let f = fx().await;
    let files = [
        ("src/main.rs", "fn main() {}"),
        ("README.md", "hi"),
        ("b", "hi"),
    ];
    let mut m = manifest(&files);
    m["files"]
        .as_array_mut()
        .unwrap()
        .push(json!({"path": "src/link", "symlink": "../README.md"}));
    let r = f
        .json(Method::POST, "/api/v1/uploads", &f.trigger, m.clone())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let first = r.json();
    // Two distinct contents: "hi" is one blob.
    assert_eq!(first["missing"].as_array().unwrap().len(), 2);
    assert_eq!(first["files"], 4);
    for (_, c) in &files[..2] {
        let r = f
            .put_blob(&f.trigger, &sha256_hex(c.as_bytes()), c.as_bytes())
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    // A blob sent twice is stored once.
    let r = f.put_blob(&f.trigger, &sha256_hex(b"hi"), b"hi").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["created"], false);

    // The unchanged tree, entries in another order: same id, nothing missing.
    m["files"].as_array_mut().unwrap().reverse();
    let r = f.json(Method::POST, "/api/v1/uploads", &f.trigger, m).await;
    assert_eq!(r.json()["id"], first["id"]);
    assert_eq!(r.json()["missing"], json!([]));

    let id = first["id"].as_str().unwrap();
    let r = f.get(&format!("/api/v1/uploads/{id}"), &f.trigger).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["manifest"]["files"][0]["path"], "README.md");
    let sha = sha256_hex(b"fn main() {}");
    let r = f
        .get(&format!("/api/v1/uploads/{id}/blobs/{sha}"), &f.trigger)
        .await;
    assert_eq!(r.body, "fn main() {}");
    let metrics = f.call(Method::GET, "/metrics", None, Body::empty()).await;
    assert!(
        metrics.body.contains("sparkwing_api_uploads_total 2"),
        "{}",
        metrics.body
    );
    assert!(metrics.body.contains("sparkwing_api_blobs_written_total 2"));
    assert!(metrics
        .body
        .contains("route=\"/api/v1/blobs/{sha}\",code=\"201\"} 2"));
}

#[tokio::test]
async fn api_blob_with_wrong_hash_is_refused() {
    let f = fx().await;
    let r = f.put_blob(&f.trigger, &sha256_hex(b"one"), b"two").await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "hash_mismatch",
        "expected sha256",
    );
    let content = &f.st.store.content;
    assert!(!content.blob_exists(&sha256_hex(b"one")).await.unwrap());
    assert!(!content.blob_exists(&sha256_hex(b"two")).await.unwrap());
    let r = f
        .call(
            Method::PUT,
            &format!("/api/v1/blobs/{}", sha256_hex(b"x")),
            Some(&f.trigger),
            Body::from("not gzip"),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "gzip");
    let r = f.put_blob(&f.trigger, "not-a-sha", b"x").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn api_upload_paths_that_escape_the_root_are_refused() {
    let f = fx().await;
    let h = sha256_hex(b"x");
    let cases = [
        json!({"path": "../x", "mode": 420, "size": 1, "sha256": h}),
        json!({"path": "/etc/passwd", "mode": 420, "size": 1, "sha256": h}),
        json!({"path": "a/../../b", "mode": 420, "size": 1, "sha256": h}),
        json!({"path": "a/link", "symlink": "../../outside"}),
        json!({"path": "link", "symlink": "/etc"}),
    ];
    for entry in cases {
        let r = f
            .json(
                Method::POST,
                "/api/v1/uploads",
                &f.trigger,
                json!({"files": [entry]}),
            )
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_manifest", "");
    }
    let r = f
        .json(
            Method::POST,
            "/api/v1/uploads",
            &f.trigger,
            json!({"files": [
                {"path": "a", "mode": 420, "size": 1, "sha256": h},
                {"path": "a", "mode": 420, "size": 1, "sha256": h},
            ]}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_manifest", "duplicate");
}

#[tokio::test]
async fn api_oversized_bodies_are_413() {
    let mut config = ApiConfig::default();
    config.limits.blob_body = 256;
    config.limits.json_body = 64;
    config.limits.manifest_body = 128;
    config.limits.manifest.max_file_size = 1000;
    let f = fx_with(config).await;
    // Compressed body over the limit (random-ish content does not compress).
    let noise: Vec<u8> = (0..2000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let r = f.put_blob(&f.trigger, &sha256_hex(&noise), &noise).await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "compressed blob exceeds the limit of 256 bytes",
    );
    // A small body that decompresses past the file size limit.
    let zeros = vec![0u8; 5000];
    let r = f.put_blob(&f.trigger, &sha256_hex(&zeros), &zeros).await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "decompressed blob",
    );
    let r = f
        .json(
            Method::POST,
            "/api/v1/runs",
            &f.trigger,
            json!({"pipeline": "x".repeat(100), "source": {"git": {"url": "u", "revision": "r"}}}),
        )
        .await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "trigger request",
    );
    let r = f
        .json(
            Method::POST,
            "/api/v1/uploads",
            &f.trigger,
            manifest(&[("a", "1"), ("b", "2"), ("c", "3")]),
        )
        .await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "manifest",
    );
}

#[tokio::test]
async fn api_manifest_limits_are_enforced() {
    let mut config = ApiConfig::default();
    config.limits.manifest.max_files = 2;
    let f = fx_with(config).await;
    let r = f
        .json(
            Method::POST,
            "/api/v1/uploads",
            &f.trigger,
            manifest(&[("a", "1"), ("b", "2"), ("c", "3")]),
        )
        .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_manifest",
        "too many entries",
    );
}

#[tokio::test]
async fn a_blob_batch_stores_every_checked_blob_once_and_refuses_bad_frames() {
    let f = fx().await;
    let files = [("a", "alpha"), ("b", "beta\n"), ("c", "")];
    let r = f
        .json(
            Method::POST,
            "/api/v1/uploads",
            &f.trigger,
            manifest(&files),
        )
        .await;
    assert_eq!(
        r.json()["missing"].as_array().unwrap().len(),
        3,
        "{}",
        r.body
    );
    let post = |body: Vec<u8>| {
        f.call(
            Method::POST,
            "/api/v1/blobs",
            Some(&f.trigger),
            Body::from(body),
        )
    };

    // A frame whose content does not match its hash: nothing of the batch is stored.
    let mut bad = blob_batch(&[b"alpha"]);
    bad.extend_from_slice(format!("{} 4\nbeta", sha256_hex(b"other")).as_bytes());
    let r = post(gzip(&bad)).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "hash_mismatch", "");
    let r = f
        .json(
            Method::POST,
            "/api/v1/uploads",
            &f.trigger,
            manifest(&files),
        )
        .await;
    assert_eq!(
        r.json()["missing"].as_array().unwrap().len(),
        3,
        "{}",
        r.body
    );

    // Malformed frames name what is wrong.
    for (stream, why) in [
        (b"nonsense without a newline".to_vec(), "header line"),
        (
            format!("{} 99\nshort", sha256_hex(b"short")).into_bytes(),
            "ends inside",
        ),
        (b"ABC 1\nx".to_vec(), "64 lowercase hex"),
        (format!("{} -1\n", sha256_hex(b"")).into_bytes(), "decimal"),
    ] {
        let r = post(gzip(&stream)).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", why);
    }
    let r = post(b"not gzip".to_vec()).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", "gzip");

    // The good batch: all three stored, then a resend creates none.
    let batch = gzip(&blob_batch(&[b"alpha", b"beta\n", b""]));
    let r = post(batch.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json(), json!({"blobs": 3, "created": 3, "bytes": 10}));
    let r = post(batch).await;
    assert_eq!(r.json(), json!({"blobs": 3, "created": 0, "bytes": 0}));
    let r = f
        .json(
            Method::POST,
            "/api/v1/uploads",
            &f.trigger,
            manifest(&files),
        )
        .await;
    assert_eq!(r.json()["missing"], json!([]), "{}", r.body);

    // Scope and size limits as for single blobs.
    let r = f
        .call(
            Method::POST,
            "/api/v1/blobs",
            Some(&f.reader),
            Body::from(gzip(b"")),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "runs:trigger");
    let small = fx_with(ApiConfig {
        limits: Limits {
            blob_body: 64,
            ..Limits::default()
        },
        ..ApiConfig::default()
    })
    .await;
    let r = small
        .call(
            Method::POST,
            "/api/v1/blobs",
            Some(&small.trigger),
            Body::from(vec![0u8; 65]),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
}
