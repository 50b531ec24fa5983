"""The governance commands of the `flockctl` CLI: `register` with training capture (model and training
run in one transaction) and `lineage` (text table, Graphviz dot, OpenLineage JSON)."""
import hashlib
import json
import re
import uuid

import pytest

from test_cli import (REGISTERED, assert_clean_error, env, flock_bin, offline_env, ok,  # noqa: F401 (fixtures)
                      onnx_model, parse_table, rows, run, unique)

psycopg2 = pytest.importorskip("psycopg2")

RECORDED = re.compile(r"^recorded training run (?P<run_id>[0-9a-f-]{36})(?: on (?P<datasets>.+))?$")


@pytest.fixture(scope="module")
def training_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("training")
    (d / "train.py").write_text("# trains the model\nimport sklearn\nprint('fit')\n")
    (d / "params.json").write_text('{"C": 0.5, "penalty": "l2"}')
    (d / "metrics.json").write_text('{"accuracy": 0.93, "rows": 120}')
    (d / "env.json").write_text('{"python": "3.11", "scikit-learn": "1.2.1"}')
    (d / "list.json").write_text("[1, 2]")
    (d / "broken.json").write_text('{"C": ')
    return d


@pytest.fixture
def dataset(conn):
    name = unique("ds")
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS cli_rows AS SELECT g AS id, g * 1.5 AS x FROM generate_series(1, 20) g")
        cur.execute("SELECT flock.snapshot_dataset(%s, 'SELECT * FROM cli_rows')", (name,))
        return cur.fetchone()[0]


def test_help_lists_the_governance_commands_and_options(flock_bin, offline_env):
    assert "lineage REF" in ok(flock_bin, ["--help"], offline_env)
    text = ok(flock_bin, ["register", "--help"], offline_env)
    for option in ("--dataset", "--training-code", "--code-ref", "--params", "--metrics", "--environment"):
        assert option in text
    text = ok(flock_bin, ["lineage", "--help"], offline_env)
    assert text.startswith("Usage: flockctl lineage") and "--dot" in text and "--openlineage" in text
    assert ok(flock_bin, ["help", "lineage"], offline_env) == text


@pytest.mark.parametrize("args, needle", [
    (["lineage"], "needs a REF"),
    (["lineage", "a", "b"], "unexpected argument 'b'"),
    (["lineage", "m", "--direction", "sideways"], "unknown --direction 'sideways'"),
    (["lineage", "m", "--dot", "--openlineage"], "alternatives"),
    (["lineage", "m", "--dot=yes"], "does not take a value"),
    (["models", "--dot"], "unknown option '--dot'"),
    (["register", "m.onnx", "--name", "m", "--dataset", "a@1,,b@1"], "empty item"),
    (["register", "-", "--name", "m", "--params", "-"], "only one of the files"),
])
def test_usage_errors(flock_bin, offline_env, args, needle):
    p = run(flock_bin, args, offline_env)
    assert_clean_error(p, 2)
    assert needle in p.stderr.splitlines()[0], p.stderr


def test_unreadable_capture_files(flock_bin, offline_env, onnx_model, tmp_path):
    missing = tmp_path / "no-such-params.json"
    p = run(flock_bin, ["register", str(onnx_model), "--name", "m", "--params", str(missing)], offline_env)
    assert_clean_error(p, 2)
    assert str(missing) in p.stderr and "No such file or directory" in p.stderr


def test_register_with_training_capture(flock_bin, env, conn, onnx_model, training_files, dataset):
    name = unique("captured")
    d = training_files
    out = ok(flock_bin, ["register", str(onnx_model), "--name", name, "--description", "with capture",
                         "--dataset", dataset, "--training-code", str(d / "train.py"), "--params", str(d / "params.json"),
                         "--metrics", str(d / "metrics.json"), "--environment", str(d / "env.json"),
                         "--code-ref", "git+https://example.org/ml.git@4f2a9c1"], env)
    first, second = out.strip().splitlines()
    m = REGISTERED.match(first)
    assert m and m["name"] == name and m["version"] == "1", out
    r = RECORDED.match(second)
    assert r and r["datasets"] == dataset, out
    [(model_name, version, code, code_sha, code_ref, params, metrics, environment, logged_by)] = rows(
        conn, "SELECT model_name, model_version, code, code_sha256, code_ref, params, metrics, environment, logged_by "
              "FROM flock.training_runs WHERE run_id = %s", r["run_id"])
    assert (model_name, version, logged_by) == (name, 1, "postgres")
    assert code == (d / "train.py").read_text() and code_sha == hashlib.sha256(code.encode()).hexdigest()
    assert code_ref == "git+https://example.org/ml.git@4f2a9c1"
    assert params == {"C": 0.5, "penalty": "l2"} and metrics == {"accuracy": 0.93, "rows": 120}
    assert environment == {"python": "3.11", "scikit-learn": "1.2.1"}
    ds_name, ds_version = dataset.split("@")
    assert rows(conn, "SELECT dataset_name, dataset_version FROM flock.training_inputs i "
                      "JOIN flock.training_runs r ON r.id = i.run_id WHERE r.run_id = %s", r["run_id"]) == [
        (ds_name, int(ds_version))]

    # Several data sets; the code path is the default code reference.
    other = rows(conn, "SELECT flock.snapshot_dataset(%s, 'SELECT 1 AS one')", unique("ds"))[0][0]
    out = ok(flock_bin, ["register", str(onnx_model), "--name", name, "--dataset", f"{dataset}, {other}",
                         "--training-code", str(d / "train.py")], env)
    r = RECORDED.match(out.strip().splitlines()[1])
    assert r and r["datasets"] == f"{dataset}, {other}"
    assert rows(conn, "SELECT model_version, code_ref, params FROM flock.training_runs WHERE run_id = %s",
                r["run_id"]) == [(2, str(d / "train.py"), {})]
    assert rows(conn, "SELECT count(*) FROM flock.training_inputs i JOIN flock.training_runs r ON r.id = i.run_id "
                      "WHERE r.run_id = %s", r["run_id"]) == [(2,)]


@pytest.mark.parametrize("extra, sqlstate", [
    (["--dataset", "no_such_dataset@1"], "42704"),
    (["--params", "list.json"], "22023"),
    (["--metrics", "broken.json"], "22P02"),
])
def test_a_failed_capture_registers_nothing(flock_bin, env, conn, onnx_model, training_files, extra, sqlstate):
    name = unique("atomic")
    args = [a if not a.endswith(".json") else str(training_files / a) for a in extra]
    p = run(flock_bin, ["register", str(onnx_model), "--name", name, *args], env)
    assert_clean_error(p, 1)
    assert f"(SQLSTATE {sqlstate})" in p.stderr, p.stderr
    assert rows(conn, "SELECT count(*) FROM flock.models WHERE name = %s", name) == [(0,)]
    assert rows(conn, "SELECT count(*) FROM flock.training_runs WHERE model_name = %s", name) == [(0,)]


@pytest.fixture
def chain(flock_bin, env, conn, onnx_model, training_files, dataset):
    name = unique("lin")
    out = ok(flock_bin, ["register", str(onnx_model), "--name", name, "--dataset", dataset,
                         "--training-code", str(training_files / "train.py"),
                         "--metrics", str(training_files / "metrics.json")], env)
    run_id = RECORDED.match(out.strip().splitlines()[1])["run_id"]
    with conn.cursor() as cur:
        cur.execute("SELECT flock.set_alias(%s, 'champion', 1, 'first')", (name,))
    return {"name": name, "dataset": dataset, "run_id": run_id}


def test_lineage_text(flock_bin, env, conn, chain):
    name, ds, run_id = chain["name"], chain["dataset"], chain["run_id"]
    out = ok(flock_bin, ["lineage", f"{name}@champion"], env)
    header, table = out.split("\n", 1)
    assert header == f"lineage of model {name}@1 (upstream and downstream):"
    names, parsed = parse_table(table)
    assert names == ["depth", "from", "relation", "to", "at", "by"]
    assert [(r["depth"], r["from"], r["relation"], r["to"]) for r in parsed] == [
        ("-3", "table public.cli_rows", "snapshot_into", f"dataset {ds}"),
        ("-2", f"dataset {ds}", "used_by", f"training_run {run_id}"),
        ("-1", f"training_run {run_id}", "produced", f"model {name}@1"),
        ("1", f"model {name}@1", "aliased_as", f"alias {name}@champion"),
    ]
    assert all(r["by"] == "postgres" and re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", r["at"]) for r in parsed)

    _, up = parse_table(ok(flock_bin, ["lineage", name, "--direction", "up"], env).split("\n", 1)[1])
    assert [r["depth"] for r in up] == ["-3", "-2", "-1"]
    _, down = parse_table(ok(flock_bin, ["lineage", f"dataset:{ds}", "--direction=downstream"], env).split("\n", 1)[1])
    assert [(r["depth"], r["relation"]) for r in down] == [("1", "used_by"), ("2", "produced"), ("3", "aliased_as")]

    # A model with nothing recorded says so.
    bare = unique("bare")
    with conn.cursor() as cur:
        cur.execute("SELECT flock.register_model(%s, (SELECT model::bytea FROM flock.models WHERE name = %s))",
                    (bare, name))
    assert ok(flock_bin, ["lineage", bare], env) == f"no lineage recorded for model {bare}@1\n"


def test_lineage_dot(flock_bin, env, chain):
    name, ds, run_id = chain["name"], chain["dataset"], chain["run_id"]
    out = ok(flock_bin, ["lineage", name, "--dot"], env)
    assert out.startswith("digraph lineage {\n") and out.endswith("}\n")
    nodes = dict(re.findall(r'^  "([^"]+)" \[label="[^"]*", shape=(\w+)', out, re.M))
    assert nodes == {"table:public.cli_rows": "cylinder", f"dataset:{ds}": "cylinder",
                     f"training_run:{run_id}": "ellipse", f"model:{name}@1": "box3d",
                     f"alias:{name}@champion": "cds"}
    arrows = re.findall(r'^  "([^"]+)" -> "([^"]+)" \[label="(\w+)"\];$', out, re.M)
    assert sorted(arrows) == sorted([
        ("table:public.cli_rows", f"dataset:{ds}", "snapshot_into"),
        (f"dataset:{ds}", f"training_run:{run_id}", "used_by"),
        (f"training_run:{run_id}", f"model:{name}@1", "produced"),
        (f"model:{name}@1", f"alias:{name}@champion", "aliased_as"),
    ])
    assert f'"model:{name}@1" [label="model\\n{name}@1", shape=box3d, penwidth=2];' in out  # the start node


def test_lineage_openlineage(flock_bin, env, conn, chain):
    events = json.loads(ok(flock_bin, ["lineage", f"{chain['name']}@champion", "--openlineage"], env))
    [(expected,)] = rows(conn, "SELECT flock.openlineage(%s)", f"{chain['name']}@champion")
    assert events == expected
    assert [e["job"]["name"] for e in events] == [f"flock.snapshot_dataset.{chain['dataset'].split('@')[0]}",
                                                  f"flock.train.{chain['name']}"]
    for e in events:
        assert {"eventTime", "producer", "schemaURL", "run", "job", "inputs", "outputs"} <= set(e)
        uuid.UUID(e["run"]["runId"])
    assert events[1]["run"]["runId"] == chain["run_id"]


def test_lineage_errors(flock_bin, env, conn):
    missing = unique("nosuch")
    p = run(flock_bin, ["lineage", missing], env)
    assert_clean_error(p, 1)
    assert f'model "{missing}" does not exist' in p.stderr and "(SQLSTATE 42704)" in p.stderr
    p = run(flock_bin, ["lineage", f"dataset:{missing}", "--dot"], env)
    assert_clean_error(p, 1)
    assert "(SQLSTATE 42704)" in p.stderr


def test_lineage_without_the_extension(flock_bin, cluster):
    p = run(flock_bin, ["-d", "postgres", "lineage", "m"], cluster.env())
    assert_clean_error(p, 1)
    assert "flock extension is not installed" in p.stderr
