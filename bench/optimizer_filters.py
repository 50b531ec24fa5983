"""Derived filters (issue 13, prediction-predicate inversion): `WHERE flock.predict(m, t) > c` with a
B-tree index on the model's top split feature, flock.optimizer on vs off in the same run.

    FLOCK_PG_BIN=/opt/pg-x/lib/postgresql/15/bin /usr/bin/python3 bench/optimizer_filters.py [--rows N] [--reps R]

A private cluster (tests/pgcluster.py), N rows of 8 float features (fixed seed), an XGBoost regressor
(40 trees, depth 4) whose output is high only when f0 is large, an index on f0, and thresholds at
several quantiles of the predictions. Each query runs with the optimizer on and off, interleaved,
R times; the table gives the medians, their ratio, whether the answers (count and sum) are equal,
and the plan's derived filter. Needs numpy, xgboost and psycopg2 for /usr/bin/python3; no network.
"""
import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import psycopg2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from pgcluster import Cluster  # noqa: E402

FEATURES = [f"f{k}" for k in range(8)]
SEED = 20261203


def data(n, rng):
    X = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    y = 3.0 * (X[:, 0] > 2.0) + 0.5 * X[:, 1] + 0.3 * np.sin(X[:, 2]) + rng.normal(scale=0.1, size=n)
    return X, y


def train(path, rng):
    import xgboost as xgb
    X, y = data(20000, rng)
    model = xgb.XGBRegressor(n_estimators=40, max_depth=4, learning_rate=0.3, tree_method="exact", random_state=1)
    model.fit(X, y)
    booster = model.get_booster()
    booster.feature_names = FEATURES
    booster.save_model(path)


def timed(cur, sql, optimizer):
    cur.execute(f"SET flock.optimizer = {optimizer}")
    start = time.perf_counter()
    cur.execute(sql)
    row = cur.fetchone()
    return time.perf_counter() - start, row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    work = tempfile.mkdtemp(prefix="flock-bench-filters-")
    model_path = os.path.join(work, "model.json")
    train(model_path, rng)
    X, _ = data(args.rows, rng)

    cluster = Cluster("flock-bench-filters").start()
    failed = False
    try:
        conn = psycopg2.connect(cluster.dsn())
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("CREATE EXTENSION flock")
        cur.execute("SET jit = off")
        with open(model_path, "rb") as f:
            cur.execute("SELECT flock.register_model('gate', %s, 'xgboost')", (f.read(),))
        cur.execute("CREATE TABLE t (" + ", ".join(f"{c} real" for c in FEATURES) + ")")
        buf = io.StringIO()
        np.savetxt(buf, X, fmt="%.9g", delimiter="\t")
        buf.seek(0)
        cur.copy_from(buf, "t", columns=FEATURES)
        cur.execute("CREATE INDEX ON t (f0)")
        cur.execute("VACUUM (FREEZE, ANALYZE) t")
        cur.execute("SELECT percentile_disc(ARRAY[0.5, 0.9, 0.97, 0.99, 0.999]) "
                    "WITHIN GROUP (ORDER BY flock.predict('gate', t)) FROM t")
        quantiles = cur.fetchone()[0]
        print(f"{args.rows:,} rows, model gate (XGBoost, 40 trees, depth 4), index on f0; median of {args.reps}")
        print(f"{'query':<46} {'off ms':>9} {'on ms':>9} {'on/off':>7}  same  {'est. with/without':>17}  derived filter")
        for q, th in zip(["p50", "p90", "p97", "p99", "p99.9"], quantiles):
            sql = f"SELECT count(*), sum(flock.predict('gate', t)) FROM t WHERE flock.predict('gate', t) > {th!r}"
            times = {"on": [], "off": []}
            answers = {}
            for rep in range(args.reps):
                for optimizer in (("on", "off") if rep % 2 == 0 else ("off", "on")):
                    seconds, row = timed(cur, sql, optimizer)
                    times[optimizer].append(seconds)
                    answers.setdefault(optimizer, row)
                    if row != answers[optimizer]:
                        answers[optimizer] = None
            cur.execute("SET flock.optimizer = on")
            cur.execute("EXPLAIN " + sql)
            plan = [r[0] for r in cur.fetchall()]
            derived = next((line.split(": ", 1)[1] for line in plan if line.startswith("Flock Derived Filter")), "-")
            # The planner's estimates the derive-filters pass compares: with the derived quals, without.
            estimates = {}
            for mode in ("always", "off"):
                cur.execute(f"SET flock.optimizer_derive_filters = {mode}")
                cur.execute("EXPLAIN (FORMAT JSON) " + sql)
                estimates[mode] = cur.fetchone()[0][0]["Plan"]["Total Cost"]
            cur.execute("RESET flock.optimizer_derive_filters")
            off, on = statistics.median(times["off"]), statistics.median(times["on"])
            same = answers["on"] is not None and answers["on"] == answers["off"]
            failed = failed or not same
            label = f"predict > {q} ({th:.4g}), {answers['off'][0]:,} rows" if answers.get("off") else q
            print(f"{label:<46} {off * 1e3:>9.1f} {on * 1e3:>9.1f} {off / on:>6.2f}x  {'yes' if same else 'NO':>4}  "
                  f"{estimates['always'] / estimates['off']:>17.2f}  {derived[:60]}")
        conn.close()
    finally:
        cluster.stop()
    if failed:
        print("ERROR: fidelity: optimizer on and off gave different answers")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
