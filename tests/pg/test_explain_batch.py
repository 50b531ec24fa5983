"""flock.explain batched by the FlockBatchScore node (issue 14): one core explain call per batch.
Fidelity is batching on against batching off (one explain call per row) in the same database:
every row's jsonb equal, exactly for tree ensembles, within 1e-9 for linear models and KernelSHAP
(their model runs may round differently in a batch), at batch sizes 1, 7 and 256; NULL inputs,
EXPLAIN's plan, and the privilege checks as an unprivileged role."""
import pytest

from test_catalog import one, rows, sqlstate
from test_explain import _arg, _entry, make_db

STRANGER, USER = "explain_batch_stranger", "explain_batch_user"

BATCH_SIZES = (1, 7, 256)


@pytest.fixture(scope="module")
def db(cluster, dbname):
    conn = make_db(cluster, dbname, STRANGER, USER)
    yield conn
    conn.close()


def _run(conn, sql, batching, batch_size=256):
    with conn.cursor() as cur:
        cur.execute(f"SET flock.batching = {batching}; SET flock.batch_size = {batch_size}")
        try:
            cur.execute(sql)
            return cur.fetchall()
        finally:
            cur.execute("RESET flock.batching; RESET flock.batch_size")


def _plan(conn, sql, batching="on"):
    return "\n".join(r[0] for r in _run(conn, "EXPLAIN (COSTS OFF, VERBOSE) " + sql, batching))


def _equal(a, b, tol):
    if a is None or b is None:
        return a is b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k], tol) for k in a)
    if isinstance(a, str):
        return a == b
    return a == b if tol == 0 else abs(a - b) <= tol * max(abs(a), abs(b), 1.0)


def _same_on_and_off(conn, sql, tol):
    per_row = _run(conn, sql, "off")
    assert len(per_row) > 0
    assert "FlockBatchScore" not in _plan(conn, sql, "off")
    plan = _plan(conn, sql)
    assert "FlockBatchScore" in plan and "(explain)" in plan, plan
    for size in BATCH_SIZES:
        batched = _run(conn, sql, "on", size)
        assert len(batched) == len(per_row), size
        for got, want in zip(batched, per_row):
            assert got[0] == want[0], size
            assert _equal(got[1], want[1], tol), (size, got[0], got[1], want[1])


TREES = [  # (model, extra arguments)
    ("diabetes_xgb", ""),
    ("iris_xgb", ""),
    ("customers_xgb", ""),
    ("breast_cancer_xgb", ", interactions => true"),
    ("diabetes_gb", ", background => 'diabetes_bg'"),
    ("iris_gb", ", background => 'SELECT * FROM iris WHERE id % 4 = 0'"),
]


@pytest.mark.parametrize("name,extra", TREES)
def test_trees_batched_equal_per_row_exactly(db, name, extra):
    entry = _entry(name)
    sql = f'SELECT id, flock.explain(\'{name}\', {_arg(entry)}{extra}) FROM "{entry["table"]}" t ORDER BY id'
    _same_on_and_off(db, sql, 0)


LINEAR = [
    ("diabetes_linreg", ""),
    ("diabetes_linreg", ", background => 'diabetes_bg'"),
    ("iris_logreg", ""),
    ("wine_scaler_logreg", ", output => '1'"),
    ("customers_pipeline_logreg", ""),  # one-hot pipeline over 7 inputs
    ("customers_pipeline_logreg", ", background => 'SELECT * FROM customers WHERE id <= 50'"),
]


@pytest.mark.parametrize("name,extra", LINEAR)
def test_linear_batched_equal_per_row(db, name, extra):
    entry = _entry(name)
    sql = f'SELECT id, flock.explain(\'{name}\', {_arg(entry)}{extra}) FROM "{entry["table"]}" t ORDER BY id'
    _same_on_and_off(db, sql, 1e-9)


def test_kernel_shap_batched_equal_per_row(db):
    # torch_embed_mlp: every coalition enumerated; torch_mlp: 2048 sampled coalitions (seeded).
    _same_on_and_off(db, "SELECT id, flock.explain('torch_embed_mlp', t, background => "
                         "'SELECT * FROM torch_customers WHERE id <= 8') FROM torch_customers t WHERE id <= 40 "
                         "ORDER BY id", 1e-9)
    _same_on_and_off(db, "SELECT id, flock.explain('torch_mlp', t, background => "
                         "'SELECT * FROM torch_cancer WHERE id <= 5') FROM torch_cancer t WHERE id <= 12 "
                         "ORDER BY id", 1e-9)


def test_null_inputs_and_arrays_in_an_aggregate(db):
    entry = _entry("diabetes_xgb")
    arr = "ARRAY[" + ", ".join(f't."{c}"' for c in entry["features"]) + "]::float4[]"
    sql = (f"SELECT id, flock.explain('diabetes_xgb', CASE WHEN id % 3 = 0 THEN NULL ELSE {arr} END) "
           "FROM diabetes t ORDER BY id")
    _same_on_and_off(db, sql, 0)
    got = _run(db, sql, "on", 7)
    assert all((e is None) == (i % 3 == 0) for i, e in got)
    # Only NULL inputs: no explanation, and no background read (an empty one would be an error).
    sql = ("SELECT id, flock.explain('diabetes_gb', NULL::record, background => 'empty_bg') FROM diabetes t "
           "WHERE id < 20 ORDER BY id")
    for batching in ("off", "on"):
        assert all(e is None for _, e in _run(db, sql, batching, 7))
    # An aggregate over the explanations (the node under the Agg).
    sql = "SELECT 0, sum((flock.explain('diabetes_xgb', t)->>'base_value')::float8) FROM diabetes t"
    _same_on_and_off(db, sql, 0)


def test_background_read_once_per_call_site(db):
    # The background query bumps a sequence once each time it runs.
    db.cursor().execute("CREATE SEQUENCE IF NOT EXISTS bg_reads")
    sql = ("SELECT id, flock.explain('diabetes_gb', t, background => 'SELECT d.* FROM diabetes d, "
           "(SELECT nextval(''bg_reads'')) s WHERE d.id <= 50') FROM diabetes t ORDER BY id")
    for batching, size in (("off", 256), ("on", 7), ("on", 256)):
        before = one(db, "SELECT nextval('bg_reads')")
        assert len(_run(db, sql, batching, size)) > 7
        assert one(db, "SELECT nextval('bg_reads')") == before + 2, (batching, size)


def test_errors_as_per_row(db):
    for sql in ("SELECT flock.explain('iris_xgb', t, output => 'virginica') FROM iris t",
                "SELECT flock.explain('diabetes_gb', t, background => 'empty_bg') FROM diabetes t",
                "SELECT flock.explain('customers_pipeline_gb', t) FROM customers t"):
        with db.cursor() as cur:
            cur.execute("SET flock.batching = off")
            want = sqlstate(db, sql)
            cur.execute("SET flock.batching = on")
            assert "FlockBatchScore" in _plan(db, sql)
            got = sqlstate(db, sql)
            cur.execute("RESET flock.batching")
        assert (got.pgcode, got.diag.message_primary, got.diag.message_hint) == \
            (want.pgcode, want.diag.message_primary, want.diag.message_hint), sql


def test_privileges_batched_as_per_row(db, connect_as):
    stranger, user = connect_as(STRANGER), connect_as(USER)
    sql = "SELECT id, flock.explain('diabetes_xgb', t) FROM diabetes t ORDER BY id"
    for batching in ("off", "on"):
        with stranger.cursor() as cur:
            cur.execute(f"SET flock.batching = {batching}")
        want = sqlstate(stranger, "SELECT flock.predict('diabetes_xgb', t) FROM diabetes t")
        err = sqlstate(stranger, sql)
        assert err.pgcode == "42501"
        assert (err.pgcode, err.diag.message_primary, err.diag.message_hint) == \
            (want.pgcode, want.diag.message_primary, want.diag.message_hint)
    assert "FlockBatchScore" in _plan(user, sql)
    assert _run(user, sql, "on", 7) == _run(user, sql, "off")
    # The background query runs as the caller, batched too.
    db.cursor().execute("CREATE TABLE IF NOT EXISTS secret AS SELECT * FROM diabetes")
    one(db, "SELECT flock.grant_model('diabetes_gb', %s, 'use')", (USER,))
    sql = "SELECT flock.explain('diabetes_gb', t, background => 'SELECT * FROM secret') FROM diabetes t"
    for batching in ("off", "on"):
        with user.cursor() as cur:
            cur.execute(f"SET flock.batching = {batching}")
        assert sqlstate(user, sql).pgcode == "42501"
    assert rows(db, "SELECT 1") == [(1,)]


def test_quals_and_a_partitioned_table(db):
    db.cursor().execute(
        "CREATE TABLE IF NOT EXISTS diab_parts (LIKE diabetes) PARTITION BY RANGE (id);"
        "CREATE TABLE IF NOT EXISTS diab_p1 PARTITION OF diab_parts FOR VALUES FROM (MINVALUE) TO (200);"
        "CREATE TABLE IF NOT EXISTS diab_p2 PARTITION OF diab_parts FOR VALUES FROM (200) TO (MAXVALUE);"
        "TRUNCATE diab_parts; INSERT INTO diab_parts SELECT * FROM diabetes")
    # A qual on an explanation (moved to the node), and an aggregate over a partitioned table.
    _same_on_and_off(db, "SELECT id, flock.explain('diabetes_xgb', t) FROM diabetes t "
                         "WHERE (flock.explain('diabetes_xgb', t)->>'bmi')::float8 > 0 ORDER BY id", 0)
    _same_on_and_off(db, "SELECT id % 2, sum((flock.explain('diabetes_xgb', t)->>'bmi')::float8) "
                         "FROM diab_parts t GROUP BY 1 ORDER BY 1", 0)


def test_several_calls_in_one_node_keep_their_own_arguments(db):
    # Two explain calls with different constants around a prediction, in one batch node.
    sql = ("SELECT id, jsonb_build_array(flock.explain('diabetes_gb', t, background => 'diabetes_bg'), "
           "flock.predict('diabetes_xgb', t), "
           "flock.explain('iris_xgb', ARRAY[t.age, t.sex, t.bmi, t.bp]::float4[], output => '2'), "
           "flock.explain('diabetes_xgb', t, interactions => true)) FROM diabetes t ORDER BY id")
    _same_on_and_off(db, sql, 0)
    plan = _plan(db, sql)
    assert plan.count("(explain)") == 3 and "(predict)" in plan, plan
    got = _run(db, sql, "on", 7)
    assert all(e[2]["output"] == "2" and isinstance(e[3]["bmi"], dict) for _, e in got)


def test_rows_of_a_batched_explain_equal_explain_rows(db):
    """The batched way to get explain_rows' (feature, contribution) pairs for many rows: jsonb_each
    over flock.explain in a subquery kept apart (OFFSET 0), whose scan the node batches."""
    sql = ("SELECT s.id, c.key, c.value::float8 FROM (SELECT id, flock.explain('diabetes_xgb', t) AS e "
           "FROM diabetes t OFFSET 0) s, jsonb_each(s.e) c ORDER BY 1, 2")
    plan = _plan(db, sql)
    assert "FlockBatchScore" in plan and "(explain)" in plan, plan
    batched = _run(db, sql, "on", 64)
    per_row = _run(db, "SELECT t.id, e.feature, e.contribution FROM diabetes t, "
                       "flock.explain_rows('diabetes_xgb', t) e ORDER BY 1, 2", "off")
    assert len(batched) == len(per_row) > 0
    for (i, f, v), (j, g, w) in zip(batched, per_row):
        assert (i, f) == (j, g) and abs(v - w) <= 1e-12 * max(abs(w), 1.0), (i, f, v, w)


EXPLAIN_ROWS_JOINS = [
    "SELECT t.id, e.* FROM diabetes t, flock.explain_rows('diabetes_xgb', t) e",
    "SELECT t.id, e.* FROM diabetes t CROSS JOIN LATERAL flock.explain_rows('diabetes_gb', t, 'diabetes_bg') e "
    "WHERE t.id % 3 = 0",
    "SELECT t.id, e.* FROM iris t, flock.explain_rows('iris_logreg', ARRAY[t.sepal_length, t.sepal_width, "
    "t.petal_length, t.petal_width]::float4[], output => '2') e",
    "SELECT t.id, e.* FROM customers t, flock.explain_rows('customers_pipeline_logreg', t) e WHERE t.id <= 120",
    "SELECT t.id, e.* FROM torch_cancer t, flock.explain_rows('torch_mlp', t, "
    "'SELECT * FROM torch_cancer WHERE id <= 5') e WHERE t.id <= 10",
]


@pytest.mark.parametrize("sql", EXPLAIN_ROWS_JOINS)
def test_explain_rows_joined_to_a_table_is_batched_with_the_same_rows(db, sql):
    """flock.explain_rows in a join with the table it explains: the scan computes the equivalent
    flock.explain in batches (FlockBatchScore) and the function lists it; every row (feature,
    value, contribution, in order) equal to the unbatched plan's."""
    sql = sql + " ORDER BY 1, 2"
    per_row = _run(db, sql, "off")
    assert len(per_row) > 0
    plan = _plan(db, sql)
    assert "FlockBatchScore" in plan and "(explain)" in plan and "_explain_rows_of" in plan, plan
    for size in BATCH_SIZES:
        batched = _run(db, sql, "on", size)
        assert batched == per_row, size


def test_explain_rows_joined_nulls_errors_privileges_and_colliding_names_as_per_row(db, connect_as):
    # NULL inputs (no rows, kept by a LEFT JOIN), a feature named like one of flock.explain's own
    # keys (the rows are then explained again one at a time), and a LEFT JOIN.
    from onnx_builders import linear_regressor
    with db.cursor() as cur:
        cur.execute("SELECT flock.register_model('lin_output', %s)",
                    (linear_regressor([2.0, -3.0], 0.5, ["output", "b"]),))
        cur.execute("DROP TABLE IF EXISTS two")
        cur.execute("CREATE TABLE two AS SELECT g AS id, g::float4 AS output, (g * 2)::float4 AS b "
                    "FROM generate_series(1, 30) g")
    for sql in ("SELECT t.id, e.* FROM diabetes t LEFT JOIN LATERAL flock.explain_rows('diabetes_xgb', "
                "CASE WHEN t.id % 3 = 0 THEN t END) e ON true ORDER BY 1, 2",
                "SELECT t.id, e.* FROM two t, flock.explain_rows('lin_output', t) e ORDER BY 1, 2"):
        per_row = _run(db, sql, "off")
        assert "_explain_rows_of" in _plan(db, sql), sql
        for size in BATCH_SIZES:
            assert _run(db, sql, "on", size) == per_row, (sql, size)
    assert sum(1 for r in _run(db, "SELECT t.id, e.* FROM diabetes t LEFT JOIN LATERAL flock.explain_rows("
                                    "'diabetes_xgb', CASE WHEN t.id % 3 = 0 THEN t END) e ON true", "on")
               if r[1] is None) == len(rows(db, "SELECT 1 FROM diabetes WHERE id % 3 <> 0"))
    # Errors, and the privilege checks as an unprivileged role, as the unbatched call gives them.
    for conn, sql in ((db, "SELECT e.* FROM iris t, flock.explain_rows('iris_xgb', t, output => 'virginica') e"),
                      (db, "SELECT e.* FROM diabetes t, flock.explain_rows('diabetes_gb', t, 'empty_bg') e"),
                      (connect_as(STRANGER), "SELECT e.* FROM diabetes t, flock.explain_rows('diabetes_xgb', t) e")):
        with conn.cursor() as cur:
            cur.execute("SET flock.batching = off")
            want = sqlstate(conn, sql)
            cur.execute("SET flock.batching = on")
            got = sqlstate(conn, sql)
            cur.execute("RESET flock.batching")
        assert (got.pgcode, got.diag.message_primary, got.diag.message_hint) == \
            (want.pgcode, want.diag.message_primary, want.diag.message_hint), sql
