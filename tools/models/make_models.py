#!/usr/bin/python3
"""Trains Flock's deterministic test models and writes them, their data and oracles.

    /usr/bin/python3 tools/models/make_models.py --out DIR

writes into DIR:

* one CSV per data set (breast_cancer, diabetes, iris, wine from sklearn's
  bundled data, and a generated ``customers`` set with numeric columns, string
  categorical columns and missing numeric values): ``id`` (1..N) first, then
  the snake_case feature columns, then ``target``.  Numbers are the shortest
  decimal that round-trips the float32 value (so ``real`` and
  ``double precision -> float4`` both load exactly what the models saw);
  missing values are empty fields (NULL with ``COPY ... CSV HEADER``);
* ``datasets.json``: per data set its CSV file, row count and SQL column types;
* ``*.onnx`` models exported with sk2onnx.py and ``*.json`` XGBoost models
  (``Booster.save_model``, with feature names set);
* ``manifest.json``: one entry per model (see README.md), including the
  expected output for every CSV row -- sklearn / xgboost's own predictions on
  the features as the database passes them (float32).

Everything is seeded, single-threaded and written in a fixed order: two runs
produce byte-identical files.
"""

import argparse
import csv
import json
import os
import re
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import sk2onnx  # noqa: E402

SEED = 20240611


# --------------------------------------------------------------------------
# data sets


class Dataset:
    def __init__(self, name, columns, X, y, types, task, train_mask=None):
        self.name = name
        self.columns = list(columns)  # feature columns, CSV order
        self.X = X  # float32 array, or object array (customers)
        self.y = y
        self.types = types  # column -> SQL type
        self.task = task
        self.train = np.ones(len(y), dtype=bool) if train_mask is None else train_mask

    @property
    def ids(self):
        return list(range(1, len(self.y) + 1))

    def numeric(self, columns=None):
        """float32 matrix of the given (numeric) columns, NaN for missing."""
        cols = columns or self.columns
        idx = [self.columns.index(c) for c in cols]
        return np.asarray(self.X[:, idx], dtype=np.float32)


def snake(name):
    name = re.sub(r"\(.*?\)", "", name)
    name = re.sub(r"[^0-9a-zA-Z]+", "_", name.strip().lower())
    return name.strip("_")


def sklearn_dataset(name, loader, task):
    d = loader()
    cols = [snake(c) for c in d.feature_names]
    assert len(set(cols)) == len(cols), cols
    X = np.asarray(d.data, dtype=np.float32)
    y = d.target.astype(np.int64) if task == "classification" else d.target.astype(np.float64)
    types = {c: "real" for c in cols}
    return Dataset(name, cols, X, y, types, task)


CUSTOMER_NUMERIC = ["age", "income", "tenure_months", "monthly_spend", "support_calls"]
CUSTOMER_STRINGS = ["plan", "region"]


def customers_dataset(n=500):
    """Synthetic churn data: numeric + string columns, some missing numbers, and
    a region ('central') that never occurs in training rows (OneHotEncoder's
    handle_unknown='ignore' path)."""
    rs = np.random.RandomState(SEED)
    age = rs.randint(18, 80, n).astype(np.float64)
    income = np.round(rs.lognormal(10.8, 0.45, n), 2)
    tenure = rs.randint(0, 121, n).astype(np.float64)
    spend = np.round(rs.gamma(4.0, 15.0, n), 2)
    calls = rs.poisson(1.5, n).astype(np.float64)
    plan = rs.choice(["basic", "standard", "premium"], n, p=[0.5, 0.3, 0.2])
    region = rs.choice(["north", "south", "east", "west", "central"], n, p=[0.3, 0.25, 0.2, 0.2, 0.05])
    z = (-0.8 + 0.9 * (calls - 1.5) - 0.025 * (tenure - 60) + 0.012 * (spend - 60)
         - 0.015 * (age - 48) + np.where(plan == "basic", 0.7, np.where(plan == "premium", -0.6, 0.0))
         + np.where(region == "south", 0.4, 0.0))
    y = (rs.uniform(size=n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
    numeric = np.column_stack([age, income, tenure, spend, calls]).astype(np.float32)
    for col, frac in ((0, 0.06), (1, 0.08), (3, 0.05)):  # age, income, monthly_spend
        numeric[rs.uniform(size=n) < frac, col] = np.nan
    X = np.empty((n, len(CUSTOMER_NUMERIC) + len(CUSTOMER_STRINGS)), dtype=object)
    X[:, :5] = numeric.astype(np.float64)  # float32 values (and NaN) as Python floats
    X[:, 5] = plan
    X[:, 6] = region
    types = {c: "real" for c in CUSTOMER_NUMERIC}
    types.update({c: "text" for c in CUSTOMER_STRINGS})
    return Dataset("customers", CUSTOMER_NUMERIC + CUSTOMER_STRINGS, X, y, types, "classification",
                   train_mask=region != "central")


def load_datasets():
    from sklearn import datasets

    ds = [
        sklearn_dataset("breast_cancer", datasets.load_breast_cancer, "classification"),
        sklearn_dataset("diabetes", datasets.load_diabetes, "regression"),
        sklearn_dataset("iris", datasets.load_iris, "classification"),
        sklearn_dataset("wine", datasets.load_wine, "classification"),
        customers_dataset(),
    ]
    return {d.name: d for d in ds}


def fmt_number(v):
    """Shortest decimal that round-trips float32 ``v`` ('' for NaN)."""
    f = np.float32(v)
    if np.isnan(f):
        return ""
    s = np.format_float_positional(f, unique=True, trim="-")
    # both ways a database may read it give back exactly f
    assert np.float32(float(s)) == f, (v, s)
    return s


def write_csv(d, path):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["id"] + d.columns + ["target"])
        for i, row in zip(d.ids, d.X):
            cells = [str(i)]
            for c, v in zip(d.columns, row):
                cells.append(v if d.types[c] == "text" else fmt_number(v))
            t = d.y[i - 1]
            cells.append(str(int(t)) if float(t).is_integer() else repr(float(t)))
            w.writerow(cells)


def dataset_info(d):
    target_type = "integer" if d.task == "classification" or np.all(np.mod(d.y, 1) == 0) else "double precision"
    return {
        "file": d.name + ".csv",
        "table": d.name,
        "rows": len(d.y),
        "columns": [{"name": "id", "type": "integer"}]
        + [{"name": c, "type": d.types[c]} for c in d.columns]
        + [{"name": "target", "type": target_type}],
        "missing_values": {c: n for c, n in missing_counts(d).items() if n},
    }


def missing_counts(d):
    return {c: int(np.isnan(np.asarray(d.X[:, i], dtype=np.float64)).sum())
            for i, c in enumerate(d.columns) if d.types[c] != "text"}


# --------------------------------------------------------------------------
# models


def sk_models():
    """(name, dataset, estimator factory, options) for the sklearn -> ONNX models."""
    from sklearn import ensemble, linear_model as lm, tree
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    def customers_pipeline(final, num_strategy):
        num = list(range(len(CUSTOMER_NUMERIC)))
        cat = [len(CUSTOMER_NUMERIC) + i for i in range(len(CUSTOMER_STRINGS))]
        ct = ColumnTransformer([
            # monthly_spend (3): missing means "no spend"; the other numbers take
            # the mean / median
            ("num", Pipeline([("impute", SimpleImputer(strategy=num_strategy)),
                              ("scale", StandardScaler())]), [0, 1, 2, 4]),
            ("spend", Pipeline([("impute", SimpleImputer(strategy="constant", fill_value=0.0)),
                                ("scale", StandardScaler())]), [3]),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat),
        ])
        assert sorted(num + cat) == list(range(7))
        return Pipeline([("prep", ct), ("clf", final)])

    rf = dict(n_estimators=25, max_depth=4, random_state=SEED % 1000, n_jobs=1)
    gb = dict(n_estimators=30, max_depth=3, learning_rate=0.1, random_state=SEED % 1000)
    return [
        ("diabetes_linreg", "diabetes", lambda: lm.LinearRegression(), dict(names=True)),
        ("diabetes_ridge", "diabetes", lambda: lm.Ridge(alpha=0.5), dict(names=False)),
        ("breast_cancer_logreg", "breast_cancer", lambda: lm.LogisticRegression(max_iter=5000), dict(names=True)),
        ("iris_logreg", "iris", lambda: lm.LogisticRegression(max_iter=2000), dict(names=False)),
        ("iris_logreg_ovr_zipmap", "iris",
         lambda: lm.LogisticRegression(multi_class="ovr", max_iter=2000), dict(names=True, zipmap=True)),
        ("wine_logreg", "wine", lambda: lm.LogisticRegression(solver="liblinear"), dict(names=False)),
        ("wine_scaler_logreg", "wine",
         lambda: Pipeline([("scale", StandardScaler()), ("clf", lm.LogisticRegression(max_iter=2000))]),
         dict(names=True)),
        ("breast_cancer_tree", "breast_cancer",
         lambda: tree.DecisionTreeClassifier(max_depth=4, random_state=0), dict(names=False)),
        ("breast_cancer_rf", "breast_cancer", lambda: ensemble.RandomForestClassifier(**rf), dict(names=True)),
        ("breast_cancer_gb", "breast_cancer", lambda: ensemble.GradientBoostingClassifier(**gb), dict(names=False)),
        ("iris_tree", "iris", lambda: tree.DecisionTreeClassifier(max_depth=4, random_state=0), dict(names=True)),
        ("iris_rf", "iris", lambda: ensemble.RandomForestClassifier(**rf), dict(names=False)),
        ("iris_gb", "iris", lambda: ensemble.GradientBoostingClassifier(**dict(gb, n_estimators=20)),
         dict(names=True)),
        ("diabetes_tree", "diabetes", lambda: tree.DecisionTreeRegressor(max_depth=4, random_state=0),
         dict(names=True)),
        ("diabetes_rf", "diabetes", lambda: ensemble.RandomForestRegressor(**rf), dict(names=False)),
        ("diabetes_gb", "diabetes", lambda: ensemble.GradientBoostingRegressor(**gb), dict(names=True)),
        ("customers_pipeline_logreg", "customers",
         lambda: customers_pipeline(lm.LogisticRegression(max_iter=2000), "mean"), dict(names=True)),
        ("customers_pipeline_gb", "customers",
         lambda: customers_pipeline(ensemble.GradientBoostingClassifier(**gb), "median"), dict(names=False)),
    ]


def xgb_models():
    import xgboost as xgb

    common = dict(max_depth=3, learning_rate=0.3, n_jobs=1, random_state=0, tree_method="hist")
    return [
        ("diabetes_xgb", "diabetes", None, lambda: xgb.XGBRegressor(
            objective="reg:squarederror", n_estimators=30, **common)),
        ("breast_cancer_xgb", "breast_cancer", None, lambda: xgb.XGBClassifier(
            objective="binary:logistic", n_estimators=30, **common)),
        ("iris_xgb", "iris", None, lambda: xgb.XGBClassifier(
            objective="multi:softprob", n_estimators=15, **common)),
        ("customers_xgb", "customers", CUSTOMER_NUMERIC, lambda: xgb.XGBClassifier(
            objective="binary:logistic", n_estimators=30, **common)),
    ]


def per_column(d):
    return any(t == "text" for t in d.types.values())


def model_input(d):
    """The graph's inputs and the features as the database passes them."""
    if per_column(d):
        inputs = [(c, "string" if d.types[c] == "text" else "float") for c in d.columns]
        return inputs, d.X
    return [("input", len(d.columns))], d.numeric().astype(np.float64)


def expected_classification(ids, labels, proba):
    return {str(i): {"label": int(lab), "proba": [float(p) for p in row]}
            for i, lab, row in zip(ids, labels, proba)}


def expected_regression(ids, values):
    return {str(i): {"value": float(v)} for i, v in zip(ids, values)}


def build_sk_model(name, d, factory, opts, out):
    est = factory()
    inputs, X = model_input(d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter of unscaled data sets
        est.fit(X[d.train], d.y[d.train])
    names = d.columns if opts.get("names") else None
    zipmap = bool(opts.get("zipmap"))
    model = sk2onnx.convert(est, inputs, feature_names=names, zipmap=zipmap,
                            name=name, doc_string="Flock test model %s (%s)" % (name, d.name))
    path = os.path.join(out, name + ".onnx")
    with open(path, "wb") as fh:
        fh.write(model.SerializeToString())
    entry = {
        "name": name,
        "file": name + ".onnx",
        "format": "onnx",
        "dataset": d.name,
        "table": d.name,
        "csv": d.name + ".csv",
        "estimator": describe(est),
        "task": d.task,
        "features": list(d.columns),
        "inputs": {n: [n] for n, _ in inputs} if len(inputs) > 1 else {inputs[0][0]: list(d.columns)},
        "input_types": {n: (t if isinstance(t, str) else "float") for n, t in inputs},
        "has_feature_names": names is not None,
    }
    if d.task == "classification":
        entry["classes"] = [int(c) for c in est.classes_]
        entry["zipmap"] = zipmap
        entry["outputs"] = {"label": "label", "probabilities": "probabilities"}
        entry["expected"] = expected_classification(d.ids, est.predict(X), est.predict_proba(X))
    else:
        entry["outputs"] = {"value": "variable"}
        entry["expected"] = expected_regression(d.ids, est.predict(X))
    return entry


def describe(est):
    from sklearn.pipeline import Pipeline

    if isinstance(est, Pipeline):
        return "Pipeline(%s)" % ", ".join(describe(s) for _, s in est.steps)
    if hasattr(est, "transformers"):
        return "ColumnTransformer(%s)" % ", ".join(
            describe(t) for _, t, _ in est.transformers)
    return type(est).__name__


def build_xgb_model(name, d, columns, factory, out):
    import xgboost as xgb

    cols = columns or d.columns
    X = d.numeric(cols)
    model = factory()
    model.fit(X[d.train], d.y[d.train])
    booster = model.get_booster()
    entry = {
        "name": name,
        "file": name + ".json",
        "format": "xgboost",
        "dataset": d.name,
        "table": d.name,
        "csv": d.name + ".csv",
        "estimator": type(model).__name__,
        "objective": model.get_params()["objective"],
        "task": d.task,
        "features": list(cols),
        "inputs": None,
        "has_feature_names": True,
    }
    if d.task == "classification":
        entry["classes"] = [int(c) for c in model.classes_]
        entry["expected"] = expected_classification(d.ids, model.predict(X), model.predict_proba(X))
    else:
        entry["expected"] = expected_regression(d.ids, booster.predict(xgb.DMatrix(X)))
    booster.feature_names = list(cols)
    booster.save_model(os.path.join(out, name + ".json"))
    return entry


# --------------------------------------------------------------------------
# output


def _entry_text(entry, nested=()):
    """One JSON object, one key per line; the keys in ``nested`` get one
    line per item (expected rows, dataset columns)."""
    lines = []
    for k, v in entry.items():
        if k in nested and isinstance(v, dict):
            items = ["    %s: %s" % (json.dumps(ik), json.dumps(iv)) for ik, iv in v.items()]
            lines.append("  %s: {\n%s\n  }" % (json.dumps(k), ",\n".join(items)))
        elif k in nested:
            items = ["    %s" % json.dumps(iv) for iv in v]
            lines.append("  %s: [\n%s\n  ]" % (json.dumps(k), ",\n".join(items)))
        else:
            lines.append("  %s: %s" % (json.dumps(k), json.dumps(v)))
    return "{\n" + ",\n".join(lines) + "\n}"


def write_manifest(entries, path):
    """manifest.json: a JSON list of model entries."""
    with open(path, "w") as fh:
        fh.write("[\n" + ",\n".join(_entry_text(e, ("expected",)) for e in entries) + "\n]\n")
    with open(path) as fh:
        json.load(fh)  # stays valid JSON


def write_datasets(infos, path):
    """datasets.json: data set name -> {file, table, rows, columns, missing_values}."""
    parts = ["%s: %s" % (json.dumps(name), _entry_text(info, ("columns",))) for name, info in infos.items()]
    with open(path, "w") as fh:
        fh.write("{\n" + ",\n".join(parts) + "\n}\n")
    with open(path) as fh:
        json.load(fh)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory (created if missing)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()

    data = load_datasets()
    infos = {}
    for name, d in data.items():
        write_csv(d, os.path.join(args.out, d.name + ".csv"))
        infos[name] = dataset_info(d)
    write_datasets(infos, os.path.join(args.out, "datasets.json"))

    entries = []
    for name, ds, factory, opts in sk_models():
        entries.append(build_sk_model(name, data[ds], factory, opts, args.out))
    for name, ds, cols, factory in xgb_models():
        entries.append(build_xgb_model(name, data[ds], cols, factory, args.out))
    write_manifest(entries, os.path.join(args.out, "manifest.json"))
    print("wrote %d models, %d data sets to %s in %.1fs"
          % (len(entries), len(data), args.out, time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
