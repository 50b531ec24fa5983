"""What acting for the effective role and re-running stored SQL as its author cost, measured in the
same run on a private cluster.

    FLOCK_PG_BIN=/usr/lib/postgresql/15/bin /usr/bin/python3 bench/identity_bench.py [--rows 200000]

1. Entry point: `flock.set_alias(...)` that changes nothing (its body returns early), through the C
   entry point that notes current_user, vs the body `flock._set_alias` called directly (as the
   superuser), --calls times each; ratio of medians.
2. Source check: `flock._source_hash` (the query run as its author in a security-restricted
   operation, hashed from a cursor) vs what verify_dataset did before (the query copied into a
   temp table by flock._run_into_temp, hashed by flock._table_hash), over --rows rows; same hash
   asserted; ratio of medians.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import psycopg2  # noqa: E402

from onnx_builders import linear_regressor  # noqa: E402
from pgcluster import Cluster  # noqa: E402


def timed(cur, sql, args=None):
    start = time.perf_counter()
    cur.execute(sql, args)
    result = cur.fetchall()
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200000)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    cluster = Cluster("flock-identity-bench").start()
    try:
        conn = psycopg2.connect(cluster.dsn())
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("CREATE EXTENSION flock")
        cur.execute("SELECT flock.register_model('m', %s)", (linear_regressor([1.0], 0.0, ["x"]),))
        cur.execute("SELECT flock.set_alias('m', 'a', 1)")
        entry, body = [], []
        for _ in range(opts.rounds):
            entry.append(timed_do(cur, "PERFORM flock.set_alias('m', 'a', 1)", opts.calls))
            body.append(timed_do(cur, "PERFORM flock._set_alias('m', 'a', 1, NULL)", opts.calls))
        e, b = statistics.median(entry), statistics.median(body)
        print(f"entry point: {e / opts.calls * 1e6:.1f} us/call, body alone {b / opts.calls * 1e6:.1f} us/call, "
              f"ratio {e / b:.3f}")

        cur.execute(f"""CREATE TABLE src AS SELECT g AS id, g * 0.5 AS x, md5(g::text) AS label,
                        now() - g * interval '1 s' AS at FROM generate_series(1, {opts.rows}) g""")
        cur.execute("SELECT flock.snapshot_dataset('ds', 'SELECT * FROM src')")
        cur.execute("SELECT content_hash FROM flock.datasets WHERE name = 'ds'")
        recorded = cur.fetchone()[0]
        new, old = [], []
        for _ in range(opts.rounds):
            t, r = timed(cur, "SELECT content_hash FROM flock._source_hash('ds', 1)")
            assert r[0][0] == recorded
            new.append(t)
            cur.execute("BEGIN")
            t1, r = timed(cur, "SELECT tmp FROM flock._run_into_temp('SELECT * FROM src', current_setting('search_path'))")
            t2, r = timed(cur, "SELECT content_hash FROM flock._table_hash(%s::regclass)", (r[0][0],))
            cur.execute("ROLLBACK")
            assert r[0][0] == recorded
            old.append(t1 + t2)
        n, o = statistics.median(new), statistics.median(old)
        print(f"source check over {opts.rows} rows: as author from a cursor {n * 1e3:.0f} ms, "
              f"temp table copy {o * 1e3:.0f} ms, ratio {n / o:.3f}")
    finally:
        cluster.stop()


def timed_do(cur, statement, calls):
    start = time.perf_counter()
    cur.execute(f"DO $$ BEGIN FOR i IN 1..{calls} LOOP {statement}; END LOOP; END $$")
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
