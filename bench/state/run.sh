#!/usr/bin/env bash
# The state layer's figures (bench/state/README.md): runs list with 10,000 runs and the tail of a
# large log, on the embedded and the shared backend. Release build. Options go to the bench:
#   bash bench/state/run.sh --runs 10000 --log-mib 150 --only shared
# The shared backend's S3 server is a release build of s3s-fs (bench/state/s3s-fs-release.sh),
# not the tests' debug one: a bench measures our layer, not an unoptimised test server.
set -euo pipefail
cd "$(dirname "$0")/../.."
SPARKWING_S3S_FS="${SPARKWING_S3S_FS:-$(bash bench/state/s3s-fs-release.sh)}"
export SPARKWING_S3S_FS
cargo build -q --release -p sparkwing-state --example state_bench
exec "${CARGO_TARGET_DIR:-target}/release/examples/state_bench" "$@"
