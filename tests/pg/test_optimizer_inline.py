"""Model inlining (issue 13, item 4) and prediction costs (item 5).

Inlining is proved differentially: seeded random small tree regressors (every branch mode,
missing_value_tracks_true, NaN and infinite thresholds, SUM and AVERAGE, float and double input)
linear regressors, some behind a Scaler, and two-class tree classifiers (flock.predict's value
is the label), over tables whose columns are real, float8, int2, int4 or int8 holding NULL,
NaN, +-inf, 1e300, huge integers, the split thresholds and their float neighbours: every row's
prediction with the optimizer on (inlined as SQL) equals the prediction with it off (the model),
bit for bit for trees and within 1e-6 for linear models; also through ROW(...), quals, ORDER BY,
aggregates, a subquery and prepared statements. EXPLAIN shows Flock Inlined and no FlockBatchScore
for an inlined call; models past the cost limit, with an audit policy, or linear models over
nullable columns are not inlined.
"""
import json
import math
import os
import random
import struct

import numpy as np
import onnx
import psycopg2
import psycopg2.extras
import pytest
from onnx import TensorProto, helper

from onnx_builders import linear_regressor

SEED = int(os.environ.get("FLOCK_OPTIMIZER_SEED", "1313"))
MODES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]
GRID = [-2.0, -1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 100.0, 3e38]
TYPES = ["real", "float8", "int2", "int4", "int8"]
N_TREE_MODELS = 14
N_LINEAR_MODELS = 6
N_CLASSIFIERS = 4
ROWS = 400
# The differential tests inline models of every size up to the node limit; the default cost limit
# (a stump) is tested on its own.
INLINE_ALL = {"flock.optimizer_inline_max_cost": "1e6"}


def scaler_node(rng, n_features, output="scaled"):
    """A Scaler with per-column parameters, some scales negative or zero."""
    return helper.make_node("Scaler", ["input"], [output], domain="ai.onnx.ml",
                            scale=[rng.choice([1.0, 2.0, -1.0, 0.5, -2.0, 0.0, 0.1]) for _ in range(n_features)],
                            offset=[rng.choice([0.0, 0.5, -1.0, 0.3]) for _ in range(n_features)])


def tree_regressor(rng, n_features, n_trees, max_depth, aggregate="SUM", double_input=False, names=None,
                   scaler=False, classifier=False):
    """A random TreeEnsembleRegressor (one target), behind a Scaler when `scaler`, and its split
    thresholds per feature."""
    ids = {k: [] for k in ("treeids", "nodeids", "featureids", "modes", "values", "true", "false", "missing")}
    w_tree, w_node, w_val = [], [], []
    thresholds = {}
    for t in range(n_trees):
        next_id = [0]

        def build(depth):
            node = next_id[0]
            next_id[0] += 1
            ids["treeids"].append(t)
            ids["nodeids"].append(node)
            at = len(ids["nodeids"]) - 1
            if depth >= max_depth or (depth > 0 and rng.random() < 0.25):
                for k, v in (("featureids", 0), ("modes", "LEAF"), ("values", 0.0), ("true", 0), ("false", 0),
                             ("missing", 0)):
                    ids[k].append(v)
                w_tree.append(t)
                w_node.append(node)
                w_val.append(round(rng.uniform(-2, 2), 3))
                return node
            f = rng.randrange(n_features)
            u = rng.random()
            if u < 0.03:
                th = float("nan")
            elif u < 0.06:
                th = rng.choice([math.inf, -math.inf])
            elif u < 0.3:
                th = float(np.float32(round(rng.uniform(-3, 3), 2)))
            else:
                th = rng.choice(GRID)
            thresholds.setdefault(f, set()).add(th)
            ids["featureids"].append(f)
            ids["modes"].append(rng.choice(MODES))
            ids["values"].append(th)
            ids["missing"].append(rng.randrange(2))
            ids["true"].append(0)
            ids["false"].append(0)
            ids["true"][at] = build(depth + 1)
            ids["false"][at] = build(depth + 1)
            return node

        build(0)
    nodes_attrs = dict(
        nodes_treeids=ids["treeids"], nodes_nodeids=ids["nodeids"], nodes_featureids=ids["featureids"],
        nodes_modes=ids["modes"], nodes_values=ids["values"], nodes_truenodeids=ids["true"],
        nodes_falsenodeids=ids["false"], nodes_missing_value_tracks_true=ids["missing"],
        nodes_hitrates=[1.0] * len(ids["nodeids"]))
    if classifier:  # two classes, ORT's binary case: one class-0 weight per leaf; the label by a margin
        node = helper.make_node(
            "TreeEnsembleClassifier", ["input"], ["label", "probabilities"], domain="ai.onnx.ml",
            classlabels_int64s=[3, 7], post_transform="LOGISTIC", base_values=[round(rng.uniform(-1, 1), 2)],
            class_treeids=w_tree, class_nodeids=w_node, class_ids=[0] * len(w_tree), class_weights=w_val,
            **nodes_attrs)
        outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
                   helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])]
    else:
        node = helper.make_node(
            "TreeEnsembleRegressor", ["scaled" if scaler else "input"], ["variable"], domain="ai.onnx.ml",
            n_targets=1, aggregate_function=aggregate, post_transform="NONE",
            base_values=[round(rng.uniform(-1, 1), 2)],
            target_treeids=w_tree, target_nodeids=w_node, target_ids=[0] * len(w_tree), target_weights=w_val,
            **nodes_attrs)
        outputs = [helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])]
    input_type = TensorProto.DOUBLE if double_input else TensorProto.FLOAT
    nodes = [scaler_node(rng, n_features), node] if scaler else [node]
    graph = helper.make_graph(nodes, "trees", [helper.make_tensor_value_info("input", input_type, ["N", n_features])],
                              outputs)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid("ai.onnx.ml", 1)])
    m.ir_version = 8
    if names:
        helper.set_model_props(m, {"feature_names": json.dumps(names)})
    return m.SerializeToString(), {k: sorted(v, key=lambda x: (math.isnan(x), x)) for k, v in thresholds.items()}


def as_real(v):
    """The float4 a real column holds for v (a value PostgreSQL's real accepts)."""
    with np.errstate(over="ignore", under="ignore"):
        return float(np.float32(v))


def column_value(rng, typ, thresholds):
    """A value for a column of type `typ`: often NULL, NaN, infinities, huge, or a threshold or one
    of its float or double neighbours."""
    u = rng.random()
    if u < 0.08:
        return None
    integer = typ in ("int2", "int4", "int8")
    if integer:
        if u < 0.15:
            return rng.choice({"int2": [32767, -32768], "int4": [2**31 - 1, -2**31],
                               "int8": [2**63 - 1, -2**63, 2**60 + 1, 16777217]}[typ])
        base = rng.choice(thresholds) if thresholds and u < 0.6 else rng.uniform(-4, 4)
        if math.isnan(base) or math.isinf(base) or abs(base) > 30000:
            base = rng.uniform(-4, 4)
        return int(math.floor(base)) + rng.choice([-1, 0, 0, 1])
    if u < 0.14:
        return rng.choice([float("nan"), math.inf, -math.inf])
    if u < 0.2:
        v = rng.choice([1e300, -1e300, 3.5e38, -3.5e38, 1e-300, 3.4028235e38, 1e-46, 1e-45])
        return as_real(v) if typ == "real" else v
    if thresholds and u < 0.75:
        th = rng.choice(thresholds)
        if math.isnan(th):
            th = 0.0
        f32 = np.float32(th) if not math.isinf(th) else np.float32(3.4028235e38)
        with np.errstate(over="ignore"):
            cands = [th, float(np.nextafter(f32, np.float32(np.inf))), float(np.nextafter(f32, np.float32(-np.inf))),
                     float(np.nextafter(th, math.inf)), float(np.nextafter(th, -math.inf))]
        if not math.isinf(th):  # exactly half way between th and the next float (ties to even)
            up = float(np.nextafter(f32, np.float32(np.inf)))
            cands.append((float(f32) + up) / 2)
        v = rng.choice(cands)
    else:
        v = rng.uniform(-4, 4)
    return as_real(v) if typ == "real" else v


def make_table(cur, rng, table, n_features, thresholds, not_null=False, types=None):
    types = types or [rng.choice(TYPES) for _ in range(n_features)]
    nn = " NOT NULL" if not_null else ""
    cols = ", ".join(f"f{j} {t}{nn}" for j, t in enumerate(types))
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, {cols})")
    rows = []
    for i in range(ROWS):
        row = [i]
        for j, t in enumerate(types):
            v = column_value(rng, t, thresholds.get(j, []))
            while not_null and v is None:
                v = column_value(rng, t, thresholds.get(j, []))
            row.append(v)
        rows.append(row)
    psycopg2.extras.execute_values(cur, f"INSERT INTO {table} VALUES %s", rows)
    cur.execute(f"ANALYZE {table}")
    return types


@pytest.fixture(scope="module")
def models(cluster, dbname):
    """Random tree models (some with feature names, some binding by order) and linear models, each
    with a table of its features; plus a model too costly to inline."""
    rng = random.Random(SEED)
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    out = []
    with conn.cursor() as cur:
        for k in range(N_TREE_MODELS):
            n = rng.randint(1, 5)
            named = k % 2 == 0
            names = [f"f{j}" for j in range(n)] if named else None
            data, thresholds = tree_regressor(rng, n, rng.randint(1, 4), rng.randint(1, 4),
                                              aggregate=rng.choice(["SUM", "SUM", "AVERAGE"]),
                                              double_input=rng.random() < 0.3, names=names, scaler=k % 4 == 3)
            name, table = f"inl_tree_{k}", f"inl_tree_{k}_t"
            cur.execute("SELECT flock.register_model(%s, %s, 'onnx')", (name, data))
            types = make_table(cur, rng, table, n, thresholds)
            out.append({"name": name, "table": table, "n": n, "named": named, "kind": "tree", "types": types})
        for k in range(N_CLASSIFIERS):
            n = rng.randint(1, 4)
            names = [f"f{j}" for j in range(n)]
            data, thresholds = tree_regressor(rng, n, rng.randint(1, 4), rng.randint(1, 4),
                                              double_input=k % 2 == 1, names=names, classifier=True)
            name, table = f"inl_cls_{k}", f"inl_cls_{k}_t"
            cur.execute("SELECT flock.register_model(%s, %s, 'onnx')", (name, data))
            types = make_table(cur, rng, table, n, thresholds)
            out.append({"name": name, "table": table, "n": n, "named": True, "kind": "tree", "types": types})
        for k in range(N_LINEAR_MODELS):
            n = rng.randint(1, 6)
            coefs = [round(rng.uniform(-3, 3), 3) if rng.random() > 0.15 else 0.0 for _ in range(n)]
            input_type = rng.choice([TensorProto.FLOAT, TensorProto.DOUBLE])
            data = linear_regressor(coefs, round(rng.uniform(-5, 5), 3), feature_names=[f"f{j}" for j in range(n)],
                                    input_type=input_type)
            if k % 3 == 2:  # behind a Scaler
                mp = onnx.load_from_string(data)
                mp.graph.node[0].input[0] = "scaled"
                mp.graph.node.insert(0, scaler_node(rng, n))
                data = mp.SerializeToString()
            name, table = f"inl_lin_{k}", f"inl_lin_{k}_t"
            cur.execute("SELECT flock.register_model(%s, %s, 'onnx')", (name, data))
            types = make_table(cur, rng, table, n, {}, not_null=True)
            out.append({"name": name, "table": table, "n": n, "named": True, "kind": "linear", "types": types})
        # Too costly to inline: 60 trees of depth 6.
        data, thresholds = tree_regressor(random.Random(SEED + 7), 4, 60, 6, names=[f"f{j}" for j in range(4)])
        cur.execute("SELECT flock.register_model('inl_big', %s, 'onnx')", (data,))
        make_table(cur, rng, "inl_big_t", 4, thresholds)
    conn.close()
    return out


def bits(v):
    if v is None:
        return None
    return struct.pack("<d", v)


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def fetch(conn, sql, optimizer, settings=None):
    with conn.cursor() as cur:
        cur.execute(f"SET flock.optimizer = {optimizer}")
        cur.execute("SET jit = off")
        for k, v in {**INLINE_ALL, **(settings or {})}.items():
            cur.execute(f"SET {k} = {v}")
        try:
            cur.execute(sql)
            return cur.fetchall()
        finally:
            cur.execute("RESET ALL")


def explain(conn, sql, optimizer="on", settings=None):
    with conn.cursor() as cur:
        cur.execute(f"SET flock.optimizer = {optimizer}")
        for k, v in {**INLINE_ALL, **(settings or {})}.items():
            cur.execute(f"SET {k} = {v}")
        cur.execute("EXPLAIN " + sql)
        text = "\n".join(r[0] for r in cur.fetchall())
        cur.execute("RESET ALL")
        return text


def same_rows(on, off, exact):
    assert len(on) == len(off)
    for a, b in zip(on, off):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            if isinstance(y, float) or isinstance(x, float):
                if exact:
                    assert bits(x) == bits(y), (a, b)
                else:
                    assert close(x, y), (a, b)
            else:
                assert x == y, (a, b)


def input_of(m):
    """The record the call scores: the table's row (binding by name), or ROW(...) for a model
    binding by column order (the table has an id column too)."""
    if not m["named"]:
        return "ROW(" + ", ".join(f"t.f{j}" for j in range(m["n"])) + ")"
    return "t"


def queries(m, rng):
    name, table = m["name"], m["table"]
    out = []
    for _ in range(6):
        x = input_of(m)
        call = f"flock.predict('{name}', {x})"
        c = round(rng.uniform(-2, 2), 2)
        out += [
            f"SELECT id, {call} FROM {table} t ORDER BY id",
            f"SELECT id, {call} FROM {table} t WHERE {call} > {c} ORDER BY id",
            f"SELECT id FROM {table} t ORDER BY {call}, id LIMIT 50",
            f"SELECT count(*), sum({call}) FILTER (WHERE {call} <> 'NaN') FROM {table} t",
            f"SELECT s.id, s.p FROM (SELECT id, {call} AS p FROM {table} t) s WHERE s.id % 3 = 0 ORDER BY 1",
            f"SELECT id, (SELECT {call} FROM {table} t WHERE t.id = o.id) FROM {table} o WHERE id < 40 ORDER BY 1",
        ]
    return out


def test_inlined_results_equal_the_models(conn, models):
    rng = random.Random(SEED + 1)
    checked = inlined = values = 0
    for m in models:
        exact = m["kind"] == "tree"
        for sql in queries(m, rng):
            off = fetch(conn, sql, "off")
            on = fetch(conn, sql, "on")
            same_rows(on, off, exact)
            checked += 1
            values += sum(len(r) for r in on)
            plan = explain(conn, sql)
            if "Flock Inlined" in plan:
                inlined += 1
                assert f"Flock Inlined: {m['name']}@1 as SQL" in plan, plan
                assert "FlockBatchScore" not in plan, plan
    # Not vacuous: nearly every query inlines (the others are not refused silently: see below).
    assert inlined >= checked * 9 // 10, f"{inlined} of {checked} inlined"
    assert values > 20000


def test_every_row_with_nan_null_inf_and_huge_values(conn, models):
    """Per model, the prediction of every row (thousands, over all models) equals the model's."""
    rows = 0
    for m in models:
        sql = f"SELECT id, flock.predict('{m['name']}', {input_of(m)}) FROM {m['table']} t ORDER BY id"
        off, on = fetch(conn, sql, "off"), fetch(conn, sql, "on")
        same_rows(on, off, m["kind"] == "tree")
        assert "Flock Inlined" in explain(conn, sql)
        # The same with batching off (each call scores one row) and under the inliner alone.
        one = fetch(conn, sql, "off", {"flock.batching": "off"})
        same_rows(on, one, m["kind"] == "tree")
        rows += len(on)
    assert rows >= ROWS * (N_TREE_MODELS + N_CLASSIFIERS + N_LINEAR_MODELS)
    seen = {"nan": 0, "inf": 0, "huge": 0, "null": 0}  # the data holds what it claims to
    with conn.cursor() as cur:
        for m in models:
            for j, t in enumerate(m["types"]):
                cur.execute(f"SELECT count(*) FILTER (WHERE f{j} IS NULL), "
                            + ("count(*) FILTER (WHERE f{j} = 'NaN'), count(*) FILTER (WHERE abs(f{j}) = 'Infinity'), "
                               "count(*) FILTER (WHERE abs(f{j}) > 1e38 AND abs(f{j}) < 'Infinity') "
                               if t in ("real", "float8") else "0, 0, count(*) FILTER (WHERE abs(f{j}::float8) > 1e15) ")
                            .format(j=j) + f"FROM {m['table']}")
                for key, n in zip(("null", "nan", "inf", "huge"), cur.fetchone()):
                    seen[key] += n
    assert all(n > 20 for n in seen.values()), seen


PARALLEL = {"max_parallel_workers_per_gather": "2", "parallel_setup_cost": "0", "parallel_tuple_cost": "0",
            "min_parallel_table_scan_size": "0", "force_parallel_mode": "on"}


def test_parallel_plans_and_partitions(conn, models):
    """The inlined expression runs in parallel workers (flock._round_to_float4 is parallel safe),
    and over a partitioned table (its row bound per partition)."""
    m = next(x for x in models if x["kind"] == "tree" and x["named"])
    sql = f"SELECT id, flock.predict('{m['name']}', t) FROM {m['table']} t ORDER BY id"
    plan = explain(conn, sql, settings=PARALLEL)
    assert "Gather" in plan and "Flock Inlined" in plan, plan
    same_rows(fetch(conn, sql, "on", PARALLEL), fetch(conn, sql, "off"), True)
    cols = ", ".join(f"f{j} {t}" for j, t in enumerate(m["types"]))
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE inl_parts (id int, {cols}) PARTITION BY RANGE (id)")
        cur.execute("CREATE TABLE inl_parts_a PARTITION OF inl_parts FOR VALUES FROM (MINVALUE) TO (200)")
        cur.execute("CREATE TABLE inl_parts_b PARTITION OF inl_parts FOR VALUES FROM (200) TO (MAXVALUE)")
        cur.execute(f"INSERT INTO inl_parts SELECT * FROM {m['table']}")
    sql = f"SELECT id, flock.predict('{m['name']}', t) FROM inl_parts t WHERE id % 2 = 0 ORDER BY id"
    assert "Flock Inlined" in explain(conn, sql)
    same_rows(fetch(conn, sql, "on"), fetch(conn, sql, "off"), True)


def test_prepared_statements(conn, models):
    m = next(x for x in models if x["kind"] == "tree" and x["named"])
    results = {}
    for optimizer in ("off", "on"):
        with conn.cursor() as cur:
            cur.execute(f"SET flock.optimizer = {optimizer}")
            cur.execute("SET flock.optimizer_inline_max_cost = 1e6")
            cur.execute(f"PREPARE q(float8) AS SELECT id, flock.predict('{m['name']}', t) FROM {m['table']} t "
                        f"WHERE flock.predict('{m['name']}', t) > $1 ORDER BY id")
            got = []
            for k in range(8):  # past the five custom plans: the generic plan too
                cur.execute("EXECUTE q(%s)", (k / 4 - 1,))
                got.append(cur.fetchall())
            cur.execute("DEALLOCATE q")
            cur.execute("RESET ALL")
        results[optimizer] = got
    for a, b in zip(results["on"], results["off"]):
        same_rows(a, b, True)


def test_a_new_model_version_replans_a_prepared_statement(conn, models):
    rng = random.Random(SEED + 5)
    with conn.cursor() as cur:
        cur.execute("SET flock.optimizer_inline_max_cost = 1e6")
        data1, th = tree_regressor(rng, 2, 2, 2, names=["f0", "f1"])
        cur.execute("SELECT flock.register_model('inl_versions', %s, 'onnx')", (data1,))
        make_table(cur, rng, "inl_versions_t", 2, th)
        sql = "SELECT id, flock.predict('inl_versions', t) FROM inl_versions_t t ORDER BY id"
        cur.execute("PREPARE v AS " + sql)
        cur.execute("EXECUTE v")
        first = cur.fetchall()
        data2, _ = tree_regressor(rng, 2, 3, 3, names=["f0", "f1"])
        cur.execute("SELECT flock.register_model('inl_versions', %s, 'onnx')", (data2,))
        cur.execute("EXECUTE v")
        second = cur.fetchall()
        cur.execute("DEALLOCATE v")
        cur.execute("RESET ALL")
    same_rows(first, fetch(conn, sql.replace("'inl_versions'", "'inl_versions@1'"), "off"), True)
    same_rows(second, fetch(conn, sql, "off"), True)


def test_the_default_cost_limit(conn, models):
    """By default only what is cheaper inlined than batched (bench/optimizer_inline.py) is inlined:
    a stump; two levels are not."""
    rng = random.Random(SEED + 9)
    with conn.cursor() as cur:
        for name, depth in (("inl_stump", 1), ("inl_two_levels", 2)):
            data, th = None, None
            while True:  # a tree with exactly `depth` levels on its every path
                data, th = tree_regressor(rng, 2, 1, depth, names=["f0", "f1"])
                attrs = {a.name: a for a in onnx.load_from_string(data).graph.node[0].attribute}
                if len(attrs["nodes_nodeids"].ints) == 2 ** (depth + 1) - 1:
                    break
            cur.execute("SELECT flock.register_model(%s, %s, 'onnx')", (name, data))
            make_table(cur, rng, name + "_t", 2, th)
    stump = "SELECT id, flock.predict('inl_stump', t) FROM inl_stump_t t ORDER BY id"
    two = "SELECT id, flock.predict('inl_two_levels', t) FROM inl_two_levels_t t ORDER BY id"
    default = {"flock.optimizer_inline_max_cost": "2"}
    with conn.cursor() as cur:
        cur.execute("SHOW flock.optimizer_inline_max_cost")
        assert cur.fetchone()[0] == "2"
    assert "Flock Inlined: inl_stump@1 as SQL" in explain(conn, stump, settings=default)
    assert "Flock Inlined" not in explain(conn, two, settings=default)
    assert "Flock Inlined" in explain(conn, two)
    same_rows(fetch(conn, stump, "on", default), fetch(conn, stump, "off"), True)


def test_what_is_not_inlined(conn, models):
    big = "SELECT id, flock.predict('inl_big', t) FROM inl_big_t t ORDER BY id"
    plan = explain(conn, big)
    assert "Flock Inlined" not in plan and "FlockBatchScore" in plan, plan
    same_rows(fetch(conn, big, "on"), fetch(conn, big, "off"), True)
    # The GUCs.
    m = next(x for x in models if x["kind"] == "tree")
    sql = f"SELECT id, flock.predict('{m['name']}', t) FROM {m['table']} t"
    assert "Flock Inlined" in explain(conn, sql)
    assert "Flock Inlined" not in explain(conn, sql, settings={"flock.optimizer_inline": "off"})
    assert "Flock Inlined" not in explain(conn, sql, optimizer="off")
    # A linear model over nullable columns: a NULL would be an error from the model, not inlined.
    lin = next(x for x in models if x["kind"] == "linear")
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE inl_nullable AS SELECT * FROM {lin['table']}")
        cur.execute("INSERT INTO inl_nullable (id) VALUES (-1)")
    sql = f"SELECT id, flock.predict('{lin['name']}', t) FROM inl_nullable t ORDER BY id"
    assert "Flock Inlined" not in explain(conn, sql)
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.Error) as err:
            cur.execute(sql)
        assert err.value.pgcode == "22004"  # the model's error, unchanged
    # An outer join could null the whole row: left alone.
    sql = (f"SELECT o.id, flock.predict('{m['name']}', t) FROM {m['table']} o "
           f"LEFT JOIN {m['table']} t ON t.id = o.id + 1 ORDER BY 1")
    assert "Flock Inlined" not in explain(conn, sql)
    same_rows(fetch(conn, sql, "on"), fetch(conn, sql, "off"), True)
    # A dropped column is skipped; a numeric column is not inlined; a CTE's row is not a table's.
    cols = ", ".join(f"f{j}" for j in range(m["n"]))
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE inl_dropped AS SELECT 1 AS junk, * FROM {m['table']}")
        cur.execute("ALTER TABLE inl_dropped DROP COLUMN junk")
        cur.execute(f"CREATE TABLE inl_numeric AS SELECT id, f0::numeric AS f0"
                    + "".join(f", f{j}" for j in range(1, m["n"])) + f" FROM {m['table']}")
    for sql, inlines in (
            (f"SELECT id, flock.predict('{m['name']}', t) FROM inl_dropped t ORDER BY id", True),
            (f"SELECT id, flock.predict('{m['name']}', t) FROM inl_numeric t ORDER BY id", False),
            (f"WITH c AS MATERIALIZED (SELECT id, {cols} FROM {m['table']}) "
             f"SELECT id, flock.predict('{m['name']}', c) FROM c ORDER BY id", False)):
        assert ("Flock Inlined" in explain(conn, sql)) == inlines, sql
        same_rows(fetch(conn, sql, "on"), fetch(conn, sql, "off"), True)
    # A model with an audit policy: the log must see every prediction.
    with conn.cursor() as cur:
        cur.execute(f"SELECT flock.set_audit('{m['name']}', 'all')")
    try:
        assert "Flock Inlined" not in explain(conn, f"SELECT flock.predict('{m['name']}', t) FROM {m['table']} t")
    finally:
        with conn.cursor() as cur:
            cur.execute(f"SELECT flock.set_audit('{m['name']}', 'off')")


def test_cheap_quals_run_before_predictions(conn, models):
    """The prediction's cost (prosupport) puts a cheap qual first in the Filter; with the costs off
    the written order stays."""
    sql = ("SELECT id FROM inl_big_t t WHERE flock.predict('inl_big', t) > 0.5 AND id % 7 = 0")
    settings = {"flock.batching": "off"}  # the Filter stays on the scan
    plan = explain(conn, sql, settings=settings)
    line = next(l for l in plan.splitlines() if "Filter" in l)
    assert line.index("id % 7") < line.index("predict"), plan
    plan = explain(conn, sql, settings={**settings, "flock.optimizer_costs": "off"})
    line = next(l for l in plan.splitlines() if "Filter" in l)
    assert line.index("predict") < line.index("id % 7"), plan
    same_rows(fetch(conn, sql + " ORDER BY id", "on", settings), fetch(conn, sql + " ORDER BY id", "off", settings),
              True)
    # The target list keeps COST 1: an ORDER BY ... LIMIT query scores in batches below the Sort.
    plan = explain(conn, "SELECT id, flock.predict('inl_big', t) FROM inl_big_t t ORDER BY id LIMIT 10")
    assert "FlockBatchScore" in plan, plan
