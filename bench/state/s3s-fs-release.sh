#!/usr/bin/env bash
# A release build of the S3-compatible test server s3s-fs for the benches (the tests use a debug
# build, scripts/setup-test-deps.sh): built once, cached; prints the binary's path.
set -euo pipefail
ROOT="${SPARKWING_S3S_FS_RELEASE_ROOT:-/var/tmp/sparkwing-ci/s3s-fs-release}"
if [ ! -x "$ROOT/bin/s3s-fs" ]; then
  echo "building a release s3s-fs into $ROOT (once)" >&2
  cargo install s3s-fs --version 0.14.1 --features binary --locked --quiet \
    --root "$ROOT" --target-dir "$ROOT/build" >&2
  rm -rf "$ROOT/build"
fi
echo "$ROOT/bin/s3s-fs"
