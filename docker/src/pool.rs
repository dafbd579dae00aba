//! A local runner pool: `sparkwing pool run` keeps warm runner containers with the same
//! `reconcile_pool` decision the Kubernetes operator uses for `RunnerPool`.
//!
//! The pool process, the runs and the warm containers meet in files under
//! `$SPARKWING_HOME/pools/<name>/` (every container mounts the home at the same path):
//! - `pool.lock`: held by the live pool process, so a run knows whether anyone serves the queue;
//! - `pool.json`: what the pool's runners mount and run (workspace, executable, image);
//! - `ready/<container>`: written by a warm runner once it waits for work (idle since its mtime);
//! - `queue/<run>.json`: a run waiting for a runner, written by `sparkwing run --pool NAME`;
//! - `claims/<container>.json`: the pool hands a warm runner to a run (written by rename). The
//!   runner continues that run and exits: one run per container, like a Kubernetes Job.

use super::client::{summary_name, Client};
use super::container::{runner_container, Mounts};
use super::{io, DockerError, LABEL_POOL, RUNNER_EXE};
use bollard::models::ContainerSummaryStateEnum;
use serde::{Deserialize, Serialize};
use sparkwing_core::reconcile::executor::{reconcile_pool_once, PoolExecutor, PoolObservation};
use sparkwing_core::reconcile::pool::{
    ClaimRequest, PoolIntent, PoolRunner, PoolRunnerState, READY,
};
use sparkwing_core::reconcile::status::PoolStatus;
use sparkwing_engine::exit::ExitCode;
use sparkwing_engine::home::Home;
use sparkwing_engine::interrupts::Interrupts;
use sparkwing_engine::now_ms;
use std::cell::{Cell, RefCell};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often the pool reads its queue and the runners' files.
const POOL_POLL: Duration = Duration::from_millis(20);
/// How often it lists its containers when nothing changed (a list is a heavier daemon call).
const LIST_EVERY: Duration = Duration::from_millis(250);
/// How often a warm runner looks for its claim.
const CLAIM_POLL: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct PoolDir {
    name: String,
    root: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolInfo {
    pub workspace: PathBuf,
    pub exe: PathBuf,
    pub image: String,
    pub pid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct QueueEntry {
    run: String,
    request: PathBuf,
    queued_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    pub run: String,
    pub request: PathBuf,
}

/// Whether someone holds the lock at `path` (a missing file: nobody).
pub fn lock_held(path: &Path) -> bool {
    let Ok(f) = File::options().read(true).write(true).open(path) else {
        return false;
    };
    f.try_lock().is_err()
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DockerError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("rename to {}", path.display())))
}

fn run_alive(home: &Home, run: &str) -> bool {
    lock_held(&Home::run_lock(&home.run_dir(run)))
}

impl PoolDir {
    pub fn new(home: &Home, name: &str) -> PoolDir {
        PoolDir {
            name: name.to_string(),
            root: home.root.join("pools").join(name),
        }
    }
    fn lock(&self) -> PathBuf {
        self.root.join("pool.lock")
    }
    fn info(&self) -> PathBuf {
        self.root.join("pool.json")
    }
    fn ready(&self, runner: &str) -> PathBuf {
        self.root.join("ready").join(runner)
    }
    fn claims(&self) -> PathBuf {
        self.root.join("claims")
    }
    fn claim(&self, runner: &str) -> PathBuf {
        self.claims().join(format!("{runner}.json"))
    }
    fn queue(&self) -> PathBuf {
        self.root.join("queue")
    }
    fn queued(&self, run: &str) -> PathBuf {
        self.queue().join(format!("{run}.json"))
    }
    fn create_dirs(&self) -> Result<(), DockerError> {
        for d in [self.root.join("ready"), self.claims(), self.queue()] {
            std::fs::create_dir_all(&d).map_err(io(format!("create {}", d.display())))?;
        }
        Ok(())
    }
    pub fn is_alive(&self) -> bool {
        lock_held(&self.lock())
    }
    fn read_claim(&self, runner: &str) -> Option<Claim> {
        let text = std::fs::read(self.claim(runner)).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// The run side: a run that takes its runner from a live pool.
pub struct PoolPlacement {
    dir: PoolDir,
}

impl PoolPlacement {
    /// The pool, if it is alive and its runners fit this run; otherwise why not.
    pub fn find(
        home: &Home,
        name: &str,
        repo_root: &Path,
        image: &str,
    ) -> Result<PoolPlacement, String> {
        let dir = PoolDir::new(home, name);
        if !dir.is_alive() {
            return Err(format!("no `sparkwing pool run --name {name}` is running"));
        }
        let info: PoolInfo = std::fs::read(dir.info())
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok())
            .ok_or_else(|| format!("pool {name} has no readable {}", dir.info().display()))?;
        if info.workspace != repo_root {
            return Err(format!(
                "pool {name} serves {}, not {}",
                info.workspace.display(),
                repo_root.display()
            ));
        }
        let exe = std::env::current_exe().unwrap_or_default();
        if info.exe != exe {
            return Err(format!(
                "pool {name} runs {}, this is {}",
                info.exe.display(),
                exe.display()
            ));
        }
        if info.image != image {
            return Err(format!(
                "pool {name} uses image {}, this run {image}",
                info.image
            ));
        }
        Ok(PoolPlacement { dir })
    }

    pub fn name(&self) -> &str {
        &self.dir.name
    }

    pub fn is_alive(&self) -> bool {
        self.dir.is_alive()
    }

    /// The runner the pool gave `run`, if any.
    pub fn claimed_runner(&self, run: &str) -> Option<String> {
        let entries = std::fs::read_dir(self.dir.claims()).ok()?;
        for e in entries.filter_map(Result::ok) {
            let file = e.file_name().to_string_lossy().into_owned();
            let Some(runner) = file.strip_suffix(".json") else {
                continue;
            };
            if self.dir.read_claim(runner).is_some_and(|c| c.run == run) {
                return Some(runner.to_string());
            }
        }
        None
    }

    /// Ask for a runner (idempotent: one queue entry per run).
    pub fn enqueue(&self, run: &str, request: &Path) -> Result<(), DockerError> {
        let path = self.dir.queued(run);
        if path.exists() {
            return Ok(());
        }
        let entry = QueueEntry {
            run: run.to_string(),
            request: request.to_path_buf(),
            queued_at: now_ms(),
        };
        let bytes = serde_json::to_vec(&entry)
            .map_err(|e| DockerError::Other(format!("encode queue entry: {e}")))?;
        write_atomic(&path, &bytes)
    }

    pub fn dequeue(&self, run: &str) {
        let _ = std::fs::remove_file(self.dir.queued(run));
    }

    /// The run is over: forget its runner's files (the caller removes the container).
    pub fn release(&self, runner: &str) {
        let _ = std::fs::remove_file(self.dir.claim(runner));
        let _ = std::fs::remove_file(self.dir.ready(runner));
    }
}

/// The warm runner's side: announce readiness, then wait for a claim. `None`: the pool went away.
pub fn wait_for_claim(home: &Home, pool: &str, name: &str) -> Result<Option<Claim>, DockerError> {
    let dir = PoolDir::new(home, pool);
    let ready = dir.ready(name);
    std::fs::write(&ready, b"").map_err(io(format!("write {}", ready.display())))?;
    let mut checked = Instant::now();
    loop {
        if let Some(c) = dir.read_claim(name) {
            let _ = std::fs::remove_file(&ready);
            return Ok(Some(c));
        }
        if checked.elapsed() > Duration::from_secs(1) {
            checked = Instant::now();
            if !dir.is_alive() {
                let _ = std::fs::remove_file(&ready);
                return Ok(None);
            }
        }
        std::thread::sleep(CLAIM_POLL);
    }
}

pub struct PoolOptions {
    pub name: String,
    pub min_idle: u32,
    pub max_runners: u32,
    pub idle_timeout: Duration,
    pub workspace: PathBuf,
    pub home: Home,
    pub image: String,
}

fn mtime_ms(path: &Path) -> Option<i64> {
    let m = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(
        m.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    )
}

/// core's `PoolExecutor` for a local pool: its runners are containers labelled with the pool,
/// claims and readiness are files under the pool's directory, queued runs are files its hosts
/// write.
struct ContainerPool<'a> {
    client: &'a Client,
    opts: &'a PoolOptions,
    dir: &'a PoolDir,
    mounts: &'a Mounts,
    /// The pool's containers as last listed; listed again every `LIST_EVERY` or after a change.
    listed: RefCell<Vec<(String, Option<ContainerSummaryStateEnum>)>>,
    last_list: Cell<Option<Instant>>,
    /// The runs waiting for a runner, with their request files, as last observed.
    queue: RefCell<Vec<(ClaimRequest, PathBuf)>>,
}

impl PoolExecutor for ContainerPool<'_> {
    type Error = DockerError;

    async fn observe(&self) -> Result<PoolObservation, DockerError> {
        let (opts, dir) = (self.opts, self.dir);
        let fresh = self
            .last_list
            .get()
            .is_none_or(|t| t.elapsed() >= LIST_EVERY);
        if fresh {
            *self.listed.borrow_mut() = self
                .client
                .list_managed(&opts.home.root, &[(LABEL_POOL, &opts.name)])
                .await?
                .iter()
                .map(|c| (summary_name(c), c.state))
                .collect();
            self.last_list.set(Some(Instant::now()));
        }
        let listed = self.listed.borrow().clone();
        let mut observed = PoolObservation::default();
        for (name, state) in &listed {
            let claim = dir.read_claim(name);
            let ready = dir.ready(name);
            let st = match state {
                Some(ContainerSummaryStateEnum::EXITED) | Some(ContainerSummaryStateEnum::DEAD) => {
                    match claim {
                        // The run's host removes its runner when it is done with it.
                        Some(c) if run_alive(&opts.home, &c.run) => {
                            PoolRunnerState::Busy { run: c.run }
                        }
                        _ => {
                            observed.spent.push(name.clone());
                            continue;
                        }
                    }
                }
                Some(ContainerSummaryStateEnum::REMOVING) => PoolRunnerState::Terminating,
                _ => match (claim, mtime_ms(&ready)) {
                    (Some(c), Some(_)) => PoolRunnerState::Claimed { run: c.run },
                    (Some(c), None) => PoolRunnerState::Busy { run: c.run },
                    (None, Some(since)) => PoolRunnerState::Idle { since },
                    (None, None) => PoolRunnerState::Starting,
                },
            };
            observed.runners.push(PoolRunner {
                name: name.clone(),
                state: st,
            });
        }
        if fresh {
            // Files of runners that no longer exist.
            for sub in ["ready", "claims"] {
                let Ok(entries) = std::fs::read_dir(dir.root.join(sub)) else {
                    continue;
                };
                for e in entries.filter_map(Result::ok) {
                    let file = e.file_name().to_string_lossy().into_owned();
                    let runner = file.trim_end_matches(".json");
                    if !file.contains(".tmp") && !listed.iter().any(|(n, _)| n == runner) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        let mut queue: Vec<(ClaimRequest, PathBuf)> = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir.queue()) {
            for e in entries.filter_map(Result::ok) {
                let path = e.path();
                if path.extension().is_none_or(|x| x != "json") {
                    continue;
                }
                let Some(entry) = std::fs::read(&path)
                    .ok()
                    .and_then(|t| serde_json::from_slice::<QueueEntry>(&t).ok())
                else {
                    continue;
                };
                if !run_alive(&opts.home, &entry.run) {
                    // Its `sparkwing run` is gone: nobody would watch the runner.
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                queue.push((
                    ClaimRequest {
                        run: entry.run.clone(),
                        queued_at: entry.queued_at,
                    },
                    entry.request,
                ));
            }
        }
        observed.claims = queue.iter().map(|(c, _)| c.clone()).collect();
        *self.queue.borrow_mut() = queue;
        Ok(observed)
    }

    async fn remove_spent(&self, runner: &str) -> Result<(), DockerError> {
        self.client.remove(runner).await?;
        let _ = std::fs::remove_file(self.dir.claim(runner));
        let _ = std::fs::remove_file(self.dir.ready(runner));
        self.last_list.set(None);
        Ok(())
    }

    async fn create(&self, name: &str) -> Result<bool, DockerError> {
        let opts = self.opts;
        let cmd = vec![
            RUNNER_EXE.to_string(),
            "__runner".to_string(),
            "--warm".to_string(),
            "--pool".to_string(),
            opts.name.clone(),
            "--name".to_string(),
            name.to_string(),
        ];
        let body = runner_container(&opts.image, cmd, "", &opts.name, self.mounts, None);
        self.client.create(name, body).await?;
        if let Err(e) = self.client.start(name).await {
            eprintln!("pool {}: runner {name} did not start: {e}", opts.name);
            self.client.remove(name).await?;
        }
        self.last_list.set(None);
        Ok(true)
    }

    async fn claim(&self, runner: &str, run: &str) -> Result<bool, DockerError> {
        let request = {
            let queue = self.queue.borrow();
            let Some((_, request)) = queue.iter().find(|(c, _)| c.run == run) else {
                return Ok(true);
            };
            request.clone()
        };
        let claim = Claim {
            run: run.to_string(),
            request,
        };
        let bytes = serde_json::to_vec(&claim)
            .map_err(|e| DockerError::Other(format!("encode claim: {e}")))?;
        write_atomic(&self.dir.claim(runner), &bytes)?;
        let _ = std::fs::remove_file(self.dir.queued(run));
        Ok(true)
    }

    async fn reap(&self, runner: &str) -> Result<bool, DockerError> {
        self.client.remove(runner).await?;
        let _ = std::fs::remove_file(self.dir.ready(runner));
        self.last_list.set(None);
        Ok(true)
    }
}

/// Host the pool in the foreground until SIGINT or SIGTERM.
pub async fn run_pool(client: Client, opts: PoolOptions) -> Result<ExitCode, DockerError> {
    let dir = PoolDir::new(&opts.home, &opts.name);
    dir.create_dirs()?;
    let lock_path = dir.lock();
    let lock = File::create(&lock_path).map_err(io(format!("create {}", lock_path.display())))?;
    if lock.try_lock().is_err() {
        return Err(DockerError::Other(format!(
            "pool {} is already running for this SPARKWING_HOME ({} is locked)",
            opts.name,
            lock_path.display()
        )));
    }
    let mounts = Mounts::for_host(&opts.workspace, &opts.home)?;
    let info = PoolInfo {
        workspace: opts.workspace.clone(),
        exe: mounts.exe.clone(),
        image: opts.image.clone(),
        pid: std::process::id(),
    };
    let bytes = serde_json::to_vec_pretty(&info)
        .map_err(|e| DockerError::Other(format!("encode pool info: {e}")))?;
    write_atomic(&dir.info(), &bytes)?;
    let mut interrupts = Interrupts::install().map_err(io("install signal handlers"))?;
    let intent = PoolIntent {
        generation: 1,
        min_idle: opts.min_idle,
        max_runners: opts.max_runners,
        idle_timeout_ms: opts.idle_timeout.as_millis() as u64,
    };
    println!(
        "pool {}: min-idle {}, max-runners {}, idle-timeout {}; image {}; workspace {} (Ctrl-C stops it)",
        opts.name,
        opts.min_idle,
        opts.max_runners,
        humantime::format_duration(opts.idle_timeout),
        opts.image,
        opts.workspace.display()
    );
    let prefix = format!("sparkwing-pool-{}", opts.name);
    let pool = ContainerPool {
        client: &client,
        opts: &opts,
        dir: &dir,
        mounts: &mounts,
        listed: RefCell::new(Vec::new()),
        last_list: Cell::new(None),
        queue: RefCell::new(Vec::new()),
    };
    let mut status = PoolStatus::default();
    let mut printed: Option<(u32, u32, u32, u32)> = None;
    loop {
        let step = reconcile_pool_once(&pool, &prefix, &intent, &status, now_ms()).await?;
        let decision = step.decision;
        status = decision.status;
        let counts = (status.idle, status.busy, status.starting, status.total);
        if printed != Some(counts) {
            printed = Some(counts);
            let ready = status
                .conditions
                .iter()
                .find(|c| c.type_ == READY)
                .map(|c| format!(" ({}: {})", c.reason, c.message))
                .unwrap_or_default();
            println!(
                "pool {}: {} idle, {} busy, {} starting, {} total{ready}",
                opts.name, status.idle, status.busy, status.starting, status.total
            );
        }
        let stop = tokio::select! {
            _ = tokio::time::sleep(POOL_POLL) => false,
            _ = interrupts.next() => true,
        };
        if stop {
            break;
        }
    }
    // Warm runners go with the pool; busy ones finish their run (their host removes them).
    let mut removed = 0;
    for c in client
        .list_managed(&opts.home.root, &[(LABEL_POOL, &opts.name)])
        .await?
    {
        let name = summary_name(&c);
        if dir.read_claim(&name).is_none() {
            client.remove(&name).await?;
            let _ = std::fs::remove_file(dir.ready(&name));
            removed += 1;
        }
    }
    let _ = std::fs::remove_file(dir.info());
    println!(
        "pool {}: stopped; removed {removed} warm runner(s)",
        opts.name
    );
    drop(lock);
    Ok(ExitCode::Success)
}
