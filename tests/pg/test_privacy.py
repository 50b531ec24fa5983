"""Privacy (issue 17): personal-data marks follow the data into snapshots, the inference log,
training lineage and exports; retention drops what is past it and says so in lineage; erasure of
one data subject reaches every copy and verify_dataset tells it from tampering; only
flock_privacy_admin may do any of it, and bad input fails clearly with nothing changed.

The hashes are checked against Python's hmac (an independent HMAC-SHA-256) with the key read from
the server as superuser; raw values are searched for in the text of every place Flock copies data."""
import hashlib
import hmac
import json
import os
import re
import subprocess

import psycopg2
import pytest

from test_catalog import PG_BIN, one, rows, run, sqlstate

DPO = "privacy_dpo"            # granted flock_privacy_admin, not a superuser
ANALYST = "privacy_analyst"    # an ordinary role
FEATURES = ["member_no", "income", "age", "petal"]
N = 60


def member(i):
    return {"member_no": 7340000 + i, "email": f"subject{i}@mail.example.org", "income": 41234.5 + 17.25 * i,
            "age": 20 + i % 50, "petal": (i % 7) / 2}


def everything_as_text(conn, model="iris_p"):
    """Every place Flock copies data to, as text: the log (raw and per-row), snapshots and their
    catalog, training records, lineage and OpenLineage exports, the privacy records."""
    parts = [one(conn, "SELECT coalesce(string_agg(l::text, E'\\n'), '') FROM flock.inference_log l"),
             one(conn, "SELECT coalesce(string_agg(r::text, E'\\n'), '') FROM flock.inference_log_rows r"),
             one(conn, "SELECT coalesce(string_agg(d::text, E'\\n'), '') FROM flock.datasets d"),
             one(conn, "SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM flock.training_runs t"),
             one(conn, "SELECT coalesce(string_agg(e::text, E'\\n'), '') FROM flock.privacy_events e"),
             one(conn, "SELECT coalesce(string_agg(e::text, E'\\n'), '') FROM flock.privacy_lineage e"),
             one(conn, "SELECT coalesce(string_agg(p::text, E'\\n'), '') FROM flock.dataset_privacy p"),
             one(conn, "SELECT coalesce(string_agg(l::text, E'\\n'), '') FROM flock.lineage(%s) l", (model,)),
             json.dumps(one(conn, "SELECT flock.openlineage(%s)", (model,)))]
    for (table,) in rows(conn, "SELECT table_name FROM flock.datasets"):
        parts.append(one(conn, f"SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM {table} t"))
    return "\n".join(parts)


def holds(text, value):
    """Whether `value` occurs in `text` as a whole token (not inside a longer number or a hex hash)."""
    return re.search(r"(?<![0-9A-Za-z.])" + re.escape(str(value)) + r"(?![0-9A-Za-z])", text) is not None


def server_hmac(conn, value):
    """HMAC-SHA-256 with the server's key (read as superuser), computed by Python's hmac."""
    inner = bytes(one(conn, "SELECT inner_key FROM flock._privacy_key"))
    key = bytes(b ^ 0x36 for b in inner)   # the zero-padded 64-byte key: HMAC uses it as it is
    return hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()


@pytest.fixture(scope="module")
def world(cluster, dbname, models_dir):
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    for role in (DPO, ANALYST):
        if not one(conn, "SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,)):
            run(conn, f"CREATE ROLE {role} LOGIN")
    run(conn, f"GRANT flock_privacy_admin TO {DPO}")
    run(conn, "CREATE TABLE members (member_no int, email text, income real, age int, petal real, target int)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO members VALUES (%(member_no)s, %(email)s, %(income)s, %(age)s, %(petal)s, 0)",
                        [member(i) for i in range(1, N + 1)])
    run(conn, f"GRANT SELECT ON members TO {DPO}, {ANALYST}")
    with open(f"{models_dir}/iris_rf.onnx", "rb") as f:
        run(conn, "SELECT flock.register_model('iris_p', %s, features => %s)", (f.read(), FEATURES))
    baseline = dict(rows(conn, "SELECT member_no, flock.predict('iris_p', m) FROM members m"))

    dpo = psycopg2.connect(cluster.dsn(dbname, user=DPO))
    dpo.autocommit = True
    one(dpo, "SELECT flock.classify_column('members', 'member_no', 'direct_identifier', 'hash')")
    one(dpo, "SELECT flock.classify_column('members', 'email', 'direct_identifier', 'hash')")
    one(dpo, "SELECT flock.classify_column('members', 'income', 'sensitive', 'redact')")
    one(dpo, "SELECT flock.classify_column('members', 'age', 'quasi_identifier', 'generalize', 10)")
    ds = one(conn, "SELECT flock.snapshot_dataset('members_train', 'SELECT * FROM members')")
    run(conn, "SELECT flock.log_training('iris_p@1', ARRAY[%s])", (ds,))
    one(conn, "SELECT flock.set_audit('iris_p', 'all')")
    scored = dict(rows(conn, "SELECT member_no, flock.predict('iris_p', m) FROM members m"))
    assert one(conn, "SELECT flock.audit_flush()") is True
    yield {"conn": conn, "dpo": dpo, "baseline": baseline, "scored": scored, "dataset": ds}
    dpo.close()
    conn.close()


@pytest.fixture(scope="module")
def models_dir():
    import os
    d = os.environ.get("FLOCK_MODELS_DIR")
    if not d or not os.path.exists(os.path.join(d, "iris_rf.onnx")):
        pytest.skip("FLOCK_MODELS_DIR with iris_rf.onnx is needed")
    return d


def test_marked_values_appear_nowhere_and_predictions_are_unchanged(world):
    conn = world["conn"]
    assert world["scored"] == world["baseline"]
    assert len(world["scored"]) == N
    text = everything_as_text(conn)
    for i in range(1, N + 1):
        m = member(i)
        for column in ("member_no", "email", "income"):
            assert not holds(text, m[column]), f"{column} {m[column]} leaked"
    # The log records every prediction, with each output as predicted.
    logged = rows(conn, "SELECT input, output FROM flock.inference_log_rows WHERE model_name = 'iris_p'")
    assert len(logged) == N
    by_hash = {server_hmac(conn, member(i)["member_no"]): i for i in range(1, N + 1)}
    for inp, out in logged:
        i = by_hash[inp["member_no"]]
        assert out == world["baseline"][member(i)["member_no"]]
        assert inp["income"] is None
        assert inp["age"] == (member(i)["age"] // 10) * 10
        assert inp["petal"] == member(i)["petal"]


def test_hashes_are_keyed_hmac_sha256_with_a_hidden_key(world, connect_as):
    conn = world["conn"]
    snap = {r[0]: r[1] for r in rows(conn, f"SELECT member_no, email FROM flock_data.\"{world['dataset']}\"")}
    assert len(snap) == N
    for i in range(1, N + 1):
        m = member(i)
        assert snap[server_hmac(conn, m["member_no"])] == server_hmac(conn, m["email"])
    assert one(conn, f"SELECT count(*) FROM flock_data.\"{world['dataset']}\" WHERE income IS NOT NULL") == 0
    ages = {r[0] for r in rows(conn, f"SELECT age FROM flock_data.\"{world['dataset']}\"")}
    assert ages <= {20, 30, 40, 50, 60}
    for role in (ANALYST, DPO):
        c = connect_as(role)
        for sql in ("SELECT * FROM flock._privacy_key", "SELECT flock._privacy_hmac('7340001')"):
            err = sqlstate(c, sql)
            assert err.pgcode == "42501", (role, sql, err)


def test_personal_inputs_recorded_for_the_model(world, connect_as):
    c = connect_as(ANALYST)
    assert sqlstate(c, "SELECT flock.personal_inputs('iris_p')").pgcode == "42501"   # as for any model it may not use
    run(world["conn"], "SELECT flock.grant_model('iris_p', %s, 'use')", (ANALYST,))
    info = one(c, "SELECT flock.personal_inputs('iris_p')")
    assert info["member_no"]["action"] == "hash" and info["member_no"]["class"] == "direct_identifier"
    assert info["income"]["action"] == "redact"
    assert info["age"]["action"] == "generalize" and float(info["age"]["width"]) == 10
    assert "petal" not in info
    assert info["member_no"]["columns"] == ["public.members.member_no"]
    # The model's own description carries it too, next to its signature.
    assert one(c, "SELECT flock.model_info('iris_p')->'personal_inputs'") == info


def test_a_role_without_the_privacy_role_is_refused_and_nothing_changes(world, connect_as):
    conn = world["conn"]
    c = connect_as(ANALYST)
    before = (one(conn, "SELECT count(*) FROM flock.privacy_marks"), one(conn, "SELECT count(*) FROM flock.privacy_events"),
              one(conn, "SELECT count(*) FROM flock.retention_policies"))
    for sql in ("SELECT flock.classify_column('members', 'petal', 'sensitive', 'redact')",
                "SELECT flock.unclassify_column('members', 'email')",
                "SELECT flock.set_retention('model', 'iris_p', '1 day')",
                "SELECT flock.apply_retention()",
                "SELECT flock.erase_subject('members', '{\"member_no\": 7340005}')"):
        err = sqlstate(c, sql)
        assert err.pgcode == "42501", (sql, err)
        assert "GRANT flock_privacy_admin TO privacy_analyst" in err.diag.message_hint
    assert sqlstate(c, "SELECT * FROM flock.privacy_events").pgcode == "42501"
    after = (one(conn, "SELECT count(*) FROM flock.privacy_marks"), one(conn, "SELECT count(*) FROM flock.privacy_events"),
             one(conn, "SELECT count(*) FROM flock.retention_policies"))
    assert after == before


@pytest.mark.parametrize("as_dpo", [True, False])
def test_bad_input_gives_clear_errors_and_changes_nothing(world, as_dpo):
    conn = world["conn"]
    c = world["dpo"] if as_dpo else conn
    before = (one(conn, "SELECT count(*) FROM flock.privacy_marks"), one(conn, "SELECT count(*) FROM flock.privacy_events"),
              one(conn, "SELECT sum(n_rows) FROM flock.inference_log"),
              one(conn, f"SELECT count(*) FROM flock_data.\"{world['dataset']}\""))
    cases = [
        ("SELECT flock.classify_column('members', 'no_such_column', 'sensitive', 'redact')", "42703", "Columns of public.members"),
        ("SELECT flock.classify_column('members', 'age', 'secret', 'redact')", "22023", "quasi_identifier"),
        ("SELECT flock.classify_column('members', 'age', 'sensitive', 'encrypt')", "22023", "generalize"),
        ("SELECT flock.classify_column('members', 'age', 'sensitive', 'generalize')", "22023", "width"),
        ("SELECT flock.classify_column('members', 'age', 'sensitive', 'redact', 5)", "22023", "width"),
        ("SELECT flock.classify_column('members', 'email', 'sensitive', 'generalize', 5)", "42804", "hash"),
        ("SELECT flock.erase_subject('members', '{\"no_such_column\": 1}')", "42703", "Columns of public.members"),
        ("SELECT flock.erase_subject('members', '{}')", "22023", "key columns"),
        ("SELECT flock.erase_subject('members', '[7340001]')", "22023", "key columns"),
        ("SELECT flock.erase_subject('members', '{\"member_no\": [1]}')", "22023", "JSON strings, numbers or booleans"),
        ("SELECT flock.set_retention('model', 'no_such_model', '1 day')", "42704", "flock.models"),
        ("SELECT flock.set_retention('dataset', 'no_such_set', '1 day')", "42704", "flock.datasets"),
        ("SELECT flock.set_retention('table', 'members', '1 day')", "22023", "'model'"),
        ("SELECT flock.set_retention('model', 'iris_p', '-1 day')", "22023", "interval"),
        ("SELECT flock.set_retention('model', 'iris_p@1', '1 day')", "22023", "without @"),
    ]
    for sql, code, hint in cases:
        err = sqlstate(c, sql)
        assert err.pgcode == code, (sql, err.pgcode, str(err))
        assert hint in (err.diag.message_hint or ""), (sql, err.diag.message_hint)
    # A relation that does not exist: PostgreSQL's own 42P01 from the regclass argument.
    assert sqlstate(c, "SELECT flock.classify_column('no_such_table', 'x', 'sensitive', 'redact')").pgcode == "42P01"
    after = (one(conn, "SELECT count(*) FROM flock.privacy_marks"), one(conn, "SELECT count(*) FROM flock.privacy_events"),
             one(conn, "SELECT sum(n_rows) FROM flock.inference_log"),
             one(conn, f"SELECT count(*) FROM flock_data.\"{world['dataset']}\""))
    assert after == before


def test_erasure_removes_the_subject_everywhere_and_verify_reports_it(world):
    conn, dpo = world["conn"], world["dpo"]
    ds = world["dataset"]
    assert one(conn, "SELECT flock.verify_dataset(%s)", (ds,)) is True
    # By the hashed key: found in the snapshot and the log through the HMAC of the key.
    gone = member(3)
    report = one(dpo, "SELECT flock.erase_subject('members', %s)", (json.dumps({"member_no": gone["member_no"]}),))
    assert report["datasets"] == [{"dataset": ds, "rows_removed": 1, "matched_by": "key"}]
    assert report["inference_log"] == [{"model": "iris_p@1", "predictions_removed": 1}]
    assert report["models_trained_on_subject"] == ["iris_p@1"]
    # By a column the model never saw (email): the log is searched with the subject's row.
    gone2 = member(7)
    report2 = one(dpo, "SELECT flock.erase_subject('members', %s)", (json.dumps({"email": gone2["email"]}),))
    assert report2["datasets"][0]["rows_removed"] == 1
    assert report2["inference_log"] == [{"model": "iris_p@1", "predictions_removed": 1}]

    text = everything_as_text(conn)
    for m in (gone, gone2):
        for column in ("member_no", "email"):
            assert server_hmac(conn, m[column]) not in text
            assert not holds(text, m[column])
    # Everyone else is still there, each log entry with its own output.
    assert one(conn, f"SELECT count(*) FROM flock_data.\"{ds}\"") == N - 2
    logged = rows(conn, "SELECT input, output FROM flock.inference_log_rows WHERE model_name = 'iris_p'")
    assert len(logged) == N - 2
    by_hash = {server_hmac(conn, member(i)["member_no"]): i for i in range(1, N + 1)}
    assert {by_hash[inp["member_no"]] for inp, _ in logged} == set(range(1, N + 1)) - {3, 7}
    for inp, out in logged:
        assert out == world["baseline"][member(by_hash[inp["member_no"]])["member_no"]]

    # The erasure is recorded (who, what, where; not the key's value) and shown in lineage.
    event = rows(conn, "SELECT actor, action, target, detail FROM flock.privacy_events WHERE id = %s", (report["erasure"],))[0]
    assert event[:3] == (DPO, "erase", "public.members")
    assert str(gone["member_no"]) not in json.dumps(event[3])
    edges = {(r[0], r[1], r[2]) for r in rows(conn, "SELECT from_ref, relation, to_ref FROM flock.lineage('iris_p')")}
    assert ("iris_p@1", "erased", str(report["erasure"])) in edges

    # verify_dataset: changed by recorded erasures, not tampered.
    verdict = one(conn, "SELECT flock.verify_dataset_report(%s)", (ds,))
    assert verdict["ok"] is True
    assert [e["erasure"] for e in verdict["stored"]["changed_by_erasure"]] == [report["erasure"], report2["erasure"]]
    assert verdict["stored"]["row_count"] == N - 2
    assert verdict["source"]["ok"] is True          # the source still holds the rows: it compares as taken
    assert one(conn, "SELECT flock.verify_dataset(%s)", (ds,)) is True

    # An erasure matching nobody changes nothing and says so.
    nobody = one(dpo, "SELECT flock.erase_subject('members', '{\"member_no\": 1}')")
    assert nobody["subject_rows_in_table"] == 0 and nobody["inference_log"] == []
    assert all(d["rows_removed"] == 0 for d in nobody["datasets"])
    assert one(conn, "SELECT flock.verify_dataset(%s)", (ds,)) is True


def test_dump_and_restore_keep_marks_key_and_hashes(world, cluster, dbname, tmp_path):
    """pg_dump keeps the marks, the key and the marked copies; the restore marks nothing twice."""
    conn = world["conn"]
    log_text = one(conn, "SELECT string_agg(l::text, E'\\n' ORDER BY l::text) FROM flock.inference_log l")
    personal = one(conn, "SELECT flock.personal_inputs('iris_p')")
    dump = tmp_path / "db.dump"
    os.chmod(tmp_path, 0o777)
    env = cluster.env(dbname)
    subprocess.run([f"{PG_BIN}/pg_dump", "-Fc", "-f", str(dump), dbname], env=env, check=True)
    target = dbname + "_privacy_restored"
    admin = psycopg2.connect(cluster.dsn())
    admin.autocommit = True
    run(admin, f"DROP DATABASE IF EXISTS {target}")
    run(admin, f"CREATE DATABASE {target}")
    subprocess.run([f"{PG_BIN}/pg_restore", "--exit-on-error", "-d", target, str(dump)], env=env, check=True)
    restored = psycopg2.connect(cluster.dsn(target))
    restored.autocommit = True
    try:
        assert one(restored, "SELECT string_agg(l::text, E'\\n' ORDER BY l::text) FROM flock.inference_log l") == log_text
        assert one(restored, "SELECT flock.personal_inputs('iris_p')") == personal
        assert one(restored, "SELECT flock.verify_dataset(%s)", (world["dataset"],)) is True
        assert server_hmac(restored, 7340001) == server_hmac(conn, 7340001)
        report = one(restored, "SELECT flock.erase_subject('members', '{\"member_no\": 7340011}')")
        assert report["datasets"][0]["rows_removed"] == 1
        assert report["inference_log"] == [{"model": "iris_p@1", "predictions_removed": 1}]
    finally:
        restored.close()
        run(admin, f"DROP DATABASE IF EXISTS {target}")
        admin.close()


def test_tampering_after_an_erasure_is_still_caught(world):
    conn = world["conn"]
    run(conn, "SELECT flock.snapshot_dataset('members_tamper', 'SELECT * FROM members WHERE member_no <= 7340010')")
    one(world["dpo"], "SELECT flock.erase_subject('members', %s)", (json.dumps({"member_no": member(2)["member_no"]}),))
    assert one(conn, "SELECT flock.verify_dataset('members_tamper')") is True
    run(conn, 'ALTER TABLE flock_data."members_tamper@1" DISABLE TRIGGER immutable')
    run(conn, 'UPDATE flock_data."members_tamper@1" SET petal = petal + 1 WHERE age = 20')
    run(conn, 'ALTER TABLE flock_data."members_tamper@1" ENABLE TRIGGER immutable')
    verdict = one(conn, "SELECT flock.verify_dataset_report('members_tamper')")
    assert verdict["ok"] is False and verdict["stored"]["ok"] is False
    assert verdict["stored"]["changed_by_erasure"]


def test_erasure_in_an_unmarked_snapshot_and_its_changed_source(world):
    """Without marks, a source that lost the subject too compares with what the erasure left."""
    conn = world["conn"]
    run(conn, "CREATE TABLE visits (visitor int, minutes real)")
    run(conn, "INSERT INTO visits SELECT i, i * 1.5 FROM generate_series(1, 20) i")
    run(conn, "SELECT flock.snapshot_dataset('visits_set', 'SELECT * FROM visits')")
    report = one(world["dpo"], "SELECT flock.erase_subject('visits', '{\"visitor\": 4}')")
    assert report["datasets"] == [{"dataset": "visits_set@1", "rows_removed": 1, "matched_by": "key"}]
    assert one(conn, "SELECT flock.verify_dataset_report('visits_set')")["source"]["ok"] is True
    run(conn, "DELETE FROM visits WHERE visitor = 4")
    verdict = one(conn, "SELECT flock.verify_dataset_report('visits_set')")
    assert verdict["ok"] is True and verdict["source"]["changed_by_erasure"] is True
    run(conn, "DELETE FROM visits WHERE visitor = 5")
    assert one(conn, "SELECT flock.verify_dataset('visits_set')") is False


def test_unclassify_stops_marking_new_copies(world):
    conn, dpo = world["conn"], world["dpo"]
    assert one(dpo, "SELECT flock.unclassify_column('members', 'age')") is True
    assert one(dpo, "SELECT flock.unclassify_column('members', 'age')") is False
    assert "age" not in one(conn, "SELECT flock.personal_inputs('iris_p')")
    run(conn, "SELECT flock.snapshot_dataset('members_age', 'SELECT member_no, age FROM members')")
    ages = {r[0] for r in rows(conn, 'SELECT age FROM flock_data."members_age@1"')}
    assert ages == {member(i)["age"] for i in range(1, N + 1)}   # the source table still holds everyone
    assert one(dpo, "SELECT flock.classify_column('members', 'age', 'quasi_identifier', 'generalize', 10)")["width"] == 10
    actions = [r[0] for r in rows(conn, "SELECT action FROM flock.privacy_events WHERE target = 'public.members.age' ORDER BY id")]
    assert actions == ["classify", "unclassify", "classify"]


def test_retention_drops_what_is_past_it_and_records_it_in_lineage(world):
    conn, dpo = world["conn"], world["dpo"]
    run(conn, "SELECT flock.snapshot_dataset('members_old', 'SELECT member_no, petal FROM members')")
    run(conn, "SELECT flock.snapshot_dataset('members_old', 'SELECT member_no, petal FROM members')")
    policy = one(dpo, "SELECT flock.set_retention('dataset', 'members_old', '7 days')")
    assert policy["max_age"] == "7 days" and policy["schedule"]["scheduled"] is False   # pg_cron lives in postgres
    assert "cron.schedule_in_database" in policy["schedule"]["command"]
    one(dpo, "SELECT flock.set_retention('model', 'iris_p', '30 days')")
    # Age the first version and half of the log (as if time had passed).
    run(conn, "UPDATE flock.datasets SET created_at = now() - interval '8 days' WHERE name = 'members_old' AND version = 1")
    total = one(conn, "SELECT sum(n_rows) FROM flock.inference_log WHERE model_name = 'iris_p'")
    one(world["conn"], "SELECT sum(flock.predict('iris_p', m)) FROM members m WHERE member_no < 7340020")
    assert one(conn, "SELECT flock.audit_flush()") is True
    fresh = one(conn, "SELECT sum(n_rows) FROM flock.inference_log WHERE model_name = 'iris_p'") - total
    run(conn, "UPDATE flock.inference_log SET logged_at = logged_at - interval '31 days' "
              "WHERE model_name = 'iris_p' AND logged_at < (SELECT max(logged_at) FROM flock.inference_log)")
    result = one(dpo, "SELECT flock.apply_retention()")
    assert result["datasets_dropped"] == ["members_old@1"]
    assert result["log_purged"] == [{"model": "iris_p@1", "predictions": total}]
    assert one(conn, "SELECT sum(n_rows) FROM flock.inference_log WHERE model_name = 'iris_p'") == fresh
    assert one(conn, "SELECT array_agg(version) FROM flock.datasets WHERE name = 'members_old'") == [2]
    assert one(conn, "SELECT to_regclass('flock_data.\"members_old@1\"')") is None
    edges = {(r[0], r[1], r[2], r[3]) for r in rows(conn, "SELECT from_kind, from_ref, relation, to_ref FROM flock.privacy_lineage")}
    assert ("dataset", "members_old@1", "retention_dropped", str(result["event"])) in edges
    assert ("model", "iris_p@1", "retention_purged", str(result["event"])) in edges
    assert ("model", "iris_p@1", "retention_purged", str(result["event"])) in {
        (r[0], r[1], r[2], r[3]) for r in rows(conn, "SELECT from_kind, from_ref, relation, to_ref FROM flock.lineage('iris_p')")}
    assert rows(conn, "SELECT actor FROM flock.privacy_events WHERE id = %s", (result["event"],)) == [(DPO,)]
    # Nothing more is past retention: a second run drops nothing.
    again = one(dpo, "SELECT flock.apply_retention()")
    assert again["datasets_dropped"] == [] and again["log_purged"] == []
    # A data set a model was trained on outlives its retention, with a warning and the reason.
    one(dpo, "SELECT flock.set_retention('dataset', 'members_train', '1 day')")
    run(conn, "UPDATE flock.datasets SET created_at = now() - interval '2 days' WHERE name = 'members_train'")
    kept = one(dpo, "SELECT flock.apply_retention()")
    assert kept["datasets_kept"] == [{"dataset": "members_train@1", "reason": "trained on by iris_p@1"}]
    assert one(dpo, "SELECT flock.set_retention('dataset', 'members_train', NULL)")["removed"] is True


def test_retention_is_scheduled_with_pg_cron(cluster):
    """In the pg_cron database, set_retention schedules flock.apply_retention() there."""
    conn = psycopg2.connect(cluster.dsn("postgres"))
    conn.autocommit = True
    try:
        run(conn, "CREATE EXTENSION IF NOT EXISTS pg_cron")
        run(conn, "CREATE EXTENSION flock")
        run(conn, "CREATE TABLE cron_t (x int)")
        run(conn, "SELECT flock.snapshot_dataset('cron_set', 'SELECT * FROM cron_t')")
        policy = one(conn, "SELECT flock.set_retention('dataset', 'cron_set', '90 days')")
        assert policy["schedule"]["scheduled"] is True
        job = rows(conn, "SELECT jobname, schedule, command, database, active FROM cron.job WHERE jobid = %s",
                   (policy["schedule"]["jobid"],))
        assert job == [("flock_retention_postgres", "17 3 * * *", "SELECT flock.apply_retention()", "postgres", True)]
        # Setting another policy keeps the one job.
        again = one(conn, "SELECT flock.set_retention('dataset', 'cron_set', '30 days')")
        assert again["schedule"]["jobid"] == policy["schedule"]["jobid"]
        assert one(conn, "SELECT count(*) FROM cron.job WHERE command = 'SELECT flock.apply_retention()'") == 1
        assert one(conn, "SELECT flock.apply_retention()")["datasets_dropped"] == []
    finally:
        run(conn, "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = 'flock_retention_postgres'")
        run(conn, "DROP EXTENSION IF EXISTS flock CASCADE")
        run(conn, "DROP TABLE IF EXISTS cron_t")
        run(conn, "DROP EXTENSION IF EXISTS pg_cron")
        conn.close()


def test_fractional_and_large_numbers_hash_alike_in_log_and_snapshot(world):
    """A hashed float32 feature: the writer's C pass and the snapshot's SQL give the HMAC of the
    same text (the value's own shortest text), and erasure finds it by the key's value."""
    conn, dpo = world["conn"], world["dpo"]
    run(conn, "CREATE TABLE readings (sensor int, level real, a real, b real)")
    run(conn, "INSERT INTO readings SELECT i, CASE WHEN i % 2 = 0 THEN 0.1 * i ELSE 1234567.5 + i END, i % 3, 1.5 "
              "FROM generate_series(1, 40) i")
    with open(f"{os.environ['FLOCK_MODELS_DIR']}/iris_rf.onnx", "rb") as f:
        run(conn, "SELECT flock.register_model('levels', %s, features => ARRAY['sensor', 'level', 'a', 'b'])", (f.read(),))
    one(dpo, "SELECT flock.classify_column('readings', 'level', 'sensitive', 'hash')")
    run(conn, "SELECT flock.snapshot_dataset('readings_set', 'SELECT * FROM readings')")
    one(conn, "SELECT flock.set_audit('levels', 'all')")
    one(conn, "SELECT count(flock.predict('levels', r)) FROM readings r")
    assert one(conn, "SELECT flock.audit_flush()") is True
    texts = [r[0] for r in rows(conn, "SELECT level::text FROM readings ORDER BY sensor")]
    assert "1.2345685e+06" in texts and "0.2" in texts
    expected = {server_hmac(conn, t) for t in texts}
    logged = {r[0] for r in rows(conn, "SELECT input->>'level' FROM flock.inference_log_rows WHERE model_name = 'levels'")}
    snapshot = {r[0] for r in rows(conn, 'SELECT level FROM flock_data."readings_set@1"')}
    assert logged == snapshot == expected
    report = one(dpo, "SELECT flock.erase_subject('readings', '{\"level\": 1234567.5}')")   # no such reading
    assert report["inference_log"] == [] and report["datasets"][0]["rows_removed"] == 0
    report = one(dpo, "SELECT flock.erase_subject('readings', '{\"level\": 1234568.5}')")   # sensor 1
    assert report["datasets"] == [{"dataset": "readings_set@1", "rows_removed": 1, "matched_by": "key"}]
    assert report["inference_log"] == [{"model": "levels@1", "predictions_removed": 1}]
    report = one(dpo, "SELECT flock.erase_subject('readings', '{\"level\": 0.4}')")         # sensor 4
    assert report["inference_log"] == [{"model": "levels@1", "predictions_removed": 1}]
    assert one(conn, "SELECT sum(n_rows) FROM flock.inference_log WHERE model_name = 'levels'") == 38


def test_privacy_lineage_shows_what_the_role_may_see(world, connect_as):
    conn = world["conn"]
    c = connect_as(ANALYST)   # may use iris_p (granted above), reads no snapshot, not a privacy admin
    seen = {(r[0], r[1]) for r in rows(c, "SELECT from_kind, from_ref FROM flock.privacy_lineage")}
    assert ("model", "iris_p@1") in seen
    assert all(kind == "model" and ref.startswith("iris_p@") for kind, ref in seen)
    everything = {(r[0], r[1]) for r in rows(conn, "SELECT from_kind, from_ref FROM flock.privacy_lineage")}
    assert ("dataset", world["dataset"]) in everything and ("model", "levels@1") in everything
    assert {(r[0], r[1]) for r in rows(world["dpo"], "SELECT from_kind, from_ref FROM flock.privacy_lineage")} == everything


def test_a_model_with_training_lineage_takes_the_marks_of_its_source_tables_only(world):
    conn = world["conn"]
    with open(f"{os.environ['FLOCK_MODELS_DIR']}/iris_rf.onnx", "rb") as f:
        run(conn, "SELECT flock.register_model('iris_other', %s, features => ARRAY['member_no', 'income', 'x', 'y'])",
            (f.read(),))
    # No lineage: any marked column of the feature's name counts (the log cannot tell the table).
    assert set(one(conn, "SELECT flock.personal_inputs('iris_other')")) == {"member_no", "income"}
    run(conn, "CREATE TABLE others (member_no int, income real, x real, y real)")
    run(conn, "SELECT flock.snapshot_dataset('others_set', 'SELECT * FROM others')")
    run(conn, "SELECT flock.log_training('iris_other@1', ARRAY['others_set@1'])")
    # Trained on a table without marks: none of members' marks apply.
    assert one(conn, "SELECT flock.personal_inputs('iris_other')") == {}
    assert one(conn, "SELECT flock.personal_inputs('iris_p')")["member_no"]["action"] == "hash"


def test_text_features_are_hashed_in_the_log_like_in_snapshots(world):
    """A model with string inputs (a scikit-learn pipeline): its hashed text feature is the HMAC of
    the text in the log and in snapshots; erasure by a key the model never saw uses the subject's row."""
    conn, dpo = world["conn"], world["dpo"]
    models = os.environ["FLOCK_MODELS_DIR"]
    run(conn, "CREATE TABLE shoppers (id int, age real, income real, tenure_months real, monthly_spend real, "
              "support_calls real, plan text, region text, target int)")
    with open(f"{models}/customers.csv") as f, conn.cursor() as cur:
        cur.copy_expert("COPY shoppers FROM STDIN CSV HEADER", f)
    with open(f"{models}/customers_pipeline_gb.onnx", "rb") as f:
        run(conn, "SELECT flock.register_model('shoppers_gb', %s)", (f.read(),))
    baseline = dict(rows(conn, "SELECT id, flock.predict_label('shoppers_gb', s) FROM shoppers s WHERE id <= 30"))
    one(dpo, "SELECT flock.classify_column('shoppers', 'region', 'quasi_identifier', 'hash')")
    run(conn, "SELECT flock.snapshot_dataset('shoppers_set', 'SELECT * FROM shoppers WHERE id <= 30')")
    one(conn, "SELECT flock.set_audit('shoppers_gb', 'all')")
    assert dict(rows(conn, "SELECT id, flock.predict_label('shoppers_gb', s) FROM shoppers s WHERE id <= 30")) == baseline
    assert one(conn, "SELECT flock.audit_flush()") is True
    regions = {r[0] for r in rows(conn, "SELECT region FROM shoppers WHERE id <= 30")}
    logged = {r[0] for r in rows(conn, "SELECT input->>'region' FROM flock.inference_log_rows WHERE model_name = 'shoppers_gb'")}
    snapshot = {r[0] for r in rows(conn, 'SELECT region FROM flock_data."shoppers_set@1"')}
    assert logged == snapshot == {server_hmac(conn, r) for r in regions}
    log_text = one(conn, "SELECT string_agg(l::text, ' ') FROM flock.inference_log l WHERE model_name = 'shoppers_gb'")
    assert not any(holds(log_text, r) for r in regions)
    assert holds(log_text, "premium") or holds(log_text, "basic")   # unmarked text stays as it was
    report = one(dpo, "SELECT flock.erase_subject('shoppers', '{\"id\": 7}')")
    assert report["inference_log"] == [{"model": "shoppers_gb@1", "predictions_removed": 1}]
    assert report["datasets"] == [{"dataset": "shoppers_set@1", "rows_removed": 1, "matched_by": "key"}]
    assert one(conn, "SELECT sum(n_rows) FROM flock.inference_log WHERE model_name = 'shoppers_gb'") == 29


def test_openlineage_exports_privacy_actions_without_values(world):
    conn = world["conn"]
    events = one(conn, "SELECT flock.openlineage('iris_p')")
    privacy = [e for e in events if e["job"]["name"] in ("flock.erase_subject", "flock.apply_retention")]
    assert {e["job"]["name"] for e in privacy} == {"flock.erase_subject", "flock.apply_retention"}
    for e in privacy:
        assert e["eventType"] == "COMPLETE" and e["run"]["runId"] and e["producer"].startswith("urn:flock:")
        facet = e["run"]["facets"]["flock_privacy"]
        assert facet["_producer"] and facet["_schemaURL"]
        assert facet["action"] in ("erased", "retention_purged", "retention_dropped")
        assert e["outputs"] and all(o["namespace"].startswith("postgres://") for o in e["outputs"])
    text = json.dumps(events)
    for i in range(1, N + 1):
        assert not holds(text, member(i)["member_no"]) and member(i)["email"] not in text
