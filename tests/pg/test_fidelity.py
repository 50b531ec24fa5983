"""Fidelity: every test model, every row — the prediction from SQL equals the source library's own.

Models and oracles come from tools/models/make_models.py (sklearn / xgboost predictions on the
features exactly as the database passes them). Tolerance: |flock - oracle| <= 1e-5 * max(|oracle|, 1),
i.e. 1e-5 relative, with values below 1 (probabilities) held to 1e-5 absolute, since the models
compute in float32 as their ONNX types say. Labels must be equal.
"""
import json
import os

import psycopg2
import pytest

MODELS_DIR = os.environ.get("FLOCK_MODELS_DIR", "")
TOL = 1e-5


def _load(name):
    path = os.path.join(MODELS_DIR, name)
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run `make models` (tools/models/make_models.py --out DIR) "
                    "and point FLOCK_MODELS_DIR at DIR")
    with open(path) as f:
        return json.load(f)


def _manifest():
    try:
        return _load("manifest.json")
    except BaseException:
        return []


MANIFEST = _manifest()


@pytest.fixture(scope="module")
def loaded(cluster, dbname):
    """Loads every data set into a table of its own and registers every model."""
    datasets = _load("datasets.json")
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        for info in datasets.values():
            cols = ", ".join(f'"{c["name"]}" {c["type"]}' for c in info["columns"])
            cur.execute(f'CREATE TABLE "{info["table"]}" ({cols})')
            with open(os.path.join(MODELS_DIR, info["file"])) as f:
                cur.copy_expert(f'COPY "{info["table"]}" FROM STDIN WITH (FORMAT csv, HEADER true)', f)
        for entry in _load("manifest.json"):
            with open(os.path.join(MODELS_DIR, entry["file"]), "rb") as f:
                cur.execute("SELECT flock.register_model(%s, %s, %s)", (entry["name"], f.read(), entry["format"]))
    yield conn
    conn.close()


def close(got, want):
    return abs(got - want) <= TOL * max(abs(want), 1.0)


def _arg(entry, alias="t"):
    """How a row reaches the model: the record itself when the model binds by name, else the
    features in model order (ROW(...) binds by position)."""
    if entry["has_feature_names"] or entry.get("inputs") and len(entry["inputs"]) > 1:
        return alias
    return "ROW(" + ", ".join(f'{alias}."{c}"' for c in entry["features"]) + ")"


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["name"] for e in MANIFEST])
def test_every_row_matches_the_library(loaded, entry):
    arg = _arg(entry)
    classification = entry["task"] == "classification"
    with loaded.cursor() as cur:
        if classification:
            cur.execute(f"SELECT id, flock.predict(%s, {arg}), flock.predict_proba(%s, {arg}) "
                        f'FROM "{entry["table"]}" t ORDER BY id', (entry["name"], entry["name"]))
        else:
            cur.execute(f'SELECT id, flock.predict(%s, {arg}) FROM "{entry["table"]}" t ORDER BY id',
                        (entry["name"],))
        rows = cur.fetchall()
    expected = entry["expected"]
    assert len(rows) == len(expected)
    bad = []
    for row in rows:
        want = expected[str(row[0])]
        if classification:
            if row[1] != want["label"] or len(row[2]) != len(want["proba"]) or not all(
                    close(g, w) for g, w in zip(row[2], want["proba"])):
                bad.append((row[0], row[1], row[2], want))
        elif not close(row[1], want["value"]):
            bad.append((row[0], row[1], want))
    assert not bad, f"{len(bad)} of {len(rows)} rows differ, first: {bad[:3]}"


@pytest.mark.parametrize("entry", [e for e in MANIFEST if not (e.get("inputs") and len(e["inputs"]) > 1)][:6],
                         ids=lambda e: e["name"])
def test_feature_array_matches_record(loaded, entry):
    cols = ", ".join(f't."{c}"' for c in entry["features"])
    with loaded.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM \"{entry['table']}\" t "
                    f"WHERE flock.predict(%s, ARRAY[{cols}]::float4[]) IS DISTINCT FROM flock.predict(%s, {_arg(entry)})",
                    (entry["name"], entry["name"]))
        assert cur.fetchone()[0] == 0
