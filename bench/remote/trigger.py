#!/usr/bin/env python3
"""bench/remote/trigger: `sparkwing pipeline trigger --detach` of a 5,000-file tree, cold and unchanged.

The API is the operator's, served on loopback by the example `api_in_memory` (its embedded stores in a
temp dir, runs recorded in memory: nothing executes them, so this measures the upload and the
trigger, not a run). The project is bench/projects/overhead plus N generated files of ~1 KiB
(text that compresses like source code does).

Figures, each the median of R rounds, with the bytes the CLI reports it sent:
  * cold: a fresh API data dir, every file uploaded;
  * unchanged: the same tree again (only the manifest goes over the wire);
  * one file changed.
Baseline in the same run: `tar -cz` of the same tree to /dev/null (the cost of reading and
compressing everything once, with no hashing and no network), and its compressed size.

Usage: python3 bench/remote/trigger.py [--files N] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

API_EXAMPLE = common.REPO / "target" / "release" / "examples" / "api_in_memory"
SENT = re.compile(r"(\d+) bytes sent compressed")


def build_api() -> Path:
    given = os.environ.get("SPARKWING_BENCH_API")
    if given:
        return Path(given).resolve()
    if os.environ.get("SPARKWING_BENCH_SKIP_BUILD") == "1" and API_EXAMPLE.is_file():
        return API_EXAMPLE
    common.log("==> cargo build --release -p sparkwing-operator --example api_in_memory")
    r = subprocess.run(
        ["cargo", "build", "--release", "-p", "sparkwing-operator", "--example", "api_in_memory"],
        cwd=common.REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if r.returncode != 0:
        raise common.BenchError(f"building api_in_memory failed:\n{r.stderr[-4000:]}")
    return API_EXAMPLE


def make_tree(root: Path, files: int) -> None:
    shutil.copytree(common.PROJECTS / "overhead", root, ignore=shutil.ignore_patterns("target"))
    for i in range(files):
        d = root / "src" / f"mod{i // 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        body = "".join(
            f"pub fn f{i}_{j}(x: u64) -> u64 {{ x.wrapping_mul({i * 31 + j}) ^ {j} }}\n"
            for j in range(16)
        )
        (d / f"file{i:05d}.rs").write_text(body)


class Api:
    def __init__(self, exe: Path, data: Path):
        self.proc = subprocess.Popen(
            [str(exe), "--data-dir", str(data)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline().split()
        if len(line) != 2:
            raise common.BenchError("api_in_memory printed no address")
        self.url, self.token = line

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def trigger(binary: Path, root: Path, env: dict) -> tuple[float, int]:
    t = time.perf_counter()
    r = subprocess.run(
        [str(binary), "pipeline", "trigger", "noop", "--profile", "bench", "--detach"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    secs = time.perf_counter() - t
    if r.returncode != 0:
        raise common.BenchError(f"trigger failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    m = SENT.search(r.stdout + r.stderr)
    if not m:
        raise common.BenchError(f"no 'bytes sent' in the output:\n{r.stdout}\n{r.stderr}")
    return secs, int(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    binary = common.build_release()
    api_exe = build_api()
    tmp = Path(tempfile.mkdtemp(prefix="sparkwing-bench-trigger-"))
    try:
        root = tmp / "project"
        make_tree(root, a.files)
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        rows: dict[str, list] = {"cold": [], "unchanged": [], "one file changed": [], "tar": []}
        for i in range(a.rounds):
            api = Api(api_exe, tmp / f"data-{i}")
            profiles = tmp / f"profiles-{i}.yaml"
            profiles.write_text(
                f"profiles:\n  bench:\n    controller: {api.url}\n    token_env: BENCH_TOKEN\n"
            )
            env = common.env_for(
                tmp / f"home-{i}",
                SPARKWING_PROFILES=str(profiles),
                BENCH_TOKEN=api.token,
                XDG_CONFIG_HOME=str(tmp / "xdg"),
            )
            try:
                rows["cold"].append(trigger(binary, root, env))
                rows["unchanged"].append(trigger(binary, root, env))
                (root / "src" / "mod000" / "file00000.rs").write_text(f"// round {i}\n")
                rows["one file changed"].append(trigger(binary, root, env))
            finally:
                api.stop()
            t = time.perf_counter()
            tar = subprocess.run(
                ["tar", "-cz", "-C", str(root), "--exclude=.git", "."],
                stdout=subprocess.PIPE,
                check=True,
            )
            rows["tar"].append((time.perf_counter() - t, len(tar.stdout)))
        print(f"trigger --detach of {a.files + 3} files, {size / 1e6:.1f} MB, {a.rounds} rounds (median)")
        print(f"{'case':<28} {'seconds':>9} {'bytes sent':>12}")
        for name, label in [
            ("cold", "cold (every file)"),
            ("unchanged", "unchanged tree"),
            ("one file changed", "one file changed"),
            ("tar", "baseline: tar -cz of it"),
        ]:
            secs = statistics.median(s for s, _ in rows[name])
            sent = statistics.median(b for _, b in rows[name])
            print(f"{label:<28} {secs:>9.3f} {int(sent):>12}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except common.BenchError as e:
        print(f"bench failed: {e}", file=sys.stderr)
        sys.exit(1)
