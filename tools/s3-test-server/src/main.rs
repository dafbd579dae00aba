//! The S3-compatible server under sparkwing's state-layer tests and benches: the `s3s-fs` crate's
//! file system store (each directory under the root is a bucket) behind `s3s`'s S3 protocol.
//!
//! Why not the `s3s-fs` binary itself: it leaves Nagle's algorithm on. Its responses leave in two
//! writes (head, then body), so on a reused connection the body waits for the client's delayed ACK
//! of the head: about 40 ms added to many requests, which made every pooled S3 request of a test or
//! bench look slow. This server sets `TCP_NODELAY` on each connection and is otherwise the same.
//!
//! Usage: `sparkwing-s3-test-server [--host H] [--port P] [--access-key K --secret-key S] ROOT`
//! (the flags `s3s-fs` takes, so either binary serves the tests).

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use std::path::PathBuf;
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

#[tokio::main]
async fn serve(options: Options) -> Result<(), String> {
    let store = s3s_fs::FileSystem::new(&options.root)
        .map_err(|e| format!("cannot serve {}: {e:?}", options.root.display()))?;
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
