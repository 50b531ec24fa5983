"""Tests of tools/models/make_torch_models.py (PyTorch -> ONNX test models and their oracle).

    /usr/bin/python3 -m pytest tests/tools/test_torch_models.py

The script runs within its time budget and is deterministic; every exported graph passes
onnx.checker (full check) and has the operators, inputs, outputs and metadata the manifest says;
the manifest and the CSVs agree; and the manifest's oracle (torch's own outputs) follows from the
written files alone: a small float64 numpy interpreter of the exported graphs, independent of
torch and of Flock's C++ runtime, reproduces it from the CSV rows.
"""

import csv
import json
import math
import os
import subprocess
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(REPO, "tools", "models", "make_torch_models.py")
PYTHON = "/usr/bin/python3"
TOL = 1e-5

# The operators each model is meant to exercise (the exporter must not fold them away, e.g.
# BatchNormalization into Conv) -- and all the operators it may use.
MEANT = {
    "torch_mlp": {"Sub", "Div", "Gemm", "LayerNormalization", "Erf", "Mul", "Add", "Relu", "Softmax", "ArgMax"},
    "torch_embed_mlp": {"Concat", "Sub", "Div", "Gather", "Flatten", "Gemm", "Relu", "Mul", "Add"},
    "torch_cnn1d": {"Unsqueeze", "Conv", "Relu", "BatchNormalization", "MaxPool", "GlobalAveragePool", "Flatten",
                    "Gemm", "Softmax", "ArgMax"},
}
ALLOWED = set().union(*MEANT.values()) | {"Constant", "Identity"}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("torch_models")
    t0 = time.time()
    subprocess.run([PYTHON, SCRIPT, "--out", str(out)], check=True, capture_output=True, text=True)
    return out, time.time() - t0


@pytest.fixture(scope="module")
def manifest(generated):
    return json.loads((generated[0] / "torch_manifest.json").read_text())


@pytest.fixture(scope="module")
def datasets(generated):
    return json.loads((generated[0] / "torch_datasets.json").read_text())


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _model(out, e):
    return onnx.load(str(out / e["file"]))


# --------------------------------------------------------------------------
# a float64 numpy interpreter for the operators the exported graphs use (test oracle only)


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv1d(x, w, b, a):
    (k,) = w.shape[2:]
    if a.get("group", 1) != 1 or list(a.get("dilations", [1])) != [1]:
        raise NotImplementedError("grouped / dilated Conv")
    p0, p1 = a.get("pads", [0, 0])
    (s,) = a.get("strides", [1])
    xp = np.pad(x, ((0, 0), (0, 0), (p0, p1)))
    n_out = (xp.shape[2] - k) // s + 1
    cols = np.stack([xp[:, :, i * s:i * s + k] for i in range(n_out)], axis=2)  # N, C, L', k
    y = np.einsum("nclk,ock->nol", cols, w)
    return y + (b[None, :, None] if b is not None else 0.0)


def _maxpool1d(x, a):
    (k,) = a["kernel_shape"]
    (s,) = a.get("strides", [1])
    p0, p1 = a.get("pads", [0, 0])
    if a.get("ceil_mode", 0) or list(a.get("dilations", [1])) != [1]:
        raise NotImplementedError("ceil_mode / dilated MaxPool")
    xp = np.pad(x, ((0, 0), (0, 0), (p0, p1)), constant_values=-np.inf)
    n_out = (xp.shape[2] - k) // s + 1
    return np.stack([xp[:, :, i * s:i * s + k].max(axis=2) for i in range(n_out)], axis=2)


def _layer_norm(x, scale, bias, a):
    axis = a.get("axis", -1) % x.ndim
    axes = tuple(range(axis, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + a.get("epsilon", 1e-5)) * scale
    return y + bias if bias is not None else y


def _run_node(op, xs, a):
    if op == "Constant":
        return numpy_helper.to_array(a["value"])
    if op in ("Add", "Sub", "Mul", "Div"):
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](xs[0], xs[1])
    if op == "Relu":
        return np.maximum(xs[0], 0.0)
    if op == "Erf":
        return np.vectorize(math.erf, otypes=[np.float64])(xs[0])
    if op == "Identity":
        return xs[0]
    if op == "Gemm":
        A = xs[0].T if a.get("transA", 0) else xs[0]
        B = xs[1].T if a.get("transB", 0) else xs[1]
        y = a.get("alpha", 1.0) * (A @ B)
        return y + a.get("beta", 1.0) * xs[2] if len(xs) > 2 else y
    if op == "LayerNormalization":
        return _layer_norm(xs[0], xs[1], xs[2] if len(xs) > 2 else None, a)
    if op == "BatchNormalization":
        x, scale, bias, mean, var = xs
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return ((x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + a.get("epsilon", 1e-5))
                * scale.reshape(shape) + bias.reshape(shape))
    if op == "Conv":
        return _conv1d(xs[0], xs[1], xs[2] if len(xs) > 2 else None, a)
    if op == "MaxPool":
        return _maxpool1d(xs[0], a)
    if op == "GlobalAveragePool":
        return xs[0].mean(axis=tuple(range(2, xs[0].ndim)), keepdims=True)
    if op == "Flatten":
        axis = a.get("axis", 1)
        return xs[0].reshape(int(np.prod(xs[0].shape[:axis])), -1)
    if op == "Unsqueeze":
        y = xs[0]
        for ax in sorted(int(v) % (xs[0].ndim + len(xs[1])) for v in xs[1]):
            y = np.expand_dims(y, ax)
        return y
    if op == "Concat":
        return np.concatenate(xs, axis=a["axis"])
    if op == "Gather":
        return np.take(xs[0], xs[1], axis=a.get("axis", 0))
    if op == "Softmax":
        axis = a.get("axis", -1)
        e = np.exp(xs[0] - xs[0].max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)
    if op == "ArgMax":
        if a.get("select_last_index", 0):
            raise NotImplementedError("select_last_index")
        return np.argmax(xs[0], axis=a.get("axis", 0), keepdims=bool(a.get("keepdims", 1))).astype(np.int64)
    raise NotImplementedError(op)


def run_graph(model, feeds):
    """Evaluates ``model`` in float64 on ``feeds`` (input name -> array); output name -> array."""
    env = {}
    for init in model.graph.initializer:
        v = numpy_helper.to_array(init)
        env[init.name] = v.astype(np.float64) if v.dtype.kind == "f" else v
    for inp in model.graph.input:
        f = feeds[inp.name]
        if inp.type.tensor_type.elem_type == TensorProto.FLOAT:
            env[inp.name] = np.asarray(f, dtype=np.float32).astype(np.float64)
        else:
            env[inp.name] = np.asarray(f, dtype=np.int64)
    for node in model.graph.node:
        xs = [env[i] if i else None for i in node.input]
        y = _run_node(node.op_type, xs, _attrs(node))
        if isinstance(y, np.ndarray) and y.dtype.kind == "f":
            y = y.astype(np.float64)
        env[node.output[0]] = y
    return {o.name: env[o.name] for o in model.graph.output}


def _feeds(e, rows):
    feeds = {}
    for name, cols in e["inputs"].items():
        if e["input_types"][name] == "int64":
            feeds[name] = np.array([[int(r[c]) for c in cols] for r in rows], dtype=np.int64)
        else:
            feeds[name] = np.array([[float(r[c]) for c in cols] for r in rows], dtype=np.float32)
    return feeds


# --------------------------------------------------------------------------
# the script and its files


def test_script_runs_within_budget(generated):
    out, elapsed = generated
    assert elapsed < 60, elapsed
    names = sorted(os.listdir(out))
    assert names == sorted(["torch_cancer.csv", "torch_customers.csv", "torch_waves.csv", "torch_datasets.json",
                            "torch_manifest.json", "torch_mlp.onnx", "torch_embed_mlp.onnx", "torch_cnn1d.onnx"])
    # nothing make_models.py writes into the same directory is touched
    assert all(n.startswith("torch_") for n in names)


def test_deterministic(generated, tmp_path):
    out, _ = generated
    subprocess.run([PYTHON, SCRIPT, "--out", str(tmp_path)], check=True, capture_output=True)
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path))
    for name in sorted(os.listdir(out)):
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_datasets_match_csvs(generated, datasets):
    out, _ = generated
    assert set(datasets) == {"torch_cancer", "torch_customers", "torch_waves"}
    for name, info in datasets.items():
        assert info["file"] == name + ".csv" and info["table"] == name and info["missing_values"] == {}
        rows = _read_csv(out / info["file"])
        assert len(rows) == info["rows"] > 100
        header = list(rows[0])
        assert header == [c["name"] for c in info["columns"]]
        assert header[0] == "id" and header[-1] == "target"
        assert [r["id"] for r in rows] == [str(i) for i in range(1, len(rows) + 1)]
        for c in info["columns"]:
            assert c["type"] in ("integer", "real", "double precision")
            assert c["name"].isidentifier() and c["name"] == c["name"].lower()
            for r in rows:
                v = r[c["name"]]
                assert v != ""
                if c["type"] == "integer":
                    assert str(int(v)) == v
                elif c["type"] == "real":  # exactly a float32, written as its shortest decimal
                    f = np.float32(v)
                    assert np.float32(float(v)) == f
                    assert np.format_float_positional(f, unique=True, trim="-") == v
    cols = [c["name"] for c in datasets["torch_waves"]["columns"]]
    assert cols[1:-1] == ["s%d" % i for i in range(32)]
    types = {c["name"]: c["type"] for c in datasets["torch_customers"]["columns"]}
    assert types["plan_code"] == types["region_code"] == types["channel_code"] == "integer"
    assert types["target"] == "double precision"


def test_manifest(generated, manifest, datasets):
    out, _ = generated
    assert [e["name"] for e in manifest] == ["torch_mlp", "torch_embed_mlp", "torch_cnn1d"]
    for e in manifest:
        assert e["format"] == "onnx" and e["file"] == e["name"] + ".onnx"
        assert e["task"] in ("classification", "regression")
        info = datasets[e["dataset"]]
        assert e["table"] == info["table"] and e["csv"] == info["file"]
        rows = _read_csv(out / info["file"])
        header = list(rows[0])
        types = {c["name"]: c["type"] for c in info["columns"]}
        assert set(e["features"]) <= set(header[1:-1])
        assert sum(e["inputs"].values(), []) == e["features"]
        assert set(e["input_types"]) == set(e["inputs"])
        for name, cols in e["inputs"].items():
            want = "int64" if types[cols[0]] == "integer" else "float"
            assert e["input_types"][name] == want
            assert {types[c] for c in cols} == {types[cols[0]]}
        if len(e["inputs"]) > 1:
            assert all(cols == [n] for n, cols in e["inputs"].items())
            assert not e["has_feature_names"]
        else:
            assert e["has_feature_names"]
        assert list(e["expected"]) == [r["id"] for r in rows]
        if e["task"] == "classification":
            assert e["outputs"] == {"label": "label", "probabilities": "probabilities"} and e["zipmap"] is False
            assert e["classes"] == list(range(len(e["classes"])))
            targets = {int(r["target"]) for r in rows}
            assert targets == set(e["classes"])
            labels = []
            for v in e["expected"].values():
                assert set(v) == {"label", "proba"} and len(v["proba"]) == len(e["classes"])
                assert abs(sum(v["proba"]) - 1) < 1e-5
                assert v["label"] == int(np.argmax(v["proba"]))
                labels.append(v["label"])
            # a real classifier: it predicts every class and mostly right
            assert set(labels) == targets
            acc = np.mean([v["label"] == int(r["target"]) for v, r in zip(e["expected"].values(), rows)])
            assert acc > 0.9, (e["name"], acc)
            # labels stay unambiguous under float32 rounding
            gaps = [np.diff(sorted(v["proba"]))[-1] for v in e["expected"].values()]
            assert min(gaps) > 1e-4, (e["name"], min(gaps))
        else:
            assert e["outputs"] == {"value": "variable"}
            got = np.array([v["value"] for v in e["expected"].values()])
            y = np.array([float(r["target"]) for r in rows])
            assert set(e["expected"]["1"]) == {"value"}
            assert 1 - ((got - y) ** 2).mean() / y.var() > 0.9, e["name"]  # R^2


def test_onnx_graphs(generated, manifest):
    out, _ = generated
    opsets = set()
    for e in manifest:
        model = _model(out, e)
        onnx.checker.check_model(model, full_check=True)
        assert model.producer_name == "pytorch"
        (opset,) = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
        assert 13 <= opset <= 17
        opsets.add(opset)
        assert not [i for i in model.graph.input if i.name in {t.name for t in model.graph.initializer}]
        assert [i.name for i in model.graph.input] == list(e["inputs"])
        for i in model.graph.input:
            t = i.type.tensor_type
            dims = t.shape.dim
            assert dims[0].dim_param and not dims[0].HasField("dim_value"), "dynamic batch axis"
            assert [d.dim_value for d in dims[1:]] == [len(e["inputs"][i.name])]  # [N, width]
            want = TensorProto.INT64 if e["input_types"][i.name] == "int64" else TensorProto.FLOAT
            assert t.elem_type == want, i.name
        outs = {o.name: o.type.tensor_type for o in model.graph.output}
        assert set(outs) == set(e["outputs"].values())
        for t in outs.values():
            assert t.shape.dim[0].dim_param
        if e["task"] == "classification":
            assert outs["label"].elem_type == TensorProto.INT64 and len(outs["label"].shape.dim) == 1
            assert outs["probabilities"].elem_type == TensorProto.FLOAT
            assert [d.dim_value for d in outs["probabilities"].shape.dim[1:]] == [len(e["classes"])]
        else:
            assert outs["variable"].elem_type == TensorProto.FLOAT
            assert [d.dim_value for d in outs["variable"].shape.dim[1:]] == [1]
        props = {p.key: p.value for p in model.metadata_props}
        assert ("feature_names" in props) == e["has_feature_names"]
        if e["has_feature_names"]:
            assert json.loads(props["feature_names"]) == e["features"]
        ops = {n.op_type for n in model.graph.node}
        assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
        assert MEANT[e["name"]] <= ops, (e["name"], sorted(MEANT[e["name"]] - ops))
        assert ops <= ALLOWED, (e["name"], sorted(ops - ALLOWED))
    assert len(opsets) > 1  # several opset versions of the same operators


def test_gelu_is_the_erf_pattern(generated, manifest):
    model = _model(generated[0], manifest[0])
    ops = [n.op_type for n in model.graph.node if n.op_type != "Constant"]
    i = ops.index("Erf")
    assert ops[i - 1:i + 4] == ["Div", "Erf", "Add", "Mul", "Mul"]


def test_expected_values_follow_from_the_files(generated, manifest):
    """The manifest's oracle (torch), recomputed from the ONNX files and CSV rows alone, batch-wise
    and row by row."""
    out, _ = generated
    for e in manifest:
        rows = _read_csv(out / e["csv"])
        model = _model(out, e)
        got = run_graph(model, _feeds(e, rows))
        one = [run_graph(model, _feeds(e, [r])) for r in rows[:5]]
        if e["task"] == "classification":
            exp = np.array([e["expected"][r["id"]]["proba"] for r in rows])
            np.testing.assert_allclose(got["probabilities"], exp, atol=TOL, rtol=0, err_msg=e["name"])
            np.testing.assert_array_equal(got["label"], [e["expected"][r["id"]]["label"] for r in rows],
                                          err_msg=e["name"])
            for k, o in enumerate(one):
                np.testing.assert_allclose(o["probabilities"][0], exp[k], atol=TOL, rtol=0)
        else:
            exp = np.array([e["expected"][r["id"]]["value"] for r in rows])
            assert got["variable"].shape == (len(rows), 1)
            np.testing.assert_allclose(got["variable"][:, 0], exp, rtol=TOL, atol=TOL, err_msg=e["name"])
            for k, o in enumerate(one):
                np.testing.assert_allclose(o["variable"][0, 0], exp[k], rtol=TOL, atol=TOL)


def test_interpreter_catches_a_wrong_graph(generated, manifest):
    """The oracle check is not vacuous: perturbing one BatchNormalization constant changes outputs."""
    out, _ = generated
    e = manifest[2]
    model = _model(out, e)
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    init = next(t for t in model.graph.initializer if t.name == bn.input[3])  # running mean
    arr = numpy_helper.to_array(init).copy()
    arr[0] += 0.5
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    rows = _read_csv(out / e["csv"])[:50]
    got = run_graph(model, _feeds(e, rows))["probabilities"]
    exp = np.array([e["expected"][r["id"]]["proba"] for r in rows])
    assert np.abs(got - exp).max() > 1e-3
