"""What a prediction call costs the executor per row, in units of a float8 operator: the constants
of flock._prediction_support (pg/src/prediction_cost.cpp). Same run, private cluster:

    FLOCK_PG_BIN=/opt/pg-NAME/lib/postgresql/15/bin /usr/bin/python3 bench/prediction_cost.py [--rows 400000]

Per row, medians of --rounds runs, JIT and parallel workers off, minus `sum(f0)` over the same
table: ten float8 additions (one operator = a tenth), a batched call of a one-split tree (cost 2)
and of 32 trees of depth 5 (cost 192, optimize::cost units).
"""
import argparse
import os
import random
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

import psycopg2  # noqa: E402

from optimizer_inline import perfect_trees  # noqa: E402
from pgcluster import Cluster  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=400000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    cluster = Cluster().start()
    try:
        conn = psycopg2.connect(cluster.dsn())
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("CREATE EXTENSION flock")
        cur.execute("CREATE TABLE t AS SELECT i AS id, random() AS f0, random() AS f1, random() AS f2, "
                    f"random() AS f3 FROM generate_series(1, {args.rows}) i")
        cur.execute("VACUUM ANALYZE t")
        cur.execute("SET jit = off")
        cur.execute("SET max_parallel_workers_per_gather = 0")
        cur.execute("SET flock.optimizer = off")  # batched calls, not inlined ones
        for name, (n, depth) in {"stump": (1, 1), "big": (32, 5)}.items():
            cur.execute("SELECT flock.register_model(%s, %s, 'onnx')", (name, perfect_trees(random.Random(1), n, depth)))

        def per_row(sql):
            times = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                cur.execute(sql)
                cur.fetchall()
                times.append(time.perf_counter() - start)
            return statistics.median(times) / args.rows * 1e9

        base = per_row("SELECT sum(f0) FROM t")
        op = (per_row("SELECT sum(f0 + f1 + f2 + f3 + f0 + f1 + f2 + f3 + f0 + f1 + f0) FROM t") - base) / 10
        stump = per_row("SELECT sum(flock.predict('stump', t)) FROM t") - base
        big = per_row("SELECT sum(flock.predict('big', t)) FROM t") - base
        print(f"{args.rows} rows: a float8 addition {op:.1f} ns; batched call, one-split tree (cost 2) {stump:.1f} ns "
              f"= {stump / op:.1f} operators; 32 trees of depth 5 (cost 192) {big:.1f} ns = {big / op:.1f} operators; "
              f"per cost unit {(big - stump) / 190:.2f} ns = {(big - stump) / 190 / op:.3f} operators")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
