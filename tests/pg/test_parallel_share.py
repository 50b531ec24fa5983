"""Parallel workers get the leader's resolved models (flock.share_models_with_workers, issue 15):
the batch node under a Gather is parallel aware, the leader writes each model's bytes and
resolution into the query's shared memory, and every worker compiles those instead of reading the
catalog. The rows are exactly those of the serial plan and of workers resolving for themselves."""
import psycopg2
import pytest

from onnx_builders import linear_regressor, stump_classifier

PARALLEL = ("SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0; "
            "SET max_parallel_workers_per_gather = 2; SET parallel_leader_participation = off")
GOT = "parallel worker got model"


@pytest.fixture(scope="module", autouse=True)
def data(cluster, dbname):
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT flock.register_model('lin', %s)", (linear_regressor([1.0, 10.0], 0.5, ["a", "b"]),))
        cur.execute("SELECT flock.register_model('stump', %s)", (stump_classifier(1, 2.0),))
        cur.execute("CREATE TABLE par AS SELECT i AS id, (i % 50)::real AS a, (i % 7)::float8 AS b "
                    "FROM generate_series(1, 200000) i")
        cur.execute("ALTER TABLE par SET (parallel_workers = 2)")
        cur.execute("ANALYZE par")
    conn.close()


def query(conn, sql, settings, args=None):
    """(plan, rows, worker notices) of sql run under settings."""
    with conn.cursor() as cur:
        cur.execute(settings)
        try:
            cur.execute("EXPLAIN (COSTS OFF) " + sql, args)
            plan = "\n".join(r[0] for r in cur.fetchall())
            del conn.notices[:]
            cur.execute("SET client_min_messages = debug1")
            cur.execute(sql, args)
            got = cur.fetchall()
            notices = [n for n in conn.notices if GOT in n]
        finally:
            cur.execute("RESET ALL")
    return plan, got, notices


QUERIES = [
    "SELECT id, flock.predict('lin', t) FROM par t ORDER BY id",
    "SELECT sum(flock.predict('lin', t)), count(*) FILTER (WHERE flock.predict('stump', ROW(a, b)) = 1) FROM par t",
    "SELECT b, sum(flock.predict('lin', t)), sum(flock.predict('lin', t) * 2) FROM par t GROUP BY b ORDER BY b",
    # A Gather in an initplan.
    "SELECT x.id, (SELECT sum(flock.predict('lin', t)) FROM par t) FROM (VALUES (1), (2)) x(id) ORDER BY 1",
]


@pytest.mark.parametrize("sql", QUERIES)
def test_workers_get_the_leaders_models(conn, sql):
    _, serial, _ = query(conn, sql, "SET max_parallel_workers_per_gather = 0")
    plan, shared, notices = query(conn, sql, PARALLEL)
    assert "Gather" in plan and "Parallel Custom Scan (FlockBatchScore)" in plan, plan
    assert notices, "no worker reported the leader's model"
    plan_own, own, own_notices = query(conn, sql, PARALLEL + "; SET flock.share_models_with_workers = off")
    assert "Gather" in plan_own and "Parallel Custom Scan" not in plan_own, plan_own
    assert not own_notices
    assert shared == serial and own == serial


def test_again_in_the_same_session(conn):
    # The second query hands over the bytes the leader kept from the first.
    sql = QUERIES[1]
    _, serial, _ = query(conn, sql, "SET max_parallel_workers_per_gather = 0")
    for _ in range(2):
        _, got, notices = query(conn, sql, PARALLEL)
        assert got == serial and notices


def test_model_values(conn):
    model = bytes(linear_regressor([2.0, -3.0], 1.5, ["a", "b"]))
    with conn.cursor() as cur:
        cur.execute("SELECT %s::flock.model::bytea", (psycopg2.Binary(model),))
    sql = "SELECT sum(flock.predict(%s::flock.model, t)) FROM par t"
    args = (psycopg2.Binary(model),)
    _, serial, _ = query(conn, sql, "SET max_parallel_workers_per_gather = 0", args)
    plan, got, notices = query(conn, sql, PARALLEL, args)
    assert "Parallel Custom Scan (FlockBatchScore)" in plan, plan
    assert got == serial and notices
    with conn.cursor() as cur:
        cur.execute("SELECT sum(2 * a - 3 * b + 1.5) FROM par")
        assert serial[0][0] == pytest.approx(cur.fetchone()[0], rel=1e-9)


def test_errors_in_workers_are_the_same(conn):
    # A NULL feature the linear model cannot take, raised in a worker scoring the shared model.
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE par_null AS SELECT * FROM par")
        cur.execute("UPDATE par_null SET b = NULL WHERE id = 150000")
        cur.execute("ALTER TABLE par_null SET (parallel_workers = 2)")
        cur.execute("ANALYZE par_null")
        for settings in (PARALLEL, PARALLEL + "; SET flock.share_models_with_workers = off"):
            cur.execute(settings)
            with pytest.raises(psycopg2.Error) as err:
                cur.execute("SELECT sum(flock.predict('lin', t)) FROM par_null t")
            assert err.value.pgcode == "22004"
            cur.execute("RESET ALL")


def test_models_past_the_budget_are_left_to_the_workers(conn):
    # flock.model_cache_memory bounds what a query's shared memory holds of models: a 1.2 MB model
    # under a 1 MB budget is resolved by each worker itself, with the same rows.
    import onnx
    m = onnx.load_from_string(bytes(linear_regressor([1.0, 10.0], 0.5, ["a", "b"])))
    m.doc_string = "x" * 1_200_000
    with conn.cursor() as cur:
        cur.execute("SELECT flock.register_model('big', %s)", (psycopg2.Binary(m.SerializeToString()),))
    sql = "SELECT sum(flock.predict('big', t)), sum(flock.predict('lin', t)) FROM par t"
    _, serial, _ = query(conn, sql, "SET max_parallel_workers_per_gather = 0")
    _, got, notices = query(conn, sql, PARALLEL + "; SET flock.model_cache_memory = '1MB'")
    assert got == serial
    assert notices and all("big" not in n for n in notices)
    _, got, notices = query(conn, sql, PARALLEL)
    assert got == serial and any("big@1" in n for n in notices)


def test_an_unprivileged_role(cluster, dbname, conn):
    # The leader reads the bytes it hands over as the current role, through the catalog's row
    # security: a role granted the model gets it shared; the rows are the serial ones.
    with conn.cursor() as cur:
        cur.execute("CREATE ROLE par_user LOGIN")
        cur.execute("GRANT USAGE ON SCHEMA flock TO par_user")
        cur.execute("GRANT SELECT ON par TO par_user")
        cur.execute("SELECT flock.grant_model('lin', 'par_user', 'use')")
    user = psycopg2.connect(cluster.dsn(dbname, user="par_user"))
    user.autocommit = True
    try:
        sql = QUERIES[0]
        _, serial, _ = query(user, sql, "SET max_parallel_workers_per_gather = 0")
        plan, got, notices = query(user, sql, PARALLEL)
        assert "Parallel Custom Scan (FlockBatchScore)" in plan and got == serial and notices
        with user.cursor() as cur:
            cur.execute(PARALLEL)
            with pytest.raises(psycopg2.Error) as err:
                cur.execute("SELECT sum(flock.predict('stump', ROW(a, b))) FROM par t")
        assert err.value.pgcode == "42501"  # not granted: refused as without workers
    finally:
        user.close()
