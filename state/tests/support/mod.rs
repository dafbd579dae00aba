//! The backends the suites run against, each on real parts.
#![allow(dead_code)]

use std::sync::Arc;

use sparkwing_state::test_support::{Postgres, S3Server};
use sparkwing_state::{
    open_content, open_content_with, open_metadata, ContentStore, MetadataStore,
};

pub struct Backend {
    pub meta: Arc<dyn MetadataStore>,
    pub content: Arc<dyn ContentStore>,
    pub servers: Servers,
}

/// What keeps a backend's servers and directories alive (dropped last).
#[derive(Default)]
pub struct Servers {
    pub pg: Option<Postgres>,
    pub s3: Option<S3Server>,
    pub dir: Option<tempfile::TempDir>,
}

/// SQLite and files in a temp directory.
pub async fn embedded() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    Backend {
        meta: open_metadata(&root).await.unwrap(),
        content: open_content(&format!("{root}/content")).await.unwrap(),
        servers: Servers {
            dir: Some(dir),
            ..Default::default()
        },
    }
}

/// A PostgreSQL server and an S3 server, started for this test.
pub async fn shared() -> Backend {
    let (pg, s3) = tokio::task::spawn_blocking(|| {
        let s3 = std::thread::spawn(S3Server::start);
        let pg = Postgres::start();
        (pg, s3.join().unwrap())
    })
    .await
    .unwrap();
    let meta = shared_metadata(&pg).await;
    let content = shared_content(&s3).await;
    Backend {
        meta,
        content,
        servers: Servers {
            pg: Some(pg),
            s3: Some(s3),
            dir: None,
        },
    }
}

pub async fn shared_metadata(pg: &Postgres) -> Arc<dyn MetadataStore> {
    open_metadata(&pg.url("postgres")).await.unwrap()
}

/// Another client of the same bucket (a second API replica).
pub async fn shared_content(s3: &S3Server) -> Arc<dyn ContentStore> {
    open_content_with(&format!("s3://{}/state", s3.bucket), &s3.aws_config())
        .await
        .unwrap()
}

/// An object store on a local file system (`file://`), with embedded metadata.
pub async fn objects_on_files() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    Backend {
        meta: open_metadata(&format!("sqlite://{root}/meta/state.db"))
            .await
            .unwrap(),
        content: open_content(&format!("file://{root}/objects"))
            .await
            .unwrap(),
        servers: Servers {
            dir: Some(dir),
            ..Default::default()
        },
    }
}
