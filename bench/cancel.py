#!/usr/bin/python3
"""Cancel latency of model scoring (issue 11): how long past statement_timeout, and past a
pg_cancel_backend() request, a 1M-row score of a 500-tree XGBoost model and of a 28-1024-1024-1 MLP
keeps running, at flock.batch_size 256 and at the cap (flock.batch_size at its maximum, so the
batch is as large as flock.batch_memory allows). Goal: under 100 ms. Also what polling for the
interrupt costs a model run (flock_bench_cancel_poll: no callback vs a callback that never fires)
and, given --baseline-runner, the Gemm row chunks' cost against an earlier build's flock_bench_nn.

    /usr/bin/python3 bench/cancel.py --pg-bin /opt/pg-x/lib/postgresql/15/bin \\
        --poll-runner build/bench/flock_bench_cancel_poll \\
        [--nn-runner build/bench/flock_bench_nn --baseline-runner /work/main/build/bench/flock_bench_nn]

The extension must be installed in the PostgreSQL of --pg-bin. Every figure is a median of --runs
runs taken in this invocation; on a busy machine the latencies include waiting for a CPU."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOAL_MS = 100.0
HUGE_BATCH = 1 << 20


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg-bin", default=os.environ.get("FLOCK_PG_BIN", "/usr/lib/postgresql/15/bin"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--timeout-ms", type=int, default=1000)
    ap.add_argument("--poll-runner", help="flock_bench_cancel_poll (poll overhead)")
    ap.add_argument("--nn-runner", help="this build's flock_bench_nn (with --baseline-runner)")
    ap.add_argument("--baseline-runner", help="an earlier build's flock_bench_nn, for the Gemm chunks' cost")
    args = ap.parse_args()

    os.environ["FLOCK_PG_BIN"] = args.pg_bin
    sys.path[:0] = [os.path.join(REPO, "tests"), os.path.join(REPO, "tests", "pg")]
    import psycopg2
    from cancel_models import mlp, score_query, xgboost_trees
    from pgcluster import Cluster

    work = tempfile.mkdtemp(prefix="flock-cancel-bench-")
    models = {"trees": xgboost_trees(), "mlp": mlp()}
    paths = {}
    for name, data in models.items():
        paths[name] = os.path.join(work, name + (".json" if name == "trees" else ".onnx"))
        with open(paths[name], "wb") as f:
            f.write(data)

    cluster = Cluster(name="flock-cancel-bench").start()
    try:
        def connect():
            c = psycopg2.connect(cluster.dsn("postgres"))
            c.autocommit = True
            return c

        admin = connect()
        with admin.cursor() as cur:
            cur.execute("CREATE EXTENSION flock")
            for name, data in models.items():
                cur.execute("SELECT flock.register_model(%s, %s)", (name, data))

        def batch_rows(conn, model):
            with conn.cursor() as cur:
                cur.execute("EXPLAIN (FORMAT JSON) " + score_query(model, 10))
                plan = cur.fetchone()[0][0]["Plan"]
            stack = [plan]
            while stack:
                p = stack.pop()
                if p.get("Custom Plan Provider") == "FlockBatchScore":
                    return p["Batch Size"]
                stack.extend(p.get("Plans", []))
            raise SystemExit("the batch node is not in the plan")

        def timeout_latency(conn, sql):
            with conn.cursor() as cur:
                cur.execute(f"SET statement_timeout = {args.timeout_ms}")
                start = time.monotonic()
                try:
                    cur.execute(sql)
                    raise SystemExit("the query finished before statement_timeout: use more --rows")
                except psycopg2.errors.QueryCanceled:
                    took = time.monotonic() - start
                cur.execute("SET statement_timeout = 0")
            return (took - args.timeout_ms / 1000) * 1000

        def cancel_latency(conn, sql):
            other = connect()
            pid = conn.get_backend_pid()
            done = {}

            def run():
                try:
                    with conn.cursor() as cur:
                        cur.execute(sql)
                except psycopg2.errors.QueryCanceled:
                    done["end"] = time.monotonic()

            t = threading.Thread(target=run)
            t.start()
            time.sleep(args.timeout_ms / 1000)
            asked = time.monotonic()
            with other.cursor() as cur:
                cur.execute("SELECT pg_cancel_backend(%s)", (pid,))
            t.join()
            other.close()
            if "end" not in done:
                raise SystemExit("the query was not cancelled")
            return (done["end"] - asked) * 1000

        print(f"Cancel latency, {args.rows:,} rows, median of {args.runs} runs (goal: < {GOAL_MS:.0f} ms)")
        print(f"{'model':6} {'batch_size':>10} {'rows/batch':>10} {'timeout: median':>16} {'max':>8} "
              f"{'cancel: median':>15} {'max':>8}  verdict")
        cap_rows = {}
        for model in ("trees", "mlp"):
            for size in (256, HUGE_BATCH):
                conn = connect()
                with conn.cursor() as cur:
                    cur.execute(f"SET flock.batch_size = {size}")
                rows = batch_rows(conn, model)
                if size == HUGE_BATCH:
                    cap_rows[model] = rows
                sql = score_query(model, args.rows)
                t = [timeout_latency(conn, sql) for _ in range(args.runs)]
                c = [cancel_latency(conn, sql) for _ in range(args.runs)]
                conn.close()
                ok = statistics.median(t) < GOAL_MS and statistics.median(c) < GOAL_MS
                label = str(size) if size != HUGE_BATCH else "cap"
                print(f"{model:6} {label:>10} {rows:>10} {statistics.median(t):>13.1f} ms {max(t):>5.0f} ms "
                      f"{statistics.median(c):>12.1f} ms {max(c):>5.0f} ms  {'ok' if ok else 'MISSED'}",
                      flush=True)
        admin.close()
    finally:
        cluster.stop()

    if args.poll_runner:
        print("\nPoll overhead: a model run with no interrupt callback vs one that never fires")
        for model in ("trees", "mlp"):
            for rows in (256, cap_rows[model]):
                out = subprocess.run([args.poll_runner, paths[model], "--batch", str(rows), "--rounds",
                                      str(args.runs), "--min-time", "0.3"], check=True, capture_output=True, text=True)
                r = json.loads(out.stdout)
                print(f"  {model:6} batch {rows:>7}: {r['ns_per_batch_no_callback'] / 1e6:9.2f} ms without, "
                      f"{r['ns_per_batch_polling'] / 1e6:9.2f} ms polling ({r['polls_per_run']} polls): "
                      f"ratio {r['ratio']:.3f}", flush=True)

    if args.baseline_runner and args.nn_runner:
        print("\nMLP against an earlier build (Gemm cut into row chunks here), flock_bench_nn, "
              f"median of {args.runs} alternating runs")
        for rows in (256, cap_rows["mlp"]):
            times = {"baseline": [], "this": []}
            for _ in range(args.runs):
                for key, runner in (("baseline", args.baseline_runner), ("this", args.nn_runner)):
                    out = subprocess.run([runner, paths["mlp"], "--batch", str(rows), "--min-time", "0.5"],
                                         check=True, capture_output=True, text=True)
                    times[key].append(json.loads(out.stdout)["ns_per_batch"])
            b, t = statistics.median(times["baseline"]), statistics.median(times["this"])
            print(f"  batch {rows:>7}: baseline {b / 1e6:9.2f} ms, this build {t / 1e6:9.2f} ms: ratio {t / b:.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
