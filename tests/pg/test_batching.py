"""Batched execution: the FlockBatchScore CustomScan gives exactly the per-row results, in every
query shape it takes over, and keeps memory flat."""
import threading

import psycopg2
import pytest

from onnx import TensorProto

from onnx_builders import linear_regressor, multi_input_linear, stump_classifier
from test_catalog import one, sqlstate

QUERIES = [
    "SELECT id, flock.predict('lin', t) FROM pts t ORDER BY id",
    "SELECT id FROM pts t WHERE flock.predict('lin', t) > 40 ORDER BY id",
    "SELECT id, flock.predict_proba('stump', ARRAY[a, b]::float4[]) FROM pts t ORDER BY flock.predict('lin', t), id LIMIT 50",
    "SELECT sum(flock.predict('lin', t)), count(*) FILTER (WHERE flock.predict('stump', ROW(a, b)) = 1) FROM pts t",
    "SELECT a::int % 7 AS g, avg(flock.predict('lin', t)) FROM pts t GROUP BY 1 ORDER BY 1",
    "SELECT id, flock.predict_label('stump', ROW(a, b)), flock.predict_tensor('lin', ARRAY[a, b]::float4[]) FROM pts t WHERE id % 3 = 0 ORDER BY id",
    "SELECT id, flock.predict('lin', t) FROM pts t WHERE id IN (SELECT id FROM pts WHERE id % 5 = 0) ORDER BY id",
    "SELECT s.id, (SELECT flock.predict('lin', t) FROM pts t WHERE t.id = s.id) FROM pts s WHERE s.id < 40 ORDER BY 1",
    "SELECT id, flock.predict('lin', ROW(a, b)) FROM (SELECT id, a, b FROM pts WHERE b IS NOT NULL OFFSET 0) t ORDER BY id",
    # The batch node returns only the columns the node above reads: grouping, partitioning and
    # ordering columns, aggregate arguments, filters, grouping sets.
    "SELECT b, a::int % 3 AS g, sum(flock.predict('lin', t)), max(id) FILTER (WHERE a > 20) FROM nulls_ok t GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 1, 2",
    "SELECT b, sum(flock.predict('lin', t)) FROM nulls_ok t GROUP BY GROUPING SETS ((b), ()) ORDER BY 1, 2",
    "SELECT sum(flock.predict('lin', t)), count(*) FROM nulls_ok t GROUP BY b, a::int % 3 ORDER BY 1, 2",
    "SELECT id, b, sum(flock.predict('lin', t)) OVER (), count(*) OVER () FROM nulls_ok t ORDER BY id",
    "SELECT DISTINCT b, flock.predict('stump', ROW(a, b)) FROM pts t ORDER BY 1, 2",
    # Inputs evaluated as expressions next to a whole row read from columns.
    "SELECT id, flock.predict_proba('stump', ARRAY[b, a]::float4[]), flock.predict('lin', t) FROM nulls_ok t ORDER BY id",
    "SELECT b, sum(flock.predict('lin', t)), max(flock.predict_proba('stump', ARRAY[b, a]::float4[])) FROM nulls_ok t GROUP BY b ORDER BY b",
]


@pytest.fixture(scope="module", autouse=True)
def data(cluster, dbname):
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT flock.register_model('lin', %s)", (linear_regressor([1.0, 10.0], 0.5, ["a", "b"]),))
        cur.execute("SELECT flock.register_model('stump', %s)", (stump_classifier(1, 2.0),))
        cur.execute("CREATE TABLE pts AS SELECT i AS id, (i % 50)::real AS a, (i % 7)::float8 AS b "
                    "FROM generate_series(1, 5000) i")
        cur.execute("UPDATE pts SET b = NULL WHERE id % 997 = 0")  # NULL features: NaN for the tree
        cur.execute("CREATE TABLE nulls_ok AS SELECT * FROM pts WHERE b IS NOT NULL")
        cur.execute("ANALYZE pts")
    conn.close()


def run(conn, sql, batching, batch_size=1024):
    with conn.cursor() as cur:
        cur.execute(f"SET flock.batching = {batching}; SET flock.batch_size = {batch_size}")
        cur.execute(sql)
        rows = cur.fetchall()
        cur.execute("RESET flock.batching; RESET flock.batch_size")
        return rows


def explain(conn, sql):
    with conn.cursor() as cur:
        cur.execute("EXPLAIN " + sql)
        return "\n".join(r[0] for r in cur.fetchall())


@pytest.mark.parametrize("sql", QUERIES)
def test_batched_equals_per_row(conn, sql):
    sql = sql.replace("FROM pts t", "FROM nulls_ok t") if "'lin', t" in sql and "WHERE" not in sql else sql
    try:
        per_row = run(conn, sql, "off")
    except psycopg2.Error as e:  # the linear model rejects NULL features: so must the batched plan
        with pytest.raises(psycopg2.Error) as batched:
            run(conn, sql, "on")
        assert batched.value.pgcode == e.pgcode
        return
    assert run(conn, sql, "on") == per_row
    assert run(conn, sql, "on", batch_size=7) == per_row


def test_explain_names_model_version_and_batch_size(conn):
    plan = explain(conn, "SELECT sum(flock.predict('lin', t)) FROM nulls_ok t")
    assert "FlockBatchScore" in plan and "Flock Model: lin@1 (predict)" in plan and "Batch Size: 256" in plan
    # The scan returns the table's rows as they are (no projection); the batch node reads them.
    plan = explain(conn, "VERBOSE SELECT b, sum(flock.predict('lin', t)) FROM nulls_ok t GROUP BY b")
    assert plan.split("Seq Scan on public.nulls_ok t")[1].split("\n")[1].strip() == "Output: id, a, b", plan
    plan = explain(conn, "SELECT id FROM nulls_ok t WHERE flock.predict('lin', t) > 1")
    assert "FlockBatchScore" in plan and "Filter" in plan
    with conn.cursor() as cur:
        cur.execute("SET flock.batching = off")
        try:
            cur.execute("EXPLAIN SELECT sum(flock.predict('lin', t)) FROM nulls_ok t")
            assert "FlockBatchScore" not in "\n".join(r[0] for r in cur.fetchall())
        finally:
            cur.execute("RESET flock.batching")


def test_batched_errors_are_the_per_row_errors(conn):
    err = sqlstate(conn, "SELECT sum(flock.predict('lin', ROW(a))) FROM nulls_ok t")
    assert err.pgcode == "42703"  # binds by name: ROW(a)'s column is f1
    err = sqlstate(conn, "SELECT sum(flock.predict('stump', ROW(a))) FROM nulls_ok t")
    assert err.pgcode == "22023"  # binds by order: one column for two features
    err = sqlstate(conn, "SELECT sum(flock.predict('nosuch', t)) FROM nulls_ok t")
    assert err.pgcode == "42704"
    err = sqlstate(conn, "SELECT flock.predict('lin', t) FROM pts t")  # NULL b, linear model
    assert err.pgcode == "22004"


def test_parallel_workers_run_the_batch_node(conn):
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE par AS SELECT i AS id, (i % 50)::real AS a, (i % 7)::float8 AS b "
                    "FROM generate_series(1, 300000) i")
        cur.execute("ANALYZE par")
        cur.execute("SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; "
                    "SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2")
        try:
            cur.execute("EXPLAIN (ANALYZE, COSTS OFF) SELECT sum(flock.predict('lin', t)) FROM par t")
            plan = "\n".join(r[0] for r in cur.fetchall())
            assert "Gather" in plan and "FlockBatchScore" in plan and "Workers Launched: 2" in plan
            cur.execute("SELECT sum(flock.predict('lin', t)) FROM par t")
            got = cur.fetchone()[0]
        finally:
            cur.execute("RESET ALL")
        cur.execute("SELECT sum(a + 10 * b + 0.5) FROM par")
        assert got == pytest.approx(cur.fetchone()[0], rel=1e-9)


def _anon_rss_kb(pid):
    # RssAnon: the backend's private memory (palloc, malloc). VmRSS would also count file pages and
    # shared buffers it merely touched, which grow with any large query, flock or not.
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    pytest.fail("no RssAnon")


def test_memory_stays_flat_over_millions_of_rows(conn):
    rows = 10_000_000
    scan = f"FROM (SELECT i::real AS a, 1::float8 AS b FROM generate_series(1, {rows}) i) t"
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        cur.execute("SELECT sum(flock.predict('lin', ARRAY[i, 1]::float4[])) FROM generate_series(1, 200000) i")
        before = _anon_rss_kb(pid)
        cur.execute(f"EXPLAIN SELECT sum(flock.predict('lin', t)) {scan}")
        assert "FlockBatchScore" in "\n".join(r[0] for r in cur.fetchall())
        # The peak while the query runs, sampled from another thread: memory freed at the end of the
        # query must not hide growth during it.
        peak = [before]
        done = threading.Event()

        def sample():
            while not done.wait(0.02):
                peak[0] = max(peak[0], _anon_rss_kb(pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            cur.execute(f"SELECT sum(flock.predict('lin', t)) {scan}")
            cur.fetchone()
        finally:
            done.set()
            sampler.join()
    grown = max(peak[0], _anon_rss_kb(pid)) - before
    assert grown < 40 * 1024, f"backend grew by {grown // 1024} MB over {rows} rows"


WIDE_QUERIES = [
    "SELECT sum(flock.predict('lin', w)) FROM wide w",
    "SELECT id, flock.predict('lin', w) FROM wide w ORDER BY id",
    "SELECT w, flock.predict('lin', w) FROM wide w ORDER BY id",
    "SELECT id FROM wide w WHERE flock.predict('lin', w) > 300 ORDER BY id",
    "SELECT note, avg(flock.predict('lin', w)) FROM wide w GROUP BY note ORDER BY note",
    # A prediction in WHERE and in an aggregate, a window or HAVING above the scan: one batch node
    # computes both (the upper node's calls move into the scan), and no row value is formed.
    "SELECT count(*), sum(flock.predict('lin', w)) FROM wide w WHERE flock.predict('lin', w) > 300",
    "SELECT note, count(*), avg(flock.predict('lin', w)) FROM wide w WHERE flock.predict('lin', w) > 300 "
    "GROUP BY note HAVING max(flock.predict('lin', w)) > 0 ORDER BY note",
    "SELECT id, sum(flock.predict('lin', w)) OVER () FROM wide w WHERE flock.predict('lin', w) > 400 ORDER BY id",
    "SELECT count(*) FILTER (WHERE flock.predict('lin', w) > 450), sum(flock.predict('lin', w) * 2) "
    "FROM wide w WHERE flock.predict('lin', w) > 300 AND id % 3 <> 0",
    "SELECT string_agg(id::text, ',' ORDER BY flock.predict('lin', w), id) FROM wide w WHERE flock.predict('lin', w) > 490",
    "SELECT sum(flock.predict('lin', ARRAY[a, b]::float4[])), count(*) FROM wide w WHERE flock.predict('lin', w) > 300",
]


@pytest.mark.parametrize("sql", WIDE_QUERIES)
def test_table_rows_read_from_columns(conn, sql):
    # A whole table row as input is read from the table's columns, not formed as a composite: the
    # columns here are in another order than the model's features, one is dropped, one is text.
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS wide AS SELECT i AS id, 'n' || (i % 3) AS note, "
                    "(i % 7)::float8 AS b, 0 AS gone, (i % 50)::real AS a FROM generate_series(1, 3000) i")
        cur.execute("ALTER TABLE wide DROP COLUMN IF EXISTS gone")
    per_row = run(conn, sql, "off")
    assert run(conn, sql, "on") == per_row
    assert run(conn, sql, "on", batch_size=7) == per_row
    with conn.cursor() as cur:
        cur.execute("EXPLAIN VERBOSE " + sql)
        plan = "\n".join(r[0] for r in cur.fetchall())
    assert "FlockBatchScore" in plan
    if not sql.startswith("SELECT w,"):  # the row itself is not formed when nothing else needs it
        assert "NULL::wide" in plan, plan


def test_prediction_in_where_and_above_scored_once_per_row(conn):
    # The aggregate reads the batch node's column for the qual's call: the same call, scored once.
    sql = "SELECT count(*), sum(flock.predict('lin', t)) FROM nulls_ok t WHERE flock.predict('lin', t) > 40"
    plan = explain(conn, "VERBOSE " + sql)
    assert "Output: count(*), sum((flock.predict('lin'::text, t.*)))" in plan, plan
    assert plan.count("Flock Model: lin@1 (predict)") == 1, plan
    assert "Flock Heap Pages: read directly" in plan, plan
    assert run(conn, sql, "on") == run(conn, sql, "off")


def test_prediction_in_where_and_above_fails_as_per_row(conn, connect_as):
    # Bad input (a NULL feature for the linear model) and a role without the model's use right: the
    # same SQLSTATE batched and per row, and with the right the superuser's rows.
    sql = "SELECT count(*), sum(flock.predict('lin', t)) FROM {} t WHERE flock.predict('lin', t) > 40"
    for batching in ("on", "off"):
        err = sqlstate(conn, f"SET flock.batching = {batching}; " + sql.format("pts"))
        assert err.pgcode == "22004", err
    with conn.cursor() as cur:
        cur.execute("RESET flock.batching")
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = 'batch_low'")
        if not cur.fetchone():
            cur.execute("CREATE ROLE batch_low LOGIN")
        cur.execute("GRANT SELECT ON nulls_ok TO batch_low")
    low = connect_as("batch_low")
    for batching in ("on", "off"):
        err = sqlstate(low, f"SET flock.batching = {batching}; " + sql.format("nulls_ok"))
        assert err.pgcode == "42501" and err.diag.message_hint, err
    with conn.cursor() as cur:
        cur.execute("SELECT flock.grant_model('lin', 'batch_low', 'use')")
    try:
        assert run(low, sql.format("nulls_ok"), "on") == run(conn, sql.format("nulls_ok"), "off")
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT flock.revoke_model('lin', 'batch_low', 'use')")


def test_whole_row_grouped_on_is_kept(conn):
    # GROUP BY the whole row: the row is a grouping column, so it is still formed for the aggregate.
    sql = ("SELECT count(*), sum(flock.predict('lin', t)) FROM nulls_ok t WHERE flock.predict('lin', t) > 40 "
           "GROUP BY t ORDER BY 2 LIMIT 20")
    per_row = run(conn, sql, "off")
    assert run(conn, sql, "on") == per_row and len(per_row) == 20 and per_row[0][0] == 1
    assert "NULL::nulls_ok" not in explain(conn, "VERBOSE " + sql)


PARTITIONED_QUERIES = [
    "SELECT count(*), sum(flock.predict('lin', p)) FROM parts p WHERE flock.predict('lin', p) > 300",
    "SELECT a::int % 4 AS g, count(*), avg(flock.predict('lin', p)) FROM parts p WHERE flock.predict('lin', p) > 200 "
    "GROUP BY 1 HAVING min(flock.predict('lin', p)) > 0 ORDER BY 1",
    "SELECT count(*), sum(flock.predict('lin', p)) FROM parts p WHERE flock.predict('lin', p) > 300 AND id % 2 = 0",
    "SELECT count(*) FILTER (WHERE flock.predict('lin', p) > 450), max(flock.predict('lin', ARRAY[b, a]::float4[])) "
    "FROM parts p WHERE flock.predict('lin', p) > 300",
]


@pytest.mark.parametrize("sql", PARTITIONED_QUERIES)
def test_aggregate_over_partitions_with_a_prediction_qual(conn, sql):
    # An aggregate over an Append of partition scans whose quals call the model: the aggregate's
    # calls move into every partition's scan, whose batch node scores each row once; the row value
    # is not formed. One partition's columns are in another order (its rows converted).
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('parts') IS NOT NULL")
        if not cur.fetchone()[0]:
            cur.execute("CREATE TABLE parts (id int, a real, b float8) PARTITION BY RANGE (id)")
            cur.execute("CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (MINVALUE) TO (1500)")
            cur.execute("CREATE TABLE parts_2 (b float8, id int, a real)")
            cur.execute("ALTER TABLE parts ATTACH PARTITION parts_2 FOR VALUES FROM (1500) TO (3000)")
            cur.execute("CREATE TABLE parts_3 PARTITION OF parts FOR VALUES FROM (3000) TO (MAXVALUE)")
            cur.execute("INSERT INTO parts SELECT i, (i % 50)::real, (i % 7)::float8 FROM generate_series(1, 4500) i")
            cur.execute("ANALYZE parts")
    per_row = run(conn, sql, "off")
    assert run(conn, sql, "on") == per_row
    assert run(conn, sql, "on", batch_size=7) == per_row
    plan = explain(conn, "VERBOSE " + sql)
    assert plan.count("FlockBatchScore") == 3, plan  # one per partition, none above the Append
    assert plan.count("NULL::parts") == 3, plan


def test_table_rows_from_columns_reject_nulls_like_per_row(conn):
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS holes AS SELECT (i % 7)::float8 AS b, (i % 50)::real AS a "
                    "FROM generate_series(1, 100) i")
        cur.execute("UPDATE holes SET a = NULL WHERE b = 3")
    for batching in ("off", "on"):
        with pytest.raises(psycopg2.Error) as err:
            run(conn, "SELECT sum(flock.predict('lin', h)) FROM holes h", batching)
        assert err.value.pgcode == "22004"


# Table rows whose features are all numbers go straight from the scan's columns into the model's
# input: every numeric column type, both float and double model inputs, several inputs, NULLs where
# the model takes them and where it does not, and (numeric) columns that keep the row-by-row path.
KIND_FEATURES = ["r", "f8", "i2", "i4", "i8", "flag"]


@pytest.fixture(scope="module")
def kinds(cluster, dbname):
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        # Columns in another order than the features, a dropped one, a text one; i8 values that
        # float4 cannot hold exactly, f8 values that it rounds.
        cur.execute("CREATE TABLE kinds AS SELECT i AS id, (i % 13) * 0.1::float8 + 1e-9 * i AS f8, "
                    "(i % 9)::int2 AS i2, 0 AS gone, 'n' || (i % 3) AS note, (i % 11 - 5)::int4 AS i4, "
                    "i::int8 * 1099511627 + 16777217 AS i8, i % 3 = 0 AS flag, ((i % 50) / 8.0)::real AS r, "
                    "(i % 17)::numeric / 4 AS num FROM generate_series(1, 3000) i")
        cur.execute("ALTER TABLE kinds DROP COLUMN gone")
        cur.execute("CREATE TABLE kinds_holes AS SELECT * FROM kinds")
        cur.execute("UPDATE kinds_holes SET i8 = NULL WHERE id % 97 = 0")
        cur.execute("UPDATE kinds_holes SET r = NULL WHERE id % 89 = 0")
        cur.execute("UPDATE kinds_holes SET flag = NULL WHERE id % 83 = 0")
        cur.execute("CREATE TABLE reals AS SELECT i AS id, ((i % 23) / 3.0)::real AS x, (i % 7)::real AS y "
                    "FROM generate_series(1, 3000) i")
        cur.execute("CREATE TABLE reals_holes AS SELECT * FROM reals")
        cur.execute("UPDATE reals_holes SET y = NULL WHERE id % 101 = 0")
        coefs = [1.5, -2.0, 0.25, 3.0, 1e-9, 7.0]
        cur.execute("SELECT flock.register_model('k_float', %s)", (linear_regressor(coefs, 0.5, KIND_FEATURES),))
        cur.execute("SELECT flock.register_model('k_double', %s)",
                    (linear_regressor(coefs, 0.5, KIND_FEATURES, input_type=TensorProto.DOUBLE),))
        cur.execute("SELECT flock.register_model('k_multi', %s)", (multi_input_linear(["i4", "r", "i8"], [2, 3, 1e-9], 1),))
        cur.execute("SELECT flock.register_model('k_tree', %s)",
                    (stump_classifier(4, 1e12, n_features=6, feature_names=KIND_FEATURES),))
        cur.execute("SELECT flock.register_model('k_numeric', %s)", (linear_regressor([1.0, 2.0], 0, ["num", "r"]),))
        cur.execute("SELECT flock.register_model('r_lin', %s)", (linear_regressor([1.0, 10.0], 0.5, ["x", "y"]),))
        cur.execute("SELECT flock.register_model('r_tree', %s)",
                    (stump_classifier(1, 3.0, feature_names=["x", "y"]),))
    conn.close()


KIND_QUERIES = [
    "SELECT id, flock.predict('{m}', t) FROM {t} t ORDER BY id",
    "SELECT sum(flock.predict('{m}', t)), count(*) FROM {t} t",
    "SELECT id, flock.predict_tensor('{m}', t) FROM {t} t WHERE id % 4 = 1 ORDER BY id",
    "SELECT note, avg(flock.predict('{m}', t)) FROM {t} t GROUP BY note ORDER BY note",
]
KIND_CASES = [("k_float", "kinds"), ("k_double", "kinds"), ("k_multi", "kinds"), ("k_numeric", "kinds"),
              ("k_tree", "kinds"), ("k_tree", "kinds_holes"), ("r_lin", "reals"), ("r_tree", "reals_holes")]


@pytest.mark.parametrize("model,table", KIND_CASES)
@pytest.mark.parametrize("query", KIND_QUERIES)
def test_numeric_columns_batched_equal_per_row(conn, kinds, model, table, query):
    sql = query.format(m=model, t=table)
    if table == "reals_holes" or table == "reals":
        sql = sql.replace("note", "y")
    per_row = run(conn, sql, "off")
    assert run(conn, sql, "on") == per_row
    assert run(conn, sql, "on", batch_size=7) == per_row
    with conn.cursor() as cur:
        cur.execute("EXPLAIN " + sql)
        assert "FlockBatchScore" in "\n".join(r[0] for r in cur.fetchall())


@pytest.mark.parametrize("model,table", [("k_tree", "kinds_holes"), ("r_tree", "reals_holes")])
def test_classifier_outputs_with_null_features_batched_equal_per_row(conn, kinds, model, table):
    sql = (f"SELECT id, flock.predict_proba('{model}', t), flock.predict_label('{model}', t), "
           f"flock.predict('{model}', t) FROM {table} t ORDER BY id")
    per_row = run(conn, sql, "off")
    assert run(conn, sql, "on") == per_row
    assert run(conn, sql, "on", batch_size=7) == per_row


@pytest.mark.parametrize("model,table", [("k_float", "kinds_holes"), ("k_double", "kinds_holes"),
                                         ("k_multi", "kinds_holes"), ("r_lin", "reals_holes")])
def test_null_features_raise_the_per_row_error(conn, kinds, model, table):
    for sql in (f"SELECT sum(flock.predict('{model}', t)) FROM {table} t",
                f"SELECT id, flock.predict('{model}', t) FROM {table} t"):
        errors = []
        for batching, batch_size in (("off", 1024), ("on", 1024), ("on", 7)):
            with pytest.raises(psycopg2.Error) as err:
                run(conn, sql, batching, batch_size)
            errors.append((err.value.pgcode, err.value.diag.message_primary, err.value.diag.message_hint))
        assert errors[0][0] == "22004" and errors[1] == errors[0] and errors[2] == errors[0], errors



def _locking_scan_after_concurrent_update(cluster, dbname, batching, query):
    """A locking query scored by a model, blocked on rows another transaction updates: once it
    commits, PostgreSQL re-checks those rows (EvalPlanQual) with their new values. Returns the
    query's plan and rows."""
    setup = psycopg2.connect(cluster.dsn(dbname))
    setup.autocommit = True
    with setup.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS locked")
        cur.execute("CREATE TABLE locked AS SELECT i AS id, (i % 50)::real AS a, (i % 7)::float8 AS b "
                    "FROM generate_series(1, 300) i")
    writer = psycopg2.connect(cluster.dsn(dbname))
    reader = psycopg2.connect(cluster.dsn(dbname))
    reader.autocommit = True
    try:
        with writer.cursor() as cur:  # rows 45 and 47 rise, row 49 drops below the filter
            cur.execute("UPDATE locked SET a = a + 1000 WHERE id IN (45, 47)")
            cur.execute("UPDATE locked SET a = -1000 WHERE id = 49")
        reader_pid = one(reader, "SELECT pg_backend_pid()")
        with reader.cursor() as cur:
            cur.execute(f"SET flock.batching = {batching}")
            cur.execute("EXPLAIN " + query)
            plan = "\n".join(r[0] for r in cur.fetchall())
        out = {}

        def locking_query():
            with reader.cursor() as cur:
                cur.execute(query)
                out["rows"] = cur.fetchall()

        thread = threading.Thread(target=locking_query)
        thread.start()
        for _ in range(200):  # until the reader waits for the writer's row lock
            if one(setup, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (reader_pid,)) == "Lock":
                break
            thread.join(0.05)
        else:
            pytest.fail("the locking query never waited for the updated rows")
        writer.commit()
        thread.join(30)
        assert not thread.is_alive()
        return plan, out["rows"]
    finally:
        writer.close()
        reader.close()
        setup.close()


@pytest.mark.parametrize("query", [
    "SELECT id, flock.predict('lin', t) FROM locked t WHERE flock.predict('lin', t) > 40 ORDER BY id FOR UPDATE",
    "SELECT id, flock.predict('lin', t) FROM locked t WHERE flock.predict('lin', t) > 40 FOR UPDATE",
    "SELECT id, flock.predict('lin', t) AS p FROM locked t WHERE a > 20 ORDER BY p DESC, id FOR SHARE",
])
def test_row_locks_recheck_updated_rows_with_their_new_values(cluster, dbname, query):
    plan_on, batched = _locking_scan_after_concurrent_update(cluster, dbname, "on", query)
    plan_off, per_row = _locking_scan_after_concurrent_update(cluster, dbname, "off", query)
    assert "FlockBatchScore" in plan_on and "FlockBatchScore" not in plan_off
    assert sorted(batched) == sorted(per_row)
    if "ORDER BY" in query:
        assert batched == per_row
    ids = {r[0]: r[1] for r in batched}
    for row in (45, 47):  # their new values
        assert ids[row] == pytest.approx((row % 50 + 1000) + 10 * (row % 7) + 0.5)
    assert 49 not in ids  # no longer passes the filter


# A row without NULLs whose columns up to the last feature have fixed lengths is copied from the
# stored tuple without deforming it; every other row is deformed first. Both kinds in one table and
# one batch, and layouts where the copy does not apply, give the per-row results.
LAYOUTS = {
    # a dropped column between the features, then a column added with a default: PostgreSQL's scan
    # projects such tables (no physical target list), so their rows come deformed
    "lay_dropped": ["CREATE TABLE lay_dropped (id int, x real, gone float8, y real)",
                    "INSERT INTO lay_dropped SELECT i, (i % 23) / 3.0, i, i % 7 FROM generate_series(1, 1500) i",
                    "ALTER TABLE lay_dropped DROP COLUMN gone",
                    "INSERT INTO lay_dropped SELECT i, (i % 23) / 3.0, i % 7 FROM generate_series(1501, 3000) i"],
    # (the old tuples of lay_added have fewer columns: its default comes from the catalog)
    "lay_added": ["CREATE TABLE lay_added (id int, x real)",
                  "INSERT INTO lay_added SELECT i, (i % 23) / 3.0 FROM generate_series(1, 1500) i",
                  "ALTER TABLE lay_added ADD COLUMN y real DEFAULT 2.5",
                  "INSERT INTO lay_added SELECT i, (i % 23) / 3.0, i % 7 FROM generate_series(1501, 3000) i"],
    # the features in the other order than the columns, NULLs in some rows
    "lay_reversed": ["CREATE TABLE lay_reversed (id int, y real, x real)",
                     "INSERT INTO lay_reversed SELECT i, CASE WHEN i % 101 = 0 THEN NULL ELSE i % 7 END, (i % 23) / 3.0 "
                     "FROM generate_series(1, 3000) i"],
    # a variable-length column before the features: never copied
    "lay_text": ["CREATE TABLE lay_text (id int, note text, x real, y real)",
                 "INSERT INTO lay_text SELECT i, repeat('n', i % 5), (i % 23) / 3.0, i % 7 FROM generate_series(1, 3000) i"],
    # partitions of different physical layouts: the first one's rows are copied as stored
    "lay_part": ["CREATE TABLE lay_part (id int, x real, y real) PARTITION BY RANGE (id)",
                 "CREATE TABLE lay_part_1 PARTITION OF lay_part FOR VALUES FROM (1) TO (1501)",
                 "CREATE TABLE lay_part_2 (gone int, y real, id int, x real)",
                 "ALTER TABLE lay_part_2 DROP COLUMN gone",
                 "ALTER TABLE lay_part ATTACH PARTITION lay_part_2 FOR VALUES FROM (1501) TO (3001)",
                 "INSERT INTO lay_part SELECT i, (i % 23) / 3.0, i % 7 FROM generate_series(1, 3000) i"],
}


@pytest.mark.parametrize("model", ["r_lin", "r_tree"])
@pytest.mark.parametrize("table", sorted(LAYOUTS))
def test_stored_rows_copied_without_deforming_equal_per_row(conn, kinds, model, table):
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NULL", (table,))
        if cur.fetchone()[0]:
            for sql in LAYOUTS[table]:
                cur.execute(sql)
    if model == "r_lin" and table == "lay_reversed":
        model = "r_tree"  # the linear model takes no NULL
    for sql in (f"SELECT id, flock.predict('{model}', t) FROM {table} t ORDER BY id",
                f"SELECT sum(flock.predict('{model}', t)), count(*) FROM {table} t"):
        per_row = run(conn, sql, "off")
        assert run(conn, sql, "on") == per_row
        assert run(conn, sql, "on", batch_size=7) == per_row
