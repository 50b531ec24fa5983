#!/usr/bin/python3
"""Trains Flock's deterministic PyTorch test models and writes them, their data and oracles.

    /usr/bin/python3 tools/models/make_torch_models.py --out DIR

writes into DIR (next to make_models.py's files; no name is shared with them):

* ``torch_cancer.csv``: sklearn's breast-cancer data (same snake_case columns
  as make_models.py's ``breast_cancer.csv``);
* ``torch_customers.csv``: generated customers with numeric columns ``age,
  income, tenure_months, monthly_spend, support_calls`` (``real``), integer
  coded categories ``plan_code, region_code, channel_code`` (``integer``) and
  a numeric target ``annual_value``;
* ``torch_waves.csv``: generated noisy sine / square / sawtooth sequences of
  length 32 in columns ``s0 .. s31`` and their class in ``target``;
* ``torch_datasets.json``: per data set its CSV file, row count and SQL column
  types (the format of make_models.py's ``datasets.json``);
* three ONNX models exported with ``torch.onnx.export`` (dynamic batch axis):

  - ``torch_mlp`` (opset 17): breast-cancer classifier, one ``input`` [N, 30]
    of raw features, standardized inside the graph (Sub/Div by constants), then
    Linear-LayerNorm-GELU-Dropout-Linear-ReLU-Dropout-Linear;
  - ``torch_embed_mlp`` (opset 14): regressor with one [N, 1] graph input per
    column -- float for the numbers, int64 for the category codes (nn.Embedding,
    i.e. Gather) -- concatenated inside the graph;
  - ``torch_cnn1d`` (opset 13): 3-class sequence classifier, input [N, 32]
    unsqueezed to [N, 1, 32], Conv1d-ReLU-BatchNorm1d-MaxPool1d twice, global
    average pool, Flatten, Linear.

  Classifiers output ``label`` (int64 [N], argmax) and ``probabilities``
  (softmax, float [N, C]); the regressor outputs ``variable`` (float [N, 1]).
  Single-vector-input models carry their column names in metadata_props
  ``feature_names`` (JSON array);
* ``torch_manifest.json``: one entry per model in make_models.py's manifest
  format, with ``expected`` = torch's own outputs (``model.eval()``,
  ``torch.no_grad()``) on the float32 / int64 values exactly as the database
  passes them, for every CSV row.

Everything is seeded and single-threaded: two runs produce byte-identical files.
"""

import argparse
import csv
import io
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SEED = 20240611
SEQ_LEN = 32
WAVE_CLASSES = ["sine", "square", "sawtooth"]

CUSTOMER_NUMERIC = ["age", "income", "tenure_months", "monthly_spend", "support_calls"]
# category column -> number of codes (0 .. n-1)
CUSTOMER_CATEGORIES = {"plan_code": 4, "region_code": 6, "channel_code": 3}


def fmt_number(v):
    """Shortest decimal that round-trips float32 ``v`` (as make_models.py writes them)."""
    f = np.float32(v)
    assert not np.isnan(f)
    s = np.format_float_positional(f, unique=True, trim="-")
    assert np.float32(float(s)) == f, (v, s)
    return s


def _snake(name):
    import re

    name = re.sub(r"\(.*?\)", "", name)
    name = re.sub(r"[^0-9a-zA-Z]+", "_", name.strip().lower())
    return name.strip("_")


# --------------------------------------------------------------------------
# data sets


class Dataset:
    """Feature columns with their SQL types; ``X`` holds float32 (``real``) and
    int64 (``integer``) columns as a float64 matrix of exactly those values."""

    def __init__(self, name, columns, types, X, y, task):
        self.name = name
        self.table = name
        self.columns = list(columns)
        self.types = dict(types)
        self.X = X
        self.y = y
        self.task = task

    @property
    def ids(self):
        return list(range(1, len(self.y) + 1))

    def floats(self, cols=None):
        cols = cols or self.columns
        return np.asarray(self.X[:, [self.columns.index(c) for c in cols]], dtype=np.float32)

    def ints(self, cols):
        return np.asarray(self.X[:, [self.columns.index(c) for c in cols]], dtype=np.int64)

    def target_type(self):
        if self.task == "classification" or np.all(np.mod(self.y, 1) == 0):
            return "integer"
        return "double precision"


def cancer_dataset():
    from sklearn import datasets

    d = datasets.load_breast_cancer()
    cols = [_snake(c) for c in d.feature_names]
    X = np.asarray(d.data, dtype=np.float32).astype(np.float64)
    return Dataset("torch_cancer", cols, {c: "real" for c in cols}, X, d.target.astype(np.int64),
                   "classification")


def customers_dataset(n=1000):
    rs = np.random.RandomState(SEED + 1)
    age = rs.randint(18, 80, n).astype(np.float64)
    income = np.round(rs.lognormal(10.8, 0.45, n), 2)
    tenure = rs.randint(0, 121, n).astype(np.float64)
    spend = np.round(rs.gamma(4.0, 15.0, n), 2)
    calls = rs.poisson(1.5, n).astype(np.float64)
    plan = rs.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])
    region = rs.choice(6, n, p=[0.25, 0.2, 0.2, 0.15, 0.1, 0.1])
    channel = rs.choice(3, n, p=[0.5, 0.3, 0.2])
    plan_effect = np.array([0.0, 250.0, 600.0, 1100.0])[plan]
    region_effect = np.array([0.0, 80.0, -60.0, 150.0, -120.0, 40.0])[region]
    channel_mult = np.array([1.0, 1.15, 0.85])[channel]
    value = (12.0 * spend * channel_mult + 0.004 * income + 6.0 * np.sqrt(tenure) * (1 + plan)
             - 45.0 * calls ** 1.3 - 0.08 * (age - 45.0) ** 2 + plan_effect + region_effect
             + rs.normal(0.0, 60.0, n))
    numeric = np.column_stack([age, income, tenure, spend, calls]).astype(np.float32).astype(np.float64)
    X = np.column_stack([numeric, plan, region, channel]).astype(np.float64)
    cols = CUSTOMER_NUMERIC + list(CUSTOMER_CATEGORIES)
    types = {c: "real" for c in CUSTOMER_NUMERIC}
    types.update({c: "integer" for c in CUSTOMER_CATEGORIES})
    return Dataset("torch_customers", cols, types, X, np.round(value, 2), "regression")


def waves_dataset(n=900):
    rs = np.random.RandomState(SEED + 2)
    y = np.arange(n) % len(WAVE_CLASSES)
    rs.shuffle(y)
    t = np.arange(SEQ_LEN, dtype=np.float64)
    cycles = rs.uniform(1.0, 4.0, n)[:, None]
    phase = rs.uniform(0.0, 1.0, n)[:, None]
    amp = rs.uniform(0.5, 2.0, n)[:, None]
    offset = rs.normal(0.0, 0.3, n)[:, None]
    u = (t[None, :] * cycles / SEQ_LEN + phase) % 1.0  # position within a cycle
    sine = np.sin(2 * np.pi * u)
    square = np.where(u < 0.5, 1.0, -1.0)
    saw = 2.0 * u - 1.0
    clean = np.where(y[:, None] == 0, sine, np.where(y[:, None] == 1, square, saw))
    X = offset + amp * clean + rs.normal(0.0, 0.35, (n, SEQ_LEN))
    X = np.round(X, 4).astype(np.float32).astype(np.float64)
    cols = ["s%d" % i for i in range(SEQ_LEN)]
    return Dataset("torch_waves", cols, {c: "real" for c in cols}, X, y.astype(np.int64), "classification")


def write_csv(d, path):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["id"] + d.columns + ["target"])
        for i, row in zip(d.ids, d.X):
            cells = [str(i)]
            for c, v in zip(d.columns, row):
                cells.append(str(int(v)) if d.types[c] == "integer" else fmt_number(v))
            t = d.y[i - 1]
            cells.append(str(int(t)) if float(t).is_integer() else repr(float(t)))
            w.writerow(cells)


def dataset_info(d):
    return {
        "file": d.name + ".csv",
        "table": d.table,
        "rows": len(d.y),
        "columns": [{"name": "id", "type": "integer"}]
        + [{"name": c, "type": d.types[c]} for c in d.columns]
        + [{"name": "target", "type": d.target_type()}],
        "missing_values": {},
    }


# --------------------------------------------------------------------------
# models


def _nets():
    import torch
    from torch import nn

    class Standardize(nn.Module):
        """(x - mean) / std with the training statistics as constants."""

        def __init__(self, X):
            super().__init__()
            X = np.asarray(X, dtype=np.float64)
            std = X.std(axis=0)
            std[std == 0] = 1.0
            self.register_buffer("mean", torch.tensor(X.mean(axis=0), dtype=torch.float32))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

        def forward(self, x):
            return (x - self.mean) / self.std

    class Classifier(nn.Module):
        """Exported head of a classifier: (label, probabilities) from the logits."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, *xs):
            p = torch.softmax(self.net(*xs), dim=1)
            return torch.argmax(p, dim=1), p

    class MLP(nn.Module):
        def __init__(self, X):
            super().__init__()
            self.scale = Standardize(X)
            self.body = nn.Sequential(
                nn.Linear(X.shape[1], 64), nn.LayerNorm(64), nn.GELU(), nn.Dropout(0.1),
                nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1),
                nn.Linear(32, 2))

        def forward(self, x):
            return self.body(self.scale(x))

    class EmbedMLP(nn.Module):
        """One [N, 1] input per column: numbers (float) and category codes (int64)."""

        def __init__(self, Xnum, cardinalities, dims, y_mean, y_std):
            super().__init__()
            self.scale = Standardize(Xnum)
            self.embeddings = nn.ModuleList(nn.Embedding(c, d) for c, d in zip(cardinalities, dims))
            self.n_numeric = Xnum.shape[1]
            self.body = nn.Sequential(
                nn.Linear(Xnum.shape[1] + sum(dims), 32), nn.ReLU(),
                nn.Linear(32, 16), nn.ReLU(),
                nn.Linear(16, 1))
            self.register_buffer("y_mean", torch.tensor([y_mean], dtype=torch.float32))
            self.register_buffer("y_std", torch.tensor([y_std], dtype=torch.float32))

        def forward(self, *cols):
            num = self.scale(torch.cat(cols[:self.n_numeric], dim=1))
            embs = [torch.flatten(e(c), 1) for e, c in zip(self.embeddings, cols[self.n_numeric:])]
            return self.body(torch.cat([num] + embs, dim=1)) * self.y_std + self.y_mean

    class CNN1d(nn.Module):
        def __init__(self, n_classes):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv1d(1, 8, kernel_size=5, padding=2), nn.ReLU(), nn.BatchNorm1d(8), nn.MaxPool1d(2),
                nn.Conv1d(8, 16, kernel_size=3, padding=1), nn.ReLU(), nn.BatchNorm1d(16), nn.MaxPool1d(2),
                nn.AdaptiveAvgPool1d(1), nn.Flatten())
            self.head = nn.Linear(16, n_classes)

        def forward(self, x):
            return self.head(self.features(torch.unsqueeze(x, 1)))

    return MLP, EmbedMLP, CNN1d, Classifier


def _train(net, inputs, target, loss_fn, epochs, batch_size, lr, weight_decay=0.0):
    """Adam over seeded shuffled mini-batches; ``inputs`` is a list of tensors."""
    import torch

    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(target)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for k in range(0, n, batch_size):
            idx = perm[k:k + batch_size]
            opt.zero_grad()
            loss = loss_fn(net(*[x[idx] for x in inputs]), target[idx])
            loss.backward()
            opt.step()
    net.eval()
    return net


def _export(module, args, input_names, output_names, opset, feature_names, doc):
    import onnx
    import torch

    module.eval()
    buf = io.BytesIO()
    dynamic = {n: {0: "N"} for n in list(input_names) + list(output_names)}
    torch.onnx.export(module, tuple(args), buf, input_names=list(input_names), output_names=list(output_names),
                      dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    if feature_names is not None:
        onnx.helper.set_model_props(model, {"feature_names": json.dumps(list(feature_names))})
    model.doc_string = doc
    onnx.checker.check_model(model, full_check=True)
    return model


def _entry(name, d, estimator, features, inputs, input_types, has_names):
    return {
        "name": name,
        "file": name + ".onnx",
        "format": "onnx",
        "dataset": d.name,
        "table": d.table,
        "csv": d.name + ".csv",
        "estimator": estimator,
        "task": d.task,
        "features": list(features),
        "inputs": inputs,
        "input_types": input_types,
        "has_feature_names": has_names,
    }


def _classification(entry, ids, classes, label, proba):
    entry["classes"] = list(classes)
    entry["zipmap"] = False
    entry["outputs"] = {"label": "label", "probabilities": "probabilities"}
    entry["expected"] = {str(i): {"label": int(lab), "proba": [float(p) for p in row]}
                         for i, lab, row in zip(ids, label.tolist(), proba.tolist())}
    return entry


def build_mlp(d, MLP, Classifier):
    import torch

    X = torch.from_numpy(d.floats())
    y = torch.from_numpy(d.y)
    net = _train(MLP(d.floats()), [X], y, torch.nn.functional.cross_entropy,
                 epochs=10, batch_size=32, lr=1e-3, weight_decay=1e-4)
    clf = Classifier(net).eval()
    with torch.no_grad():
        label, proba = clf(X)
    model = _export(clf, [X[:2]], ["input"], ["label", "probabilities"], 17, d.columns,
                    "Flock test model torch_mlp (breast cancer): MLP with LayerNorm, GELU, Dropout")
    entry = _entry("torch_mlp", d, "torch MLP 30-64-32-2 (LayerNorm, GELU, ReLU, Dropout)", d.columns,
                   {"input": list(d.columns)}, {"input": "float"}, True)
    return model, _classification(entry, d.ids, [0, 1], label.numpy(), proba.numpy())


def build_embed_mlp(d, EmbedMLP):
    import torch

    cats = list(CUSTOMER_CATEGORIES)
    Xnum = d.floats(CUSTOMER_NUMERIC)
    Xcat = d.ints(cats)
    y = d.y.astype(np.float64)
    cols = [torch.from_numpy(Xnum[:, [k]].copy()) for k in range(Xnum.shape[1])]
    cols += [torch.from_numpy(Xcat[:, [k]].copy()) for k in range(Xcat.shape[1])]
    net = EmbedMLP(Xnum, [CUSTOMER_CATEGORIES[c] for c in cats], [3, 4, 2], y.mean(), y.std())
    target = torch.from_numpy(y.astype(np.float32)[:, None])

    def loss(pred, t):  # on the standardized target
        return torch.nn.functional.mse_loss((pred - net.y_mean) / net.y_std, (t - net.y_mean) / net.y_std)

    _train(net, cols, target, loss, epochs=40, batch_size=64, lr=5e-3)
    with torch.no_grad():
        value = net(*cols)
    names = CUSTOMER_NUMERIC + cats
    model = _export(net, [c[:2] for c in cols], names, ["variable"], 14, None,
                    "Flock test model torch_embed_mlp (customers): numeric columns + embedded category codes")
    types = {c: "float" for c in CUSTOMER_NUMERIC}
    types.update({c: "int64" for c in cats})
    entry = _entry("torch_embed_mlp", d, "torch MLP over 5 numbers + 3 nn.Embedding categories", names,
                   {c: [c] for c in names}, types, False)
    entry["outputs"] = {"value": "variable"}
    entry["expected"] = {str(i): {"value": float(v)} for i, v in zip(d.ids, value.numpy()[:, 0].tolist())}
    return model, entry


def build_cnn(d, CNN1d, Classifier):
    import torch

    X = torch.from_numpy(d.floats())
    y = torch.from_numpy(d.y)
    net = _train(CNN1d(len(WAVE_CLASSES)), [X], y, torch.nn.functional.cross_entropy,
                 epochs=20, batch_size=64, lr=5e-3)
    clf = Classifier(net).eval()
    with torch.no_grad():
        label, proba = clf(X)
    model = _export(clf, [X[:2]], ["input"], ["label", "probabilities"], 13, d.columns,
                    "Flock test model torch_cnn1d (waves): Conv1d, BatchNorm1d, MaxPool1d, global average pool")
    entry = _entry("torch_cnn1d", d, "torch 1-D CNN (Conv1d, ReLU, BatchNorm1d, MaxPool1d, AdaptiveAvgPool1d)",
                   d.columns, {"input": list(d.columns)}, {"input": "float"}, True)
    entry["class_names"] = list(WAVE_CLASSES)
    return model, _classification(entry, d.ids, list(range(len(WAVE_CLASSES))), label.numpy(), proba.numpy())


# --------------------------------------------------------------------------
# output: the same layout as make_models.py's manifest.json / datasets.json

from make_models import write_datasets, write_manifest  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory (created if missing)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()

    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    MLP, EmbedMLP, CNN1d, Classifier = _nets()

    data = [cancer_dataset(), customers_dataset(), waves_dataset()]
    infos = {}
    for d in data:
        write_csv(d, os.path.join(args.out, d.name + ".csv"))
        infos[d.name] = dataset_info(d)
    write_datasets(infos, os.path.join(args.out, "torch_datasets.json"))

    cancer, customers, waves = data
    built = []
    torch.manual_seed(SEED)
    built.append(build_mlp(cancer, MLP, Classifier))
    torch.manual_seed(SEED)
    built.append(build_embed_mlp(customers, EmbedMLP))
    torch.manual_seed(SEED)
    built.append(build_cnn(waves, CNN1d, Classifier))
    for model, entry in built:
        with open(os.path.join(args.out, entry["file"]), "wb") as fh:
            fh.write(model.SerializeToString())
    entries = [e for _, e in built]
    write_manifest(entries, os.path.join(args.out, "torch_manifest.json"))
    print("wrote %d torch models, %d data sets to %s in %.1fs"
          % (len(entries), len(data), args.out, time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
