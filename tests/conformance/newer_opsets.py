#!/usr/bin/python3
"""Writes test cases for the ONNX versions newer than Debian's libonnx 1.12 (ai.onnx 18-21,
ai.onnx.ml 4-5) in the layout of the ONNX backend node tests, for flock_onnx_conformance:

    /usr/bin/python3 tests/conformance/newer_opsets.py --out DIR [--models build/models]
    build/tests/conformance/flock_onnx_conformance --data DIR

Each case is a directory with model.onnx (built with onnx.helper at the new opset) and
test_data_set_0/{input,output}_k.pb, the outputs computed here with numpy from the formulas of
the ONNX operator specification (never by Flock). A case may also hold reference.onnx, a model the
outputs must equal bit for bit (a TreeEnsemble converted from a TreeEnsembleRegressor /
Classifier), or expect_error (ErrorCode name, then part of the message) for a model loading must
refuse. With --models, the tree models of tools/models/make_models.py are converted to ai.onnx.ml
5 TreeEnsemble.
"""

import argparse
import math
import os
import shutil

import numpy as np
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(19)
F = TensorProto.FLOAT
D = TensorProto.DOUBLE
I64 = TensorProto.INT64
B = TensorProto.BOOL
S = TensorProto.STRING
NP_TYPE = {np.dtype(np.float32): F, np.dtype(np.float64): D, np.dtype(np.int64): I64, np.dtype(np.bool_): B}


def type_of(a):
    return S if a.dtype == object else NP_TYPE[a.dtype]


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def model(nodes, inputs, outputs, opset, ml=None, initializers=(), ir=None):
    imports = [helper.make_opsetid("", opset)]
    if ml is not None:
        imports.append(helper.make_opsetid("ai.onnx.ml", ml))
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    m = helper.make_model(g, opset_imports=imports, producer_name="flock-tests")
    # What the exporter of that opset writes: IR 8 up to opset 18, 9 for 19-20, 10 for 21.
    m.ir_version = ir if ir is not None else (10 if opset >= 21 else 9 if opset >= 19 else 8)
    return m


class Writer:
    def __init__(self, out):
        self.out = out
        self.count = 0

    def _dir(self, name):
        d = os.path.join(self.out, "test_" + name)
        os.makedirs(d, exist_ok=True)
        return d

    def case(self, name, m, inputs, outputs, reference=None, reference_json=None):
        """`inputs` / `outputs`: lists of numpy arrays in graph order (outputs may hold None: not checked)."""
        d = self._dir(name)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(m.SerializeToString())
        if reference is not None:
            with open(os.path.join(d, "reference.onnx"), "wb") as f:
                f.write(reference.SerializeToString())
        if reference_json is not None:
            with open(os.path.join(d, "reference.json"), "wb") as f:
                f.write(reference_json)
        s = os.path.join(d, "test_data_set_0")
        os.makedirs(s, exist_ok=True)
        for k, a in enumerate(inputs):
            with open(os.path.join(s, f"input_{k}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(a).SerializeToString())
        for k, a in enumerate(outputs):
            if a is None:
                continue
            with open(os.path.join(s, f"output_{k}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(a).SerializeToString())
        self.count += 1

    def error(self, name, m, code, part):
        d = self._dir(name)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(m.SerializeToString())
        with open(os.path.join(d, "expect_error"), "w") as f:
            f.write(f"{code}\n{part}\n")
        self.count += 1


def unary_case(w, name, op, opset, x, y, **attrs):
    m = model([helper.make_node(op, ["x"], ["y"], **attrs)], [vi("x", type_of(x), list(x.shape))],
              [vi("y", type_of(y), list(y.shape))], opset)
    w.case(name, m, [x], [y])


# ---------------------------------------------------------------------------------------------
# ai.onnx 18-21


def reduce_cases(w):
    x = RNG.uniform(0.5, 2.0, (3, 4, 5)).astype(np.float32)
    # The spec's reference formulas, over `axes` with keepdims.
    formulas = {
        "ReduceL1": lambda a, ax, k: np.sum(np.abs(a), axis=ax, keepdims=k),
        "ReduceL2": lambda a, ax, k: np.sqrt(np.sum(np.square(a), axis=ax, keepdims=k)),
        "ReduceLogSum": lambda a, ax, k: np.log(np.sum(a, axis=ax, keepdims=k)),
        "ReduceLogSumExp": lambda a, ax, k: np.log(np.sum(np.exp(a), axis=ax, keepdims=k)),
        "ReduceMax": lambda a, ax, k: np.maximum.reduce(a, axis=ax, keepdims=k),
        "ReduceMin": lambda a, ax, k: np.minimum.reduce(a, axis=ax, keepdims=k),
        "ReduceMean": lambda a, ax, k: np.mean(a, axis=ax, keepdims=k),
        "ReduceProd": lambda a, ax, k: np.prod(a, axis=ax, keepdims=k),
        "ReduceSum": lambda a, ax, k: np.sum(a, axis=ax, keepdims=k),
        "ReduceSumSquare": lambda a, ax, k: np.sum(np.square(a), axis=ax, keepdims=k),
    }
    for op, f in formulas.items():
        for opset in (18, 21):
            for axes, keep in (([1], 1), ([0, 2], 0), ([-1], 1)):
                y = f(x.astype(np.float64), tuple(axes), bool(keep)).astype(np.float32)
                axes_t = numpy_helper.from_array(np.array(axes, np.int64), "axes")
                m = model([helper.make_node(op, ["x", "axes"], ["y"], keepdims=keep)], [vi("x", F, [3, 4, 5])],
                          [vi("y", F, list(y.shape))], opset, initializers=[axes_t])
                w.case(f"{op.lower()}_axes_input_{'_'.join(map(str, axes)).replace('-', 'm')}_keep{keep}_opset{opset}",
                       m, [x], [y])
            # axes as a graph input (not a constant): shapes inferred only by rank.
            y = f(x.astype(np.float64), (2,), True).astype(np.float32)
            m = model([helper.make_node(op, ["x", "axes"], ["y"])], [vi("x", F, [3, 4, 5]), vi("axes", I64, [1])],
                      [vi("y", F, [3, 4, 1])], opset)
            w.case(f"{op.lower()}_axes_runtime_opset{opset}", m, [x, np.array([2], np.int64)], [y])
        # No axes: all of them; noop_with_empty_axes=1: the input unchanged.
        y = f(x.astype(np.float64), None, True).astype(np.float32)
        m = model([helper.make_node(op, ["x"], ["y"])], [vi("x", F, [3, 4, 5])], [vi("y", F, [1, 1, 1])], 18)
        w.case(f"{op.lower()}_all_axes_opset18", m, [x], [y])
        # The spec: with noop_with_empty_axes and no axes, the input is returned as is ("input
        # tensor"), whatever the reduction.
        m = model([helper.make_node(op, ["x"], ["y"], noop_with_empty_axes=1)], [vi("x", F, [3, 4, 5])],
                  [vi("y", F, [3, 4, 5])], 18)
        w.case(f"{op.lower()}_noop_empty_axes_opset18", m, [x], [x])
    # Opset 20: ReduceMax / ReduceMin on bool (max = any, min = all).
    b = RNG.integers(0, 2, (4, 3)).astype(np.bool_)
    for op, f in (("ReduceMax", np.any), ("ReduceMin", np.all)):
        y = f(b, axis=1, keepdims=True)
        m = model([helper.make_node(op, ["x", "axes"], ["y"])], [vi("x", B, [4, 3])], [vi("y", B, [4, 1])], 20,
                  initializers=[numpy_helper.from_array(np.array([1], np.int64), "axes")])
        w.case(f"{op.lower()}_bool_opset20", m, [b], [y])
    # Bad input: axes both as attribute and input; axes as an input before opset 18.
    m = model([helper.make_node("ReduceMax", ["x", "axes"], ["y"], axes=[1])], [vi("x", F, [3, 4, 5])],
              [vi("y", F, [3, 1, 5])], 18, initializers=[numpy_helper.from_array(np.array([1], np.int64), "axes")])
    w.error("reducemax_axes_attribute_and_input_opset18", m, "InvalidModel", "axes")
    m = model([helper.make_node("ReduceMax", ["x"], ["y"], axes=[1])], [vi("x", F, [3, 4, 5])],
              [vi("y", F, [3, 1, 5])], 18)
    w.error("reducemax_axes_attribute_opset18", m, "InvalidModel", "axes")
    m = model([helper.make_node("ReduceMax", ["x", "axes"], ["y"])], [vi("x", F, [3, 4, 5])],
              [vi("y", F, [3, 1, 5])], 17, initializers=[numpy_helper.from_array(np.array([1], np.int64), "axes")])
    w.error("reducemax_axes_input_opset17", m, "InvalidModel", "input size 2")
    m = model([helper.make_node("ReduceMax", ["x", "axes"], ["y"])], [vi("x", B, [3, 4])], [vi("y", B, [3, 1])], 18,
              initializers=[numpy_helper.from_array(np.array([1], np.int64), "axes")])
    w.error("reducemax_bool_opset18", m, "InvalidModel", "bool")


def split_cases(w):
    x = RNG.normal(size=(2, 7)).astype(np.float32)
    # Split 18, num_outputs: parts of ceil(7 / 3) = 3, the last one smaller.
    parts = [x[:, 0:3], x[:, 3:6], x[:, 6:7]]
    m = model([helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3)], [vi("x", F, [2, 7])],
              [vi("a", F, [2, 3]), vi("b", F, [2, 3]), vi("c", F, [2, 1])], 18)
    w.case("split_num_outputs_uneven_opset18", m, [x], parts)
    y = x[:, :6]
    m = model([helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2)], [vi("x", F, [2, 6])],
              [vi("a", F, [2, 3]), vi("b", F, [2, 3])], 21)
    w.case("split_num_outputs_even_opset21", m, [y], [y[:, :3], y[:, 3:]])
    m = model([helper.make_node("Split", ["x", "split"], ["a", "b"], axis=1)], [vi("x", F, [2, 7])],
              [vi("a", F, [2, 2]), vi("b", F, [2, 5])], 18,
              initializers=[numpy_helper.from_array(np.array([2, 5], np.int64), "split")])
    w.case("split_sizes_input_opset18", m, [x], [x[:, :2], x[:, 2:]])
    m = model([helper.make_node("Split", ["x", "split"], ["a", "b"], axis=1, num_outputs=2)], [vi("x", F, [2, 7])],
              [vi("a", F, [2, 2]), vi("b", F, [2, 5])], 18,
              initializers=[numpy_helper.from_array(np.array([2, 5], np.int64), "split")])
    w.error("split_num_outputs_and_split_opset18", m, "InvalidModel", "num_outputs")
    m = model([helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=3)], [vi("x", F, [2, 7])],
              [vi("a", F, [2, 3]), vi("b", F, [2, 3])], 18)
    w.error("split_num_outputs_mismatch_opset18", m, "InvalidModel", "num_outputs")
    m = model([helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2)], [vi("x", F, [2, 6])],
              [vi("a", F, [2, 3]), vi("b", F, [2, 3])], 17)
    w.error("split_num_outputs_opset17", m, "InvalidModel", "num_outputs")
    m = model([helper.make_node("Split", ["x"], ["a", "b"], axis=1)], [vi("x", F, [2, 6])],
              [vi("a", F, [2, 3]), vi("b", F, [2, 3])], 18)
    w.error("split_neither_sizes_nor_num_outputs_opset18", m, "InvalidModel", "num_outputs")


def pad_cases(w):
    x = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    for opset in (18, 19, 21):
        for mode in ("constant", "reflect", "edge"):
            # Pad 18: axes [2, -2] with pads [1, 0, 2, 1]: begins for axes 2 and 1, then ends.
            pads = np.array([1, 0, 2, 1], np.int64)
            axes = np.array([2, -2], np.int64)
            width = [(0, 0), (0, 1), (1, 2)]
            y = np.pad(x, width, mode=mode, constant_values=1.5) if mode == "constant" else np.pad(x, width, mode=mode)
            inputs = ["x", "pads", "value" if mode == "constant" else "", "axes"]
            inits = [numpy_helper.from_array(pads, "pads"), numpy_helper.from_array(axes, "axes")]
            if mode == "constant":
                inits.append(numpy_helper.from_array(np.array(1.5, np.float32), "value"))
            m = model([helper.make_node("Pad", inputs, ["y"], mode=mode)], [vi("x", F, [2, 3, 4])],
                      [vi("y", F, list(y.shape))], opset, initializers=inits)
            w.case(f"pad_axes_{mode}_opset{opset}", m, [x], [y])
    m = model([helper.make_node("Pad", ["x", "pads"], ["y"], mode="wrap")], [vi("x", F, [2, 3, 4])],
              [vi("y", F, [2, 3, 6])], 19,
              initializers=[numpy_helper.from_array(np.array([0, 0, 1, 0, 0, 1], np.int64), "pads")])
    w.error("pad_wrap_opset19", m, "UnsupportedOperator", "mode 'wrap'")
    m = model([helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"])], [vi("x", F, [2, 3, 4])],
              [vi("y", F, [2, 3, 6])], 17,
              initializers=[numpy_helper.from_array(np.array([1, 1], np.int64), "pads"),
                            numpy_helper.from_array(np.array([2], np.int64), "axes")])
    w.error("pad_axes_opset17", m, "InvalidModel", "input size 4")


def resize_cases(w):
    x = RNG.normal(size=(1, 1, 2, 3)).astype(np.float32)
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    # Nearest, asymmetric, floor: each pixel repeated (spec: x_original = x_resized / scale).
    y = np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)
    for opset in (18, 19):
        m = model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest", antialias=0,
                                    keep_aspect_ratio_policy="stretch", coordinate_transformation_mode="asymmetric",
                                    nearest_mode="floor")],
                  [vi("x", F, [1, 1, 2, 3])], [vi("y", F, [1, 1, 4, 6])], opset, initializers=[scales])
        w.case(f"resize_nearest_defaults_opset{opset}", m, [x], [y])
    # Linear, align_corners on a 2-wide row to 3: the middle is the mean.
    x2 = np.array([[[[1.0, 3.0]]]], np.float32)
    m = model([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear",
                                coordinate_transformation_mode="align_corners")],
              [vi("x", F, [1, 1, 1, 2])], [vi("y", F, [1, 1, 1, 3])], 19,
              initializers=[numpy_helper.from_array(np.array([1, 1, 1, 3], np.int64), "sizes")])
    w.case("resize_linear_align_corners_opset19", m, [x2], [np.array([[[[1.0, 2.0, 3.0]]]], np.float32)])
    for name, attrs, part in (("antialias", {"antialias": 1}, "antialias"),
                              ("keep_aspect", {"keep_aspect_ratio_policy": "not_larger"}, "keep_aspect_ratio_policy"),
                              ("axes", {"axes": [2, 3]}, "axes")):
        inits = [scales] if name != "axes" else [numpy_helper.from_array(np.array([2, 2], np.float32), "scales")]
        m = model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear", **attrs)],
                  [vi("x", F, [1, 1, 2, 3])], [vi("y", F, [1, 1, 4, 6])], 18, initializers=inits)
        w.error(f"resize_{name}_opset18", m, "UnsupportedOperator", part)
    m = model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear",
                                coordinate_transformation_mode="half_pixel_symmetric")],
              [vi("x", F, [1, 1, 2, 3])], [vi("y", F, [1, 1, 4, 6])], 19, initializers=[scales])
    w.error("resize_half_pixel_symmetric_opset19", m, "UnsupportedOperator", "half_pixel_symmetric")
    m = model([helper.make_node("Resize", ["x", "", "scales"], ["y"], antialias=0)],
              [vi("x", F, [1, 1, 2, 3])], [vi("y", F, [1, 1, 4, 6])], 17, initializers=[scales])
    w.error("resize_antialias_opset17", m, "InvalidModel", "antialias")


def cast_cases(w):
    x = np.array([[1.5, -2.25, 1e10], [0.0, 3.0, -7.75]], np.float32)
    for opset in (19, 21):
        for to, np_t in ((D, np.float64), (I64, np.int64)):
            v = x if to == D else np.array([[1.5, -2.25, 1e6], [0.0, 3.0, -7.75]], np.float32)
            unary_case(w, f"cast_{np.dtype(np_t).name}_saturate_opset{opset}", "Cast", opset, v,
                       np.trunc(v).astype(np_t) if to == I64 else v.astype(np_t), to=to, saturate=1)
    m = model([helper.make_node("Cast", ["x"], ["y"], to=17, saturate=0)], [vi("x", F, [2, 3])],
              [vi("y", 17, [2, 3])], 19)
    w.error("cast_to_float8_opset19", m, "UnsupportedOperator", "FLOAT8E4M3FN, which Flock does not run")
    m = model([helper.make_node("Cast", ["x"], ["y"], to=F)], [vi("x", 22, [2, 3])], [vi("y", F, [2, 3])], 21)
    w.error("int4_input_opset21", m, "UnsupportedOperator", "INT4")
    m = model([helper.make_node("Cast", ["x"], ["y"], to=D, saturate=1)], [vi("x", F, [2, 3])], [vi("y", D, [2, 3])],
              17)
    w.error("cast_saturate_opset17", m, "InvalidModel", "saturate")


def misc_cases(w):
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    x[0, 0] = np.inf
    x[1, 1] = np.nan
    xd = x.astype(np.float64)
    sp = np.where(xd > 20, xd, np.log1p(np.exp(xd)))
    unary_case(w, "mish_opset18", "Mish", 18, x, (xd * np.tanh(sp)).astype(np.float32))
    unary_case(w, "isinf_opset20", "IsInf", 20, x, np.isinf(x))
    unary_case(w, "isnan_opset20", "IsNaN", 20, x, np.isnan(x))
    for opset in (19, 21):
        unary_case(w, f"identity_opset{opset}", "Identity", opset, x, x)
        m = model([helper.make_node("Shape", ["x"], ["y"], start=1)], [vi("x", F, [2, 3])], [vi("y", I64, [1])], opset)
        w.case(f"shape_start_opset{opset}", m, [x], [np.array([3], np.int64)])
        m = model([helper.make_node("Size", ["x"], ["y"])], [vi("x", F, [2, 3])], [vi("y", I64, [])], opset)
        w.case(f"size_opset{opset}", m, [x], [np.array(6, np.int64)])
        m = model([helper.make_node("Reshape", ["x", "s"], ["y"])], [vi("x", F, [2, 3])], [vi("y", F, [3, 2])], opset,
                  initializers=[numpy_helper.from_array(np.array([3, -1], np.int64), "s")])
        w.case(f"reshape_opset{opset}", m, [x], [x.reshape(3, 2)])
        m = model([helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array([2.5], np.float32))),
                   helper.make_node("Mul", ["x", "c"], ["y"])], [vi("x", F, [2, 3])], [vi("y", F, [2, 3])], opset)
        w.case(f"constant_opset{opset}", m, [x], [x * np.float32(2.5)])
    x3 = RNG.normal(size=(2, 1, 3)).astype(np.float32)
    unary_case(w, "flatten_opset21", "Flatten", 21, x3, x3.reshape(2, 3), axis=1)
    unary_case(w, "transpose_opset21", "Transpose", 21, x3, np.transpose(x3, (2, 0, 1)), perm=[2, 0, 1])
    m = model([helper.make_node("Squeeze", ["x", "a"], ["y"])], [vi("x", F, [2, 1, 3])], [vi("y", F, [2, 3])], 21,
              initializers=[numpy_helper.from_array(np.array([1], np.int64), "a")])
    w.case("squeeze_opset21", m, [x3], [x3.reshape(2, 3)])
    m = model([helper.make_node("Unsqueeze", ["x", "a"], ["y"])], [vi("x", F, [2, 1, 3])],
              [vi("y", F, [2, 1, 3, 1])], 21, initializers=[numpy_helper.from_array(np.array([-1], np.int64), "a")])
    w.case("unsqueeze_opset21", m, [x3], [x3.reshape(2, 1, 3, 1)])
    for opset in (20, 21):
        m = model([helper.make_node("ConstantOfShape", ["s"], ["y"],
                                    value=numpy_helper.from_array(np.array([7], np.int64)))],
                  [vi("s", I64, [2])], [vi("y", I64, ["a", "b"])], opset)
        w.case(f"constantofshape_opset{opset}", m, [np.array([2, 3], np.int64)], [np.full((2, 3), 7, np.int64)])
    # Equal 19: strings.
    a = np.array(["a", "b", "c"], dtype=object)
    b = np.array(["a", "x", "c"], dtype=object)
    m = model([helper.make_node("Equal", ["a", "b"], ["y"])], [vi("a", S, [3]), vi("b", S, [3])], [vi("y", B, [3])], 19)
    w.case("equal_string_opset19", m, [a, b], [a == b])
    m = model([helper.make_node("Equal", ["a", "b"], ["y"])], [vi("a", S, [3]), vi("b", S, [3])], [vi("y", B, [3])], 18)
    w.error("equal_string_opset18", m, "InvalidModel", "string")
    # AveragePool 19: dilations 1 as before; other dilations and ceil_mode refused.
    xp = RNG.normal(size=(1, 1, 4, 4)).astype(np.float32)
    yp = xp.reshape(1, 1, 2, 2, 2, 2).mean(axis=(3, 5))
    m = model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], dilations=[1, 1])],
              [vi("x", F, [1, 1, 4, 4])], [vi("y", F, [1, 1, 2, 2])], 19)
    w.case("averagepool_dilations_1_opset19", m, [xp], [yp])
    m = model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2])],
              [vi("x", F, [1, 1, 4, 4])], [vi("y", F, [1, 1, 2, 2])], 19)
    w.error("averagepool_dilations_2_opset19", m, "UnsupportedOperator", "dilations")
    m = model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)],
              [vi("x", F, [1, 1, 4, 4])], [vi("y", F, [1, 1, 2, 2])], 19)
    w.error("averagepool_ceil_mode_opset19", m, "UnsupportedOperator", "ceil_mode")


def version_cases(w):
    x = vi("x", F, [2, 3])
    y = vi("y", F, [2, 3])
    relu = [helper.make_node("Relu", ["x"], ["y"])]
    for opset in (18, 19, 20, 21):
        v = RNG.normal(size=(2, 3)).astype(np.float32)
        w.case(f"relu_opset{opset}", model(relu, [x], [y], opset), [v], [np.maximum(v, 0)])
    w.error("opset22", model(relu, [x], [y], 22), "UnsupportedOperator", "ai.onnx opset 22; Flock runs ai.onnx opsets 7 to 21")
    w.error("ml_opset6", model(relu, [x], [y], 21, ml=6), "UnsupportedOperator",
            "ai.onnx.ml opset 6; Flock runs ai.onnx.ml opsets 1 to 5")
    w.error("ir_version11", model(relu, [x], [y], 21, ir=11), "UnsupportedOperator", "IR version 11")
    g = [helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=1)]
    m = model(g, [vi("x", F, [2, 3, 4])], [vi("y", F, [2, 3, 4])], 18,
              initializers=[numpy_helper.from_array(np.ones(3, np.float32), "s"),
                            numpy_helper.from_array(np.zeros(3, np.float32), "b")])
    w.error("groupnormalization_opset18", m, "UnsupportedOperator", "GroupNormalization (ai.onnx opset 18) is not supported")
    m = model([helper.make_node("Gelu", ["x"], ["y"])], [x], [y], 20)
    w.error("gelu_opset20", m, "UnsupportedOperator", "Gelu (ai.onnx opset 20) is not supported")
    m = model([helper.make_node("ScatterElements", ["x", "i", "x"], ["y"], reduction="max")], [x], [y], 18,
              initializers=[numpy_helper.from_array(np.zeros((2, 3), np.int64), "i")])
    w.error("scatterelements_opset18", m, "UnsupportedOperator", "ScatterElements (ai.onnx opset 18) is not supported")


# ---------------------------------------------------------------------------------------------
# ai.onnx.ml 4: LabelEncoder with tensors


def label_encoder_cases(w):
    def le(name, x, keys, values, default, y):
        attrs = {"keys_tensor": numpy_helper.from_array(keys), "values_tensor": numpy_helper.from_array(values)}
        if default is not None:
            attrs["default_tensor"] = numpy_helper.from_array(default)
        m = model([helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml", **attrs)],
                  [vi("x", type_of(x), list(x.shape))], [vi("y", type_of(y), list(y.shape))], 21, ml=4)
        w.case(name, m, [x], [y])

    def lookup(x, keys, values, default):
        table = dict(zip(keys.tolist(), values.tolist()))
        return np.array([table.get(v, default) for v in x.tolist()], dtype=values.dtype)

    keys = np.array([3, 1, 7], np.int64)
    vals = np.array(["three", "one", "seven"], dtype=object)
    x = np.array([1, 2, 7, 3], np.int64)
    le("labelencoder_int64_to_string_default_ml4", x, keys, vals, np.array(["none"], dtype=object),
       lookup(x, keys, vals, "none"))
    kd = np.array([0.5, -1.25], np.float64)
    vd = np.array([10.0, 20.0], np.float64)
    xd = np.array([0.5, 0.0, -1.25], np.float64)
    le("labelencoder_double_to_double_default_ml4", xd, kd, vd, np.array([-1.0]), lookup(xd, kd, vd, -1.0))
    ks = np.array(["a", "b"], dtype=object)
    vf = np.array([1.5, 2.5], np.float32)
    xs = np.array(["b", "z", "a"], dtype=object)
    # No default_tensor: the default of the value type, default_float (-0.0).
    le("labelencoder_string_to_float_ml4", xs, ks, vf, None, lookup(xs, ks, vf, np.float32(-0.0)))
    m = model([helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml",
                                keys_tensor=numpy_helper.from_array(keys), keys_int64s=[1, 2],
                                values_tensor=numpy_helper.from_array(vals))],
              [vi("x", I64, [4])], [vi("y", S, [4])], 21, ml=4)
    w.error("labelencoder_keys_twice_ml4", m, "InvalidModel", "keys")
    m = model([helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml",
                                keys_tensor=numpy_helper.from_array(keys), values_tensor=numpy_helper.from_array(vals))],
              [vi("x", I64, [4])], [vi("y", S, [4])], 21, ml=3)
    w.error("labelencoder_keys_tensor_ml3", m, "InvalidModel", "keys_tensor")
    m = model([helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml",
                                keys_tensor=numpy_helper.from_array(keys), values_tensor=numpy_helper.from_array(vals),
                                default_tensor=numpy_helper.from_array(np.array([1.0], np.float32)))],
              [vi("x", I64, [4])], [vi("y", S, [4])], 21, ml=4)
    w.error("labelencoder_default_type_ml4", m, "InvalidModel", "default_tensor")


# ---------------------------------------------------------------------------------------------
# ai.onnx.ml 5: TreeEnsemble

AGG = {"AVERAGE": 0, "SUM": 1, "MIN": 2, "MAX": 3}
POST = {"NONE": 0, "SOFTMAX": 1, "LOGISTIC": 2, "SOFTMAX_ZERO": 3, "PROBIT": 4}
MODES = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3, "BRANCH_EQ": 4, "BRANCH_NEQ": 5}


def tree_ensemble_node(nodes, leaves, roots, n_targets, dtype=np.float32, aggregate="SUM", post="NONE",
                       members=None, name="te"):
    """nodes: (feature, mode, split, true (kind, index), false (kind, index), missing_true); kind 'n' or 'l'.
    leaves: (target, weight)."""
    attrs = dict(
        nodes_featureids=[n[0] for n in nodes],
        nodes_modes=numpy_helper.from_array(np.array([n[1] for n in nodes], np.uint8)),
        nodes_splits=numpy_helper.from_array(np.array([n[2] for n in nodes], dtype)),
        nodes_truenodeids=[n[3][1] for n in nodes], nodes_trueleafs=[int(n[3][0] == "l") for n in nodes],
        nodes_falsenodeids=[n[4][1] for n in nodes], nodes_falseleafs=[int(n[4][0] == "l") for n in nodes],
        nodes_missing_value_tracks_true=[n[5] for n in nodes],
        leaf_targetids=[t for t, _ in leaves],
        leaf_weights=numpy_helper.from_array(np.array([v for _, v in leaves], dtype)),
        tree_roots=list(roots), n_targets=n_targets, aggregate_function=AGG[aggregate],
        post_transform=POST[post])
    if members is not None:
        attrs["membership_values"] = numpy_helper.from_array(np.array(members, dtype))
    return helper.make_node("TreeEnsemble", ["X"], ["Y"], domain="ai.onnx.ml", name=name, **attrs)


def v3_to_v5(node, n_outputs, prefix, extra_leaves=()):
    """A TreeEnsembleRegressor / Classifier's trees as TreeEnsemble arrays. A leaf with several
    weights makes one copy of its tree per weight index (only valid for sums). `extra_leaves`:
    (target, weight) trees of one leaf each, appended (base values)."""
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    tree_ids, node_ids = a["nodes_treeids"], a["nodes_nodeids"]
    modes = [m.decode() for m in a["nodes_modes"]]
    pos = {(t, n): k for k, (t, n) in enumerate(zip(tree_ids, node_ids))}
    weights = {}
    for t, n, i, v in zip(a[prefix + "_treeids"], a[prefix + "_nodeids"], a[prefix + "_ids"], a[prefix + "_weights"]):
        weights.setdefault(pos[(t, n)], []).append((i, v))
    roots_v3 = [k for k in range(len(tree_ids)) if k == 0 or tree_ids[k] != tree_ids[k - 1]]
    copies = max(len(w) for w in weights.values())
    nodes, leaves, roots = [], [], []
    missing = a.get("nodes_missing_value_tracks_true", [0] * len(tree_ids))
    for root in roots_v3:
        for c in range(copies):
            def emit(k):
                if modes[k] == "LEAF":
                    ws = weights.get(k, [])
                    target, value = ws[c] if c < len(ws) else (ws[0][0] if ws else 0, 0.0)
                    leaves.append((target, value))
                    return ("l", len(leaves) - 1)
                me = len(nodes)
                nodes.append(None)
                t = emit(pos[(tree_ids[k], a["nodes_truenodeids"][k])])
                f = emit(pos[(tree_ids[k], a["nodes_falsenodeids"][k])])
                nodes[me] = (a["nodes_featureids"][k], MODES[modes[k]], a["nodes_values"][k], t, f, missing[k])
                return ("n", me)
            kind, index = emit(root)
            if kind == "l":  # a one-leaf tree: a root sending both sides to it
                nodes.append((0, 0, 0.0, ("l", index), ("l", index), 0))
                index = len(nodes) - 1
            roots.append(index)
    for target, value in extra_leaves:
        leaves.append((target, value))
        nodes.append((0, 0, 0.0, ("l", len(leaves) - 1), ("l", len(leaves) - 1), 0))
        roots.append(len(nodes) - 1)
    return nodes, leaves, roots


def converted_tree_cases(w, models_dir):
    import csv
    import json
    with open(os.path.join(models_dir, "manifest.json")) as f:
        manifest = json.load(f)
    entries = manifest["models"] if isinstance(manifest, dict) and "models" in manifest else manifest
    import onnx
    for name in ("diabetes_gb", "diabetes_rf", "diabetes_tree", "iris_gb", "iris_rf", "iris_tree"):
        path = os.path.join(models_dir, name + ".onnx")
        if not os.path.exists(path):
            continue
        old = onnx.load(path)
        node = old.graph.node[0]
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        regressor = node.op_type == "TreeEnsembleRegressor"
        n_out = a["n_targets"] if regressor else len(a["classlabels_int64s"])
        base = a.get("base_values", [])
        aggregate = a.get("aggregate_function", b"SUM").decode() if regressor else "SUM"
        if base and aggregate != "SUM":
            continue
        # Base values: trees of one leaf each, added after the others (the regressor adds them
        # after summing the trees, in double, like these leaves).
        extra = [(k, b) for k, b in enumerate(base)] if len(base) == n_out else []
        nodes, leaves, roots = v3_to_v5(node, n_out, "target" if regressor else "class", extra)
        post = a.get("post_transform", b"NONE").decode()
        te = tree_ensemble_node(nodes, leaves, roots, n_out, aggregate=aggregate, post=post)
        width = old.graph.input[0].type.tensor_type.shape.dim[1].dim_value
        m = model([te], [vi("X", F, ["N", width])], [vi("Y", F, ["N", n_out])], 21, ml=5)
        # The reference: the original model with only its score output (the probabilities).
        ref = onnx.ModelProto()
        ref.CopyFrom(old)
        keep = ref.graph.output[0 if regressor else 1]
        del ref.graph.output[:]
        ref.graph.output.append(keep)
        # Every row of the model's data set, as the database passes them (float32).
        data = name.rsplit("_", 1)[0]
        with open(os.path.join(models_dir, data + ".csv")) as f:
            rows = list(csv.reader(f))
        header, body = rows[0], rows[1:]
        cols = [i for i, h in enumerate(header) if h not in ("id", "target")]
        x = np.array([[float(r[i]) if r[i] != "" else np.nan for i in cols] for r in body], np.float32)
        w.case(f"treeensemble_from_{name}_ml5", m, [x], [None], reference=ref)


def csv_features(models_dir, data):
    import csv
    with open(os.path.join(models_dir, data + ".csv")) as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    cols = [i for i, h in enumerate(header) if h not in ("id", "target")]
    return np.array([[float(r[i]) if r[i] != "" else np.nan for i in cols] for r in body], np.float32)


def xgboost_tree_cases(w, models_dir):
    """XGBoost regression boosters as TreeEnsemble: x < split goes left (the true side), missing
    values go left when default_left, leaves hold split_conditions; base_score is a last one-leaf
    tree (the importer adds it after the trees' sum, in double, like a last leaf)."""
    import json
    for name in ("diabetes_xgb",):
        path = os.path.join(models_dir, name + ".json")
        if not os.path.exists(path):
            continue
        raw = open(path, "rb").read()
        learner = json.loads(raw)["learner"]
        if learner["objective"]["name"] != "reg:squarederror":
            continue
        nodes, leaves, roots = [], [], []
        for tree in learner["gradient_booster"]["model"]["trees"]:
            left, right = tree["left_children"], tree["right_children"]
            cond, feat, dleft = tree["split_conditions"], tree["split_indices"], tree["default_left"]

            def emit(v):
                if left[v] == -1:
                    leaves.append((0, np.float32(cond[v])))
                    return ("l", len(leaves) - 1)
                me = len(nodes)
                nodes.append(None)
                t, f = emit(left[v]), emit(right[v])
                nodes[me] = (feat[v], MODES["BRANCH_LT"], np.float32(cond[v]), t, f, int(dleft[v]))
                return ("n", me)
            kind, index = emit(0)
            if kind == "l":
                nodes.append((0, 0, 0.0, ("l", index), ("l", index), 0))
                index = len(nodes) - 1
            roots.append(index)
        base = learner["learner_model_param"]["base_score"].strip("[]")
        leaves.append((0, np.float32(float(base))))
        nodes.append((0, 0, 0.0, ("l", len(leaves) - 1), ("l", len(leaves) - 1), 0))
        roots.append(len(nodes) - 1)
        width = int(learner["learner_model_param"]["num_feature"])
        te = tree_ensemble_node(nodes, leaves, roots, 1)
        m = model([te], [vi("X", F, ["N", width])], [vi("Y", F, ["N", 1])], 21, ml=5)
        x = csv_features(models_dir, name.rsplit("_", 1)[0])
        x[::7, 1] = np.nan  # missing values: default_left decides
        w.case(f"treeensemble_from_{name}_ml5", m, [x], [None], reference_json=raw)


def ref_tree_walk(x_row, nodes, leaves, root, members):
    """The spec's walk (onnx reference op_tree_ensemble): the leaf a row reaches."""
    kind, k = "n", root
    n0 = nodes[root]
    if n0[3][0] == "l" and n0[4][0] == "l" and n0[3][1] == n0[4][1]:
        return leaves[n0[3][1]]
    while kind == "n":
        feature, mode, split, t, f, mt = nodes[k]
        v = x_row[feature]
        if math.isnan(v) and mt:
            go = True
        elif mode == 6:
            go = v in members[k]
        else:
            go = [v <= split, v < split, v >= split, v > split, v == split, v != split][mode]
        kind, k = t if go else f
    return leaves[k]


def membership_cases(w):
    # Two trees over 3 features. Tree 0: x0 in {1, 3, 5} ? (x2 <= 0.5 ? L0 : L1) : (x1 in {} ? L2 : L3)
    # Tree 1: x1 in {2, 4} (NaN to the true side) ? L4 : x0 > 2 ? L5 : L6
    nodes = [
        (0, 6, 0.0, ("n", 1), ("n", 2), 0),
        (2, 0, 0.5, ("l", 0), ("l", 1), 0),
        (1, 6, 0.0, ("l", 2), ("l", 3), 0),
        (1, 6, 0.0, ("l", 4), ("n", 4), 1),
        (0, 3, 2.0, ("l", 5), ("l", 6), 0),
    ]
    members_flat = [1, 3, 5, np.nan, np.nan, 2, 4, np.nan]  # nodes 0, 2 (empty), 3 in nodes_modes order
    sets = {0: {1.0, 3.0, 5.0}, 2: set(), 3: {2.0, 4.0}}
    x = np.array([[1, 0, 0], [3, 0, 1], [2, 2, 0], [2, 7, 0], [5, np.nan, 0.5], [np.nan, 4, 9], [4, np.nan, 0],
                  [0, 2, 0], [6, 6, 6], [5, 4, 0.25], [np.nan, np.nan, np.nan], [1, 1, 1]], np.float64)
    for dtype, elem in ((np.float32, F), (np.float64, D)):
        xt = x.astype(dtype)
        for n_targets, leaves in ((1, [(0, 1.0), (0, 2.0), (0, 4.0), (0, 8.0), (0, 16.0), (0, 32.0), (0, 64.0)]),
                                  (2, [(0, 1.0), (1, 2.0), (0, 4.0), (1, 8.0), (0, 0.5), (1, -3.0), (1, 0.25)])):
            for aggregate in ("SUM", "AVERAGE", "MIN", "MAX"):
                for post in (("NONE", "LOGISTIC", "SOFTMAX") if n_targets == 2 else ("NONE",)):
                    te = tree_ensemble_node(nodes, leaves, [0, 3], n_targets, dtype, aggregate, post, members_flat)
                    m = model([te], [vi("X", elem, ["N", 3])], [vi("Y", elem, ["N", n_targets])], 21, ml=5)
                    y = np.zeros((len(x), n_targets))
                    for r, row in enumerate(xt.astype(np.float64)):
                        got = [ref_tree_walk(row, nodes, leaves, root, sets) for root in (0, 3)]
                        for t in range(n_targets):
                            vals = [v for tt, v in got if tt == t]
                            if not vals:
                                y[r, t] = 0.0  # ORT: a target no leaf reached reads as 0
                            elif aggregate == "SUM":
                                y[r, t] = sum(vals)
                            elif aggregate == "AVERAGE":
                                y[r, t] = sum(vals) / 2
                            elif aggregate == "MIN":
                                y[r, t] = min(vals)
                            else:
                                y[r, t] = max(vals)
                        if post == "LOGISTIC":
                            y[r] = 1 / (1 + np.exp(-y[r]))
                        elif post == "SOFTMAX":
                            e = np.exp(y[r] - y[r].max())
                            y[r] = e / e.sum()
                    w.case(f"treeensemble_member_{np.dtype(dtype).name}_t{n_targets}_{aggregate.lower()}_"
                           f"{post.lower()}_ml5", m, [xt], [y.astype(dtype)])
    # An empty set sending missing values to the true side, and a node whose set is its split's
    # neighbour values (members are compared exactly, not as thresholds).
    small = [(0, 6, 0.0, ("l", 0), ("n", 1), 1), (1, 6, 0.0, ("l", 1), ("l", 2), 0)]
    small_sets = {0: set(), 1: {np.float32(0.1).item(), np.float32(-0.0).item()}}
    leaves = [(0, 1.0), (0, 2.0), (0, 3.0)]
    te = tree_ensemble_node(small, leaves, [0], 1, members=[np.nan, np.float32(0.1), -0.0, np.nan])
    m = model([te], [vi("X", F, ["N", 2])], [vi("Y", F, ["N", 1])], 21, ml=5)
    xs = np.array([[np.nan, 5], [0, np.float32(0.1)], [0, np.nextafter(np.float32(0.1), np.float32(1))], [1, 0.0],
                   [2, np.nan], [np.inf, -np.inf]], np.float32)
    ys = np.array([[ref_tree_walk(row, small, leaves, 0, small_sets)[1]] for row in xs.astype(np.float64)], np.float32)
    w.case("treeensemble_member_empty_set_missing_true_ml5", m, [xs], [ys])
    # Bad input.
    te = tree_ensemble_node(nodes, [(0, 1.0)] * 7, [0, 3], 1, members=[1, 3, 5, np.nan, np.nan, 2, 4])
    w.error("treeensemble_members_unterminated_ml5", model([te], [vi("X", F, ["N", 3])], [vi("Y", F, ["N", 1])], 21, ml=5),
            "InvalidModel", "membership_values")
    te = tree_ensemble_node(nodes, [(0, 1.0)] * 6, [0, 3], 1, members=members_flat)
    w.error("treeensemble_leaf_out_of_range_ml5", model([te], [vi("X", F, ["N", 3])], [vi("Y", F, ["N", 1])], 21, ml=5),
            "InvalidModel", "outside [0, 6)")
    te = tree_ensemble_node(nodes, [(1, 1.0)] * 7, [0, 3], 1, members=members_flat)
    w.error("treeensemble_target_out_of_range_ml5", model([te], [vi("X", F, ["N", 3])], [vi("Y", F, ["N", 1])], 21, ml=5),
            "InvalidModel", "outside [0, 1)")
    te = tree_ensemble_node(nodes, [(0, 1.0)] * 7, [0, 3], 1, members=members_flat, dtype=np.float64)
    w.error("treeensemble_split_type_ml5", model([te], [vi("X", F, ["N", 3])], [vi("Y", F, ["N", 1])], 21, ml=5),
            "InvalidModel", "nodes_splits")
    cyc = [(0, 0, 0.5, ("n", 1), ("l", 0), 0), (0, 0, 0.5, ("n", 0), ("l", 0), 0)]
    te = tree_ensemble_node(cyc, [(0, 1.0)], [0], 1)
    w.error("treeensemble_cycle_ml5", model([te], [vi("X", F, ["N", 1])], [vi("Y", F, ["N", 1])], 21, ml=5),
            "InvalidModel", "cycle")
    # One 20-branch tree shared by 3000 roots: copied per tree, past the budget (untrusted sizes).
    chain = [(0, 0, float(k), ("n", k + 1) if k < 19 else ("l", 20), ("l", k), 0) for k in range(20)]
    te = tree_ensemble_node(chain, [(0, 1.0)] * 21, [0] * 3000, 1)
    w.error("treeensemble_shared_roots_ml5", model([te], [vi("X", F, ["N", 1])], [vi("Y", F, ["N", 1])], 21, ml=5),
            "LimitExceeded", "expand to more than")
    te = tree_ensemble_node(nodes, [(0, 1.0)] * 7, [0, 3], 1, members=members_flat)
    w.error("treeensemble_ml4", model([te], [vi("X", F, ["N", 3])], [vi("Y", F, ["N", 1])], 21, ml=4),
            "UnsupportedOperator", "TreeEnsemble")
    reg = helper.make_node("TreeEnsembleRegressor", ["X"], ["Y"], domain="ai.onnx.ml", n_targets=1,
                           nodes_treeids=[0], nodes_nodeids=[0], nodes_featureids=[0], nodes_modes=["LEAF"],
                           nodes_values=[0.0], nodes_truenodeids=[0], nodes_falsenodeids=[0], target_treeids=[0],
                           target_nodeids=[0], target_ids=[0], target_weights=[1.0])
    w.error("treeensembleregressor_ml5", model([reg], [vi("X", F, ["N", 1])], [vi("Y", F, ["N", 1])], 21, ml=5),
            "UnsupportedOperator", "deprecated")
    w.case("treeensembleregressor_ml4", model([reg], [vi("X", F, ["N", 1])], [vi("Y", F, ["N", 1])], 21, ml=4),
           [np.zeros((2, 1), np.float32)], [np.ones((2, 1), np.float32)])


def contradiction_cases(w):
    """Declared types and shapes that contradict what the new operator versions produce: refused
    like those of older operators (the library's inference of Flock's schemas must hold)."""
    nodes = [(0, 0, 0.5, ("l", 0), ("l", 1), 0)]
    te = tree_ensemble_node(nodes, [(0, 1.0), (0, 2.0)], [0], 1)
    w.error("treeensemble_output_double_for_float_ml5",
            model([te], [vi("X", F, ["N", 1])], [vi("Y", D, ["N", 1])], 21, ml=5), "InvalidModel", "(FLOAT) vs (DOUBLE)")
    w.error("treeensemble_output_width_ml5",
            model([te], [vi("X", F, ["N", 1])], [vi("Y", F, ["N", 3])], 21, ml=5), "InvalidModel", "(1) vs (3)")
    le = helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml",
                          keys_tensor=numpy_helper.from_array(np.array([3, 1], np.int64)),
                          values_tensor=numpy_helper.from_array(np.array(["a", "b"], dtype=object)))
    w.error("labelencoder_output_type_ml4", model([le], [vi("x", I64, [4])], [vi("y", F, [4])], 21, ml=4),
            "InvalidModel", "(STRING) vs (FLOAT)")
    w.error("labelencoder_input_type_ml4", model([le], [vi("x", F, [4])], [vi("y", S, [4])], 21, ml=4),
            "InvalidModel", "its keys have")
    sp = helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2)
    w.error("split_num_outputs_shape_opset18",
            model([sp], [vi("x", F, [2, 7])], [vi("a", F, [2, 3]), vi("b", F, [2, 4])], 18), "InvalidModel",
            "(4) vs (3)")
    r = helper.make_node("ReduceMax", ["x", "axes"], ["y"], keepdims=0)
    w.error("reducemax_shape_opset18",
            model([r], [vi("x", F, [3, 4])], [vi("y", F, [3, 4])], 18,
                  initializers=[numpy_helper.from_array(np.array([1], np.int64), "axes")]),
            "InvalidModel", "differ in rank")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--models", help="tools/models/make_models.py output: its tree models converted to TreeEnsemble")
    args = p.parse_args()
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    w = Writer(args.out)
    reduce_cases(w)
    split_cases(w)
    pad_cases(w)
    resize_cases(w)
    cast_cases(w)
    misc_cases(w)
    version_cases(w)
    label_encoder_cases(w)
    membership_cases(w)
    contradiction_cases(w)
    if args.models:
        converted_tree_cases(w, args.models)
        xgboost_tree_cases(w, args.models)
    print(f"wrote {w.count} cases to {args.out}")


if __name__ == "__main__":
    main()
