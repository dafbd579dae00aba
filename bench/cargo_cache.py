#!/usr/bin/env python3
"""bench/cargo_cache: a Rust build with its target/ in a dependency cache, second run vs first.

Project bench/projects/cargo-cache: pipeline `cargo-cached`, one job that runs `cargo build` in
`crate/` (a small binary crate using serde with derive and serde_json, copied from the project; its
lock file made by the script), its `crate/target` cached under a key of `crate/Cargo.lock` and
`key.txt`. Each round (default 2) writes a new `key.txt`, removes `crate/target`, and runs the
pipeline twice: the first run misses (cargo builds everything, the engine saves target/), the
second, after removing target/ again, hits (the engine restores target/, cargo finds it fresh). In
the same round and the same directory, without sparkwing: `cargo build` from an empty target/ (the
cold build) and `cargo build` with target/ in place (nothing to do: what a perfect cache could
reach). Printed: median walls of each and the second run's share of the first's.

The crate's dependencies come from cargo's local registry cache (`--offline`); run `cargo fetch`
in the repository first on a machine that never built it.

Usage: python3 bench/cargo_cache.py [-r R]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep bench/ free of __pycache__
import common  # noqa: E402

PROJECT = common.PROJECTS / "cargo-cache"

def make_crate(ws: Path, env: dict[str, str]) -> None:
    crate = ws / "crate"
    shutil.copytree(PROJECT / "crate", crate)
    r = subprocess.run(
        ["cargo", "generate-lockfile", "--offline"], cwd=crate, env=env, capture_output=True, text=True
    )
    if r.returncode != 0:
        raise common.BenchError(
            f"cargo generate-lockfile --offline failed (run `cargo fetch` in the repository first):\n{r.stderr[-2000:]}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-r", type=int, default=2)
    a = ap.parse_args()
    binary = common.build_release()
    with common.temp_home("cargo-cache") as home, tempfile.TemporaryDirectory(
        prefix="sparkwing-bench-cargo-cache-ws-"
    ) as ws_dir:
        ws = Path(ws_dir)
        shutil.copytree(PROJECT / ".sparkwing", ws / ".sparkwing")
        # The job's cargo builds as a user's would: its own target/, incremental as by default.
        env = common.env_for(home)
        env.pop("CARGO_INCREMENTAL", None)
        make_crate(ws, env)
        target = ws / "crate" / "target"
        run = [str(binary), "run", "cargo-cached"]
        common.log("==> compiling the pipeline (pipeline plan)")
        common.timed([str(binary), "pipeline", "plan", "cargo-cached"], env=env, cwd=ws)
        first, second, cold, noop = [], [], [], []
        build = ["cargo", "build", "--offline", "--quiet"]
        for r in range(a.r):
            (ws / "key.txt").write_text(f"round {r} {time.time()}")
            shutil.rmtree(target, ignore_errors=True)
            cold.append(common.timed(build, env=env, cwd=ws / "crate", what="cargo build (cold)"))
            noop.append(common.timed(build, env=env, cwd=ws / "crate", what="cargo build (no-op)"))
            shutil.rmtree(target)
            common.log(f"==> round {r + 1}: first run (miss, builds, saves target/)")
            first.append(common.timed(run, env=env, cwd=ws, what="sparkwing run (miss)"))
            shutil.rmtree(target)
            common.log(f"==> round {r + 1}: second run (hit, restores target/)")
            second.append(common.timed(run, env=env, cwd=ws, what="sparkwing run (hit)"))
            newest = subprocess.run(
                [str(binary), "runs", "list", "-o", "json"], env=env, cwd=ws,
                capture_output=True, text=True,
            ).stdout.splitlines()[0]
            status = subprocess.run(
                [str(binary), "runs", "status", json.loads(newest)["id"], "-o", "json"],
                env=env, cwd=ws, capture_output=True, text=True,
            ).stdout
            if '"hit"' not in status:
                raise common.BenchError(f"the second run did not restore target/ from the cache:\n{status[-2000:]}")
        med = statistics.median
        print(f"cargo_cache: {a.r} rounds, {common.load_note()}")
        print(f"  sparkwing run, first (miss, cargo builds all, saves target/)  {med(first):7.2f} s")
        print(f"  sparkwing run, second (hit, restores target/)               {med(second):7.2f} s   "
              f"({med(second) / med(first) * 100:.0f}% of the first)")
        print(f"  cargo build, empty target/ (no sparkwing)                   {med(cold):7.2f} s")
        print(f"  cargo build, target/ in place (no sparkwing)                {med(noop):7.2f} s")


if __name__ == "__main__":
    common.run_main(main)
