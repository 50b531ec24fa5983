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

Bytes are what the shards send the coordinator on the wire (protocol framing included), counted by
a TCP relay in front of each shard in a separate pass; divided by the rows scored.

The machine may have fewer cores than nodes: then shards compete for them and "scaling" measures
the scheduler. The script prints the core count and fits a paper model (below) to say what the
points imply for 10-100 shards, each on its own machine.

  /usr/bin/python3 bench/distributed/run.py --rows 60000 --repeat 3
Needs FLOCK_PG_BIN (a PostgreSQL with flock, postgres_fdw, dblink) and build/models.
"""
import argparse
import os
import socket
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


def measure(cur, sql, repeat):
    cur.execute(sql)  # warm: connections, compiled models
    best = None
    for _ in range(repeat):
        t = time.perf_counter()
        cur.execute(sql)
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
            cur.execute(sql)
            cur.fetchall()
            before = sum(p.received for p in proxies)
            cur.execute(sql)
            cur.fetchall()
            after = sum(p.received for p in proxies)
            for s in mn.shards:
                cur.execute(f"ALTER SERVER {s.settings['cluster_name']} OPTIONS (SET host '{s.sockdir}', SET port '{s.port}')")
        return after - before
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=60000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--models", default=os.path.join(REPO, "build", "models"))
    args = ap.parse_args()
    # Shards also listen on TCP (loopback) for the counting relays.
    mn = MultiNode(3, settings={"listen_addresses": "127.0.0.1"}).start()
    try:
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
        for k in (1, 2, 3):
            cur.execute("SELECT flock.create_distributed_table(%s, %s, 'id', %s::name[])",
                        (f"d{k}", COLUMNS, [s.settings["cluster_name"] for s in mn.shards[:k]]))
            cur.execute(f"INSERT INTO d{k} SELECT * FROM d_local")
        for s in mn.shards:
            s.psql("VACUUM ANALYZE", dbname=DB)
        proxies = [CountingProxy(s.port) for s in mn.shards]
        print(f"cores: {os.cpu_count()}  rows: {args.rows}  model: diabetes_gb  best of {args.repeat}")
        t_local = measure(cur, "SELECT sum(flock.predict('gb', d)) FROM d_local d", args.repeat)
        print(f"local (one node): {args.rows / t_local:12.0f} rows/s")
        print(f"{'shards':>6} {'method':>7} {'rows/s':>12} {'vs local':>9} {'bytes/row':>10}")
        results = {}
        N = args.rows
        for k in (1, 2, 3):
            off = "SET flock.distribute_aggregates = off; "
            queries = {
                "pull": off + f"SELECT sum(flock.predict('gb', d)) FROM d{k} d",
                "pinned": off + f"SELECT sum(flock.predict_pinned({pin}, d)) FROM d{k} d",
                "auto": f"RESET flock.distribute_aggregates; SELECT sum(flock.predict('gb', d)) FROM d{k} d",
                "filter": f"SELECT count(*) FROM d{k} d WHERE flock.predict_pinned({pin}, {ARRAY}) > 150",
                "shards": f"SELECT sum(s) FROM flock.on_shards('d{k}', 'SELECT sum(flock.predict(%1$s, d)) s "
                          f"FROM d{k} d', 'gb') AS r(s float8)",
                "empty": f"SELECT sum(s) FROM flock.on_shards('d{k}', 'SELECT sum(flock.predict(%1$s, d)) s "
                         f"FROM d{k} d WHERE id < 0', 'gb') AS r(s float8)",
            }
            for name, sql in queries.items():
                t = measure(cur, sql, args.repeat)
                sent = bytes_received(mn, proxies, sql) if name != "empty" else 0
                results[(k, name)] = (t, sent)
                if name != "empty":
                    print(f"{k:>6} {name:>7} {N / t:12.0f} {t_local / t:9.2f} {sent / N:10.3f}")
                else:
                    print(f"{k:>6} {'(0 rows)':>7} {t * 1000:10.1f} ms: on_shards' fixed cost")
        # Paper model for on_shards: t(S) = f(S) + N / (r * min(S, P)) + b * N / B
        #   f(S) = a + o * S: fixed cost (plan, pins, one round trip per shard), from the 0-row runs;
        #   r: one shard's scoring rate, from the 1-shard run; P: cores the shards can use at once;
        #   b: bytes per row shipped; B: network bandwidth into the coordinator.
        P = min(os.cpu_count() or 1, 3)
        f = {k: results[(k, "empty")][0] for k in (1, 2, 3)}
        # Least squares over the three 0-row points; a negative slope (noise) counts as none.
        mean_s, mean_f = 2.0, (f[1] + f[2] + f[3]) / 3
        o = max(sum((k - mean_s) * (f[k] - mean_f) for k in (1, 2, 3)) / 2.0, 0.0)
        a = mean_f - o * mean_s
        r = N / max(results[(1, "shards")][0] - (a + o), 1e-9)
        print(f"\npaper model (on_shards): t(S) = a + o*S + N/(r*min(S,P))   a = {a * 1000:.2f} ms, "
              f"o = {o * 1000:.2f} ms/shard, r = {r:.0f} rows/s per shard, P = {P} cores")
        for S in (1, 2, 3):
            model = a + o * S + N / (r * min(S, P))
            t = results[(S, "shards")][0]
            print(f"  S={S}: measured {t * 1000:8.1f} ms, model {model * 1000:8.1f} ms ({(t / model - 1) * 100:+.0f}%)")
        b_shards = results[(3, "shards")][1] / N
        b_pull = results[(3, "pull")][1] / N
        print(f"  bytes per scored row, 3 shards: on_shards {b_shards:.4f}, pull {b_pull:.1f} "
              f"(ratio {b_shards / b_pull:.5f})")
        total = 1e9
        bw = 125e6  # 1 Gbit/s
        print(f"  10-100 shards, each on its own machine (P = S), {total:.0e} rows, 1 Gbit/s into the coordinator:")
        for S in (10, 30, 100):
            t_shards = a + o * S + total / (r * S) + (results[(3, "shards")][1] / 3) * S / bw
            t_pull = b_pull * total / bw
            print(f"    S={S:3d}: on_shards {t_shards:8.2f} s = {total / t_shards:12.0f} rows/s; "
                  f"pull needs {t_pull:8.1f} s on the network alone")
    finally:
        mn.stop()


if __name__ == "__main__":
    main()
