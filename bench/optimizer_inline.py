"""Where model inlining (flock.optimizer_inline) pays: a tree ensemble scored by a batched model
call vs the same trees as SQL expressions, measured in the same run on a private cluster. This is
what sets kMaxInlineCost in pg/src/optimize_inline.cpp.

    FLOCK_PG_BIN=/opt/pg-NAME/lib/postgresql/15/bin /usr/bin/python3 bench/optimizer_inline.py [--rows 200000]

For T perfect trees of depth D (random splits over 4 float8 columns with NULLs), two queries over
the same table, trees of the same shape (not the same splits: the sums differ):
  * model:   SELECT sum(flock.predict('ens', t)) FROM t  (flock.optimizer = off: FlockBatchScore)
  * inlined: SELECT sum(flock.predict('tree_1', t) + ... + flock.predict('tree_T', t)) FROM t with
             the optimizer on: each one-tree model is inlined (cost D + 1 each), so the query is the
             ensemble's trees as CASE expressions, which is what inlining the ensemble would give
             (plus T - 1 more flock._round_to_float4 calls).
The ratio model / inlined is printed per (T, D) with the ensemble's optimize::cost (trees x (depth
+ 1)): above 1 inlining is faster; and the same with flock.batching = off (a call scoring one row,
as where no FlockBatchScore can be placed). Medians of --rounds runs; parallel workers off, JIT off
unless --jit.
"""
import argparse
import json
import os
import random
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "pg"))

import psycopg2  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from onnx_builders import linear_regressor  # noqa: E402
from pgcluster import Cluster  # noqa: E402


def perfect_trees(rng, n_trees, depth, n_features=4):
    """n_trees perfect trees of `depth` levels (BRANCH_LEQ, missing to the true side)."""
    a = {k: [] for k in ("treeids", "nodeids", "featureids", "modes", "values", "true", "false", "missing")}
    w_tree, w_node, w_val = [], [], []
    for t in range(n_trees):
        counter = [0]

        def build(level):
            node = counter[0]
            counter[0] += 1
            at = len(a["nodeids"])
            a["treeids"].append(t)
            a["nodeids"].append(node)
            if level == depth:
                for k, v in (("featureids", 0), ("modes", "LEAF"), ("values", 0.0), ("true", 0), ("false", 0),
                             ("missing", 0)):
                    a[k].append(v)
                w_tree.append(t)
                w_node.append(node)
                w_val.append(round(rng.uniform(-1, 1), 3))
                return node
            a["featureids"].append(rng.randrange(n_features))
            a["modes"].append("BRANCH_LEQ")
            a["values"].append(round(rng.uniform(-1, 1), 2))
            a["missing"].append(1)
            a["true"].append(0)
            a["false"].append(0)
            a["true"][at] = build(level + 1)
            a["false"][at] = build(level + 1)
            return node

        build(0)
    node = helper.make_node(
        "TreeEnsembleRegressor", ["input"], ["variable"], domain="ai.onnx.ml", n_targets=1,
        aggregate_function="SUM", post_transform="NONE", nodes_treeids=a["treeids"], nodes_nodeids=a["nodeids"],
        nodes_featureids=a["featureids"], nodes_modes=a["modes"], nodes_values=a["values"],
        nodes_truenodeids=a["true"], nodes_falsenodeids=a["false"], nodes_missing_value_tracks_true=a["missing"],
        target_treeids=w_tree, target_nodeids=w_node, target_ids=[0] * len(w_tree), target_weights=w_val)
    graph = helper.make_graph([node], "trees", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_features])],
                              [helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid("ai.onnx.ml", 1)])
    m.ir_version = 8
    helper.set_model_props(m, {"feature_names": json.dumps([f"f{j}" for j in range(n_features)])})
    return m.SerializeToString()


def timed(cur, sql, rounds):
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        cur.execute(sql)
        result = cur.fetchall()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--shapes", default="1x1,1x2,1x3,1x6,2x4,4x4,8x5,32x5")
    parser.add_argument("--jit", action="store_true", help="JIT-compile every query (jit_above_cost = 0)")
    args = parser.parse_args()
    cluster = Cluster().start()
    try:
        conn = psycopg2.connect(cluster.dsn())
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("CREATE EXTENSION flock")
        cur.execute("CREATE TABLE t AS SELECT i AS id, "
                    + ", ".join(f"CASE WHEN random() < 0.05 THEN NULL ELSE random() * 2 - 1 END AS f{j}" for j in range(4))
                    + f" FROM generate_series(1, {args.rows}) i")
        cur.execute("ANALYZE t")
        if args.jit:
            cur.execute("SET jit = on")
            cur.execute("SET jit_above_cost = 0")
            cur.execute("SET jit_inline_above_cost = 0")
            cur.execute("SET jit_optimize_above_cost = 0")
        else:
            cur.execute("SET jit = off")
        cur.execute("SET max_parallel_workers_per_gather = 0")
        print(f"{args.rows} rows, median of {args.rounds}, JIT {'on' if args.jit else 'off'}; "
              "ratio = model time / inlined time (> 1: inlining faster)")
        print(f"{'trees x depth':>14} {'cost':>6} {'model ms':>9} {'inlined ms':>11} {'ratio':>6} "
              f"{'unbatched ms':>13} {'ratio':>6}")
        for shape in args.shapes.split(","):
            n_trees, depth = (int(x) for x in shape.split("x"))
            rng = random.Random(n_trees * 100 + depth)
            tag = f"{n_trees}x{depth}"
            trees = [perfect_trees(rng, 1, depth) for _ in range(n_trees)]
            # The ensemble: the same trees, in the same order, in one model.
            ens = perfect_trees(random.Random(n_trees * 100 + depth), n_trees, depth)
            cur.execute("SELECT flock.register_model(%s, %s, 'onnx')", (f"ens_{tag}", ens))
            for k, data in enumerate(trees):
                cur.execute("SELECT flock.register_model(%s, %s, 'onnx')", (f"tree_{tag}_{k}", data))
            model_sql = f"SELECT sum(flock.predict('ens_{tag}', t)) FROM t"
            parts = " + ".join(f"flock.predict('tree_{tag}_{k}', t)" for k in range(n_trees))
            inlined_sql = f"SELECT sum({parts}) FROM t"
            cur.execute("SET flock.optimizer = on")
            cur.execute("EXPLAIN " + inlined_sql)
            plan = "\n".join(r[0] for r in cur.fetchall())
            assert "FlockBatchScore" not in plan and "Flock Inlined" in plan, plan
            inl_t, _ = timed(cur, inlined_sql, args.rounds)
            cur.execute("SET flock.optimizer = off")
            mod_t, _ = timed(cur, model_sql, args.rounds)
            # Where the call cannot be batched (e.g. above a Sort, in a join qual): one row per call.
            cur.execute("SET flock.batching = off")
            one_t, _ = timed(cur, model_sql, args.rounds)
            cur.execute("RESET flock.batching")
            cost = n_trees * (depth + 1)
            print(f"{tag:>14} {cost:>6} {mod_t * 1000:>9.1f} {inl_t * 1000:>11.1f} {mod_t / inl_t:>6.2f} "
                  f"{one_t * 1000:>13.1f} {one_t / inl_t:>6.2f}")
        # A linear regressor over the 4 columns (NOT NULL copies: a NULL feature is an error).
        cur.execute("CREATE TABLE tn AS SELECT id, " + ", ".join(f"coalesce(f{j}, 0) AS f{j}" for j in range(4)) + " FROM t")
        for j in range(4):
            cur.execute(f"ALTER TABLE tn ALTER f{j} SET NOT NULL")
        cur.execute("ANALYZE tn")
        cur.execute("SELECT flock.register_model('lin', %s, 'onnx')",
                    (linear_regressor([0.5, -1.25, 2.0, 0.75], 0.1, feature_names=[f"f{j}" for j in range(4)]),))
        sql = "SELECT sum(flock.predict('lin', t)) FROM tn t"
        cur.execute("SET flock.optimizer = on")
        cur.execute("EXPLAIN " + sql)
        assert "Flock Inlined" in "\n".join(r[0] for r in cur.fetchall())
        inl_t, inl_sum = timed(cur, sql, args.rounds)
        cur.execute("SET flock.optimizer = off")
        mod_t, mod_sum = timed(cur, sql, args.rounds)
        assert abs(inl_sum[0][0] - mod_sum[0][0]) <= 1e-6 * max(1.0, abs(mod_sum[0][0])), (inl_sum, mod_sum)
        print(f"{'linear, 4':>14} {4:>6} {mod_t * 1000:>9.1f} {inl_t * 1000:>11.1f} {mod_t / inl_t:>6.2f}")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
