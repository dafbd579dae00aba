#!/usr/bin/env python3
"""Approval gates and concurrency groups: two handoff latencies of local runs (median over N).

1. Approve → next job: a run of the `gates` fixture's `ship` waits at its gate; the benchmark
   runs `sparkwing runs approve` and times from starting that command to the run's
   `job_started` event of `deploy` (the job after the gate) on stdout. Baseline in the same run:
   the wall time of the `runs approve` command alone, so `figure - baseline` is how long the
   waiting run takes to see a recorded decision (its store poll is 50 ms).
2. Group handoff: the benchmark holds the only slot of concurrency group `deploy-prod` itself
   (an flock on concurrency/deploy-prod/slot-0.lock, the lock a running member holds), starts
   `deploy`, waits until it is queued, frees the slot and times until `concurrency_admitted`.
   Baseline: the box-slot handoff measured the same way (bench/box_slots/handoff.py), which the
   group's queue reuses.

SPARKWING_BIN picks the binary (default target/release/sparkwing, built when missing).
"""
import fcntl, json, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("SPARKWING_BIN", os.path.join(ROOT, "target", "release", "sparkwing"))
FIXTURE = os.path.join(ROOT, "cli", "tests", "fixtures", "gates")
N = int(os.environ.get("BENCH_N", "10"))


def events(p):
    for line in p.stdout:
        try:
            yield json.loads(line)
        except ValueError:
            continue


def wait_for(p, pred, what):
    for ev in events(p):
        if pred(ev):
            return ev
    sys.exit(f"the run ended before {what}")


def ms(xs):
    return f"median {statistics.median(xs):7.1f} ms  min {min(xs):7.1f} ms  max {max(xs):7.1f} ms"


def main():
    if not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release", "-p", "sparkwing-cli"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="sw-bench-gates-")
    try:
        work = os.path.join(tmp, "work")
        shutil.copytree(FIXTURE, work)
        home = os.path.join(tmp, "home")
        env = dict(os.environ, SPARKWING_HOME=home, SPARKWING_LOG_FORMAT="json")
        env.pop("SPARKWING_BOX_SLOTS", None)
        subprocess.run([BIN, "run", "-C", work, "deploy", "--env", "warmup"], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # compile once
        approve, approve_cmd = [], []
        for _ in range(N):
            p = subprocess.Popen([BIN, "run", "-C", work, "ship"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
            started = wait_for(p, lambda e: e.get("event") == "run_started", "run_started")
            run_id = started.get("run_id") or started.get("run")
            wait_for(p, lambda e: e.get("event") == "gate_waiting", "the gate waited")
            t0 = time.perf_counter()
            subprocess.run([BIN, "runs", "approve", "--run", run_id, "--gate", "approve"], env=env,
                           check=True, stdout=subprocess.DEVNULL)
            approve_cmd.append((time.perf_counter() - t0) * 1000)
            wait_for(p, lambda e: e.get("event") == "job_started" and e.get("job") == "deploy",
                     "deploy started")
            approve.append((time.perf_counter() - t0) * 1000)
            p.stdout.read()
            if p.wait() != 0:
                sys.exit("the approved run failed")

        slots_dir = os.path.join(home, "concurrency", "deploy-prod")
        os.makedirs(slots_dir, exist_ok=True)
        handoff = []
        for _ in range(N):
            slot = open(os.path.join(slots_dir, "slot-0.lock"), "a")
            fcntl.flock(slot, fcntl.LOCK_EX)
            p = subprocess.Popen([BIN, "run", "-C", work, "deploy"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            wait_for(p, lambda e: e.get("event") == "concurrency_waiting", "the run queued")
            t0 = time.perf_counter()
            fcntl.flock(slot, fcntl.LOCK_UN)
            slot.close()
            wait_for(p, lambda e: e.get("event") == "concurrency_admitted", "admission")
            handoff.append((time.perf_counter() - t0) * 1000)
            p.stdout.read()
            if p.wait() != 0:
                sys.exit("the queued run failed")
        print(f"approve -> next job start    {ms(approve)}   (n={N})")
        print(f"  baseline: runs approve     {ms(approve_cmd)}")
        print(f"group slot handoff           {ms(handoff)}   (n={N})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
