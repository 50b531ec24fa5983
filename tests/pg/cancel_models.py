"""Models that take long to score, for the cancel tests (tests/pg/test_cancel.py) and the cancel
latency benchmark (bench/cancel.py): a 500-tree XGBoost regressor and a 28-1024-1024-1 MLP, both
over 28 float features (f0..f27)."""
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

N_FEATURES = 28
FEATURES = [f"f{i}" for i in range(N_FEATURES)]


def xgboost_trees(n_trees=500, depth=6, seed=7):
    """An XGBoost JSON regressor with n_trees trees of the given depth, trained on random data."""
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2000, N_FEATURES)).astype(np.float32)
    y = x[:, 0] * 2 + np.sin(x[:, 1]) + rng.normal(scale=0.1, size=2000)
    booster = xgb.train({"max_depth": depth, "eta": 0.05, "nthread": 1, "tree_method": "hist", "seed": seed},
                        xgb.DMatrix(x, label=y, feature_names=FEATURES), num_boost_round=n_trees)
    raw = booster.save_raw(raw_format="json")
    model = json.loads(bytes(raw))
    assert len(model["learner"]["gradient_booster"]["model"]["trees"]) == n_trees
    return bytes(raw)


def mlp(hidden=(1024, 1024), seed=7):
    """An ONNX MLP (Gemm + Relu layers, one output) over the 28 features, with random weights."""
    rng = np.random.default_rng(seed)
    widths = [N_FEATURES, *hidden, 1]
    nodes, inits = [], []
    prev = "x"
    for k in range(len(widths) - 1):
        w = (rng.normal(size=(widths[k], widths[k + 1])) / np.sqrt(widths[k])).astype(np.float32)
        b = np.zeros(widths[k + 1], dtype=np.float32)
        inits += [numpy_helper.from_array(w, f"w{k}"), numpy_helper.from_array(b, f"b{k}")]
        out = "y" if k == len(widths) - 2 else f"h{k}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{k}", f"b{k}"], [out if out == "y" else out + "_pre"]))
        if out != "y":
            nodes.append(helper.make_node("Relu", [out + "_pre"], [out]))
        prev = out
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, N_FEATURES])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="flock-tests")
    model.ir_version = 8
    meta = model.metadata_props.add()
    meta.key, meta.value = "feature_names", json.dumps(FEATURES)
    onnx.checker.check_model(model)
    return model.SerializeToString()


# A query scoring `rows` generated rows (no table needed); each row's features vary with i.
def score_query(model, rows):
    cols = ", ".join(f"((i * {k + 1}) % 97)::real / 10 AS f{k}" for k in range(N_FEATURES))
    return (f"SELECT sum(flock.predict('{model}', t)) FROM "
            f"(SELECT {cols} FROM generate_series(1, {rows}) i) t")
