"""flock.explain in the database, batched (FlockBatchScore: one core explain call per batch) vs one
call per row (flock.batching = off), measured in the same run on a private cluster.

    FLOCK_PG_BIN=/opt/pg-NAME/lib/postgresql/15/bin /usr/bin/python3 bench/explain/indb_batched.py \\
        [--rows 5000] [--trees 100] [--depth 6] [--rounds 3]

The model: an XGBoost regressor (--trees trees of depth --depth, 10 synthetic features, seed 0),
registered in the cluster. The query explains every row of a table of --rows rows and sums one
contribution, so that no result travels to the client:
    SELECT sum((flock.explain('m', t)->>'f0')::float8) FROM t
It prints the medians of --rounds runs, rows/s and the ratio batched / per row, and checks that
both give the same sum. Parallel workers and JIT off.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))

import numpy as np  # noqa: E402
import psycopg2  # noqa: E402
import xgboost as xgb  # noqa: E402

from pgcluster import Cluster  # noqa: E402

FEATURES = 10
QUERY = "SELECT sum((flock.explain('m', t)->>'f0')::float8) FROM t"


def model_bytes(trees, depth):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, FEATURES)).astype(np.float32)
    y = 2 * X[:, 0] + np.sin(3 * X[:, 1]) + X[:, 2] * X[:, 3] + rng.standard_normal(len(X)) * 0.1
    params = {"objective": "reg:squarederror", "max_depth": depth, "eta": 0.1, "nthread": 1, "seed": 0}
    booster = xgb.train(params, xgb.DMatrix(X, label=y, feature_names=[f"f{j}" for j in range(FEATURES)]), trees)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.json")
        booster.save_model(path)
        with open(path, "rb") as f:
            return f.read()


def timed(cur, batching, rounds):
    cur.execute(f"SET flock.batching = {batching}")
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        cur.execute(QUERY)
        result = cur.fetchone()[0]
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cluster = Cluster().start()
    try:
        conn = psycopg2.connect(cluster.dsn())
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("CREATE EXTENSION IF NOT EXISTS flock")
        cur.execute("SET max_parallel_workers_per_gather = 0; SET jit = off")
        cur.execute("SELECT flock.register_model('m', %s, 'xgboost')", (model_bytes(args.trees, args.depth),))
        cols = ", ".join(f"(random() * 4 - 2)::real AS f{j}" for j in range(FEATURES))
        cur.execute("SELECT setseed(0)")
        cur.execute(f"CREATE TABLE t AS SELECT {cols} FROM generate_series(1, %s)", (args.rows,))
        cur.execute("ANALYZE t")
        cur.execute("SET flock.batching = on")
        cur.execute("EXPLAIN (COSTS OFF) " + QUERY)
        plan = "\n".join(r[0] for r in cur.fetchall())
        assert "FlockBatchScore" in plan, plan
        timed(cur, "on", 1)  # warm the model cache
        per_row, want = timed(cur, "off", args.rounds)
        batched, got = timed(cur, "on", args.rounds)
        assert abs(got - want) <= 1e-9 * max(abs(want), 1.0), (got, want)
        print(f"{args.rows} rows, {args.trees} trees of depth {args.depth}, {FEATURES} features, "
              f"medians of {args.rounds}")
        print(f"per row (flock.batching = off): {per_row:8.3f} s  {args.rows / per_row:10.0f} rows/s")
        print(f"batched (FlockBatchScore):      {batched:8.3f} s  {args.rows / batched:10.0f} rows/s")
        print(f"batched / per row: {per_row / batched:.2f}x")
        conn.close()
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
