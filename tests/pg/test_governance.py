"""Governance: immutable versions, aliases and their history, access control (grants, row-level
security, 42501 for hidden models), data set snapshots and their verification, training capture,
and dump/restore of the whole governance catalog."""
import hashlib
import json
import os
import subprocess

import psycopg2
import pytest

from onnx_builders import linear_regressor
from test_catalog import one, rows, run, sqlstate

PG_BIN = "/usr/lib/postgresql/15/bin"
ROLES = ("gov_owner", "gov_user", "gov_stranger", "gov_group", "gov_member")


def model(weight):
    """A one-feature linear model predicting weight * x."""
    return linear_regressor([float(weight)], 0.0, ["x"])


def predict(conn, ref, x=1.0):
    return one(conn, "SELECT flock.predict(%s, ARRAY[%s]::float4[])", (ref, x))


@pytest.fixture(scope="module")
def roles(cluster, dbname):
    admin = psycopg2.connect(cluster.dsn(dbname))
    admin.autocommit = True
    with admin.cursor() as cur:
        for role in ROLES:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if not cur.fetchone():
                cur.execute(f"CREATE ROLE {role} LOGIN")
        cur.execute("GRANT gov_group TO gov_member")
        cur.execute("GRANT CREATE ON SCHEMA public TO gov_owner, gov_user, gov_stranger")
    admin.close()
    return ROLES


@pytest.fixture
def connect(connect_as, roles):
    return connect_as  # with the roles created


# --- immutable versions -----------------------------------------------------------------------

def test_registered_versions_cannot_be_tampered_with(conn):
    one(conn, "SELECT flock.register_model('sealed', %s)", (model(2),))
    sha = one(conn, "SELECT sha256 FROM flock.models WHERE name = 'sealed'")
    for sql, args in [
        ("UPDATE flock.models SET model = %s::bytea::flock.model WHERE name = 'sealed'", (model(3),)),
        ("UPDATE flock.models SET sha256 = repeat('a', 64) WHERE name = 'sealed'", None),
        ("UPDATE flock.models SET version = 7 WHERE name = 'sealed'", None),
        ("UPDATE flock.models SET name = 'other' WHERE name = 'sealed'", None),
        ("UPDATE flock.models SET created_by = 'nobody' WHERE name = 'sealed'", None),
    ]:
        err = sqlstate(conn, sql, args)
        assert err.pgcode == "55000" and "immutable" in err.diag.message_primary, (sql, err.pgerror)
        assert err.diag.message_hint
    assert one(conn, "SELECT sha256 FROM flock.models WHERE name = 'sealed'") == sha
    assert predict(conn, "sealed", 4) == pytest.approx(8)


# --- aliases ------------------------------------------------------------------------------------

def test_alias_resolves_everywhere_and_moves_with_history(conn):
    for w in (1, 2, 3):
        one(conn, "SELECT flock.register_model('churn', %s)", (model(w),))
    assert one(conn, "SELECT flock.set_alias('churn', 'champion', 1)") == "churn@champion"
    assert predict(conn, "churn@champion", 5) == pytest.approx(5)
    info = one(conn, "SELECT flock.model_info('churn@champion')")
    assert info["version"] == 1 and info["ref"] == "churn@1"
    assert one(conn, "SELECT version FROM flock._resolve('churn@champion')") == 1

    # Moving it is seen at once by the same session (its cached resolutions are invalidated).
    one(conn, "SELECT flock.set_alias('churn', 'champion', 3, 'better AUC')")
    assert predict(conn, "churn@champion", 5) == pytest.approx(15)
    one(conn, "SELECT flock.set_alias('churn', 'challenger', 2)")
    assert predict(conn, "churn@challenger", 5) == pytest.approx(10)
    # Setting it to where it already points records nothing.
    one(conn, "SELECT flock.set_alias('churn', 'champion', 3)")

    assert rows(conn, "SELECT alias, version, comment, set_by FROM flock.aliases WHERE name = 'churn' ORDER BY alias") == [
        ("challenger", 2, None, "postgres"), ("champion", 3, "better AUC", "postgres")]
    assert one(conn, "SELECT flock.drop_alias('churn', 'challenger', 'retired')") == 2
    history = rows(conn, "SELECT alias, from_version, to_version, comment, changed_by, changed_at IS NOT NULL "
                         "FROM flock.alias_history WHERE name = 'churn' ORDER BY id")
    assert history == [("champion", None, 1, None, "postgres", True),
                       ("champion", 1, 3, "better AUC", "postgres", True),
                       ("challenger", None, 2, None, "postgres", True),
                       ("challenger", 2, None, "retired", "postgres", True)]

    # An unknown alias makes the reference invalid; the hint lists the aliases there are.
    err = sqlstate(conn, "SELECT flock.predict('churn@challenger', ARRAY[1]::float4[])")
    assert err.pgcode == "22023" and 'no alias "challenger"' in err.diag.message_primary
    assert "champion (version 3)" in err.diag.message_hint
    err = sqlstate(conn, "SELECT flock.model_info('churn@staging')")
    assert err.pgcode == "22023" and "champion" in err.diag.message_hint


def test_moving_an_alias_reaches_call_sites_that_cached_it(conn):
    """A PL/pgSQL loop keeps one call site (and its resolved model) across iterations; moving the
    alias in between must reach it (set_alias sends the catalog invalidation)."""
    one(conn, "SELECT flock.register_model('looped', %s)", (model(1),))
    one(conn, "SELECT flock.register_model('looped', %s)", (model(100),))
    one(conn, "SELECT flock.set_alias('looped', 'prod', 1)")
    run(conn, """
        CREATE OR REPLACE FUNCTION pg_temp.score_twice() RETURNS float8[] LANGUAGE plpgsql AS $$
        DECLARE out float8[] := '{}';
        BEGIN
          FOR i IN 1..2 LOOP
            out := out || flock.predict('looped@prod', ARRAY[2]::float4[]);
            IF i = 1 THEN PERFORM flock.set_alias('looped', 'prod', 2); END IF;
          END LOOP;
          RETURN out;
        END $$""")
    assert one(conn, "SELECT pg_temp.score_twice()") == [pytest.approx(2), pytest.approx(200)]


def test_alias_in_a_batched_query(conn):
    one(conn, "SELECT flock.register_model('batched', %s)", (model(1),))
    one(conn, "SELECT flock.register_model('batched', %s)", (model(10),))
    one(conn, "SELECT flock.set_alias('batched', 'prod', 2)")
    run(conn, "CREATE TABLE IF NOT EXISTS xs AS SELECT g::float4 AS x FROM generate_series(1, 50) g")
    plan = "\n".join(r[0] for r in rows(conn, "EXPLAIN SELECT sum(flock.predict('batched@prod', t)) FROM xs t"))
    assert "FlockBatchScore" in plan and "batched@2" in plan
    assert one(conn, "SELECT sum(flock.predict('batched@prod', t)) FROM xs t") == pytest.approx(10 * 1275)


def test_alias_errors(conn):
    one(conn, "SELECT flock.register_model('aliased', %s)", (model(1),))
    cases = [
        ("SELECT flock.set_alias('aliased', '3', 1)", "22023", "looks like a version number"),
        ("SELECT flock.set_alias('aliased', '-x', 1)", "42602", "invalid alias"),
        ("SELECT flock.set_alias('aliased', 'a b', 1)", "42602", "invalid alias"),
        ("SELECT flock.set_alias('aliased', NULL, 1)", "22004", None),
        ("SELECT flock.set_alias('aliased', 'prod', 9)", "42704", "has no version 9"),
        ("SELECT flock.set_alias('no_such_model', 'prod', 1)", "42704", "does not exist"),
        ("SELECT flock.drop_alias('aliased', 'prod')", "42704", 'no alias "prod"'),
        ("SELECT flock.model_info('aliased@prod')", "22023", 'no alias "prod"'),
        ("SELECT flock.model_info('aliased@')", "22023", "invalid model reference"),
        ("SELECT flock.model_info('aliased@pr od')", "22023", "invalid model reference"),
        ("SELECT flock.model_info('no_such_model@prod')", "42704", "does not exist"),
    ]
    for sql, code, needle in cases:
        err = sqlstate(conn, sql)
        assert err.pgcode == code, (sql, err.pgerror)
        if needle:
            assert needle in err.diag.message_primary, (sql, err.pgerror)
    err = sqlstate(conn, "SELECT flock.set_alias('aliased', 'prod', 9)")
    assert err.diag.message_hint == 'Versions of "aliased": 1.'
    err = sqlstate(conn, "SELECT flock.model_info('aliased@prod')")
    assert "flock.set_alias" in err.diag.message_hint
    assert one(conn, "SELECT count(*) FROM flock.alias_history WHERE name = 'aliased'") == 0


def test_a_version_an_alias_points_to_cannot_be_dropped(conn):
    one(conn, "SELECT flock.register_model('pinned', %s)", (model(1),))
    one(conn, "SELECT flock.register_model('pinned', %s)", (model(2),))
    one(conn, "SELECT flock.set_alias('pinned', 'prod', 2)")
    for sql in ("SELECT flock.drop_model('pinned', 2)", "SELECT flock.drop_model('pinned')"):
        err = sqlstate(conn, sql)
        assert err.pgcode == "2BP01" and "pinned@prod" in err.diag.message_primary
        assert "flock.drop_alias" in err.diag.message_hint
    assert one(conn, "SELECT count(*) FROM flock.models WHERE name = 'pinned'") == 2
    assert one(conn, "SELECT flock.drop_model('pinned', 1)") == 1
    one(conn, "SELECT flock.drop_alias('pinned', 'prod')")
    assert one(conn, "SELECT flock.drop_model('pinned')") == 1
    # The history outlives the model.
    assert one(conn, "SELECT count(*) FROM flock.alias_history WHERE name = 'pinned'") == 2


# --- access control -------------------------------------------------------------------------------

def hidden(err, name):
    """The error a role gets for a model it may not see (or that does not exist)."""
    assert err.pgcode == "42501", err.pgerror
    assert err.diag.message_primary == f'permission denied for model "{name}"'
    assert "the two cases give the same error" in err.diag.message_detail
    assert "flock.grant_model" in err.diag.message_hint


def test_models_are_visible_only_to_owners_grantees_and_superusers(conn, connect):
    owner, user, stranger = connect("gov_owner"), connect("gov_user"), connect("gov_stranger")
    assert one(owner, "SELECT flock.register_model('secret', %s)", (model(7),)) == "secret@1"
    one(owner, "SELECT flock.set_alias('secret', 'prod', 1)")
    run(owner, "CREATE TABLE IF NOT EXISTS owner_points AS SELECT 2::float4 AS x")

    # The stranger sees nothing and learns nothing: same error for it and for a missing model.
    assert one(stranger, "SELECT count(*) FROM flock.models WHERE name = 'secret'") == 0
    for table in ("aliases", "alias_history", "model_grants", "training_runs", "model_privileges"):
        assert one(stranger, f"SELECT count(*) FROM flock.{table} WHERE name = 'secret'" if table not in
                   ("training_runs",) else f"SELECT count(*) FROM flock.{table} WHERE model_name = 'secret'") == 0
    for ref in ("secret", "secret@1", "secret@prod", "secret@9", "secret@nope"):
        hidden(sqlstate(stranger, "SELECT flock.predict(%s, ARRAY[1]::float4[])", (ref,)), "secret")
        hidden(sqlstate(stranger, "SELECT flock.model_info(%s)", (ref,)), "secret")
        hidden(sqlstate(stranger, "SELECT * FROM flock.lineage(%s)", (ref,)), "secret")
    hidden(sqlstate(stranger, "SELECT flock.predict('secret', t) FROM (SELECT 1::float4 AS x) t"), "secret")
    hidden(sqlstate(stranger, "SELECT flock.predict_proba('secret', ARRAY[1]::float4[])"), "secret")
    hidden(sqlstate(stranger, "SELECT flock.openlineage('secret')"), "secret")
    hidden(sqlstate(stranger, "SELECT flock.model_info('never_registered')"), "never_registered")
    hidden(sqlstate(stranger, "SELECT flock.set_alias('secret', 'mine', 1)"), "secret")
    hidden(sqlstate(stranger, "SELECT flock.grant_model('secret', 'gov_stranger', 'use')"), "secret")
    hidden(sqlstate(stranger, "SELECT flock.log_training('secret@1')"), "secret")
    # Scoring the value from the catalog is no way round: the rows are not there.
    assert rows(stranger, "SELECT flock.predict(m.model, ARRAY[1]::float4[]) FROM flock.models m") == []
    # A role that sees everything still gets "does not exist" for a missing model.
    err = sqlstate(conn, "SELECT flock.model_info('never_registered')")
    assert err.pgcode == "42704" and err.diag.message_hint
    # A name taken by a hidden model cannot be hijacked with a new version.
    err = sqlstate(stranger, "SELECT flock.register_model('secret', %s)", (model(0),))
    assert err.pgcode == "42501" and "manage" in err.diag.message_hint
    assert one(conn, "SELECT max(version) FROM flock.models WHERE name = 'secret'") == 1

    # 'use': see and score, nothing more.
    one(owner, "SELECT flock.grant_model('secret', 'gov_user', 'use')")
    assert predict(user, "secret@prod", 3) == pytest.approx(21)
    assert one(user, "SELECT flock.model_info('secret')")["version"] == 1
    assert rows(user, "SELECT alias, version FROM flock.aliases WHERE name = 'secret'") == [("prod", 1)]
    assert rows(user, "SELECT name, privilege FROM flock.model_privileges WHERE name = 'secret'") == [("secret", "use")]
    err = sqlstate(user, "SELECT flock.set_alias('secret', 'mine', 1)")
    assert err.pgcode == "42501" and "set an alias" in err.diag.message_primary and "manage" in err.diag.message_hint
    for sql in ("SELECT flock.grant_model('secret', 'gov_stranger', 'use')", "SELECT flock.log_training('secret')",
                "SELECT flock.drop_alias('secret', 'prod')"):
        assert sqlstate(user, sql).pgcode == "42501", sql
    err = sqlstate(user, "SELECT flock.register_model('secret', %s)", (model(0),))
    assert err.pgcode == "42501"
    # unknown versions and aliases are reported normally to a role that may see the model
    err = sqlstate(user, "SELECT flock.model_info('secret@9')")
    assert err.pgcode == "42704" and err.diag.message_hint == 'Versions of "secret": 1.'

    # 'manage': new versions, aliases, grants.
    one(owner, "SELECT flock.grant_model('secret', 'gov_user', 'manage')")
    assert one(user, "SELECT flock.register_model('secret', %s)", (model(8),)) == "secret@2"
    one(user, "SELECT flock.set_alias('secret', 'prod', 2)")
    assert predict(owner, "secret@prod", 1) == pytest.approx(8)
    # Grants are visible to managers and to their grantee, not to others.
    assert sorted(rows(owner, "SELECT grantee, privilege FROM flock.model_grants WHERE name = 'secret'")) == [
        ("gov_user", "manage"), ("gov_user", "use")]
    assert rows(stranger, "SELECT * FROM flock.model_grants") == []

    # Revoking takes effect at once, in sessions already open.
    one(owner, "SELECT flock.grant_model('secret', 'gov_stranger', 'use')")
    assert predict(stranger, "secret@prod", 1) == pytest.approx(8)
    assert one(owner, "SELECT flock.revoke_model('secret', 'gov_stranger')") == 1
    hidden(sqlstate(stranger, "SELECT flock.predict('secret@prod', ARRAY[1]::float4[])"), "secret")
    assert one(stranger, "SELECT count(*) FROM flock.models WHERE name = 'secret'") == 0
    # gov_user registered secret@2: that makes it an owner of the model, whatever grants say,
    # until that version is gone.
    assert one(owner, "SELECT flock.revoke_model('secret', 'gov_user')") == 2
    assert rows(user, "SELECT privilege, via FROM flock.model_privileges WHERE name = 'secret'") == [("manage", "owner")]
    assert one(user, "SELECT count(*) FROM flock.models WHERE name = 'secret'") == 2
    one(conn, "SELECT flock.set_alias('secret', 'prod', 1)")
    assert one(conn, "SELECT flock.drop_model('secret', 2)") == 1
    hidden(sqlstate(user, "SELECT flock.predict('secret@prod', ARRAY[1]::float4[])"), "secret")
    assert one(user, "SELECT count(*) FROM flock.models WHERE name = 'secret'") == 0


def test_grants_to_groups_and_public(conn, connect):
    owner, member, stranger = connect("gov_owner"), connect("gov_member"), connect("gov_stranger")
    one(owner, "SELECT flock.register_model('shared', %s)", (model(3),))
    hidden(sqlstate(member, "SELECT flock.model_info('shared')"), "shared")
    one(owner, "SELECT flock.grant_model('shared', 'gov_group')")  # 'use' by default
    assert predict(member, "shared", 2) == pytest.approx(6)
    hidden(sqlstate(stranger, "SELECT flock.model_info('shared')"), "shared")
    one(owner, "SELECT flock.grant_model('shared', 'PUBLIC', 'use')")
    assert predict(stranger, "shared", 2) == pytest.approx(6)
    assert one(stranger, "SELECT grantee FROM flock.model_grants WHERE name = 'shared' AND grantee = 'public'") == "public"
    assert one(owner, "SELECT flock.revoke_model('shared', 'public', 'use')") == 1
    hidden(sqlstate(stranger, "SELECT flock.model_info('shared')"), "shared")
    assert predict(member, "shared", 2) == pytest.approx(6)


def test_access_follows_set_role_in_one_session(conn, connect):
    """Resolution plans are cached per session; they must not carry one role's view to another."""
    one(conn, "SELECT flock.register_model('roled', %s)", (model(4),))
    for _ in range(2):
        assert predict(conn, "roled", 1) == pytest.approx(4)
        run(conn, "SET ROLE gov_stranger")
        try:
            hidden(sqlstate(conn, "SELECT flock.predict('roled', ARRAY[1]::float4[])"), "roled")
            hidden(sqlstate(conn, "SELECT flock.model_info('roled')"), "roled")
        finally:
            run(conn, "RESET ROLE")


def test_a_granted_role_scores_in_parallel_workers(conn, connect):
    one(conn, "SELECT flock.register_model('par_m', %s)", (model(3),))
    one(conn, "SELECT flock.grant_model('par_m', 'gov_user')")
    run(conn, "CREATE TABLE IF NOT EXISTS par_xs AS SELECT (i % 10)::float4 AS x FROM generate_series(1, 200000) i")
    run(conn, "ANALYZE par_xs")
    run(conn, "GRANT SELECT ON par_xs TO gov_user, gov_stranger")
    user, stranger = connect("gov_user"), connect("gov_stranger")
    for c in (user, stranger):
        run(c, "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0; "
               "SET max_parallel_workers_per_gather = 2")
    for batching in ("on", "off"):  # off: every worker resolves the name itself
        run(user, f"SET flock.batching = {batching}")
        plan = "\n".join(r[0] for r in rows(user, "EXPLAIN (ANALYZE, COSTS OFF) "
                                                  "SELECT sum(flock.predict('par_m', t)) FROM par_xs t"))
        assert "Workers Launched: 2" in plan, plan
        assert one(user, "SELECT sum(flock.predict('par_m', t)) FROM par_xs t") == pytest.approx(3 * 20000 * 45)
        run(stranger, f"SET flock.batching = {batching}")
        hidden(sqlstate(stranger, "SELECT sum(flock.predict('par_m', t)) FROM par_xs t"), "par_m")


def test_drop_model_tells_strangers_nothing(conn, connect):
    one(conn, "SELECT flock.register_model('dropped_hidden', %s)", (model(1),))
    one(conn, "SELECT flock.register_model('dropped_hidden', %s)", (model(2),))
    stranger = connect("gov_stranger")
    hidden = sqlstate(stranger, "SELECT flock.drop_model('dropped_hidden')")
    missing = sqlstate(stranger, "SELECT flock.drop_model('no_such_model')")
    assert hidden.pgcode == missing.pgcode == "42501"
    assert hidden.diag.message_primary.replace('"dropped_hidden"', '"no_such_model"') == missing.diag.message_primary
    assert (hidden.diag.message_detail, hidden.diag.message_hint) == (missing.diag.message_detail, missing.diag.message_hint)
    hidden_v = sqlstate(stranger, "SELECT flock.drop_model('dropped_hidden', 1)")
    assert (hidden_v.pgcode, hidden_v.diag.message_primary) == (hidden.pgcode, hidden.diag.message_primary)
    assert sqlstate(conn, "SELECT flock.drop_model('no_such_model')").pgcode == "42704"
    err = sqlstate(conn, "SELECT flock.drop_model('dropped_hidden', 9)")
    assert err.pgcode == "42704" and "1, 2" in err.diag.message_hint
    # A grantee knows the model exists: it is told that it may not drop it.
    one(conn, "SELECT flock.grant_model('dropped_hidden', 'gov_user', 'use')")
    err = sqlstate(connect("gov_user"), "SELECT flock.drop_model('dropped_hidden')")
    assert err.pgcode == "42501" and "drop" in err.diag.message_primary
    assert one(conn, "SELECT count(*) FROM flock.models WHERE name = 'dropped_hidden'") == 2
    assert one(conn, "SELECT flock.drop_model('dropped_hidden')") == 2


def test_grant_errors_and_cleanup(conn, connect):
    owner = connect("gov_owner")
    one(owner, "SELECT flock.register_model('granted', %s)", (model(1),))
    cases = [
        ("SELECT flock.grant_model('granted@1', 'gov_user')", "22023", "granted on a model name"),
        ("SELECT flock.grant_model('granted', 'gov_user', 'admin')", "22023", "unknown model privilege"),
        ("SELECT flock.grant_model('granted', 'no_such_role', 'use')", "42704", "role"),
        ("SELECT flock.grant_model('granted', NULL, 'use')", "22004", None),
        ("SELECT flock.grant_model('granted', 'gov_user', NULL)", "22004", None),
        ("SELECT flock.revoke_model('granted', 'gov_user', 'owner')", "22023", "unknown model privilege"),
    ]
    for sql, code, needle in cases:
        err = sqlstate(owner, sql)
        assert err.pgcode == code, (sql, err.pgerror)
        if needle:
            assert needle in err.diag.message_primary
    # Superusers see missing models as missing.
    assert sqlstate(conn, "SELECT flock.grant_model('no_such_model', 'gov_user')").pgcode == "42704"
    # Grants go with the model's last version, so a new model of that name starts clean.
    one(owner, "SELECT flock.grant_model('granted', 'gov_user')")
    assert one(owner, "SELECT flock.drop_model('granted')") == 1
    assert one(conn, "SELECT count(*) FROM flock.model_grants WHERE name = 'granted'") == 0


def test_security_definer_functions_pin_search_path(conn, roles):
    unpinned = rows(conn, """
        SELECT p.oid::regprocedure::text FROM pg_proc p
         WHERE p.pronamespace = 'flock'::regnamespace AND p.prosecdef
           AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%%')""")
    assert unpinned == []
    definers = [r[0] for r in rows(conn, "SELECT proname FROM pg_proc WHERE pronamespace = 'flock'::regnamespace "
                                         "AND prosecdef")]
    # The governance functions run with definer rights: flock.F is the entry point that notes whom
    # Flock acts for (current_user at the call), its body flock._F is SECURITY DEFINER, pinned above.
    entries = [r[0] for r in rows(conn, "SELECT proname FROM pg_proc WHERE pronamespace = 'flock'::regnamespace "
                                        "AND prosrc = 'flock_entry' AND NOT prosecdef")]
    for fn in ("set_alias", "drop_alias", "grant_model", "revoke_model", "log_training", "drop_dataset",
               "register_model", "drop_model"):
        assert "_" + fn in definers and fn in entries
        assert not one(conn, "SELECT has_function_privilege('gov_stranger', %s::regproc, 'EXECUTE')",
                       ("flock._" + fn,))
    # Internal helpers that answer for any role are not callable by others.
    assert not one(conn, "SELECT has_function_privilege('gov_stranger', 'flock._may(name, text, text)', 'EXECUTE')")


def test_catalog_tables_are_row_secured(conn, roles):
    governed = ["alias_history", "aliases", "audit_policies", "audit_policy_history", "datasets", "inference_log",
                "model_grants", "models", "training_inputs", "training_runs"]
    secured = dict(rows(conn, "SELECT c.relname, c.relrowsecurity FROM pg_class c "
                              "WHERE c.relnamespace = 'flock'::regnamespace AND c.relkind IN ('r', 'p')"))
    assert {t: secured.get(t) for t in governed} == {t: True for t in governed}
    # Partitions of the inference log grant nothing: reading them directly would skip the policy.
    assert not one(conn, "SELECT has_table_privilege('gov_stranger', 'flock.inference_log_default', 'SELECT')")


# --- data sets ----------------------------------------------------------------------------------

@pytest.fixture
def source(conn):
    run(conn, "DROP TABLE IF EXISTS src")
    run(conn, "CREATE TABLE src (id int, x float8, label text, at timestamptz)")
    run(conn, "INSERT INTO src VALUES (1, 0.5, 'a', '2024-01-01 10:00+00'), (2, 1.25, NULL, NULL), "
              "(3, -2, 'c', '2024-06-01 12:30+02')")
    return "src"


def test_snapshot_freezes_rows_with_schema_and_hash(conn, source):
    assert one(conn, "SELECT flock.snapshot_dataset('ds', 'SELECT * FROM src', 'three rows')") == "ds@1"
    [(table, n, columns, h, sources, created_by, desc)] = rows(
        conn, "SELECT table_name, row_count, columns, content_hash, sources, created_by, description "
              "FROM flock.datasets WHERE name = 'ds'")
    assert table == 'flock_data."ds@1"' and n == 3 and created_by == "postgres" and desc == "three rows"
    assert columns == [{"name": "id", "type": "integer"}, {"name": "x", "type": "double precision"},
                       {"name": "label", "type": "text"}, {"name": "at", "type": "timestamp with time zone"}]
    assert len(h) == 64 and sources == ["public.src"]
    assert rows(conn, f"SELECT * FROM {table} ORDER BY id") == rows(conn, "SELECT * FROM src ORDER BY id")
    assert one(conn, "SELECT flock.verify_dataset('ds@1')") is True

    # The same content in another order, in another session with other settings: same hash.
    run(conn, "SET TimeZone = 'Asia/Tokyo'; SET extra_float_digits = 0; SET DateStyle = 'German'")
    assert one(conn, "SELECT flock.snapshot_dataset('ds', 'SELECT * FROM src ORDER BY id DESC;  ')") == "ds@2"
    run(conn, "RESET TimeZone; RESET extra_float_digits; RESET DateStyle")
    assert one(conn, "SELECT count(DISTINCT content_hash) FROM flock.datasets WHERE name = 'ds'") == 1
    # A duplicated row, a changed value, a renamed column: other hashes.
    for query in ("SELECT * FROM src UNION ALL SELECT * FROM src WHERE id = 1",
                  "SELECT id, x + 1e-12 AS x, label, at FROM src",
                  "SELECT id AS ident, x, label, at FROM src",
                  "SELECT id, x, label, at FROM src WHERE id < 3"):
        one(conn, "SELECT flock.snapshot_dataset('ds_other', %s)", (query,))
    assert one(conn, "SELECT count(DISTINCT content_hash) FROM flock.datasets "
                     "WHERE name = 'ds_other' AND content_hash <> (SELECT content_hash FROM flock.datasets "
                     "WHERE name = 'ds' AND version = 1)") == 4
    # Empty results hash too.
    assert one(conn, "SELECT flock.snapshot_dataset('ds_empty', 'SELECT * FROM src WHERE false')") == "ds_empty@1"
    assert one(conn, "SELECT row_count FROM flock.datasets WHERE name = 'ds_empty'") == 0
    assert one(conn, "SELECT flock.verify_dataset('ds_empty')") is True


def test_snapshots_are_immutable_and_tampering_is_detected(conn, source):
    ref = one(conn, "SELECT flock.snapshot_dataset('frozen_ds', 'SELECT * FROM src')")
    table = one(conn, "SELECT table_name FROM flock.datasets WHERE name = 'frozen_ds'")
    for sql in (f"UPDATE {table} SET x = 0", f"DELETE FROM {table}", f"TRUNCATE {table}"):
        err = sqlstate(conn, sql)
        assert err.pgcode == "55000" and "immutable" in err.diag.message_primary and err.diag.message_hint
    # A superuser can still force a change behind the trigger's back; verification notices.
    run(conn, f"ALTER TABLE {table} DISABLE TRIGGER immutable")
    run(conn, f"UPDATE {table} SET label = 'tampered' WHERE id = 1")
    run(conn, f"ALTER TABLE {table} ENABLE TRIGGER immutable")
    report = one(conn, "SELECT flock.verify_dataset_report(%s)", (ref,))
    assert report["ok"] is False and report["stored"]["ok"] is False and report["source"]["ok"] is True
    assert report["stored"]["content_hash"] != report["content_hash"]
    assert one(conn, "SELECT flock.verify_dataset(%s)", (ref,)) is False


def test_verify_notices_a_changed_source(conn, source):
    ref = one(conn, "SELECT flock.snapshot_dataset('drifting', 'SELECT id, x FROM src')")
    assert one(conn, "SELECT flock.verify_dataset(%s)", (ref,)) is True
    run(conn, "UPDATE src SET x = x * 2 WHERE id = 2")
    assert one(conn, "SELECT flock.verify_dataset(%s)", (ref,)) is False
    report = one(conn, "SELECT flock.verify_dataset_report(%s)", (ref,))
    assert report["stored"]["ok"] is True and report["source"]["ok"] is False and report["source"]["row_count"] == 3
    # Without the source check only the snapshot itself is verified.
    assert one(conn, "SELECT flock.verify_dataset(%s, check_source => false)", (ref,)) is True
    run(conn, "UPDATE src SET x = x / 2 WHERE id = 2")
    assert one(conn, "SELECT flock.verify_dataset(%s)", (ref,)) is True
    # A source that is gone is reported, not raised.
    run(conn, "ALTER TABLE src RENAME TO src_gone")
    try:
        report = one(conn, "SELECT flock.verify_dataset_report(%s)", (ref,))
        assert report["ok"] is False and report["source"]["sqlstate"] == "42P01" and report["stored"]["ok"] is True
    finally:
        run(conn, "ALTER TABLE src_gone RENAME TO src")


def test_snapshot_errors_leave_nothing_behind(conn, source):
    before = one(conn, "SELECT count(*) FROM flock.datasets")
    tables = one(conn, "SELECT count(*) FROM pg_tables WHERE schemaname = 'flock_data'")
    for args, code in [(("bad name!", "SELECT 1"), "42602"), ((None, "SELECT 1"), "22004"),
                       (("ok_name", ""), "22023"), (("ok_name", "SELECT * FROM no_such_table"), "42P01"),
                       (("ok_name", "DELETE FROM src RETURNING *"), "42601"),
                       (("ok_name", "SELECT 1 AS a, 2 AS a"), "42701"),
                       (("x" * 51, "SELECT 1"), "42602")]:
        err = sqlstate(conn, "SELECT flock.snapshot_dataset(%s, %s)", args)
        assert err.pgcode == code, (args, err.pgerror)
    assert one(conn, "SELECT count(*) FROM flock.datasets") == before
    assert one(conn, "SELECT count(*) FROM pg_tables WHERE schemaname = 'flock_data'") == tables
    assert one(conn, "SELECT count(*) FROM src") == 3
    for ref, code in [("no_such_ds", "42704"), ("ds@x", "22023")]:
        assert sqlstate(conn, "SELECT flock.verify_dataset(%s)", (ref,)).pgcode == code


def test_snapshots_run_with_the_callers_privileges(conn, connect, source):
    owner, user, stranger = connect("gov_owner"), connect("gov_user"), connect("gov_stranger")
    # The query runs as the caller: no reading other roles' tables through the definer.
    err = sqlstate(stranger, "SELECT flock.snapshot_dataset('stolen', 'SELECT * FROM src')")
    assert err.pgcode == "42501" and "src" in err.diag.message_primary
    # Nor handing the definer a table that is not your own temp table.
    err = sqlstate(stranger, "SELECT flock._store_snapshot('stolen', 'q', 'public', NULL, 'public.src'::regclass, '{}')")
    assert err.pgcode == "42501"
    # Nor claiming as a source a table you may not read.
    run(stranger, "CREATE TEMP TABLE fake AS SELECT 1 AS id")
    err = sqlstate(stranger, "SELECT flock._store_snapshot('stolen', 'SELECT * FROM src', 'public', NULL, "
                             "'pg_temp.fake'::regclass, '{public.src}')")
    assert err.pgcode == "42501"
    # Column privileges are enough to read (and snapshot) a table.
    run(conn, "GRANT SELECT (id, x) ON src TO gov_user")
    assert one(user, "SELECT flock.snapshot_dataset('cols_only', 'SELECT id, x FROM src')") == "cols_only@1"
    assert one(user, "SELECT sources FROM flock.datasets WHERE name = 'cols_only'") == ["public.src"]
    assert one(conn, "SELECT count(*) FROM flock.datasets WHERE name = 'stolen'") == 0

    run(owner, "DROP TABLE IF EXISTS owner_rows")
    run(owner, "CREATE TABLE owner_rows AS SELECT g AS id, g * 0.5 AS v FROM generate_series(1, 10) g")
    assert one(owner, "SELECT flock.snapshot_dataset('owned_ds', 'SELECT * FROM owner_rows')") == "owned_ds@1"
    table = one(owner, "SELECT table_name FROM flock.datasets WHERE name = 'owned_ds'")
    assert one(owner, f"SELECT count(*) FROM {table}") == 10
    # Others see neither the rows nor the catalog entry, and get the same error as for nothing.
    assert sqlstate(stranger, f"SELECT count(*) FROM {table}").pgcode == "42501"
    assert one(stranger, "SELECT count(*) FROM flock.datasets WHERE name = 'owned_ds'") == 0
    for ref in ("owned_ds@1", "never_taken"):
        err = sqlstate(stranger, "SELECT flock.verify_dataset(%s)", (ref,))
        assert err.pgcode == "42501" and "the two cases give the same error" in err.diag.message_detail
    assert sqlstate(stranger, "SELECT * FROM flock.lineage('dataset:owned_ds@1')").pgcode == "42501"
    # Nor add versions to it.
    run(stranger, "CREATE TEMP TABLE mine AS SELECT 1 AS id")
    err = sqlstate(stranger, "SELECT flock.snapshot_dataset('owned_ds', 'SELECT * FROM mine')")
    assert err.pgcode == "42501" and "add a version" in err.diag.message_primary
    # The owner shares it with plain SQL (it holds SELECT with grant option).
    run(owner, f"GRANT SELECT ON {table} TO gov_user")
    assert one(user, "SELECT row_count FROM flock.datasets WHERE name = 'owned_ds'") == 10
    assert one(user, "SELECT flock.verify_dataset('owned_ds', false)") is True
    # Only the owner (or a superuser) drops it.
    assert sqlstate(user, "SELECT flock.drop_dataset('owned_ds')").pgcode == "42501"
    assert one(owner, "SELECT flock.drop_dataset('owned_ds')") == 1
    assert one(conn, "SELECT to_regclass(%s)", (table,)) is None
    assert sqlstate(conn, "SELECT flock.drop_dataset('owned_ds')").pgcode == "42704"


# --- training capture -----------------------------------------------------------------------------

def test_log_training_records_and_validates(conn, connect, source):
    one(conn, "SELECT flock.register_model('trained', %s)", (model(2),))
    ds = one(conn, "SELECT flock.snapshot_dataset('train_src', 'SELECT * FROM src')")
    code = "import sklearn\nprint('fit')\n"
    run_id = one(conn, "SELECT flock.log_training('trained', ARRAY[%s], %s, 'git+https://example.org/repo@abc123', "
                       "'{\"C\": 1.0}', '{\"accuracy\": 0.9}', '{\"python\": \"3.11\"}')", (ds, code))
    [(name, version, sha, code_sha, params, metrics, env, by)] = rows(
        conn, "SELECT model_name, model_version, model_sha256, code_sha256, params, metrics, environment, logged_by "
              "FROM flock.training_runs WHERE id = %s", (run_id,))
    assert (name, version, by) == ("trained", 1, "postgres")
    assert sha == one(conn, "SELECT sha256 FROM flock.models WHERE name = 'trained'")
    assert code_sha == hashlib.sha256(code.encode()).hexdigest()
    assert params == {"C": 1.0} and metrics == {"accuracy": 0.9} and env == {"python": "3.11"}
    assert rows(conn, "SELECT dataset_name, dataset_version FROM flock.training_inputs WHERE run_id = %s",
                (run_id,)) == [("train_src", 1)]
    # 'name' means the latest version, for data sets as for models.
    run_id2 = one(conn, "SELECT flock.log_training('trained@1', ARRAY['train_src'])")
    assert rows(conn, "SELECT dataset_version FROM flock.training_inputs WHERE run_id = %s", (run_id2,)) == [(1,)]

    cases = [
        ("SELECT flock.log_training('trained', params => '[1, 2]')", "22023"),
        ("SELECT flock.log_training('trained', metrics => '3')", "22023"),
        ("SELECT flock.log_training('trained', ARRAY['no_such_ds@1'])", "42704"),
        ("SELECT flock.log_training('trained', ARRAY['train_src@9'])", "42704"),
        ("SELECT flock.log_training('trained', ARRAY['train_src@x'])", "22023"),
        ("SELECT flock.log_training('trained@5')", "42704"),
        ("SELECT flock.log_training('no_such_model')", "42704"),
        ("SELECT flock.log_training(NULL)", "22004"),
    ]
    runs = one(conn, "SELECT count(*) FROM flock.training_runs")
    for sql, code in cases:
        assert sqlstate(conn, sql).pgcode == code, sql
    assert one(conn, "SELECT count(*) FROM flock.training_runs") == runs

    # A data set still recorded as training input cannot be dropped; dropping the model version
    # drops its training records, and then the data set can go.
    err = sqlstate(conn, "SELECT flock.drop_dataset('train_src')")
    assert err.pgcode == "2BP01" and "trained@1" in err.diag.message_detail
    assert one(conn, "SELECT flock.drop_model('trained')") == 1
    assert one(conn, "SELECT count(*) FROM flock.training_runs WHERE model_name = 'trained'") == 0
    assert one(conn, "SELECT flock.drop_dataset('train_src')") == 1

    # Roles log training only for models they manage, and only on data they can read.
    owner = connect("gov_owner")
    one(owner, "SELECT flock.register_model('owner_trained', %s)", (model(1),))
    pg_only = one(conn, "SELECT flock.snapshot_dataset('pg_only', 'SELECT * FROM src')")
    err = sqlstate(owner, "SELECT flock.log_training('owner_trained', ARRAY[%s])", (pg_only,))
    assert err.pgcode == "42501" and "the two cases give the same error" in err.diag.message_detail
    assert isinstance(one(owner, "SELECT flock.log_training('owner_trained', params => '{\"k\": 1}')"), int)


# --- dump and restore -------------------------------------------------------------------------------

def snapshot_of(conn):
    queries = {
        "models": "SELECT name, version, sha256, created_by, description FROM flock.models",
        "aliases": "SELECT name, alias, version, comment, set_by, set_at FROM flock.aliases",
        "history": "SELECT id, name, alias, from_version, to_version, comment, changed_by, changed_at "
                   "FROM flock.alias_history",
        "grants": "SELECT name, grantee, privilege, granted_by FROM flock.model_grants",
        "datasets": "SELECT name, version, table_name, row_count, columns, content_hash, sources, run_id, created_by "
                    "FROM flock.datasets",
        "runs": "SELECT id, run_id, model_name, model_version, code_sha256, params, metrics FROM flock.training_runs",
        "inputs": "SELECT run_id, dataset_name, dataset_version FROM flock.training_inputs",
        "log": "SELECT logged_at, role, model_name, model_version, query_id, function, n_rows, features, input, output "
               "FROM flock.inference_log",
        "log_rows": "SELECT logged_at, role, model_name, model_version, query_id, input, output FROM flock.inference_log_rows",
        "policies": "SELECT name, mode, sample_rate, set_by, set_at FROM flock.audit_policies",
        "policy_history": "SELECT id, name, from_mode, from_rate, to_mode, to_rate, changed_by, changed_at "
                          "FROM flock.audit_policy_history",
        "lineage": "SELECT from_kind, from_ref, relation, to_kind, to_ref, at FROM flock.lineage('dumped_m@prod')",
    }
    return {k: sorted(map(repr, rows(conn, q))) for k, q in queries.items()}


def test_dump_and_restore_keep_the_governance_catalog(conn, cluster, dbname, tmp_path, roles, source):
    one(conn, "SELECT flock.register_model('dumped_m', %s)", (model(1),))
    one(conn, "SELECT flock.register_model('dumped_m', %s)", (model(5),))
    one(conn, "SELECT flock.set_alias('dumped_m', 'prod', 1)")
    one(conn, "SELECT flock.set_alias('dumped_m', 'prod', 2, 'promoted')")
    one(conn, "SELECT flock.grant_model('dumped_m', 'gov_user', 'use')")
    ds = one(conn, "SELECT flock.snapshot_dataset('dumped_ds', 'SELECT * FROM src')")
    one(conn, "SELECT flock.log_training('dumped_m@2', ARRAY[%s], 'print(1)', NULL, '{\"a\": 1}', '{\"m\": 2}')", (ds,))
    part = one(conn, "SELECT flock.inference_log_partition(now()::date)::text")
    one(conn, "SELECT flock.set_audit('dumped_m', 'sample', 0.5)")
    one(conn, "SELECT flock.set_audit('dumped_m', 'all')")
    user = psycopg2.connect(cluster.dsn(dbname, user="gov_user"))
    user.autocommit = True
    try:
        assert predict(user, "dumped_m@prod", 2) == pytest.approx(10)  # recorded by the audit writer
    finally:
        user.close()
    assert one(conn, "SELECT flock.audit_flush()") is True
    # An older record (the default partition holds what no month partition takes).
    run(conn, "INSERT INTO flock.inference_log (logged_at, role, model_name, model_version, query_id, function, "
              "n_rows, features, input, output) "
              "VALUES ('1999-01-01', 'gov_user', 'dumped_m', 2, 7, 'predict', 1, '{x}', '{{2}}', '{{10}}')")
    assert one(conn, f"SELECT count(*) FROM {part}") == 1
    assert one(conn, "SELECT count(*) FROM flock.inference_log_default") == 1
    before = snapshot_of(conn)
    assert before["lineage"] and before["log"] and before["runs"] and before["policies"]
    assert len(before["log_rows"]) == 2 and len(before["policy_history"]) == 2

    dump = tmp_path / "gov.dump"
    os.chmod(tmp_path, 0o777)
    env = cluster.env(dbname)
    subprocess.run([f"{PG_BIN}/pg_dump", "-Fc", "-f", str(dump), dbname], env=env, check=True)
    target = dbname + "_gov_restored"
    admin = psycopg2.connect(cluster.dsn())
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {target}")
        cur.execute(f"CREATE DATABASE {target}")
    admin.close()
    p = subprocess.run([f"{PG_BIN}/pg_restore", "--exit-on-error", "-d", target, str(dump)], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert p.returncode == 0, p.stdout
    restored = psycopg2.connect(cluster.dsn(target))
    restored.autocommit = True
    user = psycopg2.connect(cluster.dsn(target, user="gov_user"))
    user.autocommit = True
    try:
        assert snapshot_of(restored) == before
        assert one(restored, f"SELECT count(*) FROM {part}") == 1
        assert predict(restored, "dumped_m@prod", 2) == pytest.approx(10)
        assert one(restored, "SELECT flock.verify_dataset(%s)", (ds,)) is True
        table = one(restored, "SELECT table_name FROM flock.datasets WHERE name = 'dumped_ds'")
        assert sqlstate(restored, f"DELETE FROM {table}").pgcode == "55000"  # still immutable
        # Access control survives too.
        assert predict(user, "dumped_m@prod", 1) == pytest.approx(5)
        # The policy came along and capture works in the restored database.
        assert predict(user, "dumped_m@prod", 3) == pytest.approx(15)
        assert one(restored, "SELECT flock.audit_flush()") is True
        assert one(restored, "SELECT count(*) FROM flock.inference_log_rows WHERE input = '{\"x\": 3}'") == 1
        assert one(restored, f"SELECT count(*) FROM {part}") == 1 + 3
        # New versions, history rows and runs continue their sequences.
        one(restored, "SELECT flock.set_alias('dumped_m', 'prod', 1)")
        assert one(restored, "SELECT max(id) FROM flock.alias_history") == one(
            conn, "SELECT last_value FROM flock.alias_history_id_seq") + 1
        assert one(restored, "SELECT flock.snapshot_dataset('dumped_ds', 'SELECT 1')") == "dumped_ds@2"
    finally:
        user.close()
        restored.close()
