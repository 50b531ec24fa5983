"""Model loading is isolated (issue 11, attacks 3 and 4): models that crash libonnx's checker or
shape inference (SIGSEGV, SIGFPE), keep a load busy for minutes, or need gigabytes, are validated
in flock-model-check, a separate process under rlimits, killed on statement_timeout or cancel. Each
gives a clean error with the expected SQLSTATE, within the timeout, through the cast and through
register_model, as an unprivileged role; the server never restarts and no checker is left behind."""
import os
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import onnx  # noqa: E402
import onnx.numpy_helper  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

import onnx_builders  # noqa: E402

psycopg2 = pytest.importorskip("psycopg2")

PG_BIN = os.environ.get("FLOCK_PG_BIN", "/usr/lib/postgresql/15/bin")
CHECKER = os.path.join(PG_BIN, "flock-model-check")


# ---------------------------------------------------------------------------------------------
# The crafted models (no checker involved in building them: onnx.helper only).
# ---------------------------------------------------------------------------------------------
def _raw_model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "hostile", inputs, outputs, initializer=list(initializers))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="flock-tests")
    m.ir_version = 8
    return m.SerializeToString()


def layernorm_axis_minus_100():
    """LayerNormalization with axis = -100 on a rank-2 input: libonnx 1.12's shape inference indexes
    the input shape with it (SIGSEGV in a backend)."""
    return _raw_model([helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y", "mean", "inv_std"],
                                        axis=-100)],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
                       helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["N", 1]),
                       helper.make_tensor_value_info("inv_std", TensorProto.FLOAT, ["N", 1])],
                      [helper.make_tensor("scale", TensorProto.FLOAT, [3], [1.0, 1.0, 1.0]),
                       helper.make_tensor("bias", TensorProto.FLOAT, [3], [0.0, 0.0, 0.0])])


def short_int64_initializer():
    """TopK whose int64 K initializer declares dims [1] but carries 4 raw bytes (half an int64):
    libonnx 1.12 parses it into an empty vector and reads its first element (SIGSEGV in a backend)."""
    k = onnx.TensorProto(name="k", data_type=TensorProto.INT64, dims=[1], raw_data=b"\x02\x00\x00\x00")
    return _raw_model([helper.make_node("TopK", ["x", "k"], ["values", "indices"])],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                      [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["N", 2]),
                       helper.make_tensor_value_info("indices", TensorProto.INT64, ["N", 2])], [k])


def maxpool_zero_stride():
    """MaxPool with strides [0, 0]: libonnx 1.12 divides by the stride (SIGFPE in a backend)."""
    return _raw_model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[0, 0])],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])])


def slow_maxpool():
    """MaxPool with a 2048x2048 window over a declared 1x1x4096x4096 input, 155 bytes: loading it
    (the trial run at registration; libonnx's check and shape inference take 17 ms) needs about
    1.8e13 comparisons. Measured without isolation, flock-model-check alone with a 60 s RLIMIT_CPU:
    killed by SIGXCPU after 57.1 s user CPU (153 s wall on the loaded test machine) — a backend
    would have been stuck for hours."""
    return _raw_model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2048, 2048], strides=[1, 1])],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4096, 4096])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2049, 2049])])


def slow_conv():
    """Conv of a declared 1x1x2048x2048 input with a 64x64 kernel (a 16 kB model): 1.6e10
    multiply-adds at load; flock-model-check alone used up a 5 s RLIMIT_CPU on it."""
    import numpy as np
    w = onnx.numpy_helper.from_array(np.ones((1, 1, 64, 64), np.float32), "w")
    return _raw_model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[64, 64])],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2048, 2048])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1985, 1985])], [w])


def huge_declared_dims():
    """A chain of Relu over a declared [1, 2^28 - 1] float input: each tensor is just under the
    element limit, together they need gigabytes (8.4 GB peak in a backend before)."""
    n = (1 << 28) - 1
    nodes = [helper.make_node("Relu", ["x"], ["r1"])]
    for k in range(2, 9):
        nodes.append(helper.make_node("Relu", [f"r{k - 1}"], [f"r{k}"]))
    nodes.append(helper.make_node("Add", ["r8", "x"], ["y"]))
    return _raw_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])])


HOSTILE = {
    "layernorm_axis_minus_100": layernorm_axis_minus_100,
    "short_int64_initializer": short_int64_initializer,
    "maxpool_zero_stride": maxpool_zero_stride,
    "slow_maxpool": slow_maxpool,
    "slow_conv": slow_conv,
    "huge_declared_dims": huge_declared_dims,
}

# What each crafted model must give, through every entry: never XX000, never a crash.
#   22023: rejected (libonnx's crash in the checker process, or a clean validation error)
#   57014: statement_timeout stopped the load (the checker was killed)
#   53200: the checker ran out of its address-space limit
EXPECTED = {
    "layernorm_axis_minus_100": "22023",
    "short_int64_initializer": "22023",
    "maxpool_zero_stride": "22023",
    "slow_maxpool": "57014",
    "slow_conv": "57014",
    "huge_declared_dims": "53200",
}

ROLE = "iso_user"
TIMEOUT_MS = 2000
# Keeps the hostile models from taking 4 GB (the default flock.model_check_memory) of a shared
# test machine; a superuser's per-role setting, as a DBA would make it.
ROLE_MEMORY = "1GB"


@pytest.fixture(scope="module")
def role(cluster, dbname):
    c = psycopg2.connect(cluster.dsn(dbname))
    c.autocommit = True
    with c.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,))
        if not cur.fetchone():
            cur.execute(f"CREATE ROLE {ROLE} LOGIN")
        cur.execute(f"ALTER ROLE {ROLE} SET flock.model_check_memory = '{ROLE_MEMORY}'")
    c.close()
    return ROLE


@pytest.fixture
def user(connect_as, role):
    c = connect_as(role)
    with c.cursor() as cur:
        cur.execute(f"SET statement_timeout = {TIMEOUT_MS}")
    return c


def one(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


def children_of(pid):
    """Processes whose parent is `pid` (a backend's checker processes)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], stdout=subprocess.PIPE, text=True)
    return [int(p) for p in out.stdout.split()]


class ServerWatch:
    """Proves the server did not restart: a witness connection opened before keeps its backend,
    the postmaster's start time is unchanged, the log reports no backend killed by a signal."""

    def __init__(self, cluster, conn):
        self.cluster = cluster
        self.witness = conn
        self.pid = one(conn, "SELECT pg_backend_pid()")
        self.started = one(conn, "SELECT pg_postmaster_start_time()")

    def assert_alive(self):
        assert one(self.witness, "SELECT pg_backend_pid()") == self.pid
        assert one(self.witness, "SELECT pg_postmaster_start_time()") == self.started
        log = self.cluster.server_log()
        assert "terminated by signal" not in log, log[-2000:]
        assert "server process" not in log or "was terminated" not in log, log[-2000:]


def expect_clean_error(conn, sql, args, sqlstate):
    """Runs sql, expects an error with `sqlstate` within the statement_timeout + 1 s and no checker
    left behind. Returns the error."""
    backend = one(conn, "SELECT pg_backend_pid()")
    t0 = time.monotonic()
    with pytest.raises(psycopg2.Error) as err:
        with conn.cursor() as cur:
            cur.execute(sql, args)
    elapsed = time.monotonic() - t0
    e = err.value
    assert e.pgcode != "XX000", e.pgerror
    assert e.pgcode == sqlstate, (e.pgcode, e.pgerror)
    assert elapsed < TIMEOUT_MS / 1000 + 1, f"took {elapsed:.1f} s"
    assert children_of(backend) == [], "a model checker outlived its statement"
    assert one(conn, "SELECT 1") == 1  # the same session goes on
    return e


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_model_through_the_cast(cluster, conn, user, name):
    watch = ServerWatch(cluster, conn)
    e = expect_clean_error(user, "SELECT %s::flock.model IS NOT NULL", (psycopg2.Binary(HOSTILE[name]()),),
                           EXPECTED[name])
    assert e.diag.message_primary
    watch.assert_alive()


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_model_through_register_model(cluster, conn, user, name):
    watch = ServerWatch(cluster, conn)
    expect_clean_error(user, "SELECT flock.register_model(%s, %s)", (f"hostile_{name}", psycopg2.Binary(HOSTILE[name]())),
                       EXPECTED[name])
    watch.assert_alive()
    assert one(conn, "SELECT count(*) FROM flock.models WHERE name = %s", (f"hostile_{name}",)) == 0


@pytest.mark.parametrize("name", ["layernorm_axis_minus_100", "short_int64_initializer", "maxpool_zero_stride"])
def test_hostile_model_with_feature_names(cluster, conn, user, name):
    """register_model's feature-name path embeds the names in the checker too."""
    watch = ServerWatch(cluster, conn)
    expect_clean_error(user, "SELECT flock.register_model(%s, %s, features => ARRAY['a', 'b', 'c'])",
                       (f"hostile_f_{name}", psycopg2.Binary(HOSTILE[name]())), EXPECTED[name])
    watch.assert_alive()


def _hex(data):
    return "\\x" + data.hex()


@pytest.mark.parametrize("name", ["short_int64_initializer", "maxpool_zero_stride"])
def test_hostile_model_through_text_input(cluster, conn, user, name):
    """The type's input function: a literal, and an array of models (array_in calls it too)."""
    watch = ServerWatch(cluster, conn)
    expect_clean_error(user, "SELECT %s::flock.model IS NOT NULL", (_hex(HOSTILE[name]()),), EXPECTED[name])
    expect_clean_error(user, "SELECT %s::flock.model[] IS NOT NULL", ('{"' + _hex(HOSTILE[name]()).replace("\\", "\\\\") + '"}',),
                       EXPECTED[name])
    watch.assert_alive()


def _copy_binary(values):
    """A binary COPY stream of one-column rows."""
    import io
    import struct
    out = io.BytesIO()
    out.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0))
    for v in values:
        out.write(struct.pack("!hi", 1, len(v)) + v)
    out.write(struct.pack("!h", -1))
    out.seek(0)
    return out


def test_hostile_model_through_binary_copy(cluster, conn, user):
    """COPY ... (FORMAT binary) calls the type's receive function."""
    watch = ServerWatch(cluster, conn)
    with user.cursor() as cur:
        cur.execute("CREATE TEMP TABLE received (m flock.model)")
        backend = one(user, "SELECT pg_backend_pid()")
        t0 = time.monotonic()
        with pytest.raises(psycopg2.Error) as err:
            cur.copy_expert("COPY received FROM STDIN (FORMAT binary)", _copy_binary([maxpool_zero_stride()]))
        assert err.value.pgcode == "22023", err.value.pgerror
        assert time.monotonic() - t0 < TIMEOUT_MS / 1000 + 1
        assert children_of(backend) == []
        # A valid model goes in the same way, and scores.
        cur.copy_expert("COPY received FROM STDIN (FORMAT binary)",
                        _copy_binary([onnx_builders.linear_regressor([1.0, 2.0], 0.5)]))
        cur.execute("SELECT flock.predict(m, ARRAY[1, 1]::float4[]) FROM received")
        assert cur.fetchone()[0] == pytest.approx(3.5)
    watch.assert_alive()


def test_cancel_stops_a_slow_check(cluster, conn, connect_as, role):
    """pg_cancel_backend during a slow check: 57014 promptly, and the checker is gone."""
    watch = ServerWatch(cluster, conn)
    victim = connect_as(role)
    victim_pid = one(victim, "SELECT pg_backend_pid()")
    result = {}

    def run():
        t0 = time.monotonic()
        try:
            with victim.cursor() as cur:
                cur.execute("SELECT %s::flock.model IS NOT NULL", (psycopg2.Binary(slow_maxpool()),))
        except psycopg2.Error as e:
            result["error"] = e
        result["done"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while not children_of(victim_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert children_of(victim_pid), "the checker never started"
    time.sleep(0.3)  # well inside the check
    canceller = connect_as(role)
    cancelled_at = time.monotonic()
    assert one(canceller, "SELECT pg_cancel_backend(%s)", (victim_pid,))
    thread.join(10)
    assert not thread.is_alive()
    assert result["error"].pgcode == "57014", result["error"].pgerror
    assert result["done"] - cancelled_at < 1.0
    assert children_of(victim_pid) == []
    watch.assert_alive()


def test_cpu_time_limit(cluster, conn, connect_as, role):
    """With no statement_timeout, RLIMIT_CPU stops the checker: 54000 naming the limit."""
    watch = ServerWatch(cluster, conn)
    with conn.cursor() as cur:
        cur.execute(f"ALTER ROLE {role} SET flock.model_check_cpu_time = '1s'")
    try:
        c = connect_as(role)
        backend = one(c, "SELECT pg_backend_pid()")
        t0 = time.monotonic()
        with pytest.raises(psycopg2.Error) as err:
            one(c, "SELECT %s::flock.model IS NOT NULL", (psycopg2.Binary(slow_maxpool()),))
        assert err.value.pgcode == "54000", err.value.pgerror
        assert "CPU time" in err.value.diag.message_primary
        assert "flock.model_check_cpu_time" in err.value.diag.message_hint
        assert time.monotonic() - t0 < 10  # 1 s of CPU, whatever the machine's load
        assert children_of(backend) == []
    finally:
        with conn.cursor() as cur:
            cur.execute(f"ALTER ROLE {role} RESET flock.model_check_cpu_time")
    watch.assert_alive()


def test_limits_are_superuser_only(user):
    for setting in ("flock.model_checker = '/bin/true'", "flock.model_check_cpu_time = 3600",
                    "flock.model_check_memory = '64GB'"):
        with pytest.raises(psycopg2.Error) as err:
            one(user, f"SET {setting}")
        assert err.value.pgcode == "42501", err.value.pgerror


def test_missing_checker_fails_closed(conn):
    with conn.cursor() as cur:
        cur.execute("SET flock.model_checker = '/nonexistent/flock-model-check'")
        try:
            with pytest.raises(psycopg2.Error) as err:
                cur.execute("SELECT %s::flock.model IS NOT NULL",
                            (psycopg2.Binary(onnx_builders.linear_regressor([1.0, 3.0], 0.25)),))
            assert err.value.pgcode == "58P01", err.value.pgerror
            assert "/nonexistent/flock-model-check" in err.value.diag.message_primary
            with pytest.raises(psycopg2.Error) as err:
                cur.execute("SELECT flock.register_model('never_checked', %s)",
                            (psycopg2.Binary(onnx_builders.linear_regressor([1.0, 3.0], 0.25)),))
            assert err.value.pgcode == "58P01", err.value.pgerror
        finally:
            cur.execute("RESET flock.model_checker")


def test_checker_rejection_keeps_message_and_hint(user):
    """The core's own error passes through the checker: its SQLSTATE, message and hint."""
    with pytest.raises(psycopg2.Error) as err:
        one(user, "SELECT %s::flock.model IS NOT NULL", (psycopg2.Binary(onnx_builders.future_opset()),))
    assert err.value.pgcode == "0A000", err.value.pgerror
    assert "opset 99" in err.value.diag.message_primary
    assert err.value.diag.message_hint
    with pytest.raises(psycopg2.Error) as err:
        one(user, "SELECT %s::flock.model IS NOT NULL", (psycopg2.Binary(b"not a model"),))
    assert err.value.pgcode == "22023", err.value.pgerror
    with pytest.raises(psycopg2.Error) as err:
        one(user, "SELECT flock.register_model('bad_fmt', %s, format => 'pickle')",
            (psycopg2.Binary(onnx_builders.linear_regressor([1.0], 0.0)),))
    assert err.value.pgcode == "22023" and "pickle" in err.value.diag.message_primary


def test_valid_models_register_and_score(user):
    """Valid models pass the checker, with and without feature names, as an unprivileged role."""
    ref = one(user, "SELECT flock.register_model('iso_linear', %s)",
              (psycopg2.Binary(onnx_builders.linear_regressor([2.0, -1.0], 0.5)),))
    assert one(user, "SELECT flock.predict(%s, ARRAY[3, 1]::float4[])", (ref,)) == pytest.approx(5.5)
    ref = one(user, "SELECT flock.register_model('iso_named', %s, features => ARRAY['a', 'b'])",
              (psycopg2.Binary(onnx_builders.linear_regressor([2.0, -1.0], 0.5)),))
    assert one(user, "SELECT flock.model_info(%s)->'features'", (ref,)) == ["a", "b"] or \
        "a" in str(one(user, "SELECT flock.model_info(%s)", (ref,)))
    with pytest.raises(psycopg2.Error) as err:
        one(user, "SELECT flock.register_model('iso_named', %s, features => ARRAY['a', ''])",
            (psycopg2.Binary(onnx_builders.linear_regressor([2.0, -1.0], 0.5)),))
    assert err.value.pgcode == "22023"
    with pytest.raises(psycopg2.Error) as err:
        one(user, "SELECT flock.register_model('iso_named', %s, features => ARRAY['a'])",
            (psycopg2.Binary(onnx_builders.linear_regressor([2.0, -1.0], 0.5)),))
    assert err.value.pgcode == "22023"


def test_large_model_streams_through_the_checker(user):
    """A 10+ MB model goes through the pipes both ways (plain, and with feature names returned)."""
    import numpy as np
    rng = np.random.default_rng(7)
    n = 1600
    weights = rng.standard_normal((n, n)).astype(np.float32) * 0.01
    model = onnx_builders.dense_relu(weights, np.zeros(n, dtype=np.float32))
    assert len(model) > 10_000_000
    with user.cursor() as cur:
        cur.execute("SET statement_timeout = 0")
        cur.execute("SELECT octet_length(%s::flock.model::bytea)", (psycopg2.Binary(model),))
        assert cur.fetchone()[0] == len(model)
        cur.execute("SELECT flock.register_model('iso_big', %s, features => %s)",
                    (psycopg2.Binary(model), [f"f{k}" for k in range(n)]))
        ref = cur.fetchone()[0]
        cur.execute("SELECT octet_length(model::bytea) FROM flock.models WHERE name = 'iso_big'")
        assert cur.fetchone()[0] > len(model)


def test_checker_alone_rejects_each_model_cleanly():
    """The checker program on its own: the crafted crashers are answered (or die by a signal)
    without hanging, and a valid model is ok."""
    def run(model, cpu=2, memory=1024):
        header = (f"flock-model-check/1 format=auto max_tensor_elements={1 << 28} cpu_seconds={cpu} "
                  f"memory_mb={memory} features=-1 bytes={len(model)}\n").encode()
        return subprocess.run([CHECKER], input=header + model, stdout=subprocess.PIPE, timeout=60)
    ok = run(onnx_builders.linear_regressor([1.0, 2.0], 0.5))
    assert ok.returncode == 0 and ok.stdout == b"ok 0\n"
    bad = run(b"junk")
    assert bad.returncode == 0 and bad.stdout.startswith(b"error invalid_model ")
    oom = run(huge_declared_dims(), memory=512)
    assert oom.stdout == b"error out_of_memory 0 0\n"


def _checker_alone(model, cpu=5, memory=1024):
    header = (f"flock-model-check/1 format=auto max_tensor_elements={1 << 28} cpu_seconds={cpu} "
              f"memory_mb={memory} features=-1 bytes={len(model)}\n").encode()
    return subprocess.run([CHECKER], input=header + model, stdout=subprocess.PIPE, timeout=120)


@pytest.mark.parametrize("name", ["layernorm_axis_minus_100", "short_int64_initializer", "maxpool_zero_stride"])
def test_a_crash_is_named(user, name):
    """Oracle: run the checker on its own. Where libonnx kills it with a signal, the SQL error names
    that signal (with this libonnx, 1.12: SIGSEGV, SIGSEGV, SIGFPE)."""
    alone = _checker_alone(HOSTILE[name]())
    with pytest.raises(psycopg2.Error) as err:
        one(user, "SELECT %s::flock.model IS NOT NULL", (psycopg2.Binary(HOSTILE[name]()),))
    assert err.value.pgcode == "22023"
    if alone.returncode < 0:
        assert f"the model checker crashed (signal {-alone.returncode}" in err.value.diag.message_primary
        assert err.value.diag.message_hint
    else:
        assert alone.stdout.startswith(b"error invalid_model")


def test_no_descriptor_or_process_leaks(user):
    """Accepted, rejected, crashed and timed-out checks leave the backend with the descriptors it
    had before, and no child."""
    backend = one(user, "SELECT pg_backend_pid()")
    fd_dir = f"/proc/{backend}/fd"
    if not os.access(fd_dir, os.R_OK):
        pytest.skip("cannot read the backend's descriptors")
    one(user, "SELECT %s::flock.model IS NOT NULL", (psycopg2.Binary(onnx_builders.linear_regressor([4.0], 1.0)),))
    before = sorted(os.listdir(fd_dir))
    for k in range(3):
        one(user, "SELECT %s::flock.model IS NOT NULL",
            (psycopg2.Binary(onnx_builders.linear_regressor([float(k), 1.0], 0.5)),))
        for name in ("layernorm_axis_minus_100", "maxpool_zero_stride", "slow_maxpool"):
            with pytest.raises(psycopg2.Error):
                one(user, "SELECT %s::flock.model IS NOT NULL", (psycopg2.Binary(HOSTILE[name]()),))
    assert sorted(os.listdir(fd_dir)) == before
    assert children_of(backend) == []
