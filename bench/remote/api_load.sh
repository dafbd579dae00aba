#!/usr/bin/env bash
# The API under load (issue 13): /healthz and trigger latency with many runs stored and concurrent
# triggers, the runs list, and the peak RSS of concurrent tail reads of a big log. Prints figures;
# asserts no timing. Options go to the example (defaults: the issue's figures):
#
#   bash bench/remote/api_load.sh [--runs 3000] [--concurrency 20] [--triggers 5] [--log-mib 150] [--readers 8]
#
# To compare with another commit, build the example there too and run both binaries one after the
# other (SPARKWING_BENCH_API_LOAD=/path/to/bench_api_load skips the build).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${SPARKWING_BENCH_API_LOAD:-}"
if [ -z "$bin" ]; then
    echo "==> cargo build --release -p sparkwing-operator --example bench_api_load" >&2
    cargo build --release -p sparkwing-operator --example bench_api_load >&2
    bin="${CARGO_TARGET_DIR:-target}/release/examples/bench_api_load"
fi
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
    args=(--runs 3000 --concurrency 20 --triggers 5 --log-mib 150 --readers 8)
fi
exec "$bin" "${args[@]}"
