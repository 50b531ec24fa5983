#!/usr/bin/python3
"""The optimizer benchmark (issue 13): Raven-style prediction queries, flock.optimizer on vs off.

    /usr/bin/python3 bench/optimizer/run.py [--rows 1000000] [--reps 3] [--min-seconds 3] [--work-dir DIR] [--queries q1,q3]

Starts a private PostgreSQL 15 cluster (tests/pgcluster.py, flock preloaded; FLOCK_PG_BIN picks the
installation), loads the benchmark's Higgs-like table (bench/indb/data.py: N rows, 28 real
features, fixed seed), trains XGBoost models on it (cached in the work directory) and runs each query
with `SET flock.optimizer = off` and `= on`, interleaved, REPS times each (more for a short query:
until each side ran about --min-seconds, at most --max-reps), in one session, single
threaded (max_parallel_workers_per_gather = 0, jit off). Per query it prints the median wall times,
the ratio off / on (> 1: the optimizer made it faster) and what EXPLAIN says the optimizer did.

Same answers: before timing, each query's rows are fetched in full with the optimizer off and on
and compared exactly (ids and the float8 bits of every prediction); a difference fails the run.

The queries (the issue's list):
  q1 pruning     a selective predicate on two top split features of a 500-tree depth-8 regressor
  q2 join        a model reading 5 of 28 features through a view whose LEFT JOIN feeds only
                 features it does not read (the join on a primary key can go)
  q3 inversion   predict > threshold with a B-tree index on the model's top split feature
  q3m inversion  the same for a regression of one invariant mass on the 27 other features (100
                 trees, depth 6) whose high predictions come from a narrow range of its top feature
  q4 inline      a small model (10 trees, depth 3) over the whole table
  q5 partitions  a table range-partitioned on the top split feature, whole table scored
  q6 partitions + inversion  q3m's predicate on q5's table: the derived filter prunes partitions
  q7 inversion   predict > p99 for the small model of q4 (10 trees, depth 3), whose region
                 is tight enough to narrow several columns; no index on most of them, so what it
                 saves is model calls on the rows the derived quals reject

Exit status: 0 when every query ran and agreed (a ratio below the goal is a measurement, not an
error); 1 when a query failed or answers differed; 2 on bad arguments.
"""

import argparse
import hashlib
import json
import math
import os
import statistics
import struct
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import psycopg2  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "bench", "indb"))
sys.path.insert(0, os.path.join(REPO, "tests"))

import data  # noqa: E402
from pgcluster import PG_BIN, Cluster  # noqa: E402

FEATURES = data.FEATURES
GOAL_RATIO = 5.0       # at least three queries
FLOOR_RATIO = 0.95     # none below
TRAIN_ROWS = 200_000


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Models: XGBoost regressors (reg:squarederror on the signal label), cached by their parameters.

MODEL_SPECS = {
    # name: (rounds, depth, eta, features it may split on (None: all 28), target (None: the signal label))
    "big": (500, 8, 0.1, None, None),
    "five": (100, 6, 0.3, ["lepton_pt", "lepton_eta", "missing_energy_magnitude", "jet1_pt", "jet1_btag"], None),
    "tiny": (10, 3, 0.3, None, None),
    # A regression of one invariant mass on the other 27 features (m_wbb grows with |m_bb|): its high
    # predictions come from a narrow part of the data, as a risk score's do.
    "mass": (100, 6, 0.3, [f for f in FEATURES if f != "m_wbb"], "m_wbb"),
}


def train_models(X, y, work_dir):
    import xgboost as xgb
    out = {}
    for name, (rounds, depth, eta, only, target) in MODEL_SPECS.items():
        key = hashlib.sha256(json.dumps([name, rounds, depth, eta, only, target, len(X), data.VERSION, 1]).encode()).hexdigest()[:10]
        path = os.path.join(work_dir, f"opt-{name}-{key}.json")
        if not os.path.exists(path):
            t0 = time.perf_counter()
            Xt = X.copy()
            if only is not None:
                # The other 23 features are constant in training: no tree splits on them, so the model
                # keeps all 28 inputs but reads 5.
                for k, f in enumerate(FEATURES):
                    if f not in only:
                        Xt[:, k] = 0.0
            label = y.astype(np.float32) if target is None else X[:, FEATURES.index(target)]
            d = xgb.DMatrix(Xt, label=label, feature_names=list(FEATURES))
            params = {"objective": "reg:squarederror", "tree_method": "hist", "max_depth": depth, "eta": eta,
                      "nthread": os.cpu_count() or 1, "seed": 0}
            b = xgb.train(params, d, num_boost_round=rounds)
            tmp = path + ".tmp.json"
            b.save_model(tmp)
            os.replace(tmp, path)
            log(f"   trained {name} ({rounds} trees, depth {depth}) in {time.perf_counter() - t0:.1f} s")
        out[name] = path
    return out


def top_split_features(path, k):
    """The k features the model's trees split on first most often (their roots), in order."""
    with open(path) as f:
        m = json.load(f)
    names = m["learner"]["feature_names"]
    counts = {}
    for tree in m["learner"]["gradient_booster"]["model"]["trees"]:
        if tree["left_children"][0] != -1:
            f = names[tree["split_indices"][0]]
            counts[f] = counts.get(f, 0) + 1
    return [f for f, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:k]]


# ------------------------------------------------------------------------------------------------
# Cluster and tables


def start_cluster():
    c = Cluster("flock-bench-opt")
    c.start()
    for sql in ("ALTER SYSTEM SET shared_buffers = '1GB'", "ALTER SYSTEM SET jit = off",
                "ALTER SYSTEM SET max_parallel_workers_per_gather = 0", "ALTER SYSTEM SET work_mem = '256MB'"):
        c.psql(sql)
    c._run([f"{PG_BIN}/pg_ctl", "-D", c.datadir, "-l", c.logfile, "-m", "fast", "-w", "-t", "60", "restart"])
    return c


def execute(cur, sql, args=None):
    cur.execute(sql, args)


def load(conn, X, models, top, mass_top):
    cols = ", ".join(f"{c} real" for c in FEATURES)
    half = len(FEATURES) // 2
    a_cols, b_cols = FEATURES[:half], FEATURES[half:]
    with conn.cursor() as cur:
        execute(cur, "CREATE EXTENSION flock")
        execute(cur, f"CREATE TABLE higgs (id bigint PRIMARY KEY, {cols}) WITH (autovacuum_enabled = off)")
        t0 = time.perf_counter()
        cur.copy_expert("COPY higgs FROM STDIN (FORMAT binary)", data.table_copy_stream(X))
        log(f"   COPY {len(X)} rows: {time.perf_counter() - t0:.1f} s")
        # q3: a B-tree index on the big model's top split feature; q3m: on the mass model's.
        for f in sorted({top[0], mass_top}):
            execute(cur, f"CREATE INDEX higgs_{f} ON higgs ({f})")
        # q2: the table split in two, joined back by a view; the five-feature model reads a's only.
        five = MODEL_SPECS["five"][3]
        a_cols = [c for c in FEATURES if c in five] + [c for c in FEATURES if c not in five][: half - len(five)]
        b_cols = [c for c in FEATURES if c not in a_cols]
        execute(cur, f"CREATE TABLE higgs_a WITH (autovacuum_enabled = off) AS SELECT id, {', '.join(a_cols)} FROM higgs")
        execute(cur, f"CREATE TABLE higgs_b WITH (autovacuum_enabled = off) AS SELECT id, {', '.join(b_cols)} FROM higgs")
        execute(cur, "ALTER TABLE higgs_a ADD PRIMARY KEY (id)")
        execute(cur, "ALTER TABLE higgs_b ADD PRIMARY KEY (id)")
        execute(cur, "CREATE VIEW higgs_wide AS SELECT a.id, " + ", ".join(f"a.{c}" for c in a_cols) + ", "
                + ", ".join(f"b.{c}" for c in b_cols) + " FROM higgs_a a LEFT JOIN higgs_b b ON b.id = a.id")
        # q5, q6: range partitions on the mass model's top split feature, at its deciles.
        execute(cur, f"SELECT percentile_cont(ARRAY[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9]) WITHIN GROUP (ORDER BY {mass_top}) FROM higgs")
        cuts = [float(np.float32(v)) for v in cur.fetchone()[0]]
        execute(cur, f"CREATE TABLE higgs_part (id bigint, {cols}) PARTITION BY RANGE ({mass_top})")
        bounds = ["MINVALUE"] + [repr(v) for v in cuts] + ["MAXVALUE"]
        for i in range(len(bounds) - 1):
            execute(cur, f"CREATE TABLE higgs_part_{i} PARTITION OF higgs_part FOR VALUES FROM ({bounds[i]}) TO ({bounds[i + 1]}) "
                         "WITH (autovacuum_enabled = off)")
        execute(cur, "INSERT INTO higgs_part SELECT * FROM higgs")
        for name, path in models.items():
            with open(path, "rb") as f:
                execute(cur, "SELECT flock.register_model(%s, %s)", (name, psycopg2.Binary(f.read())))
        for t in ("higgs", "higgs_a", "higgs_b", "higgs_part"):
            execute(cur, f"VACUUM (FREEZE, ANALYZE) {t}")
        execute(cur, "CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        execute(cur, "SELECT pg_prewarm(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                     "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')")


# ------------------------------------------------------------------------------------------------
# Queries


def choose_threshold(conn, model, quantile=0.999):
    """A threshold on the model's prediction at the 99.9th percentile (`quantile`) of a 2% sample of
    the rows, so that about 0.1% of the rows qualify."""
    with conn.cursor() as cur:
        execute(cur, "SET flock.optimizer = off")
        execute(cur, f"SELECT flock.predict('{model}', t) FROM higgs t WHERE id % 50 = 0")
        p = np.array([r[0] for r in cur.fetchall()])
    t = float(np.quantile(p, quantile))
    if t >= p.max():
        # Few distinct predictions (a small model): the quantile is the largest, which no row
        # exceeds; the next lower prediction keeps the rows at the largest one.
        below = p[p < t]
        t = float(below.max()) if below.size else t
    return t


def queries(conn, top, mass_top, X):
    lo, hi = (float(np.float32(v)) for v in np.quantile(X[:, FEATURES.index(top[0])], [0.90, 0.97]))
    second = float(np.float32(np.quantile(X[:, FEATURES.index(top[1])], 0.5)))
    threshold = choose_threshold(conn, "big")
    mass_threshold = choose_threshold(conn, "mass")
    # The small model has few distinct predictions: its 99.9th percentile is its largest, which no
    # row exceeds; the 99th percentile keeps about 1% of the rows.
    tiny_threshold = choose_threshold(conn, "tiny", 0.99)
    return {
        "q1": ("pruning: selective predicate on top split features, 500 trees depth 8",
               f"FROM higgs t WHERE {top[0]} BETWEEN {lo!r} AND {hi!r} AND {top[1]} > {second!r}",
               "flock.predict('big', t)"),
        "q2": ("join: model reads 5 of 28 features, LEFT JOIN feeds only unread ones",
               "FROM higgs_wide t", "flock.predict('five', t)"),
        "q3": (f"inversion: predict('big') > {threshold:.6g}, B-tree index on {top[0]}",
               f"FROM higgs t WHERE flock.predict('big', t) > {threshold!r}", "flock.predict('big', t)"),
        "q3m": (f"inversion: predict('mass') > {mass_threshold:.6g}, B-tree index on {mass_top}",
                f"FROM higgs t WHERE flock.predict('mass', t) > {mass_threshold!r}", "flock.predict('mass', t)"),
        "q4": ("inline: 10 trees depth 3 over the whole table", "FROM higgs t", "flock.predict('tiny', t)"),
        "q5": (f"partitions: 10 range partitions on {mass_top}, 500 trees depth 8",
               "FROM higgs_part t", "flock.predict('big', t)"),
        "q6": (f"partitions + inversion: predict('mass') > {mass_threshold:.6g} on the partitioned table",
               f"FROM higgs_part t WHERE flock.predict('mass', t) > {mass_threshold!r}", "flock.predict('mass', t)"),
        "q7": (f"inversion: predict('tiny') > {tiny_threshold:.6g}, 10 trees depth 3",
               f"FROM higgs t WHERE flock.predict('tiny', t) > {tiny_threshold!r}", "flock.predict('tiny', t)"),
    }


def timed_sql(q):
    _, from_where, pred = q
    return f"SELECT count(*), sum({pred}) {from_where}"


def rows_sql(q):
    _, from_where, pred = q
    return f"SELECT t.id, {pred} {from_where}"


def set_optimizer(cur, on):
    execute(cur, f"SET flock.optimizer = {'on' if on else 'off'}")


def answers(conn, q, on):
    with conn.cursor() as cur:
        set_optimizer(cur, on)
        execute(cur, rows_sql(q))
        rows = cur.fetchall()
    rows.sort(key=lambda r: r[0])
    return [(r[0], struct.pack("<d", r[1]) if r[1] is not None else None) for r in rows]


def explain(conn, q, on):
    with conn.cursor() as cur:
        set_optimizer(cur, on)
        execute(cur, "EXPLAIN " + timed_sql(q))
        return [r[0] for r in cur.fetchall()]


def optimizer_lines(plan):
    lines = [line.strip() for line in plan]
    out = sorted({x for x in lines if x.startswith("Flock ") and not x.startswith(("Flock Pruned", "Flock Model"))}
                 | {x.split("  (")[0] for x in lines if "Index" in x and "Scan" in x})
    pruned = [x for x in lines if x.startswith("Flock Pruned")]
    if pruned:
        out.append(f"Flock Pruned: {len(pruned)} node(s), e.g. {pruned[0][len('Flock Pruned: '):]}")
    scans = {x.split(" on ")[1].split()[0] for x in lines if " Scan on " in x}
    out.append(f"scans: {', '.join(sorted(scans))}")
    return out


def time_once(conn, q, on):
    with conn.cursor() as cur:
        set_optimizer(cur, on)
        t0 = time.perf_counter()
        execute(cur, timed_sql(q))
        cur.fetchall()
        return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--min-seconds", type=float, default=3.0,
                    help="a short query is repeated until each side ran about this long (median of all)")
    ap.add_argument("--max-reps", type=int, default=31)
    ap.add_argument("--work-dir", default="/tmp/flock-bench-optimizer")
    ap.add_argument("--queries", default="q1,q2,q3,q3m,q4,q5,q6,q7")
    args = ap.parse_args()
    wanted = args.queries.split(",")
    os.makedirs(args.work_dir, exist_ok=True)

    log(f"== data: {args.rows} Higgs-like rows (bench/indb/data.py, seed {data.SEED})")
    X, y = data.generate(args.rows)
    models = train_models(X[:TRAIN_ROWS], y[:TRAIN_ROWS], args.work_dir)
    top = top_split_features(models["big"], 2)
    mass_top = top_split_features(models["mass"], 1)[0]
    log(f"   the big model's top split features: {top}; the mass model's: {mass_top}")
    cluster = start_cluster()
    conn = psycopg2.connect(cluster.dsn())
    conn.autocommit = True
    load(conn, X, models, top, mass_top)
    qs = {k: v for k, v in queries(conn, top, mass_top, X).items() if k in wanted}

    failed = False
    results = {}
    for name, q in qs.items():
        log(f"== {name}: {q[0]}")
        try:
            off, on = answers(conn, q, False), answers(conn, q, True)
        except psycopg2.Error as e:
            log(f"   FAILED: {e}")
            failed = True
            continue
        same = off == on
        if not same:
            failed = True
            log(f"   ANSWERS DIFFER: {len(off)} rows off, {len(on)} on")
        plan_on = explain(conn, q, True)
        times = {False: [], True: []}
        # At least --reps alternations, more for short queries: about --min-seconds per side.
        reps = args.reps
        rep = 0
        while rep < reps:
            for on_ in (False, True):
                times[on_].append(time_once(conn, q, on_))
            if rep == 0:
                longest = max(times[False][0], times[True][0])
                reps = max(args.reps, min(args.max_reps, math.ceil(args.min_seconds / max(longest, 1e-3))))
            rep += 1
        t_off, t_on = statistics.median(times[False]), statistics.median(times[True])
        results[name] = (q[0], len(off), t_off, t_on, t_off / t_on, same, optimizer_lines(plan_on))
        log(f"   rows {len(off)}  off {t_off * 1e3:.0f} ms  on {t_on * 1e3:.0f} ms  ratio {t_off / t_on:.2f}x  ({reps} reps)")
    conn.close()
    cluster.stop()

    print(f"\nflock optimizer benchmark: {args.rows} rows, at least {args.reps} reps (about {args.min_seconds:g} s a side), "
          f"median wall time, one core, "
          f"flock.optimizer off vs on in the same run ({PG_BIN})\n")
    print("| query | what | rows | off (ms) | on (ms) | off/on | same answers |")
    print("|---|---|---:|---:|---:|---:|---|")
    for name, (what, n, t_off, t_on, ratio, same, _) in results.items():
        print(f"| {name} | {what} | {n:,} | {t_off * 1e3:,.0f} | {t_on * 1e3:,.0f} | {ratio:.2f}x | {'yes' if same else 'NO'} |")
    print()
    for name, r in results.items():
        print(f"{name} EXPLAIN (optimizer on): " + ("; ".join(r[6]) or "(nothing)"))
    fast = sum(1 for r in results.values() if r[4] >= GOAL_RATIO)
    slow = [k for k, r in results.items() if r[4] < FLOOR_RATIO]
    print(f"\ngoal: >= {GOAL_RATIO}x on at least three queries: {fast} "
          f"({'PASS' if fast >= 3 else 'FAIL'}); none below {FLOOR_RATIO}x: "
          f"{'PASS' if not slow else 'FAIL (' + ', '.join(slow) + ')'}")
    return 1 if failed or len(results) < len(qs) else 0


if __name__ == "__main__":
    sys.exit(main())
