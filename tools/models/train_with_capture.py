#!/usr/bin/python3
"""Trains a small scikit-learn model on a Flock data set snapshot and writes what training capture
needs, so that the model and how it was made can be registered together:

    /usr/bin/python3 tools/models/train_with_capture.py --dataset churn_train@1 --target churned --out run/
    flock register run/model.onnx --name churn --dataset churn_train@1 \\
        --training-code tools/models/train_with_capture.py \\
        --params run/params.json --metrics run/metrics.json --environment run/environment.json

It reads the snapshot's rows from the database (libpq settings from --dsn or the PG* environment
variables, as psql), trains the estimator, exports it to ONNX-ML with sk2onnx.py (the feature names
are stored in the model, so flock.predict binds columns by name) and writes into --out:

* model.onnx
* params.json       the estimator, its parameters, the features, the target and the data set
* metrics.json      training-set metrics: rows, accuracy (classifiers) or r2 / rmse (regressors)
* environment.json  python, numpy, scikit-learn and onnx versions, platform

Training is deterministic: rows are sorted before fitting and estimators are seeded.
"""

import argparse
import json
import os
import platform
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import sk2onnx  # noqa: E402

ESTIMATORS = ("logistic_regression", "decision_tree", "random_forest", "linear_regression")
NUMERIC = ("smallint", "integer", "bigint", "real", "double precision", "boolean")


def make_estimator(kind, params):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    if kind == "logistic_regression":
        return LogisticRegression(**{"max_iter": 1000, **params})
    if kind == "decision_tree":
        return DecisionTreeClassifier(**{"random_state": 0, **params})
    if kind == "random_forest":
        return RandomForestClassifier(**{"random_state": 0, "n_estimators": 10, **params})
    return LinearRegression(**params)


def read_snapshot(dsn, ref):
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name || '@' || version, table_name, columns, content_hash "
                        "FROM flock._resolve_dataset(%s)", (ref,))
            resolved, table, columns, content_hash = cur.fetchone()
            cur.execute(f"SELECT * FROM {table}")
            rows = cur.fetchall()
    finally:
        conn.close()
    return resolved, columns, content_hash, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, help="data set reference, e.g. churn_train@1")
    ap.add_argument("--target", required=True, help="the column to predict")
    ap.add_argument("--features", help="feature columns, comma-separated (default: every numeric "
                                       "column but the target and --exclude)")
    ap.add_argument("--exclude", default="id", help="columns never used as features (default: id)")
    ap.add_argument("--estimator", choices=ESTIMATORS, default="logistic_regression")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=JSON",
                    help="an estimator parameter, e.g. --param max_depth=3 (repeatable)")
    ap.add_argument("--dsn", default="", help="libpq connection string (default: PG* variables)")
    ap.add_argument("--out", required=True, help="directory for model.onnx and the JSON files")
    args = ap.parse_args(argv)

    params = {}
    for item in args.param:
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value

    resolved, columns, content_hash, rows = read_snapshot(args.dsn, args.dataset)
    names = [c["name"] for c in columns]
    if args.target not in names:
        ap.error(f"column {args.target!r} is not in {resolved} (columns: {', '.join(names)})")
    if args.features:
        features = [f.strip() for f in args.features.split(",")]
        missing = [f for f in features if f not in names]
        if missing:
            ap.error(f"no column {missing[0]!r} in {resolved}")
    else:
        excluded = {args.target, *(x.strip() for x in args.exclude.split(",") if x.strip())}
        features = [c["name"] for c in columns if c["name"] not in excluded and c["type"] in NUMERIC]
    if not features:
        ap.error(f"{resolved} has no numeric feature columns")

    index = {n: i for i, n in enumerate(names)}
    rows = sorted(rows, key=lambda r: tuple((v is None, str(v)) for v in r))  # order-independent training
    x = np.array([[np.nan if r[index[f]] is None else float(r[index[f]]) for f in features] for r in rows],
                 dtype=np.float32)
    y_raw = [r[index[args.target]] for r in rows]
    classifier = args.estimator != "linear_regression"
    y = np.array([int(v) for v in y_raw] if classifier else [float(v) for v in y_raw])

    est = make_estimator(args.estimator, params)
    est.fit(x, y)
    model = sk2onnx.convert(est, [("input", len(features))], feature_names=features)

    pred = est.predict(x)
    metrics = {"rows": len(rows)}
    if classifier:
        metrics["accuracy"] = float(np.mean(pred == y))
    else:
        metrics["r2"] = float(est.score(x, y))
        metrics["rmse"] = float(np.sqrt(np.mean((pred - y) ** 2)))

    import onnx
    import sklearn

    os.makedirs(args.out, exist_ok=True)
    onnx.save(model, os.path.join(args.out, "model.onnx"))
    out = {
        "params.json": {"estimator": type(est).__name__, "params": {k: v for k, v in sorted(est.get_params().items())
                                                                  if isinstance(v, (int, float, str, bool, type(None)))},
                        "features": features, "target": args.target, "dataset": resolved,
                        "dataset_content_hash": content_hash},
        "metrics.json": metrics,
        "environment.json": {"python": platform.python_version(), "numpy": np.__version__,
                             "scikit-learn": sklearn.__version__, "onnx": onnx.__version__,
                             "platform": platform.platform(), "exporter": "tools/models/sk2onnx.py"},
    }
    for name, value in out.items():
        with open(os.path.join(args.out, name), "w") as f:
            json.dump(value, f, indent=2, sort_keys=True)
            f.write("\n")
    print(json.dumps({"dataset": resolved, "features": features, "metrics": metrics,
                      "model": os.path.join(args.out, "model.onnx")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
