#!/usr/bin/python3
"""TreeSHAP throughput, flock core vs xgboost's pred_contribs, one thread each, measured in one run.

The model: xgboost reg:squarederror, 200 trees of depth 8 (tree_method=exact, min_child_weight=0, so
the trees grow to full depth), 20 features, trained on synthetic data (seed 0) and kept in the work
directory. Both sides explain the same float32 rows (5% missing): xgboost through
Booster.predict(pred_contribs=True) with nthread=1, flock through flock::explain::explain in the
runner (bench/explain/explain_runner.cpp, one thread). The script checks that the contributions
agree (max |difference| <= 1e-4 relative) and prints rows per second and the ratio flock / xgboost
(goal >= 1).

    /usr/bin/python3 bench/explain/shap_vs_xgboost.py --runner build/bench/explain/flock_bench_explain \\
        --work-dir /tmp/flock-explain --rows 100000

xgboost 1.7's pred_contribs takes tens of milliseconds per row for this model on one thread, so
100,000 rows take the better part of an hour; `--xgb-rows N` times xgboost on the first N rows only
(its cost is linear in the rows) and compares per-row throughput.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import xgboost as xgb

FEATURES = 20


def model_path(work):
    path = os.path.join(work, "model_200x8.json")
    if os.path.exists(path):
        return path
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4000, FEATURES)).astype(np.float32)
    y = 2 * X[:, 0] + np.sin(3 * X[:, 1]) + X[:, 2] * X[:, 3] + rng.standard_normal(len(X)) * 0.1
    params = {"objective": "reg:squarederror", "max_depth": 8, "eta": 0.1, "nthread": 1, "tree_method": "exact",
              "min_child_weight": 0, "lambda": 0, "seed": 0}
    booster = xgb.train(params, xgb.DMatrix(X, label=y), 200)
    booster.save_model(path)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runner", required=True)
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--xgb-rows", type=int, default=0, help="time xgboost on this many rows (default: --rows)")
    ap.add_argument("--build-type", default="")
    args = ap.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    path = model_path(args.work_dir)
    booster = xgb.Booster(params={"nthread": 1})
    booster.load_model(path)
    trees = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]
    leaves = sum(sum(1 for c in t["left_children"] if c == -1) for t in trees)

    rng = np.random.default_rng(1)
    X = rng.standard_normal((args.rows, FEATURES)).astype(np.float32)
    X[rng.random(X.shape) < 0.05] = np.nan
    data = os.path.join(args.work_dir, "rows.f32")
    X.tofile(data)
    out = os.path.join(args.work_dir, "contribs.f64")
    run = subprocess.run([args.runner, path, data, str(args.rows), str(FEATURES), out], capture_output=True, text=True)
    if run.returncode != 0:
        print(run.stderr, file=sys.stderr)
        return 1
    flock_seconds = json.loads(run.stdout)["seconds"]
    flock_contribs = np.fromfile(out, dtype=np.float64).reshape(args.rows, FEATURES + 1)

    xrows = args.xgb_rows or args.rows
    d = xgb.DMatrix(X[:xrows], missing=np.nan)
    start = time.perf_counter()
    want = booster.predict(d, pred_contribs=True)
    xgb_seconds = time.perf_counter() - start
    diff = np.abs(flock_contribs[:xrows] - want) / np.maximum(1.0, np.abs(want))
    worst = float(diff.max())

    flock_rate, xgb_rate = args.rows / flock_seconds, xrows / xgb_seconds
    print(f"model: 200 trees, depth 8, {leaves} leaves, {FEATURES} features; build type {args.build_type or '?'}")
    print(f"flock   : {args.rows} rows in {flock_seconds:.3f} s = {flock_rate:,.0f} rows/s (1 thread)")
    print(f"xgboost : {xrows} rows in {xgb_seconds:.3f} s = {xgb_rate:,.0f} rows/s (pred_contribs, nthread=1, "
          f"xgboost {xgb.__version__})")
    print(f"max |flock - xgboost| / max(1, |xgboost|) = {worst:.2e} over {xrows} rows")
    ratio = flock_rate / xgb_rate
    print(f"ratio flock / xgboost = {ratio:.2f}x (goal >= 1): {'PASS' if ratio >= 1 else 'FAIL'}")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
