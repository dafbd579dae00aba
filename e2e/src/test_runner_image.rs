//! TEST INFRASTRUCTURE: a stand-in for the Sparkwing runner image, for the operator's e2e tests.
//!
//! The real Kubernetes runner (`sparkwing runner --run ...` inside the runner image) is not
//! written yet. The operator only needs a container that behaves like one from the outside: it
//! runs, exits with a code, reacts to SIGTERM, and (as a warm pod) waits until it is claimed. This
//! module imports a local image, [`TEST_RUNNER_IMAGE`], made of the host's static busybox and a
//! tiny shell script at `/usr/local/bin/sparkwing` ([`RUNNER_SCRIPT`]) whose behaviour is chosen
//! by the run's name:
//!
//! | run name | behaviour |
//! | --- | --- |
//! | `ok-*` | exits 0 after 0.3 s |
//! | `slow-*` | exits 0 after 3 s (long enough to see `Running`) |
//! | `exit3-*` | exits 3 after 0.3 s |
//! | `sleep-*` | sleeps 300 s; on SIGTERM prints `cancelled, running finally`, exits 130 after 0.5 s |
//! | `oom-*` | grows its memory until a memory limit's OOM kill ends it (exit 137, `OOMKilled`) |
//! | anything else | exits 0 at once |
//!
//! Warm mode (`sparkwing runner --warm --pool ns/pool`) idles until the file `/tmp/sparkwing-claim`
//! holds `<ns>/<run> <attempt>`, then behaves as `--run <ns>/<run> --attempt <attempt>` would; on
//! SIGTERM while idle (a reap) it exits 0 at once. It also reads its claim, as the real runner
//! does, from its pod's downwardAPI volume (`$SPARKWING_PODINFO_DIR/annotations`, the
//! `sparkwing.dev/run` and `sparkwing.dev/attempt` lines), which a real kubelet and the node
//! emulator rewrite when the pod is claimed. On the node emulator [`ClaimRelay`] also writes the
//! claim file: it watches claimed pods (label `sparkwing.dev/claimed-by`) and writes it into the
//! pod's container with `docker exec` (on the real node it does nothing: no `docker exec` into
//! pods there).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::{bail, Result};
use bollard::models::ExecConfig;
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinHandle;

use crate::node_emulator::EMULATED_POD_UID_LABEL;

/// The repository of the test runner image; the tag is a hash of [`RUNNER_SCRIPT`].
pub const TEST_RUNNER_IMAGE: &str = "sparkwing-e2e-test-runner";
/// Where a warm test runner looks for its claim.
pub const CLAIM_FILE: &str = "/tmp/sparkwing-claim";

/// `/usr/local/bin/sparkwing` of the test runner image (see the module docs).
pub const RUNNER_SCRIPT: &str = r#"#!/bin/sh
# TEST RUNNER of sparkwing-e2e (not the real runner): behaviour by run name, see
# e2e/src/test_runner_image.rs.
run=""; attempt=""; warm=""
while [ $# -gt 0 ]; do
  case "$1" in
    --run) run="$2"; shift ;;
    --attempt) attempt="$2"; shift ;;
    --warm) warm=1 ;;
  esac
  shift
done
# The claim as the pod's downwardAPI annotations file says it (a real kubelet rewrites it), or as
# the claim relay writes it.
claim_from_podinfo() {
  f="$SPARKWING_PODINFO_DIR/annotations"
  [ -n "$SPARKWING_PODINFO_DIR" ] && [ -s "$f" ] || return 1
  r=$(sed -n 's/^sparkwing\.dev\/run="\(.*\)"$/\1/p' "$f")
  a=$(sed -n 's/^sparkwing\.dev\/attempt="\(.*\)"$/\1/p' "$f")
  [ -n "$r" ] && [ -n "$a" ] || return 1
  echo "$r $a" > /tmp/sparkwing-claim
}
if [ -n "$warm" ]; then
  trap 'echo "reaped while idle"; exit 0' TERM
  echo "warm runner of pool $SPARKWING_POOL idle"
  while [ ! -s /tmp/sparkwing-claim ] && ! claim_from_podinfo; do sleep 0.1 & wait $!; done
  read run attempt < /tmp/sparkwing-claim
  echo "claimed by $run attempt $attempt"
fi
name="${run#*/}"
echo "test runner: run $run attempt $attempt"
case "$name" in
  ok-*) sleep 0.3; echo "pipeline succeeded"; exit 0 ;;
  slow-*) sleep 3; echo "pipeline succeeded"; exit 0 ;;
  exit3-*) sleep 0.3; echo "pipeline failed"; exit 3 ;;
  sleep-*)
    trap 'echo "cancelled, running finally"; sleep 0.5; exit 130' TERM
    sleep 300 & wait $!
    exit 0 ;;
  oom-*)
    # One line that never ends, held whole by tail: memory grows until the limit's OOM kill
    # (tail is PID 1 then, so the container ends 137, OOMKilled).
    exec tail /dev/zero ;;
  *) exit 0 ;;
esac
"#;

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Imports the test runner image into the local Docker engine unless it is there, and returns
/// its reference (`sparkwing-e2e-test-runner:<script hash>`). Needs the host's static busybox
/// and `tar`, as [`busybox_image`](crate::busybox_image) does.
pub async fn test_runner_image() -> Result<String> {
    let tag = format!("{:016x}", fnv1a(RUNNER_SCRIPT));
    let reference = format!("{TEST_RUNNER_IMAGE}:{tag}");
    let docker = Docker::connect_with_defaults()?.negotiate_version().await?;
    if docker.inspect_image(&reference).await.is_ok() {
        return Ok(reference);
    }
    let root = crate::images::busybox_rootfs("the test runner image")?;
    let local_bin = root.path().join("usr/local/bin");
    std::fs::create_dir_all(&local_bin)?;
    let script = local_bin.join("sparkwing");
    std::fs::write(&script, RUNNER_SCRIPT)?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    let changes = vec!["ENV PATH=/usr/local/bin:/bin".to_string()];
    crate::images::import_rootfs(&docker, &root, TEST_RUNNER_IMAGE, &tag, changes).await?;
    Ok(reference)
}

/// TEST INFRASTRUCTURE: tells warm test runners of one namespace that they were claimed (what the
/// real runner learns by watching its own pod). Stops when dropped.
pub struct ClaimRelay {
    task: JoinHandle<()>,
}

impl Drop for ClaimRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ClaimRelay {
    /// Watches the pods of `namespace` labelled `sparkwing.dev/claimed-by` and, once per pod,
    /// writes `<namespace>/<run> <attempt>` (from the claim's annotations) to [`CLAIM_FILE`] in
    /// its container.
    pub async fn start(client: Client, namespace: &str) -> Result<ClaimRelay> {
        if crate::bed::TestBed::shared_runs_real_node() {
            // The test runner reads its claim from its downwardAPI volume there.
            return Ok(ClaimRelay {
                task: tokio::spawn(async {}),
            });
        }
        let docker = Docker::connect_with_defaults()?.negotiate_version().await?;
        let namespace = namespace.to_string();
        let pods: Api<Pod> = Api::namespaced(client, &namespace);
        let task = tokio::spawn(async move {
            let cfg = watcher::Config::default().labels("sparkwing.dev/claimed-by");
            let mut stream = watcher(pods, cfg)
                .default_backoff()
                .applied_objects()
                .boxed();
            let mut told: HashSet<String> = HashSet::new();
            while let Some(pod) = stream.next().await {
                let Ok(pod) = pod else { continue };
                let Some(uid) = pod.uid() else { continue };
                if told.contains(&uid) || pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let a = pod.annotations();
                let (Some(run), Some(attempt)) =
                    (a.get("sparkwing.dev/run"), a.get("sparkwing.dev/attempt"))
                else {
                    continue;
                };
                let claim = format!("{namespace}/{run} {attempt}");
                match tell(&docker, &uid, &claim).await {
                    Ok(()) => {
                        told.insert(uid);
                    }
                    Err(e) => eprintln!(
                        "sparkwing-e2e claim relay: could not tell {}: {e:#}",
                        pod.name_any()
                    ),
                }
            }
        });
        Ok(ClaimRelay { task })
    }
}

/// Write the claim into the container of the pod with `uid` (retrying briefly while Docker has
/// no container for it yet).
async fn tell(docker: &Docker, uid: &str, claim: &str) -> Result<()> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{EMULATED_POD_UID_LABEL}={uid}")],
    )]);
    let opts = ListContainersOptionsBuilder::default()
        .filters(&filters)
        .build();
    let mut tries = 0;
    let container = loop {
        let found = docker.list_containers(Some(opts.clone())).await?;
        if let Some(name) = found.into_iter().find_map(|c| c.id) {
            break name;
        }
        tries += 1;
        if tries > 50 {
            bail!("no running container for pod uid {uid}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let script = format!("echo \"$0\" > {CLAIM_FILE}.tmp && mv {CLAIM_FILE}.tmp {CLAIM_FILE}");
    let exec = docker
        .create_exec(
            &container,
            ExecConfig {
                cmd: Some(vec!["sh".into(), "-c".into(), script, claim.to_string()]),
                user: Some("0".into()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..ExecConfig::default()
            },
        )
        .await?;
    if let bollard::exec::StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&exec.id, None).await?
    {
        while output.next().await.is_some() {}
    }
    let done = docker.inspect_exec(&exec.id).await?;
    if done.exit_code != Some(0) {
        bail!("writing the claim exited {:?}", done.exit_code);
    }
    Ok(())
}
