#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine; quick when all is present.
set -euo pipefail

need_apt=()
command -v git >/dev/null || need_apt+=(git)
command -v python3 >/dev/null || need_apt+=(python3)
command -v pgrep >/dev/null || need_apt+=(procps)
# The upload progress bar is tested on a pseudo-terminal made by util-linux `script`.
command -v script >/dev/null || need_apt+=(bsdutils)
# The Kubernetes test bed (e2e/testbed) makes its service account key with openssl. It builds its
# binaries with Go >= 1.26, which apt does not provide: see docs/e2e.md.
command -v openssl >/dev/null || need_apt+=(openssl)
# The Docker executor's tests run against a real dockerd; its runner image is built from busybox.
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v busybox >/dev/null || need_apt+=(busybox-static)
# The images' test (images/test.sh): Debian bases made with mmdebstrap, binaries stripped with
# binutils' strip, the operator's endpoints probed with curl.
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
command -v strip >/dev/null || need_apt+=(binutils)
command -v curl >/dev/null || need_apt+=(curl)
# The Kubernetes test bed's real node: a kubelet on Debian's containerd and runc (they come with
# docker.io), pods networked by the CNI bridge, host-local and firewall plugins, and iptables.
command -v containerd >/dev/null || need_apt+=(containerd)
command -v runc >/dev/null || need_apt+=(runc)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
command -v iptables >/dev/null || need_apt+=(iptables)
if [ -d "$(dirname "$0")/../e2e/dashboard" ]; then
  [ -x /usr/bin/chromium ] || need_apt+=(chromium fonts-dejavu-core)
  command -v node >/dev/null || need_apt+=(nodejs npm)
fi
# The state layer's tests (state/) start a real PostgreSQL from Debian's binaries.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need_apt[*]}; install them (apt-get install ${need_apt[*]}) and retry" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# Start dockerd in the background when no daemon answers (CI machines have no init system).
if ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "dockerd is not running; start it (sudo systemctl start docker) and retry" >&2
    exit 1
  fi
  echo "starting dockerd (log: /var/log/sparkwing-dockerd.log)"
  nohup dockerd >/var/log/sparkwing-dockerd.log 2>&1 &
  deadline=$((SECONDS + 60))
  until docker info >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "dockerd did not answer within 60s; see /var/log/sparkwing-dockerd.log:" >&2
      tail -n 30 /var/log/sparkwing-dockerd.log >&2 || true
      exit 1
    fi
    sleep 0.5
  done
fi

# The chart check parses rendered YAML with PyYAML.
if ! python3 -c 'import yaml' 2>/dev/null; then
  python3 -m pip install --quiet pyyaml
fi

# PostgreSQL refuses to run as root: the state layer's tests run it as this system user.
if [ "$(id -u)" -eq 0 ] && ! id -u sparkwing-pg >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin sparkwing-pg
fi

# The state layer's S3-compatible test server: `tools/s3-test-server`, the s3s-fs crate's store
# served with TCP_NODELAY and listing by key range (the s3s-fs binary leaves Nagle on, which stalls most requests on a
# reused connection by ~40 ms). A debug build, cached outside the repository and rebuilt when its
# sources change: under 3 minutes cold on 2 cores, nothing when present.
S3_SERVER_ROOT="${SPARKWING_S3_SERVER_ROOT:-/var/tmp/sparkwing-ci/s3-test-server}"
S3_SERVER_SRC="$(cd "$(dirname "$0")/.." && pwd)/tools/s3-test-server"
S3_SERVER_STAMP="$(cat "$S3_SERVER_SRC"/Cargo.toml "$S3_SERVER_SRC"/Cargo.lock "$S3_SERVER_SRC"/src/*.rs | sha256sum | cut -c1-16)"
if [ ! -x "$S3_SERVER_ROOT/bin/sparkwing-s3-test-server" ] || [ "$(cat "$S3_SERVER_ROOT/stamp" 2>/dev/null)" != "$S3_SERVER_STAMP" ]; then
  echo "building sparkwing-s3-test-server into $S3_SERVER_ROOT"
  cargo install --path "$S3_SERVER_SRC" --locked --quiet --debug --force \
    --root "$S3_SERVER_ROOT" --target-dir "$S3_SERVER_ROOT/build"
  rm -rf "$S3_SERVER_ROOT/build"
  echo "$S3_SERVER_STAMP" > "$S3_SERVER_ROOT/stamp"
fi
