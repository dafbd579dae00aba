#!/usr/bin/env bash
# The dashboards' browser tests: builds sparkwing and the API's in-memory server, installs
# playwright-core if missing, and drives Debian's chromium (apt-get install -y chromium) against
# the local dashboard with real runs, then the cluster dashboard served by the API.
# Screenshots land in e2e/dashboard/artifacts/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ ! -x /usr/bin/chromium ]; then
    echo "error: /usr/bin/chromium is missing; install it with: apt-get install -y chromium" >&2
    exit 1
fi
cd "$root"
cargo build -p sparkwing-cli
cargo build -p sparkwing-operator --example api_in_memory
cd "$here"
if [ ! -d node_modules/playwright-core ]; then
    npm install --no-audit --no-fund
fi
SPARKWING_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/sparkwing" node dashboard.test.mjs
# The cluster dashboard: the API's own server (in-memory run backend) at `/`.
SPARKWING_API_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/examples/api_in_memory" node cluster.test.mjs
