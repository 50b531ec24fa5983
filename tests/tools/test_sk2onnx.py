"""Tests of the test-model tooling: tools/models/sk2onnx.py and make_models.py.

    /usr/bin/python3 -m pytest tests/tools

The exporter is validated independently of Flock's C++ runtime: every graph
passes onnx.checker and shape inference, tree ensembles are compared node by
node with the sklearn trees, and onnx_numpy.py (a test-only numpy interpreter
with ONNX Runtime semantics) evaluates the graphs against sklearn.
"""

import csv
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MODELS_DIR = os.path.join(REPO, "tools", "models")
sys.path.insert(0, HERE)
sys.path.insert(0, MODELS_DIR)

import onnx_numpy  # noqa: E402
import sk2onnx  # noqa: E402

from sklearn import datasets, ensemble, linear_model as lm, tree  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler  # noqa: E402

TOL = 1e-5
PYTHON = "/usr/bin/python3"


# --------------------------------------------------------------------------
# data and models


def _load(loader):
    X, y = loader(return_X_y=True)
    return X.astype(np.float32).astype(np.float64), y


DATA = {
    "breast_cancer": _load(datasets.load_breast_cancer),
    "iris": _load(datasets.load_iris),
    "wine": _load(datasets.load_wine),
    "diabetes": _load(datasets.load_diabetes),
}


def _mixed_data(n=240, seed=7):
    """Numeric columns with NaNs + two string columns; rows with region 'x'
    are kept out of training (unknown category at prediction time)."""
    rs = np.random.RandomState(seed)
    num = np.column_stack([rs.normal(40, 10, n), rs.normal(5, 2, n), rs.randint(0, 10, n)]).astype(np.float32)
    num[rs.uniform(size=n) < 0.1, 0] = np.nan
    num[rs.uniform(size=n) < 0.1, 1] = np.nan
    color = rs.choice(["red", "green", "blue"], n)
    region = rs.choice(["a", "b", "x"], n, p=[0.5, 0.4, 0.1])
    X = np.empty((n, 5), dtype=object)
    X[:, :3] = num.astype(np.float64)
    X[:, 3] = color
    X[:, 4] = region
    z = np.nan_to_num(num[:, 0] - 40) / 10 + (color == "red") - 0.5 * (region == "b")
    y = (z + rs.normal(0, 0.5, n) > 0).astype(np.int64)
    return X, y, region != "x"


MIXED_INPUTS = [("n1", "float"), ("n2", "float"), ("n3", "float"), ("color", "string"), ("region", "string")]


def _mixed_pipeline(final):
    ct = ColumnTransformer([
        ("mean", Pipeline([("imp", SimpleImputer(strategy="mean")), ("sc", StandardScaler())]), [0]),
        ("median", Pipeline([("imp", SimpleImputer(strategy="median")), ("sc", StandardScaler())]), [1]),
        ("const", SimpleImputer(strategy="constant", fill_value=-1.0), [2]),
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), [3, 4]),
    ])
    return Pipeline([("prep", ct), ("clf", final)])


RF = dict(n_estimators=7, max_depth=4, random_state=0, n_jobs=1)
GB = dict(n_estimators=8, max_depth=3, random_state=0)

# id -> (data set, estimator factory, convert kwargs)
CASES = {
    "linreg": ("diabetes", lambda: lm.LinearRegression(), {}),
    "ridge": ("diabetes", lambda: lm.Ridge(alpha=0.3), {}),
    "logreg_binary": ("breast_cancer", lambda: lm.LogisticRegression(max_iter=5000), {}),
    "logreg_binary_multinomial": ("breast_cancer",
                                  lambda: lm.LogisticRegression(multi_class="multinomial", max_iter=5000), {}),
    "logreg_multinomial": ("iris", lambda: lm.LogisticRegression(max_iter=2000), {}),
    "logreg_ovr": ("wine", lambda: lm.LogisticRegression(multi_class="ovr", solver="liblinear"), {}),
    "logreg_ovr_zipmap": ("iris", lambda: lm.LogisticRegression(multi_class="ovr", max_iter=2000),
                          {"zipmap": True}),
    "tree_clf_binary": ("breast_cancer", lambda: tree.DecisionTreeClassifier(max_depth=5, random_state=0), {}),
    "tree_clf_multi": ("iris", lambda: tree.DecisionTreeClassifier(max_depth=4, random_state=0), {}),
    "tree_reg": ("diabetes", lambda: tree.DecisionTreeRegressor(max_depth=5, random_state=0), {}),
    "rf_clf_binary": ("breast_cancer", lambda: ensemble.RandomForestClassifier(**RF), {}),
    "rf_clf_multi": ("wine", lambda: ensemble.RandomForestClassifier(**RF), {"zipmap": True}),
    "rf_reg": ("diabetes", lambda: ensemble.RandomForestRegressor(**RF), {}),
    "gb_clf_binary": ("breast_cancer", lambda: ensemble.GradientBoostingClassifier(**GB), {}),
    "gb_clf_multi": ("iris", lambda: ensemble.GradientBoostingClassifier(**GB), {}),
    "gb_clf_zero_init": ("wine", lambda: ensemble.GradientBoostingClassifier(init="zero", **GB), {}),
    "gb_reg": ("diabetes", lambda: ensemble.GradientBoostingRegressor(**GB), {}),
    "gb_reg_lad": ("diabetes", lambda: ensemble.GradientBoostingRegressor(loss="absolute_error", **GB), {}),
    "pipe_scaler_logreg": ("wine", lambda: Pipeline([("sc", StandardScaler()),
                                                    ("lr", lm.LogisticRegression(max_iter=2000))]), {}),
    "pipe_columns_logreg": ("mixed", lambda: _mixed_pipeline(lm.LogisticRegression(max_iter=2000)), {}),
    "pipe_columns_rf": ("mixed", lambda: _mixed_pipeline(ensemble.RandomForestClassifier(**RF)), {}),
    "pipe_columns_gb_zipmap": ("mixed", lambda: _mixed_pipeline(ensemble.GradientBoostingClassifier(**GB)),
                               {"zipmap": True}),
}


class Case:
    def __init__(self, cid):
        ds, factory, kwargs = CASES[cid]
        self.id, self.kwargs = cid, dict(kwargs)
        if ds == "mixed":
            X, y, train = _mixed_data()
            self.inputs = MIXED_INPUTS
            self.feeds = {name: X[:, [i]].astype(object if t == "string" else np.float32)
                          for i, (name, t) in enumerate(MIXED_INPUTS)}
        else:
            X, y = DATA[ds]
            train = np.ones(len(y), dtype=bool)
            self.inputs = [("input", X.shape[1])]
            self.feeds = {"input": X.astype(np.float32)}
        self.X, self.y = X, y
        self.est = factory()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.est.fit(X[train], y[train])
        self.model = sk2onnx.convert(self.est, self.inputs, **self.kwargs)

    @property
    def final(self):
        return self.est.steps[-1][1] if isinstance(self.est, Pipeline) else self.est

    @property
    def is_classifier(self):
        return hasattr(self.final, "classes_")


_cache = {}


@pytest.fixture(params=sorted(CASES))
def case(request):
    if request.param not in _cache:
        _cache[request.param] = Case(request.param)
    return _cache[request.param]


def _proba(case, out):
    p = out["probabilities"]
    if case.kwargs.get("zipmap"):
        return np.array([[row[c] for c in case.final.classes_] for row in p])
    return np.asarray(p, dtype=np.float64)


# --------------------------------------------------------------------------
# graph validity


def _without_zipmap(model):
    """The graph up to the ZipMap's input: onnx 1.12 cannot shape-infer map types
    (onnx/onnx#5188), so strict inference is checked on this part."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    (zm,) = [n for n in m.graph.node if n.op_type == "ZipMap"]
    m.graph.node.remove(zm)
    del m.graph.output[1]
    m.graph.output.append(helper.make_tensor_value_info(zm.input[0], TensorProto.FLOAT, ["N", None]))
    kept = [vi for vi in m.graph.value_info if vi.name != zm.input[0]]
    del m.graph.value_info[:]
    m.graph.value_info.extend(kept)
    return m


def test_checker_and_shape_inference(case):
    model = case.model
    zipmap = case.kwargs.get("zipmap", False)
    onnx.checker.check_model(model)
    strict = _without_zipmap(model) if zipmap else model
    onnx.checker.check_model(strict, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(strict, check_type=True, strict_mode=True)
    assert {o.name for o in inferred.graph.output} == {o.name for o in strict.graph.output}
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets == {"": 15, "ai.onnx.ml": 1}


def test_outputs_and_inputs(case):
    g = case.model.graph
    assert [(i.name, i.type.tensor_type.elem_type) for i in g.input] == [
        (n, TensorProto.STRING if t == "string" else TensorProto.FLOAT) for n, t in case.inputs]
    for i, (n, t) in zip(g.input, case.inputs):
        dims = [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim]
        assert dims == ["N", t if isinstance(t, int) else 1]
    outs = {o.name: o.type for o in g.output}
    if not case.is_classifier:
        assert list(outs) == ["variable"]
        t = outs["variable"].tensor_type
        assert t.elem_type == TensorProto.FLOAT
        assert [d.dim_value or d.dim_param for d in t.shape.dim] == ["N", 1]
        return
    assert list(outs) == ["label", "probabilities"]
    assert outs["label"].tensor_type.elem_type == TensorProto.INT64
    assert [d.dim_param for d in outs["label"].tensor_type.shape.dim] == ["N"]
    n_classes = len(case.final.classes_)
    if case.kwargs.get("zipmap"):
        m = outs["probabilities"].sequence_type.elem_type.map_type
        assert m.key_type == TensorProto.INT64
        assert m.value_type.tensor_type.elem_type == TensorProto.FLOAT
        zm = [n for n in g.node if n.op_type == "ZipMap"][0]
        assert helper.get_attribute_value(zm.attribute[0]) == list(case.final.classes_)
    else:
        t = outs["probabilities"].tensor_type
        assert t.elem_type == TensorProto.FLOAT
        assert [d.dim_value or d.dim_param for d in t.shape.dim] == ["N", n_classes]


def test_only_runtime_ops(case):
    allowed = {"LinearRegressor", "LinearClassifier", "TreeEnsembleRegressor", "TreeEnsembleClassifier",
               "Scaler", "Normalizer", "Imputer", "OneHotEncoder", "LabelEncoder", "Binarizer",
               "ArrayFeatureExtractor", "FeatureVectorizer", "ZipMap", "Cast", "Concat", "Identity",
               "Reshape", "Add", "Sub", "Mul", "Div", "MatMul", "Gemm", "Sigmoid", "Softmax", "ArgMax",
               "Relu", "Tanh"}
    assert {n.op_type for n in case.model.graph.node} <= allowed


# --------------------------------------------------------------------------
# numerical agreement with sklearn (numpy interpreter, not the product)


def test_matches_sklearn(case):
    out = onnx_numpy.run(case.model, case.feeds)
    X = case.X
    if case.is_classifier:
        np.testing.assert_allclose(_proba(case, out), case.est.predict_proba(X), rtol=0, atol=TOL)
        np.testing.assert_array_equal(out["label"].astype(np.int64), case.est.predict(X))
    else:
        ref = case.est.predict(X)
        assert out["variable"].shape == (len(ref), 1)
        np.testing.assert_allclose(out["variable"][:, 0], ref, rtol=TOL, atol=TOL)


def test_serialization_round_trip(case, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(case.model, str(path))
    again = onnx.load(str(path))
    assert again.SerializeToString() == case.model.SerializeToString()
    # deterministic: converting again gives the same bytes
    assert sk2onnx.convert(case.est, case.inputs, **case.kwargs).SerializeToString() == \
        case.model.SerializeToString()


# --------------------------------------------------------------------------
# tree structure, node by node


def _tree_attrs(model):
    (node,) = [n for n in model.graph.node if n.op_type.startswith("TreeEnsemble")]
    return node.op_type, {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _sk_trees(est):
    """[(tree, tree weight, class id or None)] in ONNX tree-id order."""
    if isinstance(est, (ensemble.GradientBoostingClassifier, ensemble.GradientBoostingRegressor)):
        k = est.estimators_.shape[1]
        return [(est.estimators_[s, c].tree_, est.learning_rate, c if k > 1 else 0)
                for s in range(est.estimators_.shape[0]) for c in range(k)]
    if hasattr(est, "estimators_"):
        return [(t.tree_, 1.0 / len(est.estimators_), None) for t in est.estimators_]
    return [(est.tree_, 1.0, None)]


TREE_CASES = [c for c in sorted(CASES) if c.startswith(("tree", "rf", "gb"))]


@pytest.mark.parametrize("cid", TREE_CASES)
def test_tree_structure(cid):
    if cid not in _cache:
        _cache[cid] = Case(cid)
    case = _cache[cid]
    est = case.final
    op, a = _tree_attrs(case.model)
    prefix = "class" if op == "TreeEnsembleClassifier" else "target"
    trees = _sk_trees(est)
    tree_ids = np.array(a["nodes_treeids"])
    assert sorted(set(tree_ids)) == list(range(len(trees)))
    n_classes = len(est.classes_) if prefix == "class" else 1
    for tid, (tr, weight, gb_class) in enumerate(trees):
        sel = np.flatnonzero(tree_ids == tid)
        assert len(sel) == tr.node_count
        assert [a["nodes_nodeids"][k] for k in sel] == list(range(tr.node_count))
        for k, i in zip(sel, range(tr.node_count)):
            mode = a["nodes_modes"][k].decode()
            if tr.children_left[i] == -1:
                assert mode == "LEAF"
                w = {cl: v for t_, n_, cl, v in zip(a[prefix + "_treeids"], a[prefix + "_nodeids"],
                                                     a[prefix + "_ids"], a[prefix + "_weights"])
                     if t_ == tid and n_ == i}
                value = tr.value[i][0]
                if gb_class is not None:  # gradient boosting: learning_rate * leaf value
                    expect = {gb_class: weight * value[0]}
                elif prefix == "target":
                    expect = {0: weight * value[0]}
                else:
                    probs = value / value.sum()
                    expect = {0: weight * probs[1]} if n_classes == 2 else \
                        {c: weight * probs[c] for c in range(n_classes)}
                assert set(w) == set(expect)
                for cl in w:
                    assert w[cl] == pytest.approx(np.float32(expect[cl]), rel=1e-6, abs=1e-9)
            else:
                assert mode == "BRANCH_LEQ"
                assert a["nodes_featureids"][k] == tr.feature[i]
                assert a["nodes_truenodeids"][k] == tr.children_left[i]
                assert a["nodes_falsenodeids"][k] == tr.children_right[i]
                thr = np.float32(a["nodes_values"][k])
                t64 = tr.threshold[i]
                # largest float32 <= sklearn's threshold
                assert float(thr) <= t64 < float(np.nextafter(thr, np.float32(np.inf)))
    if isinstance(est, (ensemble.GradientBoostingClassifier, ensemble.GradientBoostingRegressor)):
        raw0 = est._raw_predict_init(np.zeros((1, est.n_features_in_), dtype=np.float32)).ravel()
        np.testing.assert_allclose(a["base_values"], raw0, rtol=1e-6)
        expected_post = "NONE" if prefix == "target" else ("LOGISTIC" if n_classes == 2 else "SOFTMAX")
        assert a["post_transform"].decode() == expected_post
    else:
        assert "base_values" not in a
        assert a["post_transform"].decode() == "NONE"
    if prefix == "class":
        assert a["classlabels_int64s"] == [int(c) for c in est.classes_]


def test_float32_threshold():
    rs = np.random.RandomState(0)
    for t in np.concatenate([rs.normal(0, 100, 2000), rs.normal(0, 1e-3, 2000), [0.0, -0.0, 1.5, 1e30]]):
        f = np.float32(sk2onnx.float32_threshold(t))
        assert float(f) <= t < float(np.nextafter(f, np.float32(np.inf)))


def test_threshold_rounding_keeps_sklearn_branches():
    # float32 neighbours whose float64 midpoint rounds *up* to the larger one
    # (ties to even): a nearest-rounded float32 threshold would send x_hi down
    # the left branch.  (Near 1000 the float32 spacing exceeds sklearn's 1e-7
    # FEATURE_THRESHOLD, so the tree does split there.)
    x_lo = np.nextafter(np.float32(1000.0), np.float32(np.inf))
    x_hi = np.nextafter(x_lo, np.float32(np.inf))
    X = np.array([[x_lo], [x_hi]] * 4, dtype=np.float64)
    y = np.array([0, 1] * 4)
    est = tree.DecisionTreeClassifier().fit(X, y)
    t64 = est.tree_.threshold[0]
    assert np.float32(t64) == x_hi  # the naive conversion would be wrong
    model = sk2onnx.convert(est, [("input", 1)])
    _, a = _tree_attrs(model)
    assert np.float32(a["nodes_values"][0]) == x_lo
    out = onnx_numpy.run(model, {"input": X.astype(np.float32)})
    np.testing.assert_array_equal(out["label"], est.predict(X))


# --------------------------------------------------------------------------
# graph conventions


def test_binary_logistic_regression_layout():
    X, y = DATA["breast_cancer"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = lm.LogisticRegression(max_iter=200).fit(X, y)
    model = sk2onnx.convert(est, [("input", X.shape[1])])
    (node,) = model.graph.node
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    coef = np.array(a["coefficients"]).reshape(2, -1)
    np.testing.assert_allclose(coef[1], est.coef_[0], rtol=1e-6)
    np.testing.assert_allclose(coef[0], -est.coef_[0], rtol=1e-6)
    np.testing.assert_allclose(a["intercepts"], [-est.intercept_[0], est.intercept_[0]], rtol=1e-6)
    assert a["post_transform"] == b"LOGISTIC"
    assert a["classlabels_ints"] == [0, 1]


def test_ovr_uses_l1_normalizer():
    case = _cache.get("logreg_ovr") or Case("logreg_ovr")
    ops = [n.op_type for n in case.model.graph.node]
    assert ops == ["LinearClassifier", "Normalizer"]


def test_string_class_labels():
    X, y = DATA["iris"]
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    est = tree.DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, names)
    model = sk2onnx.convert(est, [("input", 4)], zipmap=True)
    outs = {o.name: o.type for o in model.graph.output}
    assert outs["label"].tensor_type.elem_type == TensorProto.STRING
    assert outs["probabilities"].sequence_type.elem_type.map_type.key_type == TensorProto.STRING
    out = onnx_numpy.run(model, {"input": X.astype(np.float32)})
    np.testing.assert_array_equal(out["label"], est.predict(X))


def test_feature_names_metadata():
    X, y = DATA["diabetes"]
    est = lm.LinearRegression().fit(X, y)
    names = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    with_names = sk2onnx.convert(est, [("input", 10)], feature_names=names)
    props = {p.key: p.value for p in with_names.metadata_props}
    assert json.loads(props["feature_names"]) == names
    without = sk2onnx.convert(est, [("input", 10)])
    assert "feature_names" not in {p.key for p in without.metadata_props}
    with pytest.raises(sk2onnx.ConversionError, match="feature_names"):
        sk2onnx.convert(est, [("input", 10)], feature_names=names[:3])


def test_vector_input_column_transformer():
    """A ColumnTransformer over one vector input selects with ArrayFeatureExtractor."""
    X, y = DATA["wine"]
    est = Pipeline([
        ("ct", ColumnTransformer([("sc", StandardScaler(), [0, 2, 5]),
                                  ("imp", SimpleImputer(strategy="median"), [7, 8])],
                                 remainder="passthrough")),
        ("lr", lm.LogisticRegression(max_iter=3000)),
    ])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    model = sk2onnx.convert(est, [("input", X.shape[1])])
    onnx.checker.check_model(model, full_check=True)
    assert "ArrayFeatureExtractor" in {n.op_type for n in model.graph.node}
    out = onnx_numpy.run(model, {"input": X.astype(np.float32)})
    np.testing.assert_allclose(out["probabilities"], est.predict_proba(X), atol=TOL)


# --------------------------------------------------------------------------
# errors


def test_unsupported_estimator_is_a_clear_error():
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    X, y = DATA["iris"]
    for est in (SVC().fit(X, y), KNeighborsClassifier().fit(X, y)):
        with pytest.raises(sk2onnx.ConversionError, match="unsupported estimator %s" % type(est).__name__):
            sk2onnx.convert(est, [("input", 4)])
    pipe = Pipeline([("mm", MinMaxScaler()), ("lr", lm.LogisticRegression())]).fit(X, y)
    with pytest.raises(sk2onnx.ConversionError, match="unsupported transformer MinMaxScaler"):
        sk2onnx.convert(pipe, [("input", 4)])


def test_input_errors():
    X, y = DATA["iris"]
    est = lm.LogisticRegression(max_iter=1000).fit(X, y)
    with pytest.raises(sk2onnx.ConversionError, match="expects 4 features but receives 3"):
        sk2onnx.convert(est, [("input", 3)])
    with pytest.raises(sk2onnx.ConversionError, match="string column"):
        sk2onnx.convert(est, [("a", "float"), ("b", "float"), ("c", "float"), ("d", "string")])
    with pytest.raises(sk2onnx.ConversionError, match="expected a feature count"):
        sk2onnx.convert(est, [("input", "complex")])
    with pytest.raises(sk2onnx.ConversionError, match="zipmap"):
        sk2onnx.convert(lm.LinearRegression().fit(X, y), [("input", 4)], zipmap=True)


def test_unsupported_options():
    X, y, train = _mixed_data()
    ohe = ColumnTransformer([("cat", OneHotEncoder(drop="first", sparse_output=False), [3])])
    pipe = Pipeline([("ct", ohe), ("lr", lm.LogisticRegression())]).fit(X, y)
    with pytest.raises(sk2onnx.ConversionError, match="drop"):
        sk2onnx.convert(pipe, MIXED_INPUTS)
    Xd, yd = DATA["diabetes"]
    gb = ensemble.GradientBoostingRegressor(init=lm.LinearRegression(), n_estimators=2).fit(Xd, yd)
    with pytest.raises(sk2onnx.ConversionError, match="init estimator"):
        sk2onnx.convert(gb, [("input", 10)])


# --------------------------------------------------------------------------
# make_models.py


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    t0 = time.time()
    subprocess.run([PYTHON, os.path.join(MODELS_DIR, "make_models.py"), "--out", str(out)],
                   check=True, capture_output=True, text=True)
    return out, time.time() - t0


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_make_models_manifest(generated):
    out, elapsed = generated
    assert elapsed < 60
    manifest = json.loads((out / "manifest.json").read_text())
    data = json.loads((out / "datasets.json").read_text())
    assert isinstance(manifest, list) and len(manifest) >= 20
    names = [e["name"] for e in manifest]
    assert len(set(names)) == len(names)
    listed = {e["file"] for e in manifest} | {d["file"] for d in data.values()} | {"manifest.json", "datasets.json"}
    assert set(os.listdir(out)) == listed
    assert {"breast_cancer", "diabetes", "iris", "wine", "customers"} <= set(data)

    kinds = set()
    for e in manifest:
        assert e["format"] in ("onnx", "xgboost") and e["task"] in ("regression", "classification")
        info = data[e["dataset"]]
        assert e["table"] == info["table"] and e["csv"] == info["file"]
        rows = _read_csv(out / info["file"])
        header = list(rows[0])
        assert header[0] == "id" and header[-1] == "target"
        assert [c["name"] for c in info["columns"]] == header
        assert set(e["features"]) <= set(header[1:-1])
        assert len(rows) == info["rows"]
        assert list(e["expected"]) == [r["id"] for r in rows]
        for v in e["expected"].values():
            if e["task"] == "regression":
                assert set(v) == {"value"}
            else:
                assert set(v) == {"label", "proba"}
                assert len(v["proba"]) == len(e["classes"]) and v["label"] in e["classes"]
                assert abs(sum(v["proba"]) - 1) < 1e-5
        if e["format"] == "onnx":
            model = onnx.load(str(out / e["file"]))
            onnx.checker.check_model(model)
            props = {p.key: p.value for p in model.metadata_props}
            assert ("feature_names" in props) == e["has_feature_names"]
            if e["has_feature_names"]:
                assert json.loads(props["feature_names"]) == e["features"]
            assert [i.name for i in model.graph.input] == list(e["inputs"])
            assert sum((e["inputs"].values()), []) == e["features"]
            kinds.add(("onnx", e["has_feature_names"], len(e["inputs"]) > 1, e.get("zipmap", False)))
        else:
            import xgboost as xgb

            booster = xgb.Booster(model_file=str(out / e["file"]))
            assert booster.feature_names == e["features"]
            assert e["inputs"] is None
            kinds.add(("xgboost", e["objective"]))
    # the variety the SQL fidelity tests rely on
    assert ("onnx", True, False, False) in kinds and ("onnx", False, False, False) in kinds
    assert any(k[0] == "onnx" and k[2] for k in kinds)  # per-column inputs
    assert any(k[0] == "onnx" and k[3] for k in kinds)  # zipmap
    assert {("xgboost", o) for o in ("reg:squarederror", "binary:logistic", "multi:softprob")} <= kinds


def _feeds(e, rows):
    feeds = {}
    for name, cols in e["inputs"].items():
        if e["input_types"][name] == "string":
            feeds[name] = np.array([[r[c] for c in cols] for r in rows], dtype=object)
        else:
            feeds[name] = np.array([[float(r[c]) if r[c] != "" else np.nan for c in cols] for r in rows],
                                   dtype=np.float32)
    return feeds


def test_make_models_expected_values_follow_from_the_files(generated):
    """The manifest's oracle, recomputed from the written files alone: ONNX with
    the numpy interpreter, XGBoost with xgboost on the CSV rows."""
    import xgboost as xgb

    out, _ = generated
    manifest = json.loads((out / "manifest.json").read_text())
    csvs = {}
    for e in manifest:
        rows = csvs.setdefault(e["csv"], _read_csv(out / e["csv"]))
        ids = [r["id"] for r in rows]
        if e["format"] == "onnx":
            got = onnx_numpy.run(onnx.load(str(out / e["file"])), _feeds(e, rows))
            if e["task"] == "regression":
                values = got["variable"][:, 0]
            else:
                labels = got["label"]
                proba = got["probabilities"]
                if e["zipmap"]:
                    proba = [[m[c] for c in e["classes"]] for m in proba]
                proba = np.asarray(proba, dtype=np.float64)
        else:
            X = np.array([[float(r[c]) if r[c] != "" else np.nan for c in e["features"]] for r in rows],
                         dtype=np.float32)
            booster = xgb.Booster(model_file=str(out / e["file"]))
            pred = booster.predict(xgb.DMatrix(X, feature_names=e["features"]))
            if e["task"] == "regression":
                values = pred
            else:
                proba = np.column_stack([1 - pred, pred]) if pred.ndim == 1 else pred
                labels = proba.argmax(axis=1)
        if e["task"] == "regression":
            exp = np.array([e["expected"][i]["value"] for i in ids])
            np.testing.assert_allclose(values, exp, rtol=TOL, atol=TOL, err_msg=e["name"])
        else:
            exp = np.array([e["expected"][i]["proba"] for i in ids])
            np.testing.assert_allclose(proba, exp, atol=TOL, err_msg=e["name"])
            np.testing.assert_array_equal(np.asarray(labels, dtype=np.int64),
                                          [e["expected"][i]["label"] for i in ids], err_msg=e["name"])


def test_make_models_csv_numbers_are_float32_exact(generated):
    out, _ = generated
    data = json.loads((out / "datasets.json").read_text())
    for info in data.values():
        real = [c["name"] for c in info["columns"] if c["type"] == "real"]
        rows = _read_csv(out / info["file"])
        missing = {c: 0 for c in real}
        for r in rows:
            for c in real:
                if r[c] == "":
                    missing[c] += 1
                    continue
                f = np.float32(r[c])
                assert np.float32(float(r[c])) == f
                assert np.format_float_positional(f, unique=True, trim="-") == r[c]
        assert {c: n for c, n in missing.items() if n} == info["missing_values"]
    assert data["customers"]["missing_values"]  # the imputer / NaN case exists


def test_make_models_is_deterministic(generated, tmp_path):
    out, _ = generated
    subprocess.run([PYTHON, os.path.join(MODELS_DIR, "make_models.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for name in sorted(os.listdir(out)):
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes(), name
