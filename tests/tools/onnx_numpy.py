"""A tiny pure-numpy interpreter for the ONNX-ML graphs that tools/models/sk2onnx.py writes.

TEST ORACLE ONLY -- not used by the product.  It validates the exporter
independently of Flock's C++ runtime: run an exported graph on a few rows and
compare with sklearn.  Semantics follow ONNX Runtime's CPU kernels, including
TreeEnsembleClassifier's "binary case" (two class labels, one class id):
scores ``[1-s, s]`` when every class weight is >= 0, ``[f(-s), f(s)]``
otherwise.  Arithmetic is float64 on float32 inputs/attributes, so the only
differences from sklearn are float32 rounding of the stored parameters.
"""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

_NP = {
    TensorProto.FLOAT: np.float32,
    TensorProto.DOUBLE: np.float64,
    TensorProto.INT64: np.int64,
    TensorProto.STRING: object,
}


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _post(scores, how):
    if how == "NONE":
        return scores
    if how == "LOGISTIC":
        return _sigmoid(scores)
    if how == "SOFTMAX":
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise NotImplementedError(how)


def _as_str(v):
    return v.decode() if isinstance(v, bytes) else v


def _linear_classifier(x, a):
    n_classes = len(a["intercepts"])
    coef = np.asarray(a["coefficients"], dtype=np.float64).reshape(n_classes, -1)
    scores = x.astype(np.float64) @ coef.T + np.asarray(a["intercepts"], dtype=np.float64)
    labels = [_as_str(v) for v in (a.get("classlabels_ints") or a.get("classlabels_strings"))]
    if n_classes == 1:
        raise NotImplementedError("single-row LinearClassifier")
    lab = np.array([labels[i] for i in scores.argmax(axis=1)])
    return lab, _post(scores, a.get("post_transform", b"NONE").decode()).astype(np.float64)


def _linear_regressor(x, a):
    targets = a.get("targets", 1)
    coef = np.asarray(a["coefficients"], dtype=np.float64).reshape(targets, -1)
    inter = np.asarray(a.get("intercepts", [0.0] * targets), dtype=np.float64)
    return (x.astype(np.float64) @ coef.T + inter,)


class _Trees:
    """Parsed nodes_* attributes: per tree a dict node id -> node tuple."""

    def __init__(self, a, prefix):
        self.trees = {}
        modes = [m.decode() for m in a["nodes_modes"]]
        missing = a.get("nodes_missing_value_tracks_true") or [0] * len(modes)
        for k in range(len(modes)):
            t = a["nodes_treeids"][k]
            self.trees.setdefault(t, {})[a["nodes_nodeids"][k]] = (
                modes[k], a["nodes_featureids"][k], np.float32(a["nodes_values"][k]),
                a["nodes_truenodeids"][k], a["nodes_falsenodeids"][k], missing[k])
        self.leaves = {}
        for k in range(len(a[prefix + "_weights"])):
            key = (a[prefix + "_treeids"][k], a[prefix + "_nodeids"][k])
            self.leaves.setdefault(key, []).append((a[prefix + "_ids"][k], float(np.float32(a[prefix + "_weights"][k]))))

    def leaf(self, t, row):
        nodes = self.trees[t]
        nid = 0 if 0 in nodes else min(nodes)
        while True:
            mode, f, thr, tr, fa, miss = nodes[nid]
            if mode == "LEAF":
                return nid
            v = np.float32(row[f])
            if np.isnan(v):
                go = bool(miss)
            elif mode == "BRANCH_LEQ":
                go = v <= thr
            elif mode == "BRANCH_LT":
                go = v < thr
            elif mode == "BRANCH_GTE":
                go = v >= thr
            elif mode == "BRANCH_GT":
                go = v > thr
            elif mode == "BRANCH_EQ":
                go = v == thr
            else:
                go = v != thr
            nid = tr if go else fa

    def sums(self, row, n_out):
        score = np.zeros(n_out)
        has = np.zeros(n_out, dtype=bool)
        for t in sorted(self.trees):
            for i, w in self.leaves.get((t, self.leaf(t, row)), []):
                score[i] += w
                has[i] = True
        return score, has


def _tree_regressor(x, a):
    if a.get("aggregate_function", b"SUM") != b"SUM":
        raise NotImplementedError("aggregate_function")
    trees = _Trees(a, "target")
    n = a.get("n_targets", 1)
    base = np.asarray(a.get("base_values") or [0.0] * n, dtype=np.float64)
    out = np.array([trees.sums(row, n)[0] for row in x]) + base
    return (_post(out, a.get("post_transform", b"NONE").decode()),)


def _tree_classifier(x, a):
    trees = _Trees(a, "class")
    labels = [_as_str(v) for v in (a.get("classlabels_int64s") or a.get("classlabels_strings"))]
    n = len(labels)
    post = a.get("post_transform", b"NONE").decode()
    base = list(a.get("base_values") or [])
    class_ids = set(a["class_ids"])
    binary_case = n == 2 and len(class_ids) == 1
    all_positive = all(w >= 0 for w in a["class_weights"])
    out_labels, out_scores = [], []
    for row in x:
        score, has = trees.sums(row, n)
        if n > 2:
            for k, bv in enumerate(base):
                score[k] += bv
                has[k] = True
            best = max((k for k in range(n) if has[k]), key=lambda k: (score[k], -k))
            out_labels.append(labels[best])
            out_scores.append(_post(score[None, :], post)[0])
            continue
        # ONNX Runtime's two-label path (TreeAggregatorClassifier::FinalizeScores)
        if len(base) == 2:
            raise NotImplementedError("two base_values in the binary case")
        if len(base) == 1:
            score[0] += base[0]
        scores = list(score) if has[1] else [score[0]]
        pos = score[1] if has[1] else (score[0] if has[0] else 0.0)
        if binary_case and all_positive:
            label, extra = (labels[1], 0) if pos > 0.5 else (labels[0], 1)
        elif binary_case:
            label, extra = (labels[1], 2) if pos > 0 else (labels[0], 3)
        else:
            label, extra = (labels[1], -1) if pos > 0 else (labels[0], -1)
        if len(scores) == 2:
            s = _post(np.array([scores]), post)[0]
        elif extra in (0, 1):
            s = np.array([1.0 - scores[0], scores[0]])
        elif post == "LOGISTIC":
            s = np.array([_sigmoid(-scores[0]), _sigmoid(scores[0])])
        elif extra == 2:
            s = np.array([-scores[0], scores[0]])
        else:
            s = np.array([scores[0], -scores[0]])
        out_labels.append(label)
        out_scores.append(s)
    return np.array(out_labels), np.array(out_scores)


def _one_hot(x, a):
    if "cats_strings" in a:
        cats = [_as_str(c) for c in a["cats_strings"]]
        vals = [_as_str(v) for v in x.ravel()]
    else:
        cats = list(a["cats_int64s"])
        vals = [int(v) for v in x.ravel()]
    out = np.zeros((len(vals), len(cats)))
    for r, v in enumerate(vals):
        if v in cats:
            out[r, cats.index(v)] = 1.0
        elif not a.get("zeros", 1):
            raise ValueError("unknown category %r" % v)
    return (out.reshape(x.shape + (len(cats),)),)


def _imputer(x, a):
    vals = np.asarray(a["imputed_value_floats"], dtype=np.float64)
    rep = a.get("replaced_value_float", 0.0)
    x = x.astype(np.float64).copy()
    mask = np.isnan(x) if np.isnan(rep) else (x == rep)
    x[mask] = np.broadcast_to(vals, x.shape)[mask]
    return (x,)


def _normalizer(x, a):
    norm = a["norm"].decode()
    if norm == "L1":
        return (x / np.abs(x).sum(axis=1, keepdims=True),)
    if norm == "L2":
        return (x / np.sqrt((x * x).sum(axis=1, keepdims=True)),)
    return (x / np.abs(x).max(axis=1, keepdims=True),)


def _zipmap(x, a):
    labels = [_as_str(v) for v in (a.get("classlabels_int64s") or a.get("classlabels_strings"))]
    return ([dict(zip(labels, row.tolist())) for row in x],)


def run(model, feeds):
    """Evaluates ``model`` on ``feeds`` (input name -> array); returns output name -> value."""
    env = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for inp in model.graph.input:
        arr = np.asarray(feeds[inp.name])
        env[inp.name] = arr.astype(_NP[inp.type.tensor_type.elem_type])
    for node in model.graph.node:
        a = _attrs(node)
        xs = [env[i] for i in node.input]
        op = node.op_type
        if op == "LinearClassifier":
            res = _linear_classifier(xs[0], a)
        elif op == "LinearRegressor":
            res = _linear_regressor(xs[0], a)
        elif op == "TreeEnsembleRegressor":
            res = _tree_regressor(xs[0], a)
        elif op == "TreeEnsembleClassifier":
            res = _tree_classifier(xs[0], a)
        elif op == "Scaler":
            off = np.asarray(a.get("offset", [0.0]), dtype=np.float64)
            sc = np.asarray(a.get("scale", [1.0]), dtype=np.float64)
            res = ((xs[0].astype(np.float64) - off) * sc,)
        elif op == "Imputer":
            res = _imputer(xs[0], a)
        elif op == "OneHotEncoder":
            res = _one_hot(xs[0], a)
        elif op == "Normalizer":
            res = _normalizer(xs[0], a)
        elif op == "ZipMap":
            res = _zipmap(xs[0], a)
        elif op == "ArrayFeatureExtractor":
            res = (np.take(xs[0], xs[1].ravel(), axis=-1),)
        elif op == "Concat":
            res = (np.concatenate([v.astype(np.float64) for v in xs], axis=a["axis"]),)
        elif op == "Reshape":
            res = (xs[0].reshape(tuple(int(d) for d in xs[1])),)
        elif op == "Cast":
            res = (xs[0].astype(_NP[a["to"]]),)
        elif op == "Identity":
            res = (xs[0],)
        else:
            raise NotImplementedError(op)
        for name, val in zip(node.output, res):
            env[name] = val
    return {o.name: env[o.name] for o in model.graph.output}
