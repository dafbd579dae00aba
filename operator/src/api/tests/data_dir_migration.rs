//! `migrate --from-data-dir`: a data directory as the file store of earlier versions wrote it,
//! copied into the stores (either backend), twice.

use super::*;

/// Write `bytes` at `dir/rel`, creating its directory.
fn put(dir: &std::path::Path, rel: &str, bytes: &[u8]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

const OLD_ADMIN: &str = "swt_old-admin-0123456789abcdef0123456789";
const OLD_REVOKED: &str = "swt_old-revoked-0123456789abcdef01234567";

/// The file store's layout (docs/api.md, "Storage", of the versions before the state layer).
fn old_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let token = |id: &str, t: &str| {
        json!({"id": id, "hash": sha256_hex(t.as_bytes()), "principal": "old", "scopes": ["admin"],
               "created": "2026-01-01T00:00:00Z", "revoked": false})
    };
    put(
        d,
        "tokens.json",
        json!({"tokens": [token("aaaaaaaaaaaa", OLD_ADMIN)]})
            .to_string()
            .as_bytes(),
    );
    // The journal: a token added then revoked, and a partial entry a crash left.
    let journal = format!(
        "{}\n{}\n{{\"add\":{{\"id\":\"cc",
        json!({"add": token("bbbbbbbbbbbb", OLD_REVOKED)}),
        json!({"revoke": "bbbbbbbbbbbb"})
    );
    put(d, "tokens.jsonl", journal.as_bytes());
    let content = b"fn main() {}\n";
    let sha = sha256_hex(content);
    put(d, &format!("blobs/{}/{sha}", &sha[..2]), content);
    let manifest: Manifest =
        serde_json::from_value(manifest(&[("main.rs", "fn main() {}\n")])).unwrap();
    let manifest = manifest.canonical();
    put(
        d,
        &format!("uploads/{}.json", manifest.id()),
        &serde_json::to_vec_pretty(&manifest).unwrap(),
    );
    put(
        d,
        "state/ci/old-run/build.json",
        br#"{"state":"succeeded"}"#,
    );
    put(
        d,
        "archive/ci/old-run.json",
        json!({"archivedAt": "2026-01-02T00:00:00Z", "run": {
            "apiVersion": "sparkwing.dev/v1alpha1", "kind": "PipelineRun",
            "metadata": {"name": "old-run", "namespace": "ci", "creationTimestamp": "2026-01-01T10:00:00Z"},
            "spec": {"pipeline": "build", "source": {"upload": {"id": manifest.id()}}},
            "status": {"phase": "Succeeded"}}})
        .to_string()
        .as_bytes(),
    );
    let line = |s: u64| {
        format!(
            r#"{{"seq":{s},"ts":"2026-01-01T10:00:0{s}Z","stream":"stdout","line":"line {s}"}}"#
        )
    };
    // A torn last line (never acknowledged) is not copied.
    let log = format!("{}\n{}\n{}\n{{\"seq\":4,\"li", line(1), line(2), line(3));
    put(d, "logs/ci/old-run/build.jsonl", log.as_bytes());
    put(
        d,
        &format!("webhooks/deliveries/{}.json", sha256_hex(b"d-old")),
        json!({"deliveryId": "d-old", "receivedAt": "2026-01-01T00:00:00Z", "branch": "main",
               "commit": "abc", "runs": [{"namespace": "ci", "name": "old-run", "pipeline": "build"}]})
        .to_string()
        .as_bytes(),
    );
    dir
}

#[tokio::test]
async fn an_old_data_dir_is_copied_into_the_stores_idempotently() {
    let f = fx().await;
    let old = old_data_dir();
    let first = migrate::migrate_data_dir(old.path(), &f.st.store)
        .await
        .unwrap();
    assert_eq!(
        first,
        migrate::MigrateReport {
            tokens: 2,
            uploads: 1,
            blobs: 1,
            job_states: 1,
            archived_runs: 1,
            logs: 1,
            log_lines: 3,
            deliveries: 1,
        }
    );
    // Again: the same report, nothing doubled.
    let again = migrate::migrate_data_dir(old.path(), &f.st.store)
        .await
        .unwrap();
    assert_eq!(again, first);

    // Tokens: the old admin token works, the revoked one does not.
    let r = f.get("/api/v1/whoami", OLD_ADMIN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["principal"], "old");
    let r = f.get("/api/v1/whoami", OLD_REVOKED).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The archived run is listed, with its job states.
    let r = f.get("/api/v1/runs?namespace=ci", OLD_ADMIN).await;
    let runs = r.json()["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1, "{}", r.body);
    assert_eq!(runs[0]["name"], "old-run");
    assert_eq!(runs[0]["archived"], true);
    let r = f.get("/api/v1/runs/ci/old-run", OLD_ADMIN).await;
    assert_eq!(
        r.json()["jobs"]["build"]["state"],
        "succeeded",
        "{}",
        r.body
    );
    // The log, without its torn tail; its next line follows on.
    let r = f.get("/api/v1/runs/ci/old-run/logs", OLD_ADMIN).await;
    assert_eq!(r.json(), json!({"jobs": ["build"]}));
    let r = f
        .get("/api/v1/runs/ci/old-run/logs?job=build", OLD_ADMIN)
        .await;
    let seqs: Vec<u64> = r.json()["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    let r = post_logs(&f, OLD_ADMIN, "ci", "old-run", &[3, 4]).await;
    assert_eq!(r.json(), json!({"accepted": 1, "duplicates": 1}));
    // The upload is complete and its blob served.
    let manifest: Manifest =
        serde_json::from_value(manifest(&[("main.rs", "fn main() {}\n")])).unwrap();
    let id = manifest.canonical().id();
    let r = f.get(&format!("/api/v1/uploads/{id}"), OLD_ADMIN).await;
    assert_eq!(r.json()["missing"], json!([]), "{}", r.body);
    let sha = sha256_hex(b"fn main() {}\n");
    let r = f
        .get(&format!("/api/v1/uploads/{id}/blobs/{sha}"), OLD_ADMIN)
        .await;
    assert_eq!(r.body, "fn main() {}\n");
    // The webhook delivery is known: its redelivery creates nothing.
    let delivery = format!("delivery-{}", sha256_hex(b"d-old"));
    let (answer, _) =
        f.st.store
            .meta
            .find_delivery(&delivery)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(answer["runs"][0]["name"], "old-run");
}
