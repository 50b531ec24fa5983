"""Inference capture: per-model audit policies, what the log records (time, role, version, query id,
input, output) on the batched and per-row paths and in parallel workers, what survives a rollback,
sampling, access to the log, and the errors."""
import json
import math
import os
import struct
import time

import psycopg2
import pytest

from onnx import TensorProto

from onnx_builders import linear_regressor, stump_classifier
from pgcluster import PG_BIN, Cluster
from test_catalog import one, rows, run, sqlstate

MODELS_DIR = os.environ.get("FLOCK_MODELS_DIR", "")

ROLES = ("aud_owner", "aud_user", "aud_stranger")


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def flush(conn):
    assert one(conn, "SELECT flock.audit_flush('60 seconds')") is True


def logged(conn, model, where="true"):
    """Predictions recorded for `model`, one row each, read as the superuser."""
    flush(conn)
    return rows(conn, f"SELECT logged_at, role, model_version, query_id, function, input, output "
                      f"FROM flock.inference_log_rows WHERE model_name = %s AND {where} "
                      f"ORDER BY logged_at, row_no", (model,))


def clear_log(conn):
    flush(conn)
    run(conn, "DELETE FROM flock.inference_log")


@pytest.fixture(scope="module", autouse=True)
def setup(cluster, dbname):
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        for role in ROLES:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if not cur.fetchone():
                cur.execute(f"CREATE ROLE {role} LOGIN")
        cur.execute("SELECT flock.register_model('lin', %s)", (linear_regressor([1.0, 10.0], 0.5, ["a", "b"]),))
        cur.execute("SELECT flock.register_model('lin', %s)", (linear_regressor([2.0, 20.0], 1.0, ["a", "b"]),))
        cur.execute("SELECT flock.register_model('stump', %s)", (stump_classifier(1, 2.0),))
        cur.execute("CREATE TABLE pts AS SELECT i AS id, (i % 50)::real AS a, (i % 7)::float8 AS b "
                    "FROM generate_series(1, 5000) i")
        cur.execute("ANALYZE pts")
        cur.execute("GRANT SELECT ON pts TO PUBLIC")
    conn.close()


@pytest.fixture
def connect(connect_as):
    return connect_as


@pytest.fixture(autouse=True)
def policies_off(conn):
    yield
    for (name,) in rows(conn, "SELECT name FROM flock.audit_policies WHERE mode <> 'off'"):
        one(conn, "SELECT flock.set_audit(%s, 'off')", (name,))


def test_set_audit_records_policy_and_history(conn):
    assert one(conn, "SELECT flock.set_audit('lin', 'sample', 0.25)") == {"model": "lin", "mode": "sample",
                                                                         "sample_rate": 0.25}
    assert one(conn, "SELECT flock.set_audit('lin', 'all')") == {"model": "lin", "mode": "all", "sample_rate": 1}
    one(conn, "SELECT flock.set_audit('lin', 'all')")  # no change, no history row
    one(conn, "SELECT flock.set_audit('lin', 'off')")
    assert rows(conn, "SELECT mode, sample_rate, set_by FROM flock.audit_policies WHERE name = 'lin'") == [
        ("off", 0.0, "postgres")]
    history = rows(conn, "SELECT from_mode, from_rate, to_mode, to_rate, changed_by FROM flock.audit_policy_history "
                         "WHERE name = 'lin' ORDER BY id")
    assert history[-3:] == [(None, None, "sample", 0.25, "postgres"), ("sample", 0.25, "all", 1.0, "postgres"),
                            ("all", 1.0, "off", 0.0, "postgres")]


@pytest.mark.parametrize("args", [
    "'lin', 'everything'", "'lin', NULL", "'lin', 'sample'", "'lin', 'sample', 0", "'lin', 'sample', 1.5",
    "'lin', 'sample', 'NaN'", "'lin', 'sample', -0.1", "'lin', 'all', 0.5", "'lin', 'off', 0.1", "'lin@1', 'all'"])
def test_set_audit_rejects_bad_arguments(conn, args):
    before = rows(conn, "SELECT count(*) FROM flock.audit_policy_history")
    err = sqlstate(conn, f"SELECT flock.set_audit({args})")
    assert err.pgcode == "22023", err.pgerror
    assert err.diag.message_hint
    assert rows(conn, "SELECT count(*) FROM flock.audit_policy_history") == before


def test_set_audit_needs_manage_and_tells_strangers_nothing(conn, connect):
    err = sqlstate(conn, "SELECT flock.set_audit('no_such_model', 'all')")
    assert err.pgcode == "42704" and err.diag.message_hint  # a superuser sees everything
    assert sqlstate(conn, "SELECT flock.set_audit(NULL, 'all')").pgcode == "22004"
    one(conn, "SELECT flock.grant_model('lin', 'aud_user', 'use')")
    try:
        stranger, user = connect("aud_stranger"), connect("aud_user")
        hidden = sqlstate(stranger, "SELECT flock.set_audit('lin', 'off')")
        missing = sqlstate(stranger, "SELECT flock.set_audit('no_such_model', 'off')")
        assert hidden.pgcode == missing.pgcode == "42501"
        assert hidden.diag.message_primary.replace('"lin"', '"no_such_model"') == missing.diag.message_primary
        assert hidden.diag.message_detail == missing.diag.message_detail and hidden.diag.message_hint == missing.diag.message_hint
        err = sqlstate(user, "SELECT flock.set_audit('lin', 'off')")
        assert err.pgcode == "42501" and "audit policy" in err.diag.message_primary and err.diag.message_hint
        one(conn, "SELECT flock.grant_model('lin', 'aud_user', 'manage')")
        assert one(user, "SELECT flock.set_audit('lin', 'all')")["mode"] == "all"
        assert one(conn, "SELECT changed_by FROM flock.audit_policy_history ORDER BY id DESC LIMIT 1") == "aud_user"
    finally:
        one(conn, "SELECT flock.revoke_model('lin', 'aud_user')")


def test_all_records_every_prediction_batched_and_per_row(conn):
    one(conn, "SELECT flock.set_audit('lin', 'all')")
    expected = {i: (i % 50, i % 7, (i % 50) * 2.0 + (i % 7) * 20.0 + 1.0) for i in range(1, 5001)}
    for batching in ("on", "off"):
        clear_log(conn)
        run(conn, f"SET flock.batching = {batching}")
        total = one(conn, "SELECT sum(flock.predict('lin', t)) FROM pts t")
        got = logged(conn, "lin")
        assert len(got) == 5000, batching
        assert len({(r[0], r[3]) for r in got}) == 1  # one statement: one time and query id
        assert all(r[1] == "postgres" and r[2] == 2 and r[4] == "predict" and r[3] is not None for r in got)
        assert sorted((r[5]["a"], r[5]["b"], r[6]) for r in got) == sorted(expected.values())
        assert total == pytest.approx(sum(v[2] for v in expected.values()))
        # Stored one row per batch of the statement, not one per prediction, when batched.
        n_log_rows = one(conn, "SELECT count(*) FROM flock.inference_log WHERE model_name = 'lin'")
        assert n_log_rows <= (10 if batching == "on" else 5000)
    run(conn, "RESET flock.batching")


def test_other_functions_record_their_outputs(conn):
    one(conn, "SELECT flock.set_audit('stump', 'all')")
    clear_log(conn)
    got = rows(conn, "SELECT flock.predict_proba('stump', ARRAY[a, b]::float4[]), flock.predict_label('stump', ROW(a, b)), "
                     "flock.predict_tensor('stump', ARRAY[a, b]::float4[]) FROM pts WHERE id <= 20 ORDER BY id")
    log = logged(conn, "stump")
    by_function = {}
    for r in log:
        by_function.setdefault(r[4], []).append(r)
    assert {k: len(v) for k, v in by_function.items()} == {"predict_proba": 20, "predict_label": 20, "predict_tensor": 20}
    assert sorted(r[6] for r in by_function["predict_proba"]) == sorted(list(g[0]) for g in got)
    assert sorted(r[6] for r in by_function["predict_label"]) == sorted(g[1] for g in got)
    # predict_tensor returns real[]; the log keeps the model's float output exactly (as float8).
    assert sorted(tuple(map(f32, r[6])) for r in by_function["predict_tensor"]) == sorted(
        tuple(map(f32, g[2])) for g in got)
    # Array input, model without feature names: the input is a JSON array in feature order.
    assert sorted(r[5] for r in by_function["predict_proba"]) == sorted([i % 50, i % 7] for i in range(1, 21))


def test_the_log_survives_rollback_and_errors(conn):
    one(conn, "SELECT flock.set_audit('lin', 'all')")
    clear_log(conn)
    conn.autocommit = False
    try:
        one(conn, "SELECT count(flock.predict('lin', t)) FROM pts t WHERE id <= 100")
        conn.rollback()
        with pytest.raises(psycopg2.errors.DivisionByZero):
            with conn.cursor() as cur:  # scores a batch, then fails
                cur.execute("SELECT flock.predict('lin', t), 1 / (id - 3000) FROM pts t WHERE id <= 3000")
        conn.rollback()
    finally:
        conn.autocommit = True
    got = logged(conn, "lin")
    statements = {}
    for r in got:
        statements.setdefault((r[0], r[3]), []).append(r)
    assert len(statements) == 2
    sizes = sorted(len(v) for v in statements.values())
    assert sizes[0] == 100 and sizes[1] >= 1


def test_off_and_no_policy_record_nothing(conn):
    clear_log(conn)
    one(conn, "SELECT flock.set_audit('lin', 'all')")
    one(conn, "SELECT flock.set_audit('lin', 'off')")
    one(conn, "SELECT sum(flock.predict('lin', t)) FROM pts t")
    one(conn, "SELECT sum(flock.predict('stump', ROW(a, b))) FROM pts t")  # no policy row
    flush(conn)
    assert one(conn, "SELECT count(*) FROM flock.inference_log") == 0


def test_sample_records_about_the_rate(conn):
    one(conn, "SELECT flock.set_audit('lin', 'sample', 0.25)")
    clear_log(conn)
    for batching in ("on", "off"):
        run(conn, f"SET flock.batching = {batching}")
        one(conn, "SELECT sum(flock.predict('lin', t)) FROM pts t")
    run(conn, "RESET flock.batching")
    n = len(logged(conn, "lin"))
    mean, sd = 10000 * 0.25, math.sqrt(10000 * 0.25 * 0.75)
    assert abs(n - mean) < 6 * sd, n


def test_role_version_and_query_id(conn, connect):
    one(conn, "SELECT flock.set_audit('lin', 'all')")
    one(conn, "SELECT flock.grant_model('lin', 'aud_user', 'use')")
    one(conn, "SELECT flock.set_alias('lin', 'champion', 1)")
    run(conn, """CREATE OR REPLACE FUNCTION definer_predict(x real) RETURNS float8
                 LANGUAGE sql SECURITY DEFINER AS $$ SELECT flock.predict('lin', ARRAY[x, 1]::float4[]) $$""")
    try:
        clear_log(conn)
        user = connect("aud_user")
        one(user, "SELECT flock.predict('lin@champion', ARRAY[1, 1]::float4[])")
        one(user, "SELECT definer_predict(2)")  # runs as postgres; the log names the session's role
        run(conn, "SET ROLE aud_user")
        try:
            one(conn, "SELECT flock.predict('lin@1', ARRAY[3, 1]::float4[])")
        finally:
            run(conn, "RESET ROLE")
        got = logged(conn, "lin")
        assert [(r[1], r[2], r[5]["a"]) for r in got] == [("aud_user", 1, 1), ("aud_user", 2, 2), ("aud_user", 1, 3)]
        assert all(isinstance(r[3], int) and r[3] != 0 for r in got)
        # Query ids identify the normalized statement (constants aside), as in pg_stat_statements.
        assert got[0][3] == got[2][3] != got[1][3]
        assert len({r[0] for r in got}) == 3  # three statements
    finally:
        one(conn, "SELECT flock.drop_alias('lin', 'champion')")
        one(conn, "SELECT flock.revoke_model('lin', 'aud_user')")


def test_a_model_value_is_audited_like_its_name(conn):
    one(conn, "SELECT flock.set_audit('lin', 'all')")
    clear_log(conn)
    one(conn, "SELECT sum(flock.predict(m.model, ARRAY[t.a, t.b]::float4[])) FROM pts t, flock.models m "
              "WHERE m.name = 'lin' AND m.version = 1 AND t.id <= 10")
    got = logged(conn, "lin")
    assert len(got) == 10 and {r[2] for r in got} == {1}


def test_table_rows_read_from_numeric_columns_are_recorded_like_per_row(conn):
    """Batched, a table row whose features are all numbers goes straight from the columns into the
    model: the log holds the same inputs (every numeric type, NULLs) and outputs as per row."""
    names = ["r", "f8", "i2", "i4", "i8", "flag"]
    run(conn, "CREATE TABLE kin AS SELECT i AS id, ((i % 50) / 8.0)::real AS r, (i % 13) * 0.1::float8 AS f8, "
              "(i % 9)::int2 AS i2, (i % 11 - 5)::int4 AS i4, i::int8 * 1099511627 AS i8, i % 3 = 0 AS flag "
              "FROM generate_series(1, 3000) i")
    run(conn, "CREATE TABLE kin_holes AS SELECT * FROM kin")
    run(conn, "UPDATE kin_holes SET i8 = NULL WHERE id % 97 = 0")
    run(conn, "UPDATE kin_holes SET r = NULL, flag = NULL WHERE id % 89 = 0")
    one(conn, "SELECT flock.register_model('kin_tree', %s)",
        (stump_classifier(4, 1e12, n_features=6, feature_names=names),))
    one(conn, "SELECT flock.register_model('kin_double', %s)",
        (linear_regressor([1.5, -2.0, 0.25, 3.0, 1e-9, 7.0], 0.5, names, input_type=TensorProto.DOUBLE),))
    for model, table in (("kin_tree", "kin_holes"), ("kin_double", "kin")):
        one(conn, f"SELECT flock.set_audit('{model}', 'all')")
        got = {}
        for batching in ("on", "off"):
            clear_log(conn)
            run(conn, f"SET flock.batching = {batching}")
            one(conn, f"SELECT sum(flock.predict('{model}', t)) FROM {table} t")
            got[batching] = sorted(repr((r[5], r[6])) for r in logged(conn, model))
        run(conn, "RESET flock.batching")
        assert len(got["on"]) == 3000 and got["on"] == got["off"], model
        if model == "kin_tree":  # NULL features are JSON nulls: i8 in 30 rows, r and flag in 33 others
            assert sum("'i8': None" in r or "'r': None" in r for r in got["on"]) == 63


def test_a_policy_change_reaches_open_sessions(conn, connect):
    one(conn, "SELECT flock.grant_model('lin', 'aud_user', 'use')")
    try:
        user = connect("aud_user")
        run(user, "PREPARE p AS SELECT flock.predict('lin', ARRAY[1, 1]::float4[])")
        run(user, "EXECUTE p")
        clear_log(conn)
        one(conn, "SELECT flock.set_audit('lin', 'all')")
        run(user, "EXECUTE p")
        assert len(logged(conn, "lin")) == 1
    finally:
        one(conn, "SELECT flock.revoke_model('lin', 'aud_user')")


def test_parallel_workers_record_their_rows(conn):
    one(conn, "SELECT flock.set_audit('lin', 'all')")
    run(conn, "CREATE TABLE IF NOT EXISTS big AS SELECT i AS id, (i % 10)::real AS a, 1::real AS b "
              "FROM generate_series(1, 200000) i")
    run(conn, "ANALYZE big")
    run(conn, "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0; "
              "SET max_parallel_workers_per_gather = 2")
    try:
        for batching in ("on", "off"):
            clear_log(conn)
            run(conn, f"SET flock.batching = {batching}")
            plan = "\n".join(r[0] for r in rows(conn, "EXPLAIN (ANALYZE, COSTS OFF) "
                                                      "SELECT sum(flock.predict('lin', t)) FROM big t"))
            assert "Workers Launched: 2" in plan, plan
            clear_log(conn)
            assert one(conn, "SELECT sum(flock.predict('lin', t)) FROM big t") == pytest.approx(
                2 * 20000 * 45 + 21 * 200000)
            flush(conn)
            assert one(conn, "SELECT sum(n_rows) FROM flock.inference_log") == 200000
            assert one(conn, "SELECT count(DISTINCT (logged_at, query_id)) FROM flock.inference_log") == 1
    finally:
        run(conn, "RESET parallel_setup_cost; RESET parallel_tuple_cost; RESET min_parallel_table_scan_size; "
                  "RESET max_parallel_workers_per_gather; RESET flock.batching")


def test_reading_the_log_needs_manage(conn, connect):
    one(conn, "SELECT flock.set_audit('lin', 'all')")
    one(conn, "SELECT flock.grant_model('lin', 'aud_user', 'use')")
    one(conn, "SELECT flock.grant_model('lin', 'aud_owner', 'manage')")
    try:
        clear_log(conn)
        user, owner, stranger = connect("aud_user"), connect("aud_owner"), connect("aud_stranger")
        one(user, "SELECT flock.predict('lin', ARRAY[1, 1]::float4[])")
        one(conn, "SELECT flock.predict('lin', ARRAY[123, 4]::float4[])")
        flush(conn)
        # The log's rows: a role sees its own, a manager all of the model's.
        assert one(user, "SELECT count(*) FROM flock.inference_log_rows") == 1
        assert one(owner, "SELECT count(*) FROM flock.inference_log_rows") == 2
        assert one(stranger, "SELECT count(*) FROM flock.inference_log") == 0
        assert sqlstate(stranger, "SELECT * FROM flock.inference_log_default").pgcode == "42501"
        assert sqlstate(stranger, "INSERT INTO flock.inference_log (role, model_name, model_version) "
                                  "VALUES ('x', 'lin', 1)").pgcode == "42501"
        assert len(rows(owner, "SELECT * FROM flock.audit_trail('lin')")) == 2
        assert len(rows(owner, "SELECT * FROM flock.audit_trail('lin@2')")) == 2
        hidden = sqlstate(stranger, "SELECT * FROM flock.audit_trail('lin')")
        missing = sqlstate(stranger, "SELECT * FROM flock.audit_trail('no_such_model')")
        assert hidden.pgcode == missing.pgcode == "42501"
        assert hidden.diag.message_detail == missing.diag.message_detail and hidden.diag.message_hint == missing.diag.message_hint
        err = sqlstate(user, "SELECT * FROM flock.audit_trail('lin')")
        assert err.pgcode == "42501" and "audit trail" in err.diag.message_primary
        # Policies are visible to the model's users; their history to its managers.
        assert one(stranger, "SELECT count(*) FROM flock.audit_policies") == 0
        assert one(user, "SELECT mode FROM flock.audit_policies WHERE name = 'lin'") == "all"
        assert one(user, "SELECT count(*) FROM flock.audit_policy_history") == 0
        assert one(owner, "SELECT count(*) FROM flock.audit_policy_history WHERE name = 'lin'") > 0
    finally:
        one(conn, "SELECT flock.revoke_model('lin', 'aud_user')")
        one(conn, "SELECT flock.revoke_model('lin', 'aud_owner')")


def test_a_revoked_grant_still_fails_with_audit_on(conn, connect):
    one(conn, "SELECT flock.set_audit('lin', 'all')")
    one(conn, "SELECT flock.grant_model('lin', 'aud_user', 'use')")
    user = connect("aud_user")
    assert one(user, "SELECT flock.predict('lin', ARRAY[1, 1]::float4[])") == pytest.approx(23)
    one(conn, "SELECT flock.revoke_model('lin', 'aud_user')")
    for batching in ("on", "off"):
        run(user, f"SET flock.batching = {batching}")
        assert sqlstate(user, "SELECT flock.predict('lin', ARRAY[1, 1]::float4[])").pgcode == "42501"
        assert sqlstate(user, "SELECT sum(flock.predict('lin', t)) FROM pts t").pgcode == "42501"


def test_the_writer_comes_back_after_it_is_stopped(conn):
    one(conn, "SELECT flock.set_audit('lin', 'all')")
    clear_log(conn)
    one(conn, "SELECT sum(flock.predict('lin', t)) FROM pts t")
    pid = one(conn, "SELECT (flock.audit_status()->>'worker_pid')::int")
    if pid:
        one(conn, "SELECT pg_terminate_backend(%s)", (pid,))  # SIGTERM: it stores what it has, then exits
    one(conn, "SELECT sum(flock.predict('lin', t)) FROM pts t")
    got = logged(conn, "lin")
    assert len(got) == 10000
    status = one(conn, "SELECT flock.audit_status()")
    assert status["pending_bytes"] == 0 and status.get("records_discarded", 0) == 0


def test_audit_flush_errors(conn):
    err = sqlstate(conn, "SELECT flock.audit_flush('-1 second')")
    assert err.pgcode == "22023" and err.diag.message_hint
    assert one(conn, "SELECT flock.audit_flush('0 seconds')") in (True, False)


def test_dropping_the_last_version_removes_the_policy(conn):
    one(conn, "SELECT flock.register_model('short_lived', %s)", (linear_regressor([1.0], 0.0),))
    one(conn, "SELECT flock.set_audit('short_lived', 'all')")
    one(conn, "SELECT flock.predict('short_lived', ARRAY[4]::float4[])")
    assert one(conn, "SELECT flock.drop_model('short_lived')") == 1
    assert one(conn, "SELECT count(*) FROM flock.audit_policies WHERE name = 'short_lived'") == 0
    assert rows(conn, "SELECT from_mode, to_mode FROM flock.audit_policy_history WHERE name = 'short_lived' "
                      "ORDER BY id") == [(None, "all"), ("all", None)]
    assert [r[5] for r in logged(conn, "short_lived")] == [[4]]  # the log outlives the model


def test_text_features_are_recorded_as_text(conn):
    """A pipeline with string categories (one ONNX input per column): text inputs land in
    input_text, numbers in input, and the JSON input has both by name."""
    try:
        with open(os.path.join(MODELS_DIR, "manifest.json")) as f:
            entry = next(e for e in json.load(f) if e["name"] == "customers_pipeline_logreg")
        with open(os.path.join(MODELS_DIR, "datasets.json")) as f:
            info = json.load(f)["customers"]
    except (OSError, StopIteration) as e:
        pytest.fail(f"the test models are missing ({e}): run tools/models/make_models.py --out DIR "
                    "and point FLOCK_MODELS_DIR at DIR")
    cols = ", ".join(f'"{c["name"]}" {c["type"]}' for c in info["columns"])
    run(conn, f"CREATE TABLE customers ({cols})")
    with open(os.path.join(MODELS_DIR, info["file"])) as f, conn.cursor() as cur:
        cur.copy_expert("COPY customers FROM STDIN WITH (FORMAT csv, HEADER true)", f)
    with open(os.path.join(MODELS_DIR, entry["file"]), "rb") as f:
        one(conn, "SELECT flock.register_model('cust', %s)", (f.read(),))
    one(conn, "SELECT flock.set_audit('cust', 'all')")
    clear_log(conn)
    got = rows(conn, "SELECT id, plan, region, age, flock.predict_label('cust', c) FROM customers c WHERE id <= 50")
    log = logged(conn, "cust")
    assert len(log) == 50
    def num(v):
        return None if v is None else float(v)
    assert sorted(repr((r[5]["plan"], r[5]["region"], num(r[5]["age"]), r[6])) for r in log) == sorted(
        repr((g[1], g[2], num(g[3]), g[4])) for g in got)
    assert any(r[5]["region"] is None or r[5]["age"] is None for r in log)  # NULL features are JSON nulls
    assert one(conn, "SELECT array_length(input_text, 2) FROM flock.inference_log WHERE model_name = 'cust' LIMIT 1") == 7


def test_records_are_stored_before_the_server_stops():
    """A fast shutdown stops the writer with SIGTERM: it stores what is queued before it exits."""
    c = Cluster(name="flock-audit-stop").start()
    try:
        conn = psycopg2.connect(c.dsn())
        conn.autocommit = True
        run(conn, "CREATE EXTENSION flock")
        one(conn, "SELECT flock.register_model('lin', %s)", (linear_regressor([1.0, 10.0], 0.5, ["a", "b"]),))
        one(conn, "SELECT flock.set_audit('lin', 'all')")
        run(conn, "CREATE TABLE pts AS SELECT (i % 50)::real AS a, (i % 7)::float8 AS b FROM generate_series(1, 300000) i")
        one(conn, "SELECT sum(flock.predict('lin', t)) FROM pts t")  # no flush
        conn.close()
        c._run([f"{PG_BIN}/pg_ctl", "-D", c.datadir, "-m", "fast", "-w", "stop"])
        c.running = False
        opts = (f"-p {c.port} -k {c.sockdir} -c listen_addresses='' -c fsync=off "
                f"-c shared_preload_libraries=flock -c log_min_messages=warning")
        c._run([f"{PG_BIN}/pg_ctl", "-D", c.datadir, "-l", c.logfile, "-o", opts, "-w", "start"])
        c.running = True
        conn = psycopg2.connect(c.dsn())
        conn.autocommit = True
        assert one(conn, "SELECT sum(n_rows) FROM flock.inference_log") == 300000

        # A writer that dies hard makes PostgreSQL reinitialise (records still queued then are
        # lost, like in-flight transactions); capture works again afterwards.
        one(conn, "SELECT flock.predict('lin', ARRAY[1, 1]::float4[])")
        assert one(conn, "SELECT flock.audit_flush()") is True
        pid = one(conn, "SELECT (flock.audit_status()->>'worker_pid')::int")
        assert pid, "the writer lingers for a second after its work"
        conn.close()
        os.kill(pid, 9)
        conn = reconnect_after_crash(c, pid)
        one(conn, "SELECT flock.predict('lin', ARRAY[123, 4]::float4[])")
        assert one(conn, "SELECT flock.audit_flush()") is True
        assert one(conn, "SELECT count(*) FROM flock.inference_log_rows WHERE input = '{\"a\": 123, \"b\": 4}'") == 1
        conn.close()
    finally:
        c.stop()


def test_without_preload_audited_models_are_refused_not_skipped():
    """Loaded only when first used (not in shared_preload_libraries) Flock has no queue: predictions
    of audited models fail with 55000 instead of going unrecorded; others work as before."""
    c = Cluster(name="flock-audit-nopreload").start()
    try:
        conn = psycopg2.connect(c.dsn())
        conn.autocommit = True
        run(conn, "CREATE EXTENSION flock")
        one(conn, "SELECT flock.register_model('lin', %s)", (linear_regressor([1.0, 10.0], 0.5, ["a", "b"]),))
        one(conn, "SELECT flock.register_model('quiet', %s)", (linear_regressor([1.0, 10.0], 0.5, ["a", "b"]),))
        one(conn, "SELECT flock.set_audit('lin', 'all')")
        conn.close()
        c._run([f"{PG_BIN}/pg_ctl", "-D", c.datadir, "-m", "fast", "-w", "stop"])
        c.running = False
        opts = f"-p {c.port} -k {c.sockdir} -c listen_addresses='' -c fsync=off -c log_min_messages=warning"
        c._run([f"{PG_BIN}/pg_ctl", "-D", c.datadir, "-l", c.logfile, "-o", opts, "-w", "start"])
        c.running = True
        conn = psycopg2.connect(c.dsn())
        conn.autocommit = True
        assert one(conn, "SELECT flock.predict('quiet', ARRAY[1, 1]::float4[])") == pytest.approx(11.5)
        for batching in ("on", "off"):
            run(conn, f"SET flock.batching = {batching}")
            err = sqlstate(conn, "SELECT flock.predict('lin', ARRAY[1, 1]::float4[])")
            assert err.pgcode == "55000" and "shared_preload_libraries" in err.diag.message_hint
        assert one(conn, "SELECT flock.audit_status()") == {"available": False}
        assert sqlstate(conn, "SELECT flock.audit_flush()").pgcode == "55000"
        one(conn, "SELECT flock.set_audit('lin', 'off')")
        assert one(conn, "SELECT flock.predict('lin', ARRAY[1, 1]::float4[])") == pytest.approx(11.5)
        conn.close()
    finally:
        c.stop()


def test_the_writer_does_not_hold_up_drop_database(cluster):
    admin = psycopg2.connect(cluster.dsn())
    admin.autocommit = True
    try:
        run(admin, "DROP DATABASE IF EXISTS audit_dropped")
        run(admin, "CREATE DATABASE audit_dropped")
        x = psycopg2.connect(cluster.dsn("audit_dropped"))
        x.autocommit = True
        run(x, "CREATE EXTENSION flock")
        one(x, "SELECT flock.register_model('lin', %s)", (linear_regressor([1.0], 0.0),))
        one(x, "SELECT flock.set_audit('lin', 'all')")
        one(x, "SELECT sum(flock.predict('lin', ARRAY[i]::float4[])) FROM generate_series(1, 20000) i")
        assert one(x, "SELECT flock.audit_flush()") is True
        x.close()
        # The writer is still connected for about a second; DROP DATABASE waits up to 5 s for it.
        run(admin, "DROP DATABASE audit_dropped")
    finally:
        admin.close()


# ------------------------------------------------------------------------------------------------
# Durability: 'async' (default) vs 'sync' (a policy's, or the session's flock.audit_durability).
# ------------------------------------------------------------------------------------------------

def durable_statements(conn):
    return one(conn, "SELECT (flock.audit_status()->>'durable_statements')::bigint")


def writer_pid(conn):
    return one(conn, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'flock audit writer' "
                     "AND datname = current_database()")


def reconnect_after_crash(c, killed_pid, timeout=90):
    """The postmaster reinitialises after a child dies by a signal: wait until it has reaped the
    child (before that a new connection may be one the crash then ends) and takes connections."""
    deadline = time.time() + timeout
    while os.path.exists(f"/proc/{killed_pid}"):
        assert time.time() < deadline
        time.sleep(0.05)
    while True:
        try:
            conn = psycopg2.connect(c.dsn())
            conn.autocommit = True
            one(conn, "SELECT 1")
            return conn
        except psycopg2.Error:
            assert time.time() < deadline, c.server_log()[-2000:]
            time.sleep(0.5)


def test_set_audit_durability_records_policy_and_history(conn):
    assert one(conn, "SELECT flock.set_audit('lin', 'all')") == {"model": "lin", "mode": "all", "sample_rate": 1}
    try:
        assert one(conn, "SELECT flock.set_audit_durability('lin', 'sync')") == {
            "model": "lin", "mode": "all", "sample_rate": 1, "durability": "sync"}
        one(conn, "SELECT flock.set_audit_durability('lin', 'sync')")  # no change, no history row
        # Changing the mode keeps the durability an administrator required.
        one(conn, "SELECT flock.set_audit('lin', 'sample', 0.5)")
        assert rows(conn, "SELECT mode, durability FROM flock.audit_policies WHERE name = 'lin'") == [("sample", "sync")]
        history = rows(conn, "SELECT from_mode, to_mode, from_durability, to_durability FROM flock.audit_policy_history "
                             "WHERE name = 'lin' ORDER BY id")
        assert history[-2:] == [("all", "all", "async", "sync"), ("all", "sample", "sync", "sync")]
        # A model without a policy gets one that records nothing yet.
        one(conn, "SELECT flock.register_model('dur_only', %s)", (linear_regressor([1.0], 0.0),))
        assert one(conn, "SELECT flock.set_audit_durability('dur_only', 'sync')")["mode"] == "off"
        assert one(conn, "SELECT flock.drop_model('dur_only')") == 1
        assert rows(conn, "SELECT from_durability, to_durability FROM flock.audit_policy_history "
                          "WHERE name = 'dur_only' ORDER BY id") == [(None, "sync"), ("sync", None)]
    finally:
        one(conn, "SELECT flock.set_audit_durability('lin', 'async')")


@pytest.mark.parametrize("args", ["'lin', 'always'", "'lin', NULL", "'lin@1', 'sync'"])
def test_set_audit_durability_rejects_bad_arguments(conn, args):
    err = sqlstate(conn, f"SELECT flock.set_audit_durability({args})")
    assert err.pgcode == "22023", err.pgerror
    assert err.diag.message_hint


def test_set_audit_durability_needs_manage(conn, connect):
    one(conn, "SELECT flock.grant_model('lin', 'aud_user', 'use')")
    try:
        user, stranger = connect("aud_user"), connect("aud_stranger")
        assert sqlstate(user, "SELECT flock.set_audit_durability('lin', 'async')").pgcode == "42501"
        hidden = sqlstate(stranger, "SELECT flock.set_audit_durability('lin', 'async')")
        missing = sqlstate(stranger, "SELECT flock.set_audit_durability('no_such_model', 'async')")
        assert hidden.pgcode == missing.pgcode == "42501"
        assert sqlstate(user, "SET flock.audit_durability = 'eventually'").pgcode == "22023"
    finally:
        one(conn, "SELECT flock.revoke_model('lin', 'aud_user')")


@pytest.mark.parametrize("call", ["set_audit(NULL, 'all')", "set_audit_durability(NULL, 'sync')",
                                  "set_audit('lin@1', 'all')", "set_audit_durability('lin@1', 'sync')"])
def test_policy_functions_check_the_model_argument_alike(conn, connect, call):
    """set_audit and set_audit_durability share their model-argument checks: a NULL model (with a
    hint showing the function called) or a versioned reference is refused before any lookup, so a
    stranger gets the same answer as the model's manager."""
    fn = call.split("(")[0]
    for who in (conn, connect("aud_stranger")):
        err = sqlstate(who, f"SELECT flock.{call}")
        if "NULL" in call:
            assert err.pgcode == "22004", err.pgerror
            assert err.diag.message_primary == "model must not be NULL"
            assert err.diag.message_hint.startswith(f"Pass the model name, e.g. flock.{fn}('churn', ")
        else:
            assert err.pgcode == "22023", err.pgerror
            assert err.diag.message_primary == 'an audit policy is set on a model name, not on "lin@1"'
            assert err.diag.message_hint == "A policy covers every version of a model: use 'lin'."


def test_a_session_cannot_weaken_a_sync_policy(conn, connect):
    """As an unprivileged role with 'use': the policy's 'sync' holds whatever the session sets; the
    session may ask for 'sync' on its own; with neither, its statements do not wait. Waiting is seen
    in audit_status()'s per-session count, and in records being in the log when the statement
    returns (no flush)."""
    one(conn, "SELECT flock.set_audit('lin', 'all')")
    one(conn, "SELECT flock.grant_model('lin', 'aud_user', 'use')")
    try:
        clear_log(conn)
        user = connect("aud_user")
        query = "SELECT sum(flock.predict('lin', t)) FROM pts t"
        for batching in ("on", "off"):
            run(user, f"SET flock.batching = {batching}")
            # Policy 'async', session 'async': no wait.
            run(user, "SET flock.audit_durability = async")
            before = durable_statements(user)
            one(user, query)
            assert durable_statements(user) == before
            # Policy 'async', session 'sync': the session's statements wait.
            run(user, "SET flock.audit_durability = sync")
            clear_log(conn)
            one(user, query)
            assert durable_statements(user) == before + 1
            assert one(user, "SELECT sum(n_rows) FROM flock.inference_log") == 5000
            # Policy 'sync', session 'async': still waits.
            one(conn, "SELECT flock.set_audit_durability('lin', 'sync')")
            run(user, "SET flock.audit_durability = async")
            clear_log(conn)
            one(user, query)
            assert durable_statements(user) == before + 2
            assert one(user, "SELECT sum(n_rows) FROM flock.inference_log") == 5000
            run(user, "RESET flock.audit_durability")
            one(user, "SELECT flock.predict('lin', ARRAY[1, 2]::float4[])")
            assert durable_statements(user) == before + 3
            # ... and for a flock.model value with the same bytes.
            one(user, "SELECT flock.predict(m.model, ARRAY[3333, 44]::float4[]) FROM flock.models m "
                      "WHERE m.name = 'lin' AND m.version = 2")
            assert durable_statements(user) == before + 4
            assert one(user, "SELECT count(*) FROM flock.inference_log_rows WHERE input = '{\"a\": 3333, \"b\": 44}'") == 1
            one(conn, "SELECT flock.set_audit_durability('lin', 'async')")
    finally:
        one(conn, "SELECT flock.set_audit_durability('lin', 'async')")
        one(conn, "SELECT flock.revoke_model('lin', 'aud_user')")


def test_sync_records_survive_rollback(cluster, dbname, conn):
    one(conn, "SELECT flock.set_audit('lin', 'all')")
    one(conn, "SELECT flock.set_audit_durability('lin', 'sync')")
    try:
        clear_log(conn)
        tx = psycopg2.connect(cluster.dsn(dbname))  # not autocommit: one transaction, rolled back
        try:
            assert one(tx, "SELECT sum(flock.predict('lin', t)) FROM pts t") == pytest.approx(
                2 * 100 * (50 * 49 / 2) + 20 * sum(i % 7 for i in range(1, 5001)) + 5000)
            # Durable when the statement returned, before the transaction ends: another session sees them.
            assert one(conn, "SELECT sum(n_rows) FROM flock.inference_log") == 5000
            one(tx, "SELECT flock.predict('lin', ARRAY[7, 7]::float4[])")
            tx.rollback()
        finally:
            tx.close()
        assert one(conn, "SELECT sum(n_rows) FROM flock.inference_log") == 5001
        assert one(conn, "SELECT count(*) FROM flock.inference_log_rows WHERE input = '{\"a\": 7, \"b\": 7}'") == 1
    finally:
        one(conn, "SELECT flock.set_audit_durability('lin', 'async')")


def test_sync_covers_cursors_and_parallel_workers(cluster, dbname, conn):
    one(conn, "SELECT flock.set_audit('lin', 'all')")
    one(conn, "SELECT flock.set_audit_durability('lin', 'sync')")
    run(conn, "CREATE TABLE IF NOT EXISTS big_sync AS SELECT i AS id, (i % 10)::real AS a, 1::real AS b "
              "FROM generate_series(1, 200000) i")
    run(conn, "ANALYZE big_sync")
    try:
        # A cursor: what a FETCH returned is durable when the FETCH returns.
        clear_log(conn)
        tx = psycopg2.connect(cluster.dsn(dbname))
        try:
            run(tx, "DECLARE c CURSOR FOR SELECT flock.predict('lin', t) FROM pts t")
            assert len(rows(tx, "FETCH 10 FROM c")) == 10
            assert one(conn, "SELECT sum(n_rows) FROM flock.inference_log") >= 10
            tx.rollback()
        finally:
            tx.close()
        # Parallel workers wait for their own records before they finish.
        run(conn, "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0; "
                  "SET max_parallel_workers_per_gather = 2")
        for batching in ("on", "off"):
            run(conn, f"SET flock.batching = {batching}")
            clear_log(conn)
            plan = "\n".join(r[0] for r in rows(conn, "EXPLAIN (ANALYZE, COSTS OFF) "
                                                      "SELECT sum(flock.predict('lin', t)) FROM big_sync t"))
            assert "Workers Launched: 2" in plan, plan
            assert one(conn, "SELECT sum(n_rows) FROM flock.inference_log") == 200000  # no flush
    finally:
        run(conn, "RESET parallel_setup_cost; RESET parallel_tuple_cost; RESET min_parallel_table_scan_size; "
                  "RESET max_parallel_workers_per_gather; RESET flock.batching")
        one(conn, "SELECT flock.set_audit_durability('lin', 'async')")


def test_sync_wait_is_bounded_and_cancellable(cluster, dbname, conn):
    """A writer that cannot store (its insert waits for a lock) makes a 'sync' statement fail after
    flock.audit_sync_timeout (or statement_timeout) instead of returning; the records stay queued
    and are stored once the lock goes."""
    one(conn, "SELECT flock.set_audit('lin', 'all')")
    one(conn, "SELECT flock.set_audit_durability('lin', 'sync')")
    clear_log(conn)
    locker = psycopg2.connect(cluster.dsn(dbname))
    try:
        run(locker, "LOCK TABLE flock.inference_log IN ACCESS EXCLUSIVE MODE")
        run(conn, "SET flock.audit_sync_timeout = '300ms'")
        t0 = time.time()
        err = sqlstate(conn, "SELECT flock.predict('lin', ARRAY[1, 1]::float4[])")
        assert err.pgcode == "55000" and "flock.audit_sync_timeout" in err.diag.message_primary, err.pgerror
        assert err.diag.message_hint
        assert 0.25 < time.time() - t0 < 5
        run(conn, "RESET flock.audit_sync_timeout")
        run(conn, "SET statement_timeout = '300ms'")
        t0 = time.time()
        assert sqlstate(conn, "SELECT flock.predict('lin', ARRAY[2, 2]::float4[])").pgcode == "57014"
        assert time.time() - t0 < 5
        run(conn, "RESET statement_timeout")
        locker.rollback()
        assert len(logged(conn, "lin")) == 2  # failed statements' records are still stored
    finally:
        locker.close()
        run(conn, "RESET flock.audit_sync_timeout; RESET statement_timeout")
        one(conn, "SELECT flock.set_audit_durability('lin', 'async')")


def test_what_a_killed_writer_loses_in_each_mode():
    """SIGKILL of the audit writer right after a statement returned. PostgreSQL then reinitialises
    shared memory (any child dying by a signal does that), so the queue goes with it.
    'sync': every record of the statement is in the log afterwards, also for a transaction the crash
    rolled back. 'async' (README: records still queued at the crash are lost, committed statement or
    not; stored ones stay, once each): what is there is a subset of the statement's predictions,
    each exactly once and correct; with the writer held up, none of them."""
    n = 100000
    c = Cluster(name="flock-audit-kill").start()
    try:
        conn = psycopg2.connect(c.dsn())
        conn.autocommit = True
        run(conn, "CREATE EXTENSION flock")
        one(conn, "SELECT flock.register_model('lin', %s)", (linear_regressor([1.0, 10.0], 0.5, ["a", "b"]),))
        one(conn, "SELECT flock.set_audit('lin', 'all')")
        # a is unique per row (exact in float32), so each prediction can be told apart.
        run(conn, f"CREATE TABLE pts AS SELECT i::real AS a, (i % 7)::real AS b FROM generate_series(1, {n}) i")

        def check_log(expect_all):
            """Each stored prediction once, with the output the model gives for its input."""
            seen = set()
            for inputs, outputs in rows(conn, "SELECT input_real, output FROM flock.inference_log"):
                for (a, b), (out,) in zip(inputs, outputs):
                    assert a not in seen, f"prediction for a = {a} stored twice"
                    seen.add(a)
                    assert out == pytest.approx(a + 10 * b + 0.5)
            if expect_all:
                assert len(seen) == n
            else:
                assert seen <= set(float(i) for i in range(1, n + 1))
            return len(seen)

        def kill_writer_now(conn):
            pid = writer_pid(conn)
            assert pid, "the writer lingers for a second after storing"
            os.kill(pid, 9)
            conn.close()
            return reconnect_after_crash(c, pid)

        # 'sync' by policy: a committed statement.
        one(conn, "SELECT flock.set_audit_durability('lin', 'sync')")
        one(conn, "SELECT sum(flock.predict('lin', t)) FROM pts t")
        conn = kill_writer_now(conn)
        check_log(True)
        run(conn, "TRUNCATE flock.inference_log_default")

        # 'sync' by the session, inside a transaction the crash rolls back.
        one(conn, "SELECT flock.set_audit_durability('lin', 'async')")
        tx = psycopg2.connect(c.dsn())
        run(tx, "SET flock.audit_durability = sync")
        one(tx, "SELECT sum(flock.predict('lin', t)) FROM pts t")
        conn = kill_writer_now(conn)
        tx.close()
        check_log(True)
        run(conn, "TRUNCATE flock.inference_log_default")

        # 'async': whatever was still queued is lost; nothing is wrong or twice.
        one(conn, "SELECT sum(flock.predict('lin', t)) FROM pts t")
        conn = kill_writer_now(conn)
        kept = check_log(False)
        print(f"async: {n - kept} of {n} records lost to the crash")
        status = one(conn, "SELECT flock.audit_status()")
        assert status["pending_bytes"] == 0  # a fresh queue: nothing will turn up later
        assert one(conn, "SELECT flock.audit_flush()") is True
        assert check_log(False) == kept
        run(conn, "TRUNCATE flock.inference_log_default")

        # 'async' with the writer held up (its insert waits for a lock): the statement returned and
        # committed, but none of its records had been stored, and the crash loses them all.
        locker = psycopg2.connect(c.dsn())
        run(locker, "LOCK TABLE flock.inference_log IN ACCESS EXCLUSIVE MODE")
        one(conn, "SELECT sum(flock.predict('lin', t)) FROM pts t")
        assert one(conn, "SELECT (flock.audit_status()->>'pending_bytes')::bigint") > 0
        conn = kill_writer_now(conn)
        locker.close()
        assert check_log(False) == 0
        conn.close()
    finally:
        c.stop()


def test_a_record_the_writer_cannot_store_fails_a_sync_statement(conn):
    """The writer's transaction fails (here a trigger refuses one model's rows): it retries record by
    record, so only the refused record is discarded (WARNING, counted); a 'sync' statement that
    queued it fails instead of returning, and the other model's records of the statement are stored."""
    one(conn, "SELECT flock.set_audit('lin', 'all')")
    one(conn, "SELECT flock.set_audit('stump', 'all')")
    clear_log(conn)
    run(conn, "CREATE FUNCTION refuse_stump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
              "IF NEW.model_name = 'stump' THEN RAISE EXCEPTION 'stump refused'; END IF; RETURN NEW; END $$")
    run(conn, "CREATE TRIGGER refuse_stump BEFORE INSERT ON flock.inference_log_default "
              "FOR EACH ROW EXECUTE FUNCTION refuse_stump()")
    try:
        before = one(conn, "SELECT flock.audit_status()").get("records_discarded", 0)
        run(conn, "SET flock.audit_durability = sync")
        err = sqlstate(conn, "SELECT flock.predict('lin', ARRAY[5555, 1]::float4[]), "
                             "flock.predict('stump', ARRAY[5, 5]::float4[])")
        assert err.pgcode == "55000" and "could not be stored" in err.diag.message_primary, err.pgerror
        assert err.diag.message_hint
        assert one(conn, "SELECT count(*) FROM flock.inference_log_rows WHERE input = '{\"a\": 5555, \"b\": 1}'") == 1
        assert one(conn, "SELECT count(*) FROM flock.inference_log WHERE model_name = 'stump'") == 0
        assert one(conn, "SELECT flock.audit_status()")["records_discarded"] == before + 1
        # The next statement is not blamed for it.
        one(conn, "SELECT flock.predict('lin', ARRAY[6666, 1]::float4[])")
    finally:
        run(conn, "RESET flock.audit_durability")
        run(conn, "DROP TRIGGER refuse_stump ON flock.inference_log_default")
        run(conn, "DROP FUNCTION refuse_stump()")


def test_sync_covers_do_blocks_and_procedures(conn):
    """Predictions made by PL/pgSQL expressions (no executor run of their own) are waited for when
    the DO or CALL that made them ends, or when a procedure commits."""
    one(conn, "SELECT flock.set_audit('lin', 'all')")
    one(conn, "SELECT flock.set_audit_durability('lin', 'sync')")
    try:
        clear_log(conn)
        before = durable_statements(conn)
        run(conn, "DO $$ DECLARE x float8; BEGIN x := flock.predict('lin', ARRAY[7001, 1]::float4[]); END $$")
        assert durable_statements(conn) == before + 1
        assert one(conn, "SELECT count(*) FROM flock.inference_log_rows WHERE input = '{\"a\": 7001, \"b\": 1}'") == 1
        run(conn, "CREATE PROCEDURE score_and_commit() LANGUAGE plpgsql AS $$ DECLARE x float8; BEGIN "
                  "x := flock.predict('lin', ARRAY[7002, 1]::float4[]); COMMIT; "
                  "x := flock.predict('lin', ARRAY[7003, 1]::float4[]); END $$")
        run(conn, "CALL score_and_commit()")
        assert durable_statements(conn) == before + 3  # at the COMMIT inside, and when CALL returned
        assert one(conn, "SELECT count(*) FROM flock.inference_log_rows "
                         "WHERE input IN ('{\"a\": 7002, \"b\": 1}', '{\"a\": 7003, \"b\": 1}')") == 2
    finally:
        run(conn, "DROP PROCEDURE IF EXISTS score_and_commit()")
        one(conn, "SELECT flock.set_audit_durability('lin', 'async')")
