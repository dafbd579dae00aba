#!/usr/bin/env python3
"""bench/cold_build: the first `sparkwing run` of a freshly scaffolded pipeline, empty binary cache.

`sparkwing pipeline new --name cold` scaffolds a project in a temp dir; `sparkwing run cold` is
timed with a fresh SPARKWING_HOME and SPARKWING_CACHE_DIR (so no toolchain memo, no SDK copy, no
cargo target dir: the SDK and the pipeline crate are compiled from scratch). Target: <= 30 s.

Baselines measured in the same run:
  * `cargo build` of a `cargo new` hello-world crate with a fresh target dir (what any Rust crate
    costs on this machine right now);
  * `cargo build` of the very crate sparkwing built, with the same SDK patch and a fresh target
    dir, i.e. the cargo part of the cold run without sparkwing around it.
Then one warm `sparkwing run cold` for contrast.

Usage: python3 bench/cold_build.py [-n ROUNDS]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True  # keep bench/ free of __pycache__
import common  # noqa: E402

TARGET_S = 30.0


def sdk_patch(cache: Path) -> str:
    """The `--config` patch sparkwing gives cargo, pointing at the SDK it materialized."""
    sdks = sorted((cache / "sdk").glob("*/Cargo.toml"))
    if not sdks:
        raise common.BenchError(f"no materialized SDK under {cache / 'sdk'}")
    return f'patch.crates-io.sparkwing.path="{sdks[0].parent}"'


def one_round(binary: Path, tmp: Path, i: int) -> dict:
    # Baseline 1: a hello-world crate.
    base = tmp / f"hello-{i}"
    r = subprocess.run(
        ["cargo", "new", "--quiet", "--vcs", "none", "--bin", "--name", "hello", str(base)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if r.returncode != 0:
        raise common.BenchError(f"cargo new failed: {r.stderr}")
    env_base = common.env_for(tmp / "unused", CARGO_TARGET_DIR=str(tmp / f"hello-target-{i}"))
    hello = common.timed(["cargo", "build"], env=env_base, cwd=base, what="cargo build (hello)")

    # The figure: scaffold, then the first run with an empty cache.
    repo = tmp / f"repo-{i}"
    repo.mkdir()
    home = tmp / f"home-{i}"
    cache = tmp / f"cache-{i}"
    env = common.env_for(home, SPARKWING_CACHE_DIR=str(cache))
    common.timed(
        [str(binary), "pipeline", "new", "--name", "cold", "-C", str(repo)],
        env=env,
        what="sparkwing pipeline new --name cold",
    )
    cold = common.timed([str(binary), "run", "cold"], env=env, cwd=repo, what="sparkwing run cold (cold)")
    warm = common.timed([str(binary), "run", "cold"], env=env, cwd=repo, what="sparkwing run cold (warm)")

    # Baseline 2: the same crate, same patch, plain cargo, fresh target dir.
    env_same = common.env_for(home, CARGO_TARGET_DIR=str(tmp / f"same-target-{i}"))
    same = common.timed(
        [
            "cargo",
            "build",
            "--manifest-path",
            str(repo / ".sparkwing" / "Cargo.toml"),
            "--config",
            sdk_patch(cache),
        ],
        env=env_same,
        cwd=repo / ".sparkwing",
        what="cargo build (scaffolded crate)",
    )
    for d in (home, cache, tmp / f"hello-target-{i}", tmp / f"same-target-{i}"):
        shutil.rmtree(d, ignore_errors=True)
    return {"cold": cold, "warm": warm, "hello": hello, "same": same}


def measure(rounds: int = 1) -> dict:
    binary = common.build_release()
    tmp = Path(tempfile.mkdtemp(prefix="sparkwing-bench-cold-"))
    try:
        rows = []
        for i in range(rounds):
            common.log(f"==> cold build round {i + 1}/{rounds}")
            rows.append(one_round(binary, tmp, i))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {"rounds": rounds, "rows": rows, "median": med}


def report(r: dict) -> None:
    m = r["median"]
    print()
    print(
        f"cold_build: first `sparkwing run cold` after `sparkwing pipeline new --name cold`, empty cache"
        f" ({r['rounds']} round{'s' if r['rounds'] != 1 else ''}"
        f"{', medians' if r['rounds'] > 1 else ''})"
    )
    print(f"  ({common.load_note()})")
    print(f"  sparkwing run cold, empty cache               {m['cold']:8.2f} s")
    print(f"  cargo build, `cargo new` hello (baseline)     {m['hello']:8.2f} s")
    print(f"  cargo build, same crate + SDK patch           {m['same']:8.2f} s")
    print(f"  ratio to hello-world build                    {m['cold'] / m['hello']:8.1f} x")
    print(f"  sparkwing beyond plain cargo of same crate    {m['cold'] - m['same']:8.2f} s")
    print(f"  sparkwing run cold, warm (for contrast)       {m['warm'] * 1000:8.1f} ms")
    print(
        f"  TARGET <= {TARGET_S:.0f} s: {m['cold']:.2f} s -> {common.verdict(m['cold'], TARGET_S)}"
    )


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3, help="rounds (each is a full cold build)")
    a, _ = ap.parse_known_args()
    r = measure(max(1, a.n))
    report(r)
    return r


if __name__ == "__main__":
    common.run_main(main)
