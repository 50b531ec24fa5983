"""The optimizer's first pg slice (issue 13): a batched model is specialized for the quals of the
scan below the FlockBatchScore node, and EXPLAIN shows it. The proof is differential: hundreds of
seeded random queries (random predicates on the model's input columns, constants on the models' own
split thresholds, NULLs and NaN in the data, BETWEEN, IS NOT NULL, index scans) return exactly the
same rows with flock.optimizer on as with it off, for the XGBoost and sklearn tree models among the
test models; the oracle is the unoptimized model itself.
"""
import csv
import json
import math
import os
import random

import numpy as np
import onnx
import psycopg2
import psycopg2.extras
import pytest

MODELS_DIR = os.environ.get("FLOCK_MODELS_DIR", "")
SEED = int(os.environ.get("FLOCK_OPTIMIZER_SEED", "1313"))
QUERIES_PER_TREE_MODEL = 200
QUERIES_PER_OTHER_MODEL = 50  # controls: the pass leaves them alone
LOW = "opt_low"


def _load_json(name):
    path = os.path.join(MODELS_DIR, name)
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run `make models` and point FLOCK_MODELS_DIR at it")
    with open(path) as f:
        return json.load(f)


def is_tree_model(e):
    return e["format"] == "xgboost" or any(k in e["estimator"] for k in ("Tree", "Forest", "Boosting"))


def _models():
    """The tree models (what the pass specializes) and, as controls, the other single-input
    models (linear models and a Scaler pipeline: scored as they are)."""
    try:
        manifest = _load_json("manifest.json")
    except BaseException:
        return []
    out = []
    for e in manifest:
        single_input = not e.get("input_types") or len(e["input_types"]) == 1
        if single_input and "ColumnTransformer" not in e["estimator"]:
            out.append(e)
    return out


MODELS = _models()


def split_thresholds(entry):
    """Per feature index, the thresholds the model's trees split on (as doubles)."""
    path = os.path.join(MODELS_DIR, entry["file"])
    out = {}
    if entry["format"] == "xgboost":
        with open(path) as f:
            model = json.load(f)
        for tree in model["learner"]["gradient_booster"]["model"]["trees"]:
            for node, (left, feat, cond) in enumerate(zip(tree["left_children"], tree["split_indices"],
                                                          tree["split_conditions"])):
                if left != -1:
                    out.setdefault(int(feat), set()).add(float(np.float32(cond)))
    else:
        for node in onnx.load(path).graph.node:
            if not node.op_type.startswith("TreeEnsemble"):
                continue
            attrs = {a.name: a for a in node.attribute}
            modes = [m.decode() for m in attrs["nodes_modes"].strings]
            for mode, feat, value in zip(modes, attrs["nodes_featureids"].ints, attrs["nodes_values"].floats):
                if mode != "LEAF":
                    out.setdefault(int(feat), set()).add(float(np.float32(value)))
    return {k: sorted(v) for k, v in out.items()}


def table_of(entry):
    return f"opt_{entry['name']}"


def classifier(entry):
    return entry["task"] == "classification"


@pytest.fixture(scope="module")
def tables(cluster, dbname):
    """Per model, a table of exactly its feature columns (so that they bind by name and by order),
    each column randomly real, float8 or int4, with the data set's rows, rows with NULLs and NaNs,
    and rows holding the split thresholds themselves and their float neighbours."""
    rng = random.Random(SEED)
    datasets = _load_json("datasets.json")
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    info = {}
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (LOW,))
        if not cur.fetchone():
            cur.execute(f"CREATE ROLE {LOW} LOGIN")
        for entry in MODELS:
            data = datasets[entry["dataset"]]
            with open(os.path.join(MODELS_DIR, data["file"])) as f:
                rows = list(csv.DictReader(f))
            feats = entry["features"]
            types = [rng.choice(["real", "real", "float8", "float8", "int4"]) for _ in feats]
            thresholds = split_thresholds(entry)
            table = table_of(entry)
            cols = ", ".join(f'"{c}" {t}' for c, t in zip(feats, types))
            cur.execute(f'DROP TABLE IF EXISTS "{table}"')
            cur.execute(f'CREATE TABLE "{table}" ({cols})')

            def value(raw, typ):
                if raw is None or raw == "":
                    return None
                v = float(raw)
                return int(round(v)) if typ == "int4" else v

            values = [[value(r[c], t) for c, t in zip(feats, types)] for r in rows]
            extra = []
            for row in rng.sample(values, max(len(values) // 6, 5)):
                row = list(row)
                for j, t in enumerate(types):
                    if rng.random() < 0.3:
                        row[j] = None if t == "int4" or rng.random() < 0.5 else float("nan")
                extra.append(row)
            for _ in range(max(len(values) // 6, 5)):  # values on and next to the thresholds
                row = list(rng.choice(values))
                for j, t in enumerate(types):
                    if j in thresholds and rng.random() < 0.5:
                        th = rng.choice(thresholds[j])
                        th = rng.choice([th, float(np.nextafter(np.float32(th), np.float32(np.inf))),
                                         float(np.nextafter(np.float32(th), np.float32(-np.inf))),
                                         float(np.nextafter(th, math.inf))])
                        row[j] = int(math.floor(th)) if t == "int4" else th
                extra.append(row)
            psycopg2.extras.execute_values(cur, f'INSERT INTO "{table}" VALUES %s', values + extra)
            cur.execute(f'CREATE INDEX ON "{table}" ("{feats[0]}")')
            cur.execute(f'ANALYZE "{table}"')
            cur.execute(f'GRANT SELECT ON "{table}" TO {LOW}')
            with open(os.path.join(MODELS_DIR, entry["file"]), "rb") as f:
                cur.execute("SELECT flock.register_model(%s, %s, %s)", (entry["name"], f.read(), entry["format"]))
            cur.execute("SELECT flock.grant_model(%s, %s, 'use')", (entry["name"], LOW))
            info[entry["name"]] = {"types": types, "thresholds": thresholds, "values": values}
    conn.close()
    return info


def literal(rng, value, column_type):
    """A constant for a comparison with a column of `column_type`, typed at random."""
    if isinstance(value, str):  # NaN / Infinity
        return f"'{value}'::{rng.choice(['float8', 'real'])}"
    if column_type == "int4":
        v = int(math.floor(value)) if rng.random() < 0.5 else int(math.ceil(value))
        return rng.choice([str(v), f"{v}::int8", f"{v}::int2" if abs(v) < 30000 else str(v), f"{value!r}::float8"])
    return rng.choice([f"'{value!r}'::float8", f"'{value!r}'::real", repr(value)])


def constant(rng, info, j):
    r = rng.random()
    thresholds = info["thresholds"].get(j)
    if r < 0.03:
        return rng.choice(["NaN", "Infinity", "-Infinity"])
    if thresholds and r < 0.6:
        return rng.choice(thresholds)
    seen = [row[j] for row in info["values"] if row[j] is not None]
    if seen and r < 0.9:
        return float(rng.choice(seen))
    lo, hi = (min(seen), max(seen)) if seen else (-1.0, 1.0)
    return rng.uniform(lo - 1, hi + 1)


def predicate(rng, entry, info):
    feats, types = entry["features"], info["types"]
    parts = []
    for _ in range(rng.choice([1, 1, 2, 2, 3])):
        j = rng.randrange(len(feats))
        col, typ = f't."{feats[j]}"', types[j]
        kind = rng.choice(["<", "<=", "=", ">=", ">", "<", ">", "between", "between", "notnull", "left", "or"])
        if kind == "notnull":
            parts.append(f"{col} IS NOT NULL")
        elif kind == "between":
            a, b = sorted([constant(rng, info, j), constant(rng, info, j)], key=lambda v: (isinstance(v, str), v))
            parts.append(f"{col} BETWEEN {literal(rng, a, typ)} AND {literal(rng, b, typ)}")
        elif kind == "left":
            parts.append(f"{literal(rng, constant(rng, info, j), typ)} {rng.choice(['<', '<=', '>', '>=', '='])} {col}")
        elif kind == "or":  # not a simple comparison: says nothing to the optimizer
            parts.append(f"({col} < {literal(rng, constant(rng, info, j), typ)} OR {col} IS NULL)")
        else:
            parts.append(f"{col} {kind} {literal(rng, constant(rng, info, j), typ)}")
    return " AND ".join(parts)


def queries(entry, info, rng):
    m, table = entry["name"], table_of(entry)
    fns = ["flock.predict"] + (["flock.predict_label", "flock.predict_proba"] if classifier(entry) else [])
    out = []
    for _ in range(QUERIES_PER_TREE_MODEL if is_tree_model(entry) else QUERIES_PER_OTHER_MODEL):
        where = predicate(rng, entry, info)
        fn = rng.choice(fns)
        shape = rng.random()
        if shape < 0.1:  # a parallel plan: the node runs in the workers
            sql = (f'SELECT count(*), sum(flock.predict(\'{m}\', t)) FROM "{table}" t WHERE {where}')
            out.append((sql, "parallel"))
            continue
        if shape < 0.55:
            sql = f'SELECT ctid::text, {fn}(\'{m}\', t) FROM "{table}" t WHERE {where} ORDER BY ctid'
        elif shape < 0.8:
            sql = (f"SELECT count(*), sum(flock.predict('{m}', t)), max({fn}('{m}', t)::text) "
                   f'FROM "{table}" t WHERE {where}')
        else:  # a qual on the prediction moves to the node, the others stay on the scan
            sql = (f'SELECT ctid::text, flock.predict(\'{m}\', t) FROM "{table}" t '
                   f"WHERE {where} AND flock.predict('{m}', t) >= {rng.uniform(0, 1)!r} ORDER BY ctid")
        out.append((sql, rng.random() < 0.3))  # (query, force index scans)
    return out


PARALLEL = {"max_parallel_workers_per_gather": "2", "parallel_setup_cost": "0", "parallel_tuple_cost": "0",
            "min_parallel_table_scan_size": "0", "force_parallel_mode": "on"}


def plan_settings(mode):
    """mode: True forces index scans, "parallel" parallel plans. Index scans forced by cost would
    also cross the JIT threshold: compiling is not under test."""
    settings = {"jit": "off", "enable_seqscan": "off" if mode is True else "on"}
    if mode == "parallel":
        settings.update(PARALLEL)
    return settings


def canonical(value):
    """Results compared exactly, NaN equal to NaN (a linear model's NaN features give NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def run(conn, sql, optimizer, mode):
    with conn.cursor() as cur:
        cur.execute(f"SET flock.optimizer = {optimizer}")
        for k, v in plan_settings(mode).items():
            cur.execute(f"SET {k} = {v}")
        try:
            cur.execute(sql)
            return ("rows", canonical(cur.fetchall()))
        except psycopg2.Error as e:
            return ("error", e.pgcode)
        finally:
            cur.execute("RESET ALL")


def explain(conn, sql, **settings):
    with conn.cursor() as cur:
        for k, v in settings.items():
            cur.execute(f"SET {k} = {v}")
        cur.execute("EXPLAIN " + sql)
        text = "\n".join(r[0] for r in cur.fetchall())
        cur.execute("RESET ALL")
        return text


def all_queries(tables):
    rng = random.Random(SEED + 1)
    return [(e, q) for e in MODELS for q in queries(e, tables[e["name"]], rng)]


def test_optimized_results_equal_unoptimized(conn, tables):
    assert any(is_tree_model(e) for e in MODELS), "no tree models among the test models"
    pruned = trees = parallel = 0
    cases = all_queries(tables)
    for entry, (sql, mode) in cases:
        off = run(conn, sql, "off", mode)
        on = run(conn, sql, "on", mode)
        assert on == off, f"seed {SEED}: {sql}"
        plan = explain(conn, sql, **plan_settings(mode))
        parallel += "Gather" in plan
        if is_tree_model(entry):
            trees += 1
            pruned += "Flock Pruned" in plan
        else:
            assert "Flock Pruned" not in plan, plan
    # Not vacuous: many queries on tree models prune something, and parallel plans are among them.
    assert pruned >= trees // 4, f"only {pruned} of {trees} queries pruned"
    assert parallel >= len(cases) // 20


def test_prepared_statements_and_parameters(conn, tables):
    entry = next(e for e in MODELS if is_tree_model(e))
    m, table, col = entry["name"], table_of(entry), entry["features"][0]
    th = tables[m]["thresholds"].get(0, [0.0])[0]
    results = {}
    for optimizer in ("off", "on"):
        with conn.cursor() as cur:
            cur.execute(f"SET flock.optimizer = {optimizer}")
            cur.execute(f'PREPARE q(float8) AS SELECT ctid::text, flock.predict(\'{m}\', t) FROM "{table}" t '
                        f'WHERE "{col}" > $1 ORDER BY ctid')
            got = []
            for mode in ("force_custom_plan", "force_generic_plan"):
                cur.execute(f"SET plan_cache_mode = {mode}")
                for _ in range(2):
                    cur.execute("EXECUTE q(%s)", (th,))
                    got.append(cur.fetchall())
            cur.execute("DEALLOCATE q; RESET plan_cache_mode; RESET flock.optimizer")
            results[optimizer] = got
    assert results["on"] == results["off"]


def test_explain_shows_pruning_and_inputs_read_only_when_on(conn, tables):
    entry = next(e for e in MODELS if e["format"] == "xgboost")
    m, table = entry["name"], table_of(entry)
    thresholds = tables[m]["thresholds"]
    j = max(thresholds, key=lambda k: len(thresholds[k]))
    col, th = entry["features"][j], thresholds[j][len(thresholds[j]) // 2]
    sql = f'SELECT flock.predict(\'{m}\', t) FROM "{table}" t WHERE "{col}" > {th!r} AND "{col}" IS NOT NULL'
    on = explain(conn, sql)
    assert "Flock Pruned: " in on, on
    pruned_line = next(l for l in on.splitlines() if "Flock Pruned: " in l)
    assert " nodes" in pruned_line and col in pruned_line, on
    inputs_line = next(l for l in on.splitlines() if "Flock Inputs Read: " in l)
    assert f"of {len(entry['features'])}" in inputs_line, on
    off = explain(conn, sql, **{"flock.optimizer": "off"})
    assert "Flock Pruned" not in off and "Flock Inputs Read" not in off, off
    no_prune = explain(conn, sql, **{"flock.optimizer_prune": "off"})
    assert "Flock Pruned" not in no_prune and "Flock Inputs Read" in no_prune, no_prune
    no_projection = explain(conn, sql, **{"flock.optimizer_projection": "off"})
    assert "Flock Pruned" in no_projection and "Flock Inputs Read" not in no_projection, no_projection
    # EXPLAIN ANALYZE runs the specialized model and says so too.
    with conn.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + sql)
        assert "Flock Pruned" in "\n".join(r[0] for r in cur.fetchall())


def test_float_ops_family_is_the_one_the_planner_side_assumes(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT opfname, amname FROM pg_opfamily f JOIN pg_am a ON a.oid = f.opfmethod WHERE f.oid = 1970")
        assert cur.fetchone() == ("float_ops", "btree")


@pytest.mark.parametrize("guc", ["flock.optimizer", "flock.optimizer_prune", "flock.optimizer_projection"])
def test_guc_nonsense_is_a_clear_error(conn, guc):
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.Error) as e:
            cur.execute(f"SET {guc} = 'banana'")
        assert e.value.pgcode == "22023"
        assert "requires a Boolean value" in str(e.value)
        cur.execute(f"SHOW {guc}")
        assert cur.fetchone()[0] == "on"


def test_unprivileged_role_gets_the_same_results(conn, connect_as, tables):
    low = connect_as(LOW)
    cases = all_queries(tables)[::6]
    for entry, (sql, mode) in cases:
        mine = run(low, sql, "on", mode)
        assert mine == run(low, sql, "off", mode), sql
        assert mine == run(conn, sql, "off", mode), sql


def test_a_model_the_passes_do_not_understand_is_scored_as_it_is_and_says_why(conn, tables):
    entry = next(e for e in MODELS if e["estimator"] == "LinearRegression")
    m, table, col = entry["name"], table_of(entry), entry["features"][0]
    sql = f'SELECT ctid::text, flock.predict(\'{m}\', t) FROM "{table}" t WHERE "{col}" < 0 ORDER BY ctid'
    assert "Flock Pruned" not in explain(conn, sql)
    conn.notices.clear()
    with conn.cursor() as cur:
        cur.execute("SET client_min_messages = debug1")
        cur.execute(sql)
        cur.execute("RESET client_min_messages")
    assert any("flock optimizer" in n and "not pruned" in n for n in conn.notices), conn.notices
