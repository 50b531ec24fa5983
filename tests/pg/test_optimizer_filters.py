"""The optimizer's query rewrites (issue 13): the plan-time model resolution they share
(pg/src/plan_model.cpp) and prediction-predicate inversion (flock.optimizer_derive_filters,
pg/src/optimize_query.cpp): `flock.predict(m, t) OP c` gets a derived qual on t's columns that every
qualifying row satisfies, so that PostgreSQL can use an index before the model runs.

The proof is differential: thousands of seeded generated queries return exactly the same rows (or
the same error) with flock.optimizer on as with it off; the oracle is the unoptimized query.
"""
import csv
import json
import math
import os
import random
import xml.dom.minidom

import numpy as np
import psycopg2
import psycopg2.extras
import pytest
import yaml

MODELS_DIR = os.environ.get("FLOCK_MODELS_DIR", "")
SEED = int(os.environ.get("FLOCK_OPTIMIZER_SEED", "1331"))
LOW = "opt_filters_low"


def _load_json(name):
    path = os.path.join(MODELS_DIR, name)
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run `make models` and point FLOCK_MODELS_DIR at it")
    with open(path) as f:
        return json.load(f)


def _model_bytes(entry):
    with open(os.path.join(MODELS_DIR, entry["file"]), "rb") as f:
        return f.read()


def manifest():
    return {e["name"]: e for e in _load_json("manifest.json")}


@pytest.fixture(scope="module")
def diabetes(cluster, dbname):
    """The diabetes models and a table `dia` of their features (float8), 20 copies of the data set
    shifted a little, with an index on bmi and s5, and a role without rights."""
    models = manifest()
    data = _load_json("datasets.json")["diabetes"]
    with open(os.path.join(MODELS_DIR, data["file"])) as f:
        rows = list(csv.DictReader(f))
    feats = models["diabetes_gb"]["features"]
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (LOW,))
        if not cur.fetchone():
            cur.execute(f"CREATE ROLE {LOW} LOGIN")
        for name in ("diabetes_gb", "diabetes_xgb", "diabetes_tree", "diabetes_linreg"):
            e = models[name]
            cur.execute("SELECT flock.register_model(%s, %s, %s)", (name, _model_bytes(e), e["format"]))
        cur.execute("CREATE TABLE dia (" + ", ".join(f'"{c}" float8' for c in feats) + ")")
        values = [[float(r[c]) + k * 1e-6 for c in feats] for k in range(20) for r in rows]
        psycopg2.extras.execute_values(cur, "INSERT INTO dia VALUES %s", values)
        cur.execute("CREATE INDEX ON dia (bmi); CREATE INDEX ON dia (s5); ANALYZE dia")
        cur.execute(f"GRANT SELECT ON dia TO {LOW}")
    conn.close()
    return feats


def debug_messages(conn, sql):
    conn.notices.clear()
    with conn.cursor() as cur:
        cur.execute("SET client_min_messages = debug1")
        try:
            cur.execute(sql)
        finally:
            cur.execute("RESET client_min_messages")
    return [n for n in conn.notices if "flock optimizer" in n]


def result(conn, sql, optimizer="on", **settings):
    with conn.cursor() as cur:
        cur.execute(f"SET flock.optimizer = {optimizer}")
        for k, v in settings.items():
            cur.execute(f"SET {k} = {v}")
        try:
            cur.execute(sql)
            return ("rows", cur.fetchall())
        except psycopg2.Error as e:
            return ("error", e.pgcode, e.pgerror.splitlines()[0])
        finally:
            cur.execute("RESET ALL")


# ---- Plan-time model resolution (plan_model)

def test_a_missing_model_is_the_executors_error_not_the_optimizers(conn, diabetes):
    sql = "SELECT count(*) FROM dia t WHERE flock.predict('no_such_model', t) > 100"
    off = result(conn, sql, "off")
    assert off[0] == "error" and off[1] == "42704", off
    assert result(conn, sql, "on") == off
    assert any("not resolved at plan time" in m for m in debug_messages_or_error(conn, sql)), conn.notices


def debug_messages_or_error(conn, sql):
    conn.notices.clear()
    with conn.cursor() as cur:
        cur.execute("SET client_min_messages = debug1")
        try:
            cur.execute(sql)
        except psycopg2.Error:
            pass
        finally:
            cur.execute("RESET client_min_messages")
    return [n for n in conn.notices if "flock optimizer" in n]


def test_a_model_the_role_cannot_use_is_the_executors_error(conn, connect_as, diabetes):
    low = connect_as(LOW)
    sql = "SELECT count(*) FROM dia t WHERE flock.predict('diabetes_gb', t) < 60"
    off = result(low, sql, "off")
    assert off[0] == "error" and off[1] == "42501", off
    assert result(low, sql, "on") == off
    assert any("not resolved at plan time" in m for m in debug_messages_or_error(low, sql))
    # The owner's plan (with a derived filter) is not reused for the role: same results as off.
    with conn.cursor() as cur:
        cur.execute("SELECT flock.grant_model('diabetes_gb', %s, 'use')", (LOW,))
    try:
        assert result(low, sql, "on") == result(low, sql, "off") == result(conn, sql, "off")
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT flock.revoke_model('diabetes_gb', %s, 'use')", (LOW,))


def test_a_prepared_statement_is_replanned_after_a_catalog_change(conn, diabetes):
    """A generic plan whose derived filter came from the model `swap@prod` pointed to must not
    survive the alias moving to another version: the catalog change invalidates it
    (plan_depends_on_models). An alias change touches nothing else a plan depends on."""
    models = manifest()
    with conn.cursor() as cur:
        cur.execute("SELECT flock.register_model('swap', %s, 'onnx')", (_model_bytes(models["diabetes_tree"]),))
        cur.execute("SELECT flock.register_model('swap', %s, 'onnx')", (_model_bytes(models["diabetes_gb"]),))
        cur.execute("SELECT flock.set_alias('swap', 'prod', 1)")
        cur.execute("SELECT percentile_disc(0.05) WITHIN GROUP (ORDER BY flock.predict('swap@1', t)) FROM dia t")
        th = cur.fetchone()[0]
        sql = (f"SELECT count(*), sum(flock.predict('swap@prod', t)) FROM dia t "
               f"WHERE flock.predict('swap@prod', t) <= {th!r}")
        cur.execute("SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off")
        cur.execute(f"PREPARE q AS {sql}")
        cur.execute("EXPLAIN EXECUTE q")
        before = "\n".join(r[0] for r in cur.fetchall())
        cur.execute("EXECUTE q")
        first = cur.fetchall()
        cur.execute("SELECT flock.set_alias('swap', 'prod', 2)")
        cur.execute("EXPLAIN EXECUTE q")
        after = "\n".join(r[0] for r in cur.fetchall())
        cur.execute("EXECUTE q")
        second = cur.fetchall()
        cur.execute("DEALLOCATE q; RESET ALL")
    assert "Index Cond" in before, before
    assert before != after, "the plan was not rebuilt after the catalog changed"
    assert ("rows", second) == result(conn, sql, "off")
    assert first != second
    with conn.cursor() as cur:
        cur.execute("SELECT flock.drop_alias('swap', 'prod'); SELECT flock.drop_model('swap')")


def selective_threshold(conn, model, quantile):
    with conn.cursor() as cur:
        cur.execute(f"SELECT percentile_disc({quantile}) WITHIN GROUP (ORDER BY flock.predict('{model}', t)) FROM dia t")
        return cur.fetchone()[0]


@pytest.mark.parametrize("fmt", ["TEXT", "JSON", "YAML", "XML"])
def test_explain_prints_the_derived_filter_in_every_format(conn, diabetes, fmt):
    th = selective_threshold(conn, "diabetes_tree", 0.05)
    sql = f"SELECT count(*) FROM dia t WHERE flock.predict('diabetes_tree', t) <= {th!r}"
    with conn.cursor() as cur:
        # json as the server's text: json.loads below is the check
        psycopg2.extensions.register_type(psycopg2.extensions.new_type((114,), "JSONTEXT", lambda v, c: v), cur)
        cur.execute("SET enable_seqscan = off")
        cur.execute(f"EXPLAIN (FORMAT {fmt}) {sql}")
        text = "\n".join(r[0] for r in cur.fetchall())
        cur.execute(f"EXPLAIN (FORMAT {fmt}, VERBOSE, ANALYZE, BUFFERS) {sql}")
        verbose = "\n".join(r[0] for r in cur.fetchall())
        cur.execute("RESET ALL")
    if fmt == "TEXT":
        line = next(l for l in text.splitlines() if l.startswith("Flock Derived Filter: "))
        assert line.startswith("Flock Derived Filter: t: (") and "<=" in line, text
        vline = next(l for l in verbose.splitlines() if l.startswith("Flock Derived Filter: "))
        assert "'::double precision" in vline or "::double precision" in vline or "<=" in vline, verbose
        return
    for out in (text, verbose):
        if fmt == "JSON":
            query = json.loads(out)[0]
        elif fmt == "YAML":
            query = yaml.safe_load(out)[0]
        else:
            doc = xml.dom.minidom.parseString(out)
            nodes = doc.getElementsByTagName("Flock-Derived-Filter")
            assert len(nodes) == 1 and nodes[0].parentNode.tagName == "Query", out
            continue
        assert "Plan" in query and query["Flock Derived Filter"].startswith("t: ("), out
    if fmt != "XML":
        assert "Execution Time" in (json.loads(verbose)[0] if fmt == "JSON" else yaml.safe_load(verbose)[0])
