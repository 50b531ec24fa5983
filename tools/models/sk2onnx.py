"""sk2onnx -- a small, dependency-light scikit-learn -> ONNX-ML exporter.

Flock's test models are produced with this module instead of skl2onnx (which is
not available here).  The graphs it writes follow sklearn-onnx's shapes and
conventions so that a runtime that scores skl2onnx models also scores these:

* classifiers output ``label`` (int64 [N], or string [N] for string classes)
  and ``probabilities`` (float [N, C]; a ZipMap ``seq(map(label, float))``
  when ``zipmap=True``);
* regressors output ``variable`` (float [N, 1]);
* LogisticRegression -> LinearClassifier.  Binary models are written with two
  coefficient rows ``[-w, w]`` / ``[-b, b]``; one-vs-rest models use
  ``post_transform=LOGISTIC`` (multiclass: followed by an L1 Normalizer, as
  sklearn normalises OvR probabilities), multinomial models use ``SOFTMAX``;
* trees -> TreeEnsembleRegressor / TreeEnsembleClassifier (ai.onnx.ml v1) with
  sklearn's node numbering, ``BRANCH_LEQ`` nodes and float32 thresholds rounded
  *down* (largest float32 <= sklearn's float64 threshold, so ``x <= t32`` is
  exactly sklearn's ``float32(x) <= t64``).  Classifier leaves carry class
  proportions; RandomForest divides them by the number of trees (SUM of
  weights == average of the trees).  For *binary* classifiers only the
  positive-class weight is written, with class id 0 -- the ONNX Runtime
  "binary case" (one class id, two labels): scores are ``[1-s, s]`` when all
  weights are >= 0 (trees / forests) and ``[f(-s), f(s)]`` otherwise (gradient
  boosting, f = logistic);
* GradientBoosting: weights are ``learning_rate * leaf value``; the init
  estimator's constant raw prediction becomes ``base_values``; binary uses
  ``post_transform=LOGISTIC``, multiclass ``SOFTMAX`` (tree ``i*C + c`` holds
  stage i, class c);
* StandardScaler -> Scaler (offset = mean, scale = 1/std), SimpleImputer
  (numeric) -> Imputer, OneHotEncoder -> one OneHotEncoder per column
  (``zeros=1`` for handle_unknown='ignore') + Reshape [N, C], ColumnTransformer
  -> column selection (ArrayFeatureExtractor on a vector input, or the named
  per-column inputs) + Concat of the transformer outputs.

Usage::

    model = convert(pipeline, [("age", "float"), ("plan", "string")],
                    feature_names=["age", "plan"])
    model = convert(clf, [("input", 30)], zipmap=True)
    onnx.save(model, "m.onnx")
"""

import json

import numpy as np
import onnx
from onnx import TensorProto, helper

__all__ = ["convert", "ConversionError", "float32_threshold"]

ML_DOMAIN = "ai.onnx.ml"
PRODUCER = "flock-sk2onnx"
PRODUCER_VERSION = "0.1"

_INPUT_TYPES = {
    "float": TensorProto.FLOAT,
    "double": TensorProto.DOUBLE,
    "int64": TensorProto.INT64,
    "string": TensorProto.STRING,
}


class ConversionError(ValueError):
    """Raised for estimators, options or inputs this exporter does not support."""


def float32_threshold(t):
    """Largest float32 <= t (as a Python float).

    sklearn trees compare ``float32(x) <= t`` with a float64 ``t``; with
    ``t32 = float32_threshold(t)`` the float32 comparison ``x <= t32`` takes
    exactly the same branch for every float32 ``x``.
    """
    f = np.float32(t)
    if float(f) > float(t):
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


# --------------------------------------------------------------------------
# graph builder


class _Builder:
    def __init__(self):
        self.nodes = []
        self.initializers = []
        self.value_infos = []  # types of intermediates ONNX cannot infer
        self._names = set()

    def fresh(self, base):
        name, i = base, 1
        while name in self._names:
            name = "%s_%d" % (base, i)
            i += 1
        self._names.add(name)
        return name

    def reserve(self, name):
        if name in self._names:
            raise ConversionError("duplicate name %r" % name)
        self._names.add(name)
        return name

    def node(self, op_type, inputs, outputs, domain="", **attrs):
        """Adds a node and returns its output names.  Each output is either a
        base name (made unique) or ``"@name"``: ``name`` verbatim, for names
        reserved beforehand (graph outputs)."""
        outs = []
        for o in outputs:
            outs.append(o[1:] if o.startswith("@") else self.fresh(o))
        self.nodes.append(
            helper.make_node(
                op_type, list(inputs), outs, name=self.fresh(op_type), domain=domain, **attrs
            )
        )
        return outs

    def typed(self, name, elem_type, width, rank3=False):
        """Declares intermediate ``name`` as [N, width] (or [N, 1, width]): onnx
        1.12 infers no types for most ai.onnx.ml ops, and strict shape
        inference (checker full_check) needs them downstream."""
        dims = ["N", 1, width] if rank3 else ["N", width]
        self.value_infos.append(helper.make_tensor_value_info(name, elem_type, dims))
        return name

    def const(self, base, array, dtype):
        name = self.fresh(base)
        arr = np.asarray(array)
        self.initializers.append(
            helper.make_tensor(name, dtype, list(arr.shape), arr.ravel().tolist())
        )
        return name


class _Seg:
    """A 2-D tensor of the graph holding `width` consecutive feature columns."""

    def __init__(self, name, elem_type, width):
        self.name, self.elem_type, self.width = name, elem_type, width

    def __repr__(self):
        return "_Seg(%r, %s, %d)" % (self.name, self.elem_type, self.width)


def _total_width(segs):
    return sum(s.width for s in segs)


def _select(b, segs, indices):
    """Columns ``indices`` (positions across ``segs``) as a list of segments."""
    where = []
    for s in segs:
        where.extend((s, k) for k in range(s.width))
    out = []
    run_seg, run_idx = None, []

    def flush():
        if run_seg is None:
            return
        if run_seg.width == 1 or run_idx == list(range(run_seg.width)):
            out.append(run_seg)
        else:
            idx = b.const("%s_idx" % run_seg.name, np.array(run_idx, dtype=np.int64), TensorProto.INT64)
            (name,) = b.node("ArrayFeatureExtractor", [run_seg.name, idx], ["%s_cols" % run_seg.name], ML_DOMAIN)
            b.typed(name, run_seg.elem_type, len(run_idx))
            out.append(_Seg(name, run_seg.elem_type, len(run_idx)))

    for i in indices:
        if not 0 <= i < len(where):
            raise ConversionError("column index %d out of range (%d columns)" % (i, len(where)))
        seg, k = where[i]
        if seg is not run_seg:
            flush()
            run_seg, run_idx = seg, []
        run_idx.append(k)
    flush()
    return out


def _float_vector(b, segs, what="estimator"):
    """Concatenates segments into one float [N, F] tensor (casting numbers)."""
    if not segs:
        raise ConversionError("%s receives no columns" % what)
    parts = []
    for s in segs:
        if s.elem_type == TensorProto.STRING:
            raise ConversionError(
                "%s receives string column %r; encode it (OneHotEncoder in a ColumnTransformer)" % (what, s.name)
            )
        if s.elem_type != TensorProto.FLOAT:
            (name,) = b.node("Cast", [s.name], ["%s_float" % s.name], to=TensorProto.FLOAT)
            s = _Seg(name, TensorProto.FLOAT, s.width)
        parts.append(s)
    if len(parts) == 1:
        return parts[0]
    (name,) = b.node("Concat", [p.name for p in parts], ["concat"], axis=1)
    return _Seg(name, TensorProto.FLOAT, _total_width(parts))


def _check_width(est, width):
    n = getattr(est, "n_features_in_", None)
    if n is not None and n != width:
        raise ConversionError(
            "%s expects %d features but receives %d" % (type(est).__name__, n, width)
        )


# --------------------------------------------------------------------------
# transformers


def _convert_transformer(b, tr, segs, col_names):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if tr is None or (isinstance(tr, str) and tr == "passthrough"):
        return segs
    if isinstance(tr, str) and tr == "drop":
        return []
    if isinstance(tr, Pipeline):
        for _, step in tr.steps:
            segs = _convert_transformer(b, step, segs, None)
        return segs
    if isinstance(tr, ColumnTransformer):
        return _convert_column_transformer(b, tr, segs, col_names)
    if isinstance(tr, StandardScaler):
        vec = _float_vector(b, segs, "StandardScaler")
        _check_width(tr, vec.width)
        n = vec.width
        offset = tr.mean_ if tr.with_mean else np.zeros(n)
        scale = 1.0 / tr.scale_ if tr.with_std else np.ones(n)
        (name,) = b.node("Scaler", [vec.name], ["scaled"], ML_DOMAIN,
                         offset=[float(v) for v in offset], scale=[float(v) for v in scale])
        b.typed(name, TensorProto.FLOAT, n)
        return [_Seg(name, TensorProto.FLOAT, n)]
    if isinstance(tr, SimpleImputer):
        if tr.strategy not in ("mean", "median", "most_frequent", "constant"):
            raise ConversionError("SimpleImputer strategy %r is not supported" % tr.strategy)
        mv = tr.missing_values
        if isinstance(mv, bool) or not isinstance(mv, (int, float, np.integer, np.floating)):
            raise ConversionError("SimpleImputer missing_values=%r is not supported (numeric only)" % (mv,))
        if getattr(tr, "add_indicator", False):
            raise ConversionError("SimpleImputer(add_indicator=True) is not supported")
        try:  # object dtype when fitted on a mixed (object) array
            stats = np.asarray(tr.statistics_).astype(np.float64)
        except (TypeError, ValueError):
            raise ConversionError("SimpleImputer on non-numeric columns is not supported")
        if np.isnan(stats).any():
            raise ConversionError("SimpleImputer dropped an all-missing column; not supported")
        vec = _float_vector(b, segs, "SimpleImputer")
        _check_width(tr, vec.width)
        (name,) = b.node("Imputer", [vec.name], ["imputed"], ML_DOMAIN,
                         imputed_value_floats=[float(v) for v in stats],
                         replaced_value_float=float(mv))
        b.typed(name, TensorProto.FLOAT, vec.width)
        return [_Seg(name, TensorProto.FLOAT, vec.width)]
    if isinstance(tr, OneHotEncoder):
        return _convert_one_hot(b, tr, segs)
    raise ConversionError(
        "unsupported transformer %s (supported: StandardScaler, SimpleImputer, "
        "OneHotEncoder, ColumnTransformer, Pipeline, 'passthrough', 'drop')" % type(tr).__name__
    )


def _convert_one_hot(b, ohe, segs):
    if getattr(ohe, "drop_idx_", None) is not None:
        raise ConversionError("OneHotEncoder(drop=...) is not supported")
    if getattr(ohe, "_infrequent_enabled", False):
        raise ConversionError("OneHotEncoder with infrequent categories is not supported")
    if ohe.handle_unknown not in ("ignore", "error"):
        raise ConversionError("OneHotEncoder handle_unknown=%r is not supported" % ohe.handle_unknown)
    if _total_width(segs) != len(ohe.categories_):
        raise ConversionError(
            "OneHotEncoder fitted on %d columns receives %d" % (len(ohe.categories_), _total_width(segs))
        )
    outs = []
    for i, cats in enumerate(ohe.categories_):
        (col,) = _select(b, segs, [i])
        attrs = {"zeros": 1 if ohe.handle_unknown == "ignore" else 0}
        src = col.name
        if col.elem_type == TensorProto.STRING:
            if not all(isinstance(c, str) for c in cats):
                raise ConversionError("OneHotEncoder: string column with non-string categories %r" % (list(cats),))
            attrs["cats_strings"] = [str(c) for c in cats]
        else:
            try:
                ints = [int(c) for c in cats]
            except (TypeError, ValueError):
                raise ConversionError("OneHotEncoder: numeric column with categories %r" % (list(cats),))
            if any(int(c) != c for c in cats):
                raise ConversionError("OneHotEncoder: only integer-valued numeric categories are supported")
            attrs["cats_int64s"] = ints
            if col.elem_type != TensorProto.INT64:
                (src,) = b.node("Cast", [src], ["%s_int64" % col.name], to=TensorProto.INT64)
        (encoded,) = b.node("OneHotEncoder", [src], ["%s_onehot" % col.name], ML_DOMAIN, **attrs)
        b.typed(encoded, TensorProto.FLOAT, len(cats), rank3=True)
        shape = b.const("%s_shape" % col.name, np.array([-1, len(cats)], dtype=np.int64), TensorProto.INT64)
        (flat,) = b.node("Reshape", [encoded, shape], ["%s_encoded" % col.name])
        outs.append(_Seg(flat, TensorProto.FLOAT, len(cats)))
    return outs


def _column_indices(key, n, names):
    """Resolves a ColumnTransformer column spec into a list of positions."""
    if callable(key):
        raise ConversionError("callable ColumnTransformer column selectors are not supported")
    if isinstance(key, slice):
        if isinstance(key.start, str) or isinstance(key.stop, str):
            raise ConversionError("string slices in ColumnTransformer are not supported")
        return list(range(n))[key]
    if isinstance(key, (int, np.integer)):
        return [int(key)]
    if isinstance(key, str):
        key = [key]
    key = list(key)
    if all(isinstance(k, (bool, np.bool_)) for k in key) and len(key) == n:
        return [i for i, k in enumerate(key) if k]
    out = []
    for k in key:
        if isinstance(k, str):
            if names is None or k not in names:
                raise ConversionError("ColumnTransformer column %r does not name an input" % k)
            out.append(list(names).index(k))
        else:
            out.append(int(k))
    return out


def _convert_column_transformer(b, ct, segs, col_names):
    n = _total_width(segs)
    _check_width(ct, n)
    names = list(ct.feature_names_in_) if hasattr(ct, "feature_names_in_") else col_names
    outs = []
    for name, tr, cols in ct.transformers_:
        if isinstance(tr, str) and tr == "drop":
            continue
        idx = _column_indices(cols, n, names)
        if not idx:
            continue
        sub = _select(b, segs, idx)
        sub_names = [names[i] for i in idx] if names is not None else None
        outs.extend(_convert_transformer(b, tr, sub, sub_names))
    return outs


# --------------------------------------------------------------------------
# estimators


def _classes(est):
    classes = list(est.classes_)
    if all(isinstance(c, (str, np.str_)) for c in classes):
        return "strings", [str(c) for c in classes]
    if all(isinstance(c, (int, np.integer, bool, np.bool_)) or float(c).is_integer() for c in classes):
        return "ints", [int(c) for c in classes]
    raise ConversionError("class labels must be all integers or all strings, got %r" % (classes,))


def _linear_regressor(b, est, vec, prob_out):
    coef = np.asarray(est.coef_, dtype=np.float64)
    if coef.ndim != 1:
        if coef.shape[0] != 1:
            raise ConversionError("multi-target linear regression is not supported")
        coef = coef.ravel()
    intercept = float(np.ravel(est.intercept_)[0]) if np.ndim(est.intercept_) else float(est.intercept_)
    b.node("LinearRegressor", [vec.name], ["@variable"], ML_DOMAIN,
           coefficients=[float(v) for v in coef], intercepts=[intercept], targets=1,
           post_transform="NONE")
    return "regression", None


def _logistic_regression(b, est, vec, prob_out):
    kind, labels = _classes(est)
    n_classes = len(labels)
    coef = np.asarray(est.coef_, dtype=np.float64)
    intercept = np.broadcast_to(np.asarray(est.intercept_, dtype=np.float64), (coef.shape[0],))
    # sklearn 1.2 LogisticRegression.predict_proba: one-vs-rest or multinomial
    ovr = est.multi_class in ("ovr", "warn") or (
        est.multi_class == "auto" and (n_classes <= 2 or est.solver == "liblinear")
    )
    if n_classes == 2:
        coef = np.vstack([-coef, coef])
        intercept = np.concatenate([-intercept, intercept])
    attrs = {
        "coefficients": [float(v) for v in coef.ravel()],
        "intercepts": [float(v) for v in intercept],
        "multi_class": 0 if (ovr or n_classes == 2) else 1,
        "post_transform": "LOGISTIC" if ovr else "SOFTMAX",
        ("classlabels_ints" if kind == "ints" else "classlabels_strings"): labels,
    }
    if ovr and n_classes > 2:
        # sklearn normalises the one-vs-rest sigmoids so that they sum to 1
        _, raw = b.node("LinearClassifier", [vec.name], ["@label", "raw_probabilities"], ML_DOMAIN, **attrs)
        b.typed(raw, TensorProto.FLOAT, n_classes)
        b.node("Normalizer", [raw], [prob_out], ML_DOMAIN, norm="L1")
    else:
        b.node("LinearClassifier", [vec.name], ["@label", prob_out], ML_DOMAIN, **attrs)
    return "classification", (kind, labels)


def _tree_structure(attrs, tree, tree_id, leaf):
    """Appends the nodes of sklearn ``tree`` (a ``Tree``) to TreeEnsemble attrs;
    ``leaf(node_id)`` appends that leaf's weights."""
    left, right = tree.children_left, tree.children_right
    for i in range(tree.node_count):
        attrs["nodes_treeids"].append(tree_id)
        attrs["nodes_nodeids"].append(i)
        attrs["nodes_missing_value_tracks_true"].append(0)
        attrs["nodes_hitrates"].append(1.0)
        if left[i] != -1:  # sklearn's TREE_LEAF
            attrs["nodes_modes"].append("BRANCH_LEQ")
            attrs["nodes_featureids"].append(int(tree.feature[i]))
            attrs["nodes_values"].append(float32_threshold(tree.threshold[i]))
            attrs["nodes_truenodeids"].append(int(left[i]))
            attrs["nodes_falsenodeids"].append(int(right[i]))
        else:
            attrs["nodes_modes"].append("LEAF")
            attrs["nodes_featureids"].append(0)
            attrs["nodes_values"].append(0.0)
            attrs["nodes_truenodeids"].append(0)
            attrs["nodes_falsenodeids"].append(0)
            leaf(i)


def _empty_tree_attrs(prefix):
    keys = ["nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_modes", "nodes_values",
            "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true",
            "nodes_hitrates", prefix + "_treeids", prefix + "_nodeids", prefix + "_ids",
            prefix + "_weights"]
    return {k: [] for k in keys}


def _add_leaf(attrs, prefix, tree_id, node_id, out_id, weight):
    attrs[prefix + "_treeids"].append(tree_id)
    attrs[prefix + "_nodeids"].append(node_id)
    attrs[prefix + "_ids"].append(out_id)
    attrs[prefix + "_weights"].append(float(weight))


def _tree_regressor(b, est, vec, prob_out):
    """DecisionTreeRegressor, RandomForestRegressor, GradientBoostingRegressor."""
    from sklearn.ensemble import GradientBoostingRegressor

    attrs = _empty_tree_attrs("target")
    base_values = None
    if isinstance(est, GradientBoostingRegressor):
        trees = [t.tree_ for t in est.estimators_[:, 0]]
        weight = float(est.learning_rate)
        base_values = _gb_base_values(est, vec.width)
    elif hasattr(est, "estimators_"):
        trees = [t.tree_ for t in est.estimators_]
        weight = 1.0 / len(trees)
    else:
        trees = [est.tree_]
        weight = 1.0
    if getattr(est, "n_outputs_", 1) != 1:
        raise ConversionError("multi-output tree regressors are not supported")
    for tid, tree in enumerate(trees):
        _tree_structure(attrs, tree, tid,
                        lambda i, tree=tree, tid=tid: _add_leaf(attrs, "target", tid, i, 0, weight * tree.value[i][0][0]))
    if base_values is not None:
        attrs["base_values"] = base_values
    b.node("TreeEnsembleRegressor", [vec.name], ["@variable"], ML_DOMAIN,
           n_targets=1, aggregate_function="SUM", post_transform="NONE", **attrs)
    return "regression", None


def _gb_base_values(est, n_features):
    if est.init not in (None, "zero"):
        raise ConversionError(
            "GradientBoosting with a custom init estimator is not supported "
            "(only the default prior or init='zero' are constant)"
        )
    # the raw prediction of the (constant) init estimator
    return [float(v) for v in np.ravel(est._raw_predict_init(np.zeros((1, n_features), dtype=np.float32)))]


def _tree_classifier(b, est, vec, prob_out):
    """DecisionTreeClassifier, RandomForestClassifier, GradientBoostingClassifier."""
    from sklearn.ensemble import GradientBoostingClassifier

    kind, labels = _classes(est)
    n_classes = len(labels)
    if getattr(est, "n_outputs_", 1) != 1:
        raise ConversionError("multi-output tree classifiers are not supported")
    if n_classes < 2:
        raise ConversionError("classifiers trained on a single class are not supported")
    attrs = _empty_tree_attrs("class")
    attrs["post_transform"] = "NONE"
    if isinstance(est, GradientBoostingClassifier):
        if est.loss not in ("log_loss", "deviance"):
            raise ConversionError("GradientBoostingClassifier loss=%r is not supported" % est.loss)
        lr = float(est.learning_rate)
        attrs["base_values"] = _gb_base_values(est, vec.width)
        attrs["post_transform"] = "LOGISTIC" if n_classes == 2 else "SOFTMAX"
        k = est.estimators_.shape[1]  # 1 for binary, n_classes otherwise
        for stage in range(est.estimators_.shape[0]):
            for c in range(k):
                tree = est.estimators_[stage, c].tree_
                tid = stage * k + c
                _tree_structure(attrs, tree, tid,
                                lambda i, tree=tree, tid=tid, c=c: _add_leaf(attrs, "class", tid, i, c, lr * tree.value[i][0][0]))
        if n_classes == 2 and min(attrs["class_weights"]) >= 0:
            # ONNX Runtime's binary case would then output [1-s, s] unsigmoided
            raise ConversionError("binary GradientBoosting with only non-negative leaf values cannot be expressed")
    else:
        trees = [t.tree_ for t in est.estimators_] if hasattr(est, "estimators_") else [est.tree_]
        weight = 1.0 / len(trees)

        def leaf(tree, tid, i):
            counts = np.asarray(tree.value[i][0], dtype=np.float64)
            total = counts.sum()
            probs = counts / total if total > 0 else counts
            if n_classes == 2:  # binary case: positive class only, class id 0
                _add_leaf(attrs, "class", tid, i, 0, weight * probs[1])
            else:
                for c in range(n_classes):
                    _add_leaf(attrs, "class", tid, i, c, weight * probs[c])

        for tid, tree in enumerate(trees):
            _tree_structure(attrs, tree, tid, lambda i, tree=tree, tid=tid: leaf(tree, tid, i))
    attrs["classlabels_int64s" if kind == "ints" else "classlabels_strings"] = labels
    b.node("TreeEnsembleClassifier", [vec.name], ["@label", prob_out], ML_DOMAIN, **attrs)
    return "classification", (kind, labels)


def _estimator_converter(est):
    from sklearn import ensemble, linear_model, tree

    table = [
        ((linear_model.LinearRegression, linear_model.Ridge, linear_model.Lasso,
          linear_model.ElasticNet), _linear_regressor),
        ((linear_model.LogisticRegression,), _logistic_regression),
        ((tree.DecisionTreeRegressor, ensemble.RandomForestRegressor, ensemble.ExtraTreesRegressor,
          ensemble.GradientBoostingRegressor), _tree_regressor),
        ((tree.DecisionTreeClassifier, ensemble.RandomForestClassifier, ensemble.ExtraTreesClassifier,
          ensemble.GradientBoostingClassifier), _tree_classifier),
    ]
    for types, fn in table:
        if type(est) in types:
            return fn
    return None


SUPPORTED = (
    "LinearRegression, Ridge, Lasso, ElasticNet, LogisticRegression, DecisionTreeRegressor/Classifier, "
    "RandomForestRegressor/Classifier, ExtraTreesRegressor/Classifier, GradientBoostingRegressor/Classifier, "
    "and Pipeline/ColumnTransformer of StandardScaler, SimpleImputer, OneHotEncoder ending in one of them"
)


# --------------------------------------------------------------------------
# entry point


def _parse_inputs(inputs):
    if not inputs:
        raise ConversionError("inputs must describe at least one graph input")
    segs, value_infos, names = [], [], []
    for item in inputs:
        if len(item) != 2:
            raise ConversionError("each input is (name, n_features) or (name, type), got %r" % (item,))
        name, spec = item
        if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
            if spec < 1:
                raise ConversionError("input %r must have at least one feature" % name)
            elem, width = TensorProto.FLOAT, int(spec)
        elif isinstance(spec, str) and spec in _INPUT_TYPES:
            elem, width = _INPUT_TYPES[spec], 1
        else:
            raise ConversionError(
                "input %r: expected a feature count or one of %s, got %r" % (name, sorted(_INPUT_TYPES), spec)
            )
        segs.append(_Seg(name, elem, width))
        names.append(name)
        value_infos.append(helper.make_tensor_value_info(name, elem, ["N", width]))
    return segs, value_infos, names


def _zipmap_type(kind):
    tp = onnx.TypeProto()
    m = tp.sequence_type.elem_type.map_type
    m.key_type = TensorProto.INT64 if kind == "ints" else TensorProto.STRING
    m.value_type.tensor_type.elem_type = TensorProto.FLOAT
    m.value_type.tensor_type.shape.SetInParent()  # scalar float values
    return tp


def convert(estimator, inputs, feature_names=None, zipmap=False, target_opset=15, ml_opset=1,
            name=None, doc_string=None):
    """Converts a fitted sklearn estimator / pipeline into an ONNX-ML ModelProto.

    inputs: ``[("input", n_features)]`` for one float [N, n_features] input, or
        ``[("age", "float"), ("plan", "string"), ...]`` for per-column [N, 1]
        inputs (types: float, double, int64, string).
    feature_names: optional list of feature (column) names, stored as
        metadata_props ``feature_names`` (a JSON array).
    zipmap: classifiers only -- output ``probabilities`` as seq(map(label, float)).
    """
    from sklearn.pipeline import Pipeline

    b = _Builder()
    segs, input_infos, input_names = _parse_inputs(inputs)
    for n in input_names:
        b.reserve(n)
    for n in ("label", "probabilities", "variable"):
        b.reserve(n)
    if feature_names is not None:
        feature_names = [str(f) for f in feature_names]
        if len(feature_names) != _total_width(segs):
            raise ConversionError(
                "%d feature_names for %d input columns" % (len(feature_names), _total_width(segs))
            )

    # per-column inputs are named after their columns; a vector input's
    # columns are named by feature_names (if any)
    col_names = feature_names
    if all(s.width == 1 for s in segs) and len(segs) > 1:
        col_names = input_names

    est = estimator
    if isinstance(est, Pipeline):
        *steps, (_, est) = est.steps
        for _, step in steps:
            segs = _convert_transformer(b, step, segs, col_names)
            col_names = None
    conv = _estimator_converter(est)
    if conv is None:
        raise ConversionError("unsupported estimator %s; supported: %s" % (type(est).__name__, SUPPORTED))
    vec = _float_vector(b, segs, type(est).__name__)
    _check_width(est, vec.width)
    # classifiers write their probabilities straight into the output, or into
    # an intermediate tensor that a ZipMap turns into the output
    prob_out = "@" + b.fresh("probability_tensor") if zipmap else "@probabilities"
    task, cls = conv(b, est, vec, prob_out)

    if task == "regression":
        if zipmap:
            raise ConversionError("zipmap=True only applies to classifiers")
        outputs = [helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])]
    else:
        kind, labels = cls
        label_type = TensorProto.INT64 if kind == "ints" else TensorProto.STRING
        if zipmap:
            zattr = {"classlabels_int64s" if kind == "ints" else "classlabels_strings": labels}
            b.typed(prob_out[1:], TensorProto.FLOAT, len(labels))
            b.node("ZipMap", [prob_out[1:]], ["@probabilities"], ML_DOMAIN, **zattr)
            prob_info = helper.make_value_info("probabilities", _zipmap_type(kind))
        else:
            prob_info = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(labels)])
        outputs = [helper.make_tensor_value_info("label", label_type, ["N"]), prob_info]

    graph = helper.make_graph(b.nodes, name or type(estimator).__name__, input_infos, outputs,
                              initializer=b.initializers, value_info=b.value_infos)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", target_opset), helper.make_opsetid(ML_DOMAIN, ml_opset)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        ir_version=8,
        doc_string=doc_string or ("converted from sklearn %s" % type(estimator).__name__),
    )
    if feature_names is not None:
        helper.set_model_props(model, {"feature_names": json.dumps(feature_names)})
    # full_check also runs strict shape inference -- which onnx < 1.15 cannot do
    # on map types (onnx/onnx#5188), so it is skipped for ZipMap outputs
    onnx.checker.check_model(model, full_check=not zipmap)
    return model
