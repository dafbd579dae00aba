#!/usr/bin/env bash
# Run the fuzz targets briefly (CI) or for longer: fuzz/run.sh [SECONDS per target, default 30].
#
# cargo-fuzz instruments with flags stable rustc only accepts with RUSTC_BOOTSTRAP=1; that is
# the only reason it is set. Build output lives outside the repo (SPARKWING_FUZZ_TARGET) so a
# warm machine is quick; the corpus grows in a temp copy of fuzz/seeds and is thrown away.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"
export CARGO_TARGET_DIR="${SPARKWING_FUZZ_TARGET:-/var/tmp/sparkwing-fuzz-target}"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  CARGO_TARGET_DIR=/var/tmp/sparkwing-cargo-fuzz-build cargo install cargo-fuzz --locked --quiet
fi
for target in manifest sdk_json; do
  corpus="$(mktemp -d)"
  cp seeds/"$target"/* "$corpus"/
  echo "fuzzing $target for ${secs}s"
  # A crash fails the script and leaves the input in fuzz/artifacts/$target/.
  log="$corpus.log"
  rc=0
  cargo fuzz run "$target" "$corpus" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1 || rc=$?
  grep -E '^(Done|stat::number_of_executed_units)' "$log" || true
  if [ "$rc" -ne 0 ]; then
    grep -E 'panicked|ERROR|Reproduce|cargo fuzz run' -A2 "$log" | head -40
    echo "fuzz target $target failed (exit $rc); the input is in fuzz/artifacts/$target/"
    exit 1
  fi
  rm -rf "$corpus" "$log"
done
