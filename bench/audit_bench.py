"""What inference capture costs: the batched predict benchmark with audit 'all' vs 'off', 'off'
vs a model with no policy at all, and durability 'sync' vs the default 'async', measured in the
same run on a private cluster.

    /usr/bin/python3 bench/audit_bench.py --pg-bin /usr/lib/postgresql/15/bin [--rows 1000000]

Four models with the same bytes under four names: `m_none` (no policy row: the code path of every
model before audit existed, bar one LEFT JOIN at resolution), `m_off` (policy 'off'), `m_all`
(policy 'all', durability 'async') and `m_sync` (policy 'all', durability 'sync'). For each,
`SELECT sum(flock.predict(m, t)) FROM t` over --rows rows, batching on; for 'all' the time includes
`flock.audit_flush()`, i.e. until every prediction is committed in flock.inference_log; 'sync'
needs no flush (the statement returns once its records are committed and flushed to WAL: checked),
and the log is emptied between rounds (outside the timing). Rounds alternate the models; each ratio
is of medians, of wall time and of the cluster's CPU seconds.
Then --small single-row statements (`SELECT flock.predict(m, ARRAY[...])`, one client) per model:
where 'sync' costs most, one writer commit (and WAL flush) per statement.
The cluster runs with fsync on (--fsync off for the earlier figures' setting): 'sync' pays for real
WAL flushes.
Goals: all/off <= 2.0, off/none <= 1.03 (and off/previous build, with --baseline-pg-bin).
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


def cluster_cpu(cluster):
    """CPU seconds the cluster's processes used so far: the postmaster with its reaped children, plus
    the live children (backends, the audit writer). Unlike wall time, hardly inflated by other
    processes competing for the cores."""
    with open(os.path.join(cluster.datadir, "postmaster.pid")) as f:
        pm = int(f.readline())
    tick = os.sysconf("SC_CLK_TCK")

    def fields(pid):
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    total = sum(int(x) for x in fields(pm)[11:15])  # utime stime cutime cstime
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = fields(entry)
            except OSError:
                continue
            if int(st[1]) == pm:
                total += int(st[11]) + int(st[12])
    return total / tick


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
    ap.add_argument("--small", type=int, default=1000, help="single-row statements per model and round")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients for the single-row statements")
    ap.add_argument("--fsync", choices=("on", "off"), default="on")
    ap.add_argument("--setup-sql", default=None, help="SQL run after CREATE EXTENSION (to try storage settings)")
    ap.add_argument("--baseline-pg-bin", default=None,
                    help="bin directory of a PostgreSQL with the previous build of the extension installed: "
                         "its m_none is timed in the same rounds, on a cluster of its own")
    args = ap.parse_args()

    import pgcluster

    def start(pg_bin, name, audit):
        pgcluster.PG_BIN = pg_bin
        c = Cluster(name=name).start()
        if args.fsync == "on":  # Cluster starts with fsync=off (tests): restart with it on
            c._run([f"{pg_bin}/pg_ctl", "-D", c.datadir, "-m", "fast", "-w", "stop"])
            opts = (f"-p {c.port} -k {c.sockdir} -c listen_addresses='' -c fsync=on "
                    f"-c shared_preload_libraries=flock -c max_worker_processes=8 -c log_min_messages=warning")
            c._run([f"{pg_bin}/pg_ctl", "-D", c.datadir, "-l", c.logfile, "-o", opts, "-w", "-t", "60", "start"])
        conn = psycopg2.connect(c.dsn())
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("CREATE EXTENSION flock")
        if args.setup_sql and audit:
            cur.execute(args.setup_sql)
        model = tree_model(args.features, args.trees, args.depth)
        for name in ("m_none", "m_off", "m_all", "m_sync") if audit else ("m_none",):
            cur.execute("SELECT flock.register_model(%s, %s)", (name, model))
        if audit:
            cur.execute("SELECT flock.set_audit('m_off', 'off')")
            cur.execute("SELECT flock.set_audit('m_all', 'all')")
            cur.execute("SELECT flock.set_audit('m_sync', 'all')")
            cur.execute("SELECT flock.set_audit_durability('m_sync', 'sync')")
        cols = ", ".join(f"random()::real AS f{k + 1}" for k in range(args.features))
        cur.execute("SELECT setseed(0.42)")  # the same rows in both clusters
        cur.execute(f"CREATE TABLE t AS SELECT {cols} FROM generate_series(1, %s)", (args.rows,))
        cur.execute("VACUUM ANALYZE t")
        cur.execute("SET max_parallel_workers_per_gather = 0")  # one core for the query, as a baseline
        return c, conn, cur

    clusters = []
    cluster_of = {}
    try:
        if args.baseline_pg_bin:
            clusters.append(start(args.baseline_pg_bin, "flock-audit-bench-prev", False))
            prev_cur = clusters[-1][2]
            cluster_of["prev"] = clusters[-1][0]
        clusters.append(start(args.pg_bin, "flock-audit-bench", True))
        conn, cur = clusters[-1][1], clusters[-1][2]
        for k in ("none", "off", "all", "sync"):
            cluster_of[k] = clusters[-1][0]
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        print(f"audit capture benchmark: {args.rows} rows x {args.features} features, forest of {args.trees} trees "
              f"of depth {args.depth}, batch size {one(cur, 'SHOW flock.batch_size')}, fsync {one(cur, 'SHOW fsync')}, "
              f"synchronous_commit {one(cur, 'SHOW synchronous_commit')}, nproc {os.cpu_count()}, load {' '.join(load)}")
        plan = "\n".join(r[0] for r in (cur.execute("EXPLAIN SELECT sum(flock.predict('m_all', t)) FROM t t")
                                        or cur.fetchall()))
        assert "FlockBatchScore" in plan, plan

        times = {"none": [], "off": [], "all": [], "all_query": [], "sync": []}
        cpu = {"none": [], "off": [], "all": [], "sync": []}
        if args.baseline_pg_bin:
            times["prev"] = []
            cpu["prev"] = []
        sums = {}
        for rnd in range(args.rounds + 1):  # round 0 warms the cache and the model
            for name in ("prev", "none", "off", "all", "sync") if args.baseline_pg_bin else ("none", "off", "all", "sync"):
                c0 = cluster_cpu(cluster_of[name])
                t0 = time.perf_counter()
                which = prev_cur if name == "prev" else cur
                sums[name] = one(which, f"SELECT sum(flock.predict('m_{'none' if name == 'prev' else name}', t)) FROM t")
                t1 = time.perf_counter()
                if name == "all":
                    assert one(cur, "SELECT flock.audit_flush('10 minutes')") is True
                t2 = time.perf_counter()
                c2 = cluster_cpu(cluster_of[name])
                if rnd > 0:
                    times[name].append(t2 - t0)
                    cpu[name].append(c2 - c0)
                    if name == "all":
                        times["all_query"].append(t1 - t0)
                if name in ("all", "sync"):
                    # 'sync': all there when the statement returned (no flush was called).
                    logged = one(cur, "SELECT sum(n_rows) FROM flock.inference_log")
                    assert logged == args.rows, (name, logged, args.rows)
                    log_bytes = one(cur, "SELECT pg_total_relation_size('flock.inference_log_default')")
                    cur.execute("TRUNCATE flock.inference_log_default")
        for k in sums:
            assert abs(sums["none"] - sums[k]) < 1e-6 * max(1.0, abs(sums["none"])), (k, sums)
        # Two measures: wall time (what the query's caller waits; medians over the rounds) and the CPU
        # seconds the cluster spent (backend, and for 'all' the writer too), which other processes
        # on the same cores hardly inflate. A ratio passes when both are within its goal.
        med = {k: statistics.median(v) for k, v in times.items()}
        cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
        spread = max((max(v) - min(v)) / statistics.median(v) for v in times.values())
        print(f"{'policy':<22}{'wall s':>9}{'CPU s':>8}{'rows/s':>10}")
        labels = (("prev", "previous build"),) if args.baseline_pg_bin else ()
        labels += (("none", "no policy row"), ("off", "'off'"), ("all_query", "'all' (query only)"),
                   ("all", "'all' (until stored)"), ("sync", "'all', 'sync'"))
        for k, label in labels:
            c = f"{cpu_med[k]:>8.3f}" if k in cpu_med else f"{'':>8}"
            print(f"{label:<22}{med[k]:>9.3f}{c}{args.rows / med[k]:>10.0f}")

        def ratio(a, b, goal, name):
            wall = med[a] / med[b]
            cpu_ratio = cpu_med[a] / cpu_med[b] if a in cpu_med else None
            ok = wall <= goal and (cpu_ratio is None or cpu_ratio <= goal)
            c = f", CPU {cpu_ratio:.3f}" if cpu_ratio is not None else ""
            print(f"{name:<20}= wall {wall:.3f}{c}  (goal <= {goal:.2f}: {'PASS' if ok else 'FAIL'})")
        ratio("all", "off", 2.0, "all/off")
        ratio("all_query", "off", 2.0, "all (query only)/off")
        ratio("off", "none", 1.03, "off/none")
        if args.baseline_pg_bin:
            ratio("off", "prev", 1.03, "off/previous build")
            ratio("none", "prev", 1.03, "none/previous build")
        for a, b, name in (("sync", "all", "sync/async (stored)"), ("sync", "all_query", "sync/async (query)")):
            wall = med[a] / med[b]
            c = f", CPU {cpu_med[a] / cpu_med[b]:.3f}" if b in cpu_med else ""
            print(f"{name:<20}= wall {wall:.3f}{c}")
        print(f"log: {log_bytes / args.rows:.1f} bytes per prediction on disk; spread of the rounds {spread:.0%}"
              f"{' (busy machine: rerun before trusting a ratio near its goal)' if spread > 0.2 else ''}")

        # Small statements: one row each, one client. 'sync' waits for one writer commit per statement.
        if args.small > 0:
            values = ", ".join("0.5" for _ in range(args.features))
            small = {k: [] for k in ("off", "all", "sync", "insert")}
            cur.execute("CREATE TABLE commit_probe (x int)")
            for rnd in range(args.rounds + 1):
                for name in small:
                    # 'insert': a one-row INSERT, i.e. one ordinary commit that flushes WAL: the
                    # floor of any durable statement on this disk.
                    sql = ("INSERT INTO commit_probe VALUES (1) RETURNING x" if name == "insert" else
                           f"SELECT flock.predict('m_{name}', ARRAY[{values}]::real[])")
                    one(cur, sql)  # resolved and cached before timing
                    t0 = time.perf_counter()
                    for _ in range(args.small):
                        one(cur, sql)
                    if name == "all":
                        assert one(cur, "SELECT flock.audit_flush('10 minutes')") is True
                    t1 = time.perf_counter()
                    if rnd > 0:
                        small[name].append((t1 - t0) / args.small * 1000)
                    if name == "sync":
                        logged = one(cur, "SELECT sum(n_rows) FROM flock.inference_log")
                        assert logged == args.small + 1, (logged, args.small)
                    cur.execute("TRUNCATE flock.inference_log_default")
            sm = {k: statistics.median(v) for k, v in small.items()}
            print(f"{args.small} single-row statements, ms per statement (median of {args.rounds} rounds): "
                  f"'off' {sm['off']:.3f}, 'all' async {sm['all']:.3f} (incl. one final flush), "
                  f"'all' sync {sm['sync']:.3f}; sync/async {sm['sync'] / sm['all']:.2f}, "
                  f"sync - async {sm['sync'] - sm['all']:.3f} ms per statement; a one-row INSERT (one WAL-flushing "
                  f"commit) {sm['insert']:.3f} ms, sync/INSERT {sm['sync'] / sm['insert']:.2f}")

            # The same with several clients at once: 'sync' sessions share the writer's commits.
            if args.clients > 1:
                import threading
                c = cluster_of["all"]
                conns = []
                for _ in range(args.clients):
                    k = psycopg2.connect(c.dsn())
                    k.autocommit = True
                    conns.append(k)
                rate = {k: [] for k in ("all", "sync", "insert")}

                def client(k, sql, n):
                    with k.cursor() as kc:
                        for _ in range(n):
                            kc.execute(sql)
                            kc.fetchone()
                for rnd in range(args.rounds + 1):
                    for name in rate:
                        sql = ("INSERT INTO commit_probe VALUES (1) RETURNING x" if name == "insert" else
                               f"SELECT flock.predict('m_{name}', ARRAY[{values}]::real[])")
                        threads = [threading.Thread(target=client, args=(k, sql, args.small // args.clients))
                                   for k in conns]
                        t0 = time.perf_counter()
                        for t in threads:
                            t.start()
                        for t in threads:
                            t.join()
                        if name == "all":
                            assert one(cur, "SELECT flock.audit_flush('10 minutes')") is True
                        t1 = time.perf_counter()
                        if rnd > 0:
                            rate[name].append(args.small // args.clients * args.clients / (t1 - t0))
                        cur.execute("TRUNCATE flock.inference_log_default")
                for k in conns:
                    k.close()
                rm = {k: statistics.median(v) for k, v in rate.items()}
                print(f"{args.clients} clients, single-row statements per second: 'all' async {rm['all']:.0f}, "
                      f"'all' sync {rm['sync']:.0f} (sync/async {rm['sync'] / rm['all']:.2f}); one-row INSERTs "
                      f"{rm['insert']:.0f}")
    finally:
        for c, conn, _ in clusters:
            conn.close()
            c.stop()


if __name__ == "__main__":
    main()
