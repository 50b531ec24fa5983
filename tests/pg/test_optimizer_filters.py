"""The optimizer's query rewrites (issue 13): the plan-time model resolution they share
(pg/src/plan_model.cpp) and prediction-predicate inversion (flock.optimizer_derive_filters,
pg/src/optimize_query.cpp): `flock.predict(m, t) OP c` gets a derived qual on t's columns that every
qualifying row satisfies, so that PostgreSQL can use an index before the model runs.

The proof is differential: thousands of seeded generated queries (FLOCK_OPTIMIZER_SEED picks
another seed, FLOCK_FILTER_QUERIES the number per model) return exactly the same rows (or the same
error) with flock.optimizer on as with it off; the oracle is the unoptimized query. Around it: the
plan-time resolution never raises and its plans are replanned after catalog changes, EXPLAIN's
`Flock Derived Filter` line in every format, index use and partition pruning for a selective
threshold, the cost rule, models and inputs the pass leaves alone, roles without rights.
"""
import csv
import json
import math
import os
import random
import re
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


# ---- The differential suite: derived filters never change a result

import onnx  # noqa: E402

REGRESSORS = ["diabetes_tree", "diabetes_rf", "diabetes_gb", "diabetes_xgb"]
CLASSIFIERS = ["breast_cancer_xgb", "customers_xgb", "breast_cancer_gb", "breast_cancer_tree", "breast_cancer_rf"]
CONTROLS = ["diabetes_linreg", "diabetes_ridge", "breast_cancer_logreg"]  # the pass leaves them alone
QUERIES_PER_MODEL = int(os.environ.get("FLOCK_FILTER_QUERIES", "360"))


def split_thresholds(entry):
    """Per feature index, the thresholds the model's trees split on (as doubles)."""
    path = os.path.join(MODELS_DIR, entry["file"])
    out = {}
    if entry["format"] == "xgboost":
        with open(path) as f:
            model = json.load(f)
        for tree in model["learner"]["gradient_booster"]["model"]["trees"]:
            for left, feat, cond in zip(tree["left_children"], tree["split_indices"], tree["split_conditions"]):
                if left != -1:
                    out.setdefault(int(feat), []).append(float(np.float32(cond)))
    else:
        for node in onnx.load(path).graph.node:
            if not node.op_type.startswith("TreeEnsemble"):
                continue
            attrs = {a.name: a for a in node.attribute}
            modes = [m.decode() for m in attrs["nodes_modes"].strings]
            for mode, feat, value in zip(modes, attrs["nodes_featureids"].ints, attrs["nodes_values"].floats):
                if mode != "LEAF":
                    out.setdefault(int(feat), []).append(float(np.float32(value)))
    return out


def float_neighbours(v):
    f = np.float32(v)
    return [v, float(np.nextafter(f, np.float32(np.inf))), float(np.nextafter(f, np.float32(-np.inf))),
            float(np.nextafter(v, math.inf)), float(np.nextafter(v, -math.inf))]


@pytest.fixture(scope="module")
def filter_tables(cluster, dbname, diabetes):
    """Per model two tables of its feature columns (each real, float8, int4 or int8 at random), the
    data set's rows plus rows with NULLs, NaNs, infinities and values on and next to split
    thresholds, twice: `x_<model>` with a B-tree index on its most split feature, `y_<model>` with
    none."""
    rng = random.Random(SEED)
    models = manifest()
    datasets = _load_json("datasets.json")
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    info = {}
    with conn.cursor() as cur:
        for name in REGRESSORS + CLASSIFIERS + CONTROLS:
            entry = models[name]
            if name not in ("diabetes_gb", "diabetes_xgb", "diabetes_tree", "diabetes_linreg"):
                cur.execute("SELECT flock.register_model(%s, %s, %s)", (name, _model_bytes(entry), entry["format"]))
            data = datasets[entry["dataset"]]
            with open(os.path.join(MODELS_DIR, data["file"])) as f:
                rows = list(csv.DictReader(f))
            feats = entry["features"]
            thresholds = split_thresholds(entry) if name not in CONTROLS else {}
            top = max(thresholds, key=lambda k: len(thresholds[k])) if thresholds else 0
            types = [rng.choice(["real", "real", "float8", "float8", "int4", "int8"]) for _ in feats]
            if rng.random() < 0.5:
                types[top] = rng.choice(["real", "float8"])  # an index on a float column, often

            def value(raw, typ):
                if raw is None or raw == "":
                    return None
                v = float(raw)
                return int(round(v)) if typ.startswith("int") else v

            values = [[value(r[c], t) for c, t in zip(feats, types)] for r in rows]
            extra = []
            for row in rng.sample(values, max(len(values) // 5, 5)):
                row = list(row)
                for j, t in enumerate(types):
                    if rng.random() < 0.25:
                        row[j] = None if t.startswith("int") else rng.choice([None, float("nan"), float("nan"),
                                                                              float("inf"), float("-inf")])
                extra.append(row)
            for _ in range(max(len(values) // 4, 5)):
                row = list(rng.choice(values))
                for j, t in enumerate(types):
                    if thresholds.get(j) and rng.random() < 0.5:
                        th = rng.choice(float_neighbours(rng.choice(thresholds[j])))
                        row[j] = int(rng.choice([math.floor(th), math.ceil(th)])) if t.startswith("int") else th
                extra.append(row)
            cols = ", ".join(f'"{c}" {t}' for c, t in zip(feats, types))
            for prefix in ("x", "y"):
                table = f"{prefix}_{name}"
                cur.execute(f'CREATE TABLE "{table}" ({cols})')
                # Twice over: more than 1,000 rows, below which the pass does not bother (unless `always`).
                psycopg2.extras.execute_values(cur, f'INSERT INTO "{table}" VALUES %s', (values + extra) * 2)
                if prefix == "x":
                    cur.execute(f'CREATE INDEX ON "{table}" ("{feats[top]}")')
                cur.execute(f'ANALYZE "{table}"')
                cur.execute(f'GRANT SELECT ON "{table}" TO {LOW}')
            predictions = []
            if name not in CONTROLS:  # (linear models refuse the NULL rows)
                cur.execute(f"SELECT flock.predict(%s, t) FROM \"y_{name}\" t", (name,))
                predictions = sorted({r[0] for r in cur.fetchall() if r[0] is not None and not math.isnan(r[0])})
            cur.execute("SELECT jsonb_array_length(coalesce(flock.model_info(%s)->'features', '[]'))", (name,))
            named = cur.fetchone()[0] > 0
            info[name] = {"entry": entry, "named": named, "types": types, "thresholds": thresholds, "values": values,
                          "predictions": predictions, "top": top}
    conn.close()
    return info


def number_literal(rng, v):
    if isinstance(v, str):
        return f"'{v}'::{rng.choice(['float8', 'real'])}"
    if rng.random() < 0.15 and v == v and abs(v) < 1e9:
        return str(int(round(v)))  # an int4 constant: the parser casts it
    if rng.random() < 0.15 and v == v and abs(v) < 1e9:
        return f"{v:.6f}"  # a numeric constant: cast to float8
    return rng.choice([f"'{v!r}'::float8", f"'{v!r}'::real", repr(v) + "::float8"])


def threshold(rng, info):
    r = rng.random()
    preds = info["predictions"]
    if r < 0.04:
        return rng.choice(["NaN", "Infinity", "-Infinity"])
    if preds and r < 0.6:  # the model's own leaf sums and their neighbours
        return rng.choice(float_neighbours(rng.choice(preds)))
    if preds and r < 0.85:  # a tail: few rows qualify
        k = rng.randrange(min(len(preds), 8))
        return preds[k] if rng.random() < 0.5 else preds[-1 - k]
    lo, hi = (preds[0], preds[-1]) if preds else (-1.0, 1.0)
    return rng.uniform(lo - (hi - lo) * 0.1, hi + (hi - lo) * 0.1)


def column_constant(rng, info, j):
    th = info["thresholds"].get(j)
    if th and rng.random() < 0.6:
        return rng.choice(float_neighbours(rng.choice(th)))
    seen = [row[j] for row in info["values"] if row[j] is not None]
    return float(rng.choice(seen)) if seen else rng.uniform(-1, 1)


def extra_predicate(rng, info, alias):
    feats, types = info["entry"]["features"], info["types"]
    parts = []
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        j = rng.choice([info["top"], rng.randrange(len(feats))])
        col = f'{alias}."{feats[j]}"'
        v = column_constant(rng, info, j)
        lit = str(int(math.floor(v))) if types[j].startswith("int") else f"'{v!r}'::float8"
        kind = rng.choice(["<", "<=", ">", ">=", "=", "notnull", "null", "or", "between"])
        if kind == "notnull":
            parts.append(f"{col} IS NOT NULL")
        elif kind == "null":
            parts.append(f"({col} IS NULL OR {col} > {lit})")
        elif kind == "or":
            parts.append(f"({col} < {lit} OR {col} IS NULL)")
        elif kind == "between":
            parts.append(f"{col} BETWEEN {lit} AND {lit} + 1")
        else:
            parts.append(f"{col} {kind} {lit}")
    return parts


def prediction_predicate(rng, name, info, alias):
    m = f"'{name}'"
    row = model_input(rng, info, alias)
    if name in CLASSIFIERS and rng.random() < 0.6:
        classes = ["0", "1"]
        call = f"flock.predict_label({m}, {row})"
        kind = rng.random()
        if kind < 0.5:
            return f"{call} = '{rng.choice(classes)}'"
        if kind < 0.75:
            return f"{call} IN ({', '.join(repr(c) for c in rng.sample(classes + ['2'], rng.choice([1, 2])))})"
        if kind < 0.9:
            return f"'{rng.choice(classes)}' = {call}"
        return f"{call} <> '{rng.choice(classes)}'"
    call = f"flock.predict({m}, {row})"
    op = rng.choice(["<", "<=", ">", ">=", "between", "commuted"])
    if op == "between":
        a, b = sorted([threshold(rng, info), threshold(rng, info)], key=lambda v: (isinstance(v, str), v))
        return f"{call} BETWEEN {number_literal(rng, a)} AND {number_literal(rng, b)}"
    if op == "commuted":
        return f"{number_literal(rng, threshold(rng, info))} {rng.choice(['<', '<=', '>', '>='])} {call}"
    return f"{call} {op} {number_literal(rng, threshold(rng, info))}"


def model_input(rng, info, alias):
    """The row as the call's input: the whole row, mostly; else a float4 ARRAY[...] of the columns
    (by position) or, for a model without feature names, a ROW(...) of them. (A ROW that does not
    bind fails on the first row that reaches it: a derived filter that leaves no row spares that
    error, as PostgreSQL's own qual order may. Not what this suite compares.)"""
    feats, r = info["entry"]["features"], rng.random()
    if r < 0.75:
        return alias
    cols = ", ".join(f'{alias}."{c}"' for c in feats)
    return f"ROW({cols})" if r >= 0.93 and not info["named"] else f"ARRAY[{cols}]::float4[]"


def generated_query(rng, name, info):
    prefix = rng.choice(["x", "x", "y"])
    table = f'"{prefix}_{name}"'
    conjuncts = [prediction_predicate(rng, name, info, "t")] + extra_predicate(rng, info, "t")
    if rng.random() < 0.15:
        conjuncts.append(prediction_predicate(rng, name, info, "t"))
    rng.shuffle(conjuncts)
    where = " AND ".join(conjuncts)
    shape = rng.random()
    value = f"flock.predict('{name}', t)"
    if shape < 0.4:
        return f"SELECT ctid::text, {value} FROM {table} t WHERE {where} ORDER BY ctid"
    if shape < 0.6:
        return f"SELECT count(*), sum({value}) FROM {table} t WHERE {where}"
    if shape < 0.7:  # the predicate in an inner join's ON
        return (f"SELECT t.ctid::text, u.ctid::text FROM {table} t JOIN {table} u ON u.ctid = t.ctid AND {where} "
                f"ORDER BY 1")
    if shape < 0.8:  # and in an outer join's ON: rows of the other side stay
        return (f"SELECT v.k, count(t.*) FROM (VALUES (1), (2)) v(k) LEFT JOIN {table} t ON v.k = 1 AND {where} "
                f"GROUP BY v.k ORDER BY v.k")
    if shape < 0.85:  # in a subquery
        return f"SELECT count(*) FROM (SELECT t.ctid FROM {table} t WHERE {where} OFFSET 0) s"
    if shape < 0.9:  # in a sublink
        return (f"SELECT o.ctid::text FROM {table} o WHERE EXISTS (SELECT 1 FROM {table} t WHERE t.ctid = o.ctid "
                f"AND {where}) ORDER BY 1")
    return f"WITH c AS MATERIALIZED (SELECT ctid::text AS id FROM {table} t WHERE {where}) SELECT id FROM c ORDER BY id"


PARALLEL = {"max_parallel_workers_per_gather": "2", "parallel_setup_cost": "0", "parallel_tuple_cost": "0",
            "min_parallel_table_scan_size": "0", "min_parallel_index_scan_size": "0"}


def settings_for(rng):
    s = {"jit": "off"}
    r = rng.random()
    if r < 0.35:
        s["enable_seqscan"] = "off"
    elif r < 0.45:
        s.update({"enable_seqscan": "off", "enable_bitmapscan": "off"})
    elif r < 0.5:  # parallel plans: the derived quals run in the workers
        s.update(PARALLEL)
    if rng.random() < 0.5:
        s["flock.optimizer_derive_filters"] = "always"
    return s


def run_with(conn, sql, optimizer, settings):
    with conn.cursor() as cur:
        cur.execute(f"SET flock.optimizer = {optimizer}")
        for k, v in settings.items():
            cur.execute(f"SET {k} = {v}")
        try:
            cur.execute(sql)
            rows = cur.fetchall()
            return ("rows", [tuple("NaN" if isinstance(x, float) and math.isnan(x) else x for x in r) for r in rows])
        except psycopg2.Error as e:
            return ("error", e.pgcode)
        finally:
            cur.execute("RESET ALL")


def explain_with(conn, sql, settings):
    with conn.cursor() as cur:
        for k, v in settings.items():
            cur.execute(f"SET {k} = {v}")
        try:
            cur.execute("EXPLAIN " + sql)
            return "\n".join(r[0] for r in cur.fetchall())
        except psycopg2.Error:  # the query's own error (a literal out of range, say): run_with compared it
            return ""
        finally:
            cur.execute("RESET ALL")


def all_cases(filter_tables):
    rng = random.Random(SEED + 7)
    cases = []
    for name in REGRESSORS + CLASSIFIERS + CONTROLS:
        n = QUERIES_PER_MODEL if name not in CONTROLS else QUERIES_PER_MODEL // 5
        for _ in range(n):
            cases.append((name, generated_query(rng, name, filter_tables[name]), settings_for(rng)))
    return cases


def test_derived_filters_never_change_a_result(conn, filter_tables):
    derived = {}
    gathers = 0
    cases = all_cases(filter_tables)
    for k, (name, sql, settings) in enumerate(cases):
        off = run_with(conn, sql, "off", settings)
        on = run_with(conn, sql, "on", settings)
        assert on == off, f"seed {SEED}: {sql} with {settings}"
        if k % 3 == 0:
            plan = explain_with(conn, sql, settings)
            if name in CONTROLS:
                assert "Flock Derived Filter" not in plan, plan
            gathers += "Gather" in plan
            derived.setdefault(name, [0, 0])
            derived[name][0] += "Flock Derived Filter" in plan
            derived[name][1] += 1
    print(f"\n{len(cases)} cases; explained, with a derived filter / in all, per model: {derived}; "
          f"{gathers} parallel plans")
    assert gathers > 0
    # Not vacuous: the pass derives filters for every tree regressor and for XGBoost's classifiers.
    for name in REGRESSORS + ["breast_cancer_xgb", "customers_xgb"]:
        assert derived[name][0] >= max(derived[name][1] // 20, 1), (name, derived)


def test_prepared_statements_with_parameters(conn, filter_tables):
    """A threshold given as $1: a custom plan knows its value (the pass derives from it), a generic
    plan does not (the pass leaves it alone); either way the rows are the optimizer-off rows."""
    rng = random.Random(SEED + 11)
    changed = cases = 0
    for name in REGRESSORS + ["breast_cancer_xgb"]:
        info = filter_tables[name]
        col = info["entry"]["features"][info["top"]]
        for _ in range(25):
            op = rng.choice(["<", "<=", ">", ">="])
            extra = " AND ".join(extra_predicate(rng, info, "t")) or "true"
            sql = (f'SELECT ctid::text, flock.predict(\'{name}\', t) FROM "x_{name}" t '
                   f"WHERE flock.predict('{name}', t) {op} $1 AND {extra} ORDER BY ctid")
            th = threshold(rng, info)
            th = float(th) if not isinstance(th, str) else th
            settings = settings_for(rng)
            results, plans = {}, {}
            for optimizer in ("off", "on", "underived"):
                with conn.cursor() as cur:
                    cur.execute(f"SET flock.optimizer = {'off' if optimizer == 'off' else 'on'}")
                    for k, v in settings.items():
                        cur.execute(f"SET {k} = {v}")
                    if optimizer == "underived":  # the other passes only: what the plan is without this one
                        cur.execute("SET flock.optimizer_derive_filters = off")
                    cur.execute(f"PREPARE q(float8) AS {sql}")
                    got = []
                    for mode in ("force_custom_plan", "force_generic_plan", "force_custom_plan"):
                        cur.execute(f"SET plan_cache_mode = {mode}")
                        cur.execute("EXECUTE q(%s)", (th,))
                        got.append(cur.fetchall())
                    cur.execute("SET plan_cache_mode = force_custom_plan")
                    cur.execute("EXPLAIN EXECUTE q(%s)", (th,))
                    plans[optimizer] = "\n".join(r[0] for r in cur.fetchall())
                    cur.execute("DEALLOCATE q; RESET ALL")
                results[optimizer] = got
            assert results["on"] == results["off"], f"seed {SEED}: {sql} with $1 = {th!r}, {settings}"
            cases += 1
            changed += plans["on"] != plans["underived"]
    print(f"\n{cases} prepared cases, {changed} with a plan the pass changed")
    assert changed >= cases // 20


@pytest.fixture(scope="module")
def skewed(cluster, dbname, diabetes):
    """`skew`: the diabetes rows 40 times, bmi (the tree's root split) low in all but a few: a
    threshold only high-bmi rows reach is selective, and bmi has a B-tree index."""
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE skew AS SELECT * FROM dia, generate_series(1, 2) g")
        cur.execute("ALTER TABLE skew DROP COLUMN g")
        cur.execute("UPDATE skew SET bmi = -0.09 WHERE random() < 0.97")
        cur.execute("CREATE INDEX ON skew (bmi); ANALYZE skew")
        cur.execute("SELECT max(flock.predict('diabetes_tree', t)) FROM skew t")
        top = cur.fetchone()[0]
    conn.close()
    return top


def test_a_selective_threshold_reads_the_index_on_the_derived_column(conn, skewed):
    sql = f"SELECT ctid::text, flock.predict('diabetes_tree', t) FROM skew t WHERE flock.predict('diabetes_tree', t) >= {skewed!r} ORDER BY 1"
    with conn.cursor() as cur:
        cur.execute("EXPLAIN " + sql)
        plan = "\n".join(r[0] for r in cur.fetchall())
    assert "Index Scan" in plan and "Index Cond: (bmi >= " in plan, plan
    assert "Flock Derived Filter: t: " in plan and "(bmi >= " in plan.split("Flock Derived Filter: ")[1], plan
    # The calls name the version the filter was derived from: the executor resolves that one.
    assert "flock.predict('diabetes_tree@1'::text" in plan and "'diabetes_tree'::text" not in plan, plan
    on, off = result(conn, sql, "on"), result(conn, sql, "off")
    assert on == off and on[0] == "rows" and len(on[1]) > 0
    # The GUC turns it off; flock.optimizer too.
    for guc in ("flock.optimizer_derive_filters", "flock.optimizer"):
        with conn.cursor() as cur:
            cur.execute(f"SET {guc} = off")
            cur.execute("EXPLAIN " + sql)
            plan = "\n".join(r[0] for r in cur.fetchall())
            cur.execute("RESET ALL")
        assert "Flock Derived Filter" not in plan and "Index Cond: (bmi" not in plan, plan


@pytest.fixture(scope="module")
def unindexed(cluster, dbname, skewed):
    """`skew_seq`: the rows of `skew` with no index at all, so every plan is a sequential scan."""
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE skew_seq AS SELECT * FROM skew; ANALYZE skew_seq")
    conn.close()
    return "skew_seq"


def derived_fraction(conn, table, sql):
    """The fraction of `table`'s rows that the derived filter of `sql` (its table aliased t) keeps,
    counted with the expression EXPLAIN VERBOSE prints under `always`; None when there is none."""
    with conn.cursor() as cur:
        cur.execute("SET flock.optimizer_derive_filters = always")
        cur.execute("EXPLAIN VERBOSE " + sql)
        lines = [r[0] for r in cur.fetchall() if r[0].startswith("Flock Derived Filter: t: ")]
        cur.execute("RESET ALL")
        if not lines:
            return None
        expr = lines[0][len("Flock Derived Filter: t: "):]
        cur.execute(f"SELECT (count(*) FILTER (WHERE {expr}))::float8 / count(*) FROM {table} t")
        return cur.fetchone()[0]


def plan_of(conn, sql, **settings):
    with conn.cursor() as cur:
        for k, v in settings.items():
            cur.execute(f"SET {k} = {v}")
        cur.execute("EXPLAIN " + sql)
        plan = "\n".join(r[0] for r in cur.fetchall())
        cur.execute("RESET ALL")
    return plan


def test_a_derived_filter_that_rejects_most_rows_is_used_on_a_sequential_scan(conn, skewed, unindexed):
    """No index: the derived quals only filter the sequential scan, before the model. PostgreSQL
    charges every qual of a scan on every row it reads, so they looked like extra work; the scan's
    paths are recosted with the quals evaluated cheapest first and the prediction only on the rows
    the others keep (prediction_cost.cpp), and the filter is used with the default setting."""
    query = f"SELECT ctid::text FROM {unindexed} t WHERE flock.predict('diabetes_tree', t) >= {skewed!r}"
    assert derived_fraction(conn, unindexed, query) < 0.1  # the derived quals reject most rows
    plan = plan_of(conn, query)
    assert f"Seq Scan on {unindexed}" in plan and "Index" not in plan, plan
    assert "Flock Derived Filter: t: " in plan and "(bmi >= " in plan.split("Flock Derived Filter: ")[1], plan
    sql = query + " ORDER BY 1"
    on, off = result(conn, sql, "on"), result(conn, sql, "off")
    assert on == off and on[0] == "rows" and len(on[1]) > 0
    # It is the recosting that keeps it: with the declared costs (every qual charged on every row)
    # the plan with it costs more.
    with conn.cursor() as cur:
        cur.execute("SET flock.optimizer_costs = off")
    try:
        messages = debug_messages(conn, "EXPLAIN " + query)
    finally:
        with conn.cursor() as cur:
            cur.execute("RESET ALL")
    assert any("derived filter not used: estimated cost" in m for m in messages), messages


@pytest.fixture(scope="module")
def real_columns(cluster, dbname, skewed):
    """`skew_real` (no index) and `skew_real_bmi` (a B-tree index on bmi): the rows of `skew` with
    every feature a real (float4) column, which the batch node copies straight from the pages of a
    scan with no qual of its own."""
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT string_agg(format('%I::real AS %I', attname, attname), ', ' ORDER BY attnum) "
                    "FROM pg_attribute WHERE attrelid = 'skew'::regclass AND attnum > 0 AND NOT attisdropped")
        columns = cur.fetchone()[0]
        for table in ("skew_real", "skew_real_bmi"):
            cur.execute(f"CREATE TABLE {table} AS SELECT {columns} FROM skew")
        cur.execute("CREATE INDEX ON skew_real_bmi (bmi); ANALYZE skew_real; ANALYZE skew_real_bmi")
        # The model's largest prediction over the real values (they round).
        cur.execute("SELECT max(flock.predict('diabetes_tree', t)) FROM skew_real t")
        top = cur.fetchone()[0]
    conn.close()
    return top


def test_a_filter_that_takes_real_columns_from_the_node_must_halve_the_estimate(conn, real_columns):
    """The same derived filter as on `skew_seq`, on real columns: without it the batch node reads
    the model's columns from the pages itself; with it PostgreSQL deforms every row to evaluate
    them, which its estimate leaves out. Used only when the estimate at least halves: not on the
    sequential scan (about 0.8 of the cost without), on the index (a few percent of the rows)."""
    query = f"SELECT ctid::text FROM skew_real t WHERE flock.predict('diabetes_tree', t) >= {real_columns!r}"
    assert derived_fraction(conn, "skew_real", query) < 0.1  # it rejects most rows
    messages = debug_messages(conn, "EXPLAIN " + query)
    refused = [m for m in messages
               if "derived filter not used" in m and "the model reads real columns: used at half or less" in m]
    assert refused, messages
    with_cost, without_cost = (float(x) for x in re.search(r"estimated cost ([0-9.]+), ([0-9.]+) without",
                                                           refused[0]).groups())
    assert 0.5 * without_cost < with_cost < without_cost, messages
    assert "Flock Derived Filter" not in plan_of(conn, query)
    assert "Flock Derived Filter" in plan_of(conn, query, **{"flock.optimizer_derive_filters": "always"})
    assert result(conn, query + " ORDER BY 1", "on") == result(conn, query + " ORDER BY 1", "off")
    indexed = query.replace("skew_real t", "skew_real_bmi t")
    plan = plan_of(conn, indexed)
    assert "Flock Derived Filter: t: " in plan and "Index Cond: (bmi >= " in plan, plan
    on, off = result(conn, indexed + " ORDER BY 1", "on"), result(conn, indexed + " ORDER BY 1", "off")
    assert on == off and on[0] == "rows" and len(on[1]) > 0


@pytest.mark.parametrize("table", ["skew", "skew_seq"])
def test_unselective_filters_are_not_used_unless_always(conn, skewed, unindexed, table):
    """A threshold whose derived quals keep most rows (nearly all of skew's bmi values are low):
    filtering them first only adds work, so the plan with them costs more, the query is planned as
    written (and DEBUG1 says so); `always` keeps them anyway. (The threshold is the lowest of the
    model's predictions whose filter keeps at least 90% of the rows.)"""
    with conn.cursor() as cur:
        cur.execute(f"SELECT DISTINCT flock.predict('diabetes_tree', t) FROM {table} t ORDER BY 1")
        predictions = [r[0] for r in cur.fetchall()]
    for th in predictions:
        sql = f"SELECT ctid::text FROM {table} t WHERE flock.predict('diabetes_tree', t) <= {th!r} ORDER BY 1"
        kept = derived_fraction(conn, table, sql)
        if kept is not None and kept >= 0.9:
            break
    else:
        pytest.fail("no threshold whose derived filter keeps most rows")
    messages = debug_messages(conn, "EXPLAIN " + sql)
    assert any("derived filter not used: estimated cost" in m for m in messages), messages
    assert "Flock Derived Filter" not in plan_of(conn, sql)
    assert "Flock Derived Filter" in plan_of(conn, sql, **{"flock.optimizer_derive_filters": "always"})
    assert result(conn, sql, "on") == result(conn, sql, "off")


@pytest.mark.parametrize("where", [
    "flock.predict('diabetes_tree', t) > 150 AND t.age < 0",
    "flock.predict('diabetes_tree', t) > 150 AND (t.age < 0 OR t.bmi IS NULL) AND t.s5 > -0.05",
    "flock.predict('diabetes_tree', t) > 150 AND t.bmi > (SELECT avg(bmi) FROM dia)",
    "flock.predict('diabetes_tree', t) > 150 AND t.age < 0 AND now() IS NOT NULL",
    "flock.predict('diabetes_tree', t) > 150 AND t.age < 0 AND false",
    "flock.predict('diabetes_tree', t) > 150 AND flock.predict('diabetes_linreg', t) < 200 AND t.s5 > 0",
    "flock.predict('diabetes_tree', t) BETWEEN 100 AND 200 AND t.bmi > 0.01 AND t.s5 < 0.02",
])
@pytest.mark.parametrize("settings", [{}, {"enable_seqscan": "off"}, {"flock.batching": "off"}, PARALLEL])
def test_scans_with_a_prediction_qual_and_others_are_recosted_without_changing_results(conn, diabetes, where,
                                                                                       settings):
    """The recosting of scans whose quals include a prediction (prediction_cost.cpp) changes costs,
    never rows: subplans, ORs, one-time filters, a relation proven empty, two predictions, with
    index scans forced, unbatched, parallel; the same rows with the optimizer off."""
    sql = f"SELECT ctid::text FROM dia t WHERE {where} ORDER BY 1"
    assert result(conn, sql, "on", **settings) == result(conn, sql, "off", **settings)

def test_a_float4_array_of_the_columns_gets_a_derived_filter(conn, skewed):
    cols = ", ".join(f"t.{c}" for c in ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"])
    sql = (f"SELECT ctid::text FROM skew t WHERE flock.predict('diabetes_tree', ARRAY[{cols}]::float4[]) >= {skewed!r} "
           f"ORDER BY 1")
    with conn.cursor() as cur:
        cur.execute("EXPLAIN " + sql)
        plan = "\n".join(r[0] for r in cur.fetchall())
    assert "Index Cond: (bmi >= " in plan and "Flock Derived Filter: t: " in plan, plan
    assert result(conn, sql, "on") == result(conn, sql, "off")


@pytest.mark.parametrize("model", ["diabetes_linreg"])
def test_models_the_pass_does_not_support_are_left_alone(conn, diabetes, model):
    sql = f"SELECT count(*) FROM dia t WHERE flock.predict('{model}', t) > 150"
    messages = debug_messages(conn, "EXPLAIN " + sql)
    assert any("no derived filter" in m and "no region for this model" in m for m in messages), messages
    with conn.cursor() as cur:
        cur.execute("SET flock.optimizer_derive_filters = always")
        cur.execute("EXPLAIN " + sql)
        assert "Flock Derived Filter" not in "\n".join(r[0] for r in cur.fetchall())
        cur.execute("RESET ALL")
    assert result(conn, sql, "on") == result(conn, sql, "off")


def test_inputs_the_pass_does_not_read_are_left_alone(conn, diabetes):
    """A subquery's row, or a ROW(...) that does not bind (its fields are f1, f2... and the model
    binds by name: the executor's error): no derived filter."""
    th = selective_threshold(conn, "diabetes_tree", 0.03)
    for input_ in ["(SELECT t)", "ROW(t.age, t.sex, t.bmi, t.bp, t.s1, t.s2, t.s3, t.s4, t.s5, t.s6)"]:
        sql = f"SELECT count(*) FROM dia t WHERE flock.predict('diabetes_tree', {input_}) <= {th!r}"
        with conn.cursor() as cur:
            cur.execute("SET flock.optimizer_derive_filters = always")
            try:
                cur.execute("EXPLAIN " + sql)
                assert "Flock Derived Filter" not in "\n".join(r[0] for r in cur.fetchall())
            except psycopg2.Error:
                pass
            finally:
                cur.execute("RESET ALL")
        assert result(conn, sql, "on", **{"flock.optimizer_derive_filters": "always"}) == result(conn, sql, "off")


def test_a_role_without_rights_gets_the_optimizer_off_results_and_errors(conn, connect_as, filter_tables):
    """LOW may read every table but use only some models; for one table it loses SELECT too."""
    low = connect_as(LOW)
    granted = REGRESSORS[::2] + CLASSIFIERS[::2]
    with conn.cursor() as cur:
        for name in granted:
            cur.execute("SELECT flock.grant_model(%s, %s, 'use')", (name, LOW))
        cur.execute(f'REVOKE SELECT ON "x_diabetes_gb" FROM {LOW}')
    try:
        codes = set()
        for name, sql, settings in all_cases(filter_tables)[::5]:
            mine = run_with(low, sql, "on", settings)
            assert mine == run_with(low, sql, "off", settings), sql
            if name in granted and '"x_diabetes_gb"' not in sql:
                assert mine == run_with(conn, sql, "off", settings), sql
            if mine[0] == "error":
                codes.add(mine[1])
        assert "42501" in codes, codes  # not vacuous: the role does meet its limits
    finally:
        with conn.cursor() as cur:
            for name in granted:
                cur.execute("SELECT flock.revoke_model(%s, %s, 'use')", (name, LOW))
            cur.execute(f'GRANT SELECT ON "x_diabetes_gb" TO {LOW}')


def test_the_guc_takes_on_off_always_and_refuses_nonsense(conn):
    with conn.cursor() as cur:
        for value, shown in [("off", "off"), ("true", "on"), ("always", "always"), ("on", "on")]:
            cur.execute(f"SET flock.optimizer_derive_filters = {value}")
            cur.execute("SHOW flock.optimizer_derive_filters")
            assert cur.fetchone()[0] == shown
        with pytest.raises(psycopg2.Error) as e:
            cur.execute("SET flock.optimizer_derive_filters = 'banana'")
        assert e.value.pgcode == "22023" and "Available values: off, on, always" in str(e.value)
        cur.execute("RESET ALL")


def test_a_derived_filter_prunes_partitions(conn, diabetes):
    """Range partitions on the tree's root split: the partitions no qualifying row can be in are
    not scanned."""
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE part (LIKE dia) PARTITION BY RANGE (bmi)")
        bounds = ["MINVALUE", "-0.05", "0", "0.05", "MAXVALUE"]
        for k in range(4):
            cur.execute(f"CREATE TABLE part{k} PARTITION OF part FOR VALUES FROM ({bounds[k]}) TO ({bounds[k + 1]})")
        cur.execute("INSERT INTO part SELECT * FROM dia; ANALYZE part")
        cur.execute("SELECT max(flock.predict('diabetes_tree', t)) FROM part t")
        top = cur.fetchone()[0]
        sql = f"SELECT ctid::text, tableoid::regclass::text FROM part t WHERE flock.predict('diabetes_tree', t) >= {top!r} ORDER BY 1, 2"
        cur.execute("EXPLAIN " + sql)
        plan = "\n".join(r[0] for r in cur.fetchall())
        cur.execute("SET flock.optimizer = off")
        cur.execute("EXPLAIN " + sql)
        plain = "\n".join(r[0] for r in cur.fetchall())
        cur.execute("RESET ALL")
    assert "Flock Derived Filter" in plan and "part0 " not in plan and "part1 " not in plan, plan
    assert "part0 " in plain and "part3 " in plain, plain
    on, off = result(conn, sql, "on"), result(conn, sql, "off")
    assert on == off and on[0] == "rows" and len(on[1]) > 0


def test_a_tiny_table_is_not_worth_a_derived_filter(conn, diabetes):
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE tiny AS SELECT * FROM dia LIMIT 100")
        cur.execute("CREATE INDEX ON tiny (bmi); ANALYZE tiny")
    th = selective_threshold(conn, "diabetes_tree", 0.99)
    sql = f"SELECT count(*) FROM tiny t WHERE flock.predict('diabetes_tree', t) >= {th!r}"
    messages = debug_messages(conn, "EXPLAIN " + sql)
    assert any("its table has about 100 rows" in m for m in messages), messages
    assert result(conn, sql, "on") == result(conn, sql, "off")


def test_a_model_value_constant_is_resolved_at_plan_time_too(conn, skewed):
    """flock.predict('\\x...'::flock.model, t): the literal is a flock.model constant (checked when
    the query is parsed); plan_model compiles it by content, no catalog involved."""
    models = manifest()
    literal = "\\x" + _model_bytes(models["diabetes_tree"]).hex()
    sql = (f"SELECT ctid::text FROM skew t WHERE flock.predict('{literal}'::flock.model, t) >= {skewed!r} "
           f"ORDER BY 1")
    with conn.cursor() as cur:
        cur.execute("EXPLAIN " + sql)
        plan = "\n".join(r[0] for r in cur.fetchall())
    assert "Flock Derived Filter: t: " in plan and "Index Cond: (bmi >= " in plan, plan[-600:]
    assert result(conn, sql, "on") == result(conn, sql, "off")


def test_an_mlp_is_left_alone(conn, diabetes):
    """An MLP (tests/pg/cancel_models.py, small): no region, no derived filter, same rows."""
    from cancel_models import FEATURES, mlp
    with conn.cursor() as cur:
        cur.execute("SELECT flock.register_model('small_mlp', %s)", (mlp(hidden=(16,)),))
        cur.execute("CREATE TABLE mlp_rows (" + ", ".join(f"{c} real" for c in FEATURES) + ")")
        cur.execute("INSERT INTO mlp_rows SELECT " + ", ".join("random() - 0.5" for _ in FEATURES) +
                    " FROM generate_series(1, 3000)")
        cur.execute(f"CREATE INDEX ON mlp_rows ({FEATURES[0]}); ANALYZE mlp_rows")
        cur.execute("SELECT percentile_disc(0.99) WITHIN GROUP (ORDER BY flock.predict('small_mlp', t)) FROM mlp_rows t")
        th = cur.fetchone()[0]
    sql = f"SELECT ctid::text FROM mlp_rows t WHERE flock.predict('small_mlp', t) > {th!r} ORDER BY 1"
    messages = debug_messages(conn, "EXPLAIN " + sql)
    assert any("no derived filter" in m and "no region for this model" in m for m in messages), messages
    assert result(conn, sql, "on", **{"flock.optimizer_derive_filters": "always"}) == result(conn, sql, "off")


def test_a_generic_plan_that_resolved_a_model_is_rebuilt_after_any_catalog_change(conn, diabetes):
    """The invalidation rule itself: a statement on flock.models (here the no-op every governance
    function runs, flock._touch_catalog) drops the generic plan of a query whose planning resolved
    a model (its DEBUG1 line shows each planning); an unrelated statement does not."""
    th = selective_threshold(conn, "diabetes_tree", 0.5)
    with conn.cursor() as cur:
        cur.execute("SET plan_cache_mode = force_generic_plan")
        cur.execute(f"PREPARE g AS SELECT count(*) FROM dia t WHERE flock.predict('diabetes_linreg', t) <= {th!r}")
    plannings = lambda sql: sum("no region for this model" in m for m in debug_messages(conn, sql))  # noqa: E731
    assert plannings("EXECUTE g") == 1  # planned
    assert plannings("EXECUTE g") == 0  # the cached generic plan
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    assert plannings("EXECUTE g") == 0
    with conn.cursor() as cur:
        cur.execute("SELECT flock._touch_catalog()")
    assert plannings("EXECUTE g") == 1  # planned again
    with conn.cursor() as cur:
        cur.execute("DEALLOCATE g; RESET ALL")
