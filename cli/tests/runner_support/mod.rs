//! The real Sparkwing API (`sparkwing_operator::api::router` on `MemoryRuns`), served in-process
//! on 127.0.0.1:0 for the runner and `run --profile` tests, and a small blocking HTTP client to
//! upload sources, trigger runs and read logs and job states back.

#![allow(dead_code)]

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sparkwing_operator::api::{spawn_serving, ApiConfig, ApiState, MemoryRuns};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub struct Api {
    pub url: String,
    pub state: ApiState,
    pub runs: Arc<MemoryRuns>,
    /// An admin token (uploads, triggers, reads).
    pub admin: String,
    /// None while [`Api::down`].
    rt: Option<tokio::runtime::Runtime>,
    pub data: TempDir,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Api {
    pub fn start() -> Api {
        Api::start_on("127.0.0.1:0")
    }

    /// Serve on `addr` (e.g. an address a test reserved earlier).
    pub fn start_on(addr: &str) -> Api {
        Api::start_with(addr, ApiConfig::default())
    }

    /// Serve with `config` on `addr`.
    pub fn start_with(addr: &str, config: ApiConfig) -> Api {
        let data = tempfile::Builder::new()
            .prefix("sw-api-")
            .tempdir()
            .unwrap();
        let runs = Arc::new(MemoryRuns::new());
        let state = block_on(ApiState::open(data.path(), runs.clone(), config)).unwrap();
        let (admin, _) =
            block_on(state.store.create_token("root", vec!["admin".into()], None)).unwrap();
        let (rt, local) = serve(&state, addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        Api {
            url: format!("http://{local}"),
            state,
            runs,
            admin,
            rt: Some(rt),
            data,
        }
    }

    /// Stop answering: the server, its listener and every open connection go away (the state
    /// stays for [`Api::up`]).
    pub fn down(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// Serve the same state on the same address again.
    pub fn up(&mut self) {
        assert!(self.rt.is_none(), "the API is up");
        let addr = self.url.trim_start_matches("http://").to_string();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            // The old listener's port may take a moment to be free again.
            match serve(&self.state, &addr) {
                Ok((rt, _)) => {
                    self.rt = Some(rt);
                    return;
                }
                Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("bind {addr} again: {e}"),
            }
        }
    }

    /// Trigger the fixture's `lines` pipeline (`n` = 3) in namespace `ci` from `source` as admin:
    /// (run name, its runner token).
    pub fn trigger_lines(&self, source: Value) -> (String, String) {
        let body =
            json!({"pipeline": "lines", "namespace": "ci", "args": {"n": "3"}, "source": source});
        let (status, v) = self.call(
            "POST",
            "/api/v1/runs",
            &self.admin,
            Some(body.to_string().into_bytes()),
        );
        assert_eq!(status, 201, "{v}");
        let name = v["name"].as_str().unwrap().to_string();
        let token = self.runs.runner_token("ci", &name).unwrap();
        (name, token)
    }

    /// `method path` with `token` and an optional body: (status, body as JSON or a string).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let client = sparkwing_api::ApiClient::new(&self.url, token).unwrap();
        // Blobs go gzip-compressed; every other body is JSON.
        let content_type = if path.starts_with("/api/v1/blobs") {
            "application/gzip"
        } else {
            "application/json"
        };
        let answer = client
            .call(
                method,
                path,
                &[("Content-Type", content_type)],
                body.as_deref(),
            )
            .unwrap_or_else(|e| panic!("{method} {}{path}: {e}", self.url));
        let status = answer.status;
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    pub fn get(&self, path: &str) -> Value {
        let (status, v) = self.call("GET", path, &self.admin, None);
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// Upload the project tree at `root` (leaving out `target/`); returns the upload id.
    pub fn upload(&self, root: &Path) -> String {
        let mut files = Vec::new();
        collect(root, root, &mut files);
        let manifest = json!({"files": files.iter().map(|(p, mode, c)| json!({
            "path": p, "mode": mode, "size": c.len(), "sha256": sha256_hex(c)
        })).collect::<Vec<_>>()});
        let (status, v) = self.call(
            "POST",
            "/api/v1/uploads",
            &self.admin,
            Some(manifest.to_string().into_bytes()),
        );
        assert_eq!(status, 200, "upload: {v}");
        for (_, _, content) in &files {
            let sha = sha256_hex(content);
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(content).unwrap();
            let (status, v) = self.call(
                "PUT",
                &format!("/api/v1/blobs/{sha}"),
                &self.admin,
                Some(gz.finish().unwrap()),
            );
            assert!(status == 200 || status == 201, "blob {sha}: {v}");
        }
        v["id"].as_str().unwrap().to_string()
    }

    /// Trigger `pipeline` from upload `id` in namespace `ci`: (namespace, name, runner token).
    pub fn trigger(&self, pipeline: &str, upload: &str, args: Value) -> (String, String, String) {
        let body = json!({"pipeline": pipeline, "args": args, "namespace": "ci",
            "source": {"upload": {"id": upload}}});
        let (status, v) = self.call(
            "POST",
            "/api/v1/runs",
            &self.admin,
            Some(body.to_string().into_bytes()),
        );
        assert_eq!(status, 201, "trigger: {v}");
        let ns = v["namespace"].as_str().unwrap().to_string();
        let name = v["name"].as_str().unwrap().to_string();
        let token = self
            .runs
            .runner_token(&ns, &name)
            .expect("the API stored a runner token");
        (ns, name, token)
    }

    /// Every line of `job` the API has, in seq order.
    pub fn lines(&self, ns: &str, name: &str, job: &str) -> Vec<Value> {
        let v = self.get(&format!("/api/v1/runs/{ns}/{name}/logs?job={job}&after=0"));
        v["lines"].as_array().cloned().unwrap_or_default()
    }

    /// The line texts of `job`, checking that seqs are 1, 2, 3, ...
    pub fn texts(&self, ns: &str, name: &str, job: &str) -> Vec<String> {
        let lines = self.lines(ns, name, job);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l["seq"], i as u64 + 1, "job {job}: lines out of order: {l}");
        }
        lines
            .iter()
            .map(|l| l["line"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub fn log_jobs(&self, ns: &str, name: &str) -> Vec<String> {
        let v = self.get(&format!("/api/v1/runs/{ns}/{name}/logs"));
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j.as_str().unwrap().to_string())
            .collect()
    }

    /// `GET /api/v1/runs/{ns}/{name}`.
    pub fn run(&self, ns: &str, name: &str) -> Value {
        self.get(&format!("/api/v1/runs/{ns}/{name}"))
    }

    /// Poll `cond` on the API until it holds (panics after `deadline`).
    pub fn wait_for(&self, deadline: Duration, what: &str, mut cond: impl FnMut(&Api) -> bool) {
        let end = Instant::now() + deadline;
        while !cond(self) {
            assert!(Instant::now() < end, "timed out after {deadline:?}: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop serving (the runtime and its listener go away).
    pub fn stop(mut self) {
        self.down();
    }
}

/// Serve `state` on `addr` in a runtime of its own.
/// Run `f` to its end on a runtime of its own (the API's setup, outside its server's runtime).
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn serve(state: &ApiState, addr: &str) -> std::io::Result<(tokio::runtime::Runtime, SocketAddr)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let local = spawn_serving(&rt, state.clone(), addr)?;
    Ok((rt, local))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, u32, Vec<u8>)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let ty = e.file_type().unwrap();
        if ty.is_dir() {
            if e.file_name() == "target" {
                continue;
            }
            collect(root, &path, out);
        } else if ty.is_file() {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            out.push((rel, mode, std::fs::read(&path).unwrap()));
        }
    }
}

/// An address nothing listens on (bound, then released).
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}
