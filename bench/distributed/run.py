"""Scoring on shards (issue 18): rows scored per second with 1, 2 and 3 shards, and the bytes the
shards send per scored row, for the ways a query can score a distributed table, all measured in
the same run on the same rows and model:

  local    one node: the same rows in a local table of the coordinator (the peer of the ratios)
  pull     sum(flock.predict('m', d)) over the foreign partitions with flock.distribute_aggregates
           off: rows shipped, scored here
  pinned   sum(flock.predict_pinned(pin, d)): the same, the prediction not shippable in a select list
  auto     sum(flock.predict('m', d)) as written, planned by Flock as partial aggregates on the shards
  filter   count(*) WHERE flock.predict_pinned(pin, ARRAY[...]) > c: shipped to the shards (async)
  shards   flock.on_shards(sum of predictions): partial aggregates on the shards, final here
  scan     SELECT id, flock.predict('m', d) FROM d, every row fetched by the client: planned by
           Flock as a flock.on_shards query (flock.distribute_predictions), scored on the shards
  scanpull the same query with flock.distribute_predictions off: rows shipped, scored here
  insert   INSERT INTO a temporary table SELECT id, flock.predict('m', d) FROM d: scored on the
           shards, no client in the way (insertpull: with flock.distribute_predictions off)

Bytes are what the shards send the coordinator on the wire (protocol framing included), counted by
a TCP relay in front of each shard in a separate pass; divided by the rows scored.

The machine may have fewer cores than nodes: then shards compete for them and "scaling" measures
the scheduler. The script prints the core count and fits a paper model (below) to say what the
points imply for 10-100 shards, each on its own machine.

  /usr/bin/python3 bench/distributed/run.py --rows 60000 --repeat 3
  --pin-cores pins shard i's postmaster (and so every backend it forks) to core i mod the core
  count with taskset, so that with 2 cores the 1- and 2-shard runs give each shard a core of its
  own (the coordinator is not pinned). --methods picks a subset for short runs.
Needs FLOCK_PG_BIN (a PostgreSQL with flock, postgres_fdw, dblink) and build/models.
"""
import argparse
import os
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "tests", "pg"))

import psycopg2  # noqa: E402

from multinode import MultiNode, conninfo  # noqa: E402

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
COLUMNS = "id int, " + ", ".join(f"{f} real" for f in FEATURES)
ARRAY = "ARRAY[" + ", ".join(FEATURES) + "]::float4[]"
DB = "flock_bench"


class CountingProxy:
    """A TCP relay in front of a shard that counts the bytes the shard sends back. Used only for
    the byte counts (a pass of its own): relaying through Python would slow the timed runs."""

    def __init__(self, port):
        self.target = ("127.0.0.1", port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.received = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src, dst, count):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count:
                    with self.lock:
                        self.received += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def split_settings(sql):
    """(the SET / RESET statements, the query): run apart, since a string of several statements
    is one transaction block, where Flock leaves queries over shards alone."""
    parts = [p.strip() for p in sql.split(";") if p.strip()]
    return [p for p in parts[:-1]], parts[-1]


def measure(cur, sql, repeat):
    settings, sql = split_settings(sql)
    for s in settings:
        cur.execute(s)
    cur.execute(sql)  # warm: connections, compiled models
    best = None
    for _ in range(repeat):
        t = time.perf_counter()
        cur.execute(sql)
        if cur.description:
            cur.fetchall()
        elapsed = time.perf_counter() - t
        best = elapsed if best is None else min(best, elapsed)
    return best


def bytes_received(mn, proxies, sql):
    """Bytes the shards send the coordinator for one run of sql (after a warm-up run), through
    the counting relays, in a session of its own."""
    c = psycopg2.connect(conninfo(mn.coordinator, DB))
    c.autocommit = True
    try:
        with c.cursor() as cur:
            for s, p in zip(mn.shards, proxies):
                cur.execute(f"ALTER SERVER {s.settings['cluster_name']} OPTIONS (SET host '127.0.0.1', SET port '{p.port}')")
            settings, sql = split_settings(sql)
            for s in settings:
                cur.execute(s)
            cur.execute(sql)
            if cur.description:
                cur.fetchall()
            before = sum(p.received for p in proxies)
            cur.execute(sql)
            if cur.description:
                cur.fetchall()
            after = sum(p.received for p in proxies)
            for s in mn.shards:
                cur.execute(f"ALTER SERVER {s.settings['cluster_name']} OPTIONS (SET host '{s.sockdir}', SET port '{s.port}')")
        return after - before
    finally:
        c.close()


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def pin_to_core(node, core):
    """Pins the node's postmaster, and so the backends it forks from now on, to one core."""
    with open(os.path.join(node.datadir, "postmaster.pid")) as f:
        pid = f.readline().strip()
    subprocess.run(["taskset", "-a", "-p", "-c", str(core), pid], check=True, capture_output=True)


ALL_METHODS = ("pull", "pinned", "auto", "filter", "shards", "scan", "scanpull", "insert", "insertpull")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=60000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--models", default=os.path.join(REPO, "build", "models"))
    ap.add_argument("--pin-cores", action="store_true", help="pin shard i to core i mod cores (taskset)")
    ap.add_argument("--shards", type=int, default=3, help="measure 1..this many shards (at least 1)")
    ap.add_argument("--methods", default=",".join(ALL_METHODS), help="comma-separated subset of " + ",".join(ALL_METHODS))
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(ALL_METHODS)
    if unknown:
        ap.error(f"unknown methods: {', '.join(sorted(unknown))}")
    max_shards = max(1, args.shards)
    # Shards also listen on TCP (loopback) for the counting relays.
    mn = MultiNode(max_shards, settings={"listen_addresses": "127.0.0.1"}).start()
    try:
        cores = os.cpu_count() or 1
        if args.pin_cores:
            for i, s in enumerate(mn.shards):
                pin_to_core(s, i % cores)
        for n in mn.nodes:
            n.psql(f"CREATE DATABASE {DB}")
        c = psycopg2.connect(conninfo(mn.coordinator, DB))
        c.autocommit = True
        cur = c.cursor()
        cur.execute("CREATE EXTENSION flock; CREATE EXTENSION postgres_fdw; CREATE EXTENSION dblink")
        for s in mn.shards:
            cur.execute("CALL flock.add_shard(%s, %s, %s, %s, %s)",
                        (s.settings["cluster_name"], s.sockdir, s.port, DB, conninfo(mn.coordinator, DB)))
        with open(os.path.join(args.models, "diabetes_gb.onnx"), "rb") as f:
            cur.execute("SELECT flock.register_model('gb', %s)", (f.read(),))
        cur.execute("SELECT flock.wait_for_shards('gb')")
        cur.execute("SELECT quote_literal(flock.pin('gb'))")
        pin = cur.fetchone()[0]
        cur.execute(f"CREATE TABLE d_local ({COLUMNS})")
        values = ", ".join(f"(((g * {7 + i}) % 1000) / 5000.0 - 0.1)::real" for i in range(len(FEATURES)))
        cur.execute(f"INSERT INTO d_local SELECT g, {values} FROM generate_series(1, {args.rows}) g")
        cur.execute("VACUUM ANALYZE d_local")
        sizes = list(range(1, max_shards + 1))
        for k in sizes:
            cur.execute("SELECT flock.create_distributed_table(%s, %s, 'id', %s::name[])",
                        (f"d{k}", COLUMNS, [s.settings["cluster_name"] for s in mn.shards[:k]]))
            cur.execute(f"INSERT INTO d{k} SELECT * FROM d_local")
        for s in mn.shards:
            s.psql("VACUUM ANALYZE", dbname=DB)
        proxies = [CountingProxy(s.port) for s in mn.shards]
        print(f"cores: {cores}  rows: {args.rows}  model: diabetes_gb  best of {args.repeat}  "
              f"shards pinned to cores: {'yes (shard i on core i mod ' + str(cores) + ')' if args.pin_cores else 'no'}")
        print(f"load average before: {load()}")
        t_local = measure(cur, "SELECT sum(flock.predict('gb', d)) FROM d_local d", args.repeat)
        print(f"local (one node): {args.rows / t_local:12.0f} rows/s")
        print(f"{'shards':>6} {'method':>10} {'rows/s':>12} {'vs local':>9} {'bytes/row':>10}")
        results = {}
        N = args.rows
        for k in sizes:
            off = "SET flock.distribute_aggregates = off; SET flock.distribute_predictions = off; "
            on = "RESET flock.distribute_aggregates; RESET flock.distribute_predictions; "
            queries = {
                "pull": off + f"SELECT sum(flock.predict('gb', d)) FROM d{k} d",
                "pinned": off + f"SELECT sum(flock.predict_pinned({pin}, d)) FROM d{k} d",
                "auto": on + f"SELECT sum(flock.predict('gb', d)) FROM d{k} d",
                "filter": f"SELECT count(*) FROM d{k} d WHERE flock.predict_pinned({pin}, {ARRAY}) > 150",
                "shards": f"SELECT sum(s) FROM flock.on_shards('d{k}', 'SELECT sum(flock.predict(%1$s, d)) s "
                          f"FROM d{k} d', 'gb') AS r(s float8)",
                "empty": f"SELECT sum(s) FROM flock.on_shards('d{k}', 'SELECT sum(flock.predict(%1$s, d)) s "
                         f"FROM d{k} d WHERE id < 0', 'gb') AS r(s float8)",
                "scan": on + f"SELECT id, flock.predict('gb', d) FROM d{k} d",
                "scanpull": off + f"SELECT id, flock.predict('gb', d) FROM d{k} d",
                "insert": on + "CREATE TEMP TABLE IF NOT EXISTS scored (id int, p float8); "
                          f"INSERT INTO scored SELECT id, flock.predict('gb', d) FROM d{k} d",
                "insertpull": off + "CREATE TEMP TABLE IF NOT EXISTS scored (id int, p float8); "
                              f"INSERT INTO scored SELECT id, flock.predict('gb', d) FROM d{k} d",
            }
            # Aggregates are planned on the shards unless a method turns it off; the 0-row run
            # is what the paper model needs, with "shards".
            wanted = set(methods) | ({"empty"} if "shards" in methods else set())
            queries = {name: sql for name, sql in queries.items() if name in wanted}
            for name, sql in queries.items():
                t = measure(cur, sql, args.repeat)
                sent = bytes_received(mn, proxies, sql) if name != "empty" else 0
                results[(k, name)] = (t, sent)
                if name != "empty":
                    print(f"{k:>6} {name:>10} {N / t:12.0f} {t_local / t:9.2f} {sent / N:10.3f}")
                else:
                    print(f"{k:>6} {'(0 rows)':>10} {t * 1000:10.1f} ms: on_shards' fixed cost")
        print(f"load average after: {load()}")
        scaling = [f"{m} {results[(1, m)][0] / results[(2, m)][0]:.2f}x"
                   for m in methods if (1, m) in results and (2, m) in results]
        if scaling:
            print("1 -> 2 shards: " + ", ".join(scaling))
        if "shards" in methods:
            paper_model(results, sizes, N, cores)
        if "scan" in methods and "shards" in methods:
            scan_model(results, sizes, N, cores)
    finally:
        mn.stop()


def fixed_cost(results, sizes):
    """a + o*S from the 0-row runs (least squares; a negative slope, noise, counts as none)."""
    f = {k: results[(k, "empty")][0] for k in sizes}
    if len(sizes) == 1:
        return f[1], 0.0
    mean_s = sum(sizes) / len(sizes)
    mean_f = sum(f.values()) / len(sizes)
    o = max(sum((k - mean_s) * (f[k] - mean_f) for k in sizes) / sum((k - mean_s) ** 2 for k in sizes), 0.0)
    return mean_f - o * mean_s, o


def paper_model(results, sizes, N, cores):
    """on_shards: t(S) = a + o*S + N/(r*min(S, P)) + b*N/B
      a + o*S: fixed cost (plan, pins, one round trip per shard), from the 0-row runs;
      r: one shard's scoring rate, from the 1-shard run; P: cores the shards can use at once;
      b: bytes per row shipped; B: network bandwidth into the coordinator."""
    P = min(cores, max(sizes))
    a, o = fixed_cost(results, sizes)
    r = N / max(results[(1, "shards")][0] - (a + o), 1e-9)
    print(f"\npaper model (on_shards): t(S) = a + o*S + N/(r*min(S,P))   a = {a * 1000:.2f} ms, "
          f"o = {o * 1000:.2f} ms/shard, r = {r:.0f} rows/s per shard, P = {P} cores")
    for S in sizes:
        model = a + o * S + N / (r * min(S, P))
        t = results[(S, "shards")][0]
        print(f"  S={S}: measured {t * 1000:8.1f} ms, model {model * 1000:8.1f} ms ({(t / model - 1) * 100:+.0f}%)")
    top = max(sizes)
    b_shards = results[(top, "shards")][1] / N
    total = 1e9
    bw = 125e6  # 1 Gbit/s
    if (top, "pull") in results:
        b_pull = results[(top, "pull")][1] / N
        print(f"  bytes per scored row, {top} shard(s): on_shards {b_shards:.4f}, pull {b_pull:.1f} "
              f"(ratio {b_shards / b_pull:.5f})")
    print(f"  10-100 shards, each on its own machine (P = S), {total:.0e} rows, 1 Gbit/s into the coordinator:")
    for S in (10, 30, 100):
        t_shards = a + o * S + total / (r * S) + (results[(top, "shards")][1] / top) * S / bw
        line = f"    S={S:3d}: on_shards {t_shards:8.2f} s = {total / t_shards:12.0f} rows/s"
        if (top, "pull") in results:
            line += f"; pull needs {results[(top, 'pull')][1] / N * total / bw:8.1f} s on the network alone"
        print(line)


def scan_model(results, sizes, N, cores):
    """A plain select list planned on the shards returns every row: the coordinator receives,
    stores and sends each one. t(S) = a + o*S + N/(r*min(S, P)) + N*c, with a, o and r from
    paper_model's fit and c, the coordinator's cost per row, from the 1-shard scan run. Past a
    few shards N*c dominates: the ceiling is 1/c rows/s, or B/b on the network."""
    P = min(cores, max(sizes))
    a, o = fixed_cost(results, sizes)
    r = N / max(results[(1, "shards")][0] - (a + o), 1e-9)
    c = max(results[(1, "scan")][0] - (a + o) - N / r, 1e-12) / N
    top = max(sizes)
    b = results[(top, "scan")][1] / N
    print(f"\npaper model (plain select list on the shards): t(S) = a + o*S + N/(r*min(S,P)) + N*c   "
          f"c = {c * 1e6:.3f} us/row here ({1 / c:.0f} rows/s ceiling), {b:.1f} bytes/row shipped")
    for S in sizes:
        model = a + o * S + N / (r * min(S, P)) + N * c
        t = results[(S, "scan")][0]
        print(f"  S={S}: measured {t * 1000:8.1f} ms, model {model * 1000:8.1f} ms ({(t / model - 1) * 100:+.0f}%)")
    total, bw = 1e9, 125e6
    for S in (10, 30, 100):
        t_scan = a + o * S + total / (r * S) + total * max(c, b / bw)
        print(f"    S={S:3d}: {t_scan:8.1f} s = {total / t_scan:12.0f} rows/s (bound by the coordinator's "
              f"{'per-row cost' if c > b / bw else 'network'})")


if __name__ == "__main__":
    main()
