"""The benchmark's models: trained once on the generated data, cached in the work directory.

Each model is one `BenchModel`: the file flock registers (XGBoost JSON or ONNX), the file the
Python-side contenders load (the same XGBoost JSON, a sklearn pickle, a pickled torch nn.Sequential), and
how Python scores a whole matrix in memory (for export-to-Python) -- always returning the predicted
class label, like `flock.predict` does for a classifier, so the sums cross-check.
"""

import hashlib
import json
import os
import pickle
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools", "models"))

from data import FEATURES  # noqa: E402

TORCH_CHUNK = 16384  # rows per torch forward call on the Python side

# name -> (kind, description, parameters)
SPECS = {
    "xgb500d8": ("xgboost", "XGBoost binary:logistic, 500 trees, depth 8",
                 {"num_round": 500, "max_depth": 8, "eta": 0.1}),
    "xgb100d6": ("xgboost", "XGBoost binary:logistic, 100 trees, depth 6",
                 {"num_round": 100, "max_depth": 6, "eta": 0.3}),
    "logreg": ("sklearn", "sklearn LogisticRegression -> ONNX-ML (tools/models/sk2onnx.py)", {"C": 1.0}),
    "mlp": ("torch", "torch MLP 28-64-64-2 (ReLU), torch.onnx.export opset 13; eager torch in Python", {"hidden": 64, "epochs": 2}),
}


class BenchModel:
    def __init__(self, name, kind, description, flock_file, py_file):
        self.name = name
        self.kind = kind
        self.description = description
        self.flock_file = flock_file  # registered with flock.register_model
        self.py_file = py_file        # loaded by the Python contenders
        self._py = None

    @property
    def py_name(self):
        return {"xgboost": "xgboost", "sklearn": "sklearn", "torch": "torch"}[self.kind]

    @property
    def is_xgboost(self):
        return self.kind == "xgboost"

    def flock_bytes(self):
        with open(self.flock_file, "rb") as f:
            return f.read()

    # -- Python side, in memory (export-to-Python, and the in-memory peer of the non-XGBoost models)
    def load_python(self):
        if self._py is not None:
            return self._py
        if self.kind == "xgboost":
            import xgboost as xgb
            b = xgb.Booster()
            b.load_model(self.py_file)
            self._py = b
        elif self.kind == "sklearn":
            with open(self.py_file, "rb") as f:
                self._py = pickle.load(f)
        else:
            import torch
            self._py = torch.load(self.py_file).eval()
        return self._py

    def warm_up(self, X):
        """First calls are slower (lazy initialisation in sklearn, torch, xgboost): make them untimed."""
        for _ in range(2):
            self.predict_labels(X[:4096])

    def predict_labels(self, X, nthread=1):
        """Class label per row (float64): the whole matrix in one call (torch: in chunks of 16k rows)."""
        m = self.load_python()
        if self.kind == "xgboost":
            m.set_param({"nthread": nthread})
            return (m.inplace_predict(X) > 0.5).astype(np.float64)
        if self.kind == "sklearn":
            return m.predict(X).astype(np.float64)
        import torch
        torch.set_num_threads(nthread)
        # In chunks: on a million rows at once torch allocates ~256 MB per activation and runs ~25x
        # slower per row than on chunks of 16k rows (measured on the benchmark machine).
        out = np.empty(len(X), dtype=np.float64)
        with torch.inference_mode():
            for lo in range(0, len(X), TORCH_CHUNK):
                out[lo:lo + TORCH_CHUNK] = torch.argmax(m(torch.from_numpy(X[lo:lo + TORCH_CHUNK])), dim=1).numpy()
        return out


    def predict_scores(self, X):
        """Probability of class 1 per row (float64), what flock.predict_proba(...)[2] returns."""
        m = self.load_python()
        if self.kind == "xgboost":
            m.set_param({"nthread": 1})
            return m.inplace_predict(X).astype(np.float64)
        if self.kind == "sklearn":
            return m.predict_proba(X)[:, 1].astype(np.float64)
        import torch
        torch.set_num_threads(1)
        out = np.empty(len(X), dtype=np.float64)
        with torch.inference_mode():
            for lo in range(0, len(X), TORCH_CHUNK):
                out[lo:lo + TORCH_CHUNK] = torch.softmax(m(torch.from_numpy(X[lo:lo + TORCH_CHUNK])), dim=1)[:, 1].numpy()
        return out


def _key(name, params, train_rows, seed):
    blob = json.dumps([name, params, train_rows, seed, 3], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def _train_xgboost(X, y, params, path):
    import xgboost as xgb
    d = xgb.DMatrix(X, label=y, feature_names=list(FEATURES))
    p = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": params["max_depth"],
         "eta": params["eta"], "nthread": os.cpu_count() or 1, "seed": 0, "min_child_weight": 1}
    b = xgb.train(p, d, num_boost_round=params["num_round"])
    b.save_model(path)
    return path


def _train_logreg(X, y, params, onnx_path, pkl_path):
    import onnx
    from sklearn.linear_model import LogisticRegression
    import sk2onnx
    clf = LogisticRegression(C=params["C"], max_iter=500)
    clf.fit(X.astype(np.float64), y)
    onnx.save(sk2onnx.convert(clf, [("input", X.shape[1])], feature_names=list(FEATURES)), onnx_path)
    with open(pkl_path, "wb") as f:
        pickle.dump(clf, f)


def _train_mlp(X, y, params, onnx_path, ts_path):
    import io
    import onnx
    import torch
    from torch import nn
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    h = params["hidden"]
    net = nn.Sequential(nn.Linear(X.shape[1], h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))
    xt = torch.from_numpy(X)
    yt = torch.from_numpy(y.astype(np.int64))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(params["epochs"]):
        perm = torch.randperm(len(xt))
        for lo in range(0, len(xt), 1024):
            idx = perm[lo:lo + 1024]
            opt.zero_grad()
            loss_fn(net(xt[idx]), yt[idx]).backward()
            opt.step()
    net.eval()

    class Classifier(nn.Module):
        """(label, probabilities) from the logits, like tools/models/make_torch_models.py."""

        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            p = torch.softmax(self.body(x), dim=1)
            return torch.argmax(p, dim=1), p

    head = Classifier(net).eval()
    example = torch.zeros(4, X.shape[1])
    buf = io.BytesIO()
    torch.onnx.export(head, (example,), buf, input_names=["input"], output_names=["label", "probabilities"],
                      dynamic_axes={"input": {0: "N"}, "label": {0: "N"}, "probabilities": {0: "N"}},
                      opset_version=13, do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    onnx.helper.set_model_props(model, {"feature_names": json.dumps(list(FEATURES))})
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, onnx_path)
    # The Python side scores the logits (argmax of logits == argmax of softmax) with the eager
    # module; nn.Sequential of standard layers pickles without any class of ours.
    torch.save(net, ts_path)


def build(names, X, y, out_dir, seed, log=print):
    """Trains (or reuses from out_dir) the named models on (X, y); returns {name: BenchModel}."""
    os.makedirs(out_dir, exist_ok=True)
    out = {}
    for name in names:
        kind, desc, params = SPECS[name]
        key = _key(name, params, len(X), seed)
        base = os.path.join(out_dir, f"{name}-{key}")
        t0 = time.perf_counter()
        if kind == "xgboost":
            path = base + ".json"
            reused = os.path.exists(path)
            if not reused:
                tmp = base + ".tmp.json"  # xgboost picks the format from the extension
                _train_xgboost(X, y, params, tmp)
                os.replace(tmp, path)
            out[name] = BenchModel(name, kind, desc, path, path)
        elif kind == "sklearn":
            onnx_path, pkl_path = base + ".onnx", base + ".pkl"
            reused = os.path.exists(onnx_path) and os.path.exists(pkl_path)
            if not reused:
                _train_logreg(X, y, params, onnx_path, pkl_path)
            out[name] = BenchModel(name, kind, desc, onnx_path, pkl_path)
        else:
            onnx_path, ts_path = base + ".onnx", base + ".pt"
            reused = os.path.exists(onnx_path) and os.path.exists(ts_path)
            if not reused:
                _train_mlp(X, y, params, onnx_path, ts_path)
            out[name] = BenchModel(name, kind, desc, onnx_path, ts_path)
        log(f"   model {name}: {'reused' if reused else 'trained'} ({time.perf_counter() - t0:.1f} s) {desc}")
    return out


# ------------------------------------------------------------------------------------------------
# PL/Python: one function per model kind. The model is loaded once per session (GD) from a file the
# server can read; each call scores one row (a float4[] of the features in model order).

PLPY_FUNCTIONS = {
    "xgboost": """
CREATE OR REPLACE FUNCTION bench_plpy_xgb(path text, x float4[]) RETURNS float8 AS $$
b = GD.get(path)
if b is None:
    import numpy, xgboost
    b = xgboost.Booster()
    b.load_model(path)
    b.set_param({"nthread": 1})
    GD[path] = b
    GD["np"] = numpy
np = GD["np"]
return float(b.inplace_predict(np.asarray(x, dtype=np.float32).reshape(1, -1))[0] > 0.5)
$$ LANGUAGE plpython3u STABLE""",
    "sklearn": """
CREATE OR REPLACE FUNCTION bench_plpy_sklearn(path text, x float4[]) RETURNS float8 AS $$
m = GD.get(path)
if m is None:
    import pickle, numpy
    with open(path, "rb") as f:
        m = pickle.load(f)
    GD[path] = m
    GD["np"] = numpy
np = GD["np"]
return float(m.predict(np.asarray(x, dtype=np.float32).reshape(1, -1))[0])
$$ LANGUAGE plpython3u STABLE""",
    "torch": """
CREATE OR REPLACE FUNCTION bench_plpy_torch(path text, x float4[]) RETURNS float8 AS $$
m = GD.get(path)
if m is None:
    import torch
    torch.set_num_threads(1)
    m = torch.load(path).eval()
    GD[path] = m
    GD["torch"] = torch
torch = GD["torch"]
with torch.inference_mode():
    return float(torch.argmax(m(torch.tensor(x, dtype=torch.float32).reshape(1, -1)), dim=1)[0])
$$ LANGUAGE plpython3u STABLE""",
}

PLPY_FUNCTION_NAME = {"xgboost": "bench_plpy_xgb", "sklearn": "bench_plpy_sklearn", "torch": "bench_plpy_torch"}
