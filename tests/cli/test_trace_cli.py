"""`flockctl trace REF --row 'SQL'`: one prediction traced (flock.trace), printed for a terminal."""
import json
import os
import re

import pytest

from test_cli import assert_clean_error, env, flock_bin, ok, run  # noqa: F401 (fixtures)

psycopg2 = pytest.importorskip("psycopg2")

MODELS_DIR = os.environ.get("FLOCK_MODELS_DIR", "")
ROW = ("SELECT 5.1::real AS sepal_length, 3.5::real AS sepal_width, NULL::real AS petal_length, "
       "0.2::real AS petal_width")


@pytest.fixture(scope="module")
def iris(cluster, dbname):
    path = os.path.join(MODELS_DIR, "iris_xgb.json")
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run tools/models/make_models.py and set FLOCK_MODELS_DIR")
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT flock.register_model('iris_trace', %s, 'xgboost')", (open(path, "rb").read(),))
        cur.execute("CREATE TABLE flowers (id int, sepal_length real, sepal_width real, petal_length real, "
                    "petal_width real)")
        cur.execute("INSERT INTO flowers VALUES (1, 5.1, 3.5, 1.4, 0.2), (2, 6.7, 3.0, 5.2, 2.3)")
    yield conn
    conn.close()


def _sql(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def test_trace_prints_inputs_paths_and_the_prediction(flock_bin, env, iris):
    out = ok(flock_bin, ["trace", "iris_trace", "--row", ROW], env)
    trace = _sql(iris, f"SELECT flock.trace('iris_trace', r) FROM ({ROW}) r")
    assert f"model      iris_trace@1 (xgboost, classification), sha256 {trace['model']['sha256']}" in out
    assert re.search(r"^  petal_length += NULL$", out, re.M)
    assert re.search(r"^  sepal_width += 3\.5$", out, re.M)
    (step,) = [s for s in trace["steps"] if "trees" in s]
    tree_lines = re.findall(r"^    tree (\d+):.* leaf (\d+), class (\d+) \+= \S+$", out, re.M)
    assert [(int(t), int(leaf)) for t, leaf, _ in tree_lines] == [(t["tree"], t["leaf"]) for t in step["trees"]]
    assert "petal_length is missing, default -> " in out
    label = _sql(iris, f"SELECT flock.predict_label('iris_trace', r) FROM ({ROW}) r")
    assert re.search(rf"^prediction  label {label}  probabilities \[", out, re.M)
    assert "SUM over 45 trees" in out and "post_transform SOFTMAX" in out


def test_json_prints_the_document(flock_bin, env, iris):
    out = ok(flock_bin, ["trace", "iris_trace", "--json", "--row", "SELECT * FROM flowers WHERE id = 2"], env)
    want = _sql(iris, "SELECT flock.trace('iris_trace', f) FROM flowers f WHERE id = 2")
    assert json.loads(out) == want


def test_max_values_bounds_the_listing(flock_bin, env, iris):
    out = ok(flock_bin, ["trace", "iris_trace", "--max-values", "6", "--row", "SELECT * FROM flowers WHERE id = 1"],
             env)
    assert "(truncated: more than 6 values; raise --max-values)" in out
    assert "trees in all (raise --max-values to list them)" in out


def test_errors(flock_bin, env, iris):
    p = run(flock_bin, ["trace", "iris_trace"], env)
    assert_clean_error(p, 2)
    assert "--row" in p.stderr
    p = run(flock_bin, ["trace", "iris_trace", "--max-values", "-1", "--row", ROW], env)
    assert_clean_error(p, 2)
    p = run(flock_bin, ["trace", "iris_trace", "--row", "SELECT * FROM flowers"], env)
    assert_clean_error(p, 1)
    assert "several rows" in p.stderr and "hint: " in p.stderr
    p = run(flock_bin, ["trace", "iris_trace", "--row", "SELECT * FROM flowers WHERE false"], env)
    assert_clean_error(p, 1)
    p = run(flock_bin, ["trace", "no_such_model", "--row", ROW], env)
    assert_clean_error(p, 1)
    assert "(SQLSTATE 42704)" in p.stderr and "hint: " in p.stderr
    p = run(flock_bin, ["trace", "iris_trace", "--row", "SELECT 1 AS sepal_length"], env)
    assert_clean_error(p, 1)
    assert "(SQLSTATE 42703)" in p.stderr
