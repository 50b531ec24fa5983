"""`flockctl train` (issue 16): flock.train from the shell, with the same lineage and errors."""
import json

import pytest

from test_cli import assert_clean_error, env, flock_bin, offline_env, ok, rows, run, unique  # noqa: F401 (fixtures)

psycopg2 = pytest.importorskip("psycopg2")


@pytest.fixture
def conn(cluster, dbname):
    c = psycopg2.connect(cluster.dsn(dbname))
    c.autocommit = True
    with c.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS cli_train AS SELECT g AS id, (g % 7)::real AS a, (g % 5)::float8 AS b, "
                    "((g % 7) * 2 + (g % 5))::float8 AS y FROM generate_series(1, 300) g")
    yield c
    c.close()


def test_help_lists_train(flock_bin, offline_env):
    assert "train NAME --data DATA" in ok(flock_bin, ["--help"], offline_env)
    assert "train NAME --data DATA --target COLUMN" in ok(flock_bin, ["train", "--help"], offline_env)
    assert "num_boost_round" in ok(flock_bin, ["train", "--help"], offline_env)


def test_train_registers_and_records(flock_bin, env, conn):
    name = unique("cli_train")
    out = ok(flock_bin, ["train", name, "--data", "SELECT a, b, y FROM cli_train", "--target", "y",
                         "--params", '{"num_boost_round": 5, "max_depth": 3}', "--seed", "4",
                         "--notice-rounds", "5"], env)
    lines = out.splitlines()
    assert lines[0] == f"trained {name}@1 on data set {name}@1"
    metrics = json.loads(lines[1].removeprefix("metrics: "))
    assert {"rmse", "mae", "r2", "training_seconds"} <= metrics.keys()
    recorded = rows(conn, "SELECT params->'seed', code FROM flock.training_runs WHERE model_name = %s", name)
    assert recorded[0][0] == 4 and "flock.train" in recorded[0][1]
    lin = ok(flock_bin, ["train", unique("cli_ridge"), "--data", "cli_train", "--target", "y", "--algorithm", "linear",
                         "--features", "a,b", "--params", '{"alpha": 0.5}', "--test-fraction", "0"], env)
    assert lin.startswith("trained cli_ridge_")


def test_train_errors_are_the_servers(flock_bin, env, conn):
    p = run(flock_bin, ["train", unique("cli_bad"), "--data", "cli_train", "--target", "nope"], env)
    assert_clean_error(p, 1)
    assert "(SQLSTATE 42703)" in p.stderr and "hint: " in p.stderr
    p = run(flock_bin, ["train", unique("cli_bad"), "--data", "cli_train"], env)
    assert_clean_error(p, 2)
