"""The batch node reading a sequential scan's heap pages itself (pg/src/heap_reader.cpp): the same
rows as the scan node gives (visibility, NULLs, rows from before a column was added, rescans,
parallel scans, row-level security), the scan still shown by EXPLAIN ANALYZE, the same predicate
locks."""
import psycopg2
import pytest

from onnx_builders import linear_regressor, stump_classifier

ROWS = 20000


@pytest.fixture(scope="module", autouse=True)
def data(cluster, dbname):
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT flock.register_model('lin3', %s)",
                    (linear_regressor([1.0, -2.0, 0.25], 0.5, ["a", "b", "c"]),))
        cur.execute("SELECT flock.register_model('lin_d', %s)", (linear_regressor([1.0, 3.0], 0.0, ["a", "d"]),))
        cur.execute("SELECT flock.register_model('stump', %s)",
                    (stump_classifier(1, 2.0, n_features=2, feature_names=["a", "b"]),))
        cur.execute("CREATE TABLE hr (id int, a real, b real, c real) WITH (autovacuum_enabled = off)")
        cur.execute("INSERT INTO hr SELECT i, (i % 97) / 7.0, (i % 13) / 3.0, (i % 5) - 2 "
                    f"FROM generate_series(1, {ROWS}) i")
        # Dead and updated rows (new versions elsewhere, HOT chains), a column added with a default
        # after most rows were stored (their tuples have 4 columns), then newer rows with 5.
        cur.execute("UPDATE hr SET a = a + 1 WHERE id % 11 = 0")
        cur.execute("DELETE FROM hr WHERE id % 17 = 0")
        cur.execute("ALTER TABLE hr ADD COLUMN d real DEFAULT 2")
        cur.execute(f"INSERT INTO hr SELECT i, i % 3, i % 4, 1, i % 9 FROM generate_series({ROWS} + 1, {ROWS} + 3000) i")
        cur.execute("CREATE TABLE hr_nulls AS SELECT id, a, CASE WHEN id % 29 = 0 THEN NULL ELSE b END AS b FROM hr")
        cur.execute("ANALYZE hr; ANALYZE hr_nulls")
    conn.close()


def rows_with(conn, sql, batching="on", read_pages="on", parallel=False):
    with conn.cursor() as cur:
        cur.execute(f"SET flock.batching = {batching}; SET flock.read_heap_pages = {read_pages}")
        if parallel:
            cur.execute("SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; "
                        "SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2")
        try:
            cur.execute(sql)
            return cur.fetchall()
        finally:
            cur.execute("RESET ALL")


def plan_of(conn, sql, analyze=False):
    with conn.cursor() as cur:
        cur.execute(f"EXPLAIN ({'ANALYZE, ' if analyze else ''}COSTS OFF) " + sql)
        return "\n".join(r[0] for r in cur.fetchall())


QUERIES = [
    "SELECT id, flock.predict('lin3', t) FROM hr t ORDER BY id",
    "SELECT sum(flock.predict('lin3', t)), count(*) FROM hr t",
    "SELECT id, flock.predict('lin_d', t) FROM hr t ORDER BY id",  # rows stored before d was added
    "SELECT sum(flock.predict('lin_d', t)), sum(flock.predict('lin3', t)) FROM hr t",
    "SELECT id, flock.predict_proba('stump', t) FROM hr_nulls t ORDER BY id",  # NULL features
    "SELECT sum(flock.predict('stump', t)) FROM hr_nulls t",
    "SELECT b, sum(flock.predict('lin3', t)) FROM hr t GROUP BY b ORDER BY b",
]


@pytest.mark.parametrize("sql", QUERIES)
def test_pages_read_directly_give_the_scan_nodes_rows(conn, sql):
    assert "Flock Heap Pages: read directly" in plan_of(conn, sql)
    per_row = rows_with(conn, sql, batching="off")
    assert len(per_row) > 0
    assert rows_with(conn, sql, read_pages="off") == per_row
    assert rows_with(conn, sql) == per_row


@pytest.mark.parametrize("sql", [QUERIES[0], QUERIES[3], QUERIES[4]])
def test_parallel_scans_share_out_the_pages(conn, sql):
    with conn.cursor() as cur:
        cur.execute("SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; "
                    "SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2")
        try:
            plan = plan_of(conn, sql, analyze=True)
        finally:
            cur.execute("RESET ALL")
    assert "Parallel Seq Scan" in plan and "Workers Launched" in plan and "Flock Heap Pages: read directly" in plan
    assert rows_with(conn, sql, parallel=True) == rows_with(conn, sql, batching="off")


def test_a_rescanned_node_reads_the_table_again(conn):
    # The batch node's output uses the outer value: each outer row rescans it.
    sql = ("SELECT g, (SELECT sum(flock.predict('lin3', t) * g) FROM hr t) "
           "FROM generate_series(0, 3) g ORDER BY g")
    plan = plan_of(conn, sql)
    assert "SubPlan" in plan and "Flock Heap Pages: read directly" in plan, plan
    got = rows_with(conn, sql)
    assert got == rows_with(conn, sql, batching="off")
    assert got[0][1] == 0 and got[2][1] == pytest.approx(2 * got[1][1]) and got[1][1] != 0


def test_explain_analyze_still_counts_the_scans_rows(conn):
    plan = plan_of(conn, "SELECT sum(flock.predict('lin3', t)) FROM hr t", analyze=True)
    live = rows_with(conn, "SELECT count(*) FROM hr")[0][0]
    scan = [line for line in plan.splitlines() if "Seq Scan on hr" in line][0]
    assert f"rows={live} loops=1" in scan, plan


def test_scan_with_a_qual_or_a_projection_goes_through_the_scan_node(conn):
    plan = plan_of(conn, "SELECT sum(flock.predict('lin3', t)) FROM hr t WHERE id % 2 = 0")
    assert "FlockBatchScore" in plan and "Filter" in plan and "Flock Heap Pages" not in plan
    sql = "SELECT id, flock.predict('lin3', t) FROM hr t WHERE id % 2 = 0 ORDER BY id"
    assert rows_with(conn, sql) == rows_with(conn, sql, batching="off")


def test_serializable_reads_take_the_scans_predicate_lock(cluster, dbname):
    locks = {}
    for read_pages in ("on", "off"):
        c = psycopg2.connect(cluster.dsn(dbname))
        try:
            with c.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                cur.execute(f"SET flock.read_heap_pages = {read_pages}")
                cur.execute("SELECT sum(flock.predict('lin3', t)) FROM hr t")
                cur.execute("SELECT locktype, relation::regclass::text FROM pg_locks "
                            "WHERE pid = pg_backend_pid() AND mode = 'SIReadLock' ORDER BY 1, 2")
                locks[read_pages] = cur.fetchall()
        finally:
            c.rollback()
            c.close()
    assert ("relation", "hr") in locks["on"]
    assert locks["on"] == locks["off"]


def test_row_level_security_filters_before_the_model(conn, connect_as):
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE owned (owner name, a real, b real, c real)")
        cur.execute("INSERT INTO owned SELECT CASE WHEN i % 3 = 0 THEN 'hr_reader' ELSE 'other' END, i, i % 7, 1 "
                    "FROM generate_series(1, 3000) i")
        cur.execute("ALTER TABLE owned ENABLE ROW LEVEL SECURITY")
        cur.execute("CREATE POLICY mine ON owned USING (owner = current_user)")
        cur.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hr_reader') THEN "
                    "CREATE ROLE hr_reader LOGIN; END IF; END $$")
        cur.execute("GRANT SELECT ON owned TO hr_reader")
        cur.execute("GRANT USAGE ON SCHEMA flock TO hr_reader")
        cur.execute("SELECT flock.grant_model('lin3', 'hr_reader', 'use')")
        cur.execute("SELECT sum(a - 2 * b + 0.25 * c + 0.5) FROM owned WHERE owner = 'hr_reader'")
        expected = cur.fetchone()[0]
    reader = connect_as("hr_reader")
    sql = "SELECT sum(flock.predict('lin3', t)), count(*) FROM owned t"
    with reader.cursor() as cur:
        cur.execute("EXPLAIN (COSTS OFF) " + sql)
        plan = "\n".join(r[0] for r in cur.fetchall())
        cur.execute(sql)
        got, n = cur.fetchone()
    assert "Filter" in plan and "Flock Heap Pages" not in plan, plan  # the policy is the scan's qual
    assert n == 1000
    assert got == pytest.approx(expected, rel=1e-6)


def two_split_tree():
    """x[0] <= 10 ? (x[2] <= 1 ? leaf 3 : leaf 4) : leaf 2; never reads x[1]."""
    from onnx import TensorProto, helper
    node = helper.make_node(
        "TreeEnsembleClassifier", ["input"], ["label", "probabilities"], domain="ai.onnx.ml",
        nodes_treeids=[0] * 5, nodes_nodeids=[0, 1, 2, 3, 4], nodes_featureids=[0, 2, 0, 0, 0],
        nodes_modes=["BRANCH_LEQ", "BRANCH_LEQ", "LEAF", "LEAF", "LEAF"],
        nodes_values=[10.0, 1.0, 0.0, 0.0, 0.0], nodes_truenodeids=[1, 3, 0, 0, 0],
        nodes_falsenodeids=[2, 4, 0, 0, 0], nodes_missing_value_tracks_true=[1, 1, 0, 0, 0],
        class_treeids=[0] * 6, class_nodeids=[2, 2, 3, 3, 4, 4], class_ids=[0, 1] * 3,
        class_weights=[0.7, 0.3, 0.2, 0.8, 0.6, 0.4], classlabels_int64s=[0, 1], post_transform="NONE")
    graph = helper.make_graph(
        [node], "two_split", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 8
    helper.set_model_props(model, {"feature_names": '["a", "b", "c"]'})
    return model.SerializeToString()


def test_unread_columns_between_read_ones_give_the_unoptimized_results(conn):
    # The tree never reads b, so the optimizer marks it unread; the column is still copied with
    # its neighbours (one run of a, b, c), NaN and all, and the predictions do not change.
    with conn.cursor() as cur:
        cur.execute("SELECT flock.register_model('gap', %s)", (two_split_tree(),))
        cur.execute("CREATE TABLE gaps AS SELECT i AS id, (i % 20)::real AS a, "
                    "CASE WHEN i % 10 = 0 THEN 'NaN'::real ELSE (i % 7)::real END AS b, (i % 3)::real AS c "
                    "FROM generate_series(1, 2000) i")
    sql = "SELECT id, flock.predict_proba('gap', t) FROM gaps t ORDER BY id"
    plan = plan_of(conn, sql)
    assert "Flock Inputs Read: 2 of 3" in plan and "Flock Heap Pages: read directly" in plan, plan
    got = rows_with(conn, sql)
    with conn.cursor() as cur:
        cur.execute("SET flock.optimizer = off")
        try:
            cur.execute(sql)
            unoptimized = cur.fetchall()
        finally:
            cur.execute("RESET flock.optimizer")
    assert got == unoptimized == rows_with(conn, sql, batching="off")
    assert len({tuple(p) for _, p in got}) == 3


def test_a_nonsense_setting_is_refused_and_changes_nothing(conn, connect_as):
    with conn.cursor() as cur:
        cur.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hr_reader') THEN "
                    "CREATE ROLE hr_reader LOGIN; END IF; END $$")
    for c in (conn, connect_as("hr_reader")):
        with c.cursor() as cur:
            with pytest.raises(psycopg2.Error) as err:
                cur.execute("SET flock.read_heap_pages = 'sometimes'")
            assert err.value.pgcode == "22023" and "flock.read_heap_pages" in err.value.pgerror
            cur.execute("SHOW flock.read_heap_pages")
            assert cur.fetchone()[0] == "on"
