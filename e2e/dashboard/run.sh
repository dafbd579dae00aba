#!/usr/bin/env bash
# The dashboard's browser test: builds sparkwing, installs playwright-core if missing, and drives
# Debian's chromium (apt-get install -y chromium) against a real dashboard and real runs.
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
cd "$here"
if [ ! -d node_modules/playwright-core ]; then
    npm install --no-audit --no-fund
fi
SPARKWING_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/sparkwing" node dashboard.test.mjs
