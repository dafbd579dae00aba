//! Admin: garbage collection.

use super::*;

#[tokio::test]
async fn api_gc_removes_only_unreferenced_blobs() {
    let f = fx();
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
    let has = |c: &str| f.st.storage.has_blob(&sha256_hex(c.as_bytes()));
    assert!(has("shared") && has("only-used") && !has("only-unused"));
    assert!(f.st.storage.get_upload(&unused).unwrap().is_none());
    assert!(f.st.storage.get_upload(&used).unwrap().is_some());

    // Once the run is finished its upload may go too.
    f.runs.set_phase(&ns, &name, RunPhase::Succeeded);
    let r = gc(0).await;
    assert_eq!(r.json()["blobsDeleted"], 2);
    assert!(!has("shared") && !has("only-used"));
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
