"""Lineage, end to end: a table is snapshotted, a scikit-learn model is trained on the snapshot
(tools/models/train_with_capture.py, exported by sk2onnx), registered with its training capture,
aliased, used for predictions recorded by the audit capture (flock.set_audit), and then
flock.lineage and flock.openlineage show the whole chain."""
import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
import uuid

import psycopg2
import pytest

from test_catalog import one, rows, run, sqlstate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "tools", "models", "train_with_capture.py")
SNAPSHOT_QUERY = "SELECT * FROM patients WHERE id % 5 <> 0"
RUN_EVENT_TYPES = {"START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"}


def lineage(conn, ref, direction="both"):
    return [dict(zip(("depth", "from_kind", "from_ref", "relation", "to_kind", "to_ref", "at", "actor", "detail"), r))
            for r in rows(conn, "SELECT * FROM flock.lineage(%s, %s)", (ref, direction))]


def edges(graph):
    return {(e["from_kind"], e["from_ref"], e["relation"], e["to_kind"], e["to_ref"]): e["depth"] for e in graph}


@pytest.fixture(scope="module")
def chain(cluster, dbname, tmp_path_factory):
    """snapshot -> train -> register with capture -> alias -> predictions logged."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    pytest.importorskip("onnx")
    data = sklearn_datasets.load_breast_cancer()
    cols = [list(data.feature_names).index(n) for n in ("mean radius", "mean texture", "mean smoothness")]
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    run(conn, "CREATE TABLE patients (id int, mean_radius real, mean_texture real, mean_smoothness real, target int)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO patients VALUES (%s, %s, %s, %s, %s)",
                        [(i + 1, *(float(data.data[i][c]) for c in cols), int(data.target[i]))
                         for i in range(len(data.target))])
    ds = one(conn, "SELECT flock.snapshot_dataset('patients_train', %s, 'every row but each fifth')", (SNAPSHOT_QUERY,))

    out = tmp_path_factory.mktemp("train")
    p = subprocess.run([sys.executable, TRAIN, "--dataset", ds, "--target", "target", "--out", str(out),
                        "--dsn", cluster.dsn(dbname)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["features"] == ["mean_radius", "mean_texture", "mean_smoothness"]
    files = {n: (out / f"{n}.json").read_text() for n in ("params", "metrics", "environment")}
    code = open(TRAIN).read()

    # Registration and capture in one transaction, as `flock register ... --training-code` does.
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("SELECT flock.register_model('cancer', %s, description => 'breast cancer, 3 features')",
                    ((out / "model.onnx").read_bytes(),))
        ref = cur.fetchone()[0]
        cur.execute("SELECT flock.log_training(%s, ARRAY[%s], %s, %s, %s, %s, %s)",
                    (ref, ds, code, "tools/models/train_with_capture.py", files["params"], files["metrics"],
                     files["environment"]))
        run_pk = cur.fetchone()[0]
    conn.commit()
    conn.autocommit = True
    one(conn, "SELECT flock.set_alias('cancer', 'champion', 1, 'first model')")

    # Predictions with the audit policy on: the audit writer records them, one statement, one batch.
    assert one(conn, "SELECT flock.set_audit('cancer', 'all')")["mode"] == "all"
    assert one(conn, "SELECT count(flock.predict('cancer@champion', p)) FROM patients p WHERE p.id % 5 = 0") == one(
        conn, "SELECT count(*) FROM patients WHERE id % 5 = 0")
    assert one(conn, "SELECT flock.audit_flush()") is True
    one(conn, "SELECT flock.set_audit('cancer', 'off')")
    query_id = one(conn, "SELECT DISTINCT query_id FROM flock.inference_log WHERE model_name = 'cancer'")
    assert isinstance(query_id, int)
    run_id = one(conn, "SELECT run_id::text FROM flock.training_runs WHERE id = %s", (run_pk,))
    conn.close()
    return {"ds": ds, "ref": ref, "run_id": run_id, "code": code, "params": json.loads(files["params"]),
            "metrics": json.loads(files["metrics"]), "summary": summary,
            "query_id": query_id}


def test_the_captured_model_predicts_what_training_measured(conn, chain):
    assert chain["ref"] == "cancer@1" and chain["ds"] == "patients_train@1"
    n, acc = rows(conn, """SELECT count(*), avg((flock.predict('cancer@champion', p) = p.target)::int)
                             FROM flock_data."patients_train@1" p""")[0]
    assert n == chain["metrics"]["rows"] == one(conn, "SELECT count(*) FROM patients WHERE id % 5 <> 0")
    assert abs(float(acc) - chain["metrics"]["accuracy"]) <= 1.0 / n  # at most one borderline row differs
    assert chain["params"]["dataset"] == "patients_train@1"
    assert chain["params"]["dataset_content_hash"] == one(
        conn, "SELECT content_hash FROM flock.datasets WHERE name = 'patients_train'")
    assert one(conn, "SELECT flock.verify_dataset('patients_train@1')") is True


def test_lineage_shows_the_chain_both_ways(conn, chain):
    graph = lineage(conn, "cancer@champion")
    run_id = chain["run_id"]
    batch = [e for e in graph if e["relation"] == "scored"]
    assert len(batch) == 1
    batch_ref = batch[0]["to_ref"]
    assert re.fullmatch(r"cancer@1/postgres/\d{4}-\d\d-\d\dT[\d:.]+Z/-?\d+", batch_ref), batch_ref
    assert batch_ref.endswith(f"/{chain['query_id']}")
    assert batch[0]["detail"] == {"rows": one(conn, "SELECT count(*) FROM patients WHERE id % 5 = 0"),
                                  "query_id": chain["query_id"]}
    # The batch is what the audit log holds: every prediction, with its input and output.
    logged = rows(conn, "SELECT input, output FROM flock.inference_log_rows WHERE model_name = 'cancer'")
    assert len(logged) == batch[0]["detail"]["rows"]
    # The model takes real (float32) features: the log shows them as the real column does.
    assert sorted((i["mean_radius"], i["mean_texture"], i["mean_smoothness"]) for i, _ in logged) == sorted(
        rows(conn, "SELECT mean_radius, mean_texture, mean_smoothness FROM patients WHERE id % 5 = 0"))
    assert {o for _, o in logged} <= {0, 1}
    assert edges(graph) == {
        ("table", "public.patients", "snapshot_into", "dataset", "patients_train@1"): -3,
        ("dataset", "patients_train@1", "used_by", "training_run", run_id): -2,
        ("training_run", run_id, "produced", "model", "cancer@1"): -1,
        ("model", "cancer@1", "aliased_as", "alias", "cancer@champion"): 1,
        ("model", "cancer@1", "scored", "inference", batch_ref): 1,
    }
    assert [e["depth"] for e in graph] == sorted(e["depth"] for e in graph)
    by_relation = {e["relation"]: e for e in graph}
    assert by_relation["snapshot_into"]["detail"] == {"query": SNAPSHOT_QUERY}
    produced = by_relation["produced"]["detail"]
    assert produced["metrics"] == chain["metrics"] and produced["params"] == chain["params"]
    assert produced["code_sha256"] == hashlib.sha256(chain["code"].encode()).hexdigest()
    assert produced["code_ref"] == "tools/models/train_with_capture.py"
    assert by_relation["aliased_as"]["detail"] == {"comment": "first model"}
    assert all(e["actor"] == "postgres" and isinstance(e["at"], datetime.datetime) for e in graph)

    # The same graph from every reference to that version, and one direction at a time.
    for ref in ("cancer", "cancer@1", "model:cancer@champion"):
        assert edges(lineage(conn, ref)) == edges(graph)
    assert edges(lineage(conn, "cancer@1", "upstream")) == {k: v for k, v in edges(graph).items() if v < 0}
    assert edges(lineage(conn, "cancer@1", "downstream")) == {k: v for k, v in edges(graph).items() if v > 0}

    # From the data set: what it came from, and everything trained on it down to the predictions.
    down = edges(lineage(conn, "dataset:patients_train@1", "downstream"))
    assert down == {
        ("dataset", "patients_train@1", "used_by", "training_run", run_id): 1,
        ("training_run", run_id, "produced", "model", "cancer@1"): 2,
        ("model", "cancer@1", "aliased_as", "alias", "cancer@champion"): 3,
        ("model", "cancer@1", "scored", "inference", batch_ref): 3,
    }
    assert edges(lineage(conn, "dataset:patients_train", "upstream")) == {
        ("table", "public.patients", "snapshot_into", "dataset", "patients_train@1"): -1}


def test_a_second_version_has_its_own_lineage(conn, chain):
    model = one(conn, "SELECT model::bytea FROM flock.models WHERE name = 'cancer' AND version = 1")
    assert one(conn, "SELECT flock.register_model('cancer', %s)", (bytes(model),)) == "cancer@2"
    try:
        assert lineage(conn, "cancer") == []  # latest = @2: nothing recorded yet
        one(conn, "SELECT flock.set_alias('cancer', 'challenger', 2)")
        assert edges(lineage(conn, "cancer@challenger")) == {
            ("model", "cancer@2", "aliased_as", "alias", "cancer@challenger"): 1}
        assert ("model", "cancer@2", "aliased_as", "alias", "cancer@challenger") not in edges(
            lineage(conn, "cancer@champion"))
    finally:
        one(conn, "SELECT flock.drop_alias('cancer', 'challenger')")
        one(conn, "SELECT flock.drop_model('cancer', 2)")


def test_lineage_errors(conn, chain):
    for sql, code in [("SELECT * FROM flock.lineage('cancer', 'sideways')", "22023"),
                      ("SELECT * FROM flock.lineage('cancer', NULL)", "22023"),
                      ("SELECT * FROM flock.lineage('no_such_model')", "42704"),
                      ("SELECT * FROM flock.lineage('cancer@7')", "42704"),
                      ("SELECT * FROM flock.lineage('cancer@nope')", "22023"),
                      ("SELECT * FROM flock.lineage('dataset:no_such_ds')", "42704"),
                      ("SELECT * FROM flock.lineage('dataset:patients_train@9')", "42704"),
                      ("SELECT flock.openlineage('no_such_model')", "42704")]:
        err = sqlstate(conn, sql)
        assert err.pgcode == code, (sql, err.pgerror)
        assert err.diag.message_hint, sql


# --- OpenLineage ----------------------------------------------------------------------------------

def is_uri(s):
    return isinstance(s, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$", s) is not None


def check_facets(facets, where):
    assert isinstance(facets, dict), where
    for name, facet in facets.items():
        assert is_uri(facet.get("_producer")), (where, name, facet)
        assert is_uri(facet.get("_schemaURL")), (where, name, facet)


def check_run_event(ev):
    """The fields OpenLineage 2-0-2 requires of a RunEvent (BaseEvent: eventTime, producer,
    schemaURL; RunEvent: run.runId, job.namespace, job.name; datasets: namespace, name; every
    facet: _producer, _schemaURL), with their formats."""
    for field in ("eventTime", "producer", "schemaURL", "run", "job"):
        assert field in ev, field
    assert ev["eventType"] in RUN_EVENT_TYPES
    t = datetime.datetime.fromisoformat(ev["eventTime"])
    assert t.tzinfo is not None
    assert is_uri(ev["producer"])
    assert ev["schemaURL"].startswith("https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent")
    uuid.UUID(ev["run"]["runId"])
    check_facets(ev["run"].get("facets", {}), "run")
    assert isinstance(ev["job"]["namespace"], str) and ev["job"]["namespace"]
    assert isinstance(ev["job"]["name"], str) and ev["job"]["name"]
    check_facets(ev["job"].get("facets", {}), "job")
    for key in ("inputs", "outputs"):
        assert isinstance(ev[key], list)
        for ds in ev[key]:
            assert isinstance(ds["namespace"], str) and ds["namespace"] and isinstance(ds["name"], str) and ds["name"]
            check_facets(ds.get("facets", {}), ds["name"])


def test_openlineage_events_carry_the_chain(conn, chain, dbname):
    events = one(conn, "SELECT flock.openlineage('cancer@champion')")
    json.loads(json.dumps(events))
    assert isinstance(events, list) and len(events) == 3
    for ev in events:
        check_run_event(ev)
    assert [ev["eventTime"] for ev in events] == sorted(ev["eventTime"] for ev in events)
    snap, train, infer = events
    namespace = snap["job"]["namespace"]
    assert namespace.startswith("postgres://")

    ds_run, columns = rows(conn, "SELECT run_id::text, columns FROM flock.datasets WHERE name = 'patients_train'")[0]
    assert snap["job"]["name"] == "flock.snapshot_dataset.patients_train"
    assert snap["run"]["runId"] == ds_run
    assert snap["job"]["facets"]["sql"]["query"] == SNAPSHOT_QUERY
    assert snap["inputs"] == [{"namespace": namespace, "name": f"{dbname}.public.patients"}]
    [out] = snap["outputs"]
    assert out["name"] == f"{dbname}.flock_data.patients_train@1"
    assert out["facets"]["schema"]["fields"] == columns
    assert out["facets"]["version"]["datasetVersion"] == "1"
    assert out["facets"]["flock_dataset"]["rowCount"] == one(conn, "SELECT count(*) FROM patients WHERE id % 5 <> 0")

    assert train["job"]["name"] == "flock.train.cancer"
    assert train["run"]["runId"] == chain["run_id"]
    facet = train["run"]["facets"]["flock_training"]
    assert facet["params"] == chain["params"] and facet["metrics"] == chain["metrics"]
    assert facet["environment"]["scikit-learn"]
    assert train["job"]["facets"]["flock_code"]["codeSha256"] == hashlib.sha256(chain["code"].encode()).hexdigest()
    assert [i["name"] for i in train["inputs"]] == [out["name"]]  # the snapshot's output is the training input
    [model_out] = train["outputs"]
    assert model_out["name"] == f"{dbname}.flock.models.cancer@1"
    assert model_out["facets"]["flock_model"]["aliases"] == ["champion"]
    assert model_out["facets"]["flock_model"]["sha256"] == one(conn, "SELECT sha256 FROM flock.models "
                                                                     "WHERE name = 'cancer' AND version = 1")

    assert infer["job"]["name"] == "flock.predict.cancer"
    assert infer["inputs"] == [model_out] and infer["outputs"] == []
    assert infer["run"]["facets"]["flock_inference"]["rows"] == one(conn, "SELECT count(*) FROM patients WHERE id % 5 = 0")

    # From the data set the same events come out; a model without lineage gives none.
    assert one(conn, "SELECT flock.openlineage('dataset:patients_train@1')") == events
    model = one(conn, "SELECT model::bytea FROM flock.models WHERE name = 'cancer' AND version = 1")
    one(conn, "SELECT flock.register_model('no_lineage', %s)", (bytes(model),))
    assert one(conn, "SELECT flock.openlineage('no_lineage')") == []


def test_lineage_respects_access_control(conn, chain, cluster, dbname):
    with conn.cursor() as cur:
        for role in ("lin_viewer", "lin_stranger"):
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if not cur.fetchone():
                cur.execute(f"CREATE ROLE {role} LOGIN")
    viewer = psycopg2.connect(cluster.dsn(dbname, user="lin_viewer"))
    stranger = psycopg2.connect(cluster.dsn(dbname, user="lin_stranger"))
    viewer.autocommit = stranger.autocommit = True
    try:
        for ref in ("cancer@champion", "cancer", "dataset:patients_train@1"):
            err = sqlstate(stranger, "SELECT * FROM flock.lineage(%s)", (ref,))
            assert err.pgcode == "42501", err.pgerror
        assert sqlstate(stranger, "SELECT flock.openlineage('cancer')").pgcode == "42501"

        one(conn, "SELECT flock.grant_model('cancer', 'lin_viewer', 'use')")
        graph = edges(lineage(viewer, "cancer@champion"))
        # It sees where the model came from and its aliases, but not other roles' predictions
        # (those are for the model's managers), and not the data set's rows or query.
        assert {k[2] for k in graph} == {"used_by", "produced", "aliased_as"}
        assert sqlstate(viewer, "SELECT * FROM flock.lineage('dataset:patients_train@1')").pgcode == "42501"
        events = one(viewer, "SELECT flock.openlineage('cancer@champion')")
        assert [e["job"]["name"] for e in events] == ["flock.train.cancer"]
        assert events[0]["inputs"] == [{"namespace": events[0]["job"]["namespace"],
                                        "name": f"{dbname}.flock_data.patients_train@1"}]
        one(conn, "SELECT flock.revoke_model('cancer', 'lin_viewer')")
        assert sqlstate(viewer, "SELECT * FROM flock.lineage('cancer@champion')").pgcode == "42501"
    finally:
        viewer.close()
        stranger.close()
