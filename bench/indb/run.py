#!/usr/bin/python3
"""In-database scoring benchmark: flock in PostgreSQL against the ways people score without it.

    /usr/bin/python3 bench/indb/run.py [--rows 1000000] [--reps 3] [--plpy-rows 20000] [--work-dir DIR]

Starts a private PostgreSQL 15 cluster (tests/pgcluster.py; flock preloaded), loads N Higgs-like
rows (28 real features, fixed seed) into a table, trains and registers the models (XGBoost 500
trees depth 8 and 100 trees depth 6, a logistic regression exported by tools/models/sk2onnx.py, a
torch MLP exported to ONNX), and measures, interleaved within each repetition:

  flock in-DB        SELECT sum(flock.predict('m', t)) FROM higgs t          (flock.batching on)
  flock per row      the same query with SET flock.batching = off
  libxgboost         XGBoosterPredictFromDense on the same features already in memory
                     (bench/indb/xgb_runner.cpp; for the ONNX models: sklearn / torch in memory)
  export-to-Python   COPY (SELECT ...) TO STDOUT (binary) -> numpy, predict in Python,
                     COPY the predictions back into a table
  PL/Python per row  a plpython3u function scoring one row per call (model loaded once per session
                     via GD), over the first --plpy-rows rows, extrapolated to rows/s

all single threaded (max_parallel_workers_per_gather = 0, xgboost nthread = 1), then a second run
with two cores: PostgreSQL parallel query with 2 workers (leader not participating) against
xgboost nthread = 2. Each measurement records wall time and the CPU time of every process that
worked for it (backend, parallel workers, this client, the C runner). Prints the machine, a table
of rows/s and the goals as ratios with PASS/FAIL.

Exit status 0 once the tables are printed (a FAIL is a measurement, not an error); 1 when a
contender that should run could not (the MLP may be skipped: its ONNX operators are still being
added to flock); 2 on bad arguments.
"""

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

# Single-threaded BLAS for numpy / sklearn / torch in this process; xgboost and torch threads are
# set per call.
for _v in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
import psycopg2  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

import data  # noqa: E402
import models as bench_models  # noqa: E402
from pgcluster import PG_BIN, Cluster  # noqa: E402

TABLE = "higgs"
SUBSET = "higgs_sub"
PREDS = "higgs_predictions"
COLS = ", ".join(data.FEATURES)
SWEEP = "higgs_sweep"
RUNS = ("1 core", "2 cores")
SWEEP_SIZES = (64, 256, 1024, 4096, 16384)
DEFAULT_BATCH_SIZE = 256  # flock.batch_size's compiled-in default (kDefaultBatchSize, pg/src/batch_scan.hpp)

GOALS = {  # peer contender -> (required ratio flock/peer, label)
    "native": (1.0, "flock in-DB >= 1.0x libxgboost predict"),
    "export": (10.0, "flock in-DB >= 10x export-to-Python"),
    "plpy": (50.0, "flock in-DB >= 50x PL/Python per row"),
    "flock_off": (10.0, "batching on >= 10x batching off"),
    "ort": (1.0, "flock in-DB >= 1.0x ONNX Runtime (memory)"),
}
ORT_RUNNER = os.path.join(REPO, "bench", "ort", "ort_runner.js")
ORT_CHUNK = 16384  # rows per ONNX Runtime call, as torch's


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Machine and environment


def machine_info():
    cpu = "?"
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu == "?":
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    import xgboost
    info = {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "simd": [x for x in ("sse4_2", "avx", "avx2", "fma", "avx512f") if x in flags],
        "loadavg": os.getloadavg(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "xgboost": xgboost.__version__,
    }
    try:
        info["mem_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        pkglib = subprocess.run([f"{PG_BIN}/pg_config", "--pkglibdir"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pkglib = "/usr/lib/postgresql/15/lib"
    so = os.path.join(pkglib, "flock.so")
    if os.path.exists(so):
        info["flock_so"] = f"{so} (installed {time.strftime('%Y-%m-%d %H:%M', time.localtime(os.path.getmtime(so)))})"
        info["flock_flags"] = compile_flags(so)
    return info


def compile_flags(so):
    """The compiler flags flock.so was built with, from its DWARF producer string (RelWithDebInfo
    keeps it; a Release build has no debug info)."""
    try:
        out = subprocess.run(["readelf", "--debug-dump=info", "--dwarf-depth=1", so], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown flags"
    for line in out.splitlines():
        if "DW_AT_producer" in line and "C++" in line:
            flags = [w for w in line.split() if w.startswith(("-O", "-march", "-g"))]
            return " ".join(flags) or "unknown flags"
    return "no debug info (a Release build: -O3)"


def build_runner(work_dir):
    src = os.path.join(HERE, "xgb_runner.cpp")
    exe = os.path.join(work_dir, "flock_bench_xgb")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        cmd = ["g++", "-O2", "-std=c++17", "-Wall", "-Wextra", "-o", exe, src, "-lxgboost"]
        log("   " + " ".join(cmd))
        subprocess.run(cmd, check=True)
    return exe


# ------------------------------------------------------------------------------------------------
# CPU accounting. On a shared machine wall time measures the scheduler as much as the code; the CPU
# time of the processes that did the work does not (much).


def thread_cpu(pid):
    """CPU seconds of a single-threaded process (a backend), from /proc/PID/schedstat (ns)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) * 1e-9


_TICK = os.sysconf("SC_CLK_TCK")


def reaped_children_cpu(pid):
    """CPU seconds of PID's exited and reaped children (cutime + cstime): the postmaster's
    parallel workers."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / _TICK


class Session:
    """A psycopg2 connection (autocommit) and its backend's pid."""

    def __init__(self, cluster):
        self.conn = psycopg2.connect(cluster.dsn())
        self.conn.autocommit = True
        self.pid = self.one("SELECT pg_backend_pid()")

    def one(self, sql, args=None):
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchone()[0] if cur.description else None

    def rows(self, sql):
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()

    def cpu(self):
        return thread_cpu(self.pid)

    def faults(self):
        """Minor page faults of the backend so far (/proc/PID/stat minflt)."""
        with open(f"/proc/{self.pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[7])

    def timed(self, sql, postmaster_pid=None):
        """(wall, CPU of the backend [+ its parallel workers], first column of the one row).
        Leaves the backend's minor page faults during the query in self.last_faults."""
        w0 = reaped_children_cpu(postmaster_pid) if postmaster_pid else 0.0
        f0 = self.faults()
        c0 = self.cpu()
        t0 = time.perf_counter()
        with self.conn.cursor() as cur:
            cur.execute(sql)
            v = cur.fetchone()[0]
        wall = time.perf_counter() - t0
        cpu = self.cpu() - c0
        self.last_faults = self.faults() - f0
        if postmaster_pid:
            time.sleep(0.05)  # let the postmaster reap the workers
            cpu += reaped_children_cpu(postmaster_pid) - w0
        return wall, cpu, v

    def close(self):
        self.conn.close()


class Clock:
    """Wall and CPU time of this process plus a set of backends over a block."""

    def __init__(self, *sessions):
        self.sessions = sessions

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.c0 = time.process_time() + sum(s.cpu() for s in self.sessions)
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() + sum(s.cpu() for s in self.sessions) - self.c0
        return False


# ------------------------------------------------------------------------------------------------
# Cluster


def start_cluster(shared_buffers):
    c = Cluster("flock-bench")
    c.start()
    # Settings that need a restart (shared_buffers) or should hold in every session.
    for sql in (f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'",
                "ALTER SYSTEM SET jit = off",
                "ALTER SYSTEM SET max_parallel_workers_per_gather = 0",
                "ALTER SYSTEM SET max_parallel_workers = 8"):
        c.psql(sql)
    c._run([f"{PG_BIN}/pg_ctl", "-D", c.datadir, "-l", c.logfile, "-m", "fast", "-w", "-t", "60", "restart"])
    with open(os.path.join(c.datadir, "postmaster.pid")) as f:
        c.postmaster_pid = int(f.readline())
    return c


def load_table(s, X, subset_rows, sweep_rows):
    cols_ddl = ", ".join(f"{c} real" for c in data.FEATURES)
    with s.conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {TABLE} (id bigint, {cols_ddl}) WITH (autovacuum_enabled = off)")
        t0 = time.perf_counter()
        cur.copy_expert(f"COPY {TABLE} FROM STDIN (FORMAT binary)", data.table_copy_stream(X))
        log(f"   COPY {len(X)} rows into {TABLE}: {time.perf_counter() - t0:.1f} s")
        cur.execute(f"VACUUM (FREEZE, ANALYZE) {TABLE}")
        cur.execute(f"CREATE TABLE {SUBSET} WITH (autovacuum_enabled = off) AS "
                    f"SELECT * FROM {TABLE} WHERE id <= %s ORDER BY id", (subset_rows,))
        cur.execute(f"VACUUM (FREEZE, ANALYZE) {SUBSET}")
        cur.execute(f"CREATE TABLE {SWEEP} WITH (autovacuum_enabled = off) AS "
                    f"SELECT * FROM {TABLE} WHERE id <= %s ORDER BY id", (sweep_rows,))
        cur.execute(f"VACUUM (FREEZE, ANALYZE) {SWEEP}")
        cur.execute(f"CREATE TABLE {PREDS} (id bigint, prediction double precision) WITH (autovacuum_enabled = off)")
        cur.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        cur.execute(f"SELECT pg_prewarm('{TABLE}'), pg_prewarm('{SUBSET}'), pg_prewarm('{SWEEP}')")
        cur.execute(f"SELECT pg_size_pretty(pg_total_relation_size('{TABLE}'))")
        return cur.fetchone()[0]


# ------------------------------------------------------------------------------------------------
# Contenders. Each returns (wall seconds, CPU seconds, check value).


def flock_query(table, name):
    return f"SELECT sum(flock.predict('{name}', t)) FROM {table} t"


def run_flock(s, name, batching, table=TABLE, postmaster_pid=None):
    s.one(f"SET flock.batching = {'on' if batching else 'off'}")
    return s.timed(flock_query(table, name), postmaster_pid)


NATIVE_PROBA_SUMS = {}  # model -> [sum of libxgboost's probabilities over the table, per run]


def run_native(m, runner, feature_file, n, nthread, X):
    if m.is_xgboost:
        env = dict(os.environ, OMP_NUM_THREADS=str(nthread))
        out = subprocess.run([runner, m.py_file, feature_file, "--rows", str(n), "--cols", str(X.shape[1]),
                              "--nthread", str(nthread)], check=True, stdout=subprocess.PIPE, text=True, env=env)
        r = json.loads(out.stdout)
        NATIVE_PROBA_SUMS.setdefault(m.name, []).append(r["sum"])
        return r["seconds"][0], r["cpu_seconds"][0], float(r["positives"])
    with Clock() as c:
        labels = m.predict_labels(X, nthread)
    return c.wall, c.cpu, float(labels.sum())


def ort_modules(args):
    return os.path.abspath(args.ort_modules or os.path.join(REPO, "build", "bench-ort"))


def ort_available(args):
    return shutil.which("node") is not None and os.path.isfile(
        os.path.join(ort_modules(args), "node_modules", "onnxruntime-node", "package.json"))


def run_ort(m, args, feature_file, ncols):
    """ONNX Runtime (onnxruntime-node, CPU EP, 1 thread) over the whole feature file, in memory."""
    out = subprocess.run(["node", ORT_RUNNER, m.flock_file, "--score-file", feature_file, "--cols", str(ncols),
                          "--chunk", str(ORT_CHUNK), "--modules", ort_modules(args)],
                         check=True, stdout=subprocess.PIPE, text=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["seconds"], r["cpu_seconds"], float(r["positives"])


def export_fetch(s):
    """COPY out in binary, parsed with numpy: (wall, cpu, ids, X)."""
    buf = io.BytesIO()
    with Clock(s) as c:
        with s.conn.cursor() as cur:
            cur.copy_expert(f"COPY (SELECT id, {COLS} FROM {TABLE}) TO STDOUT (FORMAT binary)", buf)
        ids, X = data.parse_table_copy(buf.getbuffer(), len(data.FEATURES))
    return c.wall, c.cpu, ids, X


def export_fetch_cursor(s):
    """The textbook way: a server-side cursor, fetchmany, numpy.array (informational)."""
    s.conn.autocommit = False
    try:
        with Clock(s) as c:
            with s.conn.cursor(name="bench_export") as cur:
                cur.itersize = 10000
                cur.execute(f"SELECT id, {COLS} FROM {TABLE}")
                rows = []
                while True:
                    chunk = cur.fetchmany(10000)
                    if not chunk:
                        break
                    rows.extend(chunk)
            arr = np.array(rows, dtype=np.float64)
            X = np.ascontiguousarray(arr[:, 1:], dtype=np.float32)
            ids = arr[:, 0].astype(np.int64)
        s.conn.commit()
    finally:
        s.conn.autocommit = True
    return c.wall, c.cpu, ids, X


def export_score_and_store(s, m, ids, X, nthread):
    """((wall, cpu) of predict, (wall, cpu) of the write-back, sum of labels)."""
    with Clock() as p:
        labels = m.predict_labels(X, nthread)
    s.one(f"TRUNCATE {PREDS}")
    with Clock(s) as w:
        with s.conn.cursor() as cur:
            cur.copy_expert(f"COPY {PREDS} FROM STDIN (FORMAT binary)", data.predictions_copy_stream(ids, labels))
    return (p.wall, p.cpu), (w.wall, w.cpu), float(labels.sum())


def check_fidelity(fls, models, X, plpy_rows, n, errors):
    """Flock's probabilities against the source library's: per row on the first plpy_rows rows (max
    abs difference <= 1e-5), and for XGBoost over the whole table the sum against libxgboost's sum
    from the C API runner (mean difference per row <= 1e-6). Returns report lines; failures go to
    errors."""
    lines = []
    for m in models.values():
        sess = fls.get(m.name)
        if sess is None:
            continue
        sess.one("SET flock.batching = on")
        rows = sess.rows(f"SELECT id, (flock.predict_proba('{m.name}', t))[2] FROM {SUBSET} t ORDER BY id")
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        got = np.array([r[1] for r in rows], dtype=np.float64)
        want = m.predict_scores(X[ids - 1])
        diff = float(np.max(np.abs(got - want))) if len(rows) else float("nan")
        ok = len(rows) == plpy_rows and diff <= 1e-5
        line = (f"{m.name:<9} per row, first {plpy_rows} rows: max |flock - {m.py_name}| = {diff:.2e} "
                f"(tolerance 1e-5) {'ok' if ok else 'MISMATCH'}")
        lines.append(line)
        if not ok:
            errors.append("fidelity: " + line)
        if m.is_xgboost and NATIVE_PROBA_SUMS.get(m.name):
            t0 = time.perf_counter()
            fsum = sess.one(f"SELECT sum((flock.predict_proba('{m.name}', t))[2]) FROM {TABLE} t")
            xsum = NATIVE_PROBA_SUMS[m.name][0]
            ok = abs(fsum - xsum) <= 1e-6 * n
            line = (f"{m.name:<9} whole table: sum of flock's probabilities {fsum:.4f}, libxgboost's {xsum:.4f}, "
                    f"difference {fsum - xsum:+.2e} (tolerance {1e-6 * n:.2g}) {'ok' if ok else 'MISMATCH'}")
            log(f"   {line} ({time.perf_counter() - t0:.0f} s)")
            lines.append(line)
            if not ok:
                errors.append("fidelity: " + line)
    return lines


def check_agreement(res, models, sub_checks, plpy_rows, n, errors):
    """Every contender's check (rows predicted positive) against the reference library's, within
    max(1, 1e-5 * rows) rows (a probability within float rounding of 0.5 may fall either way)."""
    for m in models.values():
        for run in RUNS:
            ref = res.checks.get((run, m.name, "native"))
            if ref is None:
                continue
            tol = max(1.0, 1e-5 * n)
            for c in ("flock_on", "flock_off", "export", "ort"):
                v = res.checks.get((run, m.name, c))
                if v is not None and abs(v - ref) > tol:
                    errors.append(f"fidelity: {run} {m.name} {LABELS[c]}: {v:.0f} rows predicted positive, "
                                  f"{ref:.0f} by the reference (tolerance {tol:.0f})")
        v, ref = res.checks.get(("1 core", m.name, "plpy")), sub_checks.get((m.name, True))
        if v is not None and ref is not None and abs(v - ref) > max(1.0, 1e-5 * plpy_rows):
            errors.append(f"fidelity: {m.name} PL/Python: {v:.0f} rows predicted positive of the first "
                          f"{plpy_rows}, flock {ref:.0f}")


def plpy_query(m, path):
    fn = bench_models.PLPY_FUNCTION_NAME[m.kind]
    return f"SELECT sum({fn}('{path}', ARRAY[{COLS}])) FROM {SUBSET}"


# ------------------------------------------------------------------------------------------------
# Bookkeeping


class Results:
    def __init__(self):
        self.wall = {}     # (run, model, contender) -> [seconds]
        self.cpu = {}      # (run, model, contender) -> [seconds]
        self.rows = {}     # (run, model, contender) -> rows scored per measurement
        self.checks = {}   # (run, model, contender) -> check value (sum of labels)
        self.skipped = {}  # (run, model, contender) -> reason
        self.phases = {}   # (run, model, phase) -> [(wall, cpu)]

    def add(self, run, model, contender, wall, cpu, rows, check=None):
        k = (run, model, contender)
        self.wall.setdefault(k, []).append(wall)
        self.cpu.setdefault(k, []).append(cpu)
        self.rows[k] = rows
        if check is not None:
            self.checks[k] = check

    def phase(self, run, model, phase, wall, cpu):
        self.phases.setdefault((run, model, phase), []).append((wall, cpu))

    def has(self, k):
        return k in self.wall

    def rate(self, k, kind):
        t = statistics.median((self.cpu if kind == "cpu" else self.wall)[k])
        return self.rows[k] / t if t > 0 else float("inf")

    def spread(self, k, kind):
        t = (self.cpu if kind == "cpu" else self.wall)[k]
        return (max(t) - min(t)) / statistics.median(t) if len(t) > 1 else None

    def phase_median(self, k):
        v = self.phases[k]
        return statistics.median(w for w, _ in v), statistics.median(c for _, c in v)


LABELS = {
    "flock_on": "flock in-DB (batching on)",
    "flock_off": "flock in-DB (batching off, per row)",
    "native_xgb": "libxgboost C API predict (in memory)",
    "native_py": "in-memory peer: {} on the matrix",
    "export": "export-to-Python (COPY out, predict, COPY in)",
    "export_cursor": "export fetch via server-side cursor (only)",
    "plpy": "PL/Python per row ({}k rows, extrapolated)",
    "scan": "PG seq scan alone: sum(lepton_pt)",
    "ort": "ONNX Runtime in memory (onnxruntime-node, 1 thread)",
}


def contender_label(key, m, plpy_rows):
    if key == "native":
        return LABELS["native_xgb"] if m.is_xgboost else LABELS["native_py"].format(
            "sklearn" if m.kind == "sklearn" else "torch")
    if key == "plpy":
        return LABELS["plpy"].format(f"{plpy_rows / 1000:g}")
    return LABELS[key]


# ------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows in the table (default 1,000,000)")
    ap.add_argument("--reps", type=int, default=2, help="repetitions of each measurement (median; default 2)")
    ap.add_argument("--plpy-rows", type=int, default=20_000, help="rows the PL/Python contender scores (default 20,000)")
    ap.add_argument("--train-rows", type=int, default=100_000, help="rows the models are trained on (default 100,000)")
    ap.add_argument("--models", default=",".join(bench_models.SPECS), help="comma-separated subset of " +
                    ", ".join(bench_models.SPECS))
    ap.add_argument("--parallel-reps", type=int, default=None, help="repetitions of the 2-core run (default --reps; 0 skips it)")
    ap.add_argument("--parallel-export", action="store_true",
                    help="run export-to-Python (nthread 2) in the 2-core run too (no goal; ~1 min per rep)")
    ap.add_argument("--no-cursor", action="store_true", help="skip the informational server-side-cursor export")
    ap.add_argument("--work-dir", default=os.path.join(REPO, "build", "bench-indb"))
    ap.add_argument("--runner", help="a built flock_bench_xgb (default: compiled into the work dir with g++)")
    ap.add_argument("--shared-buffers", default="1GB")
    ap.add_argument("--ort-modules", help="where bench/ort/install.sh put onnxruntime-node (default build/bench-ort)")
    ap.add_argument("--json", help="write every measurement here (default WORK_DIR/results.json)")
    ap.add_argument("--sweep", default=",".join(str(b) for b in SWEEP_SIZES),
                    help="flock.batch_size values to sweep (default " + ",".join(str(b) for b in SWEEP_SIZES) +
                    "; 'none' skips the sweep)")
    ap.add_argument("--sweep-rows", type=int, default=200_000, help="rows of the batch-size sweep table (default 200,000)")
    ap.add_argument("--sweep-reps", type=int, default=2, help="repetitions of each sweep point (default 2)")
    ap.add_argument("--quick", action="store_true",
                    help="a development run: 100,000 rows, 1 rep, 2,000 PL/Python rows, sweep on 50,000 rows once "
                         "(explicit options still win)")
    argv = sys.argv[1:]
    args = ap.parse_args(argv)
    if args.quick:
        given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
        for opt, value in (("--rows", 100_000), ("--reps", 1), ("--plpy-rows", 2_000), ("--sweep-rows", 50_000),
                           ("--sweep-reps", 1)):
            if opt not in given:
                setattr(args, opt[2:].replace("-", "_"), value)
    try:
        sweep = [] if args.sweep.strip().lower() in ("", "none", "0") else \
            sorted({int(b) for b in args.sweep.split(",") if b.strip()})
    except ValueError:
        ap.error("--sweep takes comma-separated integers")
    if any(b < 1 for b in sweep) or args.sweep_rows < 1000 or args.sweep_reps < 1:
        ap.error("--sweep sizes must be positive, --sweep-rows >= 1000, --sweep-reps >= 1")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    bad = [n for n in names if n not in bench_models.SPECS]
    if bad or args.rows < 1000 or args.reps < 1 or args.plpy_rows < 100:
        ap.error(f"unknown model(s) {bad}" if bad else "need --rows >= 1000, --reps >= 1, --plpy-rows >= 100")
    plpy_rows = min(args.plpy_rows, args.rows)
    par_reps = args.reps if args.parallel_reps is None else args.parallel_reps
    os.makedirs(args.work_dir, exist_ok=True)
    t_start = time.perf_counter()
    errors = []

    info = machine_info()
    log(f"== flock in-DB benchmark: {args.rows} rows, {args.reps} reps, work dir {args.work_dir}")
    runner = args.runner or build_runner(args.work_dir)

    log("== data and models")
    t0 = time.perf_counter()
    feature_file = os.path.join(args.work_dir, f"higgs-{args.rows}-{data.SEED}-v{data.VERSION}.f32")
    ncols = len(data.FEATURES)
    if os.path.exists(feature_file) and os.path.getsize(feature_file) == args.rows * ncols * 4:
        X = np.fromfile(feature_file, dtype=np.float32).reshape(args.rows, ncols)
        log(f"   reused {feature_file} ({time.perf_counter() - t0:.1f} s)")
    else:
        X, _ = data.generate(args.rows)
        X.tofile(feature_file + ".tmp")
        os.replace(feature_file + ".tmp", feature_file)
        log(f"   generated {X.shape[0]} x {X.shape[1]} float32 into {feature_file} ({time.perf_counter() - t0:.1f} s)")
    n_train = args.train_rows
    Xtr, ytr = data.generate(n_train, seed=data.SEED + 1)  # a separate draw for training
    models = bench_models.build(names, Xtr, ytr, os.path.join(args.work_dir, "models"), data.SEED, log)
    del Xtr, ytr
    for m in models.values():
        m.warm_up(X)

    log("== cluster")
    cluster = start_cluster(args.shared_buffers)
    res = Results()
    sessions = []
    try:
        setup = Session(cluster)
        sessions.append(setup)
        pg_version = setup.one("SHOW server_version")
        setup.one("CREATE EXTENSION flock")
        sweep_rows = min(args.sweep_rows, args.rows)
        table_size = load_table(setup, X, plpy_rows, sweep_rows)
        log(f"   {TABLE}: {table_size}; {SUBSET}: {plpy_rows} rows")

        # Models the server can read, for PL/Python.
        model_dir = os.path.join(cluster.root, "models")
        os.makedirs(model_dir)
        os.chmod(model_dir, 0o755)
        server_path = {}
        for m in models.values():
            dst = os.path.join(model_dir, os.path.basename(m.py_file))
            with open(m.py_file, "rb") as src, open(dst, "wb") as out:
                out.write(src.read())
            os.chmod(dst, 0o644)
            server_path[m.name] = dst

        # Register with flock; a model flock cannot load is skipped (MLP: NN operators in progress).
        flock_ok = {}
        for m in models.values():
            try:
                ref = setup.one("SELECT flock.register_model(%s, %s, 'auto', %s)",
                                (m.name, psycopg2.Binary(m.flock_bytes()), m.description))
                plan = "\n".join(r[0] for r in setup.rows("EXPLAIN (COSTS OFF) " + flock_query(TABLE, m.name)))
                if "FlockBatchScore" not in plan:
                    raise RuntimeError("the plan has no FlockBatchScore node:\n" + plan)
                flock_ok[m.name] = True
                log(f"   registered {ref}")
            except (psycopg2.Error, RuntimeError) as e:
                reason = "skipped: flock cannot load it: " + str(e).strip().splitlines()[0]
                flock_ok[m.name] = False
                for run in RUNS:
                    for c in ("flock_on", "flock_off"):
                        res.skipped[(run, m.name, c)] = reason
                log(f"   {m.name}: {reason}")
                if m.kind != "torch":
                    errors.append(f"{m.name}: {reason}")

        # PL/Python
        plpy = Session(cluster)
        sessions.append(plpy)
        try:
            setup.one("CREATE EXTENSION IF NOT EXISTS plpython3u")
            for sql in {bench_models.PLPY_FUNCTIONS[m.kind] for m in models.values()}:
                setup.one(sql)
        except psycopg2.Error as e:
            reason = "skipped: plpython3u unavailable: " + str(e).strip().splitlines()[0] + \
                " (apt-get install postgresql-plpython3-15)"
            log("   " + reason)
            errors.append(reason)
            for m in models.values():
                res.skipped[("1 core", m.name, "plpy")] = reason
        for m in models.values():
            if ("1 core", m.name, "plpy") in res.skipped:
                continue
            try:  # loads the model into this session's GD, checks the function works
                fn = bench_models.PLPY_FUNCTION_NAME[m.kind]
                plpy.one(f"SELECT sum({fn}(%s, ARRAY[{COLS}])) FROM (SELECT * FROM {SUBSET} LIMIT 10) s",
                         (server_path[m.name],))
            except psycopg2.Error as e:
                reason = "skipped: " + str(e).strip().splitlines()[0]
                res.skipped[("1 core", m.name, "plpy")] = reason
                errors.append(f"{m.name} PL/Python: {reason}")
                log(f"   {m.name} PL/Python {reason}")

        # One session per model for flock, warmed up with that model only (resolve, compile, cache):
        # an application connection that scores with this model. Not one session for all models: a
        # backend's speed depends on what it ran before (glibc malloc raises its mmap/trim thresholds
        # after a large allocation, e.g. loading the 500-tree model, and later queries stop paying
        # page faults for their per-batch buffers), so a shared session would flatter later models.
        fls = {}
        subset_checks = {}
        for m in models.values():
            if flock_ok[m.name]:
                fls[m.name] = Session(cluster)
                sessions.append(fls[m.name])
                fls[m.name].one("SET max_parallel_workers_per_gather = 0")
                fls[m.name].timed(f"SELECT count(*) FROM {TABLE}")  # map the shared buffers into the backend
                for batching in (True, False):
                    subset_checks[(m.name, batching)] = run_flock(fls[m.name], m.name, batching, SUBSET)[2]
        fl = Session(cluster)  # for the plain scan
        sessions.append(fl)
        fl.timed(f"SELECT count(*) FROM {TABLE}")
        xs = Session(cluster)  # export-to-Python's own session
        sessions.append(xs)

        # ---------------------------------------------------------------- 1 core, interleaved
        log(f"== 1 core: {args.reps} repetitions, contenders interleaved")
        run = "1 core"
        contenders = ["flock_on", "native", "export", "flock_off", "plpy", "ort"]
        for m in models.values():
            if m.is_xgboost:
                res.skipped[(run, m.name, "ort")] = "n/a"
            elif not ort_available(args):
                res.skipped[(run, m.name, "ort")] = "skipped: onnxruntime-node not installed (bench/ort/install.sh)"
        cursor_done = args.no_cursor
        for rep in range(args.reps):
            t_rep = time.perf_counter()
            w, c, _ = fl.timed(f"SELECT sum(lepton_pt) FROM {TABLE}")
            res.add(run, "-", "scan", w, c, args.rows)
            fw, fc, ids, Xf = export_fetch(xs)
            res.phase(run, "-", "fetch", fw, fc)
            assert np.array_equal(Xf, X[ids - 1]), "COPY export returned different features"
            if not cursor_done:
                w, c, cids, Xc = export_fetch_cursor(xs)
                res.add(run, "-", "export_cursor", w, c, args.rows)
                assert np.array_equal(Xc, X[cids - 1]), "cursor export returned different features"
                del Xc, cids
                cursor_done = True
            order = contenders[rep % len(contenders):] + contenders[:rep % len(contenders)]
            for m in models.values():
                for c in order:
                    if (run, m.name, c) in res.skipped:
                        continue
                    if c in ("flock_on", "flock_off"):
                        w, cpu, v = run_flock(fls[m.name], m.name, c == "flock_on")
                        res.add(run, m.name, c, w, cpu, args.rows, v)
                    elif c == "native":
                        w, cpu, v = run_native(m, runner, feature_file, args.rows, 1, X)
                        res.add(run, m.name, c, w, cpu, args.rows, v)
                    elif c == "export":
                        p, wb, v = export_score_and_store(xs, m, ids, Xf, 1)
                        res.phase(run, m.name, "predict", *p)
                        res.phase(run, m.name, "write", *wb)
                        res.add(run, m.name, c, fw + p[0] + wb[0], fc + p[1] + wb[1], args.rows, v)
                    elif c == "plpy":
                        w, cpu, v = plpy.timed(plpy_query(m, server_path[m.name]))
                        res.add(run, m.name, c, w, cpu, plpy_rows, v)
                    elif c == "ort":
                        try:
                            w, cpu, v = run_ort(m, args, feature_file, X.shape[1])
                            res.add(run, m.name, c, w, cpu, args.rows, v)
                        except subprocess.CalledProcessError as e:
                            res.skipped[(run, m.name, c)] = f"skipped: ONNX Runtime failed (exit {e.returncode})"
                            errors.append(f"{m.name} ONNX Runtime: exit {e.returncode}")
            del Xf, ids
            log(f"   rep {rep + 1}/{args.reps}: {time.perf_counter() - t_rep:.0f} s, load average "
                f"{os.getloadavg()[0]:.1f}")

        # ---------------------------------------------------------------- fidelity (untimed)
        log("== fidelity: flock against the source libraries")
        fidelity = check_fidelity(fls, models, X, plpy_rows, args.rows, errors)

        # ---------------------------------------------------------------- batch-size sweep
        sweep_res = {}
        sweep_faults = {}
        if sweep and fls:
            log(f"== batch-size sweep: flock.batch_size in {sweep} on {SWEEP} ({sweep_rows} rows), "
                f"{args.sweep_reps} reps")
            for rep in range(args.sweep_reps):
                order = sweep[rep % len(sweep):] + sweep[:rep % len(sweep)]
                for b in order:
                    for name in fls:
                        # A fresh session per point, warmed up on higgs_sub with the same batch size:
                        # a backend's speed depends on the allocations it made before (see README), so
                        # points measured one after another in one session would not be comparable.
                        sess = Session(cluster)
                        try:
                            sess.one("SET max_parallel_workers_per_gather = 0")
                            sess.one(f"SET flock.batch_size = {b}")
                            if rep == 0:
                                plan = "\n".join(r[0] for r in sess.rows("EXPLAIN (COSTS OFF) " + flock_query(SWEEP, name)))
                                if f"Batch Size: {b}" not in plan:
                                    errors.append(f"sweep: the plan does not show Batch Size: {b}:\n{plan}")
                            sess.timed(f"SELECT count(*) FROM {SWEEP}")
                            run_flock(sess, name, True, SUBSET)
                            w, cpu, v = run_flock(sess, name, True, SWEEP)
                            sweep_faults.setdefault((name, b), []).append(sess.last_faults)
                        finally:
                            sess.close()
                        sweep_res.setdefault((name, b), []).append((w, cpu, v))
            for name in fls:
                vals = {sweep_res[(name, b)][0][2] for b in sweep}
                if len(vals) != 1:
                    errors.append(f"sweep: {name} sums differ across batch sizes: {sorted(vals)}")

        # ---------------------------------------------------------------- 2 cores
        par_models = [m for m in models.values() if m.is_xgboost]
        par_plan = None
        if par_reps and par_models:
            run = "2 cores"
            log(f"== 2 cores: PG parallel query (2 workers) vs xgboost nthread=2, {par_reps} repetitions")
            setup.one(f"ALTER TABLE {TABLE} SET (parallel_workers = 2)")
            ps = Session(cluster)
            sessions.append(ps)
            for sql in ("SET max_parallel_workers_per_gather = 2", "SET parallel_leader_participation = off",
                        "SET parallel_setup_cost = 0", "SET parallel_tuple_cost = 0",
                        "SET min_parallel_table_scan_size = 0"):
                ps.one(sql)
            m0 = par_models[0]
            if flock_ok[m0.name]:
                par_plan = "\n".join(r[0] for r in ps.rows("EXPLAIN (COSTS OFF) " + flock_query(TABLE, m0.name)))
                if "Workers Planned: 2" not in par_plan or "FlockBatchScore" not in par_plan:
                    errors.append("2-core plan is not a parallel plan with FlockBatchScore:\n" + par_plan)
            # export-to-Python has no 2-core goal; it runs there only with --parallel-export (it is the
            # slowest contender and would add ~1 minute per repetition).
            contenders2 = ["flock_on", "native"] + (["export"] if args.parallel_export else [])
            for rep in range(par_reps):
                t_rep = time.perf_counter()
                if args.parallel_export:
                    fw, fc, ids, Xf = export_fetch(xs)
                    res.phase(run, "-", "fetch", fw, fc)
                order = contenders2[rep % len(contenders2):] + contenders2[:rep % len(contenders2)]
                for m in par_models:
                    for c in order:
                        if (run, m.name, c) in res.skipped:
                            continue
                        if c == "flock_on":
                            w, cpu, v = run_flock(ps, m.name, True, postmaster_pid=cluster.postmaster_pid)
                        elif c == "native":
                            w, cpu, v = run_native(m, runner, feature_file, args.rows, 2, X)
                        else:
                            p, wb, v = export_score_and_store(xs, m, ids, Xf, 2)
                            res.phase(run, m.name, "predict", *p)
                            res.phase(run, m.name, "write", *wb)
                            w, cpu = fw + p[0] + wb[0], fc + p[1] + wb[1]
                        res.add(run, m.name, c, w, cpu, args.rows, v)
                if args.parallel_export:
                    del Xf, ids
                log(f"   rep {rep + 1}/{par_reps}: {time.perf_counter() - t_rep:.0f} s, load average "
                    f"{os.getloadavg()[0]:.1f}")
    finally:
        for s in sessions:
            try:
                s.close()
            except psycopg2.Error:
                pass
        cluster.stop()

    check_agreement(res, models, subset_checks, plpy_rows, args.rows, errors)
    extra = {"fidelity": fidelity, "sweep": sweep, "sweep_res": sweep_res, "sweep_rows": sweep_rows,
             "sweep_faults": sweep_faults}
    report(args, info, res, models, plpy_rows, par_reps, n_train, pg_version, table_size, subset_checks, par_plan,
           errors, time.perf_counter() - t_start, extra)
    return 1 if errors else 0


def sweep_table(p, sweep, sweep_res, sweep_rows, reps, sweep_faults):
    """rows/s (CPU) per model and batch size, each model's rate relative to its best size, and the
    size with the best geometric mean of those relative rates over the models. Returns the best."""
    names = sorted({n for n, _ in sweep_res}, key=lambda n: list(bench_models.SPECS).index(n))
    if not names:
        return None
    rate = {k: sweep_rows / statistics.median(c for _, c, _ in v) for k, v in sweep_res.items()}
    best_of = {n: max(rate[(n, b)] for b in sweep) for n in names}
    geo = {b: float(np.exp(np.mean([np.log(rate[(n, b)] / best_of[n]) for n in names]))) for b in sweep}
    best = max(sweep, key=lambda b: geo[b])
    p(f"Batch-size sweep: SELECT sum(flock.predict('m', t)) FROM {SWEEP} t ({sweep_rows} rows), 1 core, "
      f"rows/s of CPU time, median of {reps};")
    p("relative = rate / the model's best rate; the best default maximises the geometric mean of the relatives.")
    hdr = f"{'batch_size':>10} " + " ".join(f"{n:>18}" for n in names) + f" {'geo-mean relative':>18}"
    p(hdr)
    p("-" * len(hdr))
    for b in sweep:
        cells = " ".join(f"{rate[(n, b)]:>10,.0f} ({rate[(n, b)] / best_of[n]:.2f})" for n in names)
        mark = "  <- best" if b == best else ("  (current default)" if b == DEFAULT_BATCH_SIZE else "")
        p(f"{b:>10} {cells} {geo[b]:>18.3f}{mark}")
    p(f"backend minor page faults per 1,000 rows scored (median): " + "; ".join(
        f"{n} " + " ".join(f"{b}:{statistics.median(sweep_faults[(n, b)]) * 1000 / sweep_rows:.0f}" for b in sweep)
        for n in names))
    per_model = ", ".join(f"{n} {max(sweep, key=lambda b: rate[(n, b)])}" for n in names)
    p(f"best flock.batch_size: {best} (geometric mean {geo[best]:.3f} of each model's best rate; "
      f"default {DEFAULT_BATCH_SIZE}: {geo.get(DEFAULT_BATCH_SIZE, float('nan')):.3f}); best per model: {per_model}")
    return best


def report(args, info, res, models, plpy_rows, par_reps, n_train, pg_version, table_size, subset_checks, par_plan,
           errors, total, extra):
    out = sys.stdout

    def p(line=""):
        print(line, file=out)

    p()
    p("== flock in-DB benchmark")
    p(f"machine   nproc {info['nproc']}, {info['cpu']} ({' '.join(info['simd'])}), {info.get('mem_gb', '?')} GB; "
      f"load average at start {' '.join(f'{x:.2f}' for x in info['loadavg'])}, at end "
      f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    p(f"software  PostgreSQL {pg_version}, xgboost {info['xgboost']} (libxgboost C API), Python {info['python']}, "
      f"kernel {info['kernel']}")
    if "flock_so" in info:
        p(f"flock     {info['flock_so']}, built with {info['flock_flags']}")
    p(f"data      {args.rows} rows x 28 real (Higgs-like, seed {data.SEED}), table {table_size}, prewarmed "
      f"(shared_buffers {args.shared_buffers}); models trained on {n_train} other rows")
    p("settings  jit off; 1 core: max_parallel_workers_per_gather 0, xgboost/torch 1 thread; 2 cores: 2 parallel "
      "workers, leader not participating, xgboost nthread 2")
    p(f"          {args.reps} reps ({par_reps} on 2 cores), contenders interleaved per rep; figures are medians")
    p(f"          flock query: {flock_query(TABLE, 'm')}, one session per model warmed up with that model")
    p("          CPU = CPU time of every process that worked for the contender (backend and parallel workers,")
    p("          the Python client, the C runner); cpu/wall < 1 means it waited for a CPU (a busy machine)")
    p()

    hdr = (f"{'run':<8} {'model':<9} {'contender':<45} {'rows/s CPU':>11} {'rows/s wall':>12} {'cpu/wall':>8} "
           f"{'spread':>6}  check")
    p(hdr)
    p("-" * len(hdr))

    def row(run, mname, key, label):
        k = (run, mname, key)
        if k in res.skipped:
            p(f"{run:<8} {mname:<9} {label:<45} {res.skipped[k]}")
            return
        if not res.has(k):
            return
        sp = res.spread(k, "cpu")
        chk = res.checks.get(k)
        share = statistics.median(res.cpu[k]) / statistics.median(res.wall[k])
        p(f"{run:<8} {mname:<9} {label:<45} {res.rate(k, 'cpu'):>11,.0f} {res.rate(k, 'wall'):>12,.0f} "
          f"{share:>8.2f} {'' if sp is None else f'{sp * 100:.0f}%':>6}  {'' if chk is None else f'{chk:.0f}'}")

    for run in RUNS:
        for m in models.values():
            for key in ("flock_on", "flock_off", "native", "ort", "export", "plpy"):
                if res.skipped.get((run, m.name, key)) == "n/a":
                    continue
                row(run, m.name, key, contender_label(key, m, plpy_rows))
        row(run, "-", "scan", LABELS["scan"])
        row(run, "-", "export_cursor", LABELS["export_cursor"])
    p()
    p("spread = (max - min) / median of the CPU times. check = rows predicted positive; PL/Python: of the first "
      f"{plpy_rows} rows (flock there: " + ", ".join(
          f"{n} {subset_checks[(n, True)]:.0f}" for n in models if (n, True) in subset_checks) + ")")
    p(f"PL/Python per row is NOT run over all {args.rows} rows (a million per-row Python calls through 500 trees")
    p(f"would take far too long): it scores the first {plpy_rows} rows (table {SUBSET}) and its rows/s is that")
    p(f"subsample's rate, extrapolated to the table: per-row cost does not depend on the table size.")

    p()
    p("export-to-Python phases, medians (wall / CPU seconds):")
    for run in RUNS:
        fk = (run, "-", "fetch")
        if fk not in res.phases:
            continue
        fw, fc = res.phase_median(fk)
        parts = [f"COPY out + parse {fw:.2f} / {fc:.2f}"]
        for m in models.values():
            pk, wk = (run, m.name, "predict"), (run, m.name, "write")
            if pk in res.phases:
                (pw, pc), (ww, wc) = res.phase_median(pk), res.phase_median(wk)
                parts.append(f"{m.name} predict {pw:.2f} / {pc:.2f}, COPY in {ww:.2f} / {wc:.2f}")
        p(f"  {run}: " + "; ".join(parts))

    p()
    p("Goals. 1 core: the ratio of CPU-time rates decides (on an idle machine a single-threaded contender's wall")
    p("time is its CPU time); 2 cores: the ratio of wall-clock rates decides. The other ratio is shown in brackets.")
    ghdr = (f"{'goal':<40} {'run':<8} {'model':<9} {'flock rows/s':>13} {'peer rows/s':>12} {'ratio':>8} "
            f"{'(other)':>9}  result")
    p(ghdr)
    p("-" * len(ghdr))
    verdicts = []
    for run in RUNS:
        kind, other = ("cpu", "wall") if run == "1 core" else ("wall", "cpu")
        for m in models.values():
            fk = (run, m.name, "flock_on")
            for peer in ("native", "ort", "export", "plpy", "flock_off"):
                if peer == "native" and not m.is_xgboost:
                    continue
                if peer == "ort" and m.is_xgboost:
                    continue
                if run == "2 cores" and peer != "native":
                    continue
                need, label = GOALS[peer]
                pk = (run, m.name, peer)
                if not res.has(fk) or not res.has(pk):
                    why = res.skipped.get(fk) or res.skipped.get(pk)
                    if why or run == "1 core":
                        p(f"{label:<40} {run:<8} {m.name:<9} {'':>13} {'':>12} {'n/a':>8} {'':>9}  "
                          f"{why or 'not measured'}")
                    continue
                ratio = res.rate(fk, kind) / res.rate(pk, kind)
                ratio_other = res.rate(fk, other) / res.rate(pk, other)
                ok = ratio >= need
                verdicts.append(ok)
                p(f"{label:<40} {run:<8} {m.name:<9} {res.rate(fk, kind):>13,.0f} {res.rate(pk, kind):>12,.0f} "
                  f"{ratio:>7.2f}x {f'({ratio_other:.2f}x)':>9}  {'PASS' if ok else 'FAIL'}")
    p()
    if par_plan:
        p("2-core plan:")
        for line in par_plan.splitlines():
            p("  " + line)
        p()
    best = None
    if extra["sweep_res"]:
        best = sweep_table(p, extra["sweep"], extra["sweep_res"], extra["sweep_rows"], args.sweep_reps,
                           extra["sweep_faults"])
        p()
    if extra["fidelity"]:
        p("Fidelity (untimed): flock's probabilities against the source library's")
        for line in extra["fidelity"]:
            p("  " + line)
        p("  and every contender's count of rows predicted positive against the reference's (within "
          f"max(1, 1e-5 x rows)): {'ok' if not any(e.startswith('fidelity: ') and 'predicted positive' in e for e in errors) else 'MISMATCH'}")
        p()
    p(f"{sum(verdicts)} of {len(verdicts)} goals met; the run took {total / 60:.1f} min"
      + (f"; best flock.batch_size {best}" if best else ""))
    for e in errors:
        p("ERROR: " + e)

    path = args.json or os.path.join(args.work_dir, "results.json")
    with open(path, "w") as f:
        json.dump({
            "machine": info, "rows": args.rows, "reps": args.reps, "plpy_rows": plpy_rows,
            "measurements": [{"run": k[0], "model": k[1], "contender": k[2], "wall": res.wall[k], "cpu": res.cpu[k],
                              "rows": res.rows[k], "check": res.checks.get(k)} for k in res.wall],
            "phases": [{"run": k[0], "model": k[1], "phase": k[2], "wall_cpu": v} for k, v in res.phases.items()],
            "skipped": [{"run": k[0], "model": k[1], "contender": k[2], "reason": v} for k, v in res.skipped.items()],
            "sweep": [{"model": k[0], "batch_size": k[1], "rows": extra["sweep_rows"],
                       "wall_cpu_sum": v, "minor_faults": extra["sweep_faults"].get(k)}
                      for k, v in extra["sweep_res"].items()],
            "fidelity": extra["fidelity"], "errors": errors,
        }, f, indent=1)
    p(f"(every measurement: {path})")


if __name__ == "__main__":
    sys.exit(main())
