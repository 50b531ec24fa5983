"""flock.trace: one prediction with everything it went through (issue 17).

- Trace's prediction equals predict / predict_label / predict_proba (and its outputs equal
  predict_tensor) on every row of every test model: sklearn ONNX, XGBoost, pipelines, torch MLP/CNN.
- The input values are the row's, as the model's input type holds them; NULL is missing.
- XGBoost models: every tree's path is walked again here from the model's own JSON (XGBoost's rule:
  x < split_condition goes left, missing values go the default way) and its leaf is the one
  XGBoost's `pred_leaf` gives, on every row (the customers data set has NULLs).
- ONNX tree ensembles: every path is a chain from the root, each branch taken is what the node's
  mode says for the value, and the leaf weights add up to the aggregation's sums.
- Graphs: every node's outputs by name, the last node's outputs are the model's; max_values bounds
  what is listed and the trace says so.
- Bad input: unknown model, wrong arity, NULL model, negative limit, a role without privilege.
"""
import json
import math
import os

import psycopg2
import pytest

from test_catalog import one, sqlstate

MODELS_DIR = os.environ.get("FLOCK_MODELS_DIR", "")
ALL_VALUES = 10_000_000  # max_values large enough to list every path of the test models


def _load(name):
    path = os.path.join(MODELS_DIR, name)
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run tools/models/make_models.py --out DIR and point FLOCK_MODELS_DIR at DIR")
    with open(path) as f:
        return json.load(f)


def _manifest(name):
    try:
        return _load(name)
    except BaseException:
        return []


MANIFEST = _manifest("manifest.json")
TORCH = _manifest("torch_manifest.json")
XGB = [e for e in MANIFEST if e["format"] == "xgboost"]


@pytest.fixture(scope="module")
def loaded(cluster, dbname):
    """Every data set in a table of its own, every model registered."""
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        for datasets, manifest in (("datasets.json", MANIFEST), ("torch_datasets.json", TORCH)):
            for info in _load(datasets).values():
                cols = ", ".join(f'"{c["name"]}" {c["type"]}' for c in info["columns"])
                cur.execute(f'CREATE TABLE "{info["table"]}" ({cols})')
                with open(os.path.join(MODELS_DIR, info["file"])) as f:
                    cur.copy_expert(f'COPY "{info["table"]}" FROM STDIN WITH (FORMAT csv, HEADER true)', f)
            for entry in manifest:
                with open(os.path.join(MODELS_DIR, entry["file"]), "rb") as f:
                    cur.execute("SELECT flock.register_model(%s, %s, %s)", (entry["name"], f.read(), entry["format"]))
    yield conn
    conn.close()


def _arg(entry, alias="t"):
    """The record when the model binds by name (or has several inputs), else ROW(features) by position."""
    if entry["has_feature_names"] or (entry.get("inputs") and len(entry["inputs"]) > 1):
        return alias
    return "ROW(" + ", ".join(f'{alias}."{c}"' for c in entry["features"]) + ")"


def _f32(v):
    """A value as a float input holds it."""
    import struct
    return struct.unpack("f", struct.pack("f", v))[0]


def _traces_and_predictions(conn, entry, max_values=0, batching=True):
    """Per row: id, trace, and predict's answers in the same query (batched through the
    FlockBatchScore node unless `batching` is off, then scored one row per call as the trace is)."""
    arg = _arg(entry)
    name = entry["name"]
    classification = entry["task"] == "classification"
    extra = (f", flock.predict_label(%(m)s, {arg}), flock.predict_proba(%(m)s, {arg})" if classification
             else f", flock.predict(%(m)s, {arg}), flock.predict_tensor(%(m)s, {arg})")
    with conn.cursor() as cur:
        cur.execute("SET flock.batching = " + ("on" if batching else "off"))
        try:
            cur.execute(f'SELECT id, flock.trace(%(m)s, {arg}, %(n)s){extra} FROM "{entry["table"]}" t ORDER BY id',
                        {"m": name, "n": max_values})
            return cur.fetchall()
        finally:
            cur.execute("RESET flock.batching")


def _close(a, b, tol):
    return a == b if tol == 0 else abs(a - b) <= tol * max(abs(b), 1.0)


def _check_prediction(entry, rows, tol=0):
    """Trace's prediction equals predict's: bit for bit (tol 0), or within `tol` relative."""
    bad = []
    for row in rows:
        trace = row[1]
        p = trace["prediction"]
        if entry["task"] == "classification":
            same = p.get("label") == row[2] and len(p.get("proba", [])) == len(row[3]) and all(
                _close(a, b, tol) for a, b in zip(p["proba"], row[3]))
        else:
            chosen = [o for o in trace["outputs"] if o["type"] == "float"][0]
            # predict_tensor's float4 values read back as the floats they are.
            tensor = [_f32(v) for v in _flat(row[3])]
            same = _close(p.get("value"), row[2], tol) and len(chosen["values"]) == len(tensor) and all(
                _close(a, b, tol) for a, b in zip(chosen["values"], tensor))
        if not same:
            bad.append((row[0], p, row[2], row[3]))
    assert not bad, f"{len(bad)} of {len(rows)} rows: trace differs from predict, first: {bad[:2]}"


def _flat(v):
    if isinstance(v, list):
        return [x for item in v for x in _flat(item)]
    return [v]


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["name"] for e in MANIFEST])
def test_trace_equals_predict_on_every_row(loaded, entry):
    # Trees and linear models give the same bits batched or not: compare with both.
    for batching in (True, False):
        rows = _traces_and_predictions(loaded, entry, batching=batching)
        assert len(rows) == len(entry["expected"])
        _check_prediction(entry, rows)
    # Also when every value is listed (the listing must not change the run).
    _check_prediction(entry, _traces_and_predictions(loaded, entry, ALL_VALUES)[:25])


@pytest.mark.parametrize("entry", TORCH, ids=[e["name"] for e in TORCH])
def test_neural_network_trace_equals_predict_on_every_row(loaded, entry):
    # A trace scores one row, as predict does one row per call: bit for bit the same.
    rows = _traces_and_predictions(loaded, entry, batching=False)
    assert len(rows) == len(entry["expected"])
    _check_prediction(entry, rows)
    # Batched, a network's matrix products run on a whole batch and may round differently in the
    # last bits (test_torch_fidelity's tolerance): within 1e-5 of each other.
    _check_prediction(entry, _traces_and_predictions(loaded, entry), tol=1e-5)


@pytest.mark.parametrize("entry", TORCH + [e for e in MANIFEST if "pipeline" in e["name"]],
                         ids=lambda e: e["name"])
def test_graph_steps_list_every_node_and_end_in_the_outputs(loaded, entry):
    trace = one(loaded, f'SELECT flock.trace(%s, {_arg(entry)}, %s) FROM "{entry["table"]}" t ORDER BY id LIMIT 1',
                (entry["name"], ALL_VALUES))
    steps = trace["steps"]
    assert len(steps) >= 2 and [s["step"] for s in steps] == list(range(len(steps)))
    assert not trace["truncated"]
    produced = {}
    for s in steps:
        assert s["node"] and s["outputs"], s
        for o in s["outputs"]:
            assert len(o["values"]) == math.prod(o["shape"]) and "truncated" not in o
            produced[o["name"]] = o
        # A node reads the model's inputs, constants, or what an earlier node wrote.
    for out in trace["outputs"]:
        if out["name"] in produced:
            assert produced[out["name"]]["values"] == out["values"]
    assert any(o["name"] in produced for o in trace["outputs"])
    # Bounded: a small limit lists that many values at most, and says what it left out.
    small = one(loaded, f'SELECT flock.trace(%s, {_arg(entry)}, 5) FROM "{entry["table"]}" t ORDER BY id LIMIT 1',
                (entry["name"],))
    listed = sum(len(o["values"]) for s in small["steps"] for o in s["outputs"])
    assert listed <= 5 and small["truncated"] is True and small["max_values"] == 5
    assert any(o.get("truncated") and o["total"] == math.prod(o["shape"]) for s in small["steps"] for o in s["outputs"])
    assert small["prediction"] == trace["prediction"] and small["outputs"] == trace["outputs"]


def _features(conn, entry, where=""):
    cols = ", ".join(f'"{c}"' for c in entry["features"])
    with conn.cursor() as cur:
        cur.execute(f'SELECT id, {cols} FROM "{entry["table"]}" {where} ORDER BY id')
        return cur.fetchall()


@pytest.mark.parametrize("entry", XGB, ids=[e["name"] for e in XGB])
def test_xgboost_paths_and_leaves_match_pred_leaf(loaded, entry):
    np = pytest.importorskip("numpy")
    xgb = pytest.importorskip("xgboost")
    path = os.path.join(MODELS_DIR, entry["file"])
    booster = xgb.Booster(model_file=path)
    trees = _load(entry["file"])["learner"]["gradient_booster"]["model"]["trees"]
    data = _features(loaded, entry)
    x = np.array([[np.nan if v is None else v for v in r[1:]] for r in data], dtype=np.float32)
    leaves = booster.predict(xgb.DMatrix(x, missing=np.nan, feature_names=entry["features"]), pred_leaf=True)
    leaves = leaves.reshape(len(data), -1)
    assert leaves.shape[1] == len(trees)
    traces = [r[1] for r in _traces_and_predictions(loaded, entry, ALL_VALUES)]
    assert len(traces) == len(data)
    checked_missing = 0
    for r, trace in enumerate(traces):
        # The inputs as the model saw them: the row's values as float32, NULL as missing.
        assert [f["value"] for f in trace["features"]] == [None if v is None else _f32(v) for v in data[r][1:]]
        (step,) = [s for s in trace["steps"] if "trees" in s]
        assert len(step["trees"]) == len(trees) and not step.get("trees_truncated")
        for t, traced in enumerate(step["trees"]):
            tree = trees[t]
            node = 0
            for branch in traced["path"]:
                assert branch["node"] == node and branch["feature"] == tree["split_indices"][node]
                assert branch["threshold"] == _f32(tree["split_conditions"][node])
                value = x[r, branch["feature"]]
                if np.isnan(value):
                    go_left = bool(tree["default_left"][node])
                    assert branch["missing"] and branch["value"] is None
                    checked_missing += 1
                else:
                    go_left = bool(value < np.float32(tree["split_conditions"][node]))
                    assert not branch["missing"] and branch["value"] == float(value)
                assert branch["branch"] == ("true" if go_left else "false")
                node = tree["left_children"][node] if go_left else tree["right_children"][node]
                assert branch["next"] == node
            assert tree["left_children"][node] == -1, f"row {r} tree {t} stops at a branch"
            assert traced["leaf"] == node == int(leaves[r, t]), f"row {r} tree {t}"
            (weight,) = traced["weights"] if "weights" in traced else [{"value": traced["value"]}]
            assert abs(weight["value"]) == abs(_f32(tree["split_conditions"][node]))
    if entry["table"] == "customers":
        assert checked_missing > 0  # the NULLs went down their default branches


def _mode_holds(mode, x, t):
    return {"BRANCH_LEQ": x <= t, "BRANCH_LT": x < t, "BRANCH_GTE": x >= t, "BRANCH_GT": x > t,
            "BRANCH_EQ": x == t, "BRANCH_NEQ": x != t}[mode]


ONNX_TREES = [e for e in MANIFEST if e["format"] == "onnx" and e["name"].endswith(("_tree", "_rf", "_gb"))]


@pytest.mark.parametrize("entry", ONNX_TREES, ids=[e["name"] for e in ONNX_TREES])
def test_onnx_tree_paths_follow_their_nodes(loaded, entry):
    traces = [r[1] for r in _traces_and_predictions(loaded, entry, ALL_VALUES)]
    for trace in traces[:60]:
        features = [f["value"] for f in trace["features"]]
        for step in (s for s in trace["steps"] if "trees" in s):
            agg = step["aggregation"]
            assert len(step["trees"]) == agg["trees"]
            sums = [0.0] * agg["outputs"]
            for tree in step["trees"]:
                node = tree["root"]
                for branch in tree["path"]:
                    assert branch["node"] == node
                    if step["inputs"] == [trace["features"][0]["input"]]:
                        value = features[branch["feature"]]
                        assert branch["value"] == (_f32(value) if value is not None else None)
                    holds = branch["value"] is not None and _mode_holds(branch["mode"], branch["value"], branch["threshold"])
                    if branch["missing"]:
                        holds = holds or branch["missing_goes"] == "true"
                    assert branch["branch"] == ("true" if holds else "false")
                    node = branch["next"]
                assert tree["leaf"] == node
                if "value" in tree:
                    sums[0] += tree["value"]
                else:
                    for w in tree["weights"]:
                        sums[w.get("class", w.get("target"))] += w["value"]
            assert sums == pytest.approx(agg["leaf_sums"], rel=1e-12, abs=1e-12)


def test_nulls_are_missing_and_take_the_default_branch(loaded):
    trace = one(loaded, "SELECT flock.trace('iris_xgb', ARRAY[NULL, 3.5, NULL, NULL]::float4[])")
    assert [f["value"] for f in trace["features"]] == [None, 3.5, None, None]
    branches = [b for s in trace["steps"] for t in s.get("trees", []) for b in t["path"]]
    assert branches and all(b["missing"] and b["branch"] == b["missing_goes"] for b in branches if b["feature"] != 1)
    assert trace["prediction"]["proba"] == one(loaded, "SELECT flock.predict_proba('iris_xgb', ARRAY[NULL, 3.5, NULL, NULL]::float4[])")
    # A NULL row: no row, no trace (as predict).
    assert one(loaded, "SELECT flock.trace('iris_xgb', NULL::float4[])") is None


def test_names_the_model_version_and_hash(loaded):
    with loaded.cursor() as cur:
        cur.execute("SELECT flock.register_model('iris_xgb', %s, 'xgboost')",
                    (open(os.path.join(MODELS_DIR, "iris_xgb.json"), "rb").read(),))
        cur.execute("SELECT version, sha256 FROM flock.models WHERE name = 'iris_xgb' ORDER BY version")
        versions = cur.fetchall()
    trace = one(loaded, "SELECT flock.trace('iris_xgb@1', ARRAY[5, 3.5, 1.4, 0.2]::float4[])")
    assert trace["model"] == {"name": "iris_xgb", "version": 1, "sha256": versions[0][1], "reference": "iris_xgb@1"}
    assert trace["format"] == "xgboost" and trace["task"] == "classification"
    latest = one(loaded, "SELECT flock.trace('iris_xgb', ARRAY[5, 3.5, 1.4, 0.2]::float4[])")
    assert latest["model"]["version"] == versions[-1][0]
    # A flock.model value: no name, its hash.
    value = one(loaded, "SELECT flock.trace(m.model, ARRAY[5, 3.5, 1.4, 0.2]::float4[]) FROM flock.models m "
                        "WHERE name = 'iris_xgb' AND version = 1")
    assert value["model"] == {"name": None, "version": None, "sha256": versions[0][1]}
    assert value["prediction"] == trace["prediction"] and value["steps"] == trace["steps"]


def test_tree_listing_is_bounded(loaded):
    full = one(loaded, "SELECT flock.trace('breast_cancer_rf', t, %s) FROM breast_cancer t WHERE id = 1", (ALL_VALUES,))
    small = one(loaded, "SELECT flock.trace('breast_cancer_rf', t, 30) FROM breast_cancer t WHERE id = 1")
    (fs,), (ss,) = [s for s in full["steps"] if "trees" in s], [s for s in small["steps"] if "trees" in s]
    listed = sum(len(t["path"]) + 1 for t in ss["trees"])
    assert 0 < listed <= 30 and ss["trees_truncated"] and ss["trees_total"] == len(fs["trees"])
    assert small["truncated"] and not full["truncated"]
    assert ss["trees"] == fs["trees"][:len(ss["trees"])] and ss["aggregation"] == fs["aggregation"]
    assert small["prediction"] == full["prediction"]


def test_bad_input_gives_sqlstates_and_hints(loaded):
    err = sqlstate(loaded, "SELECT flock.trace('no_such_model', ARRAY[1]::float4[])")
    assert err.pgcode == "42704" and err.diag.message_hint
    err = sqlstate(loaded, "SELECT flock.trace('iris_xgb', ARRAY[1, 2]::float4[])")
    assert err.pgcode == "22023" and "4 features" in err.diag.message_primary and err.diag.message_hint
    err = sqlstate(loaded, "SELECT flock.trace('iris_xgb', ROW(1, 2))")
    assert err.pgcode == "42703" and err.diag.message_hint
    err = sqlstate(loaded, "SELECT flock.trace(NULL::text, ARRAY[1]::float4[])")
    assert err.pgcode == "22004" and err.diag.message_hint
    for limit in (-1, ALL_VALUES + 1):
        err = sqlstate(loaded, f"SELECT flock.trace('iris_xgb', ARRAY[1, 2, 3, 4]::float4[], {limit})")
        assert err.pgcode == "22023" and "max_values" in err.diag.message_primary and err.diag.message_hint
    # A linear model has no missing-value semantics: NULL is refused as by predict.
    err = sqlstate(loaded, "SELECT flock.trace('diabetes_linreg', ARRAY[NULL, 1, 1, 1, 1, 1, 1, 1, 1, 1]::float4[])")
    assert err.pgcode == "22004" and err.diag.message_hint


def test_a_role_without_privilege_cannot_trace(loaded, connect_as):
    with loaded.cursor() as cur:
        cur.execute("DROP ROLE IF EXISTS trace_low")
        cur.execute("CREATE ROLE trace_low LOGIN")
    low = connect_as("trace_low")
    for ref in ("iris_xgb", "no_such_model"):  # hidden = missing: the same error for both
        err = sqlstate(low, f"SELECT flock.trace('{ref}', ARRAY[1, 2, 3, 4]::float4[])")
        assert err.pgcode == "42501" and err.diag.message_hint
    with loaded.cursor() as cur:
        cur.execute("SELECT flock.grant_model('iris_xgb', 'trace_low', 'use')")
    trace = one(low, "SELECT flock.trace('iris_xgb', ARRAY[1, 2, 3, 4]::float4[])")
    assert trace["prediction"]["label"] == one(low, "SELECT flock.predict_label('iris_xgb', ARRAY[1, 2, 3, 4]::float4[])")


def test_a_trace_under_an_audit_policy_is_recorded(loaded):
    """Tracing scores a row: a model with an audit policy records it like the prediction it shows."""
    with loaded.cursor() as cur:
        cur.execute("SELECT flock.set_audit('iris_xgb', 'all')")
        cur.execute("SELECT flock.set_audit('diabetes_gb', 'all')")
    try:
        before = one(loaded, "SELECT count(*) FROM flock.inference_log_rows WHERE model_name IN ('iris_xgb', 'diabetes_gb')")
        trace = one(loaded, "SELECT flock.trace('iris_xgb', ARRAY[5.1, 3.5, NULL, 0.2]::float4[], 0)")
        value = one(loaded, "SELECT flock.trace('diabetes_gb', t, 0) FROM diabetes t WHERE id = 7")
        assert one(loaded, "SELECT flock.audit_flush('60 seconds')") is True
        with loaded.cursor() as cur:
            cur.execute("SELECT model_name, function, input, output FROM flock.inference_log_rows "
                        "WHERE model_name IN ('iris_xgb', 'diabetes_gb') ORDER BY logged_at, row_no OFFSET %s",
                        (before,))
            logged = cur.fetchall()
        assert [r[:2] for r in logged] == [("iris_xgb", "predict_label"), ("diabetes_gb", "predict_tensor")]
        # The log keeps real inputs as real (printed as float4): the values the model saw.
        assert logged[0][2] == {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": None, "petal_width": 0.2}
        assert logged[0][3] == trace["prediction"]["label"]
        assert [_f32(v) for v in logged[1][3]] == [value["prediction"]["value"]]
    finally:
        with loaded.cursor() as cur:
            cur.execute("SELECT flock.set_audit('iris_xgb', 'off')")
            cur.execute("SELECT flock.set_audit('diabetes_gb', 'off')")
