#!/usr/bin/env python3
"""bench/warm_overhead: the fixed cost of `sparkwing run` with a warm binary cache.

Pipeline `noop` (bench/projects/overhead) has one job running `true`. After one run that compiles
it, N runs of `sparkwing run noop` are timed against N runs of `bash -c true`, interleaved so
background load hits both alike. Target: sparkwing median <= 40 ms.

Also printed, to see where the time goes without instrumenting sparkwing:
  * CPU per run (user + sys of every process of the run, from getrusage): unlike the wall time it
    does not grow while processes wait for a core on a busy machine;
  * phases timed on their own (medians): `sparkwing version` (process start), `sparkwing pipeline
    list` (+ project discovery and sparkwing.yaml), the cached pipeline binary's `plan Noop` and
    `job Noop noop` run by hand; the rest of the run is the engine (store, cache key, tokio);
  * the same runs with SPARKWING_HOME on tmpfs (/dev/shm; same binary cache): the difference is
    what the store's durable writes (SQLite WAL, fsync, run dir, logs) cost on this disk.

Usage: python3 bench/warm_overhead.py [-n N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True  # keep bench/ free of __pycache__
import common  # noqa: E402
from common import ms

TARGET_MS = 40.0
PROJECT = common.PROJECTS / "overhead"


def events_per_run(home) -> float | None:
    db = home / "state.db"
    try:
        with sqlite3.connect(db) as c:
            runs = c.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            events = c.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        return events / runs if runs else None
    except sqlite3.Error:
        return None


def measure(n: int = 30) -> dict:
    binary = common.build_release()
    with common.temp_home("warm") as home:
        env = common.env_for(home)
        argv = [str(binary), "run", "noop"]
        common.log("==> warm-up: first run compiles bench/projects/overhead/.sparkwing")
        first = common.timed(argv, env=env, cwd=PROJECT, what="sparkwing run noop (first)")
        common.log(f"    first run (compile + run) {first:.1f} s")
        # One more untimed run each, so page cache and the WAL are in their steady state.
        common.timed(argv, env=env, cwd=PROJECT)
        common.timed(["bash", "-c", "true"])
        # The same runs with the store and run dirs on tmpfs (same binary cache): the difference is
        # what durable writes (SQLite WAL and fsync, run dir, logs, locks) cost on this disk.
        shm = Path("/dev/shm")
        tmpfs_home = (
            Path(tempfile.mkdtemp(prefix="sparkwing-bench-tmpfs-", dir=shm))
            if shm.is_dir() and os.access(shm, os.W_OK)
            else None
        )
        try:
            env_tmpfs = (
                common.env_for(tmpfs_home, SPARKWING_CACHE_DIR=str(home / "cache"))
                if tmpfs_home
                else None
            )
            if env_tmpfs:
                common.timed(argv, env=env_tmpfs, cwd=PROJECT, what="sparkwing run noop (tmpfs)")
            sw, base, sw_cpu, base_cpu, tmpfs = [], [], [], [], []
            for _ in range(n):
                sw.append(common.timed(argv, env=env, cwd=PROJECT, what="sparkwing run noop", cpu=sw_cpu))
                base.append(common.timed(["bash", "-c", "true"], what="bash -c true", cpu=base_cpu))
                if env_tmpfs:
                    tmpfs.append(
                        common.timed(argv, env=env_tmpfs, cwd=PROJECT, what="sparkwing run noop (tmpfs)")
                    )
        finally:
            if tmpfs_home:
                shutil.rmtree(tmpfs_home, ignore_errors=True)
        per_run = events_per_run(home)
        phases = measure_phases(binary, home, env, max(10, n // 2))
    return {
        "n": n,
        "first_run_s": first,
        "sparkwing": common.summary(sw),
        "baseline": common.summary(base),
        "tmpfs": common.summary(tmpfs) if tmpfs else None,
        "sparkwing_cpu": statistics.median(sw_cpu),
        "baseline_cpu": statistics.median(base_cpu),
        "events_per_run": per_run,
        "phases": phases,
    }


def measure_phases(binary, home, env, n: int) -> dict:
    """Median wall of each piece of a warm run, timed on its own (interleaved)."""
    pipelines = sorted((home / "cache" / "bin").glob("*/pipeline"))
    if not pipelines:
        raise common.BenchError(f"no cached pipeline binary under {home / 'cache' / 'bin'}")
    pipe = str(pipelines[0])
    job_env = dict(
        env,
        SPARKWING_PROTOCOL="1",
        SPARKWING_ARGS="{}",
        SPARKWING_PIPELINE="noop",
        SPARKWING_RUN_ID="run-bench",
        SPARKWING_JOB="noop",
        SPARKWING_ATTEMPT="1",
        SPARKWING_WORKSPACE=str(PROJECT),
        SPARKWING_OUTPUTS_FILE=str(home / "bench.outputs.json"),
        SPARKWING_NEEDS_OUTPUTS="{}",
    )
    steps = {
        "sparkwing version": ([str(binary), "version"], env),
        "sparkwing pipeline list": ([str(binary), "pipeline", "list"], env),
        "pipeline binary: plan": ([pipe, "plan", "Noop"], job_env),
        "pipeline binary: job (runs true)": ([pipe, "job", "Noop", "noop"], job_env),
        "sparkwing run noop": ([str(binary), "run", "noop"], env),
    }
    walls: dict[str, list[float]] = {k: [] for k in steps}
    cpus: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(n):
        for name, (argv, e) in steps.items():
            walls[name].append(common.timed(argv, env=e, cwd=PROJECT, what=name, cpu=cpus[name]))
    return {
        k: {"wall": statistics.median(walls[k]), "cpu": statistics.median(cpus[k])} for k in steps
    }


def report(r: dict) -> None:
    s, b = r["sparkwing"], r["baseline"]
    print()
    print(f"warm_overhead: `sparkwing run noop` (1 job: true), warm cache, N={r['n']} each, interleaved")
    print(f"  ({common.load_note()})")
    print(f"  {'':24} {'median':>11} {'p90':>11} {'min':>11}")
    print(f"  {'sparkwing run noop':24} {ms(s['median'])} {ms(s['p90'])} {ms(s['min'])}")
    print(f"  {'bash -c true (baseline)':24} {ms(b['median'])} {ms(b['p90'])} {ms(b['min'])}")
    t = r["tmpfs"]
    if t:
        print(f"  {'  same, home on tmpfs':24} {ms(t['median'])} {ms(t['p90'])} {ms(t['min'])}")
    print(
        f"  ratio (median)           {s['median'] / b['median']:8.1f} x"
        f"      difference (median) {ms(s['median'] - b['median']).strip()}"
    )
    if t:
        print(
            f"  durable writes on this disk (median, ext4 home - tmpfs home) "
            f"{ms(s['median'] - t['median']).strip()}"
        )
    print(
        f"  CPU per run (median)     {ms(r['sparkwing_cpu'])}    bash -c true {ms(r['baseline_cpu']).strip()}"
        f"   (user+sys, all processes)"
    )
    if r["events_per_run"] is not None:
        print(f"  store events per run      {r['events_per_run']:8.1f}")
    print(f"  first run (compile)       {r['first_run_s']:8.1f} s  (not part of the figure)")
    ph = r["phases"]
    run = ph["sparkwing run noop"]["wall"]
    start = ph["sparkwing version"]["wall"]
    plan = ph["pipeline binary: plan"]["wall"]
    job = ph["pipeline binary: job (runs true)"]["wall"]
    print("  where the time goes (each piece timed on its own, medians; wall / CPU):")
    for name, v in ph.items():
        print(f"    {name:34} {ms(v['wall'])} / {ms(v['cpu']).strip()}")
    print(
        f"    => run - (process start + plan + job) = {ms(run - start - plan - job).strip()}"
        f" in the engine itself (store, cache key, tokio, waiting on children)"
    )
    print(
        f"  TARGET sparkwing median <= {TARGET_MS:.0f} ms: {s['median'] * 1000:.1f} ms"
        f" -> {common.verdict(s['median'] * 1000, TARGET_MS)}"
    )


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=30, help="timed runs of each (>= 20)")
    a, _ = ap.parse_known_args()
    r = measure(max(20, a.n))
    report(r)
    return r


if __name__ == "__main__":
    common.run_main(main)
