#!/usr/bin/python3
"""Parallel scaling of batched scoring: `SELECT sum(flock.predict('m', t)) FROM higgs t` over a
1M-row x 28-feature table, one process scoring against two.

    /usr/bin/python3 bench/parallel/scaling.py --features FILE.f32 --model NAME=FILE ... [--reps 3]

FILE.f32: the rows as float32, row-major, 28 per row (bench/indb's cached feature file, e.g.
/tmp/indb/higgs-1000000-20240917-v1.f32). Each --model is registered with flock.register_model.
Starts a private PostgreSQL (tests/pgcluster.py, FLOCK_PG_BIN), loads the table, prewarms it, then
per model and repetition runs, interleaved:

  serial        max_parallel_workers_per_gather 0 (the backend alone)
  leader+1      max_parallel_workers_per_gather 1, parallel_leader_participation on (2 processes)
  1 worker      force_parallel_mode on: the whole plan in one worker, the leader waiting
  2 workers     max_parallel_workers_per_gather 2, leader not participating (2 processes)

With --compare-sharing every parallel configuration also runs with flock.share_models_with_workers
off (each worker reads and compiles the model itself), in the same repetitions. Prints, per
configuration, the median wall time, rows/s, the CPU seconds of every process that
worked (backend + workers), and the scaling: serial wall / parallel wall. A worker's own rate
(rows per CPU second of the `1 worker` run) against the serial backend's says what two idle cores
would give. So does the model printed last: on idle cores a worker starts L seconds late (its
first row's CPU: launch, resolution, compile, first batch) and then scores at the serial rate r
(rows per CPU second), so N rows take N/r serially, (N/r + L)/2 with the leader and one worker
(scaling 2 / (1 + L r / N)) and L + N/(2r) with two workers alone (2 / (1 + 2 L r / N)). A
second line uses the rate a worker reached in the `1 worker` run instead, w = N / (its CPU - L), for
the workers: (N + w L) / (r + w) with the leader, L + N/(2w) without.
Every configuration's sum must equal the serial one (the models are classifiers:
flock.predict returns labels, so the sums are exact); a mismatch exits 1. Prints `uptime` before
and after: on a shared machine wall-clock scaling measures the scheduler too.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "bench", "indb"))
sys.path.insert(0, os.path.join(REPO, "tests"))

import data  # noqa: E402
from pgcluster import PG_BIN, Cluster  # noqa: E402

TABLE = "higgs"
# name: (max_parallel_workers_per_gather, parallel_leader_participation, force_parallel_mode)
CONFIGS = {
    "serial": ("0", "on", "off"),
    "leader+1": ("1", "on", "off"),
    "1 worker": ("1", "off", "on"),  # the whole plan in one worker (Single Copy)
    "2 workers": ("2", "off", "off"),
}
_TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def uptime():
    return subprocess.run(["uptime"], stdout=subprocess.PIPE, text=True).stdout.strip()


def thread_cpu(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) * 1e-9


def reaped_children_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / _TICK


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", required=True)
    ap.add_argument("--model", action="append", required=True, help="NAME=FILE")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rows", type=int, default=1000000)
    ap.add_argument("--compare-sharing", action="store_true")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of: " + ", ".join(CONFIGS))
    args = ap.parse_args()
    configs = []
    for name in (c.strip() for c in args.configs.split(",")):
        configs.append((name, "on"))
        if args.compare_sharing and name != "serial":
            configs.append((name, "off"))
    ncols = len(data.FEATURES)
    X = np.fromfile(args.features, dtype=np.float32, count=args.rows * ncols).reshape(args.rows, ncols)

    c = Cluster("flock-scaling")
    c.start()
    for sql in ("ALTER SYSTEM SET shared_buffers = '512MB'", "ALTER SYSTEM SET jit = off",
                "ALTER SYSTEM SET max_parallel_workers = 8"):
        c.psql(sql)
    c._run([f"{PG_BIN}/pg_ctl", "-D", c.datadir, "-l", c.logfile, "-m", "fast", "-w", "-t", "60", "restart"])
    with open(os.path.join(c.datadir, "postmaster.pid")) as f:
        postmaster = int(f.readline())
    conn = psycopg2.connect(c.dsn())
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE EXTENSION IF NOT EXISTS flock CASCADE")
    cols_ddl = ", ".join(f"{col} real" for col in data.FEATURES)
    cur.execute(f"CREATE TABLE {TABLE} (id bigint, {cols_ddl}) WITH (autovacuum_enabled = off)")
    cur.copy_expert(f"COPY {TABLE} FROM STDIN (FORMAT binary)", data.table_copy_stream(X))
    cur.execute(f"VACUUM (FREEZE, ANALYZE) {TABLE}")
    cur.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    cur.execute(f"SELECT pg_prewarm('{TABLE}')")
    # Plans choose the worker count from the GUCs alone.
    cur.execute(f"ALTER TABLE {TABLE} SET (parallel_workers = 2)")
    for sql in ("SET parallel_setup_cost = 0", "SET parallel_tuple_cost = 0", "SET min_parallel_table_scan_size = 0"):
        cur.execute(sql)
    cur.execute("SELECT pg_backend_pid()")
    backend = cur.fetchone()[0]
    models = []
    for spec in args.model:
        name, path = spec.split("=", 1)
        with open(path, "rb") as f:
            cur.execute("SELECT flock.register_model(%s, %s, 'auto', %s)", (name, psycopg2.Binary(f.read()), name))
        models.append(name)

    def settings(config):
        workers, leader, force = CONFIGS[config[0]]
        cur.execute(f"SET max_parallel_workers_per_gather = {workers}")
        cur.execute(f"SET parallel_leader_participation = {leader}")
        cur.execute(f"SET force_parallel_mode = {force}")
        cur.execute(f"SET flock.share_models_with_workers = {config[1]}")
        return workers, force

    def run(name, config):
        settings(config)
        w0, c0 = reaped_children_cpu(postmaster), thread_cpu(backend)
        t0 = time.perf_counter()
        cur.execute(f"SELECT sum(flock.predict('{name}', t)) FROM {TABLE} t")
        total = cur.fetchone()[0]
        wall = time.perf_counter() - t0
        cpu = thread_cpu(backend) - c0
        time.sleep(0.05)  # let the postmaster reap the workers
        return wall, cpu + reaped_children_cpu(postmaster) - w0, total

    print(f"# {uptime()}")
    print(f"rows {args.rows}, reps {args.reps} (medians), jit off, table prewarmed, "
          f"parallel_setup_cost = parallel_tuple_cost = 0")
    failed = False
    models_lines = ["\nmodelled on idle cores (L = a worker's first-row CPU, r = serial rows per CPU second):"]
    for name in models:
        for config in configs:  # the plan shape, checked once
            workers, force = settings(config)
            cur.execute(f"EXPLAIN (COSTS OFF) SELECT sum(flock.predict('{name}', t)) FROM {TABLE} t")
            plan = "\n".join(r[0] for r in cur.fetchall())
            planned = "1" if force == "on" else workers
            shared = "Parallel Custom Scan (FlockBatchScore)" in plan
            if ("FlockBatchScore" not in plan or (planned != "0" and f"Workers Planned: {planned}" not in plan)
                    or shared != (planned != "0" and config[1] == "on")):
                log(f"{name} {config}: unexpected plan:\n{plan}")
                failed = True
        run(name, ("serial", "on"))  # warm this backend's model cache, as a session scoring again would be
        res = {config: [] for config in configs}
        for _ in range(args.reps):
            for config in configs:
                res[config].append(run(name, config))
        # A worker's first batch: one row through a worker alone (wall, median; CPU of the leader and
        # the worker, mean: the worker's is counted in clock ticks), shared and not, and without
        # the model (the worker's launch alone).
        first = {}
        for share, sql in (("on", f"SELECT flock.predict('{name}', t) FROM {TABLE} t LIMIT 1"),
                           ("off", f"SELECT flock.predict('{name}', t) FROM {TABLE} t LIMIT 1"),
                           ("launch", f"SELECT id FROM {TABLE} t LIMIT 1")):
            settings(("1 worker", "off" if share == "off" else "on"))
            times, cpus = [], []
            for _ in range(max(args.reps, 8)):
                w0, c0 = reaped_children_cpu(postmaster), thread_cpu(backend)
                t0 = time.perf_counter()
                cur.execute(sql)
                cur.fetchall()
                times.append((time.perf_counter() - t0) * 1e3)
                cpu = thread_cpu(backend) - c0
                time.sleep(0.05)
                cpus.append((cpu + reaped_children_cpu(postmaster) - w0) * 1e3)
            first[share] = (statistics.median(times), statistics.mean(cpus))
        base = statistics.median(r[0] for r in res[configs[0]])
        r_serial = args.rows / statistics.median(r[1] for r in res[configs[0]])
        serial_time = args.rows / r_serial
        for share, label in (("on", "shared"), ("off", "own")):
            lag = first[share][1] / 1e3
            x = lag * r_serial / args.rows
            models_lines.append(f"  {name:<10} {label:<6} L {first[share][1]:5.0f} ms, r {r_serial:11,.0f}: "
                                f"leader+1 {2 / (1 + x):.2f}x, 2 workers {2 / (1 + 2 * x):.2f}x")
            if ("1 worker", share) in res:
                w = args.rows / max(statistics.median(r[1] for r in res[("1 worker", share)]) - lag, 1e-9)
                models_lines.append(f"  {'':<17} worker rate w {w:11,.0f}: leader+1 "
                                    f"{serial_time / ((args.rows + w * lag) / (r_serial + w)):.2f}x, 2 workers "
                                    f"{serial_time / (lag + args.rows / (2 * w)):.2f}x")
        expected = res[configs[0]][0][2]
        print(f"\n{name}  ({uptime()})")
        print("first row through one worker, wall / CPU ms: "
              f"{first['on'][0]:.1f} / {first['on'][1]:.0f} with the leader's model, "
              f"{first['off'][0]:.1f} / {first['off'][1]:.0f} reading and compiling its own; "
              f"the worker's launch alone (no model) {first['launch'][0]:.1f} / {first['launch'][1]:.0f}")
        print(f"{'config':<16} {'wall s':>8} {'rows/s':>12} {'CPU s':>7} {'rows/CPU s':>12} {'scaling':>8}")
        for config in configs:
            wall = statistics.median(r[0] for r in res[config])
            cpu = statistics.median(r[1] for r in res[config])
            label = config[0] if config[0] == "serial" else f"{config[0]} {'shared' if config[1] == 'on' else 'own'}"
            print(f"{label:<16} {wall:8.3f} {args.rows / wall:12,.0f} {cpu:7.3f} {args.rows / cpu:12,.0f} "
                  f"{base / wall:7.2f}x")
            for r in res[config]:
                if r[2] != expected:
                    log(f"{name} {config}: sum {r[2]} != {expected}")
                    failed = True
    print(f"\n# {uptime()}")
    for line in models_lines:
        print(line)
    conn.close()
    c.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
