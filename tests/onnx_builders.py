"""Tiny hand-built ONNX-ML models for SQL tests (onnx.helper only: no exporter involved)."""
import json

import numpy as np
import onnx.numpy_helper
import onnx
from onnx import TensorProto, helper


def _model(graph, ml_opset=1):
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15),
                                                helper.make_opsetid("ai.onnx.ml", ml_opset)],
                          producer_name="flock-tests")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def linear_regressor(coefs, intercept, feature_names=None, input_type=TensorProto.FLOAT):
    """y = coefs · x + intercept, input [N, len(coefs)] (float unless input_type says otherwise)."""
    n = len(coefs)
    node = helper.make_node("LinearRegressor", ["input"], ["variable"], domain="ai.onnx.ml",
                            coefficients=[float(c) for c in coefs], intercepts=[float(intercept)])
    graph = helper.make_graph([node], "linear",
                              [helper.make_tensor_value_info("input", input_type, ["N", n])],
                              [helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])])
    m = _model(graph)
    if feature_names is not None:
        helper.set_model_props(m, {"feature_names": json.dumps(feature_names)})
    return m.SerializeToString()


def multi_input_linear(names, coefs, intercept):
    """The linear regressor over one float input [N, 1] per name (Concat in that order)."""
    concat = helper.make_node("Concat", list(names), ["x"], axis=1)
    node = helper.make_node("LinearRegressor", ["x"], ["variable"], domain="ai.onnx.ml",
                            coefficients=[float(c) for c in coefs], intercepts=[float(intercept)])
    graph = helper.make_graph([concat, node], "multi_linear",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1]) for n in names],
                              [helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])])
    return _model(graph).SerializeToString()


def stump_classifier(feature, threshold, labels=(0, 1), n_features=2, feature_names=None):
    """One split: x[feature] <= threshold → class labels[0] (p=0.8) else labels[1] (p=0.9)."""
    attrs = dict(
        nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[feature, 0, 0],
        nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"], nodes_values=[float(threshold), 0.0, 0.0],
        nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0],
        nodes_missing_value_tracks_true=[1, 0, 0],
        class_treeids=[0, 0, 0, 0], class_nodeids=[1, 1, 2, 2], class_ids=[0, 1, 0, 1],
        class_weights=[0.8, 0.2, 0.1, 0.9], post_transform="NONE")
    string_labels = isinstance(labels[0], str)
    if string_labels:
        attrs["classlabels_strings"] = list(labels)
    else:
        attrs["classlabels_int64s"] = list(labels)
    node = helper.make_node("TreeEnsembleClassifier", ["input"], ["label", "probabilities"],
                            domain="ai.onnx.ml", **attrs)
    graph = helper.make_graph(
        [node], "stump", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info("label", TensorProto.STRING if string_labels else TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])])
    m = _model(graph)
    if feature_names is not None:
        helper.set_model_props(m, {"feature_names": json.dumps(feature_names)})
    return m.SerializeToString()


def unsupported_op_model():
    """A valid ONNX model whose only node is an operator Flock does not run (Det, the matrix determinant)."""
    node = helper.make_node("Det", ["input"], ["output"])
    graph = helper.make_graph([node], "det",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 3])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N"])])
    return _model(graph).SerializeToString()


def _std_model(nodes, inputs, outputs, initializers=(), opset=15):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="flock-tests")
    m.ir_version = 8
    return m


def dense_relu(weights, bias):
    """relu(x @ W + b): float [N, in] -> float [N, out]; a model whose output is a vector per row."""
    w = np.asarray(weights, dtype=np.float32)
    b = np.asarray(bias, dtype=np.float32)
    nodes = [helper.make_node("MatMul", ["input", "W"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["pre"]),
             helper.make_node("Relu", ["pre"], ["output"])]
    m = _std_model(nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", w.shape[0]])],
                   [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", w.shape[1]])],
                   [onnx.numpy_helper.from_array(w, "W"), onnx.numpy_helper.from_array(b, "b")])
    onnx.checker.check_model(m)
    return m.SerializeToString()


def symbolic_feature_dim():
    """Relu over [N, F] with F symbolic: runs on whole tensors but cannot bind a row of features."""
    m = _std_model([helper.make_node("Relu", ["input"], ["output"])],
                   [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", "F"])],
                   [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", "F"])])
    onnx.checker.check_model(m)
    return m.SerializeToString()


def future_opset():
    """A Relu model claiming ai.onnx opset 99."""
    m = _std_model([helper.make_node("Relu", ["input"], ["output"])],
                   [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 2])],
                   [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 2])], opset=99)
    return m.SerializeToString()


def cast_to_float16():
    """Cast to float16, an element type Flock does not run: fails at registration naming op and type."""
    m = _std_model([helper.make_node("Cast", ["input"], ["half"], to=TensorProto.FLOAT16),
                    helper.make_node("Cast", ["half"], ["output"], to=TensorProto.FLOAT)],
                   [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 2])],
                   [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 2])])
    onnx.checker.check_model(m)
    return m.SerializeToString()
