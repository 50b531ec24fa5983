#!/usr/bin/python3
"""Training benchmark (issue 16): flock.train in the database against the usual path.

    /usr/bin/python3 bench/train/run.py [--rows 1000000] [--rounds 100] [--threads 2] [--reps 1]

Starts a private PostgreSQL 15 cluster (tests/pgcluster.py, flock preloaded; FLOCK_PG_BIN picks the
installation) and loads the Higgs-like table of bench/indb/data.py (N rows, 28 real features, a 0/1
label, fixed seed). Then, interleaved, REPS times each, measured in the same run:

  in-database  SELECT flock.train('m', 'higgs', 'label', 'xgboost', params, features): snapshot
               of the table (data set version with its content hash), training in the backend,
               registration, training run and lineage -- one statement.
  usual path   psycopg2: SELECT the features and label, fetchall into numpy, the same held-out
               split (the documented splitmix64 rule), xgboost.train in this Python process,
               save the model as JSON, flock.register_model. No snapshot, no training record.

Also timed: flock.train on the data set version already taken ('m@1'), i.e. without the snapshot.
Same parameters (binary:logistic, hist, max_depth 6, eta 0.1, nthread THREADS), same rows, same
split; before the ratio is printed, the two models' predictions on the first 10,000 rows are compared
exactly (XGBoost's predictor on both), and a difference fails the run.

Prints the median wall times and the ratio usual / in-database (> 1: the database is faster; the
issue's goal is >= 1.5 at 1M rows). Exit status 0 when both paths ran and agreed, 1 otherwise.
"""

import argparse
import io
import json
import os
import statistics
import sys
import time

import numpy as np
import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "bench", "indb"))
sys.path.insert(0, os.path.join(REPO, "tests"))

import data  # noqa: E402
from pgcluster import PG_BIN, Cluster  # noqa: E402

import xgboost as xgb  # noqa: E402

FEATURES = data.FEATURES
GOAL_RATIO = 1.5


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def held_out(seed, n, test_fraction):
    """flock.train's split: row i held out when (splitmix64((uint32(seed) << 32) + i) >> 11) * 2^-53 < f."""
    with np.errstate(over="ignore"):
        z = (np.uint64(seed & 0xFFFFFFFF) << np.uint64(32)) + np.arange(n, dtype=np.uint64)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53 < test_fraction


def start_cluster():
    c = Cluster("flock-bench-train")
    c.start()
    for sql in ("ALTER SYSTEM SET shared_buffers = '512MB'", "ALTER SYSTEM SET jit = off",
                "ALTER SYSTEM SET flock.train_memory = '4GB'"):
        c.psql(sql)
    c._run([f"{PG_BIN}/pg_ctl", "-D", c.datadir, "-l", c.logfile, "-m", "fast", "-w", "-t", "60", "restart"])
    return c


def load(conn, X, y):
    cols = ", ".join(f"{c} real" for c in FEATURES)
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS flock")
        cur.execute(f"CREATE TABLE higgs_x (id bigint PRIMARY KEY, {cols}) WITH (autovacuum_enabled = off)")
        cur.copy_expert("COPY higgs_x FROM STDIN (FORMAT binary)", data.table_copy_stream(X))
        cur.execute("CREATE TEMP TABLE labels (id bigint, label integer)")
        cur.copy_expert("COPY labels FROM STDIN", io.StringIO("".join(f"{i + 1}\t{int(v)}\n" for i, v in enumerate(y))))
        cur.execute(f"CREATE TABLE higgs WITH (autovacuum_enabled = off) AS SELECT x.*, l.label FROM higgs_x x "
                    "JOIN labels l USING (id) ORDER BY id")
        cur.execute("DROP TABLE higgs_x")
        cur.execute("VACUUM (FREEZE, ANALYZE) higgs")


def in_database(conn, name, source, params):
    with conn.cursor() as cur:
        t0 = time.perf_counter()
        cur.execute("SELECT flock.train(%s, %s, 'label', 'xgboost', %s, %s, 0.2, 0)",
                    (name, source, json.dumps(params), FEATURES))
        ref = cur.fetchone()[0]
        elapsed = time.perf_counter() - t0
        cur.execute("SELECT metrics->>'training_seconds' FROM flock.training_runs WHERE model_name = %s", (name,))
        log(f"   in-database {name} from {source}: {elapsed:.2f} s, of which reading and training "
            f"{cur.fetchone()[0]} s")
        return elapsed, ref


def usual_path(dsn, name, params):
    t0 = time.perf_counter()
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(FEATURES)}, label FROM higgs")
        table = np.array(cur.fetchall(), dtype=np.float32)
    exported = time.perf_counter()
    x, y = table[:, :-1], table[:, -1]
    test = held_out(0, len(y), 0.2)
    p = dict(params)
    rounds = p.pop("num_boost_round")
    booster = xgb.train(p, xgb.DMatrix(x[~test], label=y[~test], missing=np.nan, feature_names=FEATURES),
                        num_boost_round=rounds)
    trained = time.perf_counter()
    raw = bytes(booster.save_raw("json"))
    with conn.cursor() as cur:
        cur.execute("SELECT flock.register_model(%s, %s, 'xgboost', NULL, %s)", (name, psycopg2.Binary(raw), FEATURES))
        ref = cur.fetchone()[0]
    conn.close()
    log(f"   usual path: export {exported - t0:.2f} s, train {trained - exported:.2f} s, "
        f"register {time.perf_counter() - trained:.2f} s")
    return time.perf_counter() - t0, ref, booster


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args()
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 6, "eta": 0.1,
              "nthread": args.threads, "num_boost_round": args.rounds}
    X, y = data.generate(args.rows)
    cluster = start_cluster()
    try:
        dsn = cluster.dsn()
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        t0 = time.perf_counter()
        load(conn, X, y)
        log(f"loaded {args.rows} rows x {len(FEATURES)} features in {time.perf_counter() - t0:.1f} s")
        times = {"in-database": [], "in-database, data set given": [], "usual path": []}
        booster = None
        for rep in range(args.reps):
            t, ref = in_database(conn, f"indb_{rep}", "higgs", params)
            times["in-database"].append(t)
            t, _ = in_database(conn, f"indb_ds_{rep}", ref, params)
            times["in-database, data set given"].append(t)
            t, usual_ref, booster = usual_path(dsn, f"usual_{rep}", params)
            times["usual path"].append(t)
            log(f"rep {rep}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
        with conn.cursor() as cur:
            cur.execute("SELECT model::bytea FROM flock.models WHERE name = 'indb_0'")
            stored = xgb.Booster(model_file=bytearray(bytes(cur.fetchone()[0])))
            cur.execute("SELECT metrics FROM flock.training_runs WHERE model_name = 'indb_0'")
            metrics = cur.fetchone()[0]
        sample = xgb.DMatrix(X[:10000], missing=np.nan, feature_names=FEATURES)
        same = np.array_equal(stored.predict(sample), booster.predict(sample))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"rows {args.rows}, features {len(FEATURES)}, rounds {args.rounds}, nthread {args.threads}, reps {args.reps}")
        for k, v in med.items():
            print(f"  {k:30s} {v:8.2f} s")
        ratio = med["usual path"] / med["in-database"]
        print(f"  ratio usual / in-database      {ratio:8.2f}x  (goal >= {GOAL_RATIO}x: {'met' if ratio >= GOAL_RATIO else 'not met'})")
        print(f"  ratio usual / in-database (data set given) {med['usual path'] / med['in-database, data set given']:.2f}x")
        # Paired per rep (the same minute of a shared machine's load), beside the ratio of medians.
        paired = [u / d for u, d in zip(times["usual path"], times["in-database"])]
        print(f"  ratio usual / in-database per rep: {', '.join(f'{r:.2f}x' for r in paired)}")
        print(f"  held-out metrics recorded: auc {metrics.get('auc', float('nan')):.4f}, "
              f"training_seconds {metrics['training_seconds']}")
        print(f"  same model: {'yes' if same else 'NO'} (predictions on 10,000 rows compared exactly)")
        conn.close()
        return 0 if same else 1
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
