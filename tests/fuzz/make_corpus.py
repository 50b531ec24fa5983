#!/usr/bin/python3
"""Regenerates the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/) from the project's
test models and small models built here, deterministically.

    /usr/bin/python3 tests/fuzz/make_corpus.py [--models-dir build/models]

Seeds are small on purpose (libFuzzer mutates small inputs faster): the project's ONNX and XGBoost
test models under 40 kB, the XGBoost fixtures of tests/core, one tiny model per operator family the
core runs (onnx.helper), one per parse path of ai.onnx 18-21 / ai.onnx.ml 4-5 (newer_opsets.py),
and small XGBoost boosters of every supported objective (xgboost, fixed
seeds). The model_input corpus holds some of them in the type's text forms (hex and escape).
"""
import argparse
import hashlib
import json
import os
import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MAX_SEED_BYTES = 40_000


def model(nodes, inputs, outputs, inits=(), opset=15, ml=False, name="g"):
    imports = [helper.make_opsetid("", opset)]
    if ml:
        imports.append(helper.make_opsetid("ai.onnx.ml", 3))
    m = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, list(inits)),
                          opset_imports=imports, producer_name="flock-fuzz-seed")
    m.ir_version = 8
    m = onnx.shape_inference.infer_shapes(m)  # fills in the output types left open below
    onnx.checker.check_model(m)
    return m.SerializeToString()


def f(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def t(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def onnx_seeds():
    """One small graph per operator family, each valid (passes the checker)."""
    rng = np.random.default_rng(11)
    w = lambda *s: rng.standard_normal(s).astype(np.float32)
    x4, y = f("x", ["N", 4]), f("y", None)
    seeds = {}
    for op in ["Relu", "Sigmoid", "Tanh", "Exp", "Log", "Abs", "Neg", "Sqrt", "Softplus", "Erf", "Floor",
               "Sign", "Reciprocal", "Identity", "Softsign", "Cos", "Round", "HardSwish"]:
        seeds[f"unary_{op}"] = model([helper.make_node(op, ["x"], ["y"])], [x4], [y])
    for op in ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum"]:
        seeds[f"binary_{op}"] = model([helper.make_node(op, ["x", "b"], ["y"])], [x4], [y], [init("b", w(4))])
    for op in ["Less", "Greater", "Equal", "LessOrEqual"]:
        seeds[f"compare_{op}"] = model([helper.make_node(op, ["x", "b"], ["c"]), helper.make_node("Where", ["c", "x", "b"], ["y"])],
                                       [x4], [y], [init("b", w(4))])
    seeds["gemm"] = model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], [x4], [y],
                          [init("w", w(3, 4)), init("b", w(3))])
    seeds["matmul_add_relu_softmax"] = model(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["a"]),
         helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Softmax", ["r"], ["y"], axis=-1)],
        [x4], [y], [init("w", w(4, 3)), init("b", w(3))])
    seeds["gather_embedding"] = model([helper.make_node("Gather", ["e", "i"], ["y"], axis=0)],
                                      [t("i", TensorProto.INT64, ["N", 2])], [y], [init("e", w(5, 3))])
    seeds["gather_elements"] = model([helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1)], [x4], [y],
                                     [init("i", np.array([[0, 3]], dtype=np.int64))])
    seeds["reshape_transpose"] = model(
        [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1])],
        [x4], [y], [init("s", np.array([-1, 2, 2], dtype=np.int64))])
    seeds["flatten_concat"] = model(
        [helper.make_node("Flatten", ["x"], ["a"], axis=1), helper.make_node("Concat", ["a", "x"], ["y"], axis=1)],
        [x4], [y])
    seeds["slice_split"] = model(
        [helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["a"]),
         helper.make_node("Split", ["a"], ["y", "z"], axis=1)],
        [x4], [y, f("z", None)],
        [init("st", np.array([0], dtype=np.int64)), init("en", np.array([4], dtype=np.int64)),
         init("ax", np.array([1], dtype=np.int64)), init("sp", np.array([1], dtype=np.int64))])
    seeds["reduce_mean_sum"] = model(
        [helper.make_node("ReduceMean", ["x"], ["a"], axes=[1], keepdims=1),
         helper.make_node("ReduceSum", ["x", "ax"], ["b"], keepdims=0), helper.make_node("Add", ["a", "b"], ["y"])],
        [x4], [y], [init("ax", np.array([1], dtype=np.int64))])
    seeds["argmax_topk"] = model(
        [helper.make_node("ArgMax", ["x"], ["y"], axis=1), helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1)],
        [x4], [t("y", TensorProto.INT64, None), f("v", None), t("i", TensorProto.INT64, None)], [init("k", np.array([2], dtype=np.int64))])
    seeds["cast_clip"] = model(
        [helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE), helper.make_node("Cast", ["d"], ["c"], to=TensorProto.FLOAT),
         helper.make_node("Clip", ["c", "lo", "hi"], ["y"])],
        [x4], [y], [init("lo", np.float32(-1)), init("hi", np.float32(1))])
    seeds["shape_constantofshape_expand"] = model(
        [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("ConstantOfShape", ["s"], ["z"]),
         helper.make_node("Expand", ["b", "s"], ["e"]), helper.make_node("Add", ["z", "e"], ["y"])],
        [x4], [y], [init("b", w(4))])
    seeds["tile_pad"] = model(
        [helper.make_node("Tile", ["x", "r"], ["a"]), helper.make_node("Pad", ["a", "p"], ["y"])],
        [x4], [y], [init("r", np.array([1, 2], dtype=np.int64)), init("p", np.array([0, 1, 0, 1], dtype=np.int64))])
    seeds["onehot_range_cumsum"] = model(
        [helper.make_node("OneHot", ["i", "d", "v"], ["o"], axis=-1), helper.make_node("CumSum", ["o", "ax"], ["y"])],
        [t("i", TensorProto.INT64, ["N"])], [y],
        [init("d", np.array(4, dtype=np.int64)), init("v", np.array([0, 1], dtype=np.float32)), init("ax", np.array(1, dtype=np.int64))])
    seeds["nonzero_size"] = model(
        [helper.make_node("NonZero", ["x"], ["n"]), helper.make_node("Size", ["n"], ["y"])],
        [x4], [t("y", TensorProto.INT64, None)])
    seeds["layer_norm"] = model([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1)],
                                [x4], [y], [init("g", w(4)), init("b", w(4))], opset=17)
    x3 = f("x", ["N", 2, 8])
    seeds["conv1d_maxpool"] = model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3], pads=[1, 1], strides=[1]),
         helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2], strides=[2])],
        [x3], [y], [init("w", w(3, 2, 3)), init("b", w(3))])
    seeds["avgpool_globalpool"] = model(
        [helper.make_node("AveragePool", ["x"], ["a"], kernel_shape=[2], strides=[1]),
         helper.make_node("GlobalMaxPool", ["a"], ["y"])], [x3], [y])
    seeds["batchnorm_instancenorm"] = model(
        [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["a"]),
         helper.make_node("InstanceNormalization", ["a", "s", "b"], ["y"])],
        [x3], [y], [init("s", w(2)), init("b", w(2)), init("m", w(2)), init("v", np.abs(w(2)) + 1)])
    x4d = f("x", ["N", 1, 4, 4])
    seeds["conv2d_lrn_resize"] = model(
        [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[2, 2], dilations=[1, 1], group=1),
         helper.make_node("LRN", ["c"], ["l"], size=3),
         helper.make_node("Resize", ["l", "", "sc"], ["y"], mode="nearest")],
        [x4d], [y], [init("w", w(2, 1, 2, 2)), init("sc", np.array([1, 1, 2, 2], dtype=np.float32))])
    # ai.onnx.ml
    seeds["ml_linear_regressor"] = model(
        [helper.make_node("LinearRegressor", ["x"], ["y"], domain="ai.onnx.ml", coefficients=[1.0, -2.0, 0.5, 3.0], intercepts=[0.25])],
        [x4], [f("y", ["N", 1])], ml=True)
    seeds["ml_linear_classifier"] = model(  # ZipMap: the project's iris_logreg_ovr_zipmap
        [helper.make_node("LinearClassifier", ["x"], ["label", "p"], domain="ai.onnx.ml",
                          coefficients=list(map(float, w(12))), intercepts=[0.0, 1.0, -1.0], classlabels_ints=[0, 1, 2],
                          post_transform="SOFTMAX")],
        [x4], [t("label", TensorProto.INT64, ["N"]), f("p", ["N", 3])], ml=True)
    seeds["ml_scaler_normalizer_imputer"] = model(
        [helper.make_node("Imputer", ["x"], ["i"], domain="ai.onnx.ml", imputed_value_floats=[0.0], replaced_value_float=float("nan")),
         helper.make_node("Scaler", ["i"], ["s"], domain="ai.onnx.ml", offset=[0.5], scale=[2.0]),
         helper.make_node("Normalizer", ["s"], ["y"], domain="ai.onnx.ml", norm="L2")],
        [x4], [f("y", ["N", 4])], ml=True)
    seeds["ml_binarizer_featureextractor"] = model(
        [helper.make_node("Binarizer", ["x"], ["b"], domain="ai.onnx.ml", threshold=0.5),
         helper.make_node("ArrayFeatureExtractor", ["b", "k"], ["y"], domain="ai.onnx.ml")],
        [x4], [f("y", ["N", 2])], [init("k", np.array([0, 2], dtype=np.int64))], ml=True)
    seeds["ml_onehot_labelencoder"] = model(
        [helper.make_node("LabelEncoder", ["s"], ["i"], domain="ai.onnx.ml", keys_strings=["a", "b"], values_int64s=[0, 1], default_int64=-1),
         helper.make_node("OneHotEncoder", ["s"], ["y"], domain="ai.onnx.ml", cats_strings=["a", "b", "c"], zeros=1)],
        [t("s", TensorProto.STRING, ["N", 1])], [f("y", ["N", 1, 3]), t("i", TensorProto.INT64, ["N", 1])], ml=True)
    tree = dict(nodes_treeids=[0, 0, 0, 1, 1, 1], nodes_nodeids=[0, 1, 2, 0, 1, 2], nodes_featureids=[0, 0, 0, 3, 0, 0],
                nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF", "BRANCH_LT", "LEAF", "LEAF"],
                nodes_values=[0.5, 0, 0, -1.0, 0, 0], nodes_truenodeids=[1, 0, 0, 1, 0, 0], nodes_falsenodeids=[2, 0, 0, 2, 0, 0],
                nodes_missing_value_tracks_true=[1, 0, 0, 0, 0, 0])
    seeds["ml_tree_regressor"] = model(
        [helper.make_node("TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml", n_targets=1, aggregate_function="SUM",
                          target_treeids=[0, 0, 1, 1], target_nodeids=[1, 2, 1, 2], target_ids=[0, 0, 0, 0],
                          target_weights=[1.0, -1.0, 0.5, 2.0], base_values=[0.1], **tree)],
        [x4], [f("y", ["N", 1])], ml=True)
    seeds["ml_tree_classifier"] = model(
        [helper.make_node("TreeEnsembleClassifier", ["x"], ["label", "p"], domain="ai.onnx.ml", classlabels_strings=["no", "yes"],
                          class_treeids=[0, 0, 1, 1], class_nodeids=[1, 2, 1, 2], class_ids=[1, 1, 1, 1],
                          class_weights=[0.2, 0.9, 0.4, 0.6], post_transform="LOGISTIC", **tree)],
        [x4], [t("label", TensorProto.STRING, ["N"]), f("p", ["N", 2])], ml=True)
    return seeds


def xgboost_seeds():
    """Small boosters of every objective the importer takes, trained with fixed seeds."""
    import xgboost as xgb
    rng = np.random.default_rng(7)
    X = rng.standard_normal((120, 3)).astype(np.float32)
    seeds = {}
    cases = [("reg_squarederror", "reg:squarederror", X[:, 0] * 2 + X[:, 1], {}),
             ("reg_logistic", "reg:logistic", (X[:, 0] > 0).astype(float), {}),
             ("binary_logistic", "binary:logistic", (X[:, 1] > 0).astype(int), {}),
             ("multi_softprob", "multi:softprob", (X[:, 0] > 0).astype(int) + (X[:, 2] > 0.5), {"num_class": 3}),
             ("multi_softmax", "multi:softmax", (X[:, 1] > 0).astype(int) * 2, {"num_class": 3})]
    X[rng.random(X.shape) < 0.1] = np.nan  # missing values (after the labels): default_left matters
    for name, objective, label, extra in cases:
        for depth, rounds, names in [(1, 2, False), (2, 3, True)]:
            dm = xgb.DMatrix(X, label=label, feature_names=["f_a", "f_b", "f_c"] if names else None)
            params = {"objective": objective, "max_depth": depth, "eta": 0.5, "seed": 3, "nthread": 1, **extra}
            booster = xgb.train(params, dm, num_boost_round=rounds)
            raw = booster.save_raw(raw_format="json")
            seeds[f"{name}_d{depth}_r{rounds}{'_named' if names else ''}"] = bytes(raw)
    return seeds


# One seed per parse path of the ONNX versions newer than libonnx 1.12 (issue 19), from the cases of
# tests/conformance/newer_opsets.py: Flock's own schemas, the TreeEnsemble lowering (set splits,
# double), LabelEncoder's tensors, and refusals (opset and IR past the range, bad sets).
NEWER_OPSET_SEEDS = [
    "reducemax_axes_input_1_keep1_opset18", "reducemax_bool_opset20", "reducesum_axes_runtime_opset21",
    "split_num_outputs_uneven_opset18", "pad_axes_reflect_opset19", "resize_nearest_defaults_opset18",
    "resize_antialias_opset18", "cast_int64_saturate_opset19", "equal_string_opset19", "mish_opset18",
    "averagepool_dilations_1_opset19", "constantofshape_opset21", "unsqueeze_opset21",
    "labelencoder_int64_to_string_default_ml4", "labelencoder_double_to_double_default_ml4",
    "treeensemble_member_float32_t2_average_softmax_ml5", "treeensemble_member_float64_t1_max_none_ml5",
    "treeensemble_members_unterminated_ml5", "treeensemble_cycle_ml5", "treeensembleregressor_ml5",
    "opset22", "ir_version11", "int4_input_opset21", "groupnormalization_opset18",
]


def newer_opset_seeds():
    import tempfile
    sys.path.insert(0, str(ROOT / "tests" / "conformance"))
    import newer_opsets
    with tempfile.TemporaryDirectory() as out:
        w = newer_opsets.Writer(out)
        for make in (newer_opsets.reduce_cases, newer_opsets.split_cases, newer_opsets.pad_cases,
                     newer_opsets.resize_cases, newer_opsets.cast_cases, newer_opsets.misc_cases,
                     newer_opsets.version_cases, newer_opsets.label_encoder_cases, newer_opsets.membership_cases):
            make(w)
        return {"newer_" + name: (pathlib.Path(out) / ("test_" + name) / "model.onnx").read_bytes()
                for name in NEWER_OPSET_SEEDS}


def to_hex_text(data):
    return b"\\x" + data.hex().encode()


def to_escape_text(data):
    out = bytearray()
    for b in data:
        if b == 0x5C:
            out += b"\\\\"
        elif b < 0x20 or b > 0x7E:
            out += b"\\%03o" % b
        else:
            out.append(b)
    return bytes(out)


def write(target, name, data):
    path = HERE / "corpus" / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", default=os.environ.get("FLOCK_MODELS_DIR", ROOT / "build" / "models"))
    args = ap.parse_args()
    models_dir = pathlib.Path(args.models_dir)
    if not models_dir.is_dir():
        sys.exit(f"make_corpus: {models_dir} not found; run `make models` first or pass --models-dir")
    for target in ("onnx_import", "xgboost_import", "model_input"):
        for old in (HERE / "corpus" / target).glob("*") if (HERE / "corpus" / target).is_dir() else []:
            old.unlink()

    onnx_files = {p.stem: p.read_bytes() for p in sorted(models_dir.glob("*.onnx")) if p.stat().st_size <= MAX_SEED_BYTES}
    onnx_files.update(onnx_seeds())
    onnx_files.update(newer_opset_seeds())
    xgb_files = {p.stem: p.read_bytes() for p in sorted(models_dir.glob("*.json"))
                 if p.stat().st_size <= MAX_SEED_BYTES and b'"learner"' in p.read_bytes()}
    xgb_files.update({"fixture_" + p.name.removesuffix(".model.json"): p.read_bytes()
                      for p in sorted((ROOT / "tests/core/data/xgb").glob("*.model.json"))})
    xgb_files.update(xgboost_seeds())

    for name, data in onnx_files.items():
        write("onnx_import", name + ".onnx", data)
    for name, data in xgb_files.items():
        write("xgboost_import", name + ".json", data)
    # The text forms: the smaller models of each kind, in hex (what clients send) and a few in the
    # escape format.
    small = sorted([(len(d), n, d) for n, d in list(onnx_files.items()) + list(xgb_files.items()) if len(d) <= 8000])
    for k, (_, name, data) in enumerate(small):
        write("model_input", name + ".hex", to_hex_text(data))
        if k % 4 == 0:
            write("model_input", name + ".escape", to_escape_text(data))

    for target in ("onnx_import", "xgboost_import", "model_input"):
        files = list((HERE / "corpus" / target).iterdir())
        print(f"{target}: {len(files)} seeds, {sum(p.stat().st_size for p in files)} bytes")


if __name__ == "__main__":
    main()
