"""Scoring on shards (issue 18): one coordinator and three shard clusters (tests/pg/multinode.py),
a table hash-partitioned over them, the models registered on the coordinator only. Every result is
compared with the same query on one node: a local copy of the same rows on the coordinator, scored
with the same models."""
import decimal
import os
import subprocess
import time

import psycopg2
import pytest

from multinode import MultiNode, conninfo
from onnx_builders import stump_classifier
from test_catalog import one, rows, sqlstate

MODELS = os.environ.get("FLOCK_MODELS_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build", "models"))
DB = "flock_dist"
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
COLUMNS = "id int, " + ", ".join(f"{f} real" for f in FEATURES)
ARRAY = "ARRAY[" + ", ".join(FEATURES) + "]::float4[]"
N_ROWS = 6000
# How long a model registered on the coordinator may take to reach every shard in these tests
# (docs/distributed.md: measured at well under a second on an idle machine).
CATALOG_BOUND_SECONDS = 10


@pytest.fixture(scope="module")
def nodes():
    mn = MultiNode(3).start()
    try:
        for n in mn.nodes:
            n.psql(f"CREATE DATABASE {DB}")
        yield mn
    finally:
        mn.stop()


@pytest.fixture(scope="module")
def coord(nodes):
    c = psycopg2.connect(conninfo(nodes.coordinator, DB))
    c.autocommit = True
    with c.cursor() as cur:
        cur.execute("CREATE EXTENSION flock; CREATE EXTENSION postgres_fdw; CREATE EXTENSION dblink")
        for s in nodes.shards:
            cur.execute("CALL flock.add_shard(%s, %s, %s, %s, %s)",
                        (s.settings["cluster_name"], s.sockdir, s.port, DB, conninfo(nodes.coordinator, DB)))
        cur.execute("SELECT flock.create_distributed_table('d', %s, 'id')", (COLUMNS,))
        cur.execute(f"CREATE TABLE d_local ({COLUMNS})")
        # Deterministic rows; every column NULL on some rows (trees route a NULL as missing).
        values = ", ".join(f"CASE WHEN g % 17 = {i} THEN NULL ELSE (((g * {7 + i}) % 1000) / 5000.0 - 0.1)::real END"
                           for i in range(len(FEATURES)))
        cur.execute(f"INSERT INTO d_local SELECT g, {values} FROM generate_series(1, {N_ROWS}) g")
        cur.execute("INSERT INTO d SELECT * FROM d_local")
        with open(os.path.join(MODELS, "diabetes_gb.onnx"), "rb") as f:
            cur.execute("SELECT flock.register_model('gb', %s)", (f.read(),))
        with open(os.path.join(MODELS, "diabetes_linreg.onnx"), "rb") as f:
            cur.execute("SELECT flock.register_model('lin', %s)", (f.read(),))
        cur.execute("SELECT flock.register_model('colors', %s)",
                    (stump_classifier(0, 0.0, labels=("red", "blue"), feature_names=["age", "sex"]),))
        for m in ("gb", "lin", "colors"):
            cur.execute("SELECT flock.wait_for_shards(%s, %s::interval)", (m, f"{CATALOG_BOUND_SECONDS} seconds"))
    yield c
    c.close()


def pin(conn, ref):
    return one(conn, "SELECT quote_literal(flock.pin(%s))", (ref,))


def by_id(result):
    return dict(result)


def test_rows_are_on_the_shards_not_the_coordinator(coord, nodes):
    assert one(coord, "SELECT count(*) FROM d") == N_ROWS
    counts = [one(coord, f"SELECT count(*) FROM ONLY d_{s.settings['cluster_name']}") for s in nodes.shards]
    assert sum(counts) == N_ROWS and all(c > 0 for c in counts)
    # The catalog reached every shard; the shards hold no model of their own.
    status = rows(coord, "SELECT shard, reachable, models, coordinator_models FROM flock.distribution_status()")
    assert [s[0] for s in status] == ["shard1", "shard2", "shard3"]
    assert all(s[1] and s[2] == s[3] for s in status)


def test_plain_predictions_equal_one_node(coord):
    dist = rows(coord, "SELECT * FROM flock.on_shards('d', 'SELECT id, flock.predict(%1$s, d) FROM d', 'gb') "
                       "AS r(id int, p float8)")
    local = rows(coord, "SELECT id, flock.predict('gb', d) FROM d_local d")
    assert len(dist) == N_ROWS and by_id(dist) == by_id(local)
    # Labels and probabilities too.
    dist = rows(coord, "SELECT * FROM flock.on_shards('d', 'SELECT id, flock.predict_label(%1$s, d), "
                       "flock.predict_proba(%1$s, d) FROM d', 'colors') AS r(id int, l text, p float8[])")
    local = rows(coord, "SELECT id, flock.predict_label('colors', d), flock.predict_proba('colors', d) FROM d_local d")
    assert sorted(dist) == sorted(local)


def test_pulling_the_rows_and_scoring_here_equals_one_node(coord):
    # The batch node goes above each foreign partition: those scans must not stay asynchronous
    # (they returned no rows: sum NULL).
    q = "SELECT sum(flock.predict('gb', d)::numeric), count(flock.predict('gb', d)) FROM {} d"
    with coord.cursor() as cur:
        # Else planned on the shards (below).
        cur.execute("SET flock.distribute_aggregates = off; SET flock.distribute_predictions = off")
        try:
            assert rows(coord, q.format("d")) == rows(coord, q.format("d_local"))
            assert "FlockBatchScore" in "\n".join(r[0] for r in rows(coord, "EXPLAIN " + q.format("d")))
        finally:
            cur.execute("RESET flock.distribute_aggregates; RESET flock.distribute_predictions")


def test_pinned_select_list_over_foreign_partitions_equals_one_node(coord):
    p = pin(coord, "gb")
    dist = rows(coord, f"SELECT id, flock.predict_pinned({p}, d) FROM d")
    assert by_id(dist) == by_id(rows(coord, "SELECT id, flock.predict('gb', d) FROM d_local d"))


def test_filter_ships_to_the_shards_and_equals_one_node(coord, nodes):
    p = pin(coord, "gb")
    q = f"SELECT id FROM d WHERE flock.predict_pinned({p}, {ARRAY}) > 150"
    plan = "\n".join(r[0] for r in rows(coord, "EXPLAIN (VERBOSE, COSTS OFF) " + q))
    remote = [line for line in plan.splitlines() if "Remote SQL" in line]
    assert len(remote) == 3 and all("flock.predict_pinned(" in line and "> 150" in line for line in remote), plan
    assert "Async Foreign Scan" in plan
    # On the shard the shipped call is batched like flock.predict.
    shard1 = psycopg2.connect(conninfo(nodes.shards[0], DB))
    try:
        remote_sql = remote[0].split("Remote SQL: ", 1)[1]
        shard_plan = "\n".join(r[0] for r in rows(shard1, "EXPLAIN (VERBOSE) " + remote_sql))
        assert "FlockBatchScore" in shard_plan, shard_plan
    finally:
        shard1.close()
    local = rows(coord, "SELECT id FROM d_local d WHERE flock.predict('gb', d) > 150")
    assert 0 < len(local) < N_ROWS
    assert sorted(rows(coord, q)) == sorted(local)
    # The label form ships as well.
    p = pin(coord, "colors")
    q = f"SELECT id FROM d WHERE flock.predict_label_pinned({p}, ARRAY[age, sex]::float4[]) = 'blue'"
    assert "flock.predict_label_pinned(" in "\n".join(r[0] for r in rows(coord, "EXPLAIN (VERBOSE) " + q))
    assert sorted(rows(coord, q)) == sorted(rows(coord, "SELECT id FROM d_local d WHERE flock.predict_label('colors', d) = 'blue'"))
    # And a filter inside the shards' query.
    dist = rows(coord, "SELECT * FROM flock.on_shards('d', 'SELECT id FROM d WHERE flock.predict(%1$s, d) > 150', 'gb') AS r(id int)")
    assert sorted(dist) == sorted(local)


def test_plain_predict_in_a_filter_is_pinned_and_shipped(coord):
    q = f"SELECT id FROM d WHERE flock.predict('gb', {ARRAY}) > 150"
    plan = "\n".join(r[0] for r in rows(coord, "EXPLAIN (VERBOSE, COSTS OFF) " + q))
    remote = [line for line in plan.splitlines() if "Remote SQL" in line]
    ref = one(coord, "SELECT flock.pin('gb')::text")
    assert len(remote) == 3 and all(f"flock.predict_pinned('{ref}'" in line for line in remote), plan
    assert f"Flock Pinned: {ref}" in plan
    local = rows(coord, f"SELECT id FROM d_local d WHERE flock.predict('gb', {ARRAY}) > 150")
    assert sorted(rows(coord, q)) == sorted(local)
    # Labels too; a local table's calls are left as they are.
    q = "SELECT id FROM d WHERE flock.predict_label('colors', ARRAY[age, sex]::float4[]) = 'blue'"
    assert "predict_label_pinned" in "\n".join(r[0] for r in rows(coord, "EXPLAIN (VERBOSE) " + q))
    assert sorted(rows(coord, q)) == sorted(rows(coord, q.replace("FROM d ", "FROM d_local ")))
    plan = "\n".join(r[0] for r in rows(coord, f"EXPLAIN (VERBOSE) SELECT id FROM d_local WHERE flock.predict('gb', {ARRAY}) > 150"))
    assert "pinned" not in plan
    # Off: the prediction stays on the coordinator, with the same rows.
    with coord.cursor() as cur:
        cur.execute("SET flock.pin_remote = off")
        try:
            q = f"SELECT id FROM d WHERE flock.predict('gb', {ARRAY}) > 150"
            plan = "\n".join(r[0] for r in rows(coord, "EXPLAIN (VERBOSE) " + q))
            assert "pinned" not in plan and "Filter: (flock.predict(" in plan
            assert sorted(rows(coord, q)) == sorted(local)
        finally:
            cur.execute("RESET flock.pin_remote")


def test_derived_filters_ship_too_and_change_no_result(coord):
    # The optimizer's derived column ranges (issue 13) are plain quals: they ship with the pinned call.
    with open(os.path.join(MODELS, "diabetes_tree.onnx"), "rb") as f:
        one(coord, "SELECT flock.register_model('tree', %s)", (f.read(),))
    one(coord, "SELECT flock.wait_for_shards('tree', %s::interval)", (f"{CATALOG_BOUND_SECONDS} seconds",))
    with coord.cursor() as cur:
        cur.execute("SET flock.optimizer_derive_filters = always")
        try:
            for q in (f"SELECT id FROM {{}} d WHERE flock.predict('tree', {ARRAY}) > 250",
                      "SELECT id FROM {} d WHERE flock.predict('tree', d) > 250"):
                plan = "\n".join(r[0] for r in rows(coord, "EXPLAIN (VERBOSE) " + q.format("d")))
                assert "Flock Derived Filter" in plan, plan
                remote = [line for line in plan.splitlines() if "Remote SQL" in line]
                assert all("bmi" in line.split("WHERE", 1)[1] for line in remote), plan
                dist = sorted(rows(coord, q.format("d")))
                assert 0 < len(dist) < N_ROWS
                assert dist == sorted(rows(coord, q.format("d_local")))
                cur.execute("SET flock.optimizer = off")
                assert dist == sorted(rows(coord, q.format("d_local")))
                cur.execute("RESET flock.optimizer")
        finally:
            cur.execute("RESET flock.optimizer_derive_filters")


def test_aggregates_partial_on_shards_final_here_equal_one_node(coord):
    dist = rows(coord, """
        SELECT sum(s), sum(n), min(lo), max(hi), sum(c)
        FROM flock.on_shards('d', 'SELECT sum(flock.predict(%1$s, d)::numeric) s, count(flock.predict(%1$s, d)) n,
                                          min(flock.predict(%1$s, d)) lo, max(flock.predict(%1$s, d)) hi, count(*) c FROM d', 'gb')
             AS r(s numeric, n bigint, lo float8, hi float8, c bigint)""")
    local = rows(coord, "SELECT sum(flock.predict('gb', d)::numeric), count(flock.predict('gb', d)), "
                        "min(flock.predict('gb', d)), max(flock.predict('gb', d)), count(*) FROM d_local d")
    assert dist == local
    err = sqlstate(coord, "SELECT * FROM flock.on_shards('d', 'SELECT count(*), count(*) FROM d') AS r(a bigint, b bigint)")
    assert err.pgcode == "42701" and err.diag.message_hint
    # float8 sums add in another order (as parallel query's do): equal to rounding.
    fsum = one(coord, "SELECT sum(s) FROM flock.on_shards('d', 'SELECT sum(flock.predict(%1$s, d)) FROM d', 'gb') AS r(s float8)")
    assert fsum == pytest.approx(one(coord, "SELECT sum(flock.predict('gb', d)) FROM d_local d"), rel=1e-12)
    # Grouped: partial groups per shard, combined here.
    dist = rows(coord, """
        SELECT g, sum(s), sum(n) FROM flock.on_shards('d',
          'SELECT mod(id, 5) AS g, sum(flock.predict(%1$s, d)::numeric) s, count(*) n FROM d GROUP BY 1', 'gb')
          AS r(g int, s numeric, n bigint) GROUP BY g ORDER BY g""")
    local = rows(coord, "SELECT id % 5, sum(flock.predict('gb', d)::numeric), count(*) FROM d_local d GROUP BY 1 ORDER BY 1")
    assert dist == local and len(dist) == 5


def test_plain_aggregates_of_predictions_run_as_partial_aggregates_on_the_shards(coord, nodes):
    cases = [
        "SELECT sum(flock.predict('gb', d)::numeric) AS s, count(flock.predict('gb', d)) AS n, count(*), "
        "min(flock.predict('gb', d)), max(flock.predict('gb', d)) FROM {} d",
        "SELECT sex, count(*) AS n, sum(flock.predict('gb', d)::numeric) FROM {} d WHERE bmi > 0 GROUP BY sex",
        f"SELECT count(*) FROM {{}} d WHERE id % 7 < 3 AND flock.predict('gb', {ARRAY}) > 100",
        "SELECT max(flock.predict_label('colors', d)), sum(id) FROM {} d",
    ]
    for q in cases:
        plan = "\n".join(r[0] for r in rows(coord, "EXPLAIN (VERBOSE) " + q.format("d")))
        assert "Flock On Shards: SELECT" in plan and "flock.on_shards" in plan, plan
        assert "'gb@1'" in plan or "'colors@1'" in plan, plan
        dist = sorted(rows(coord, q.format("d")), key=repr)
        assert dist == sorted(rows(coord, q.format("d_local")), key=repr)
        with coord.cursor() as cur:
            cur.execute("SET flock.distribute_aggregates = off")
            try:
                assert "On Shards" not in "\n".join(r[0] for r in rows(coord, "EXPLAIN " + q.format("d")))
                assert sorted(rows(coord, q.format("d")), key=repr) == dist
            finally:
                cur.execute("RESET flock.distribute_aggregates")
    # float8 sums add in another order, as a parallel query's do.
    q = "SELECT sum(flock.predict('gb', d)) FROM {} d"
    assert one(coord, q.format("d")) == pytest.approx(one(coord, q.format("d_local")), rel=1e-12)
    # A partitioned table over a plain postgres_fdw server (not a Flock shard) is left alone.
    with coord.cursor() as cur:
        cur.execute(f"CREATE SERVER plain_fdw FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host %s, port %s, dbname %s)",
                    (nodes.shards[0].sockdir, str(nodes.shards[0].port), DB))
        cur.execute("CREATE USER MAPPING FOR CURRENT_USER SERVER plain_fdw OPTIONS (user 'postgres')")
        cur.execute(f"CREATE TABLE d_plain ({COLUMNS}) PARTITION BY HASH (id)")
        cur.execute("CREATE FOREIGN TABLE d_plain_0 PARTITION OF d_plain FOR VALUES WITH (MODULUS 1, REMAINDER 0) "
                    "SERVER plain_fdw OPTIONS (table_name 'd')")
    q = "SELECT count(flock.predict('gb', d)) FROM d_plain d"
    assert "On Shards" not in "\n".join(r[0] for r in rows(coord, "EXPLAIN " + q))
    assert one(coord, q) == one(coord, "SELECT count(*) FROM ONLY d_shard1")
    # Row-level security on the coordinator's table: left to PostgreSQL (on_shards refuses it).
    with coord.cursor() as cur:
        cur.execute(f"CREATE TABLE d_rls ({COLUMNS}) PARTITION BY HASH (id)")
        cur.execute("CREATE FOREIGN TABLE d_rls_0 PARTITION OF d_rls FOR VALUES WITH (MODULUS 1, REMAINDER 0) "
                    "SERVER shard1 OPTIONS (table_name 'd')")
        cur.execute("ALTER TABLE d_rls ENABLE ROW LEVEL SECURITY; CREATE POLICY few ON d_rls USING (id < 100)")
        cur.execute("CREATE ROLE rls_reader LOGIN; GRANT SELECT ON d_rls TO rls_reader")
        cur.execute("SELECT flock.grant_model('gb', 'rls_reader', 'use')")
    reader = psycopg2.connect(conninfo(nodes.coordinator, DB).replace("user=postgres", "user=rls_reader"))
    try:
        with reader.cursor() as cur:
            cur.execute("EXPLAIN SELECT count(flock.predict('gb', d)) FROM d_rls d")
            assert "On Shards" not in "\n".join(r[0] for r in cur.fetchall())
        err = sqlstate(reader, "SELECT * FROM flock.on_shards('d_rls', 'SELECT count(*) n FROM d_rls') AS r(n bigint)")
        assert err.pgcode == "0A000"
    finally:
        reader.close()
    # Shapes it does not take are left to the next rewrite (predictions scored on the shards, the
    # aggregate here) or, without predictions, to PostgreSQL, with the same results.
    for q, scored_on_shards in (("SELECT avg(flock.predict('gb', d)::numeric) FROM {} d", True),
                                ("SELECT mod(id, 3), count(flock.predict('gb', d)) FROM {} d GROUP BY 1 ORDER BY 1", True),
                                ("SELECT sum(id) FROM {} d", False)):
        plan = "\n".join(r[0] for r in rows(coord, "EXPLAIN " + q.format("d")))
        assert "On Shards" not in plan and ("Flock Remote SQL" in plan) == scored_on_shards, plan
        assert rows(coord, q.format("d")) == rows(coord, q.format("d_local"))


def test_insert_select_and_create_table_as_equal_one_node(coord):
    with coord.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS scored_ctas, scored_ins")
        cur.execute("CREATE TABLE scored_ctas AS SELECT * FROM flock.on_shards('d', "
                    "'SELECT id, flock.predict(%1$s, d) AS p FROM d WHERE flock.predict(%1$s, d) > 100', 'gb') AS r(id int, p float8)")
        cur.execute("CREATE TABLE scored_ins (id int, p float8)")
        p = pin(coord, "gb")
        cur.execute(f"INSERT INTO scored_ins SELECT id, flock.predict_pinned({p}, d) FROM d "
                    f"WHERE flock.predict_pinned({p}, {ARRAY}) > 100")
    local = rows(coord, "SELECT id, flock.predict('gb', d) FROM d_local d WHERE flock.predict('gb', d) > 100")
    assert by_id(rows(coord, "SELECT * FROM scored_ctas")) == by_id(local)
    assert by_id(rows(coord, "SELECT * FROM scored_ins")) == by_id(local)


SCAN_CASES = [
    "SELECT id, flock.predict('gb', d) AS p FROM {} d",
    "SELECT id, flock.predict('gb', d), flock.predict_label('colors', d), flock.predict_proba('colors', d) "
    "FROM {} d WHERE bmi > 0",
    "SELECT id, flock.predict('gb', d) AS p FROM {} d WHERE flock.predict('gb', d) > 150 ORDER BY p DESC, id LIMIT 25",
    f"SELECT id, flock.predict('gb', {ARRAY}) FROM {{}} d WHERE id % 7 < 3 AND sex IS NOT NULL",
    "SELECT mod(id, 3) AS g, avg(flock.predict('gb', d)::numeric), count(*) FROM {} d GROUP BY 1 "
    "HAVING count(*) > 0 ORDER BY 1",
    "SELECT s.id, s.p FROM (SELECT id, flock.predict('gb', d) AS p FROM {} d) s WHERE s.p > 100",
    "SELECT id, rank() OVER (ORDER BY flock.predict('gb', d) DESC, id) FROM {} d",
]


def plan_of(conn, q):
    return "\n".join(r[0] for r in rows(conn, "EXPLAIN (VERBOSE, COSTS OFF) " + q))


def test_select_list_predictions_are_scored_on_the_shards_and_equal_one_node(coord):
    # The shards score with the exact version planned here: the pinned form, by sha256.
    gb = one(coord, "SELECT flock.pin('gb')::text")
    for q in SCAN_CASES:
        plan = plan_of(coord, q.format("d"))
        assert "Flock Remote SQL: SELECT" in plan and "flock._send_to_shards" in plan and "dblink_get_result" in plan, plan
        remote = plan.split("Flock Remote SQL: ", 1)[1]
        assert f"flock.predict_pinned('{gb}'::flock.pinned" in remote and "FROM public.d d" in remote, plan
        assert "flock.predict(" not in remote, plan
        dist = sorted(rows(coord, q.format("d")), key=repr)
        local = sorted(rows(coord, q.format("d_local")), key=repr)
        assert dist and dist == local, q
        with coord.cursor() as cur:
            cur.execute("SET flock.distribute_predictions = off")
            try:
                assert "Flock Remote SQL" not in plan_of(coord, q.format("d"))
                assert sorted(rows(coord, q.format("d")), key=repr) == dist
            finally:
                cur.execute("RESET flock.distribute_predictions")
    # A LIMIT stops reading: the shards' unread results do not disturb the next query (their
    # connections are replaced).
    some = rows(coord, "SELECT id, flock.predict('gb', d) FROM d LIMIT 5")
    local = by_id(rows(coord, "SELECT id, flock.predict('gb', d) FROM d_local d"))
    assert len(some) == 5 and all(local[i] == p for i, p in some)
    assert by_id(rows(coord, "SELECT id, flock.predict('gb', d) FROM d")) == local
    # NULLs travel as NULLs: rows with a NULL feature get the model's own answer for a missing value.
    nulls = rows(coord, "SELECT id, flock.predict('gb', d) FROM d WHERE bmi IS NULL")
    assert nulls and by_id(nulls) == by_id(rows(coord, "SELECT id, flock.predict('gb', d) FROM d_local d WHERE bmi IS NULL"))
    # The shards send the columns the query reads and the predictions, not every column.
    remote = plan_of(coord, "SELECT id, flock.predict('gb', d) FROM d").split("Flock Remote SQL: ", 1)[1]
    assert remote.startswith(f"SELECT id AS c1, flock.predict_pinned('{gb}'::flock.pinned, d.*) AS c2 FROM public.d d"), remote


def test_shapes_not_provably_the_same_are_left_alone_with_a_reason(coord):
    cases = {
        # A prediction computed only for some rows could fail on a shard for a row skipped here.
        "SELECT id, CASE WHEN id % 2 = 0 THEN flock.predict('gb', d) END FROM {} d": "only for some rows",
        # Text comparisons depend on the shard database's collation.
        "SELECT id, flock.predict('gb', d) FROM {} d WHERE id::text < '5'": "WHERE condition",
        # A whole row outside a prediction.
        "SELECT d, flock.predict('gb', d) FROM {} d": "whole row",
        "SELECT id, flock.predict('gb', d) FROM {} d WHERE id IN (SELECT 1)": None,
    }
    with coord.cursor() as cur:
        cur.execute("SET client_min_messages = debug1")
        try:
            for q, why in cases.items():
                del coord.notices[:]
                plan = plan_of(coord, q.format("d"))
                assert "Flock Remote SQL" not in plan, plan
                if why:
                    assert any("predictions not planned on shards" in n and why in n for n in coord.notices), coord.notices
        finally:
            cur.execute("RESET client_min_messages")
    for q in cases:
        assert sorted(rows(coord, q.format("d")), key=repr) == sorted(rows(coord, q.format("d_local")), key=repr)
    # In a transaction block the shards' own connections would not see its writes: left alone, so
    # the query sees them as on one node (plain predictions and aggregates alike).
    coord.autocommit = False
    try:
        with coord.cursor() as cur:
            cur.execute("INSERT INTO d SELECT id + 1000000, age, sex, bmi, bp, s1, s2, s3, s4, s5, s6 FROM d_local WHERE id <= 3")
            for q in ("SELECT id, flock.predict('gb', d) FROM d WHERE id > 1000000",
                      "SELECT count(flock.predict('gb', d)) FROM d WHERE id > 1000000"):
                cur.execute("EXPLAIN " + q)
                assert "on_shards" not in "\n".join(r[0] for r in cur.fetchall())
                cur.execute(q)
                assert len(cur.fetchall()) == (3 if "count" not in q else 1)
            cur.execute("SELECT count(flock.predict('gb', d)) FROM d WHERE id > 1000000")
            assert cur.fetchone()[0] == 3
    finally:
        coord.rollback()
        coord.autocommit = True
    # A statement planned onto the shards earlier and executed after this transaction wrote is
    # stopped (0A000, with a hint), never answered from data the transaction has changed.
    with coord.cursor() as cur:
        cur.execute("PREPARE planned_early AS SELECT id, flock.predict('gb', d) FROM d WHERE id > 1000000")
        cur.execute("EXPLAIN EXECUTE planned_early")
        assert "_send_to_shards" in "\n".join(r[0] for r in cur.fetchall())
        cur.execute("PREPARE aggregated_early AS SELECT count(flock.predict('gb', d)) FROM d WHERE id > 1000000")
        cur.execute("EXPLAIN EXECUTE aggregated_early")
        assert "on_shards" in "\n".join(r[0] for r in cur.fetchall())
    for statement in ("planned_early", "aggregated_early"):
        coord.autocommit = False
        try:
            with coord.cursor() as cur:
                cur.execute("INSERT INTO d SELECT id + 1000000, age, sex, bmi, bp, s1, s2, s3, s4, s5, s6 "
                            "FROM d_local WHERE id <= 3")
            err = sqlstate(coord, f"EXECUTE {statement}")
            assert err.pgcode == "0A000" and err.diag.message_hint, err
        finally:
            coord.rollback()
            coord.autocommit = True
    with coord.cursor() as cur:
        cur.execute("EXECUTE planned_early")
        assert cur.fetchall() == []
        cur.execute("EXECUTE aggregated_early")
        assert cur.fetchall() == [(0,)]
        cur.execute("DEALLOCATE planned_early; DEALLOCATE aggregated_early")
    # A statement with a parameter in WHERE stays here as well, with the same rows.
    with coord.cursor() as cur:
        cur.execute("PREPARE scan_param(real) AS SELECT id, flock.predict('gb', d) FROM d WHERE bmi > $1")
        try:
            cur.execute("EXPLAIN (VERBOSE) EXECUTE scan_param(0)")
            assert "Flock Remote SQL" not in "\n".join(r[0] for r in cur.fetchall())
            cur.execute("EXECUTE scan_param(0)")
            assert sorted(cur.fetchall()) == sorted(rows(coord, "SELECT id, flock.predict('gb', d) FROM d_local d WHERE bmi > 0"))
        finally:
            cur.execute("DEALLOCATE scan_param")


def test_a_view_with_predictions_is_scored_on_the_shards_as_its_owner_reads_it(coord, nodes):
    local = sorted(rows(coord, "SELECT id, flock.predict('gb', d) FROM d_local d WHERE flock.predict('gb', d) > 120"))
    with coord.cursor() as cur:
        cur.execute("CREATE VIEW scored_view AS SELECT id, flock.predict('gb', d) AS p FROM d")
    try:
        q = "SELECT id, p FROM scored_view WHERE p > 120"
        assert "Flock Remote SQL" in plan_of(coord, q)
        assert sorted(rows(coord, q)) == local
        # Owned by another role: postgres_fdw reads the table with the owner's user mappings,
        # where the shards' connections would use the caller's. Left alone.
        with coord.cursor() as cur:
            cur.execute("DROP ROLE IF EXISTS view_owner; CREATE ROLE view_owner; GRANT SELECT ON d TO view_owner; "
                        "ALTER VIEW scored_view OWNER TO view_owner")
            for s in nodes.shards:
                cur.execute(f"CREATE USER MAPPING FOR view_owner SERVER {s.settings['cluster_name']} "
                            "OPTIONS (user 'postgres', password_required 'false')")
            cur.execute("SELECT flock.grant_model('gb', 'view_owner', 'use')")
            cur.execute("SET client_min_messages = debug1")
            del coord.notices[:]
            plan = plan_of(coord, q)
            cur.execute("RESET client_min_messages")
        assert "Flock Remote SQL" not in plan, plan
        assert any("read as another role" in n for n in coord.notices), coord.notices
        assert sorted(rows(coord, q)) == local
    finally:
        with coord.cursor() as cur:
            cur.execute("DROP VIEW IF EXISTS scored_view")


def test_plain_insert_select_and_create_table_as_score_on_the_shards(coord):
    select = "SELECT id, flock.predict('gb', d) AS p FROM {} d WHERE flock.predict('gb', d) > 100"
    local = rows(coord, select.format("d_local"))
    with coord.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS plain_ctas, plain_ins")
        assert "Flock Remote SQL" in plan_of(coord, "CREATE TABLE plain_ctas AS " + select.format("d"))
        cur.execute("CREATE TABLE plain_ctas AS " + select.format("d"))
        cur.execute("CREATE TABLE plain_ins (id int, p float8)")
        assert "Flock Remote SQL" in plan_of(coord, "INSERT INTO plain_ins " + select.format("d"))
        cur.execute("INSERT INTO plain_ins " + select.format("d"))
    assert by_id(rows(coord, "SELECT * FROM plain_ctas")) == by_id(local)
    assert by_id(rows(coord, "SELECT * FROM plain_ins")) == by_id(local)
    assert len(local) == one(coord, "SELECT count(*) FROM plain_ins")


def test_a_role_dblink_would_refuse_is_left_to_postgres_fdw(coord, nodes):
    # A non-superuser whose user mappings carry no password: postgres_fdw may connect for it
    # (password_required 'false', set by a superuser), dblink never does. The rewrites leave its
    # queries alone, and they give the one-node results through postgres_fdw.
    with coord.cursor() as cur:
        cur.execute("DROP ROLE IF EXISTS scan_reader; CREATE ROLE scan_reader LOGIN; "
                    "GRANT SELECT ON d, d_local TO scan_reader")
        for s in nodes.shards:
            cur.execute(f"CREATE USER MAPPING FOR scan_reader SERVER {s.settings['cluster_name']} "
                        "OPTIONS (user 'scan_reader', password_required 'false')")
            shard = psycopg2.connect(conninfo(s, DB))
            shard.autocommit = True
            try:
                with shard.cursor() as sc:
                    sc.execute("DROP ROLE IF EXISTS scan_reader; CREATE ROLE scan_reader LOGIN; GRANT SELECT ON d TO scan_reader")
            finally:
                shard.close()
        cur.execute("SELECT flock.grant_model('gb', 'scan_reader', 'use')")
    c = psycopg2.connect(conninfo(nodes.coordinator, DB).replace("user=postgres", "user=scan_reader"))
    c.autocommit = True
    try:
        for q in ("SELECT id, flock.predict('gb', d) FROM {} d WHERE bmi > 0",
                  "SELECT sum(flock.predict('gb', d)::numeric) FROM {} d"):
            with c.cursor() as cur:
                cur.execute("SET client_min_messages = debug1")
                del c.notices[:]
                plan = plan_of(c, q.format("d"))
                cur.execute("RESET client_min_messages")
            assert "Flock Remote SQL" not in plan and "On Shards" not in plan, plan
            assert any("no password in the user mapping" in n for n in c.notices), c.notices
            assert sorted(rows(c, q.format("d"))) == sorted(rows(c, q.format("d_local")))
        # A model the role may not use: the one-node error.
        local = sqlstate(c, "SELECT id, flock.predict('colors', d) FROM d_local d")
        assert local.pgcode in ("42501", "42704")
        assert sqlstate(c, "SELECT id, flock.predict('colors', d) FROM d").pgcode == local.pgcode
    finally:
        c.close()


def test_errors_on_a_shard_are_the_one_node_errors_naming_the_shard(coord):
    # A linear model refuses NULL inputs (22004) on one node; on the shards too, with the shard named.
    local = sqlstate(coord, "SELECT flock.predict('lin', d) FROM d_local d")
    err = sqlstate(coord, "SELECT * FROM flock.on_shards('d', 'SELECT flock.predict(%1$s, d) FROM d', 'lin') AS r(p float8)")
    assert err.pgcode == local.pgcode == "22004"
    assert err.diag.message_primary.startswith('shard "shard')
    err = sqlstate(coord, f"SELECT flock.predict_pinned({pin(coord, 'lin')}, d) FROM d")
    assert err.pgcode == "22004"
    # Written plainly, scored on the shards: the one-node error, with the shard's connection named
    # in its context (the rows come straight from dblink, which reports it so).
    err = sqlstate(coord, "SELECT id, flock.predict('lin', d) FROM d")
    assert err.pgcode == "22004" and 'dblink connection named "flock_shard_shard' in err.diag.context, err.diag.context


def test_a_malformed_pin_is_refused_as_an_unprivileged_role_too(coord, nodes):
    with coord.cursor() as cur:
        cur.execute("DROP ROLE IF EXISTS dist_reader; CREATE ROLE dist_reader LOGIN")
    c = psycopg2.connect(conninfo(nodes.coordinator, DB).replace("user=postgres", "user=dist_reader"))
    c.autocommit = True
    try:
        for conn in (coord, c):
            err = sqlstate(conn, "SELECT flock.predict_pinned('gb@1#abc', ARRAY[1]::float4[])")
            assert err.pgcode == "22023" and err.diag.message_hint
            err = sqlstate(conn, "SELECT 'gb@1'::flock.pinned")
            assert err.pgcode == "22023"
        # A model the role may not use: pinned or not, the error flock.predict gives.
        refused = sqlstate(c, "SELECT flock.predict('gb', ARRAY[1,2,3,4,5,6,7,8,9,10]::float4[])")
        assert refused.pgcode in ("42501", "42704")
        assert sqlstate(c, "SELECT flock.pin('gb')").pgcode == refused.pgcode
        err = sqlstate(c, f"SELECT flock.predict_pinned({pin(coord, 'gb')}, ARRAY[1,2,3,4,5,6,7,8,9,10]::float4[])")
        assert err.pgcode == refused.pgcode
        # Setting up shards is for the administrator.
        err = sqlstate(c, "CALL flock.add_shard('x', '/tmp', 1, 'x', 'x')")
        assert err.pgcode == "42501"
        # on_shards reads the table as a query would: the role needs SELECT on it here.
        err = sqlstate(c, "SELECT * FROM flock.on_shards('d', 'SELECT count(*) n FROM d') AS r(n bigint)")
        assert err.pgcode == "42501" == sqlstate(c, "SELECT count(*) FROM d").pgcode
        with coord.cursor() as cur:
            cur.execute("GRANT SELECT ON d TO dist_reader")
        # A connection kept for one role is not reused by another (SET ROLE in the same session).
        with coord.cursor() as cur:
            cur.execute("SELECT * FROM flock.on_shards('d', 'SELECT count(*) n FROM d') AS r(n bigint)")
            cur.execute("GRANT dist_reader TO postgres")
            cur.execute("SET ROLE dist_reader")
            try:
                err = sqlstate(coord, "SELECT * FROM flock.on_shards('d', 'SELECT count(*) n FROM d') AS r(n bigint)")
                assert err.pgcode == "2F003"
            finally:
                cur.execute("RESET ROLE")
        # Then a role without a user mapping for the shards gets dblink's refusal, naming the shard.
        err = sqlstate(c, "SELECT * FROM flock.on_shards('d', 'SELECT count(*) n FROM d') AS r(n bigint)")
        assert err.diag.message_primary.startswith('shard "shard1"'), err.diag.message_primary
        assert err.pgcode == "2F003"
    finally:
        c.close()


def test_a_new_version_reaches_every_shard_within_the_bound(coord, nodes):
    # A statement prepared before the new version pinned the old one; it is planned again after.
    filtered = f"SELECT count(*) FROM d WHERE flock.predict('gb', {ARRAY}) > 150"
    with coord.cursor() as cur:
        cur.execute(f"PREPARE latest_gb AS {filtered}")
        cur.execute("EXECUTE latest_gb")
    with open(os.path.join(MODELS, "diabetes_tree.onnx"), "rb") as f:
        started = time.monotonic()
        ref = one(coord, "SELECT flock.register_model('gb', %s)", (f.read(),))
    waited = one(coord, "SELECT extract(epoch FROM flock.wait_for_shards(%s, %s::interval))",
                 (ref, f"{CATALOG_BOUND_SECONDS} seconds"))
    assert waited < CATALOG_BOUND_SECONDS and time.monotonic() - started < CATALOG_BOUND_SECONDS
    p = pin(coord, "gb")
    assert ref in p
    dist = rows(coord, f"SELECT id, flock.predict_pinned({p}, d) FROM d")
    assert by_id(dist) == by_id(rows(coord, f"SELECT id, flock.predict('{ref}', d) FROM d_local d"))
    assert one(coord, "EXECUTE latest_gb") == one(coord, filtered.replace("FROM d ", "FROM d_local "))
    with coord.cursor() as cur:
        cur.execute("DEALLOCATE latest_gb")


def test_a_version_a_shard_lacks_is_an_error_naming_it(coord, nodes):
    shard2 = psycopg2.connect(conninfo(nodes.shards[1], DB))
    shard2.autocommit = True
    try:
        with shard2.cursor() as cur:
            cur.execute("ALTER SUBSCRIPTION flock_catalog DISABLE")
        with open(os.path.join(MODELS, "diabetes_rf.onnx"), "rb") as f:
            ref = one(coord, "SELECT flock.register_model('rf', %s)", (f.read(),))
        p = pin(coord, ref)
        # The other shards get it; shard2 does not.
        for shard in (nodes.shards[0], nodes.shards[2]):
            other = psycopg2.connect(conninfo(shard, DB))
            try:
                deadline = time.monotonic() + CATALOG_BOUND_SECONDS
                while not one(other, "SELECT count(*) FROM flock.models WHERE name = 'rf'"):
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            finally:
                other.close()
        err = sqlstate(coord, f"SELECT count(*) FROM d WHERE flock.predict_pinned({p}, {ARRAY}) > 0")
        assert err.pgcode == "42704" and 'node "shard2"' in err.diag.message_primary, err.diag.message_primary
        err = sqlstate(coord, f"SELECT * FROM flock.on_shards('d', 'SELECT flock.predict(%1$s, {ARRAY}) p FROM d', 'rf') "
                              "AS r(p float8)")
        assert err.pgcode == "42704" and "shard2" in err.diag.message_primary
        # A plain select list, scored on the shards with the version planned here: the same error.
        assert "Flock Remote SQL" in plan_of(coord, f"SELECT id, flock.predict('rf', {ARRAY}) FROM d")
        err = sqlstate(coord, f"SELECT id, flock.predict('rf', {ARRAY}) FROM d")
        assert err.pgcode == "42704" and 'node "shard2"' in err.diag.message_primary, err.diag.message_primary
        err = sqlstate(coord, "SELECT flock.wait_for_shards('rf', '0.3 seconds')")
        assert err.pgcode == "57014" and "shard2" in err.diag.message_primary
        # Bytes that differ from the pin (a forged sha256) are refused, never used instead.
        forged = p[:-65] + "0" * 64 + "'"
        err = sqlstate(coord, f"SELECT count(*) FROM d WHERE flock.predict_pinned({forged}, {ARRAY}) > 0")
        assert err.pgcode == "42704" and "node" in err.diag.message_primary
    finally:
        with shard2.cursor() as cur:
            cur.execute("ALTER SUBSCRIPTION flock_catalog ENABLE")
        shard2.close()
    one(coord, "SELECT flock.wait_for_shards('rf', %s::interval)", (f"{CATALOG_BOUND_SECONDS} seconds",))
    assert one(coord, f"SELECT count(*) FROM d WHERE flock.predict_pinned({pin(coord, 'rf')}, {ARRAY}) > 0") == \
        one(coord, f"SELECT count(*) FROM d_local d WHERE flock.predict('rf', {ARRAY}) > 0")


def test_dropping_a_version_in_use_behaves_as_on_one_node(coord):
    with open(os.path.join(MODELS, "diabetes_xgb.json"), "rb") as f:
        ref = one(coord, "SELECT flock.register_model('xgb', %s)", (f.read(),))
    one(coord, "SELECT flock.wait_for_shards(%s, %s::interval)", (ref, f"{CATALOG_BOUND_SECONDS} seconds"))
    p = pin(coord, ref)
    q = f"SELECT count(*) FROM d WHERE flock.predict_pinned({p}, {ARRAY}) > 150"
    before = one(coord, q)
    assert before == one(coord, f"SELECT count(*) FROM d_local d WHERE flock.predict('{ref}', {ARRAY}) > 150")
    # A prepared statement planned with the version keeps the pin, as one node's keeps the name.
    with coord.cursor() as cur:
        cur.execute(f"PREPARE dist_q AS {q}")
        cur.execute(f"PREPARE local_q AS SELECT count(*) FROM d_local d WHERE flock.predict('{ref}', {ARRAY}) > 150")
        cur.execute("SELECT flock.drop_model('xgb', 1)")
    # The drop reaches the shards; then the next query fails as on one node (42704), naming a shard.
    local = sqlstate(coord, "EXECUTE local_q")
    deadline = time.monotonic() + CATALOG_BOUND_SECONDS
    while True:
        try:
            one(coord, "EXECUTE dist_q")
        except psycopg2.Error as err:
            dist = err
            break
        assert time.monotonic() < deadline, "the drop did not reach the shards"
        time.sleep(0.05)
    assert dist.pgcode == local.pgcode == "42704" and 'node "shard' in dist.diag.message_primary
    with coord.cursor() as cur:
        cur.execute("DEALLOCATE dist_q; DEALLOCATE local_q")


def test_a_shard_that_is_down_is_an_error_naming_it(coord, nodes):
    # Last: stops shard3.
    shard3 = nodes.shards[2]
    subprocess.run(["runuser", "-u", "postgres", "--"] * shard3.as_postgres +
                   [f"{os.environ.get('FLOCK_PG_BIN', '/usr/lib/postgresql/15/bin')}/pg_ctl", "-D", shard3.datadir,
                    "-m", "immediate", "-w", "stop"], check=True, capture_output=True)
    shard3.running = False
    # A fresh session: the coordinator's cached connections to shard3 are gone either way.
    c = psycopg2.connect(conninfo(nodes.coordinator, DB))
    c.autocommit = True
    try:
        err = sqlstate(c, "SELECT count(*) FROM d")
        assert 'server "shard3"' in err.diag.message_primary
        err = sqlstate(c, f"SELECT id FROM d WHERE flock.predict_pinned({pin(c, 'gb')}, {ARRAY}) > 150")
        assert 'server "shard3"' in err.diag.message_primary
        err = sqlstate(c, "SELECT * FROM flock.on_shards('d', 'SELECT count(*) FROM d') AS r(n bigint)")
        assert err.diag.message_primary.startswith('shard "shard3"')
        # Predictions as written, planned on the shards: the same, no partial answer.
        assert "Flock Remote SQL" in plan_of(c, "SELECT id, flock.predict('gb', d) FROM d")
        err = sqlstate(c, "SELECT id, flock.predict('gb', d) FROM d")
        assert err.diag.message_primary.startswith('shard "shard3"'), err.diag.message_primary
        status = {r[0]: r[1] for r in rows(c, "SELECT shard, reachable FROM flock.distribution_status()")}
        assert status == {"shard1": True, "shard2": True, "shard3": False}
    finally:
        c.close()


def test_removing_a_shard_drops_its_subscription_slot_and_partitions(coord, nodes):
    # After the shard-down test: shard1 is still up.
    with coord.cursor() as cur:
        cur.execute("CALL flock.remove_shard('shard1')")
    assert [r[0] for r in rows(coord, "SELECT name FROM flock.shards ORDER BY name")] == ["shard2", "shard3"]
    assert one(coord, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'flock_shard1'") == 0
    assert one(coord, "SELECT count(*) FROM pg_foreign_server WHERE srvname = 'shard1'") == 0
    assert one(coord, "SELECT to_regclass('d_shard1') IS NULL")
    shard1 = psycopg2.connect(conninfo(nodes.shards[0], DB))
    try:
        assert one(shard1, "SELECT count(*) FROM pg_subscription") == 0
    finally:
        shard1.close()
    err = sqlstate(coord, "CALL flock.remove_shard('shard1')")
    assert err.pgcode == "42704"


def test_scoring_on_shards_needs_postgres_fdw_and_dblink(nodes):
    nodes.coordinator.psql("CREATE DATABASE flock_nofdw")
    c = psycopg2.connect(conninfo(nodes.coordinator, "flock_nofdw"))
    c.autocommit = True
    try:
        one(c, "SELECT count(*) FROM pg_extension WHERE extname = 'plpgsql'")
        with c.cursor() as cur:
            cur.execute("CREATE EXTENSION flock")
        err = sqlstate(c, "SELECT flock.create_distributed_table('x', 'id int', 'id')")
        assert err.pgcode == "0A000" and "CREATE EXTENSION postgres_fdw;" in err.diag.message_hint
        err = sqlstate(c, "CALL flock.add_shard('s', '/tmp', 1, 'x', 'x')")
        assert err.pgcode == "0A000" and "dblink" in err.diag.message_primary
    finally:
        c.close()
