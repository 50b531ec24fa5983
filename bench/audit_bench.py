"""What inference capture costs: the batched predict benchmark with audit 'all' vs 'off', and 'off'
vs a model with no policy at all, measured in the same run on a private cluster.

    /usr/bin/python3 bench/audit_bench.py --pg-bin /usr/lib/postgresql/15/bin [--rows 1000000]

Three models with the same bytes under three names: `m_none` (no policy row: the code path of every
model before audit existed, bar one LEFT JOIN at resolution), `m_off` (policy 'off') and `m_all`
(policy 'all'). For each, `SELECT sum(flock.predict(m, t)) FROM t` over --rows rows, batching on;
for 'all' the time includes `flock.audit_flush()`, i.e. until every prediction is committed in
flock.inference_log, and the log is emptied between rounds (outside the timing). Rounds alternate
the three, and the figure is the median over the rounds. Goals: all/off <= 2.0, off/none <= 1.03.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import psycopg2  # noqa: E402

from onnx_builders import _model  # noqa: E402,F401  (onnx available)
from pgcluster import Cluster  # noqa: E402


def tree_model(n_features, n_trees, depth, seed=7):
    """A regression forest over n_features (ONNX-ML TreeEnsembleRegressor), named features f1..fn."""
    import random

    from onnx import TensorProto, helper
    rnd = random.Random(seed)
    attrs = {k: [] for k in ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values", "nodes_modes",
                             "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true",
                             "nodes_hitrates", "target_treeids", "target_nodeids", "target_ids", "target_weights")}
    for t in range(n_trees):
        n_internal = 2 ** depth - 1
        for node in range(2 ** (depth + 1) - 1):
            attrs["nodes_treeids"].append(t)
            attrs["nodes_nodeids"].append(node)
            attrs["nodes_hitrates"].append(1.0)
            attrs["nodes_missing_value_tracks_true"].append(0)
            if node < n_internal:
                attrs["nodes_featureids"].append(rnd.randrange(n_features))
                attrs["nodes_values"].append(rnd.random())
                attrs["nodes_modes"].append("BRANCH_LEQ")
                attrs["nodes_truenodeids"].append(2 * node + 1)
                attrs["nodes_falsenodeids"].append(2 * node + 2)
            else:
                attrs["nodes_featureids"].append(0)
                attrs["nodes_values"].append(0.0)
                attrs["nodes_modes"].append("LEAF")
                attrs["nodes_truenodeids"].append(0)
                attrs["nodes_falsenodeids"].append(0)
                attrs["target_treeids"].append(t)
                attrs["target_nodeids"].append(node)
                attrs["target_ids"].append(0)
                attrs["target_weights"].append(rnd.uniform(-1, 1))
    node = helper.make_node("TreeEnsembleRegressor", ["input"], ["variable"], domain="ai.onnx.ml", n_targets=1,
                            **attrs)
    graph = helper.make_graph([node], "forest",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_features])],
                              [helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    model.metadata_props.add(key="feature_names", value=",".join(f"f{k + 1}" for k in range(n_features)))
    return model.SerializeToString()


def one(cur, sql, args=None):
    cur.execute(sql, args)
    return cur.fetchone()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pg-bin", default=os.environ.get("FLOCK_PG_BIN", "/usr/lib/postgresql/15/bin"))
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--trees", type=int, default=50)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--setup-sql", default=None, help="SQL run after CREATE EXTENSION (to try storage settings)")
    args = ap.parse_args()

    import pgcluster
    pgcluster.PG_BIN = args.pg_bin
    cluster = Cluster(name="flock-audit-bench").start()
    try:
        conn = psycopg2.connect(cluster.dsn())
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("CREATE EXTENSION flock")
        if args.setup_sql:
            cur.execute(args.setup_sql)
        model = tree_model(args.features, args.trees, args.depth)
        for name in ("m_none", "m_off", "m_all"):
            cur.execute("SELECT flock.register_model(%s, %s)", (name, model))
        cur.execute("SELECT flock.set_audit('m_off', 'off')")
        cur.execute("SELECT flock.set_audit('m_all', 'all')")
        cols = ", ".join(f"random()::real AS f{k + 1}" for k in range(args.features))
        cur.execute(f"CREATE TABLE t AS SELECT {cols} FROM generate_series(1, %s)", (args.rows,))
        cur.execute("VACUUM ANALYZE t")
        cur.execute("SET max_parallel_workers_per_gather = 0")  # one core for the query, as a baseline
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        print(f"audit capture benchmark: {args.rows} rows x {args.features} features, forest of {args.trees} trees "
              f"of depth {args.depth}, batch size {one(cur, 'SHOW flock.batch_size')}, nproc {os.cpu_count()}, "
              f"load {' '.join(load)}")
        plan = "\n".join(r[0] for r in (cur.execute("EXPLAIN SELECT sum(flock.predict('m_all', t)) FROM t t")
                                        or cur.fetchall()))
        assert "FlockBatchScore" in plan, plan

        times = {"none": [], "off": [], "all": [], "all_query": []}
        sums = {}
        for rnd in range(args.rounds + 1):  # round 0 warms the cache and the model
            for name in ("none", "off", "all"):
                t0 = time.perf_counter()
                sums[name] = one(cur, f"SELECT sum(flock.predict('m_{name}', t)) FROM t")
                t1 = time.perf_counter()
                if name == "all":
                    assert one(cur, "SELECT flock.audit_flush('10 minutes')") is True
                t2 = time.perf_counter()
                if rnd > 0:
                    times[name].append(t2 - t0)
                    if name == "all":
                        times["all_query"].append(t1 - t0)
                if name == "all":
                    logged = one(cur, "SELECT sum(n_rows) FROM flock.inference_log")
                    assert logged == args.rows, (logged, args.rows)
                    log_bytes = one(cur, "SELECT pg_total_relation_size('flock.inference_log_default')")
                    cur.execute("TRUNCATE flock.inference_log_default")
        assert abs(sums["none"] - sums["all"]) < 1e-6 * max(1.0, abs(sums["none"]))
        med = {k: statistics.median(v) for k, v in times.items()}
        spread = max((max(v) - min(v)) / statistics.median(v) for v in times.values())
        print(f"{'policy':<22}{'median s':>10}{'rows/s':>14}")
        for k, label in (("none", "no policy row"), ("off", "'off'"), ("all_query", "'all' (query only)"),
                         ("all", "'all' (until stored)")):
            print(f"{label:<22}{med[k]:>10.3f}{args.rows / med[k]:>14.0f}")
        all_off = med["all"] / med["off"]
        off_none = med["off"] / med["none"]
        print(f"all/off  = {all_off:.2f}  (goal <= 2.00: {'PASS' if all_off <= 2.0 else 'FAIL'}); "
              f"query only {med['all_query'] / med['off']:.2f}")
        print(f"off/none = {off_none:.3f} (goal <= 1.03: {'PASS' if off_none <= 1.03 else 'FAIL'})")
        print(f"log: {log_bytes / args.rows:.1f} bytes per prediction on disk; spread of the rounds {spread:.0%}"
              f"{' (busy machine: rerun before trusting a ratio near its goal)' if spread > 0.2 else ''}")
        conn.close()
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
