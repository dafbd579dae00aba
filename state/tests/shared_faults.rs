//! The shared backend's own properties: replicas (two clients of one database and one bucket),
//! migrations raced by replicas starting together, and outages of PostgreSQL and of the S3 server.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use sparkwing_state::test_support::{Postgres, S3Server};
use sparkwing_state::{
    open_metadata, ByteStream, LogKey, LogLine, RunFilter, StateError, TokenRecord,
};

fn start_pg() -> Postgres {
    Postgres::start()
}

fn token(id: &str) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        hash: format!("hash-{id}"),
        principal: "ci".into(),
        scopes: vec![],
        created_ms: 1,
        expires_ms: None,
        revoked: false,
        run: None,
        upload: None,
        pool_uid: None,
    }
}

fn body(data: &[u8]) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> = data
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

fn assert_outage(err: &StateError, backend: &str) {
    assert!(err.retryable(), "not retryable: {err}");
    assert!(
        matches!(err, StateError::Unavailable { backend: b, .. } if *b == backend),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let pg = tokio::task::spawn_blocking(start_pg).await.unwrap();
    pg.create_database("race").await;
    let url = pg.url("race");
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { open_metadata(&url).await })
        })
        .collect();
    for o in opens {
        o.await.unwrap().expect("every replica opens");
    }
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let versions: Vec<i64> = client
        .query("SELECT version FROM sparkwing_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        versions,
        (1..=sparkwing_state::postgres::SCHEMA_VERSION).collect::<Vec<_>>()
    );

    client
        .execute(
            "INSERT INTO sparkwing_schema (version, applied_ms) VALUES (999, 0)",
            &[],
        )
        .await
        .unwrap();
    let err = open_metadata(&url).await.err().expect("refused");
    assert!(
        matches!(err, StateError::SchemaTooNew { found: 999, .. }),
        "{err}"
    );
    assert!(!err.retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_is_retryable_and_the_same_store_recovers_after_a_restart() {
    let mut pg = tokio::task::spawn_blocking(start_pg).await.unwrap();
    let meta = support::shared_metadata(&pg).await;
    meta.insert_token(&token("before")).await.unwrap();

    let mut pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    assert_outage(
        &meta.insert_token(&token("during")).await.unwrap_err(),
        "PostgreSQL",
    );
    assert_outage(
        &meta
            .list_runs(&RunFilter::default(), None, 10)
            .await
            .unwrap_err(),
        "PostgreSQL",
    );
    assert_outage(&meta.ping().await.unwrap_err(), "PostgreSQL");

    let _pg = tokio::task::spawn_blocking(move || {
        pg.resume();
        pg
    })
    .await
    .unwrap();
    // The same store, not reopened: its pool replaces the dead connections.
    meta.insert_token(&token("after")).await.unwrap();
    let ids: Vec<_> = meta
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, ["after", "before"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stopped_fails_clearly_and_leaves_nothing_half_written() {
    let mut s3 = tokio::task::spawn_blocking(S3Server::start).await.unwrap();
    let content = support::shared_content(&s3).await;
    let key = LogKey::new("ci", "build-1", "compile");
    content
        .append_log(&key, &[LogLine::new(1, "one")])
        .await
        .unwrap();

    let big: Vec<u8> = (0..9 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    let small = b"small blob".to_vec();
    let mut s3 = tokio::task::spawn_blocking(move || {
        s3.stop();
        s3
    })
    .await
    .unwrap();
    for data in [&small, &big] {
        let h = hex::encode(Sha256::digest(data));
        let err = content.put_blob(&h, body(data)).await.unwrap_err();
        assert_outage(&err, "object store");
        assert!(err.to_string().contains("s3://sparkwing/state"), "{err}");
    }
    let err = content
        .append_log(&key, &[LogLine::new(2, "two")])
        .await
        .unwrap_err();
    assert_outage(&err, "object store");

    let s3 = tokio::task::spawn_blocking(move || {
        s3.resume();
        s3
    })
    .await
    .unwrap();
    for data in [&small, &big] {
        let h = hex::encode(Sha256::digest(data));
        assert!(
            !content.blob_exists(&h).await.unwrap(),
            "a failed upload is visible"
        );
    }
    assert_eq!(content.log_last_seq(&key).await.unwrap(), 1);
    // And the same store works again.
    let h = hex::encode(Sha256::digest(&small));
    content.put_blob(&h, body(&small)).await.unwrap();
    content
        .append_log(&key, &[LogLine::new(2, "two")])
        .await
        .unwrap();
    assert_eq!(content.read_log_tail(&key, 10).await.unwrap().len(), 2);
    // No multipart upload was left behind in the bucket's directory either.
    let leftovers: Vec<_> = walk(&s3.bucket_dir())
        .into_iter()
        .filter(|p| p.contains("blobs") && !p.ends_with(&h))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_append_to_one_log_without_losing_or_repeating_a_line() {
    let s3 = tokio::task::spawn_blocking(S3Server::start).await.unwrap();
    let a = support::shared_content(&s3).await;
    let b = support::shared_content(&s3).await;
    let key = LogKey::new("ci", "build-1", "compile");
    // One runner retrying through either replica: batches of 50 with overlaps, alternating.
    let line = |s: u64| LogLine::new(s, format!("line {s}"));
    let mut next = 1u64;
    let mut round = 0;
    while next <= 1_000 {
        let store = if round % 2 == 0 { &a } else { &b };
        // Every third batch repeats the previous 10 lines (a retry after a lost answer).
        let start = if round % 3 == 2 {
            next.saturating_sub(10).max(1)
        } else {
            next
        };
        let batch: Vec<_> = (start..start + 50).map(line).collect();
        let r = store.append_log(&key, &batch).await.unwrap();
        assert_eq!(r.accepted + r.duplicates, 50);
        next = start + 50;
        round += 1;
    }
    // Both replicas append the same batch concurrently.
    let batch: Vec<_> = (next..next + 20).map(line).collect();
    let (ra, rb) = tokio::join!(a.append_log(&key, &batch), b.append_log(&key, &batch));
    ra.unwrap();
    rb.unwrap();
    let last = next + 19;
    for store in [&a, &b] {
        assert_eq!(store.log_last_seq(&key).await.unwrap(), last);
        let all = store.read_log_after(&key, 0, 10_000).await.unwrap();
        assert_eq!(
            all.iter().map(|l| l.seq).collect::<Vec<_>>(),
            (1..=last).collect::<Vec<_>>()
        );
        assert!(all.iter().all(|l| l.line == format!("line {}", l.seq)));
        let tail = store.read_log_tail(&key, 30).await.unwrap();
        assert_eq!(tail.first().unwrap().seq, last - 29);
    }
    // A blob uploaded through one replica is read through the other.
    let data = b"source tarball".to_vec();
    let h = hex::encode(Sha256::digest(&data));
    a.put_blob(&h, body(&data)).await.unwrap();
    assert_eq!(
        b.get_blob_range(&h, 0..100).await.unwrap().unwrap(),
        &data[..]
    );
    let _keep: Arc<_> = a;
}
