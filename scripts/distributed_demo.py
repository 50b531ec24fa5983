"""The README's "Scoring on shards" example, run for real on a coordinator and two shard clusters
started here (tests/pg/multinode.py) and stopped at the end:

  FLOCK_PG_BIN=/usr/lib/postgresql/15/bin /usr/bin/python3 scripts/distributed_demo.py

Needs flock installed in that PostgreSQL, with postgres_fdw and dblink (contrib), and the Python
onnx package (for the demo's small model)."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "tests", "pg"))

import psycopg2  # noqa: E402

from multinode import MultiNode, conninfo  # noqa: E402
from onnx_builders import linear_regressor  # noqa: E402


def show(cur, sql, args=None):
    print("=> " + " ".join(sql.split()))
    cur.execute(sql, args)
    if cur.description:
        for row in cur.fetchall():
            print("   " + " | ".join(str(v) for v in row))


def main():
    mn = MultiNode(2).start()
    try:
        for n in mn.nodes:
            n.psql("CREATE DATABASE sales")
        c = psycopg2.connect(conninfo(mn.coordinator, "sales"))
        c.autocommit = True
        cur = c.cursor()
        show(cur, "CREATE EXTENSION flock; CREATE EXTENSION postgres_fdw; CREATE EXTENSION dblink")
        for s in mn.shards:
            show(cur, "CALL flock.add_shard(%s, %s, %s, 'sales', %s)",
                 (s.settings["cluster_name"], s.sockdir, s.port, conninfo(mn.coordinator, "sales")))
        show(cur, "SELECT flock.create_distributed_table('customers', "
                  "'id int, region int, age real, income real, tenure real', 'id')")
        show(cur, "INSERT INTO customers SELECT g, g % 4, 20 + g % 50, 1000 * (g % 90), g % 60 "
                  "FROM generate_series(1, 100000) g")
        model = linear_regressor([0.01, 0.00001, -0.02], 0.1, ["age", "income", "tenure"])
        show(cur, "SELECT flock.register_model('churn', %s)", (model,))
        show(cur, "SELECT flock.wait_for_shards('churn')")
        show(cur, "SELECT count(*) FROM (SELECT id FROM customers "
                  "WHERE flock.predict('churn', ARRAY[age, income, tenure]::float4[]) > 0.8 OFFSET 0) s")
        show(cur, "EXPLAIN (VERBOSE, COSTS OFF) SELECT id FROM customers "
                  "WHERE flock.predict('churn', ARRAY[age, income, tenure]::float4[]) > 0.8")
        q = "SELECT region, count(*), sum(flock.predict('churn', c)) FROM customers c GROUP BY region ORDER BY region"
        show(cur, q.replace(" ORDER BY region", ""))
        show(cur, "EXPLAIN (COSTS OFF) " + q.replace(" ORDER BY region", ""))
        q = "SELECT id, flock.predict('churn', c) AS p FROM customers c WHERE region = 2 ORDER BY p DESC, id LIMIT 10"
        show(cur, q)
        show(cur, "EXPLAIN (VERBOSE, COSTS OFF) " + q)
        show(cur, "CREATE TABLE churn_now AS SELECT id, flock.predict('churn', c) AS p FROM customers c")
        show(cur, "SELECT count(*), round(avg(p)::numeric, 6) FROM churn_now")
        show(cur, """SELECT sum(n), sum(s) / sum(n) AS mean_score
                     FROM flock.on_shards('customers', 'SELECT count(*) n, sum(flock.predict(%1$s, c)::numeric) s
                                                        FROM customers c', 'churn') AS r(n bigint, s numeric)""")
        show(cur, """CREATE TABLE churn_scores AS
                     SELECT * FROM flock.on_shards('customers', 'SELECT id, flock.predict(%1$s, c) AS p FROM customers c',
                                                   'churn') AS r(id int, p float8)""")
        show(cur, "SELECT count(*), round(avg(p)::numeric, 6) FROM churn_scores")
        show(cur, "SELECT * FROM flock.distribution_status()")
        c.close()
    finally:
        mn.stop()


if __name__ == "__main__":
    main()
