#!/usr/bin/env python3
"""bench/cache_throughput: dependency cache save and restore throughput vs plain `tar`.

Project bench/projects/cache: pipeline `cached`, one job whose cache covers `tree/` keyed by
`key.txt`. The script writes a tree of N MiB (default 256) of files of mixed sizes (random bytes,
so nothing compresses), then, R times (default 3): a run with a fresh key (a miss: the engine
saves the tree) and, after removing the tree, a run with the same key (a hit: the engine
restores it). The save and restore times are the engine's own (the job log's `cache tree: saved
… in N ms` and `restored … in N ms` lines), so process start and planning are not counted.
Interleaved with them: `tar -cf` of the same tree to a file in the same file system and `tar -xf`
of it into an empty directory. Printed: median MiB/s of each, and sparkwing's as a share of tar's.

Usage: python3 bench/cache_throughput.py [--mib N] [-r R]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep bench/ free of __pycache__
import common  # noqa: E402

PROJECT = common.PROJECTS / "cache"
SAVED = re.compile(r"^cache tree: saved \S+ \(.* in (\d+) ms\)$")
RESTORED = re.compile(r"^cache tree: hit \(key \S+; restored .* in (\d+) ms\)$")


def make_tree(root: Path, mib: int) -> int:
    """Files of 4 KiB to 4 MiB in nested directories; returns the bytes written."""
    sizes = [4 << 10, 64 << 10, 512 << 10, 4 << 20]
    total, i = 0, 0
    while total < mib << 20:
        size = sizes[i % len(sizes)]
        d = root / f"d{i % 16:02d}" / f"e{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.bin").write_bytes(os.urandom(size))
        total += size
        i += 1
    return total


def job_line(home: Path, pattern: re.Pattern) -> float:
    """The newest run's `build` log line matching `pattern`: its milliseconds, as seconds."""
    runs = sorted((home / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    for line in (runs[-1] / "build.log").read_text().splitlines():
        m = pattern.match(json.loads(line).get("line", ""))
        if m:
            return max(int(m.group(1)), 1) / 1000
    raise common.BenchError(f"no line matching {pattern.pattern} in {runs[-1]}/build.log")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("-r", type=int, default=3)
    a = ap.parse_args()
    binary = common.build_release()
    with common.temp_home("cache") as home, tempfile.TemporaryDirectory(
        prefix="sparkwing-bench-cache-ws-"
    ) as ws_dir:
        ws = Path(ws_dir)
        shutil.copytree(PROJECT / ".sparkwing", ws / ".sparkwing")
        size = make_tree(ws / "tree", a.mib)
        env = common.env_for(home, SPARKWING_JOB_CACHES_MAX_BYTES=str(64 << 30))
        run = [str(binary), "run", "cached"]
        (ws / "key.txt").write_text("warm-up")
        common.log("==> first run (compiles the pipeline)")
        common.timed(run, env=env, cwd=ws, what="sparkwing run cached")
        save, restore, tar_c, tar_x = [], [], [], []
        for r in range(a.r):
            (ws / "key.txt").write_text(f"round {r} {time.time()}")
            common.timed(run, env=env, cwd=ws, what="sparkwing run cached (miss)")
            save.append(job_line(home, SAVED))
            archive = ws / "tree.tar"
            tar_c.append(common.timed(["tar", "-cf", str(archive), "-C", str(ws), "tree"]))
            shutil.move(str(ws / "tree"), str(ws / "tree.kept"))
            common.timed(run, env=env, cwd=ws, what="sparkwing run cached (hit)")
            restore.append(job_line(home, RESTORED))
            shutil.rmtree(ws / "tree")
            out = ws / "untar"
            out.mkdir()
            tar_x.append(common.timed(["tar", "-xf", str(archive), "-C", str(out)]))
            shutil.rmtree(out)
            archive.unlink()
            shutil.move(str(ws / "tree.kept"), str(ws / "tree"))
        mib = size / (1 << 20)
        rate = lambda xs: mib / statistics.median(xs)  # noqa: E731
        print(f"cache_throughput: {mib:.0f} MiB tree, {a.r} rounds, {common.load_note()}")
        print(f"  save     sparkwing {rate(save):8.1f} MiB/s   tar -cf {rate(tar_c):8.1f} MiB/s   "
              f"({rate(save) / rate(tar_c) * 100:.0f}% of tar)")
        print(f"  restore  sparkwing {rate(restore):8.1f} MiB/s   tar -xf {rate(tar_x):8.1f} MiB/s   "
              f"({rate(restore) / rate(tar_x) * 100:.0f}% of tar)")


if __name__ == "__main__":
    common.run_main(main)
