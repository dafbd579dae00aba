//! [`ApiTask`]: the Sparkwing API of `sparkwing-operator` (`--api-addr`) served in-process on
//! `<address>:<free port>`, with its data directory in a temporary directory and a bootstrap admin
//! token; tests talk to it through `sparkwing-api`'s client, as the CLI does. The address is where
//! the shared bed's pods reach the host (`TestBed::host_address_for_pods`: the real node's bridge
//! gateway, or 127.0.0.1 for the emulator's host-network containers), so `SPARKWING_API_URL`
//! ([`ApiTask::url`]) reaches it from runner containers too.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use kube::Client;
use serde_json::Value;
use sparkwing_api::ApiClient;
use sparkwing_core::upload_manifest::{Entry, Manifest};
use sparkwing_operator::api::{self, ApiConfig, ApiState, KubeRuns};
use sparkwing_operator::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The push webhook secret of every [`ApiTask`] (`POST /webhooks/github`).
pub const WEBHOOK_SECRET: &[u8] = b"sparkwing-e2e-webhook-secret";

/// The API running as a task; stopped when dropped.
pub struct ApiTask {
    /// `http://<address>:<port>`: the real node's gateway, or 127.0.0.1.
    pub url: String,
    /// The bootstrap admin token (scope `admin`).
    pub admin_token: String,
    /// The API's state: storage (archive, logs), tokens.
    pub state: ApiState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    dir: tempfile::TempDir,
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Null` when empty).
    pub fn json(&self) -> Result<Value> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body)
            .with_context(|| format!("an answer that is not JSON: {}", self.text()))
    }

    /// Fails unless the status is 2xx, showing the body.
    pub fn ok(self) -> Result<Answer> {
        if !(200..300).contains(&self.status) {
            bail!("HTTP {}: {}", self.status, self.text());
        }
        Ok(self)
    }
}

fn random_hex() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    (0..4)
        .map(|i| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(i);
            h.write_u32(std::process::id());
            format!("{:016x}", h.finish())
        })
        .collect()
}

impl ApiTask {
    /// Serve the API for runs in `namespace` (its default namespace), with `client` as its
    /// Kubernetes backend.
    pub async fn start(client: Client, namespace: &str) -> Result<ApiTask> {
        Self::start_with_runs(client.clone(), namespace, Arc::new(KubeRuns::new(client))).await
    }

    /// [`ApiTask::start`] with `runs` as the API's run backend (a wrapper of [`KubeRuns`] that
    /// changes the timing of its calls, say).
    pub async fn start_with_runs(
        client: Client,
        namespace: &str,
        runs: Arc<dyn api::RunBackend>,
    ) -> Result<ApiTask> {
        let dir = tempfile::tempdir().context("the API's data directory")?;
        let state = ApiState::open(
            dir.path().join("data"),
            runs,
            ApiConfig {
                default_namespace: namespace.to_string(),
                ..ApiConfig::default()
            },
        )
        .await
        .context("opening the API state")?
        // Push webhooks signed with WEBHOOK_SECRET start the namespace's Pipelines.
        .with_webhooks(api::Webhooks::new(
            Some(WEBHOOK_SECRET.to_vec()),
            Arc::new(api::KubePipelines::new(client, Some(namespace.to_string()))),
        ));
        let admin_token = random_hex();
        let token_file = dir.path().join("admin-token");
        std::fs::write(&token_file, &admin_token)?;
        state
            .bootstrap_admin_from_file(&token_file)
            .await
            .context("registering the bootstrap admin token")?;
        // Where runner pods reach the host: the real node's bridge gateway, or loopback for the
        // emulator's host-network containers. The host reaches it there too.
        let address = crate::bed::TestBed::shared_host_address_for_pods();
        let listener = tokio::net::TcpListener::bind((address, 0))
            .await
            .with_context(|| format!("binding the API's port on {address}"))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(api::serve_on(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Ok(ApiTask {
            url: format!("http://{addr}"),
            admin_token,
            state,
            stop: Some(stop),
            task: Some(task),
            dir,
        })
    }

    /// `config` with this API: runners get `SPARKWING_API_URL` = [`ApiTask::url`], finished
    /// runs are archived here before their TTL deletion, and RunnerPools get their pool token
    /// Secret minted here (as `sparkwing-operator --api-addr` does).
    pub fn configure(&self, config: Config) -> Config {
        config
            .runner_api_url(self.url.clone())
            .archive(self.state.store.clone())
            .pool_tokens(&self.state)
    }

    /// The API's data directory.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// A client of this API with `token` (`None`: none).
    pub fn client(&self, token: Option<&str>) -> Result<ApiClient> {
        ApiClient::new(&self.url, token.unwrap_or("")).context("a client of the API")
    }

    /// One request with `token` (`None`: none), through `sparkwing-api`'s client on a blocking
    /// thread; any status is an answer. A body is sent as JSON, or gzip to `/api/v1/blobs`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Answer> {
        let client = self.client(token)?;
        let content_type = if path.starts_with("/api/v1/blobs") {
            "application/gzip"
        } else {
            "application/json"
        };
        let (m, p, body) = (
            method.to_string(),
            path.to_string(),
            body.map(<[u8]>::to_vec),
        );
        let call = tokio::task::spawn_blocking(move || {
            client.call(&m, &p, &[("Content-Type", content_type)], body.as_deref())
        });
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, call)
            .await
            .with_context(|| format!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"))?
            .context("the request's thread")?
            .with_context(|| format!("{method} {path}"))?;
        Ok(Answer {
            status: answer.status,
            body: answer.body,
        })
    }

    /// A JSON request as the admin.
    pub async fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Answer> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        self.request(method, path, Some(&self.admin_token), bytes.as_deref())
            .await
    }

    /// Upload every file under `root` as the admin (relative `/`-separated paths, `target/`
    /// skipped, blobs the API lacks sent gzipped); returns the upload id.
    pub async fn upload_dir(&self, root: &Path) -> Result<String> {
        use sha2::Digest as _;
        use std::os::unix::fs::PermissionsExt as _;
        let mut files: Vec<(String, Vec<u8>, u32)> = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    if entry.file_name() != "target" {
                        stack.push(path);
                    }
                    continue;
                }
                let rel = path
                    .strip_prefix(root)?
                    .to_string_lossy()
                    .replace('\\', "/");
                let mode = entry.metadata()?.permissions().mode() & 0o777;
                files.push((rel, std::fs::read(&path)?, mode));
            }
        }
        let manifest = Manifest {
            files: files
                .iter()
                .map(|(path, content, mode)| Entry {
                    path: path.clone(),
                    mode: *mode,
                    size: content.len() as u64,
                    sha256: Some(hex::encode(sha2::Sha256::digest(content))),
                    symlink: None,
                })
                .collect(),
        };
        let client = self.client(Some(&self.admin_token))?;
        tokio::task::spawn_blocking(move || -> Result<String> {
            let answer = client.create_upload(&manifest)?;
            for (_, content, _) in &files {
                let sha = hex::encode(sha2::Sha256::digest(content));
                if !answer.missing.contains(&sha) {
                    continue;
                }
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                std::io::Write::write_all(&mut gz, content)?;
                client.put_blob(&sha, &gz.finish()?)?;
            }
            Ok(answer.id)
        })
        .await
        .context("the upload's thread")?
    }

    /// Stop serving.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        Ok(())
    }

    /// Whether `path` exists under the data directory (e.g. `archive/<ns>/<run>.json`).
    pub fn has_file(&self, path: impl AsRef<Path>) -> bool {
        self.data_dir().join(path).is_file()
    }
}

impl Drop for ApiTask {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
