"""Tests of the `flockctl` command-line tool against a private PostgreSQL cluster with the extension.

The binary comes from $FLOCK_CLI, else `flockctl` on PATH; without one every test fails (never
skips) saying so. Run with: FLOCK_CLI=build/cli/flockctl /usr/bin/python3 -m pytest tests/cli
"""
import json
import os
import re
import shutil
import subprocess
import uuid

import pytest

psycopg2 = pytest.importorskip("psycopg2")

REGISTERED = re.compile(r"^registered (?P<name>\S+)@(?P<version>\d+) \((?P<format>[^,]+), sha256 (?P<sha>[0-9a-f]{8})…\)$")
ERROR_LINE = re.compile(r"^(flockctl: error: .+|detail: .*|hint: .*|\(SQLSTATE [0-9A-Z]{5}\)|flockctl: (notice|warning|info): .*)$")


# --- fixtures and helpers ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def flock_bin():
    path = os.environ.get("FLOCK_CLI") or shutil.which("flockctl")
    if not path:
        pytest.fail("the flockctl CLI was not found: set FLOCK_CLI to the built binary "
                    "(e.g. FLOCK_CLI=build/cli/flockctl) or put `flockctl` on PATH", pytrace=False)
    path = os.path.abspath(path)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"the flockctl CLI {path} is not an executable file", pytrace=False)
    # Make sure this is ours (util-linux's file-locking `flock` is a different program).
    try:
        version = subprocess.run([path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        pytest.fail(f"cannot run {path} --version: {e}", pytrace=False)
    if not re.match(r"flockctl \d+\.\d+\.\d+", version):
        pytest.fail(f"{path} is not the Flock CLI (--version says {version.strip()!r}); set FLOCK_CLI "
                    "to the built binary, e.g. FLOCK_CLI=build/cli/flockctl", pytrace=False)
    return path


def _clean_env(**extra):
    """The environment without any libpq settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra)
    return env


@pytest.fixture
def offline_env(tmp_path):
    """An environment whose libpq defaults point at a socket directory with no server in it, so a
    command that should fail before connecting cannot accidentally succeed or reach a server."""
    return _clean_env(PGHOST=str(tmp_path), PGPORT="1", PGUSER="nobody", PGDATABASE="nowhere",
                      PGCONNECT_TIMEOUT="5")


@pytest.fixture
def env(cluster, dbname):
    return cluster.env(dbname)


def run(flock_bin, args, env, input=None):
    """Runs flockctl; returns the CompletedProcess with text stdout and stderr."""
    p = subprocess.run([flock_bin] + list(args), env=env, input=input, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    p.stdout = p.stdout.decode("utf-8")
    p.stderr = p.stderr.decode("utf-8")
    return p


def ok(flock_bin, args, env, input=None):
    p = run(flock_bin, args, env, input)
    assert p.returncode == 0, f"flockctl {' '.join(args)} failed ({p.returncode}):\n{p.stderr}"
    return p.stdout


def assert_clean_error(p, status):
    """Exit `status`, nothing on stdout, stderr only in the documented shape (no libpq noise)."""
    assert p.returncode == status, f"expected exit {status}, got {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert lines and lines[0].startswith("flockctl: error: "), p.stderr
    if status == 1:
        for line in lines:
            assert ERROR_LINE.match(line), f"unexpected stderr line {line!r} in:\n{p.stderr}"


def unique(prefix="m"):
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def rows(conn, sql, *args):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def server_error(conn, sql, *args):
    """Runs `sql` expecting an error; returns (primary message, SQLSTATE)."""
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.Error) as exc:
            cur.execute(sql, args)
    return exc.value.diag.message_primary, exc.value.pgcode


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory):
    """A LinearRegressor (ai.onnx.ml) with a float input [N, 3] and a float output [N, 1]."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    node = helper.make_node("LinearRegressor", ["input"], ["variable"], domain="ai.onnx.ml",
                            coefficients=[0.5, -1.0, 0.0], intercepts=[0.25], targets=1)
    graph = helper.make_graph(
        [node], "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])])
    model = helper.make_model(graph, producer_name="flock-cli-test",
                              opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    # NUL bytes (the 0.0 coefficient) make the upload fail unless it is sent as binary.
    assert b"\x00" in data
    path = tmp_path_factory.mktemp("models") / "linear.onnx"
    path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def xgboost_model(tmp_path_factory):
    """An XGBoost regressor trained on 20 rows of 3 features, saved as JSON."""
    np = pytest.importorskip("numpy")
    xgb = pytest.importorskip("xgboost")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    y = x @ np.array([1.0, 2.0, -1.0], dtype=np.float32) + 0.5
    booster = xgb.train({"objective": "reg:squarederror", "max_depth": 2, "eta": 0.5, "base_score": 0.5},
                        xgb.DMatrix(x, label=y, feature_names=["a", "b", "c"]), num_boost_round=3)
    path = tmp_path_factory.mktemp("models") / "boost.json"
    booster.save_model(str(path))
    json.loads(path.read_text())  # really JSON
    return path


def register(flock_bin, env, path, name, *extra):
    out = ok(flock_bin, ["register", str(path), "--name", name, *extra], env)
    m = REGISTERED.match(out.strip())
    assert m, f"unexpected register output: {out!r}"
    assert m["name"] == name
    return m


def parse_table(out):
    """Parses the `flockctl models` table using the dashed rule under the header for column spans."""
    lines = out.splitlines()
    assert len(lines) >= 2, out
    header, rule = lines[0], lines[1]
    spans = [m.span() for m in re.finditer(r"-+", rule)]
    def cells(line):
        return [line[a:(spans[i + 1][0] if i + 1 < len(spans) else len(line))].strip()
                for i, (a, _) in enumerate(spans)]
    names = cells(header)
    return names, [dict(zip(names, cells(line))) for line in lines[2:]]


# --- without a database ------------------------------------------------------------------------

def test_version(flock_bin, offline_env):
    p = run(flock_bin, ["--version"], offline_env)
    assert p.returncode == 0, p.stderr
    assert re.match(r"^flockctl \d+\.\d+\.\d+", p.stdout), p.stdout


def test_help(flock_bin, offline_env):
    out = ok(flock_bin, ["--help"], offline_env)
    for word in ["register", "models", "info", "drop", "--dbname", "--host", "--port", "--username"]:
        assert word in out
    for cmd in ["register", "models", "info", "drop"]:
        text = ok(flock_bin, [cmd, "--help"], offline_env)
        assert text.startswith(f"Usage: flockctl {cmd}"), text
        assert ok(flock_bin, ["help", cmd], offline_env) == text
    assert "--features" in ok(flock_bin, ["register", "--help"], offline_env)
    assert "--version" in ok(flock_bin, ["drop", "--help"], offline_env)


def test_installed_name_leaves_util_linux_flock_alone(flock_bin):
    """The client is installed as flockctl; `flock` on PATH stays util-linux's file-locking tool,
    which cron jobs and shell scripts call by that name."""
    assert os.path.basename(flock_bin) == "flockctl"
    util = shutil.which("flock")
    if util is None:
        pytest.skip("no flock(1) on this machine (util-linux not installed)")
    version = subprocess.run([util, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=30).stdout
    assert "util-linux" in version, f"`flock` on PATH is {util}: {version.strip()!r}"


@pytest.mark.parametrize("args, needle", [
    ([], "no command"),
    (["bogus"], "unknown command 'bogus'"),
    (["--bogus"], "unknown option '--bogus'"),
    (["models", "--name", "x"], "unknown option '--name'"),
    (["info"], "needs a model REF"),
    (["info", "a", "b"], "unexpected argument 'b'"),
    (["drop"], "needs a model NAME"),
    (["drop", "m", "--version", "abc"], "not a version number"),
    (["drop", "m", "--version", "0"], "not a version number"),
    (["drop", "m@1", "--version", "2"], "different versions"),
    (["register"], "needs a model FILE"),
    (["register", "model.onnx"], "needs --name"),
    (["register", "model.onnx", "--name"], "option '--name' needs a value"),
    (["register", "model.onnx", "--name", ""], "must not be empty"),
    (["register", "model.onnx", "--name", "m", "--format", "pickle"], "unknown --format 'pickle'"),
    (["register", "model.onnx", "--name", "m", "--features", "a,,b"], "empty feature name"),
    (["-h"], "option '-h' needs a value"),
    (["models", "--dbname"], "option '--dbname' needs a value"),
    (["--version=3"], "does not take a value"),
])
def test_usage_errors(flock_bin, offline_env, args, needle):
    p = run(flock_bin, args, offline_env)
    assert_clean_error(p, 2)
    assert needle in p.stderr.splitlines()[0], p.stderr
    assert "--help" in p.stderr  # points to the help


def test_unreadable_model_file(flock_bin, offline_env, tmp_path):
    missing = tmp_path / "no-such-model.onnx"
    p = run(flock_bin, ["register", str(missing), "--name", "m"], offline_env)
    assert_clean_error(p, 2)
    assert str(missing) in p.stderr and "No such file or directory" in p.stderr

    p = run(flock_bin, ["register", str(tmp_path), "--name", "m"], offline_env)
    assert_clean_error(p, 2)
    assert str(tmp_path) in p.stderr and "Is a directory" in p.stderr

    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.onnx"
        locked.write_bytes(b"x")
        locked.chmod(0)
        p = run(flock_bin, ["register", str(locked), "--name", "m"], offline_env)
        assert_clean_error(p, 2)
        assert str(locked) in p.stderr and "Permission denied" in p.stderr


def test_connection_failure(flock_bin, offline_env, tmp_path):
    p = run(flock_bin, ["models"], offline_env)
    assert_clean_error(p, 1)
    first = p.stderr.splitlines()[0]
    assert "connection to server" in first and str(tmp_path) in first, p.stderr
    assert len(p.stderr.splitlines()) <= 3, p.stderr

    # Options override the environment.
    p = run(flock_bin, ["-h", str(tmp_path / "elsewhere"), "-p", "5", "info", "m"], offline_env)
    assert_clean_error(p, 1)
    assert str(tmp_path / "elsewhere") in p.stderr and ".s.PGSQL.5" in p.stderr, p.stderr

    p = run(flock_bin, ["-d", "host=/tmp bogus_option=1", "models"], offline_env)
    assert_clean_error(p, 1)
    assert "bogus_option" in p.stderr


def test_unknown_database_and_missing_extension(flock_bin, cluster):
    p = run(flock_bin, ["-d", "no_such_database", "models"], cluster.env())
    assert_clean_error(p, 1)
    assert 'database "no_such_database" does not exist' in p.stderr

    # The cluster's `postgres` database never gets the extension.
    for args in (["models"], ["info", "m"], ["drop", "m"]):
        p = run(flock_bin, ["-d", "postgres", *args], cluster.env())
        assert_clean_error(p, 1)
        assert "flock extension is not installed" in p.stderr and "CREATE EXTENSION flock" in p.stderr


# --- against a database with the extension -------------------------------------------------------

def test_register_onnx(flock_bin, env, conn, onnx_model):
    name = unique("onnx")
    m = register(flock_bin, env, onnx_model, name, "--format", "onnx")
    assert m["version"] == "1" and m["format"] == "onnx"
    [(fmt, sha)] = rows(conn, "SELECT format, sha256 FROM flock.models WHERE name = %s AND version = 1", name)
    assert fmt == "onnx" and sha.startswith(m["sha"])

    # auto-detection gives the same format
    m = register(flock_bin, env, onnx_model, unique("onnx"))
    assert m["format"] == "onnx"


def test_register_xgboost_json(flock_bin, env, conn, xgboost_model):
    for extra in ([], ["--format", "xgboost"]):
        name = unique("xgb")
        m = register(flock_bin, env, xgboost_model, name, *extra)
        assert m["version"] == "1" and "xgboost" in m["format"]
        [(fmt, sha)] = rows(conn, "SELECT format, sha256 FROM flock.models WHERE name = %s", name)
        assert fmt == m["format"] and sha.startswith(m["sha"])


def test_register_from_stdin(flock_bin, env, conn, onnx_model):
    name = unique("stdin")
    out = ok(flock_bin, ["register", "-", "--name", name], env, input=onnx_model.read_bytes())
    assert REGISTERED.match(out.strip()) and f"{name}@1" in out
    assert rows(conn, "SELECT version FROM flock.models WHERE name = %s", name) == [(1,)]


def test_versions_count_up(flock_bin, env, conn, onnx_model):
    name = unique("ver")
    versions = [register(flock_bin, env, onnx_model, name)["version"] for _ in range(3)]
    assert versions == ["1", "2", "3"]
    assert rows(conn, "SELECT version FROM flock.models WHERE name = %s ORDER BY version", name) == [(1,), (2,), (3,)]


def test_description_and_features(flock_bin, env, conn, onnx_model):
    name = unique("desc")
    register(flock_bin, env, onnx_model, name, "--description", "monthly churn, v1 — ünïcode",
             "--features", "age, income,tenure")
    [(desc,)] = rows(conn, "SELECT description FROM flock.models WHERE name = %s", name)
    assert desc == "monthly churn, v1 — ünïcode"
    [(info, signature)] = rows(conn, "SELECT flock.model_info(%s), signature FROM flock.models WHERE name = %s",
                               name, name)
    stored = json.dumps(info) + json.dumps(signature)
    for feature in ("age", "income", "tenure"):
        assert f'"{feature}"' in stored, stored


def test_connection_options(flock_bin, cluster, dbname, onnx_model):
    name = unique("conn")
    register(flock_bin, cluster.env(dbname), onnx_model, name)
    bare = _clean_env()
    variants = [
        ["-h", cluster.sockdir, "-p", str(cluster.port), "-U", "postgres", "-d", dbname],
        ["--host", cluster.sockdir, "--port", str(cluster.port), "--username=postgres", f"--dbname={dbname}"],
        ["-d", f"host={cluster.sockdir} port={cluster.port} user=postgres dbname={dbname}"],
        ["-d", f"postgresql://postgres@/{dbname}?host={cluster.sockdir}&port={cluster.port}"],
    ]
    for conn_args in variants:
        out = ok(flock_bin, ["models", name, *conn_args], bare)  # options after the command
        assert name in out
        out = ok(flock_bin, [*conn_args, "models", name], bare)  # and before it
        assert name in out


def test_models_listing(flock_bin, env, conn, onnx_model, xgboost_model):
    a, b = unique("list_a"), unique("list_b")
    register(flock_bin, env, onnx_model, a, "--description", "first\nline two")
    register(flock_bin, env, onnx_model, a)
    register(flock_bin, env, xgboost_model, b)

    names, table = parse_table(ok(flock_bin, ["models"], env))
    assert names == ["name", "version", "format", "sha256", "created_by", "created_at", "description"]
    expected = rows(conn, "SELECT name, version, format, sha256, created_by, description FROM flock.models "
                          "ORDER BY name, version")
    assert [(r["name"], int(r["version"])) for r in table] == [(e[0], e[1]) for e in expected]
    for row, (name, version, fmt, sha, created_by, desc) in zip(table, expected):
        assert row["format"] == fmt
        assert row["sha256"] == sha[:12] and re.fullmatch(r"[0-9a-f]{12}", row["sha256"])
        assert row["created_by"] == created_by
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row["created_at"])
    [first] = [r for r in table if r["name"] == a and r["version"] == "1"]
    assert first["description"] == "first line two"

    names, table = parse_table(ok(flock_bin, ["models", a], env))
    assert [(r["name"], r["version"]) for r in table] == [(a, "1"), (a, "2")]

    missing = unique("missing")
    p = run(flock_bin, ["models", missing], env)
    assert_clean_error(p, 1)
    assert missing in p.stderr


def test_info_json(flock_bin, env, conn, onnx_model):
    name = unique("info")
    register(flock_bin, env, onnx_model, name, "--description", "for info")
    register(flock_bin, env, onnx_model, name)
    for ref in (name, f"{name}@1", f"{name}@2"):
        out = ok(flock_bin, ["info", ref], env)
        parsed = json.loads(out)
        assert isinstance(parsed, dict) and parsed
        [(expected,)] = rows(conn, "SELECT flock.model_info(%s)", ref)
        assert parsed == expected
    assert "\n    " in out  # pretty-printed


def test_info_unknown_model(flock_bin, env, conn):
    ref = unique("nosuch")
    p = run(flock_bin, ["info", ref], env)
    assert_clean_error(p, 1)
    try:
        [(value,)] = rows(conn, "SELECT flock.model_info(%s)", ref)
    except psycopg2.Error as e:  # the server refuses: its message and SQLSTATE are shown
        assert e.diag.message_primary in p.stderr
        assert f"(SQLSTATE {e.pgcode})" in p.stderr
    else:  # the server returns NULL: the CLI says the model is not there
        assert value is None and ref in p.stderr


@pytest.mark.parametrize("fmt, data", [
    ("onnx", b"this is not a protobuf\x00\x01\x02\xff\xfe"),
    ("xgboost", b'{"learner": {"gradient_booster": '),
    ("auto", b"\x00\x01garbage\x02"),
])
def test_malformed_model(flock_bin, env, conn, tmp_path, fmt, data):
    path = tmp_path / "broken.model"
    path.write_bytes(data)
    name = unique("broken")
    p = run(flock_bin, ["register", str(path), "--name", name, "--format", fmt], env)
    assert_clean_error(p, 1)
    message, sqlstate = server_error(conn, "SELECT flock.register_model(%s, %s, %s)", name, psycopg2.Binary(data), fmt)
    assert p.stderr.startswith(f"flockctl: error: {message}\n"), p.stderr
    assert f"(SQLSTATE {sqlstate})" in p.stderr
    assert rows(conn, "SELECT count(*) FROM flock.models WHERE name = %s", name) == [(0,)]


def test_invalid_model_name(flock_bin, env, conn, onnx_model):
    bad = "no spaces allowed!"
    p = run(flock_bin, ["register", str(onnx_model), "--name", bad], env)
    assert_clean_error(p, 1)
    message, sqlstate = server_error(conn, "SELECT flock.register_model(%s, %s)", bad,
                                     psycopg2.Binary(onnx_model.read_bytes()))
    assert p.stderr.startswith(f"flockctl: error: {message}\n"), p.stderr
    assert f"(SQLSTATE {sqlstate})" in p.stderr


def test_drop(flock_bin, env, conn, onnx_model):
    name = unique("drop")
    for _ in range(3):
        register(flock_bin, env, onnx_model, name)

    assert ok(flock_bin, ["drop", name, "--version", "2"], env).strip() == f"dropped {name}@2"
    assert rows(conn, "SELECT version FROM flock.models WHERE name = %s ORDER BY 1", name) == [(1,), (3,)]

    p = run(flock_bin, ["drop", name, "--version", "2"], env)
    assert_clean_error(p, 1)
    assert name in p.stderr

    assert ok(flock_bin, ["drop", f"{name}@1"], env).strip() == f"dropped {name}@1"
    assert rows(conn, "SELECT version FROM flock.models WHERE name = %s", name) == [(3,)]

    register(flock_bin, env, onnx_model, name)
    assert ok(flock_bin, ["drop", name], env).strip() == f"dropped {name} (2 versions)"
    assert rows(conn, "SELECT count(*) FROM flock.models WHERE name = %s", name) == [(0,)]

    p = run(flock_bin, ["drop", name], env)
    assert_clean_error(p, 1)
    message, sqlstate = server_error(conn, "SELECT flock.drop_model(%s)", name)
    assert p.stderr.startswith(f"flockctl: error: {message}\n"), p.stderr
    assert f"(SQLSTATE {sqlstate})" in p.stderr
