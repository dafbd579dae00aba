#!/usr/bin/env bash
# Entry point for `make bench`: runs every benchmark once and prints a summary table.
# Pass benchmark names to run only some: bash bench/run.sh warm_overhead dag
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec python3 "$here/run_all.py" "$@"
