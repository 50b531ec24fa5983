"""The model type and the catalog: registration, versions, immutability, drop, info, dump/restore."""
import hashlib
import json
import os
import subprocess

import psycopg2
import pytest

from onnx_builders import linear_regressor, stump_classifier, unsupported_op_model

PG_BIN = "/usr/lib/postgresql/15/bin"


def sqlstate(conn, sql, args=None):
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.Error) as err:
            cur.execute(sql, args)
    return err.value


def one(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


def rows(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def run(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)


def count_models(conn):
    return one(conn, "SELECT count(*) FROM flock.models")


def test_register_counts_versions_and_records_hash(conn):
    model = linear_regressor([1.0, 2.0], 0.5, ["a", "b"])
    assert one(conn, "SELECT flock.register_model('lin', %s)", (model,)) == "lin@1"
    assert one(conn, "SELECT flock.register_model('lin', %s, 'onnx', 'second')", (model,)) == "lin@2"
    with conn.cursor() as cur:
        cur.execute("SELECT version, format, sha256, created_by, description, signature "
                    "FROM flock.models WHERE name = 'lin' ORDER BY version")
        rows = cur.fetchall()
    assert [r[0] for r in rows] == [1, 2]
    assert all(r[1] == "onnx" for r in rows)
    assert rows[0][2] == hashlib.sha256(model).hexdigest()
    assert rows[0][3] == "postgres"
    assert rows[1][4] == "second"
    sig = rows[0][5]
    assert sig["features"] == ["a", "b"]
    assert sig["task"] == "regression"
    assert sig["inputs"][0]["width"] == 2


def test_model_bytes_are_stored_with_lz4_and_read_back_whole(conn):
    # The server is Debian's, built with lz4: model bytes are TOASTed with it (faster first reads).
    assert one(conn, "SELECT attcompression FROM pg_attribute WHERE attrelid = 'flock.models'::regclass "
                     "AND attname = 'model'") == "l"
    path = os.path.join(os.environ.get("FLOCK_MODELS_DIR", "build/models"), "breast_cancer_rf.onnx")
    with open(path, "rb") as f:
        data = f.read()
    ref = one(conn, "SELECT flock.register_model('lz4_rf', %s, 'onnx')", (psycopg2.Binary(data),))
    assert one(conn, "SELECT sha256 FROM flock.models WHERE name = 'lz4_rf'") == hashlib.sha256(data).hexdigest()
    assert one(conn, "SELECT pg_column_compression(model) FROM flock.models WHERE name = 'lz4_rf'") == "lz4"
    assert one(conn, "SELECT flock.predict('lz4_rf', ARRAY[%s]::float4[])" % ",".join(["1"] * 30)) is not None
    run(conn, "SELECT flock.drop_model('lz4_rf', 1)")


def test_model_type_validates_and_round_trips_as_text(conn):
    model = stump_classifier(0, 0.5)
    text = one(conn, "SELECT (%s::bytea::flock.model)::text", (model,))
    assert text.startswith("\\x")
    back = one(conn, "SELECT %s::flock.model::bytea", (text,))
    assert bytes(back) == model
    err = sqlstate(conn, "SELECT %s::bytea::flock.model", (b"\x08\x07garbage",))
    assert err.pgcode == "22023"
    assert "ONNX" in err.pgerror


def test_models_are_data_in_any_table(conn):
    model = linear_regressor([2.0], 0.0)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE my_models (id int, m flock.model)")
        cur.execute("INSERT INTO my_models VALUES (1, %s)", (model,))
        cur.execute("SELECT flock.predict(m, ARRAY[21]::float4[]) FROM my_models")
        assert cur.fetchone()[0] == pytest.approx(42.0)
        err = sqlstate(conn, "INSERT INTO my_models VALUES (2, %s)", (b"not a model",))
        assert err.pgcode == "22023"
        cur.execute("SELECT count(*) FROM my_models")
        assert cur.fetchone()[0] == 1


def test_versions_are_immutable_but_description_may_change(conn):
    model = linear_regressor([1.0], 0.0)
    ref = one(conn, "SELECT flock.register_model('frozen', %s)", (model,))
    version = int(ref.split("@")[1])
    other = linear_regressor([9.0], 0.0)
    err = sqlstate(conn, "UPDATE flock.models SET model = %s::bytea::flock.model WHERE name = 'frozen'", (other,))
    assert err.pgcode == "55000"
    assert "immutable" in err.pgerror
    err = sqlstate(conn, "UPDATE flock.models SET sha256 = repeat('0', 64) WHERE name = 'frozen'")
    assert err.pgcode == "55000"
    with conn.cursor() as cur:
        cur.execute("UPDATE flock.models SET description = 'ok' WHERE name = 'frozen' AND version = %s", (version,))
        assert cur.rowcount == 1
    assert one(conn, "SELECT sha256 FROM flock.models WHERE name = 'frozen'") == hashlib.sha256(model).hexdigest()


def test_bad_registrations_leave_the_catalog_unchanged(conn):
    before = count_models(conn)
    good = linear_regressor([1.0, 2.0], 0.0)
    cases = [
        ("SELECT flock.register_model('bad', %s)", (b"\x00\x01\x02\x03",), "22023", "ONNX"),
        ("SELECT flock.register_model('bad', %s)", (good[: len(good) // 2],), "22023", None),
        ("SELECT flock.register_model('bad', %s)", (b'{"learner": {}}',), "22023", "xgboost"),
        ("SELECT flock.register_model('bad', %s)", (b"",), "22023", "empty"),
        ("SELECT flock.register_model('bad', %s)", (unsupported_op_model(),), "0A000", "Det"),
        ("SELECT flock.register_model('bad', %s, 'xgboost')", (good,), "22023", None),
        ("SELECT flock.register_model('bad', %s, 'pickle')", (good,), "22023", "pickle"),
        ("SELECT flock.register_model('bad name!', %s)", (good,), "42602", None),
        ("SELECT flock.register_model(NULL, %s)", (good,), "22004", None),
        ("SELECT flock.register_model('bad', %s, features => ARRAY['only_one'])", (good,), "22023", "features"),
    ]
    for sql, args, code, needle in cases:
        err = sqlstate(conn, sql, args)
        assert err.pgcode == code, (sql, err.pgerror)
        if needle:
            assert needle in err.pgerror, err.pgerror
        if code in ("22023", "0A000"):
            assert err.diag.message_hint, (sql, "no hint")
    assert count_models(conn) == before
    assert one(conn, "SELECT count(*) FROM flock.models WHERE name = 'bad'") == 0


def test_unsupported_operator_error_names_it(conn):
    err = sqlstate(conn, "SELECT flock.register_model('hm', %s)", (unsupported_op_model(),))
    assert "Det" in err.diag.message_primary
    assert "LinearRegressor" in err.diag.message_hint  # lists what is supported


def test_feature_names_given_at_registration_win(conn):
    model = linear_regressor([1.0, 10.0], 0.0, ["x", "y"])
    one(conn, "SELECT flock.register_model('renamed', %s, features => ARRAY['p', 'q'])", (model,))
    sig = one(conn, "SELECT signature FROM flock.models WHERE name = 'renamed'")
    assert sig["features"] == ["p", "q"]
    # The stored model carries the names, so the value binds like the name does.
    assert one(conn, "SELECT flock.predict(m.model, r) FROM flock.models m, (SELECT 2::float4 AS q, 3::float4 AS p) r "
                     "WHERE m.name = 'renamed'") == pytest.approx(23.0)


def test_drop_model_owner_or_superuser(conn, cluster, dbname):
    model = linear_regressor([1.0], 0.0)
    one(conn, "SELECT flock.register_model('dropme', %s)", (model,))
    one(conn, "SELECT flock.register_model('dropme', %s)", (model,))
    with conn.cursor() as cur:
        cur.execute("DROP ROLE IF EXISTS alice")
        cur.execute("CREATE ROLE alice LOGIN")
        cur.execute("GRANT USAGE ON SCHEMA flock TO alice")
    alice = psycopg2.connect(cluster.dsn(dbname, user="alice"))
    alice.autocommit = True
    try:
        err = sqlstate(alice, "SELECT flock.drop_model('dropme', 1)")
        assert err.pgcode == "42501"
        err = sqlstate(alice, "DELETE FROM flock.models")
        assert err.pgcode == "42501"
        ref = one(alice, "SELECT flock.register_model('alices', %s)", (model,))
        assert ref == "alices@1"
        assert one(conn, "SELECT created_by FROM flock.models WHERE name = 'alices'") == "alice"
        assert one(alice, "SELECT flock.drop_model('alices')") == 1
    finally:
        alice.close()
    assert one(conn, "SELECT flock.drop_model('dropme', 1)") == 1
    assert one(conn, "SELECT array_agg(version) FROM flock.models WHERE name = 'dropme'") == [2]
    assert one(conn, "SELECT flock.drop_model('dropme')") == 1
    err = sqlstate(conn, "SELECT flock.drop_model('dropme')")
    assert err.pgcode == "42704"


def test_model_info(conn):
    model = stump_classifier(1, 0.5, feature_names=["f0", "f1"])
    one(conn, "SELECT flock.register_model('info', %s, description => 'a stump')", (model,))
    info = one(conn, "SELECT flock.model_info('info')")
    assert info["ref"] == "info@1"
    assert info["sha256"] == hashlib.sha256(model).hexdigest()
    assert info["size_bytes"] == len(model)
    assert info["operators"] == ["ai.onnx.ml:TreeEnsembleClassifier"]
    assert info["task"] == "classification"
    assert info["classes"] == ["0", "1"]
    assert [o["name"] for o in info["outputs"]] == ["label", "probabilities"]
    assert info["description"] == "a stump"
    by_value = one(conn, "SELECT flock.model_info(model) FROM flock.models WHERE name = 'info'")
    assert by_value["sha256"] == info["sha256"]
    err = sqlstate(conn, "SELECT flock.model_info('nope')")
    assert err.pgcode == "42704" and err.diag.message_hint


def test_dump_and_restore_keep_models(conn, cluster, dbname, tmp_path):
    model = linear_regressor([3.0, 1.0], 1.0, ["a", "b"])
    one(conn, "SELECT flock.register_model('dumped', %s)", (model,))
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS stash (id int, m flock.model)")
        cur.execute("INSERT INTO stash VALUES (1, %s)", (model,))
    expected = one(conn, "SELECT flock.predict('dumped', ARRAY[1, 2]::float4[])")
    rows = one(conn, "SELECT count(*) FROM flock.models")
    dump = tmp_path / "db.dump"
    os.chmod(tmp_path, 0o777)
    env = cluster.env(dbname)
    subprocess.run([f"{PG_BIN}/pg_dump", "-Fc", "-f", str(dump), dbname], env=env, check=True)
    target = dbname + "_restored"
    one(conn, "SELECT 1")
    admin = psycopg2.connect(cluster.dsn())
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {target}")
        cur.execute(f"CREATE DATABASE {target}")
    admin.close()
    subprocess.run([f"{PG_BIN}/pg_restore", "--exit-on-error", "-d", target, str(dump)], env=env, check=True)
    restored = psycopg2.connect(cluster.dsn(target))
    restored.autocommit = True
    try:
        assert one(restored, "SELECT count(*) FROM flock.models") == rows
        assert one(restored, "SELECT flock.predict('dumped', ARRAY[1, 2]::float4[])") == pytest.approx(expected)
        assert one(restored, "SELECT sha256 FROM flock.models WHERE name = 'dumped'") == hashlib.sha256(model).hexdigest()
        assert one(restored, "SELECT flock.predict(m, ARRAY[1, 2]::float4[]) FROM stash") == pytest.approx(expected)
    finally:
        restored.close()
