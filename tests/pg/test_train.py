"""flock.train (issue 16): training in the database against the libraries' own training.

Oracles: XGBoost's Python xgboost.train (/usr/bin/python3, Debian python3-xgboost) on the same
rows, split and parameters, and scikit-learn's Ridge / LogisticRegression. The split is drawn here
from its documented rule (held_out below), independently of the C++ code.
"""
import json
import math
import threading
import time

import numpy as np
import psycopg2
import pytest

from test_catalog import one, rows, sqlstate

xgb = pytest.importorskip("xgboost")
sklearn_linear = pytest.importorskip("sklearn.linear_model")

M64 = (1 << 64) - 1
FEATURES = ["f0", "f1", "f2", "f3", "f4"]
ROLES = ("train_owner", "train_other")


def splitmix64(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def held_out(seed, i, test_fraction):
    """The documented split: row i is held out when u < test_fraction."""
    x = (((seed & 0xFFFFFFFF) << 32) + i) & M64
    return (splitmix64(x) >> 11) * 2.0 ** -53 < test_fraction


def make_data(n=600, seed=7):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    x[rng.random(size=x.shape) < 0.05] = np.nan  # missing values, NULL in SQL
    x[:, 4] = np.round(x[:, 4] * 3)  # an integer-valued column
    z = np.nan_to_num(x[:, 0]) * 1.5 - np.nan_to_num(x[:, 1]) + 0.5 * np.nan_to_num(x[:, 2]) ** 2
    reg = (z + rng.normal(scale=0.3, size=n)).astype(np.float32)
    binary = (z + rng.normal(scale=0.5, size=n) > 0.3).astype(np.int32)
    multi = np.digitize(z + rng.normal(scale=0.4, size=n), [-0.5, 0.8]).astype(np.int32)
    return x, reg, binary, multi


def sql_value(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


@pytest.fixture(scope="module")
def data(cluster, dbname):
    x, reg, binary, multi = make_data()
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE train_src (id int PRIMARY KEY, f0 real, f1 float8, f2 numeric, f3 real, "
                    "f4 integer, reg float8, bin integer, multi integer)")
        # Inserted in an order different from id's, so "the data's order" is the table's, not id's.
        order = list(range(len(x)))[::2] + list(range(len(x)))[1::2]
        for i in order:
            cur.execute("INSERT INTO train_src VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                        [i] + [sql_value(float(v)) for v in x[i, :4]]
                        + [None if math.isnan(x[i, 4]) else int(x[i, 4])]
                        + [float(reg[i]), int(binary[i]), int(multi[i])])
        for role in ROLES:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if not cur.fetchone():
                cur.execute(f"CREATE ROLE {role} LOGIN")
        cur.execute("GRANT SELECT ON train_src TO train_owner, train_other")
    conn.close()
    return {"order": order, "x": x, "reg": reg, "bin": binary, "multi": multi}


def python_xgboost(data, target, params, seed=0, test_fraction=0.2):
    """xgboost.train on the rows in the table's order, split as documented."""
    order = data["order"]
    x = data["x"][order]
    y = data[target][order].astype(np.float32)
    test = np.array([held_out(seed, i, test_fraction) for i in range(len(order))])
    params = dict(params)
    rounds = params.pop("num_boost_round", 10)
    early = params.pop("early_stopping_rounds", None)
    dtrain = xgb.DMatrix(x[~test], label=y[~test], missing=np.nan, feature_names=FEATURES)
    dtest = xgb.DMatrix(x[test], label=y[test], missing=np.nan, feature_names=FEATURES)
    kw = {}
    if early:
        kw = {"evals": [(dtest, "test")], "early_stopping_rounds": early, "verbose_eval": False}
    booster = xgb.train(list_params(params), dtrain, num_boost_round=rounds, **kw)
    return booster, test


def list_params(params):
    """A dict with list values as xgboost.train takes repeated parameters: a list of pairs."""
    if not any(isinstance(v, list) for v in params.values()):
        return params
    return [(k, x) for k, v in params.items() for x in (v if isinstance(v, list) else [v])]


def every_row(data):
    return xgb.DMatrix(data["x"], missing=np.nan, feature_names=FEATURES)


CASES = [
    ("reg", {"objective": "reg:squarederror", "max_depth": 4, "eta": 0.3, "num_boost_round": 25, "nthread": 1}),
    ("bin", {"objective": "binary:logistic", "max_depth": 3, "subsample": 0.8, "num_boost_round": 30, "nthread": 1,
             "seed": 3}),
    ("multi", {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "num_boost_round": 20, "nthread": 1}),
    ("bin", {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 6, "eta": 0.5,
             "num_boost_round": 200, "early_stopping_rounds": 5, "nthread": 1}),
    # A maximized metric decides the stop (auc), a list sets a parameter twice (eval_metric).
    ("bin", {"objective": "binary:logistic", "eval_metric": ["logloss", "auc"], "max_depth": 6, "eta": 0.5,
             "num_boost_round": 200, "early_stopping_rounds": 4, "nthread": 1}),
    ("multi", {"objective": "multi:softprob", "num_class": 3, "max_depth": 4, "eta": 0.6, "num_boost_round": 100,
               "early_stopping_rounds": 3, "nthread": 1}),
]


@pytest.mark.parametrize("case", range(len(CASES)), ids=["reg", "binary", "multi", "binary_early_stopping",
                                                         "binary_early_stopping_auc", "multi_early_stopping"])
def test_xgboost_predicts_what_python_xgboost_predicts(conn, data, case):
    target, params = CASES[case]
    name = f"xgb_{target}_{case}"
    ref = one(conn, "SELECT flock.train(%s, 'train_src', %s, 'xgboost', %s, %s, 0.2, 11)",
              (name, target, json.dumps(params), FEATURES))
    assert ref == f"{name}@1"
    booster, _ = python_xgboost(data, target, params, seed=11)
    best = getattr(booster, "best_iteration", None) if "early_stopping_rounds" in params else None
    iteration_range = (0, best + 1) if best is not None else (0, 0)
    want = booster.predict(every_row(data), iteration_range=iteration_range)

    # The stored model is XGBoost's own: loaded back into XGBoost it predicts bit for bit the same.
    stored = xgb.Booster(model_file=bytearray(bytes(one(conn, "SELECT model::bytea FROM flock.models WHERE name = %s",
                                                        (name,)))))
    assert np.array_equal(stored.predict(every_row(data)), want)

    # Flock's own scoring of it, on every row, held as tests/pg/test_fidelity.py holds it.
    call = {"reg": "flock.predict(%s, t)", "bin": "(flock.predict_proba(%s, t))[2]", "multi": "flock.predict_proba(%s, t)"}
    got = dict(rows(conn, f"SELECT id, {call[target]} FROM train_src t", (ref,)))
    flat = np.array([got[i] for i in range(len(data["x"]))], dtype=np.float64)
    # Flock's tree kernel sums in its own order: a few float32 ULPs from XGBoost's predictor.
    want = want.astype(np.float64).reshape(flat.shape)
    assert np.all(np.abs(flat - want) <= 1e-5 * np.maximum(np.abs(want), 1.0)), np.abs(flat - want).max()

    run = rows(conn, "SELECT params, metrics, environment, code FROM flock.training_runs WHERE model_name = %s",
               (name,))
    assert len(run) == 1
    recorded_params, metrics, env, code = run[0]
    assert env["xgboost"] == xgb.__version__
    assert "flock.train" in code
    assert recorded_params["seed"] == 11 and recorded_params["params"]["num_boost_round"] == params["num_boost_round"]
    if target == "reg":
        assert {"rmse", "mae", "r2"} <= metrics.keys()
    else:
        assert {"log_loss", "accuracy"} <= metrics.keys()
    if target == "bin":
        assert "auc" in metrics
    if best is not None:
        assert metrics["best_iteration"] == best
        assert metrics["rounds"] < params["num_boost_round"]
    assert metrics["training_seconds"] >= 0


def held_out_arrays(data, target, seed=0, test_fraction=0.2):
    order = data["order"]
    test = np.array([held_out(seed, i, test_fraction) for i in range(len(order))])
    x = np.nan_to_num(data["x"][order]).astype(np.float64)
    return x, data[target][order].astype(np.float64), test


def test_linear_matches_sklearn_ridge(conn, data):
    conn.cursor().execute("CREATE TABLE IF NOT EXISTS train_dense AS "
                          "SELECT coalesce(f0, 0) AS f0, coalesce(f1, 0) AS f1, coalesce(f2, 0) AS f2, "
                          "coalesce(f3, 0) AS f3, coalesce(f4, 0) AS f4, reg, bin FROM train_src")
    ref = one(conn, "SELECT flock.train('ridge', 'train_dense', 'reg', 'linear', '{\"alpha\": 2.5}', "
                    "ARRAY['f0','f1','f2','f3','f4'], 0.25, 5)")
    x, y, test = held_out_arrays(data, "reg", 5, 0.25)
    oracle = sklearn_linear.Ridge(alpha=2.5).fit(x[~test], y[~test])
    got = np.array([r[0] for r in rows(conn, "SELECT flock.predict(%s, t) FROM train_dense t", (ref,))])
    # train_dense was filled from train_src in its order, so it is x in order.
    want = oracle.predict(x)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_logistic_matches_sklearn(conn, data):
    conn.cursor().execute("CREATE TABLE IF NOT EXISTS train_dense AS "
                          "SELECT coalesce(f0, 0) AS f0, coalesce(f1, 0) AS f1, coalesce(f2, 0) AS f2, "
                          "coalesce(f3, 0) AS f3, coalesce(f4, 0) AS f4, reg, bin FROM train_src")
    ref = one(conn, "SELECT flock.train('logit', 'train_dense', 'bin', 'logistic', '{\"C\": 0.3}', "
                    "ARRAY['f0','f1','f2','f3','f4'], 0.2, 9)")
    x, y, test = held_out_arrays(data, "bin", 9, 0.2)
    oracle = sklearn_linear.LogisticRegression(C=0.3, tol=1e-12, max_iter=100000).fit(x[~test], y[~test])
    got = np.array([r[0] for r in rows(conn, "SELECT (flock.predict_proba(%s, t))[2] FROM train_dense t", (ref,))])
    want = oracle.predict_proba(x)[:, 1]
    assert np.allclose(got, want, rtol=0, atol=1e-5)
    labels = [r[0] for r in rows(conn, "SELECT flock.predict(%s, t) FROM train_dense t", (ref,))]
    assert labels == [float(v) for v in oracle.predict(x)]


def test_multinomial_logistic_matches_sklearn(conn, data):
    ref = one(conn, "SELECT flock.train('logit3', 'SELECT coalesce(f0, 0) AS f0, coalesce(f1, 0) AS f1, "
                    "coalesce(f3, 0) AS f3, multi FROM train_src', 'multi', 'logistic', '{\"C\": 0.5}', NULL, 0.2, 2)")
    order = data["order"]
    x = np.nan_to_num(data["x"][order][:, [0, 1, 3]]).astype(np.float64)
    y = data["multi"][order]
    test = np.array([held_out(2, i, 0.2) for i in range(len(order))])
    oracle = sklearn_linear.LogisticRegression(C=0.5, tol=1e-12, max_iter=100000).fit(x[~test], y[~test])
    got = np.array([r[0] for r in rows(conn, "SELECT flock.predict_proba(%s, t) FROM "
                                             "(SELECT coalesce(f0, 0) AS f0, coalesce(f1, 0) AS f1, coalesce(f3, 0) AS f3 "
                                             "FROM train_src) t", (ref,))])
    assert np.allclose(got, oracle.predict_proba(x), rtol=0, atol=1e-5)
    metrics = one(conn, "SELECT metrics FROM flock.training_runs WHERE model_name = 'logit3'")
    assert {"log_loss", "accuracy"} <= metrics.keys()


def test_lineage_from_table_to_model(conn, data):
    ref = one(conn, "SELECT flock.train('lin_chain', 'SELECT * FROM train_src WHERE id < 400', 'reg', "
                    "params => '{\"num_boost_round\": 3}', features => ARRAY['f0','f1','f2','f3','f4'])")
    ds = rows(conn, "SELECT i.dataset_name, i.dataset_version FROM flock.training_inputs i "
                    "JOIN flock.training_runs r ON r.id = i.run_id WHERE r.model_name = 'lin_chain'")
    assert ds == [("lin_chain", 1)]
    assert one(conn, "SELECT flock.verify_dataset('lin_chain@1')") is True
    assert one(conn, "SELECT row_count FROM flock.datasets WHERE name = 'lin_chain'") == 400
    up = rows(conn, "SELECT from_kind, from_ref, to_kind FROM flock.lineage(%s, 'upstream')", (ref,))
    kinds = {(f, t) for f, _, t in up}
    assert ("table", "training_run") not in kinds
    assert {("table", "dataset"), ("dataset", "training_run"), ("training_run", "model")} <= kinds
    assert any(f == "table" and r.endswith("train_src") for f, r, _ in up)
    events = one(conn, "SELECT flock.openlineage(%s)", (ref,))
    assert "lin_chain@1" in json.dumps(events) and "train_src" in json.dumps(events)
    training = [e for e in events if e["job"]["name"] == "flock.train.lin_chain"]
    assert len(training) == 1
    assert "flock.train('lin_chain'" in training[0]["job"]["facets"]["sql"]["query"]
    assert "rmse" in training[0]["run"]["facets"]["flock_training"]["metrics"]
    # A data set reference trains on that snapshot as it is: no new snapshot.
    again = one(conn, "SELECT flock.train('lin_chain', 'lin_chain@1', 'reg', params => '{\"num_boost_round\": 3}')")
    assert again == "lin_chain@2"
    assert one(conn, "SELECT count(*) FROM flock.datasets WHERE name = 'lin_chain'") == 1


def counts(conn):
    return one(conn, "SELECT row(" + ", ".join(
        f"(SELECT count(*) FROM flock.{t})" for t in ("models", "datasets", "training_runs", "training_inputs"))
        + ")::text")


BAD = [
    ("SELECT flock.train('bad', 'train_src', 'nope')", "42703"),
    ("SELECT flock.train('bad', 'SELECT f0, NULL::float8 AS y FROM train_src', 'y')", "22004"),
    ("SELECT flock.train('bad', 'SELECT f0, id::text AS t, reg FROM train_src', 'reg')", "42804"),
    ("SELECT flock.train('bad', 'train_src', 'reg', params => '{\"max_dpeth\": 3}')", "22023"),
    ("SELECT flock.train('bad', 'train_src', 'reg', params => '{\"max_depth\": \"deep\"}')", "22023"),
    ("SELECT flock.train('bad', 'train_src', 'reg', 'forest')", "22023"),
    ("SELECT flock.train('bad', 'train_src', 'reg', 'linear', '{\"C\": 1}')", "22023"),
    ("SELECT flock.train('bad', 'SELECT * FROM train_src WHERE false', 'reg')", "22023"),
    ("SELECT flock.train('bad', '', 'reg')", "22023"),
    ("SELECT flock.train('bad', 'no_such_table', 'reg')", "42P01"),
    ("SELECT flock.train('bad', 'train_src', 'reg', 'linear')", "22004"),  # NULL features
]


@pytest.mark.parametrize("sql,code", BAD, ids=[c + "_" + str(i) for i, (_, c) in enumerate(BAD)])
def test_bad_input_is_a_clear_error_and_changes_nothing(connect_as, conn, data, sql, code):
    for c in (conn, connect_as("train_owner")):
        before = counts(conn)
        err = sqlstate(c, sql)
        assert err.pgcode == code, err.pgerror
        assert err.diag.message_hint, err.pgerror
        assert counts(conn) == before


def test_a_name_another_role_manages(connect_as, conn, data):
    owner = connect_as("train_owner")
    one(owner, "SELECT flock.train('owned', 'train_src', 'reg', params => '{\"num_boost_round\": 2}')")
    before = counts(conn)
    err = sqlstate(connect_as("train_other"),
                   "SELECT flock.train('owned', 'train_src', 'reg', params => '{\"num_boost_round\": 2}')")
    assert err.pgcode == "42501" and err.diag.message_hint
    assert counts(conn) == before
    # The unprivileged owner sees its own run.
    assert one(owner, "SELECT count(*) FROM flock.training_runs WHERE model_name = 'owned'") == 1


def test_cancel_stops_within_a_second_and_registers_nothing(cluster, dbname, conn, connect_as, data):
    conn.cursor().execute("CREATE TABLE IF NOT EXISTS train_big AS "
                          "SELECT (i % 97)::real AS a, (i % 13)::real AS b, random() AS c, (i % 7)::float8 AS y "
                          "FROM generate_series(1, 100000) i")
    before = counts(conn)
    worker = psycopg2.connect(cluster.dsn(dbname))
    worker.autocommit = True
    pid = one(worker, "SELECT pg_backend_pid()")
    result = {}

    def train():
        try:
            one(worker, "SELECT flock.train('slow', 'train_big', 'y', params => "
                        "'{\"num_boost_round\": 100000, \"max_depth\": 8, \"nthread\": 1}')")
        except psycopg2.Error as e:
            result["error"] = e
        result["done"] = time.monotonic()

    thread = threading.Thread(target=train)
    thread.start()
    progress = None
    for _ in range(300):
        progress = rows(conn, "SELECT model, round, rounds FROM flock.train_progress WHERE pid = %s", (pid,))
        if progress and progress[0][1] >= 2:
            break
        time.sleep(0.1)
    assert progress and progress[0][0] == "slow" and progress[0][2] == 100000
    # Like pg_stat_progress_*: another role does not see a superuser's run.
    assert rows(connect_as("train_other"), "SELECT 1 FROM flock.train_progress WHERE pid = %s", (pid,)) == []
    asked = time.monotonic()
    one(conn, "SELECT pg_cancel_backend(%s)", (pid,))
    thread.join(30)
    assert result["error"].pgcode == "57014"
    assert result["done"] - asked < 1.0
    assert counts(conn) == before
    assert rows(conn, "SELECT 1 FROM flock.train_progress WHERE pid = %s", (pid,)) == []
    worker.close()


def test_memory_limit_is_a_clear_error(conn, data):
    conn.cursor().execute("SET flock.train_memory = '1MB'")
    conn.cursor().execute("CREATE TABLE IF NOT EXISTS train_wide AS "
                          "SELECT i::real AS a, (i * 2)::real AS b, (i % 3)::float8 AS y FROM generate_series(1, 50000) i")
    before = counts(conn)
    err = sqlstate(conn, "SELECT flock.train('wide', 'train_wide', 'y')")
    assert err.pgcode == "54000" and "flock.train_memory" in err.diag.message_hint
    assert counts(conn) == before
    conn.cursor().execute("RESET flock.train_memory")


def test_notice_every_n_rounds(conn, data):
    conn.cursor().execute("SET flock.train_notice_rounds = 5")
    del conn.notices[:]
    one(conn, "SELECT flock.train('noisy', 'train_src', 'reg', params => '{\"num_boost_round\": 10}')")
    assert sum("round" in n for n in conn.notices) == 2
    del conn.notices[:]
    one(conn, "SELECT flock.train('noisy_early', 'train_src', 'bin', params => "
              "'{\"objective\": \"binary:logistic\", \"eta\": 1, \"max_depth\": 8, \"num_boost_round\": 500, "
              "\"early_stopping_rounds\": 3}')")
    best = one(conn, "SELECT (metrics->>'best_iteration')::int + 1 FROM flock.training_runs WHERE model_name = 'noisy_early'")
    assert any(f"stopped early, keeping round {best}" in n for n in conn.notices), conn.notices
    conn.cursor().execute("RESET flock.train_notice_rounds")


def test_statement_timeout_stops_training(cluster, dbname, conn, data):
    conn.cursor().execute("CREATE TABLE IF NOT EXISTS train_big AS "
                          "SELECT (i % 97)::real AS a, (i % 13)::real AS b, random() AS c, (i % 7)::float8 AS y "
                          "FROM generate_series(1, 100000) i")
    before = counts(conn)
    worker = psycopg2.connect(cluster.dsn(dbname))
    worker.autocommit = True
    worker.cursor().execute("SET statement_timeout = '3s'")
    started = time.monotonic()
    err = sqlstate(worker, "SELECT flock.train('slow_timeout', 'train_big', 'y', params => "
                           "'{\"num_boost_round\": 100000, \"max_depth\": 8, \"nthread\": 1}')")
    assert err.pgcode == "57014" and "statement timeout" in err.diag.message_primary
    assert time.monotonic() - started < 4.0
    assert counts(conn) == before
    worker.close()


def test_default_nthread_is_what_one_query_may_use(conn, data):
    conn.cursor().execute("SET max_parallel_workers_per_gather = 3")
    one(conn, "SELECT flock.train('threads', 'train_src', 'reg', params => '{\"num_boost_round\": 2}', "
              "features => ARRAY['f0','f1'])")
    conn.cursor().execute("RESET max_parallel_workers_per_gather")
    limit = one(conn, "SELECT least(3, current_setting('max_parallel_workers')::int) + 1")
    assert one(conn, "SELECT params->'params'->'nthread' FROM flock.training_runs WHERE model_name = 'threads'") == limit


def test_the_fit_reads_snapshots_only(conn, connect_as, data):
    """A heap scan would bypass row-level security: _train_fit takes flock_data tables only."""
    conn.cursor().execute("CREATE TABLE IF NOT EXISTS train_secret AS SELECT * FROM train_src")
    conn.cursor().execute("ALTER TABLE train_secret ENABLE ROW LEVEL SECURITY")
    conn.cursor().execute("GRANT SELECT ON train_secret TO train_other")
    err = sqlstate(connect_as("train_other"), "SELECT * FROM flock._train_fit('train_secret', 'reg', NULL, "
                                              "'xgboost', '{}', 0.2, 0, 'x')")
    assert err.pgcode == "42809" and err.diag.message_hint
    # Through flock.train the snapshot runs the query as the caller, policies applied: no rows here.
    err = sqlstate(connect_as("train_other"), "SELECT flock.train('secret', 'train_secret', 'reg')")
    assert err.pgcode == "22023" and "no rows" in err.diag.message_primary


VARIED = [
    "SELECT * FROM train_src",
    "SELECT g, g % 3 AS dup FROM generate_series(1, 20000) g",  # three chunks of 8192
    "SELECT 1 AS one FROM generate_series(1, 9000)",  # duplicate rows
    "SELECT 1 AS x WHERE false",  # no rows
    "SELECT 'Grüße, \"quoted\", (x)'::text AS txt, NULL::int AS n, 1.5::numeric(10,3) AS d, "
    "'2026-12-03 05:00:00+02'::timestamptz AS ts, '\\x00ff'::bytea AS b, ARRAY[1.5, NULL]::float8[] AS a, "
    "'{\"k\": [1, 2]}'::jsonb AS j, interval '1 day 2 hours' AS i, 'NaN'::real AS nan, 1e-40::real AS tiny",
]


@pytest.mark.parametrize("query", VARIED, ids=["table", "chunks", "duplicates", "empty", "types"])
def test_fast_snapshot_hash_is_the_sql_definition(conn, data, query):
    """flock._table_hash's heap-scan path against its SQL definition, kept as _table_hash_sql, for
    the 'text' definition; the recorded hash (definition 'binary', written while the rows were)
    against its Python oracle over binary COPY (test_dataset_hash.py)."""
    from test_dataset_hash import binary_oracle
    conn.cursor().execute("SET TimeZone = 'America/New_York'; SET DateStyle = 'German'; SET extra_float_digits = 0")
    ref = one(conn, "SELECT flock.snapshot_dataset(%s, %s)", ("hashed_" + str(abs(hash(query)) % 10**8), query))
    table, recorded, method = rows(conn, "SELECT table_name, content_hash, hash_method FROM flock.datasets "
                                         "WHERE name || '@' || version = %s", (ref,))[0]
    fast = rows(conn, "SELECT row_count, content_hash FROM flock._table_hash(%s::regclass, 'text')", (table,))[0]
    oracle = rows(conn, "SELECT row_count, content_hash FROM flock._table_hash_sql(%s::regclass)", (table,))[0]
    assert fast == oracle
    assert method == "binary" and recorded == binary_oracle(conn, table)
    assert one(conn, "SELECT flock.verify_dataset(%s)", (ref,)) is True
    conn.cursor().execute("RESET TimeZone; RESET DateStyle; RESET extra_float_digits")


def test_snapshot_hash_of_a_column_named_t(conn, data):
    """The SQL definition's `t::text` over `FROM rel t` hashes column t, not the row, when the table
    has a column named t; the heap-scan path hashes the row, as the source check (C) does, so
    verify_dataset's two checks agree."""
    ref = one(conn, "SELECT flock.snapshot_dataset('col_t', 'SELECT ''plain''::text AS t, 1 AS y')")
    report = one(conn, "SELECT flock.verify_dataset_report(%s)", (ref,))
    assert report["stored"]["ok"] and report["source"]["ok"], report


def test_the_fit_takes_the_rows_as_the_snapshot_wrote_them(conn, data):
    """Training on a table reads the rows once: the snapshot keeps the numeric columns as it writes
    them and the fit takes those (DEBUG1 says so). The model is the one trained on the same data set
    version read back from its table (a data set reference: no snapshot, no capture), byte for byte."""
    params = json.dumps(CASES[1][1])
    with conn.cursor() as cur:
        cur.execute("SET client_min_messages = debug1")
        del conn.notices[:]
        cur.execute("SELECT flock.train('captured', 'train_src', 'bin', 'xgboost', %s, %s, 0.2, 11)", (params, FEATURES))
        assert any("rows taken as the snapshot wrote them" in n for n in conn.notices), conn.notices
        del conn.notices[:]
        cur.execute("SELECT flock.train('read_back', 'captured@1', 'bin', 'xgboost', %s, %s, 0.2, 11)", (params, FEATURES))
        assert not any("rows taken as the snapshot wrote them" in n for n in conn.notices)
        cur.execute("RESET client_min_messages")
    captured, read_back = (bytes(one(conn, "SELECT model::bytea FROM flock.models WHERE name = %s", (n,)))
                           for n in ("captured", "read_back"))
    assert captured == read_back
