"""flock.predict / predict_proba / predict_label: binding, versions, caching, NULLs, errors."""
import psycopg2
import pytest

from onnx_builders import linear_regressor, stump_classifier
from test_catalog import one, sqlstate


@pytest.fixture(scope="module", autouse=True)
def models(cluster, dbname):
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT flock.register_model('lin', %s)", (linear_regressor([1.0, 10.0], 0.5, ["a", "b"]),))
        cur.execute("SELECT flock.register_model('lin', %s)", (linear_regressor([2.0, 20.0], 0.0, ["a", "b"]),))
        cur.execute("SELECT flock.register_model('anon', %s)", (linear_regressor([1.0, 100.0], 0.0),))
        cur.execute("SELECT flock.register_model('stump', %s)", (stump_classifier(1, 0.5, feature_names=["f0", "f1"]),))
        cur.execute("SELECT flock.register_model('colors', %s)",
                    (stump_classifier(0, 0.5, labels=("red", "blue"), feature_names=["f0", "f1"]),))
        cur.execute("CREATE TABLE points (id int, b float8, a int, note text, f0 real, f1 numeric)")
        cur.execute("INSERT INTO points VALUES (1, 1.5, 2, 'x', 0.1, 0.2), (2, 0.0, -1, 'y', 0.9, 0.7), "
                    "(3, NULL, 4, 'z', NULL, NULL)")
    conn.close()


def test_record_binds_by_name_in_any_column_order(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT id, flock.predict('lin@1', p) FROM points p WHERE id < 3 ORDER BY id")
        assert cur.fetchall() == [(1, pytest.approx(2 + 15 + 0.5)), (2, pytest.approx(-1 + 0 + 0.5))]


def test_name_means_latest_version_and_at_n_pins_one(conn):
    assert one(conn, "SELECT flock.predict('lin', ARRAY[1, 1]::float4[])") == pytest.approx(22.0)
    assert one(conn, "SELECT flock.predict('lin@1', ARRAY[1, 1]::float4[])") == pytest.approx(11.5)
    assert one(conn, "SELECT flock.predict('lin@2', ARRAY[1, 1]::float4[])") == pytest.approx(22.0)


def test_model_without_names_binds_columns_in_order(conn):
    assert one(conn, "SELECT flock.predict('anon', (SELECT r FROM (SELECT 3::int AS x, 2::real AS y) r))") == pytest.approx(203.0)
    assert one(conn, "SELECT flock.predict('anon', ROW(3, 2))") == pytest.approx(203.0)
    err = sqlstate(conn, "SELECT flock.predict('anon', ROW(3, 2, 1))")
    assert err.pgcode == "22023" and "order" in err.diag.message_detail


def test_model_values_from_the_catalog_score_like_names(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT p.id, flock.predict(m.model, p) FROM points p, flock.models m "
                    "WHERE m.name = 'lin' AND m.version = 1 AND p.id < 3 ORDER BY p.id")
        assert [r[1] for r in cur.fetchall()] == [pytest.approx(17.5), pytest.approx(-0.5)]
        cur.execute("SELECT m.version, flock.predict(m.model, ARRAY[1, 1]::float4[]) FROM flock.models m "
                    "WHERE m.name = 'lin' ORDER BY m.version")
        assert cur.fetchall() == [(1, pytest.approx(11.5)), (2, pytest.approx(22.0))]


def test_classifier_label_proba_and_text_labels(conn):
    assert one(conn, "SELECT flock.predict('stump', ARRAY[0, 0.2]::float4[])") == 0
    assert one(conn, "SELECT flock.predict('stump', ARRAY[0, 0.7]::float4[])") == 1
    assert one(conn, "SELECT flock.predict_proba('stump', ARRAY[0, 0.7]::float4[])") == [pytest.approx(0.1), pytest.approx(0.9)]
    assert one(conn, "SELECT flock.predict_label('stump', ARRAY[0, 0.7]::float4[])") == "1"
    assert one(conn, "SELECT flock.predict_label('colors', ARRAY[0.9, 0]::float4[])") == "blue"
    err = sqlstate(conn, "SELECT flock.predict('colors', ARRAY[0.9, 0]::float4[])")
    assert err.pgcode == "42804" and "predict_label" in err.diag.message_hint
    err = sqlstate(conn, "SELECT flock.predict_proba('lin', ARRAY[1, 1]::float4[])")
    assert err.pgcode == "42804"
    err = sqlstate(conn, "SELECT flock.predict_label('lin', ARRAY[1, 1]::float4[])")
    assert err.pgcode == "42804"


def test_nulls_follow_missing_value_semantics(conn):
    # Trees route missing values (missing_value_tracks_true): a NULL is NaN.
    assert one(conn, "SELECT flock.predict('stump', p) FROM points p WHERE id = 3") == 0
    assert one(conn, "SELECT flock.predict('stump', ARRAY[NULL, NULL]::float4[])") == 0
    # A linear model has no missing-value semantics: a clear error.
    err = sqlstate(conn, "SELECT flock.predict('lin', p) FROM points p WHERE id = 3")
    assert err.pgcode == "22004" and '"b"' in err.diag.message_primary and err.diag.message_hint
    # A NULL record or array: no row, no prediction.
    assert one(conn, "SELECT flock.predict('lin', NULL::float4[])") is None
    err = sqlstate(conn, "SELECT flock.predict(NULL::text, ARRAY[1, 1]::float4[])")
    assert err.pgcode == "22004"


def test_input_errors_are_clear(conn):
    err = sqlstate(conn, "SELECT flock.predict('lin', (SELECT r FROM (SELECT 1 AS a, 2 AS c) r))")
    assert err.pgcode == "42703" and '"b"' in err.diag.message_primary and err.diag.message_hint
    err = sqlstate(conn, "SELECT flock.predict('lin', (SELECT r FROM (SELECT 1 AS a, 'x'::text AS b) r))")
    assert err.pgcode == "42804" and err.diag.message_hint
    err = sqlstate(conn, "SELECT flock.predict('lin', ARRAY[1, 2, 3]::float4[])")
    assert err.pgcode == "22023" and "3" in err.diag.message_primary
    err = sqlstate(conn, "SELECT flock.predict('nosuch', ARRAY[1]::float4[])")
    assert err.pgcode == "42704" and err.diag.message_hint
    err = sqlstate(conn, "SELECT flock.predict('lin@9', ARRAY[1, 1]::float4[])")
    assert err.pgcode == "42704" and "1, 2" in err.diag.message_hint
    err = sqlstate(conn, "SELECT flock.predict('lin@x', ARRAY[1, 1]::float4[])")
    assert err.pgcode == "22023"


def test_cache_sees_new_and_dropped_versions_from_other_sessions(conn, cluster, dbname):
    one(conn, "SELECT flock.register_model('moving', %s)", (linear_regressor([1.0], 0.0),))
    reader = psycopg2.connect(cluster.dsn(dbname))
    reader.autocommit = True
    try:
        assert one(reader, "SELECT flock.predict('moving', ARRAY[5]::float4[])") == pytest.approx(5.0)
        one(conn, "SELECT flock.register_model('moving', %s)", (linear_regressor([3.0], 0.0),))
        assert one(reader, "SELECT flock.predict('moving', ARRAY[5]::float4[])") == pytest.approx(15.0)
        one(conn, "SELECT flock.drop_model('moving', 2)")
        assert one(reader, "SELECT flock.predict('moving', ARRAY[5]::float4[])") == pytest.approx(5.0)
        one(conn, "SELECT flock.drop_model('moving')")
        err = sqlstate(reader, "SELECT flock.predict('moving', ARRAY[5]::float4[])")
        assert err.pgcode == "42704"
    finally:
        reader.close()


def test_one_query_resolves_the_model_once(conn):
    # A query over many rows gives the same answers as row-by-row calls and sees one model version.
    with conn.cursor() as cur:
        cur.execute("SELECT sum(flock.predict('lin@1', ARRAY[i, 1]::float4[])) FROM generate_series(1, 20000) i")
        assert cur.fetchone()[0] == pytest.approx(sum(i + 10.5 for i in range(1, 20001)))


def test_parallel_query(conn):
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE big AS SELECT i AS a, (i % 7)::float8 AS b FROM generate_series(1, 200000) i")
        cur.execute("ANALYZE big")
        cur.execute("SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; "
                    "SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2")
        cur.execute("EXPLAIN SELECT sum(flock.predict('lin@1', t)) FROM big t")
        plan = "\n".join(r[0] for r in cur.fetchall())
        assert "Gather" in plan
        cur.execute("SELECT sum(flock.predict('lin@1', t)) FROM big t")
        got = cur.fetchone()[0]
        cur.execute("RESET ALL")
        cur.execute("SELECT sum(a + 10 * b + 0.5) FROM big")
        assert got == pytest.approx(cur.fetchone()[0], rel=1e-9)


def test_query_cancel(conn):
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = '300ms'")
        with pytest.raises(psycopg2.errors.QueryCanceled):
            cur.execute("SELECT sum(flock.predict('lin@1', ARRAY[i, 1]::float4[])) FROM generate_series(1, 100000000) i")
        cur.execute("RESET statement_timeout")


def test_a_query_resolves_and_compiles_once_not_per_row(cluster, dbname):
    fresh = psycopg2.connect(cluster.dsn(dbname))
    fresh.autocommit = True
    try:
        before = one(fresh, "SELECT flock.cache_stats()")
        one(fresh, "SELECT sum(flock.predict('lin@1', ARRAY[i, 1]::float4[])) FROM generate_series(1, 5000) i")
        after = one(fresh, "SELECT flock.cache_stats()")
        assert after["resolutions"] - before["resolutions"] == 1
        assert after["compiles"] - before["compiles"] <= 1
        # A second query finds the compiled model in the backend's cache.
        one(fresh, "SELECT sum(flock.predict('lin@1', ARRAY[i, 1]::float4[])) FROM generate_series(1, 5000) i")
        again = one(fresh, "SELECT flock.cache_stats()")
        assert again["compiles"] == after["compiles"]
        # Model values from a table: recognised per row without re-hashing or re-compiling.
        one(fresh, "SELECT sum(flock.predict(m.model, ARRAY[i, 1]::float4[])) FROM generate_series(1, 5000) i, "
                   "flock.models m WHERE m.name = 'lin' AND m.version = 1")
        last = one(fresh, "SELECT flock.cache_stats()")
        assert last["compiles"] == again["compiles"]
    finally:
        fresh.close()


def test_tensor_size_limit(conn):
    with conn.cursor() as cur:
        cur.execute("SET flock.max_tensor_elements = 1")
        try:
            with pytest.raises(psycopg2.Error) as err:
                cur.execute("SELECT flock.predict('lin@1', ARRAY[1, 1]::float4[])")
            assert err.value.pgcode == "54000" and err.value.diag.message_hint
        finally:
            cur.execute("RESET flock.max_tensor_elements")
        cur.execute("SELECT flock.predict('lin@1', ARRAY[1, 1]::float4[])")
        assert cur.fetchone()[0] == pytest.approx(11.5)
