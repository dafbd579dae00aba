#!/usr/bin/env python3
"""The Docker executor against the process executor: wall time of a one-job run (median over N).

Three ways to run `bench/projects/overhead` (pipeline `noop`, one job running `true`):
- process:     `sparkwing run noop` (the default process executor), the baseline;
- docker cold: `sparkwing run --runner docker noop`: create and start a runner container per run;
- docker warm: `sparkwing run --runner docker --pool bench noop` with a `sparkwing pool run
               --name bench --min-idle 1` in the background: the run claims a warm container.
The three are interleaved so background load hits them alike. Before each warm run the benchmark
waits (untimed) until the pool has a ready runner again, so every warm run measures a claim.
Prints medians and ratios; asserts nothing. Needs a running dockerd (scripts/setup-test-deps.sh).
"""
import os, shutil, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("SPARKWING_BENCH_BINARY", os.path.join(ROOT, "target", "release", "sparkwing"))
PROJECT = os.path.join(ROOT, "bench", "projects", "overhead")
N = int(os.environ.get("BENCH_N", "12"))


def timed(cmd, env):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ms = (time.perf_counter() - t0) * 1000
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
    return ms, p.stderr


def wait_ready(ready_dir, deadline_s=60):
    end = time.time() + deadline_s
    while not (os.path.isdir(ready_dir) and os.listdir(ready_dir)):
        if time.time() > end:
            sys.exit("the pool has no warm runner after 60s")
        time.sleep(0.01)


def main():
    if "SPARKWING_BENCH_BINARY" not in os.environ:
        subprocess.run(["cargo", "build", "--release", "-p", "sparkwing-cli"], cwd=ROOT, check=True)
    if subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
        sys.exit("dockerd is not reachable: run `bash scripts/setup-test-deps.sh` first")
    tmp = tempfile.mkdtemp(prefix="sw-bench-docker-")
    pool = None
    try:
        work = os.path.join(tmp, "work")
        shutil.copytree(PROJECT, work)
        home = os.path.join(tmp, "home")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKWING_") and k != "CARGO_TARGET_DIR"}
        env.update(SPARKWING_HOME=home, SPARKWING_LOG_FORMAT="json")
        # The image is built from the binary under test (a no-op when it is up to date).
        subprocess.run([BIN, "runner-image", "build"], env=env, check=True)
        process = [BIN, "run", "-C", work, "noop"]
        cold = [BIN, "run", "-C", work, "--runner", "docker", "noop"]
        warm = [BIN, "run", "-C", work, "--runner", "docker", "--pool", "bench", "noop"]
        timed(process, env)  # compile once, outside the figures
        timed(cold, env)
        pool = subprocess.Popen([BIN, "pool", "run", "-C", work, "--name", "bench", "--min-idle", "1",
                                 "--max-runners", "2", "--idle-timeout", "10m"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ready = os.path.join(home, "pools", "bench", "ready")
        wait_ready(ready)
        _, err = timed(warm, env)
        if "cold" in err:
            sys.exit(f"the warm run did not claim from the pool:\n{err}")
        times = {"process": [], "docker cold": [], "docker warm": []}
        for _ in range(N):
            times["process"].append(timed(process, env)[0])
            times["docker cold"].append(timed(cold, env)[0])
            wait_ready(ready)
            ms, err = timed(warm, env)
            if "cold" in err:
                sys.exit(f"a warm run did not claim from the pool:\n{err}")
            times["docker warm"].append(ms)
        base = statistics.median(times["process"])
        print(f"one-job run (`noop`), median wall time over N={N} (binary {BIN}):")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"  {name:<12} median {med:7.1f} ms   min {min(ts):7.1f}   max {max(ts):7.1f}   x{med / base:5.1f} of process")
        cold_m, warm_m = statistics.median(times["docker cold"]), statistics.median(times["docker warm"])
        print(f"  warm claim vs cold start: {warm_m:.1f} ms vs {cold_m:.1f} ms ({cold_m / warm_m:.1f}x faster, {cold_m - warm_m:.0f} ms saved)")
    finally:
        if pool is not None:
            pool.send_signal(signal.SIGINT)
            try:
                pool.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pool.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
