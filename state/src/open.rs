//! Choosing a backend by URL: [`open_metadata`] and [`open_content`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use crate::error::{Result, StateError, CONTENT_FORMS, METADATA_FORMS};
use crate::files::FileContent;
use crate::objects::ObjectContent;
use crate::postgres::{redact, PgMetadata};
use crate::sqlite::SqliteMetadata;
use crate::{ContentStore, MetadataStore};

fn bad(what: &'static str, url: &str, why: impl Into<String>) -> StateError {
    StateError::BadUrl {
        what,
        url: redact(url),
        why: why.into(),
        forms: if what == "metadata" {
            METADATA_FORMS
        } else {
            CONTENT_FORMS
        },
    }
}

/// The scheme of `url` when it has one (`scheme://…`).
fn scheme(url: &str) -> Option<&str> {
    let (s, _) = url.split_once("://")?;
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+')).then_some(s)
}

/// A directory given as a plain path: refuse one that names a file.
fn directory<'a>(what: &'static str, url: &'a str) -> Result<&'a Path> {
    let p = Path::new(url);
    if p.exists() && !p.is_dir() {
        return Err(bad(what, url, "names a file, not a directory"));
    }
    Ok(p)
}

/// Open the metadata store `url` names:
/// - `sqlite:///absolute/path/state.db`: embedded SQLite at that file;
/// - a directory (no scheme): embedded SQLite at `<dir>/state.db`;
/// - `postgres://…` / `postgresql://…`, or `host=/socket/dir user=… dbname=…`: PostgreSQL.
pub async fn open_metadata(url: &str) -> Result<Arc<dyn MetadataStore>> {
    const WHAT: &str = "metadata";
    let url = url.trim();
    if url.is_empty() {
        return Err(bad(WHAT, url, "empty"));
    }
    match scheme(url) {
        Some("sqlite") => {
            let path = &url["sqlite://".len()..];
            if !path.starts_with('/') {
                return Err(bad(
                    WHAT,
                    url,
                    "the path must be absolute (three slashes: sqlite:///path)",
                ));
            }
            if path.ends_with('/') {
                return Err(bad(WHAT, url, "names a directory; give the database file"));
            }
            Ok(Arc::new(SqliteMetadata::open(Path::new(path)).await?))
        }
        Some("postgres" | "postgresql") => Ok(Arc::new(PgMetadata::open(url).await?)),
        Some(other) => Err(bad(WHAT, url, format!("unsupported scheme {other:?}"))),
        None if url.split_whitespace().next().is_some_and(is_key_value) => {
            Ok(Arc::new(PgMetadata::open(url).await?))
        }
        None => {
            let dir = directory(WHAT, url)?;
            Ok(Arc::new(SqliteMetadata::open(&dir.join("state.db")).await?))
        }
    }
}

/// `key=value` with a PostgreSQL-like key.
fn is_key_value(word: &str) -> bool {
    word.split_once('=').is_some_and(|(k, _)| {
        !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    })
}

/// Open the content store `url` names:
/// - a directory (no scheme): embedded files;
/// - `file:///absolute/path`: the object-store layout on a file system (a shared volume);
/// - `s3://bucket[/prefix]`: an S3-compatible store; endpoint, credentials and region from
///   `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, and
///   `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint.
pub async fn open_content(url: &str) -> Result<Arc<dyn ContentStore>> {
    open_content_with(url, &[]).await
}

/// [`open_content`] with S3 settings given by their `AWS_*` names in lowercase
/// (`aws_endpoint_url`, …), taking precedence over the environment: for tests and callers that
/// read settings from elsewhere than the process environment.
pub async fn open_content_with(url: &str, aws: &[(&str, String)]) -> Result<Arc<dyn ContentStore>> {
    const WHAT: &str = "content";
    let url = url.trim();
    if url.is_empty() {
        return Err(bad(WHAT, url, "empty"));
    }
    match scheme(url) {
        Some("file") => {
            let path = &url["file://".len()..];
            if !path.starts_with('/') {
                return Err(bad(
                    WHAT,
                    url,
                    "the path must be absolute (three slashes: file:///path)",
                ));
            }
            directory(WHAT, path)?;
            std::fs::create_dir_all(path)
                .map_err(|e| bad(WHAT, url, format!("cannot create the directory: {e}")))?;
            let fs = LocalFileSystem::new_with_prefix(path)
                .map_err(|e| bad(WHAT, url, e.to_string()))?;
            Ok(Arc::new(ObjectContent::new(
                Arc::new(fs),
                object_store::path::Path::default(),
                url.to_string(),
            )))
        }
        Some("s3") => {
            let rest = &url["s3://".len()..];
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad(WHAT, url, "no bucket (s3://bucket/prefix)"));
            }
            let prefix = object_store::path::Path::parse(prefix.trim_end_matches('/'))
                .map_err(|e| bad(WHAT, url, format!("bad prefix: {e}")))?;
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                // An outage answers within seconds (the API turns it into a 503), rather than
                // after the client's default three minutes of retries.
                .with_retry(RetryConfig {
                    backoff: BackoffConfig::default(),
                    max_retries: 3,
                    retry_timeout: Duration::from_secs(15),
                })
                .with_client_options(
                    ClientOptions::new()
                        .with_connect_timeout(Duration::from_secs(5))
                        .with_timeout(Duration::from_secs(60)),
                );
            // The environment's settings after the client options, which replace every client
            // setting (`AWS_ALLOW_HTTP` among them) when set.
            for (key, value) in std::env::vars() {
                if key.starts_with("AWS_") {
                    if let Ok(key) = key.to_ascii_lowercase().parse() {
                        builder = builder.with_config(key, value);
                    }
                }
            }
            for (key, value) in aws {
                let key = key
                    .parse()
                    .map_err(|e| bad(WHAT, url, format!("setting {key}: {e}")))?;
                builder = builder.with_config(key, value);
            }
            let region_given = aws.iter().any(|(k, _)| k.ends_with("region"))
                || std::env::var_os("AWS_REGION").is_some()
                || std::env::var_os("AWS_DEFAULT_REGION").is_some();
            if !region_given {
                builder = builder.with_region("us-east-1");
            }
            let s3 = builder.build().map_err(|e| bad(WHAT, url, e.to_string()))?;
            Ok(Arc::new(ObjectContent::new(
                Arc::new(s3),
                prefix,
                url.to_string(),
            )))
        }
        Some(other) => Err(bad(WHAT, url, format!("unsupported scheme {other:?}"))),
        None => {
            let dir = directory(WHAT, url)?;
            Ok(Arc::new(FileContent::open(dir).await?))
        }
    }
}
