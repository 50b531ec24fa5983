#!/usr/bin/env python3
"""Data and XGBoost models for the tree-ensemble benchmark (bench/trees).

Writes into --out:
  x.f32            rows x 28 float32, row-major (Higgs-like, fixed seed), no missing values
  x_missing.f32    the same rows with ~5% of the values of 6 features set to NaN
  meta.json        rows, cols, the model files and how they were trained
  trees1000_d8.json  binary:logistic, 1000 trees, max_depth 8 (for the load-time goal)
  trees500_d8.json   its first 500 trees (Booster slicing: boosting is sequential, so this is the
                     model 500 rounds of the same training give, without training it twice)
  trees100_d6.json   binary:logistic, 100 trees, max_depth 6
  trees500_d8_missing.json  500 trees depth 8 trained on data with missing values

Models are trained with tree_method=hist on --train-rows rows of a separate draw (the scored rows
are unseen). The scored rows and the models are cached separately (meta.json records how each was
made), so re-running the bench is cheap and changing --rows does not retrain.
"""
import argparse
import json
import os
import sys
import time

import numpy as np


def make_rows(n, seed):
    """28 float32 features shaped like the HIGGS data set: 21 kinematic + 7 derived masses."""
    rng = np.random.default_rng(seed)
    cols = []
    # 4 particles + missing energy: pT (skewed, positive), eta (normal), phi (uniform), b-tag
    for p in range(5):
        pt = rng.gamma(2.0, 0.45, n) + 0.25
        eta = rng.normal(0.0, 1.0, n)
        phi = rng.uniform(-np.pi, np.pi, n)
        cols += [pt, eta, phi]
        if p >= 1:
            cols.append(rng.choice([0.0, 1.0865, 2.1730], n, p=[0.55, 0.2, 0.25]))
    # 2 more kinematic columns to make 21 low-level features
    cols.append(rng.gamma(2.0, 0.5, n))
    cols.append(rng.normal(0.0, 1.0, n))
    lowlevel = np.stack(cols, axis=1)[:, :21]
    # latent signal: a few informative directions
    z = (
        1.2 * np.log(lowlevel[:, 0])
        - 0.8 * np.abs(lowlevel[:, 4])
        + 0.6 * (lowlevel[:, 6] > 1.0)
        + 0.5 * np.sin(lowlevel[:, 2] - lowlevel[:, 5])
        + 0.4 * lowlevel[:, 3] * lowlevel[:, 7]
    )
    label_logit = z + rng.logistic(0.0, 1.0, n) * 0.9
    y = (label_logit > np.median(label_logit)).astype(np.float32)
    # 7 high-level "mass" features: log-normal, shifted by the signal
    masses = []
    for k in range(7):
        shift = (0.15 + 0.05 * k) * (z - z.mean()) if k < 4 else 0.0
        masses.append(np.exp(rng.normal(0.0, 0.35, n) + shift))
    x = np.concatenate([lowlevel, np.stack(masses, axis=1)], axis=1).astype(np.float32)
    return np.ascontiguousarray(x), y


def with_missing(x, seed):
    rng = np.random.default_rng(seed + 1)
    xm = x.copy()
    for f in (3, 7, 11, 15, 22, 25):
        xm[rng.random(len(xm)) < 0.05, f] = np.nan
    return xm


def train(xgb, x, y, trees, depth, path, log):
    t0 = time.time()
    d = xgb.DMatrix(x, label=y, missing=np.nan)
    params = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "max_depth": depth,
        "eta": 0.1,
        # One thread: on a shared 2-core machine two OpenMP threads spin at every node's barrier
        # and train ~4x slower than one (measured: 9.0 s vs 2.1 s for 30 depth-8 trees).
        "nthread": 1,
        "seed": 7,
        "base_score": 0.5,
    }
    bst = xgb.train(params, d, num_boost_round=trees)
    bst.save_model(path)
    log(f"trained {os.path.basename(path)}: {trees} trees, depth {depth}, {len(x)} rows, "
        f"{time.time() - t0:.1f}s, {os.path.getsize(path) / 1e6:.1f} MB")
    return bst


def save_slice(bst, trees, path, log):
    bst[:trees].save_model(path)
    log(f"wrote {os.path.basename(path)}: the first {trees} trees, {os.path.getsize(path) / 1e6:.1f} MB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows to score")
    ap.add_argument("--train-rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    import xgboost as xgb

    os.makedirs(args.out, exist_ok=True)
    log = lambda m: print(f"[make_data] {m}", file=sys.stderr, flush=True)
    # (file, trees, depth, trained on missing values, sliced from)
    models = [
        ("trees1000_d8.json", 1000, 8, False, None),
        ("trees500_d8.json", 500, 8, False, "trees1000_d8.json"),
        ("trees100_d6.json", 100, 6, False, None),
        ("trees500_d8_missing.json", 500, 8, True, None),
    ]
    wanted = {
        "data": {"rows": args.rows, "cols": 28, "seed": args.seed},
        "models": {"train_rows": args.train_rows, "seed": args.seed, "nthread": 1, "xgboost": xgb.__version__,
                   "files": [{"file": f, "trees": t, "depth": d, "missing": m, "slice_of": s}
                             for f, t, d, m, s in models]},
    }
    meta_path = os.path.join(args.out, "meta.json")
    old = {}
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            old = json.load(f)
    have = lambda files: all(os.path.exists(os.path.join(args.out, f)) for f in files)
    data_ok = old.get("data") == wanted["data"] and have(["x.f32", "x_missing.f32"])
    models_ok = old.get("models") == wanted["models"] and have([m[0] for m in models])
    if data_ok and models_ok:
        log(f"data and models in {args.out} are up to date")
        return

    if not data_ok:
        x, _ = make_rows(args.rows, args.seed)
        xm = with_missing(x, args.seed)
        x.tofile(os.path.join(args.out, "x.f32"))
        xm.tofile(os.path.join(args.out, "x_missing.f32"))
        log(f"wrote {args.rows} rows x 28 features")
        del x, xm
    if not models_ok:
        # A separate draw, so the scored rows are unseen.
        xt, yt = make_rows(args.train_rows, args.seed + 100)
        xtm = with_missing(xt, args.seed + 100)
        trained = {}
        for f, trees, depth, missing, slice_of in models:
            path = os.path.join(args.out, f)
            if slice_of:
                save_slice(trained[slice_of], trees, path, log)
            else:
                trained[f] = train(xgb, xtm if missing else xt, yt, trees, depth, path, log)
    with open(meta_path, "w") as f:
        json.dump(wanted, f, indent=1)


if __name__ == "__main__":
    main()
