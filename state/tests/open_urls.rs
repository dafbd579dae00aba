//! Choosing a backend by URL, and what a bad URL answers.

use sparkwing_state::error::{CONTENT_FORMS, METADATA_FORMS};
use sparkwing_state::test_support::Postgres;
use sparkwing_state::{open_content, open_metadata, RunKey, StateError};

fn bad_url(err: StateError) -> (String, String) {
    match &err {
        StateError::BadUrl { why, forms, .. } => (why.clone(), forms.to_string()),
        other => panic!("not a BadUrl: {other}"),
    }
}

#[tokio::test]
async fn bad_metadata_urls_say_what_is_wrong_and_the_accepted_forms() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let cases = [
        ("", "empty"),
        ("mysql://db/x", "unsupported scheme \"mysql\""),
        ("sqlite://relative/state.db", "must be absolute"),
        ("sqlite:///tmp/dir/", "names a directory"),
        (file.to_str().unwrap(), "names a file"),
    ];
    for (url, why) in cases {
        let err = open_metadata(url)
            .await
            .err()
            .unwrap_or_else(|| panic!("{url:?} opened"));
        assert!(!err.retryable());
        let (got, forms) = bad_url(err);
        assert!(got.contains(why), "{url:?}: {got}");
        assert_eq!(forms, METADATA_FORMS);
    }
    // A malformed PostgreSQL URL: refused before connecting, its password not repeated.
    let err = open_metadata("postgres://u:hunter2@host:notaport/db")
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(
        text.contains("not a PostgreSQL connection string"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn bad_content_urls_say_what_is_wrong_and_the_accepted_forms() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let file_url = format!("file://{}", file.display());
    let cases = [
        ("", "empty"),
        ("gs://bucket", "unsupported scheme \"gs\""),
        ("s3://", "no bucket"),
        ("s3:///prefix", "no bucket"),
        ("file://relative", "must be absolute"),
        (file.to_str().unwrap(), "names a file"),
        (file_url.as_str(), "names a file"),
    ];
    for (url, why) in cases {
        let err = open_content(url)
            .await
            .err()
            .unwrap_or_else(|| panic!("{url:?} opened"));
        let (got, forms) = bad_url(err);
        assert!(got.contains(why), "{url:?}: {got}");
        assert_eq!(forms, CONTENT_FORMS);
    }
}

#[tokio::test]
async fn every_good_form_opens_a_working_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();
    for url in [format!("sqlite://{root}/m/state.db"), format!("{root}/m2")] {
        let m = open_metadata(&url).await.unwrap();
        m.ping().await.unwrap();
    }
    assert!(dir.path().join("m/state.db").exists());
    assert!(dir.path().join("m2/state.db").exists());
    for url in [format!("file://{root}/objects"), format!("{root}/files")] {
        let c = open_content(&url).await.unwrap();
        let r = RunKey::new("ci", "r");
        c.put_archive(&r, bytes::Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert!(c.get_archive(&r).await.unwrap().is_some(), "{url}");
    }

    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    // The key-value form over the socket, and the URL form with the socket as host.
    let socket = pg.socket_dir().display().to_string();
    let encoded = socket.replace('/', "%2F");
    for url in [
        pg.url("postgres"),
        format!("postgresql://postgres@{encoded}/postgres"),
    ] {
        let m = open_metadata(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        m.ping().await.unwrap();
    }
}
