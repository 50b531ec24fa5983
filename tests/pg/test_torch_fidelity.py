"""Fidelity of PyTorch-exported ONNX models: every model, every row -- the prediction from SQL
equals torch's own.

Models and oracles come from tools/models/make_torch_models.py (torch_manifest.json,
torch_datasets.json in FLOCK_MODELS_DIR, next to make_models.py's files): an MLP with LayerNorm and
GELU (Erf), an MLP over per-column inputs with nn.Embedding category codes (int64 inputs bound from
integer columns), and a 1-D CNN (Conv, BatchNormalization, MaxPool, GlobalAveragePool). The oracle
is torch in float32 (eval mode) on the values exactly as the table holds them. Tolerance:
|flock - torch| <= 1e-4 * max(|torch|, 1); labels must be equal.

Each model registers in its own test, so an operator Flock does not run yet fails that model's
tests (with the registration error) and not the others.
"""
import json
import os

import psycopg2
import pytest

MODELS_DIR = os.environ.get("FLOCK_MODELS_DIR", "")
TOL = 1e-4


def _load(name):
    path = os.path.join(MODELS_DIR, name)
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run `make models` (tools/models/make_torch_models.py --out DIR) "
                    "and point FLOCK_MODELS_DIR at DIR")
    with open(path) as f:
        return json.load(f)


def _manifest():
    try:
        return _load("torch_manifest.json")
    except BaseException:
        return []


MANIFEST = _manifest()
IDS = [e["name"] for e in MANIFEST]


def test_torch_models_were_generated():
    # Without the manifest the parametrized tests below collect nothing and would silently skip.
    assert _load("torch_manifest.json"), "torch_manifest.json lists no models"


@pytest.fixture(scope="module")
def tables(cluster, dbname):
    """Loads every torch data set into a table of its own."""
    datasets = _load("torch_datasets.json")
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        for info in datasets.values():
            cols = ", ".join(f'"{c["name"]}" {c["type"]}' for c in info["columns"])
            cur.execute(f'CREATE TABLE "{info["table"]}" ({cols})')
            with open(os.path.join(MODELS_DIR, info["file"])) as f:
                cur.copy_expert(f'COPY "{info["table"]}" FROM STDIN WITH (FORMAT csv, HEADER true)', f)
    yield conn
    conn.close()


_registered = {}


@pytest.fixture
def model(tables, request):
    """Registers the test's model once per module; a registration error fails that model's tests."""
    entry = request.param
    name = entry["name"]
    if name not in _registered:
        with open(os.path.join(MODELS_DIR, entry["file"]), "rb") as f:
            data = f.read()
        try:
            with tables.cursor() as cur:
                cur.execute("SELECT flock.register_model(%s, %s, %s)", (name, data, entry["format"]))
            _registered[name] = None
        except psycopg2.Error as e:
            _registered[name] = f"registering {name} failed: [{e.pgcode}] {e.pgerror.strip()}"
    if _registered[name]:
        pytest.fail(_registered[name])
    return entry


def close(got, want):
    return abs(got - want) <= TOL * max(abs(want), 1.0)


def _arg(entry, alias="t"):
    """The record binds by name (feature_names metadata, or one input per column), else the
    features go in model order."""
    if entry["has_feature_names"] or len(entry["inputs"]) > 1:
        return alias
    return "ROW(" + ", ".join(f'{alias}."{c}"' for c in entry["features"]) + ")"


def _check_rows(entry, rows):
    expected = entry["expected"]
    bad = []
    for row in rows:
        want = expected[str(row[0])]
        if entry["task"] == "classification":
            if row[1] != want["label"] or row[2] is None or len(row[2]) != len(want["proba"]) or not all(
                    close(g, w) for g, w in zip(row[2], want["proba"])):
                bad.append((row[0], row[1], row[2], want))
        elif row[1] is None or not close(row[1], want["value"]):
            bad.append((row[0], row[1], want))
    return bad


def _score(conn, entry, where="", batching=True):
    arg = _arg(entry)
    with conn.cursor() as cur:
        cur.execute("SET flock.batching = " + ("on" if batching else "off"))
        try:
            if entry["task"] == "classification":
                cur.execute(f"SELECT id, flock.predict(%s, {arg}), flock.predict_proba(%s, {arg}) "
                            f'FROM "{entry["table"]}" t {where} ORDER BY id', (entry["name"], entry["name"]))
            else:
                cur.execute(f'SELECT id, flock.predict(%s, {arg}) FROM "{entry["table"]}" t {where} ORDER BY id',
                            (entry["name"],))
            return cur.fetchall()
        finally:
            cur.execute("RESET flock.batching")


@pytest.mark.parametrize("model", MANIFEST, ids=IDS, indirect=True)
def test_every_row_matches_torch(tables, model):
    rows = _score(tables, model)
    assert len(rows) == len(model["expected"])
    bad = _check_rows(model, rows)
    assert not bad, f"{len(bad)} of {len(rows)} rows differ, first: {bad[:3]}"


@pytest.mark.parametrize("model", MANIFEST, ids=IDS, indirect=True)
def test_row_at_a_time_matches_torch(tables, model):
    """Without batching each call runs the graph on a batch of one row."""
    rows = _score(tables, model, where="WHERE id <= 40", batching=False)
    assert len(rows) == 40
    bad = _check_rows(model, rows)
    assert not bad, f"{len(bad)} of {len(rows)} rows differ, first: {bad[:3]}"


@pytest.mark.parametrize("model", [e for e in MANIFEST if len(e["inputs"]) == 1],
                         ids=[e["name"] for e in MANIFEST if len(e["inputs"]) == 1], indirect=True)
def test_feature_array_matches_record(tables, model):
    cols = ", ".join(f't."{c}"' for c in model["features"])
    with tables.cursor() as cur:
        cur.execute(f'SELECT count(*) FROM "{model["table"]}" t '
                    f"WHERE flock.predict(%s, ARRAY[{cols}]::float4[]) IS DISTINCT FROM flock.predict(%s, {_arg(model)})",
                    (model["name"], model["name"]))
        assert cur.fetchone()[0] == 0


@pytest.mark.parametrize("model", MANIFEST, ids=IDS, indirect=True)
def test_signature(tables, model):
    """What Flock reads from the exported graph: inputs (dynamic batch), features, task."""
    with tables.cursor() as cur:
        cur.execute("SELECT flock.model_info(%s)", (model["name"],))
        info = cur.fetchone()[0]
    assert info["task"] == model["task"]
    assert [i["name"] for i in info["inputs"]] == list(model["inputs"])
    assert [i["width"] for i in info["inputs"]] == [len(c) for c in model["inputs"].values()]
    assert info["features"] == model["features"]
    types = {i["name"]: i["type"] for i in info["inputs"]}
    assert types == model["input_types"]
