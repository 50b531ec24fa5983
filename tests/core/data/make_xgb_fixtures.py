#!/usr/bin/python3
"""Writes the XGBoost fixtures used by tests/core/xgboost_import_test.cpp.

Run with a Python that has numpy, scikit-learn and xgboost (the Debian 12 /usr/bin/python3 with
python3-xgboost 1.7.4):

    /usr/bin/python3 tests/core/data/make_xgb_fixtures.py

For each case it writes into tests/core/data/xgb/:
  <name>.model.json  the model exactly as xgboost saves it (Booster.save_raw("json"))
  <name>.data.json   {"objective", "num_class", "inputs" (rows, null = NaN, float32 values),
                      "margin" (output_margin=True), "predict" (Booster.predict),
                      "proba" (class probabilities for classifiers)}
Training data are ~20 rows of scikit-learn's bundled data sets with some values set to NaN, so
the learned default directions matter; the test inputs carry NaNs as well.
"""
import json
import os

import numpy as np
import xgboost as xgb
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xgb")


def with_nans(X, rng, frac=0.15):
    X = X.astype(np.float32).copy()
    mask = rng.random(X.shape) < frac
    X[mask] = np.nan
    return X


def rows_json(X):
    return [[None if np.isnan(v) else float(v) for v in row] for row in np.asarray(X, dtype=np.float32)]


def floats_json(a):
    a = np.asarray(a, dtype=np.float64)
    return a.tolist()


def leaf_values(booster):
    model = json.loads(booster.save_raw("json").decode())
    out = []
    for tree in model["learner"]["gradient_booster"]["model"]["trees"]:
        for left, value in zip(tree["left_children"], tree["split_conditions"]):
            if left == -1:
                out.append(value)
    return out


def n_branches(booster):
    model = json.loads(booster.save_raw("json").decode())
    trees = model["learner"]["gradient_booster"]["model"]["trees"]
    return sum(1 for tree in trees for left in tree["left_children"] if left != -1)


def softmax(m):
    m = np.asarray(m, dtype=np.float64)
    e = np.exp(m - m.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def write_case(name, booster, X_test, objective, num_class, feature_names=None):
    os.makedirs(OUT, exist_ok=True)
    dtest = xgb.DMatrix(X_test, missing=np.nan, feature_names=feature_names)
    margin = booster.predict(dtest, output_margin=True)
    predict = booster.predict(dtest)
    data = {
        "objective": objective,
        "num_class": num_class,
        "inputs": rows_json(X_test),
        "margin": floats_json(margin),
        "predict": floats_json(predict),
    }
    if objective == "binary:logistic":
        data["proba"] = floats_json(np.stack([1 - predict, predict], axis=1))
    elif objective == "multi:softprob":
        data["proba"] = floats_json(predict)
    elif objective == "multi:softmax":
        data["proba"] = floats_json(softmax(margin))
    with open(os.path.join(OUT, name + ".model.json"), "wb") as f:
        f.write(booster.save_raw("json"))
    with open(os.path.join(OUT, name + ".data.json"), "w") as f:
        json.dump(data, f, separators=(",", ":"))
        f.write("\n")
    print(f"{name}: {os.path.getsize(os.path.join(OUT, name + '.model.json'))} + "
          f"{os.path.getsize(os.path.join(OUT, name + '.data.json'))} bytes")


def train(params, X, y, rounds, feature_names=None):
    params = dict(params, seed=0, nthread=1, tree_method="exact")
    d = xgb.DMatrix(X, label=y, missing=np.nan, feature_names=feature_names)
    return xgb.train(params, d, num_boost_round=rounds)


def main():
    rng = np.random.default_rng(7)

    # Regression: diabetes, 5 features, named.
    X, y = load_diabetes(return_X_y=True)
    idx = rng.choice(len(X), 24, replace=False)
    X_train = with_nans(X[idx[:20], :5], rng)
    X_test = with_nans(X[idx[20:], :5], rng, 0.3)
    X_test = np.vstack([X_test, np.full((1, 5), np.nan, dtype=np.float32), X_train[:4]])
    names = ["age", "sex", "bmi", "bp", "s1"]
    b = train({"objective": "reg:squarederror", "max_depth": 3, "eta": 0.5, "base_score": 150.0},
              X_train, y[idx[:20]], 4, names)
    write_case("reg_squarederror", b, X_test, "reg:squarederror", 0, names)

    # reg:logistic on a target scaled into [0, 1].
    yl = (y[idx[:20]] - y.min()) / (y.max() - y.min())
    b = train({"objective": "reg:logistic", "max_depth": 2, "eta": 0.5}, X_train, yl, 3)
    write_case("reg_logistic", b, X_test, "reg:logistic", 0)

    # Binary: breast cancer, 4 features, non-default base_score.
    X, y = load_breast_cancer(return_X_y=True)
    cols = [0, 1, 20, 27]
    idx = np.concatenate([rng.choice(np.where(y == 0)[0], 12, replace=False),
                          rng.choice(np.where(y == 1)[0], 12, replace=False)])
    rng.shuffle(idx)
    X_train = with_nans(X[idx[:20]][:, cols], rng)
    X_test = np.vstack([with_nans(X[idx[20:]][:, cols], rng, 0.3), X_train[:6]])
    b = train({"objective": "binary:logistic", "max_depth": 2, "eta": 0.4, "base_score": 0.3},
              X_train, y[idx[:20]], 4)
    assert min(leaf_values(b)) < 0
    write_case("binary_logistic", b, X_test, "binary:logistic", 0)

    # Binary whose leaves are all >= 0 but that still splits (exercises the importer's two-weight
    # encoding): mostly positive labels and a low base_score; search a small grid for such a model.
    found = None
    for zeros in ([2, 9, 14], [0, 1, 2], [2, 9], [3, 11, 17]):
        for mcw in (0.5, 0.3, 0.1):
            for base in (0.2, 0.1, 0.05):
                yb = np.ones(20)
                yb[zeros] = 0
                b = train({"objective": "binary:logistic", "max_depth": 2, "eta": 0.3, "base_score": base,
                           "min_child_weight": mcw}, X_train, yb, 2)
                if min(leaf_values(b)) >= 0 and n_branches(b) >= 2:
                    found = b
                    break
            if found:
                break
        if found:
            break
    assert found is not None, "no all-positive binary model with splits found"
    write_case("binary_positive_leaves", found, X_test, "binary:logistic", 0)

    # Multiclass: iris, 4 features.
    X, y = load_iris(return_X_y=True)
    idx = np.concatenate([rng.choice(np.where(y == c)[0], 8, replace=False) for c in range(3)])
    rng.shuffle(idx)
    X_train = with_nans(X[idx[:20]], rng)
    X_test = np.vstack([with_nans(X[idx[20:]], rng, 0.3), X_train[:6]])
    b = train({"objective": "multi:softprob", "num_class": 3, "max_depth": 2, "eta": 0.5},
              X_train, y[idx[:20]], 3)
    write_case("multi_softprob", b, X_test, "multi:softprob", 3)
    b = train({"objective": "multi:softmax", "num_class": 3, "max_depth": 2, "eta": 0.5},
              X_train, y[idx[:20]], 3)
    write_case("multi_softmax", b, X_test, "multi:softmax", 3)

    # Two-class softprob: wine classes 0 and 1, 4 features.
    X, y = load_wine(return_X_y=True)
    cols = [0, 6, 9, 12]
    idx = np.concatenate([rng.choice(np.where(y == c)[0], 12, replace=False) for c in range(2)])
    rng.shuffle(idx)
    X_train = with_nans(X[idx[:20]][:, cols], rng)
    X_test = np.vstack([with_nans(X[idx[20:]][:, cols], rng, 0.3), X_train[:6]])
    b = train({"objective": "multi:softprob", "num_class": 2, "max_depth": 2, "eta": 0.5},
              X_train, y[idx[:20]], 3)
    write_case("multi_softprob_2class", b, X_test, "multi:softprob", 2)


if __name__ == "__main__":
    main()
