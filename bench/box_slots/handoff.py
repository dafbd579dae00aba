#!/usr/bin/env python3
"""Box slots: time from a slot being freed to the next queued run starting (median over N).

The benchmark holds the only slot itself (an flock on box-slots/slot-0.lock, the same lock a
running `sparkwing run` holds), starts a run with --sw-box-slots 1, waits until that run is queued,
then frees the slot and times how long until the run reports `admitted` on stdout.
Baseline in the same run: the time for `sparkwing run` to print its first event with no cap at all
(what admission costs when there is nothing to wait for), so the figure is the waiting cost only.
"""
import fcntl, json, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("SPARKWING_BIN", os.path.join(ROOT, "target", "release", "sparkwing"))
FIXTURE = os.path.join(ROOT, "cli", "tests", "box_fixture")
N = int(os.environ.get("BENCH_N", "20"))


def main():
    if not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release", "-p", "sparkwing-cli"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="sw-bench-box-")
    try:
        work = os.path.join(tmp, "work")
        shutil.copytree(FIXTURE, work)
        home = os.path.join(tmp, "home")
        env = dict(os.environ, SPARKWING_HOME=home, SPARKWING_LOG_FORMAT="json")
        env.pop("SPARKWING_BOX_SLOTS", None)
        release = os.path.join(work, "release")
        open(release, "w").close()
        run = [BIN, "run", "-C", work, "hold", "--release", release]
        subprocess.run(run, env=env, check=True, stdout=subprocess.DEVNULL)  # compile once
        slots_dir = os.path.join(home, "box-slots")
        os.makedirs(slots_dir, exist_ok=True)
        handoff, baseline = [], []
        for _ in range(N):
            slot = open(os.path.join(slots_dir, "slot-0.lock"), "a")
            fcntl.flock(slot, fcntl.LOCK_EX)
            p = subprocess.Popen(run + ["--sw-box-slots", "1"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
            deadline = time.time() + 30
            while not any(n.startswith("ticket-") for n in os.listdir(slots_dir)):
                if time.time() > deadline:
                    sys.exit("run never queued")
                time.sleep(0.005)
            t0 = time.perf_counter()
            fcntl.flock(slot, fcntl.LOCK_UN)
            slot.close()
            for line in p.stdout:
                if json.loads(line).get("event") == "admitted":
                    handoff.append((time.perf_counter() - t0) * 1000)
                    break
            p.stdout.read()
            if p.wait() != 0:
                sys.exit("queued run failed")
            # Baseline: no cap, time to the first event.
            t0 = time.perf_counter()
            q = subprocess.Popen(run, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            q.stdout.readline()
            baseline.append((time.perf_counter() - t0) * 1000)
            q.stdout.read()
            q.wait()
        med = statistics.median(handoff)
        print(f"box-slot handoff (slot freed -> queued run admitted), n={N}:")
        print(f"  median {med:.1f} ms  p90 {sorted(handoff)[int(0.9 * (N - 1))]:.1f} ms  min {min(handoff):.1f} ms  max {max(handoff):.1f} ms")
        print(f"  baseline, uncapped run start to first event: median {statistics.median(baseline):.1f} ms")
        print(f"  target: under 50 ms -> {'met' if med < 50 else 'NOT met'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
