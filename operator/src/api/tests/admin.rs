//! Admin: garbage collection.

use super::*;

#[tokio::test]
async fn api_gc_removes_only_unreferenced_blobs() {
    let f = fx().await;
    let used = f.upload(&[("a", "shared"), ("b", "only-used")]).await;
    let (ns, name) = f.trigger_run(&used).await;
    let unused = f.upload(&[("a", "shared"), ("c", "only-unused")]).await;
    let gc = |grace: u64| {
        f.json(
            Method::POST,
            "/api/v1/admin/gc",
            &f.admin,
            json!({"graceSeconds": grace}),
        )
    };
    // Within the grace period everything stays.
    let r = gc(3600).await;
    assert_eq!(r.json()["blobsDeleted"], 0, "{}", r.body);

    let r = gc(0).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = r.json();
    assert_eq!(v["blobsDeleted"], 1, "{v}");
    assert_eq!(v["uploadsDeleted"], 1, "{v}");
    let content = &f.st.store.content;
    for (c, kept) in [
        ("shared", true),
        ("only-used", true),
        ("only-unused", false),
    ] {
        let has = content
            .blob_exists(&sha256_hex(c.as_bytes()))
            .await
            .unwrap();
        assert_eq!(has, kept, "{c}");
    }
    assert!(f.st.store.get_upload(&unused).await.unwrap().is_none());
    assert!(f.st.store.get_upload(&used).await.unwrap().is_some());

    // Once the run is finished its upload may go too.
    f.runs.set_phase(&ns, &name, RunPhase::Succeeded);
    let r = gc(0).await;
    assert_eq!(r.json()["blobsDeleted"], 2);
    for c in ["shared", "only-used"] {
        let has = content
            .blob_exists(&sha256_hex(c.as_bytes()))
            .await
            .unwrap();
        assert!(!has, "{c}");
    }
    let r = f
        .json(Method::POST, "/api/v1/admin/gc", &f.trigger, json!({}))
        .await;
    assert_error(
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        "missing scope admin",
    );
}
