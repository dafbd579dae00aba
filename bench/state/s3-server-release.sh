#!/usr/bin/env bash
# A release build of the S3-compatible test server (tools/s3-test-server) for the benches (the
# tests use a debug build, scripts/setup-test-deps.sh): built once per source change, cached;
# prints the binary's path.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/../.." && pwd)/tools/s3-test-server"
ROOT="${SPARKWING_S3_SERVER_RELEASE_ROOT:-/var/tmp/sparkwing-ci/s3-test-server-release}"
STAMP="$(cat "$SRC"/Cargo.toml "$SRC"/Cargo.lock "$SRC"/src/*.rs | sha256sum | cut -c1-16)"
if [ ! -x "$ROOT/bin/sparkwing-s3-test-server" ] || [ "$(cat "$ROOT/stamp" 2>/dev/null)" != "$STAMP" ]; then
  echo "building a release sparkwing-s3-test-server into $ROOT" >&2
  cargo install --path "$SRC" --locked --quiet --force \
    --root "$ROOT" --target-dir "$ROOT/build" >&2
  rm -rf "$ROOT/build"
  echo "$STAMP" > "$ROOT/stamp"
fi
echo "$ROOT/bin/sparkwing-s3-test-server"
