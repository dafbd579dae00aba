"""Shared helpers for the sparkwing benchmarks (standard library only).

Every benchmark builds the release CLI itself, runs against a fresh temporary SPARKWING_HOME,
compares against a baseline measured in the same run, and prints its figures. Nothing here asserts
a timing: a benchmark exits non-zero only when something is broken (a build or a run failed).
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PROJECTS = BENCH_DIR / "projects"
BINARY = REPO / "target" / "release" / "sparkwing"

# Variables of the caller's environment that would change what a benchmark measures.
_SCRUB = (
    "SPARKWING_HOME",
    "SPARKWING_CACHE_DIR",
    "SPARKWING_LOG_FORMAT",
    "SPARKWING_CACHE_MAX_ENTRIES",
    "SPARKWING_CACHE_MAX_BYTES",
    "CARGO_TARGET_DIR",
)


class BenchError(Exception):
    """Something is broken (not slow): the benchmark cannot produce its figure."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_release() -> Path:
    """`cargo build --release -p sparkwing-cli`; returns the binary's path.

    SPARKWING_BENCH_BINARY=/path/to/sparkwing skips the build and benchmarks that binary instead
    (e.g. a copy of an older build, to compare two versions on the same machine at the same time).
    """
    given = os.environ.get("SPARKWING_BENCH_BINARY")
    if given:
        p = Path(given).resolve()
        if not p.is_file():
            raise BenchError(f"SPARKWING_BENCH_BINARY={given} is not a file")
        return p
    if os.environ.get("SPARKWING_BENCH_SKIP_BUILD") == "1" and BINARY.is_file():
        return BINARY
    log("==> cargo build --release -p sparkwing-cli")
    t = time.perf_counter()
    r = subprocess.run(
        ["cargo", "build", "--release", "-p", "sparkwing-cli"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if r.returncode != 0:
        raise BenchError(f"cargo build --release failed ({r.returncode}):\n{r.stderr[-4000:]}")
    if not BINARY.is_file():
        raise BenchError(f"cargo built no {BINARY}")
    log(f"    built in {time.perf_counter() - t:.1f} s")
    return BINARY


@contextmanager
def temp_home(label: str):
    """A fresh SPARKWING_HOME (with its default cache inside), removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix=f"sparkwing-bench-{label}-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["SPARKWING_HOME"] = str(home)
    env["SPARKWING_LOG_FORMAT"] = "json"
    env.update(extra)
    return env


def children_cpu() -> float:
    """User + system CPU seconds of all waited-for descendants so far (grandchildren included)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(
    argv: list[str], *, env=None, cwd=None, what: str | None = None, cpu: list | None = None
) -> float:
    """Run argv with stdout to /dev/null; return wall seconds. A non-zero exit is an error.

    With `cpu`, also append the CPU seconds the command and its descendants used (insensitive to
    how long they waited for a core, unlike the wall time on a shared machine).
    """
    c0 = children_cpu() if cpu is not None else 0.0
    t0 = time.perf_counter()
    r = subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    dt = time.perf_counter() - t0
    if cpu is not None:
        cpu.append(children_cpu() - c0)
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace")[-4000:]
        raise BenchError(f"{what or ' '.join(argv)} exited {r.returncode}:\n{err}")
    return dt


def p90(xs: list[float]) -> float:
    """90th percentile, nearest-rank."""
    s = sorted(xs)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def summary(xs: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(xs),
        "p90": p90(xs),
        "min": min(xs),
        "max": max(xs),
        "n": len(xs),
    }


def ms(x: float) -> str:
    return f"{x * 1000:8.1f} ms"


def verdict(value: float, target: float) -> str:
    return "meets target" if value <= target else "MISSES target"


def load_note() -> str:
    try:
        one, five, _ = os.getloadavg()
        return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"
    except OSError:
        return f"{os.cpu_count()} CPUs"


def run_main(fn) -> None:
    """Run a benchmark's main: exit 0 after printing, 1 if something was broken."""
    try:
        fn()
    except BenchError as e:
        print(f"BENCHMARK BROKEN: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
