#!/usr/bin/env bash
# The state layer's figures (bench/state/README.md): runs list with 10,000 runs and the tail of a
# large log, on the embedded and the shared backend. Release build. Options go to the bench:
#   bash bench/state/run.sh --runs 10000 --log-mib 150 --only shared
# The shared backend's S3 server is a release build of tools/s3-test-server
# (bench/state/s3-server-release.sh), not the tests' debug one: a bench measures our layer, not
# an unoptimised test server.
set -euo pipefail
cd "$(dirname "$0")/../.."
SPARKWING_S3_SERVER="${SPARKWING_S3_SERVER:-$(bash bench/state/s3-server-release.sh)}"
export SPARKWING_S3_SERVER
cargo build -q --release -p sparkwing-state --example state_bench
exec "${CARGO_TARGET_DIR:-target}/release/examples/state_bench" "$@"
