#!/usr/bin/env python3
"""Run every sparkwing benchmark once and print a summary table.

Usage: python3 bench/run_all.py [warm_overhead] [dag] [cold_build]   (default: all three)
Exit status: 0 after printing; 1 if a benchmark was broken (a build or a run failed).
"""

from __future__ import annotations

import os
import sys

sys.dont_write_bytecode = True  # keep bench/ free of __pycache__
import common  # noqa: E402

ALL = ("warm_overhead", "dag", "cold_build")


def main() -> int:
    chosen = [a for a in sys.argv[1:] if not a.startswith("-")] or list(ALL)
    unknown = [c for c in chosen if c not in ALL]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(ALL)}", file=sys.stderr)
        return 2
    try:
        common.build_release()
    except common.BenchError as e:
        print(f"BENCHMARK BROKEN: {e}", file=sys.stderr)
        return 1
    os.environ["SPARKWING_BENCH_SKIP_BUILD"] = "1"  # built once above
    sys.argv = sys.argv[:1]
    results, broken = {}, []
    for name in chosen:
        mod = __import__(name)
        try:
            results[name] = mod.main()
        except common.BenchError as e:
            print(f"\nBENCHMARK BROKEN ({name}): {e}", file=sys.stderr)
            broken.append(name)

    rows = []
    if "warm_overhead" in results:
        r = results["warm_overhead"]
        s, b = r["sparkwing"], r["baseline"]
        rows.append(("warm run, median", f"{s['median'] * 1000:.1f} ms", "<= 40 ms",
                     f"bash -c true {b['median'] * 1000:.1f} ms", s["median"] * 1000 <= 40))
        rows.append(("warm run, p90", f"{s['p90'] * 1000:.1f} ms", "", f"bash -c true {b['p90'] * 1000:.1f} ms", None))
        if r.get("tmpfs"):
            rows.append(("warm run, home on tmpfs", f"{r['tmpfs']['median'] * 1000:.1f} ms", "", "", None))
        rows.append(("warm run, CPU (all processes)", f"{r['sparkwing_cpu'] * 1000:.1f} ms", "",
                     f"bash -c true {r['baseline_cpu'] * 1000:.1f} ms", None))
    if "dag" in results:
        r = results["dag"]
        rows.append(("dag overhead/job (sleep)", f"{r['overhead_ms_per_job']:.2f} ms", "<= 5 ms",
                     f"py pool {r['baseline_overhead_ms_per_job']:.2f} ms", r["overhead_ms_per_job"] <= 5))
        rows.append(("dag wall (sleep, 8 workers)", f"{r['median']['dag'] * 1000:.0f} ms", "",
                     f"ideal {r['ideal_s'] * 1000:.0f} ms", None))
        rows.append(("per job with true, 8 workers", f"{r['true_ms_per_job_w8']:.2f} ms", "",
                     f"py pool {r['baseline_true_ms_per_job']:.2f} ms", None))
        rows.append(("per job with true, 1 worker", f"{r['true_ms_per_job_w1']:.2f} ms", "", "", None))
        rows.append(("CPU per job with true", f"{r['cpu_ms_per_job_true']:.2f} ms", "",
                     f"py pool {r['baseline_cpu_ms_per_job_true']:.2f} ms", None))
    if "cold_build" in results:
        m = results["cold_build"]["median"]
        rows.append(("cold first run", f"{m['cold']:.2f} s", "<= 30 s",
                     f"cargo hello {m['hello']:.2f} s", m["cold"] <= 30))
        rows.append(("cold, plain cargo same crate", f"{m['same']:.2f} s", "", "", None))

    print()
    print("=" * 96)
    print(f"SUMMARY  ({common.load_note()})")
    print(f"{'figure':32} {'measured':>12}  {'target':10} {'baseline (same run)':26} result")
    print("-" * 96)
    for name, val, target, base, ok in rows:
        res = "" if ok is None else ("ok" if ok else "MISS")
        print(f"{name:32} {val:>12}  {target:10} {base:26} {res}")
    for name in broken:
        print(f"{name:32} {'BROKEN':>12}")
    print("=" * 96)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
