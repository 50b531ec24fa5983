"""Where a plain select list's time goes when a distributed table is scored (issue 18): one shard
(pinned to core 0 with taskset), the coordinator receiving every row. Per-row costs, best of
--repeat, for:

  shard: scored            SELECT id, flock.predict(...) FROM d on the shard itself (batched)
  shard: gated             the same under the one-time pin check the shards' queries carry
  fdw: rows only           postgres_fdw pulling every column, nothing scored
  fdw: pull and score      the query with flock.distribute_predictions off: scored here
  dblink_get_result        reading a finished result of (id, prediction) through dblink alone
  on_shards                flock.on_shards returning (id, prediction): dblink plus a PL/pgSQL copy
  planned on the shards    the query as written, rewritten by the planner (_send_to_shards +
                           dblink_get_result)

Every query is wrapped in count() over an OFFSET 0 subquery, so no client fetch is measured.

  FLOCK_PG_BIN=... /usr/bin/python3 bench/distributed/transport.py --rows 100000
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "tests", "pg"))
sys.path.insert(0, HERE)

import psycopg2  # noqa: E402

from multinode import MultiNode, conninfo  # noqa: E402
from run import ARRAY, COLUMNS, load, pin_to_core  # noqa: E402,F401

DB = "flock_transport"


def best_of(cur, sql, repeat, before=None, after=None):
    best = None
    for _ in range(repeat + 1):  # the first run warms connections and compiled models
        if before:
            before()
        t = time.perf_counter()
        cur.execute(sql)
        cur.fetchall()
        elapsed = time.perf_counter() - t
        if after:
            after()
        best = elapsed if best is None else min(best, elapsed)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--models", default=os.path.join(REPO, "build", "models"))
    args = ap.parse_args()
    mn = MultiNode(1).start()
    try:
        shard = mn.shards[0]
        pin_to_core(shard, 0)
        for n in mn.nodes:
            n.psql(f"CREATE DATABASE {DB}")
        c = psycopg2.connect(conninfo(mn.coordinator, DB))
        c.autocommit = True
        cur = c.cursor()
        cur.execute("CREATE EXTENSION flock; CREATE EXTENSION postgres_fdw; CREATE EXTENSION dblink")
        cur.execute("CALL flock.add_shard('shard1', %s, %s, %s, %s)",
                    (shard.sockdir, shard.port, DB, conninfo(mn.coordinator, DB)))
        cur.execute("SELECT flock.create_distributed_table('d', %s, 'id')", (COLUMNS,))
        values = ", ".join(f"(((g * {7 + i}) % 1000) / 5000.0 - 0.1)::real" for i in range(10))
        cur.execute(f"INSERT INTO d SELECT g, {values} FROM generate_series(1, {args.rows}) g")
        with open(os.path.join(args.models, "diabetes_gb.onnx"), "rb") as f:
            cur.execute("SELECT flock.register_model('gb', %s)", (f.read(),))
        cur.execute("SELECT flock.wait_for_shards('gb')")
        cur.execute("SELECT flock.pin('gb')::text")
        pin = cur.fetchone()[0]
        s = psycopg2.connect(conninfo(shard, DB))
        s.autocommit = True
        scur = s.cursor()
        scur.execute("VACUUM ANALYZE d")
        scored = f"SELECT id, flock.predict_pinned('{pin}'::flock.pinned, d) AS p FROM d"
        gated = f"SELECT q.* FROM ({scored}) q WHERE (SELECT flock.require_pinned('{pin}'))"
        dsn = conninfo(shard, DB)
        cur.execute("SELECT dblink_connect('bench', %s)", (dsn,))

        def send():
            cur.execute("SELECT dblink_send_query('bench', %s)", (scored,))
            time.sleep(0.2 + args.rows / 1e6)  # the shard finishes before the timed read

        def drain():
            cur.execute("SELECT * FROM dblink_get_result('bench') AS done(x text)")
            cur.fetchall()

        count = "SELECT count(p) FROM ({}) q"
        cases = [
            ("shard: scored", scur, count.format(scored + " OFFSET 0"), None, None),
            ("shard: gated", scur, count.format(gated + " OFFSET 0"), None, None),
            ("fdw: rows only", cur, "SELECT count(*) FROM (SELECT * FROM d OFFSET 0) q", None, None),
            ("fdw: pull and score", cur, "SET flock.distribute_predictions = off", None, None),
            ("dblink_get_result", cur, "SELECT count(p) FROM dblink_get_result('bench') AS r(id int, p float8)",
             send, drain),
            ("on_shards", cur, "SELECT count(p) FROM flock.on_shards('d', 'SELECT id, flock.predict(%1$s, d) p "
                               "FROM d', 'gb') AS r(id int, p float8)", None, None),
            ("planned on the shards", cur, "RESET flock.distribute_predictions", None, None),
        ]
        as_written = count.format("SELECT id, flock.predict('gb', d) AS p FROM d OFFSET 0")
        print(f"rows: {args.rows}  best of {args.repeat}  shard pinned to core 0  cores: {os.cpu_count()}")
        print(f"load average before: {load()}")
        for name, cu, sql, before, after in cases:
            if sql.startswith(("SET", "RESET")):
                cu.execute(sql)
                sql = as_written
            t = best_of(cu, sql, args.repeat, before, after)
            print(f"  {name:24s} {t * 1000:8.1f} ms  {t / args.rows * 1e6:6.2f} us/row")
        print(f"load average after: {load()}")
    finally:
        mn.stop()


if __name__ == "__main__":
    main()
