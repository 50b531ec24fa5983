"""What isolated model validation costs per registration, measured in the same run on a private
cluster.

    /usr/bin/python3 bench/model_check.py [--pg-bin /opt/pg-x/lib/postgresql/15/bin] [--rounds 20]

Every bytes -> flock.model conversion (cast, input/receive functions, register_model) first loads
the model in flock-model-check, a separate process under rlimits, and then compiles it in the
backend. For a small model (a linear regressor, ~200 B), a tree ensemble (~1 MB) and a 10 MB MLP
layer, each round uses fresh bytes (a different doc_string, so a different sha256 and no cache hit):
  in-process  SELECT flock.model_signature(m) over a stored, already validated value in a backend
              that has not compiled it: the load in the backend alone, as before isolation
  transfer    SELECT $1 IS NOT NULL with the same bytes as bytea: sending and parsing the parameter
  checked     SELECT $1::flock.model: the checker process, then the same load in the backend
  register    SELECT flock.register_model(name, $1): the whole registration, with the check
  checker     flock-model-check run directly from this script (spawn + load + answer)
Wall time: medians over the rounds; the isolation's overhead is checked - transfer - in-process. CPU: the backend's own
CPU plus its reaped children's (the checker), from /proc/<pid>/stat, averaged over the rounds (less
inflated than wall time by other processes competing for the cores; 10 ms clock ticks).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import psycopg2  # noqa: E402

import onnx_builders  # noqa: E402
from pgcluster import Cluster  # noqa: E402


def variants(model_bytes, n):
    """n copies of the model that differ only in doc_string (distinct sha256, same work)."""
    m = onnx.load_from_string(model_bytes)
    out = []
    for k in range(n):
        m.doc_string = f"variant {k} {time.time_ns()}"
        out.append(m.SerializeToString())
    return out


def backend_cpu(pid):
    """CPU seconds of a backend including its reaped children (utime + stime + cutime + cstime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def tree_model(n_trees=100, depth=8, n_features=20, seed=3):
    sys.path.insert(0, HERE)
    from audit_bench import tree_model as build
    return build(n_features, n_trees, depth, seed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg-bin", default=os.environ.get("FLOCK_PG_BIN", "/usr/lib/postgresql/15/bin"))
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    os.environ["FLOCK_PG_BIN"] = args.pg_bin
    import pgcluster
    pgcluster.PG_BIN = args.pg_bin
    checker = os.path.join(args.pg_bin, "flock-model-check")

    rng = np.random.default_rng(1)
    n = 1600
    models = {
        "linear (small)": onnx_builders.linear_regressor([1.0, 2.0, 3.0], 0.5),
        "trees 100x d8": tree_model(),
        "dense 1600x1600 (10 MB)": onnx_builders.dense_relu(
            rng.standard_normal((n, n)).astype(np.float32), np.zeros(n, dtype=np.float32)),
    }

    cluster = Cluster("flock-bench-check").start()
    try:
        conn = psycopg2.connect(cluster.dsn())
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("CREATE EXTENSION flock")
        cur.execute("SET statement_timeout = 0")
        cur.execute("CREATE TABLE stored (id int PRIMARY KEY, m flock.model)")
        cur.execute("SELECT pg_backend_pid()")
        writer_pid = cur.fetchone()[0]
        print("wall time, medians:")
        print(f"{'model':26} {'bytes':>10} {'in-process':>11} {'transfer':>9} {'checked':>9} {'register':>9} "
              f"{'checker':>9} {'overhead':>9}")
        cpu_lines = []
        for name, model in models.items():
            rounds = args.rounds if len(model) < 2_000_000 else max(3, args.rounds // 4)
            stored = variants(model, rounds)
            cur.execute("TRUNCATE stored")
            for k, v in enumerate(stored):
                cur.execute("INSERT INTO stored VALUES (%s, %s)", (k, psycopg2.Binary(v)))
            fresh = variants(model, 2 * rounds)
            inproc, transfer, checked, register, alone = [], [], [], [], []
            # A backend that has compiled none of the stored variants.
            reader = psycopg2.connect(cluster.dsn())
            reader.autocommit = True
            rcur = reader.cursor()
            rcur.execute("SELECT pg_backend_pid()")
            reader_pid = rcur.fetchone()[0]
            cpu_inproc = cpu_checked = 0.0
            for k in range(rounds):
                c0 = backend_cpu(reader_pid)
                t0 = time.perf_counter()
                rcur.execute("SELECT flock.model_signature(m) IS NOT NULL FROM stored WHERE id = %s", (k,))
                rcur.fetchone()
                inproc.append(time.perf_counter() - t0)
                cpu_inproc += backend_cpu(reader_pid) - c0

                t0 = time.perf_counter()
                cur.execute("SELECT %s IS NOT NULL", (psycopg2.Binary(fresh[2 * k]),))
                cur.fetchone()
                transfer.append(time.perf_counter() - t0)

                c0 = backend_cpu(writer_pid)
                t0 = time.perf_counter()
                cur.execute("SELECT %s::flock.model IS NOT NULL", (psycopg2.Binary(fresh[2 * k]),))
                cur.fetchone()
                checked.append(time.perf_counter() - t0)
                cpu_checked += backend_cpu(writer_pid) - c0

                t0 = time.perf_counter()
                cur.execute("SELECT flock.register_model(%s, %s)", (f"bench_{len(model)}", psycopg2.Binary(fresh[2 * k + 1])))
                cur.fetchone()
                register.append(time.perf_counter() - t0)

                header = (f"flock-model-check/1 format=auto max_tensor_elements={1 << 28} cpu_seconds=60 "
                          f"memory_mb=4096 features=-1 bytes={len(stored[k])}\n").encode()
                t0 = time.perf_counter()
                r = subprocess.run([checker], input=header + stored[k], stdout=subprocess.PIPE, check=True)
                alone.append(time.perf_counter() - t0)
                assert r.stdout == b"ok 0\n", r.stdout[:200]
            reader.close()
            ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
            print(f"{name:26} {len(model):>10} {ms(inproc):>9.2f}ms {ms(transfer):>7.2f}ms {ms(checked):>7.2f}ms "
                  f"{ms(register):>7.2f}ms {ms(alone):>7.2f}ms {ms(checked) - ms(transfer) - ms(inproc):>7.2f}ms")
            cpu_lines.append(f"{name:26} {1000 * cpu_inproc / rounds:>9.1f}ms {1000 * cpu_checked / rounds:>7.1f}ms "
                             f"{(cpu_checked / cpu_inproc if cpu_inproc else float('nan')):>6.2f}")
        print("backend CPU incl. the checker, mean per statement:")
        print(f"{'model':26} {'in-process':>11} {'checked':>9} {'ratio':>6}")
        for line in cpu_lines:
            print(line)
        print(f"(medians; rounds: {args.rounds}, 10 MB model: {max(3, args.rounds // 4)}; "
              "overhead = checked - transfer - in-process)")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
