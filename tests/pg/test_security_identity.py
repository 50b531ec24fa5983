"""Identity: Flock acts for the effective role (current_user at the call), also when a SECURITY
DEFINER function calls it, and a data set's stored query runs again only as its author, inside a
security-restricted operation (issue 11, attacks 1 and 5)."""
import psycopg2
import pytest

from onnx_builders import linear_regressor
from test_catalog import one, rows, run, sqlstate

LOW, OTHER, MEMBER = "sec_id_low", "sec_id_other", "sec_id_member"


def model(weight):
    return linear_regressor([float(weight)], 0.0, ["x"])


@pytest.fixture(scope="module")
def roles(cluster, dbname):
    """Ordinary LOGIN roles without special grants; the low role has a schema of its own (as the
    issue's `mine`), where it writes its functions and operators."""
    admin = psycopg2.connect(cluster.dsn(dbname))
    admin.autocommit = True
    with admin.cursor() as cur:
        for role in (LOW, OTHER, MEMBER):
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if not cur.fetchone():
                cur.execute(f"CREATE ROLE {role} LOGIN")
        cur.execute(f"GRANT {LOW} TO {MEMBER}")
        cur.execute(f"CREATE SCHEMA {LOW} AUTHORIZATION {LOW}")
        cur.execute("SELECT flock.register_model('admin_model', %s)", (model(2),))
    admin.close()
    return LOW, OTHER, MEMBER


@pytest.fixture
def low(connect_as, roles):
    return connect_as(LOW)


def is_superuser(conn, role):
    return one(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,))


def admin_model_untouched(conn):
    assert one(conn, "SELECT count(*) FROM flock.model_grants WHERE name = 'admin_model'") == 0
    assert one(conn, "SELECT count(*) FROM flock.aliases WHERE name = 'admin_model'") == 0
    assert one(conn, "SELECT count(*) FROM flock.audit_policies WHERE name = 'admin_model'") == 0
    assert rows(conn, "SELECT version, created_by FROM flock.models WHERE name = 'admin_model'") == [(1, "postgres")]


# --- attack 1: stored SQL runs as its author --------------------------------------------------------

# The low role's code: escalates when it finds itself running as a superuser, tries to take manage
# on the administrator's model, and notes whom it ran as.
LOW_CODE = f"""
CREATE TABLE {LOW}.seen (who name, during text);
CREATE FUNCTION {LOW}.attempt(during text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {LOW}.seen VALUES (current_user, during);
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    EXECUTE 'ALTER ROLE {LOW} SUPERUSER';
  END IF;
  BEGIN
    PERFORM flock.grant_model('admin_model', '{LOW}', 'manage');
  EXCEPTION WHEN insufficient_privilege THEN NULL;
  END;
END $$;
CREATE FUNCTION {LOW}.f() RETURNS SETOF integer LANGUAGE plpgsql AS $$
BEGIN
  PERFORM {LOW}.attempt('f');
  RETURN QUERY SELECT g FROM generate_series(1, 3) g;
END $$;
CREATE FUNCTION {LOW}.gt(a integer, b integer) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  PERFORM {LOW}.attempt('operator');
  RETURN a OPERATOR(pg_catalog.>) b;
END $$;
CREATE OPERATOR {LOW}.> (LEFTARG = integer, RIGHTARG = integer, FUNCTION = {LOW}.gt);
CREATE TABLE {LOW}.t (a integer);
INSERT INTO {LOW}.t VALUES (-1), (1), (2);
"""


@pytest.fixture
def low_code(conn, low):
    run(low, f"DROP TABLE IF EXISTS {LOW}.seen, {LOW}.t; DROP OPERATOR IF EXISTS {LOW}.> (integer, integer); "
             f"DROP FUNCTION IF EXISTS {LOW}.f(), {LOW}.gt(integer, integer), {LOW}.attempt(text)")
    run(low, LOW_CODE)
    return low


def seen(conn):
    return rows(conn, f"SELECT who, during FROM {LOW}.seen")


def test_verify_runs_a_function_in_the_query_as_its_author(conn, low_code):
    low = low_code
    assert one(low, f"SELECT flock.snapshot_dataset('low_f', 'SELECT * FROM {LOW}.f()')") == "low_f@1"
    assert seen(conn) == [(LOW, "f")]
    report = one(conn, "SELECT flock.verify_dataset_report('low_f@1')")
    # The query ran again (the function noted it), as the low role: no escalation, no grant.
    assert seen(conn) == [(LOW, "f"), (LOW, "f")]
    assert is_superuser(conn, LOW) is False
    admin_model_untouched(conn)
    assert report["ok"] is True and report["stored"]["ok"] is True
    assert report["source"]["ok"] is True and report["source"]["row_count"] == 3
    assert report["source"]["run_as"] == LOW
    assert one(conn, "SELECT flock.verify_dataset('low_f')") is True
    assert is_superuser(conn, LOW) is False
    # The author verifies its own data set the same way.
    assert one(low, "SELECT flock.verify_dataset('low_f@1')") is True


def test_verify_runs_an_operator_on_the_recorded_search_path_as_its_author(conn, low_code):
    low = low_code
    run(low, f"SET search_path = {LOW}, pg_catalog, public")
    assert one(low, "SELECT flock.snapshot_dataset('low_op', 'SELECT a FROM t WHERE a > 0')") == "low_op@1"
    assert one(low, "SELECT search_path FROM flock.datasets WHERE name = 'low_op'") == f"{LOW}, pg_catalog, public"
    assert one(low, "SELECT row_count FROM flock.datasets WHERE name = 'low_op'") == 2
    before = len(seen(conn))
    assert before == 3 and set(seen(conn)) == {(LOW, "operator")}  # once per row at snapshot time
    # The superuser's own session has the default search_path: the recorded one is used.
    report = one(conn, "SELECT flock.verify_dataset_report('low_op')")
    assert len(seen(conn)) == 2 * before and set(seen(conn)) == {(LOW, "operator")}
    assert is_superuser(conn, LOW) is False
    admin_model_untouched(conn)
    assert report["ok"] is True and report["source"] == {
        "ok": True, "row_count": 2, "content_hash": report["content_hash"], "run_as": LOW}


def test_the_rerun_is_a_security_restricted_operation(conn, low):
    run(low, f"DROP FUNCTION IF EXISTS {LOW}.with_temp(), {LOW}.sets_guc()")
    run(low, f"""CREATE FUNCTION {LOW}.with_temp() RETURNS SETOF integer LANGUAGE plpgsql AS $$
                 BEGIN
                   CREATE TEMP TABLE IF NOT EXISTS scratch (x integer);
                   RETURN QUERY SELECT 1;
                 END $$""")
    assert one(low, f"SELECT flock.snapshot_dataset('low_temp', 'SELECT * FROM {LOW}.with_temp()')") == "low_temp@1"
    # Run again by the superuser: as the author, and temp tables are refused as in REFRESH
    # MATERIALIZED VIEW. The failure is reported, not raised.
    report = one(conn, "SELECT flock.verify_dataset_report('low_temp')")
    assert report["ok"] is False and report["stored"]["ok"] is True
    assert report["source"]["ok"] is False and report["source"]["sqlstate"] == "42501"
    assert "security-restricted operation" in report["source"]["error"]
    # Nor can the author's code plant objects in the verifier's temporary schema (searched first
    # for types and tables), even when that schema exists already.
    run(low, f"DROP FUNCTION IF EXISTS {LOW}.plants()")
    run(low, f"""CREATE FUNCTION {LOW}.plants() RETURNS SETOF integer LANGUAGE plpgsql AS $$
                 BEGIN
                   IF current_setting('application_name') = 'verifier' THEN
                     CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (length(VALUE) >= 0);
                   END IF;
                   RETURN QUERY SELECT 1;
                 END $$""")
    assert one(low, f"SELECT flock.snapshot_dataset('low_plant', 'SELECT * FROM {LOW}.plants()')") == "low_plant@1"
    run(conn, "SET application_name = 'verifier'; CREATE TEMP TABLE verifier_scratch (x integer)")
    report = one(conn, "SELECT flock.verify_dataset_report('low_plant')")
    assert report["source"]["ok"] is False and report["source"]["sqlstate"] == "42501"
    assert one(conn, "SELECT to_regtype('pg_temp.text')") is None
    run(conn, "RESET application_name")
    # Settings the author's code changes are undone.
    run(low, f"""CREATE FUNCTION {LOW}.sets_guc() RETURNS SETOF integer LANGUAGE plpgsql AS $$
                 BEGIN
                   PERFORM set_config('work_mem', '1234kB', false);
                   PERFORM set_config('search_path', 'pg_catalog', false);
                   RETURN QUERY SELECT 1;
                 END $$""")
    assert one(low, f"SELECT flock.snapshot_dataset('low_guc', 'SELECT * FROM {LOW}.sets_guc()')") == "low_guc@1"
    run(conn, "RESET work_mem; RESET search_path")
    settings = one(conn, "SELECT current_setting('work_mem') || ' ' || current_setting('search_path')")
    assert one(conn, "SELECT flock.verify_dataset('low_guc')") is True
    assert one(conn, "SELECT current_setting('work_mem') || ' ' || current_setting('search_path')") == settings


def test_a_verifier_who_may_not_act_as_the_author_gets_the_stored_check_only(conn, low_code, connect_as):
    low = low_code
    other, member = connect_as(OTHER), connect_as(MEMBER)
    ref = one(low, f"SELECT flock.snapshot_dataset('low_shared', 'SELECT * FROM {LOW}.f()')")
    table = one(low, "SELECT table_name FROM flock.datasets WHERE name = 'low_shared'")
    run(low, f"GRANT SELECT ON {table} TO {OTHER}, {MEMBER}")
    before = seen(conn)
    other.notices.clear()
    report = one(other, "SELECT flock.verify_dataset_report(%s)", (ref,))
    assert seen(conn) == before  # not run
    assert report["ok"] is True and report["stored"]["ok"] is True
    assert report["source"]["ok"] is None and report["source"]["checked"] is False
    assert LOW in report["source"]["reason"] and OTHER in report["source"]["reason"]
    assert any("was not run again" in n and LOW in n for n in other.notices), other.notices
    assert one(other, "SELECT flock.verify_dataset(%s)", (ref,)) is True
    # Nor can it have the query run by calling the helper itself.
    err = sqlstate(other, "SELECT * FROM flock._source_hash('low_shared', 1)")
    assert err.pgcode == "42501" and "as its author" in err.diag.message_primary
    assert seen(conn) == before
    # A member of the author's role may act as it: the query runs, as the author.
    report = one(member, "SELECT flock.verify_dataset_report(%s)", (ref,))
    assert report["source"]["ok"] is True and report["source"]["run_as"] == LOW
    assert seen(conn) == before + [(LOW, "f")]
    # A role that may not read the data set learns nothing about it.
    run(low, f"REVOKE SELECT ON {table} FROM {OTHER}")
    err = sqlstate(other, "SELECT * FROM flock._source_hash('low_shared', 1)")
    assert err.pgcode == "42501" and "the two cases give the same error" in err.diag.message_detail


def test_snapshot_provenance_is_recorded_by_trusted_code_only(conn, low):
    run(low, f"DROP TABLE IF EXISTS {LOW}.mine")
    run(low, f"CREATE TABLE {LOW}.mine AS SELECT 1 AS id")
    run(low, "CREATE TEMP TABLE fake AS SELECT 1 AS id")
    err = sqlstate(low, "SELECT flock._store_snapshot('forged', 'SELECT 1 AS id', 'public', NULL, "
                        "'pg_temp.fake'::regclass, '{}')")
    assert err.pgcode == "42501"
    assert one(conn, "SELECT count(*) FROM flock.datasets WHERE name = 'forged'") == 0
    # snapshot_dataset records the query it ran, with the search_path and sources it ran with.
    run(low, f"SET search_path = {LOW}, public")
    assert one(low, "SELECT flock.snapshot_dataset('low_prov', 'SELECT id FROM mine')") == "low_prov@1"
    assert rows(low, "SELECT query, search_path, sources, created_by FROM flock.datasets WHERE name = 'low_prov'") == [
        ("SELECT id FROM mine", f"{LOW}, public", [f"{LOW}.mine"], LOW)]
    assert one(low, "SELECT count(*) FROM pg_class WHERE relname LIKE 'flock_snapshot_%' AND relpersistence = 't'") == 0
    # Bad input from an ordinary role: clean errors, nothing stored.
    for args, code in [((None, "SELECT 1"), "22004"), (("bad name!", "SELECT 1"), "42602"), (("ok_name", None), "22023"),
                       (("ok_name", " ; "), "22023"), (("ok_name", "SELECT * FROM pg_authid"), "42501"),
                       (("ok_name", "SELECT 1; DROP TABLE mine"), "42601")]:
        err = sqlstate(low, "SELECT flock.snapshot_dataset(%s, %s)", args)
        assert err.pgcode == code, (args, err.pgerror)
    assert one(low, "SELECT count(*) FROM mine") == 1
    assert one(conn, "SELECT count(*) FROM flock.datasets WHERE name = 'ok_name'") == 0
    for ref, code in [("ok_name", "42501"), ("low_prov@x", "22023"), (None, "22004")]:
        assert sqlstate(low, "SELECT flock.verify_dataset(%s)", (ref,)).pgcode == code


# --- attack 5: Flock acts for current_user at the call -----------------------------------------------

TRAPS = {
    "grant_model": "PERFORM flock.grant_model('admin_model', '{low}', 'manage')",
    "revoke_model": "PERFORM flock.revoke_model('admin_model', 'public')",
    "set_alias": "PERFORM flock.set_alias('admin_model', 'pwned', 1)",
    "drop_alias": "PERFORM flock.drop_alias('admin_model', 'pwned')",
    "drop_model": "PERFORM flock.drop_model('admin_model')",
    "set_audit": "PERFORM flock.set_audit('admin_model', 'off')",
    "set_audit_durability": "PERFORM flock.set_audit_durability('admin_model', 'async')",
    "audit_trail": "PERFORM * FROM flock.audit_trail('admin_model')",
    "log_training": "PERFORM flock.log_training('admin_model', params => '{{}}')",
    "register_model": "PERFORM flock.register_model('admin_model', decode('{bytes}', 'hex'))",
}


def test_a_definer_function_of_a_low_role_does_not_borrow_the_callers_rights(conn, low):
    for name, statement in TRAPS.items():
        body = statement.format(low=LOW, bytes=model(5).hex())
        run(low, f"DROP FUNCTION IF EXISTS {LOW}.trap_{name}()")
        run(low, f"CREATE FUNCTION {LOW}.trap_{name}() RETURNS void LANGUAGE plpgsql SECURITY DEFINER "
                 f"AS $$ BEGIN {body}; END $$")
        # The administrator (a superuser) calls it: Flock acts for the function's owner.
        err = sqlstate(conn, f"SELECT {LOW}.trap_{name}()")
        assert err.pgcode == "42501", (name, err.pgerror)
        admin_model_untouched(conn)
    # The same through SQL-language definer functions, and a privilege given to the low role's
    # function by nobody: still 42501.
    run(low, f"""CREATE OR REPLACE FUNCTION {LOW}.trap_sql() RETURNS void LANGUAGE sql SECURITY DEFINER
                 AS $$ SELECT flock.grant_model('admin_model', '{LOW}', 'manage') $$""")
    assert sqlstate(conn, f"SELECT {LOW}.trap_sql()").pgcode == "42501"
    admin_model_untouched(conn)


def test_flock_acts_for_the_definer_inside_a_definer_function(conn, low, connect_as):
    other = connect_as(OTHER)
    one(low, "SELECT flock.register_model('low_model', %s)", (model(3),))
    # The low role's definer function acts for the low role, whoever calls it.
    run(low, f"DROP FUNCTION IF EXISTS {LOW}.share(name)")
    run(low, f"""CREATE FUNCTION {LOW}.share(who name) RETURNS void LANGUAGE plpgsql SECURITY DEFINER
                 AS $$ BEGIN PERFORM flock.grant_model('low_model', who); END $$""")
    run(conn, f"SELECT {LOW}.share('{OTHER}')")
    assert rows(conn, "SELECT grantee, granted_by FROM flock.model_grants WHERE name = 'low_model'") == [(OTHER, LOW)]
    # The administrator's definer function acts for the administrator, even when the low role calls it.
    run(conn, "DROP FUNCTION IF EXISTS public.admin_shares()")
    run(conn, """CREATE FUNCTION public.admin_shares() RETURNS void LANGUAGE plpgsql SECURITY DEFINER
                 SET search_path = pg_catalog AS $$
                 BEGIN PERFORM flock.grant_model('admin_model', session_user, 'use'); END $$""")
    run(low, "SELECT public.admin_shares()")
    assert rows(conn, "SELECT grantee, privilege, granted_by FROM flock.model_grants WHERE name = 'admin_model'") == [
        (LOW, "use", "postgres")]
    assert one(low, "SELECT flock.predict('admin_model', ARRAY[1]::float4[])") == pytest.approx(2.0)
    run(conn, "SELECT flock.revoke_model('admin_model', %s)", (LOW,))
    run(conn, "DROP FUNCTION public.admin_shares()")
    assert one(other, "SELECT flock.predict('low_model', ARRAY[1]::float4[])") == pytest.approx(3.0)
    assert one(low, "SELECT flock.drop_model('low_model')") == 1


def test_internal_functions_are_refused_to_ordinary_roles(conn, low):
    calls = [
        "SELECT flock._grant_model('admin_model', current_user, 'manage')",
        "SELECT flock._revoke_model('admin_model', 'public', NULL)",
        "SELECT flock._set_alias('admin_model', 'pwned', 1, NULL)",
        "SELECT flock._drop_alias('admin_model', 'pwned', NULL)",
        "SELECT flock._drop_model('admin_model', NULL)",
        "SELECT flock._register_model('admin_model', '\\x00'::bytea, 'auto', NULL, NULL)",
        "SELECT flock._log_training('admin_model', NULL, NULL, NULL, NULL, NULL, NULL)",
        "SELECT flock._set_audit('admin_model', 'off', NULL)",
        "SELECT flock._set_audit_durability('admin_model', 'async')",
        "SELECT * FROM flock._audit_trail('admin_model', '-infinity')",
        "SELECT flock._drop_dataset('any', NULL)",
        "SELECT flock._store_snapshot('forged', 'SELECT 1', 'public', NULL, 'pg_class'::regclass, '{}')",
        "SELECT flock._require_manage('admin_model', 'test')",
        "SELECT flock._may(current_user, 'admin_model', 'manage')",
        "SELECT flock._touch_catalog()",
        "SELECT flock.__guard_model_insert()",
        "SELECT flock.__forget_dropped_policy()",
    ]
    for sql in calls:
        err = sqlstate(low, sql)
        assert err.pgcode == "42501", (sql, err.pgerror)
    admin_model_untouched(conn)
    # flock._caller() outside an entry point is just current_user.
    assert one(low, "SELECT flock._caller()") == LOW
    assert one(conn, "SELECT flock._caller()") == "postgres"


def test_nested_calls_keep_acting_for_the_original_caller(conn, low):
    # register_model's insert fires the catalog guard (a trigger entry point inside the definer
    # implementation): it acts for the low role, not for the implementation's superuser owner.
    err = sqlstate(low, "SELECT flock.register_model('admin_model', %s)", (model(7),))
    assert err.pgcode == "42501" and "new version" in err.diag.message_primary
    admin_model_untouched(conn)
    assert one(low, "SELECT flock.register_model('nested', %s)", (model(1),)) == "nested@1"
    assert one(low, "SELECT flock.register_model('nested', %s)", (model(2),)) == "nested@2"
    assert rows(conn, "SELECT version, created_by FROM flock.models WHERE name = 'nested' ORDER BY 1") == [
        (1, LOW), (2, LOW)]
    # Dropping the last version drops the audit policy in a trigger: its history names the low role.
    one(low, "SELECT flock.set_audit('nested', 'all')")
    assert one(low, "SELECT flock.drop_model('nested')") == 2
    assert rows(conn, "SELECT from_mode, to_mode, changed_by FROM flock.audit_policy_history "
                      "WHERE name = 'nested' ORDER BY id") == [(None, "all", LOW), ("all", None, LOW)]
    # An error inside an entry point leaves no caller behind: after it, in the same session, the
    # low role is itself again.
    run(conn, """DO $$ BEGIN PERFORM flock.drop_model('admin_model', 99);
                 EXCEPTION WHEN undefined_object THEN NULL; END $$""")
    run(conn, f"SET ROLE {LOW}")
    try:
        assert one(conn, "SELECT flock._caller()") == LOW
        assert sqlstate(conn, "SELECT flock.grant_model('admin_model', current_user, 'manage')").pgcode == "42501"
    finally:
        run(conn, "RESET ROLE")
    admin_model_untouched(conn)
    # A superuser writing the catalog directly is the caller of the trigger entry point.
    run(conn, "INSERT INTO flock.models (name, version, model, format, sha256, signature, created_by) "
              "SELECT 'direct', 1, model, format, sha256, signature, 'postgres' FROM flock.models "
              "WHERE name = 'admin_model'")
    assert one(conn, "SELECT flock.drop_model('direct')") == 1


def test_normal_paths_work_for_an_ordinary_role(conn, low, connect_as):
    other = connect_as(OTHER)
    assert one(low, "SELECT flock.register_model('plain', %s)", (model(4),)) == "plain@1"
    one(low, "SELECT flock.grant_model('plain', %s)", (OTHER,))
    assert one(low, "SELECT flock.set_alias('plain', 'champion', 1)") == "plain@champion"
    assert one(other, "SELECT flock.predict('plain@champion', ARRAY[2]::float4[])") == pytest.approx(8.0)
    assert rows(conn, "SELECT created_by FROM flock.models WHERE name = 'plain'") == [(LOW,)]
    assert rows(conn, "SELECT set_by FROM flock.aliases WHERE name = 'plain'") == [(LOW,)]
    assert rows(conn, "SELECT granted_by FROM flock.model_grants WHERE name = 'plain'") == [(LOW,)]
    run(low, f"DROP TABLE IF EXISTS {LOW}.rows_for_plain")
    run(low, f"CREATE TABLE {LOW}.rows_for_plain AS SELECT g AS x, g * 4.0 AS y FROM generate_series(1, 50) g")
    ds = one(low, f"SELECT flock.snapshot_dataset('plain_train', 'SELECT * FROM {LOW}.rows_for_plain')")
    assert one(low, "SELECT flock.log_training('plain', ARRAY[%s])", (ds,)) > 0
    assert one(low, "SELECT flock.verify_dataset(%s)", (ds,)) is True
    assert one(conn, "SELECT flock.verify_dataset(%s)", (ds,)) is True
    assert [r[0] for r in rows(low, "SELECT flock.audit_trail('plain')")] == []
    assert one(low, "SELECT flock.drop_alias('plain', 'champion')") == 1
    assert one(low, "SELECT flock.revoke_model('plain', %s)", (OTHER,)) == 1
    # The source hash matches the stored one for many rows and many types (several chunks).
    run(conn, "DROP TABLE IF EXISTS wide")
    run(conn, """CREATE TABLE wide AS SELECT g AS id, g * 0.1 AS f, now() - g * interval '1 minute' AS at,
                 (g % 7)::text AS label, ARRAY[g, -g] AS pair, ROW(g, 'x')::record::text AS rec, decode('00ff', 'hex') AS b,
                 CASE WHEN g % 3 = 0 THEN NULL ELSE g END AS maybe FROM generate_series(1, 20000) g""")
    run(conn, "INSERT INTO wide SELECT * FROM wide WHERE id <= 5")  # duplicates
    ds = one(conn, "SELECT flock.snapshot_dataset('wide_ds', 'SELECT * FROM wide')")
    report = one(conn, "SELECT flock.verify_dataset_report(%s)", (ds,))
    assert report["ok"] is True and report["source"]["row_count"] == 20005
    assert report["source"]["content_hash"] == report["stored"]["content_hash"] == report["content_hash"]
