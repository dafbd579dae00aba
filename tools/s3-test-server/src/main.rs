//! The S3-compatible server under sparkwing's state-layer tests and benches: the `s3s-fs` crate's
//! file system store (each directory under the root is a bucket) behind `s3s`'s S3 protocol.
//!
//! Why not the `s3s-fs` binary itself: it leaves Nagle's algorithm on. Its responses leave in two
//! writes (head, then body), so on a reused connection the body waits for the client's delayed ACK
//! of the head: about 40 ms added to many requests, which made every pooled S3 request of a test or
//! bench look slow. This server sets `TCP_NODELAY` on each connection and is otherwise the same.
//!
//! It also lists as S3 does, by key range. `s3s-fs` answers every listing by walking the whole
//! bucket and filtering by prefix: with 10,000 archived runs in the bucket, each first append to a
//! new log (a listing of its own few segments) cost the server a walk of every file. This server
//! walks only the directory the prefix names (`logs/ns/run/job/`), and passes everything else to
//! `s3s-fs` unchanged.
//!
//! Usage: `sparkwing-s3-test-server [--host H] [--port P] [--access-key K --secret-key S] ROOT`
//! (the flags `s3s-fs` takes, so either binary serves the tests).

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3Request, S3Response, S3Result, S3};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use tokio::net::TcpListener;

const USAGE: &str =
    "usage: sparkwing-s3-test-server [--host H] [--port P] [--access-key K --secret-key S] ROOT";

#[derive(Debug)]
struct Options {
    host: String,
    port: u16,
    keys: Option<(String, String)>,
    root: PathBuf,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut host = "127.0.0.1".to_string();
    let mut port: u16 = 8014;
    let (mut access, mut secret, mut root) = (None, None, None);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))
        };
        match arg.as_str() {
            "--host" => host = value("--host")?,
            "--port" => {
                let v = value("--port")?;
                port = v
                    .parse()
                    .map_err(|_| format!("--port {v:?} is not a port number (0-65535)"))?;
            }
            "--access-key" => access = Some(value("--access-key")?),
            "--secret-key" => secret = Some(value("--secret-key")?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            flag if flag.starts_with('-') => return Err(format!("unknown flag {flag:?}; {USAGE}")),
            _ if root.is_some() => return Err(format!("more than one ROOT given; {USAGE}")),
            _ => root = Some(PathBuf::from(arg)),
        }
    }
    let keys = match (access, secret) {
        (Some(a), Some(s)) => Some((a, s)),
        (None, None) => None,
        _ => return Err("--access-key and --secret-key go together; give both or neither".into()),
    };
    let root = root.ok_or_else(|| format!("no ROOT directory given; {USAGE}"))?;
    Ok(Options {
        host,
        port,
        keys,
        root,
    })
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(message) => {
            eprintln!("sparkwing-s3-test-server: {message}");
            return ExitCode::from(2);
        }
    };
    match serve(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sparkwing-s3-test-server: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `s3s-fs`'s store with listings walked from the prefix's directory.
struct Store {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
}

macro_rules! pass_to_fs {
    ($($op:ident: $input:ident => $output:ident),* $(,)?) => {
        // As `async_trait` writes the trait's methods (it does not see methods a macro makes).
        $(
            fn $op<'life0, 'async_trait>(
                &'life0 self,
                req: S3Request<$input>,
            ) -> Pin<Box<dyn Future<Output = S3Result<S3Response<$output>>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                self.fs.$op(req)
            }
        )*
    };
}

#[async_trait::async_trait]
impl S3 for Store {
    pass_to_fs! {
        create_bucket: CreateBucketInput => CreateBucketOutput,
        copy_object: CopyObjectInput => CopyObjectOutput,
        delete_bucket: DeleteBucketInput => DeleteBucketOutput,
        delete_object: DeleteObjectInput => DeleteObjectOutput,
        delete_objects: DeleteObjectsInput => DeleteObjectsOutput,
        get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput,
        get_object: GetObjectInput => GetObjectOutput,
        head_bucket: HeadBucketInput => HeadBucketOutput,
        head_object: HeadObjectInput => HeadObjectOutput,
        list_buckets: ListBucketsInput => ListBucketsOutput,
        list_objects: ListObjectsInput => ListObjectsOutput,
        put_object: PutObjectInput => PutObjectOutput,
        create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput,
        upload_part: UploadPartInput => UploadPartOutput,
        upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput,
        list_parts: ListPartsInput => ListPartsOutput,
        complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput,
        abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput,
    }

    /// A listing without a delimiter whose prefix names a directory (`a/b/` or `a/b/c`) is asked of
    /// `s3s-fs` as a listing of that directory taken as the bucket, and its keys put back under it.
    async fn list_objects_v2(
        &self,
        mut req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let prefix = req.input.prefix.clone().unwrap_or_default();
        let dir = match prefix.rfind('/') {
            Some(i) if req.input.delimiter.is_none() => prefix[..=i].to_string(),
            _ => return self.fs.list_objects_v2(req).await,
        };
        // Only plain directory names: anything else is left to s3s-fs's own checks.
        if dir.split('/').any(|c| c == "." || c == "..") || dir.starts_with('/') {
            return self.fs.list_objects_v2(req).await;
        }
        let (bucket, asked) = (req.input.bucket.clone(), req.input.clone());
        let bucket_dir = self.root.join(&bucket);
        if !bucket_dir.is_dir() {
            return self.fs.list_objects_v2(req).await;
        }
        // Where to resume, as a key under `dir` (None: from the start; Err: past `dir` already).
        let under = |marker: &Option<String>| -> Result<Option<String>, ()> {
            match marker.as_deref() {
                None => Ok(None),
                Some(m) if m.starts_with(&dir) => Ok(Some(m[dir.len()..].to_string())),
                Some(m) if m < dir.as_str() => Ok(None),
                Some(_) => Err(()),
            }
        };
        let (Ok(start_after), Ok(token)) = (
            under(&req.input.start_after),
            under(&req.input.continuation_token),
        ) else {
            return Ok(S3Response::new(listing(&asked, Vec::new(), None)));
        };
        if !bucket_dir.join(&dir).is_dir() {
            return Ok(S3Response::new(listing(&asked, Vec::new(), None)));
        }
        req.input.bucket = format!("{bucket}/{}", dir.trim_end_matches('/'));
        req.input.prefix = Some(prefix[dir.len()..].to_string());
        req.input.start_after = start_after;
        req.input.continuation_token = token;
        let mut answer = self.fs.list_objects_v2(req).await?;
        let out = &mut answer.output;
        let contents = out
            .contents
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(|mut o| {
                o.key = o.key.map(|k| format!("{dir}{k}"));
                o
            })
            .collect();
        let next = out
            .next_continuation_token
            .take()
            .map(|k| format!("{dir}{k}"));
        answer.output = listing(&asked, contents, next);
        Ok(answer)
    }
}

/// A listing's answer to `asked`: these objects, and where the next page starts.
fn listing(
    asked: &ListObjectsV2Input,
    contents: Vec<Object>,
    next: Option<String>,
) -> ListObjectsV2Output {
    ListObjectsV2Output {
        key_count: Some(contents.len() as i32),
        max_keys: Some(asked.max_keys.unwrap_or(1000)),
        is_truncated: Some(next.is_some()),
        contents: (!contents.is_empty()).then_some(contents),
        continuation_token: asked.continuation_token.clone(),
        next_continuation_token: next,
        encoding_type: asked.encoding_type.clone(),
        name: Some(asked.bucket.clone()),
        prefix: asked.prefix.clone(),
        start_after: asked.start_after.clone(),
        ..Default::default()
    }
}

#[tokio::main]
async fn serve(options: Options) -> Result<(), String> {
    let fs = s3s_fs::FileSystem::new(&options.root)
        .map_err(|e| format!("cannot serve {}: {e:?}", options.root.display()))?;
    let root = std::fs::canonicalize(&options.root)
        .map_err(|e| format!("cannot serve {}: {e}", options.root.display()))?;
    let store = Store { fs, root };
    let mut builder = S3ServiceBuilder::new(store);
    if let Some((access, secret)) = options.keys {
        builder.set_auth(SimpleAuth::from_single(access, secret));
    }
    let service = builder.build();

    let listener = TcpListener::bind((options.host.as_str(), options.port))
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", options.host, options.port))?;
    let connections = ConnBuilder::new(TokioExecutor::new());
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                // A connection that failed before it was accepted (reset, out of descriptors
                // for a moment) is the client's to retry; the server goes on.
                Err(_) => continue,
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        // The point of this server: answer without waiting for the peer's delayed ACK.
        let _ = socket.set_nodelay(true);
        let connection = connections
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}
