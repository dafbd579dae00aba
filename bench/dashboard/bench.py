#!/usr/bin/env python3
"""Dashboard benchmarks: prints figures, asserts nothing (exit non-zero only when broken).

1. Runs-list response time with 10,000 runs in the store: median wall time of `GET /api/runs`
   (the default page of 50, with the total count) and of the runs page `GET /`, over N requests.
   Target: median under 50 ms.
2. Log-line-to-SSE delay: a job's log file gets a line every 20-120 ms (written as the engine
   writes it: one JSON record per write); a client follows
   `GET /api/runs/{id}/jobs/{job}/logs/stream`; the delay is arrival time minus write time.
   Target: median under 250 ms. Five such runs stream at once (--streams, default 5).

The store is filled directly with sqlite3 in the schema `sparkwing` created (a fresh temporary
SPARKWING_HOME). Binary: $SPARKWING_BENCH_BINARY, else target/release/sparkwing (built with
`cargo build --release -p sparkwing-cli`). Python 3.9+, standard library only.
"""

import argparse
import json
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def binary():
    b = os.environ.get("SPARKWING_BENCH_BINARY")
    if b:
        return os.path.abspath(b)
    subprocess.run(["cargo", "build", "--release", "-p", "sparkwing-cli"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release", "sparkwing")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fill(home, n):
    db = sqlite3.connect(os.path.join(home, "state.db"))
    now = int(time.time() * 1000) - n * 60_000
    pipelines = ["hello", "deploy", "lint", "release", "nightly"]
    statuses = ["success"] * 7 + ["failed"] * 2 + ["cancelled"]
    runs, jobs = [], []
    for i in range(n):
        rid = "run-bench-%06d" % i
        st = statuses[i % len(statuses)]
        created = now + i * 60_000
        runs.append((rid, pipelines[i % 5], "Hello", st, '{"name":"world","token":"***"}',
                     "/src/repo%d" % (i % 3), "main", "0123456789abcdef0123", "box", "ada", 1,
                     "process", created, created, created + 5_000, 0 if st == "success" else 1,
                     None if st == "success" else "job failed: build",
                     os.path.join(home, "runs", rid)))
        for p, j in enumerate(["build", "test", "lint", "deploy", "cleanup"]):
            needs = json.dumps(["build"] if j in ("test", "deploy") else [])
            jobs.append((rid, j, p, needs, 0, 1 if j == "cleanup" else 0, "success", None, 1,
                         created, created + 1000, 0, None))
    db.executemany("INSERT INTO runs VALUES (%s)" % ",".join("?" * 18), runs)
    db.executemany("INSERT INTO jobs VALUES (%s)" % ",".join("?" * 13), jobs)
    db.commit()
    db.close()


def http_get(port, path):
    """A plain HTTP/1.1 GET; returns (status, seconds, bytes)."""
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    dt = time.perf_counter() - t0
    status = int(data.split(b" ", 2)[1])
    return status, dt, len(data)


def median_ms(xs):
    return statistics.median(xs) * 1000


def add_live_run(home, rid):
    db = sqlite3.connect(os.path.join(home, "state.db"), timeout=30)
    now = int(time.time() * 1000)
    run_dir = os.path.join(home, "runs", rid)
    os.makedirs(run_dir, exist_ok=True)
    db.execute("INSERT INTO runs VALUES (%s)" % ",".join("?" * 18),
               (rid, "live", "Live", "running", "{}", "/src/live", None, None, "box", "ada",
                os.getpid(), "process", now, now, None, None, None, run_dir))
    db.execute("INSERT INTO jobs VALUES (%s)" % ",".join("?" * 13),
               (rid, "work", 0, "[]", 0, 0, "running", None, 1, now, None, None, None))
    db.commit()
    db.close()
    # Hold the run's lock as a live run does, so the dashboard does not reconcile it as dead.
    lock = open(os.path.join(run_dir, "run.lock"), "w")
    import fcntl
    fcntl.flock(lock, fcntl.LOCK_EX)
    return run_dir, lock


def stream_delays(port, home, rid, lines, delays, errors):
    run_dir, lock = add_live_run(home, rid)
    log_path = os.path.join(run_dir, "work.log")
    open(log_path, "w").close()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(("GET /api/runs/%s/jobs/work/logs/stream HTTP/1.1\r\nHost: x\r\n\r\n" % rid).encode())
    s.settimeout(10)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    buf = buf.split(b"\r\n\r\n", 1)[1]
    written = {}
    got = 0

    def writer():
        with open(log_path, "ab", buffering=0) as f:
            for seq in range(1, lines + 1):
                time.sleep(random.uniform(0.02, 0.12))
                rec = {"seq": seq, "ts": int(time.time() * 1000), "attempt": 1,
                       "stream": "stdout", "line": "line %d %s" % (seq, "x" * 60)}
                written[seq] = time.perf_counter()
                f.write((json.dumps(rec) + "\n").encode())

    t = threading.Thread(target=writer)
    t.start()
    try:
        while got < lines:
            while b"\ndata: " not in buf or b"\n\n" not in buf.split(b"\ndata: ", 1)[1]:
                buf += s.recv(65536)
            arrived = time.perf_counter()
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                for line in ev.split(b"\n"):
                    if line.startswith(b"data: "):
                        seq = json.loads(line[6:])["seq"]
                        delays.append(arrived - written[seq])
                        got += 1
                if b"\ndata: " not in buf:
                    break
    except Exception as e:  # noqa: BLE001
        errors.append("%s: %s" % (rid, e))
    t.join()
    s.close()
    lock.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("-n", type=int, default=200, help="requests per list figure")
    ap.add_argument("--lines", type=int, default=60, help="log lines per stream")
    ap.add_argument("--streams", type=int, default=5, help="runs streaming at once")
    args = ap.parse_args()

    sw = binary()
    home = tempfile.mkdtemp(prefix="sparkwing-bench-dash-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKWING_")}
    env["SPARKWING_HOME"] = home
    port = free_port()
    try:
        subprocess.run([sw, "runs", "list"], env=env, check=True, stdout=subprocess.DEVNULL)
        t0 = time.perf_counter()
        fill(home, args.runs)
        print("filled the store with %d runs (5 jobs each) in %.1f s" % (args.runs, time.perf_counter() - t0))
        subprocess.run([sw, "dashboard", "start", "--addr", "127.0.0.1:%d" % port], env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        figures = {}
        for name, path in [("GET /api/runs", "/api/runs"),
                           ("GET /api/runs?status=failed&pipeline=deploy", "/api/runs?status=failed&pipeline=deploy"),
                           ("GET / (runs page, HTML)", "/"),
                           ("GET /api/health (baseline: no store read)", "/api/health")]:
            times = []
            for _ in range(5):
                http_get(port, path)
            for _ in range(args.n):
                status, dt, _ = http_get(port, path)
                if status != 200:
                    sys.exit("%s answered %d" % (path, status))
                times.append(dt)
            figures[name] = times
            print("%-48s median %6.2f ms   p90 %6.2f ms" % (name, median_ms(times),
                  statistics.quantiles(times, n=10)[8] * 1000))

        delays, errors = [], []
        threads = [threading.Thread(target=stream_delays,
                                    args=(port, home, "run-live-%d" % i, args.lines, delays, errors))
                   for i in range(args.streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors or not delays:
            sys.exit("streaming failed: %s" % errors)
        print("%-48s median %6.2f ms   p90 %6.2f ms   (%d lines, %d streams at once)" % (
            "log line written -> SSE event received", median_ms(delays),
            statistics.quantiles(delays, n=10)[8] * 1000, len(delays), args.streams))

        lst = median_ms(figures["GET /api/runs"])
        sse = median_ms(delays)
        print()
        print("runs list, %d runs: median %.1f ms (target < 50 ms) %s" % (args.runs, lst, "OK" if lst < 50 else "OVER"))
        print("log line to SSE:    median %.1f ms (target < 250 ms) %s" % (sse, "OK" if sse < 250 else "OVER"))
    finally:
        subprocess.run([sw, "dashboard", "kill"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
