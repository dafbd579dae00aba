#!/usr/bin/env python3
"""bench/dag: the engine's cost per job on a wide DAG.

Pipeline `dag` (bench/projects/dag): `root` -> 98 fan-out jobs -> `join`, each running
`sleep 0.05`, run with `--sw-workers 8`. With 8 workers the critical path is
    ideal = 0.05 + ceil(98/8) * 0.05 + 0.05 = 0.75 s,
and the overhead per job is (wall - ideal) / 100. Target: <= 5 ms per job.

Second figure: the same DAG with every job running `true` (`dag-true`), against `single` (the
same binary, one job running `true`: the fixed cost of any run), giving the time sparkwing spends
per job: (wall(dag-true) - wall(single)) / 99, with 8 workers and with 1 worker (`dag-true-w1`,
no overlap), plus the CPU per job (user + sys of all processes, from getrusage), which unlike the
wall time does not depend on how busy the machine's cores are.

Baseline measured in the same run: the same DAG executed by a minimal Python runner
(a thread pool of 8 workers, one `subprocess.run` per job, no store, no pipeline binary).

Usage: python3 bench/dag.py [-n RUNS]
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.dont_write_bytecode = True  # keep bench/ free of __pycache__
import common  # noqa: E402
from common import ms

TARGET_MS_PER_JOB = 5.0
PROJECT = common.PROJECTS / "dag"
WORKERS = 8
FANOUT = 98
JOBS = FANOUT + 2
SLEEP = 0.05
STEPS = 1 + math.ceil(FANOUT / WORKERS) + 1  # jobs on the critical path with WORKERS workers
IDEAL = STEPS * SLEEP


def python_dag(cmd: list[str]) -> float:
    """The baseline: the same DAG run by a bare thread pool of WORKERS."""

    def job() -> None:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        if r.returncode != 0:
            raise common.BenchError(f"baseline job {cmd} exited {r.returncode}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        job()
        for f in [pool.submit(job) for _ in range(FANOUT)]:
            f.result()
        job()
    return time.perf_counter() - t0


def engine_view(home) -> dict:
    """What the store recorded (ms timestamps): job durations and scheduling gaps, medians over runs."""
    out: dict = {}
    with sqlite3.connect(home / "state.db") as c:
        for pipeline in ("dag", "dag-true", "dag-true-w1", "single"):
            runs = c.execute(
                "SELECT id, finished_at - created_at FROM runs WHERE pipeline = ? AND status = 'success'",
                (pipeline,),
            ).fetchall()
            if not runs:
                continue
            ev = c.execute(
                "SELECT COUNT(*) FROM events e JOIN runs r ON r.id = e.run_id WHERE r.pipeline = ?",
                (pipeline,),
            ).fetchone()[0]
            durs, gaps_in, gaps_out = [], [], []
            for run_id, _ in runs:
                rows = c.execute(
                    "SELECT job_id, started_at, finished_at FROM jobs WHERE run_id = ?", (run_id,)
                ).fetchall()
                durs += [f - s for _, s, f in rows if s is not None and f is not None]
                by = {j: (s, f) for j, s, f in rows}
                fans = [v for j, v in by.items() if j.startswith("fan-")]
                if fans and "root" in by and "join" in by:
                    # root finished -> first fan-out started; last fan-out finished -> join started.
                    gaps_out.append(min(s for s, _ in fans) - by["root"][1])
                    gaps_in.append(by["join"][0] - max(f for _, f in fans))
            out[pipeline] = {
                "runs": len(runs),
                "engine_wall_ms": statistics.median(w for _, w in runs),
                "job_ms": statistics.median(durs) if durs else None,
                "events_per_run": ev / len(runs),
                "gap_fanout_ms": statistics.median(gaps_out) if gaps_out else None,
                "gap_fanin_ms": statistics.median(gaps_in) if gaps_in else None,
            }
    return out


def measure(rounds: int = 5) -> dict:
    binary = common.build_release()
    sw = str(binary)
    with common.temp_home("dag") as home:
        env = common.env_for(home)

        cpu: dict[str, list[float]] = {"dag_true": [], "single": [], "py_true": []}

        def run(pipeline: str, workers: int, cpu_key: str | None = None) -> float:
            argv = [sw, "run", pipeline, "--sw-workers", str(workers)]
            return common.timed(
                argv, env=env, cwd=PROJECT, what=" ".join(argv[1:]),
                cpu=cpu[cpu_key] if cpu_key else None,
            )

        common.log("==> warm-up: first run compiles bench/projects/dag/.sparkwing")
        first = run("single", 1)
        common.log(f"    first run (compile + run) {first:.1f} s")
        run("single", 1)
        python_dag(["true"])
        series: dict[str, list[float]] = {
            k: [] for k in ("dag", "py_sleep", "dag_true", "py_true", "single", "dag_true_w1")
        }
        for i in range(rounds):
            common.log(f"    round {i + 1}/{rounds}")
            series["dag"].append(run("dag", WORKERS))
            series["py_sleep"].append(python_dag(["sleep", str(SLEEP)]))
            series["dag_true"].append(run("dag-true", WORKERS, "dag_true"))
            c0 = common.children_cpu()
            series["py_true"].append(python_dag(["true"]))
            cpu["py_true"].append(common.children_cpu() - c0)
            series["single"].append(run("single", 1, "single"))
            series["dag_true_w1"].append(run("dag-true-w1", 1))
        view = engine_view(home)
    med = {k: statistics.median(v) for k, v in series.items()}
    return {
        "rounds": rounds,
        "first_run_s": first,
        "series": series,
        "median": med,
        "ideal_s": IDEAL,
        "overhead_ms_per_job": (med["dag"] - IDEAL) / JOBS * 1000,
        "baseline_overhead_ms_per_job": (med["py_sleep"] - IDEAL) / JOBS * 1000,
        "true_ms_per_job_w8": (med["dag_true"] - med["single"]) / (JOBS - 1) * 1000,
        "true_ms_per_job_w1": (med["dag_true_w1"] - med["single"]) / (JOBS - 1) * 1000,
        "baseline_true_ms_per_job": med["py_true"] / JOBS * 1000,
        "engine": view,
        "cpu_ms_per_job_true": (statistics.median(cpu["dag_true"]) - statistics.median(cpu["single"]))
        / (JOBS - 1) * 1000,
        "baseline_cpu_ms_per_job_true": statistics.median(cpu["py_true"]) / JOBS * 1000,
    }


def report(r: dict) -> None:
    m = r["median"]
    s = r["series"]
    print()
    print(
        f"dag: root -> {FANOUT} fan-out -> join ({JOBS} jobs), --sw-workers {WORKERS}, "
        f"median of {r['rounds']} runs each, interleaved"
    )
    print(f"  ({common.load_note()})")
    print(f"  sleep {SLEEP}: ideal wall (critical path, {WORKERS} workers)   {ms(r['ideal_s'])}")
    print(
        f"    sparkwing run dag                      wall {ms(m['dag'])}"
        f"   (min {ms(min(s['dag'])).strip()}, max {ms(max(s['dag'])).strip()})"
    )
    print(f"    python thread pool (baseline)          wall {ms(m['py_sleep'])}")
    print(f"    overhead per job, sparkwing            {r['overhead_ms_per_job']:8.2f} ms   = (wall - ideal) / {JOBS}")
    print(f"    overhead per job, baseline             {r['baseline_overhead_ms_per_job']:8.2f} ms")
    print(
        f"    latency added per critical-path step   {(m['dag'] - r['ideal_s']) / STEPS * 1000:8.2f} ms"
        f"   = (wall - ideal) / {STEPS} (baseline {(m['py_sleep'] - r['ideal_s']) / STEPS * 1000:.2f} ms)"
    )
    print(
        f"    TARGET <= {TARGET_MS_PER_JOB:.0f} ms/job: {r['overhead_ms_per_job']:.2f} ms"
        f" -> {common.verdict(r['overhead_ms_per_job'], TARGET_MS_PER_JOB)}"
    )
    print("  true: time sparkwing spends per job = (wall(dag-true) - wall(single)) / 99")
    print(f"    sparkwing run single (1 job)           wall {ms(m['single'])}")
    print(f"    sparkwing run dag-true, 8 workers      wall {ms(m['dag_true'])}   -> {r['true_ms_per_job_w8']:6.2f} ms/job")
    print(f"    sparkwing run dag-true, 1 worker       wall {ms(m['dag_true_w1'])}   -> {r['true_ms_per_job_w1']:6.2f} ms/job")
    print(f"    python thread pool, true (baseline)    wall {ms(m['py_true'])}   -> {r['baseline_true_ms_per_job']:6.2f} ms/job")
    print(
        f"    CPU per job (user+sys, all processes)  sparkwing {r['cpu_ms_per_job_true']:5.2f} ms"
        f"   baseline {r['baseline_cpu_ms_per_job_true']:5.2f} ms"
    )
    e = r["engine"]
    if e:
        print("  as recorded in the store (medians):")
        for p in ("dag", "dag-true", "dag-true-w1", "single"):
            v = e.get(p)
            if not v:
                continue
            extra = ""
            if v["gap_fanout_ms"] is not None:
                extra = (
                    f", root->fan-out gap {v['gap_fanout_ms']:.0f} ms"
                    f", fan-out->join gap {v['gap_fanin_ms']:.0f} ms"
                )
            print(
                f"    {p:11} run {v['engine_wall_ms']:6.0f} ms, job {v['job_ms']:5.0f} ms,"
                f" {v['events_per_run']:5.0f} events/run{extra}"
            )
    print(f"  first run (compile)                      {r['first_run_s']:8.1f} s  (not part of the figures)")


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5, help="runs of each variant")
    a, _ = ap.parse_known_args()
    r = measure(max(1, a.n))
    report(r)
    return r


if __name__ == "__main__":
    common.run_main(main)
