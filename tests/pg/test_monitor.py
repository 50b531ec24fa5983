"""flock.drift, flock.monitor, flock.schedule_monitor (issue 14): every statistic equals scipy's /
numpy's on the same data (ties, empty bins, unequal sizes, the exact and asymptotic KS p-values),
the inference-log windows, the pg_cron job, and clear errors (also as an unprivileged role)."""
import csv
import os

import numpy as np
import psycopg2
import pytest

from onnx_builders import dense_relu, linear_regressor, stump_classifier
from test_catalog import one, rows, run, sqlstate

scipy_stats = pytest.importorskip("scipy.stats")

MODELS = os.environ.get("FLOCK_MODELS_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build", "models"))
DRIFT_COLUMNS = ("feature", "role", "kind", "n_baseline", "n_current", "psi", "ks_statistic", "ks_pvalue",
                 "chi2", "chi2_dof", "chi2_pvalue", "drifted")
PSI_EPSILON = 1e-4


# ---- the oracle: numpy / scipy ------------------------------------------------------------------

def usable(values):
    a = np.array([v for v in values if v is not None], dtype=np.float64)
    return a[np.isfinite(a)]


def psi_numeric(base, cur):
    cuts = np.unique(np.quantile(base, np.array([k / 10 for k in range(1, 10)])))
    b = np.bincount(np.searchsorted(cuts, base, side="left"), minlength=len(cuts) + 1) / len(base)
    c = np.bincount(np.searchsorted(cuts, cur, side="left"), minlength=len(cuts) + 1) / len(cur)
    b, c = np.maximum(b, PSI_EPSILON), np.maximum(c, PSI_EPSILON)
    return float(np.sum((c - b) * np.log(c / b)))


def categorical_oracle(base, cur):
    base = [v for v in base if v is not None]
    cur = [v for v in cur if v is not None]
    cats = sorted(set(base) | set(cur))
    table = np.array([[base.count(k) for k in cats], [cur.count(k) for k in cats]], dtype=np.float64)
    b = np.maximum(table[0] / len(base), PSI_EPSILON)
    c = np.maximum(table[1] / len(cur), PSI_EPSILON)
    psi = float(np.sum((c - b) * np.log(c / b)))
    if len(cats) == 1:
        return psi, 0.0, 0, 1.0
    chi2, p, dof, _ = scipy_stats.chi2_contingency(table, correction=False)
    return psi, chi2, dof, p


def numeric_oracle(base, cur):
    base, cur = usable(base), usable(cur)
    ks = scipy_stats.ks_2samp(base, cur)
    return psi_numeric(base, cur), ks.statistic, ks.pvalue


def check_row(row, base, cur, psi_threshold=0.2, p_threshold=0.05):
    r = dict(zip(DRIFT_COLUMNS, row))
    if r["kind"] == "numeric":
        psi, d, p = numeric_oracle(base, cur)
        assert r["n_baseline"] == len(usable(base)) and r["n_current"] == len(usable(cur))
        assert r["psi"] == pytest.approx(psi, rel=1e-9, abs=1e-12), r["feature"]
        assert r["ks_statistic"] == pytest.approx(d, rel=1e-12, abs=1e-15), r["feature"]
        assert r["ks_pvalue"] == pytest.approx(p, rel=1e-7, abs=1e-14), r["feature"]
        assert r["chi2"] is None
        assert r["drifted"] == (psi > psi_threshold or p < p_threshold)
    else:
        psi, chi2, dof, p = categorical_oracle(base, cur)
        assert r["psi"] == pytest.approx(psi, rel=1e-9, abs=1e-12), r["feature"]
        assert r["chi2"] == pytest.approx(chi2, rel=1e-9, abs=1e-12), r["feature"]
        assert r["chi2_dof"] == dof
        assert r["chi2_pvalue"] == pytest.approx(p, rel=1e-7, abs=1e-14), r["feature"]
        assert r["ks_statistic"] is None
        assert r["drifted"] == (psi > psi_threshold or p < p_threshold)
    return r


def column(conn, sql, args=None):
    return [r[0] for r in rows(conn, sql, args)]


# ---- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def setup(cluster, dbname):
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    run(conn, "SELECT flock.register_model('lin', %s)", (linear_regressor([1.0, 10.0], 0.5, ["a", "b"]),))
    run(conn, "SELECT flock.register_model('stump', %s)", (stump_classifier(0, 2.5, feature_names=["a", "b"]),))
    run(conn, "SELECT flock.register_model('dense2', %s)", (dense_relu([[1.0, 2.0], [3.0, 4.0]], [0.0, 1.0]),))
    # Baseline: a with heavy ties (integers 0..9), b continuous. Current: a shifted so that several
    # baseline bins are empty, b wider, plus a NaN that the statistics leave out (NULL inputs: the customers data).
    run(conn, "CREATE TABLE base (id int, a float8, b real, c text)")
    run(conn, "INSERT INTO base SELECT g, g % 10, sin(g)::real, CASE WHEN g % 3 = 0 THEN 'x' ELSE 'y' END "
              "FROM generate_series(1, 400) g")
    run(conn, "CREATE TABLE cur (id int, a float8, b real, c text)")
    run(conn, "INSERT INTO cur SELECT g, 7 + g % 4, (1.5 * cos(g))::real, CASE WHEN g % 2 = 0 THEN 'x' "
              "WHEN g % 5 = 0 THEN 'z' ELSE 'y' END FROM generate_series(1, 123) g")
    run(conn, "INSERT INTO cur VALUES (1000, 3, 0.25, NULL), (1001, 'NaN', 0.5, 'y')")
    run(conn, "SELECT flock.snapshot_dataset('base', 'SELECT * FROM base')")
    run(conn, "CREATE TABLE empty_base (a float8, b real)")
    # The customers data: numeric and text inputs of a scikit-learn pipeline, with NULLs.
    with open(os.path.join(MODELS, "customers.csv")) as f:
        data = list(csv.DictReader(f))
    run(conn, "CREATE TABLE customers (id int, age int, income float8, tenure_months int, monthly_spend float8, "
              "support_calls int, plan text, region text, target int)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO customers VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        [tuple(r[k] if r[k] != "" else None for k in
                               ("id", "age", "income", "tenure_months", "monthly_spend", "support_calls", "plan",
                                "region", "target")) for r in data])
    with open(os.path.join(MODELS, "customers_pipeline_logreg.onnx"), "rb") as f:
        run(conn, "SELECT flock.register_model('churn', %s)", (f.read(),))
    run(conn, "DROP ROLE IF EXISTS drift_analyst")
    run(conn, "CREATE ROLE drift_analyst LOGIN")
    conn.close()


def drift(conn, model, baseline, current, *args):
    extra = "".join(", %s" for _ in args)
    return rows(conn, f"SELECT * FROM flock.drift(%s, %s, %s{extra})", (model, baseline, current, *args))


# ---- drift ----------------------------------------------------------------------------------------

def test_numeric_drift_matches_scipy_with_ties_and_empty_bins(conn):
    result = drift(conn, "lin", "base@1", "SELECT * FROM cur")
    assert [r[0] for r in result] == ["a", "b", "prediction"]
    assert [r[1] for r in result] == ["input", "input", "prediction"]
    base = {k: column(conn, f"SELECT {k} FROM base ORDER BY id") for k in ("a", "b")}
    cur = {k: column(conn, f"SELECT {k} FROM cur ORDER BY id") for k in ("a", "b")}
    for r in result[:2]:
        check_row(r, base[r[0]], cur[r[0]])
    # The current a sits in baseline bins 7..9 only: most bins are empty (epsilon), and ties put
    # tied values in one bin.
    cuts = np.unique(np.quantile(usable(base["a"]), [k / 10 for k in range(1, 10)]))
    assert np.bincount(np.searchsorted(cuts, usable(cur["a"])), minlength=len(cuts) + 1).tolist().count(0) >= 5
    # The prediction: the model's own predictions on both sides, checked against the formula.
    base_pred = column(conn, "SELECT flock.predict('lin', t) FROM base t ORDER BY id")
    cur_pred = column(conn, "SELECT flock.predict('lin', t) FROM cur t ORDER BY id")
    formula = np.float32(np.float32(base["a"]) + np.float32(10) * np.float32(base["b"]) + np.float32(0.5))
    assert np.allclose(base_pred, formula, rtol=1e-6, atol=1e-5)
    check_row(result[2], base_pred, cur_pred)


def test_thresholds_set_the_flags(conn):
    result = drift(conn, "lin", "base@1", "TABLE cur", 100.0, 0.0)
    assert not any(r[-1] for r in result)
    base = {k: column(conn, f"SELECT {k} FROM base") for k in ("a", "b")}
    cur = {k: column(conn, f"SELECT {k} FROM cur") for k in ("a", "b")}
    for r in result[:2]:
        check_row(r, base[r[0]], cur[r[0]], 100.0, 0.0)


def test_classifier_prediction_drift_is_chi_squared_on_labels(conn):
    result = drift(conn, "stump", "base", "TABLE cur")
    pred = dict(zip(DRIFT_COLUMNS, result[-1]))
    assert pred["kind"] == "categorical"
    base = column(conn, "SELECT flock.predict_label('stump', t) FROM base t")
    cur = column(conn, "SELECT flock.predict_label('stump', t) FROM cur t")
    check_row(result[-1], base, cur)


def test_categorical_inputs_and_nulls_match_scipy(conn):
    base_q = "SELECT * FROM customers WHERE id % 3 <> 0"
    cur_q = "SELECT * FROM customers WHERE id % 3 = 0 AND (plan <> 'basic' OR id % 2 = 0)"
    result = drift(conn, "churn", base_q, cur_q)
    features = [r[0] for r in result]
    assert features == ["age", "income", "tenure_months", "monthly_spend", "support_calls", "plan", "region",
                        "prediction"]
    for r in result:
        if r[1] == "prediction":
            b = column(conn, f"SELECT flock.predict_label('churn', t) FROM ({base_q}) t")
            c = column(conn, f"SELECT flock.predict_label('churn', t) FROM ({cur_q}) t")
        else:
            b = column(conn, f"SELECT {r[0]} FROM ({base_q}) t")
            c = column(conn, f"SELECT {r[0]} FROM ({cur_q}) t")
        got = check_row(r, b, c)
        assert got["kind"] == ("categorical" if r[0] in ("plan", "region", "prediction") else "numeric")
    assert dict(zip(DRIFT_COLUMNS, result[5]))["drifted"]  # plan: 'basic' mostly removed


def test_single_category_gives_zero_chi_squared(conn):
    result = drift(conn, "churn", "SELECT * FROM customers WHERE plan = 'basic' AND id < 200",
                   "SELECT * FROM customers WHERE plan = 'basic' AND id >= 200")
    plan = dict(zip(DRIFT_COLUMNS, [r for r in result if r[0] == "plan"][0]))
    assert (plan["chi2"], plan["chi2_dof"], plan["chi2_pvalue"], plan["psi"]) == (0.0, 0, 1.0, 0.0)


def test_ks_exact_unequal_sizes_and_asymptotic_beyond_ten_thousand(conn):
    # Exact (scipy's method='auto' up to 10000 values): unequal sizes with ties.
    for n_base, n_cur, step in ((37, 53, 0.7), (400, 10000, 0.01), (250, 250, 0.03)):
        b = column(conn, "SELECT round((random() * 50)::numeric, 0)::float8 FROM generate_series(1, %s)", (n_base,))
        c = column(conn, "SELECT round((random() * 50 + %s * g / %s)::numeric, 1)::float8 FROM generate_series(1, %s) g",
                   (step, n_cur, n_cur))
        r = one(conn, "SELECT row_to_json(x) FROM flock._drift_numeric(%s, %s) x", (b, c))
        ks = scipy_stats.ks_2samp(b, c)
        assert r["ks_method"] == "exact"
        assert r["ks_statistic"] == pytest.approx(ks.statistic, rel=1e-12)
        assert r["ks_pvalue"] == pytest.approx(ks.pvalue, rel=1e-9, abs=1e-300)
        assert r["psi"] == pytest.approx(psi_numeric(np.array(b), np.array(c)), rel=1e-9, abs=1e-12)
    # Asymptotic beyond 10000 values: scipy's kstwo.sf(D, round(en)), each of its algorithms
    # (Durbin's matrix, Pomeranz, Pelz-Good, Smirnov's sum, the Ruben-Gambino ends) reached by
    # the sample sizes and shifts below, ties included.
    cases = ((20000, 30000, 0.0), (20000, 30000, 0.004), (20000, 30000, 0.02), (3000, 10001, 0.0),
             (12000, 100, 0.0), (12000, 100, 0.1), (12000, 100, 0.15), (12000, 100, 0.3), (10001, 40, 0.05), (10001, 3, 0.0), (10001, 1, 0.0),
             (10050, 10050, 0.003))
    seen = set()
    run(conn, "SELECT setseed(0.25)")  # the same draws every run, so every branch is reached
    for n_base, n_cur, shift in cases:
        b = column(conn, "SELECT round(random()::numeric, 3)::float8 FROM generate_series(1, %s)", (n_base,))
        c = column(conn, "SELECT round((random() * (1 + %s) + %s)::numeric, 3)::float8 FROM generate_series(1, %s)",
                   (shift, shift / 2, n_cur))
        r = one(conn, "SELECT row_to_json(x) FROM flock._drift_numeric(%s, %s) x", (b, c))
        ks = scipy_stats.ks_2samp(b, c)
        assert r["ks_method"] == "asymptotic"
        assert r["ks_statistic"] == pytest.approx(ks.statistic, rel=1e-12)
        assert r["ks_pvalue"] == pytest.approx(ks.pvalue, rel=1e-9, abs=1e-300), (n_base, n_cur, shift)
        seen.add(kstwo_branch(round(n_base * n_cur / (n_base + n_cur)), ks.statistic))
    # Two even grids, one bent slightly (u -> u^1.005): a D small enough for Durbin's matrix.
    b = column(conn, "SELECT round((g::float8 / 20000)::numeric, 4)::float8 FROM generate_series(1, 20000) g")
    c = column(conn, "SELECT round(((g::float8 / 30000) ^ 1.005)::numeric, 4)::float8 FROM generate_series(1, 30000) g")
    r = one(conn, "SELECT row_to_json(x) FROM flock._drift_numeric(%s, %s) x", (b, c))
    ks = scipy_stats.ks_2samp(b, c)
    assert r["ks_pvalue"] == pytest.approx(ks.pvalue, rel=1e-9)
    seen.add(kstwo_branch(12000, ks.statistic))
    assert {"durbin", "pomeranz", "pelz-good", "smirnov", "ruben-gambino"} <= seen, seen


def kstwo_branch(n, x):
    """Which algorithm scipy 1.10.1's _kolmogn uses for kstwo.sf(x, n) (scipy/stats/_ksstats.py)."""
    t = n * x
    if t <= 1 or t >= n - 1:
        return "ruben-gambino"
    if x >= 0.5:
        return "smirnov"
    if n <= 140:
        return "durbin" if t * x <= 0.754693 else "pomeranz" if t * x <= 4 else "smirnov"
    if t * x >= 2.2:
        return "smirnov"
    return "durbin" if n <= 100000 and n * x ** 1.5 <= 1.4 else "pelz-good"


# ---- monitor over the inference log --------------------------------------------------------------

def test_monitor_windows_of_the_inference_log_match_scipy(conn):
    run(conn, "SELECT flock.set_audit('lin', 'all')")
    assert one(conn, "SELECT count(flock.predict('lin', t)) FROM cur t") == 125
    assert one(conn, "SELECT flock.audit_flush()") is True
    result = rows(conn, "SELECT row_to_json(r) FROM flock.monitor('lin', 'base@1', '1 hour', now() - interval '3 hours') r")
    result = [r[0] for r in result]
    # Only the last window holds predictions: the two earlier ones are empty and get no rows.
    assert {r["feature"] for r in result} == {"a", "b", "prediction"}
    assert len({r["window_start"] for r in result}) == 1
    assert len({r["run_id"] for r in result}) == 1
    stored = one(conn, "SELECT count(*) FROM flock.monitor_results WHERE run_id = %s", (result[0]["run_id"],))
    assert stored == 3
    # The log holds the values as the model saw them (float4).
    f32 = lambda vs: [None if v is None else float(np.float32(v)) for v in vs]
    base = {k: column(conn, f"SELECT {k} FROM base") for k in ("a", "b")}
    cur = {k: f32(column(conn, f"SELECT {k} FROM cur")) for k in ("a", "b")}
    base["prediction"] = column(conn, "SELECT flock.predict('lin', t) FROM base t")
    cur["prediction"] = column(conn, "SELECT flock.predict('lin', t) FROM cur t")
    for r in result:
        check_row(tuple(r[k] for k in DRIFT_COLUMNS), base[r["feature"]], cur[r["feature"]])
    run(conn, "SELECT flock.set_audit('lin', 'off')")


def test_monitor_errors(conn):
    e = sqlstate(conn, "SELECT * FROM flock.monitor('stump', 'base@1', '1 hour', now() - interval '1 day')")
    assert e.pgcode == "22023" and "no predictions of stump@1 are logged" in e.pgerror
    assert "flock.set_audit" in e.diag.message_hint
    e = sqlstate(conn, "SELECT * FROM flock.monitor('lin', 'base@1', '0 hours', now() - interval '1 day')")
    assert e.pgcode == "22023" and e.diag.message_hint
    e = sqlstate(conn, "SELECT * FROM flock.monitor('lin', 'base@1', '1 hour', now() + interval '1 day')")
    assert e.pgcode == "22023"
    e = sqlstate(conn, "SELECT * FROM flock.monitor('lin', 'base@1', '1 hour', NULL)")
    assert e.pgcode == "22023"


def test_schedule_monitor_outside_the_cron_database_says_what_to_run(conn, dbname):
    e = sqlstate(conn, "SELECT flock.schedule_monitor('lin', 'base@1', '1 hour', '0 * * * *')")
    assert e.pgcode == "55000"
    assert "cron.schedule_in_database" in e.diag.message_hint and dbname in e.diag.message_hint


def test_schedule_monitor_makes_a_cron_job_run_as_its_role(cluster):
    """In the cron database (cron.database_name = postgres): the job row exists, owned by the
    scheduling role; its command, run directly, stores results for that role."""
    conn = psycopg2.connect(cluster.dsn("postgres"))
    conn.autocommit = True
    had_cron = one(conn, "SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'") == 1
    try:
        run(conn, "CREATE EXTENSION IF NOT EXISTS pg_cron")
        run(conn, "CREATE EXTENSION flock")
        run(conn, "DROP ROLE IF EXISTS cron_analyst")
        run(conn, "CREATE ROLE cron_analyst LOGIN")
        run(conn, "GRANT USAGE ON SCHEMA cron TO cron_analyst")
        run(conn, "SELECT flock.register_model('lin', %s)", (linear_regressor([1.0, 10.0], 0.5, ["a", "b"]),))
        run(conn, "SELECT flock.grant_model('lin', 'cron_analyst', 'manage')")
        run(conn, "CREATE TABLE pts AS SELECT g % 7 AS a, (g % 3)::real AS b FROM generate_series(1, 50) g")
        run(conn, "GRANT SELECT ON pts TO cron_analyst")
        analyst = psycopg2.connect(cluster.dsn("postgres", user="cron_analyst"))
        analyst.autocommit = True
        job = one(analyst, "SELECT flock.schedule_monitor('lin', 'TABLE pts', '1 hour', '0 * * * *')")
        name, user, command, database = rows(conn, "SELECT jobname, username, command, database FROM cron.job "
                                                   "WHERE jobid = %s", (job,))[0]
        assert (name, user, database) == ("flock_monitor:lin", "cron_analyst", "postgres")
        assert "flock.monitor('lin', 'TABLE pts', '01:00:00'::interval" in command
        # What the job does, as the job's role: the predictions of the last hour.
        run(conn, "SELECT flock.set_audit('lin', 'all')")
        assert one(analyst, "SELECT count(flock.predict('lin', p)) FROM pts p") == 50
        assert one(analyst, "SELECT flock.audit_flush()") is True
        assert one(analyst, command) == 3
        assert one(conn, "SELECT array_agg(DISTINCT computed_by) FROM flock.monitor_results") == ["cron_analyst"]
        assert one(analyst, "SELECT flock.unschedule_monitor('lin')") is True
        assert one(conn, "SELECT count(*) FROM cron.job WHERE jobid = %s", (job,)) == 0
        analyst.close()
    finally:
        run(conn, "DROP EXTENSION IF EXISTS flock CASCADE")
        run(conn, "DROP TABLE IF EXISTS pts")
        run(conn, "DELETE FROM cron.job WHERE username = 'cron_analyst'")
        run(conn, "DROP OWNED BY cron_analyst")
        run(conn, "DROP ROLE IF EXISTS cron_analyst")
        if not had_cron:
            run(conn, "DROP EXTENSION IF EXISTS pg_cron")
        conn.close()


# ---- errors ---------------------------------------------------------------------------------------

def drift_error(conn, model, baseline, current):
    return sqlstate(conn, "SELECT * FROM flock.drift(%s, %s, %s)", (model, baseline, current))


def test_drift_errors_are_clear(conn):
    e = drift_error(conn, "lin", "base@1", "SELECT id, a FROM cur")
    assert e.pgcode == "42703" and 'column "b" does not exist in the current data' in e.pgerror
    assert "id, a" in e.diag.message_hint
    e = drift_error(conn, "lin", "TABLE empty_base", "TABLE cur")
    assert e.pgcode == "22023" and "the baseline has no rows" in e.pgerror and e.diag.message_hint
    e = drift_error(conn, "lin", "base@1", "SELECT * FROM cur WHERE false")
    assert e.pgcode == "22023" and "the current data has no rows" in e.pgerror
    e = drift_error(conn, "lin", "base@1", "SELECT NULL::float8 AS a, b FROM cur")
    assert e.pgcode == "22023" and 'feature "a" has no values in the current data' in e.pgerror
    e = drift_error(conn, "lin", "base@1", "SELECT a, 'NaN'::float8 AS b FROM cur")
    assert e.pgcode == "22023" and 'feature "b" has no values in the current data' in e.pgerror
    e = drift_error(conn, "lin", "base@1", "SELECT 1e38::float8 AS a, 1e38::float8 AS b FROM cur")  # float4 overflow
    assert e.pgcode == "22023" and "model lin@1 predicts no number on the current data" in e.pgerror
    e = drift_error(conn, "dense2", "SELECT 1.0 AS a, 2.0 AS b", "SELECT 1.0 AS a, 3.0 AS b")
    assert e.pgcode == "42804" and "no numeric output" in e.pgerror and e.diag.message_hint
    e = drift_error(conn, "lin", "nosuch@1", "TABLE cur")
    assert e.pgcode == "42704" and e.diag.message_hint
    e = drift_error(conn, "lin", None, "TABLE cur")
    assert e.pgcode == "22004"
    e = drift_error(conn, "lin", "SELECT now() AS a, b FROM base", "TABLE cur")
    assert e.pgcode == "42804" and e.diag.message_hint
    e = sqlstate(conn, "SELECT * FROM flock.drift('lin', 'base@1', 'TABLE cur', 'NaN', 0.05)")
    assert e.pgcode == "22023"
    e = drift_error(conn, "nomodel", "base@1", "TABLE cur")
    assert e.pgcode == "42704"


def test_errors_as_an_unprivileged_role(conn, connect_as):
    analyst = connect_as("drift_analyst")
    # No use of the model: the same error as a model that does not exist.
    e = drift_error(analyst, "lin", "base@1", "TABLE cur")
    assert e.pgcode == "42501"
    run(conn, "SELECT flock.grant_model('lin', 'drift_analyst')")
    # The model, but not the data: the data set and the table are read as the caller.
    e = drift_error(analyst, "lin", "base@1", "TABLE cur")
    assert e.pgcode == "42501" and e.diag.message_hint
    run(conn, "GRANT SELECT ON base, cur, empty_base TO drift_analyst")
    e = drift_error(analyst, "lin", "TABLE base", "SELECT id, a FROM cur")
    assert e.pgcode == "42703" and e.diag.message_hint
    e = drift_error(analyst, "lin", "TABLE empty_base", "TABLE cur")
    assert e.pgcode == "22023"
    assert len(drift(analyst, "lin", "TABLE base", "TABLE cur")) == 3
    # The inference log's rows of others are not the analyst's: nothing to monitor.
    e = sqlstate(analyst, "SELECT * FROM flock.monitor('lin', 'TABLE base', '1 hour', now() - interval '1 day')")
    assert e.pgcode == "22023" and "no predictions" in e.pgerror
    assert one(analyst, "SELECT count(*) FROM flock.monitor_results") == 0
    run(conn, "SELECT flock.revoke_model('lin', 'drift_analyst')")


def test_monitor_of_a_classifier_compares_logged_labels(conn):
    run(conn, "SELECT flock.set_audit('stump', 'all')")
    assert one(conn, "SELECT count(flock.predict_label('stump', t)) FROM cur t WHERE id % 2 = 0") == 62
    assert one(conn, "SELECT count(flock.predict('stump', t)) FROM cur t WHERE id % 2 = 1") == 63
    assert one(conn, "SELECT flock.audit_flush()") is True
    result = [r[0] for r in rows(conn, "SELECT row_to_json(r) FROM flock.monitor('stump', 'base@1', '1 day', "
                                       "now() - interval '1 day') r")]
    by_feature = {r["feature"]: r for r in result}
    assert set(by_feature) == {"a", "b", "prediction"}
    pred = by_feature["prediction"]
    assert pred["kind"] == "categorical" and pred["n_current"] == 125
    base = column(conn, "SELECT flock.predict_label('stump', t) FROM base t")
    cur = column(conn, "SELECT flock.predict_label('stump', t) FROM cur t")
    check_row(tuple(pred[k] for k in DRIFT_COLUMNS), base, cur)
    run(conn, "SELECT flock.set_audit('stump', 'off')")


def test_boolean_features_are_categorical_in_drift_and_in_the_log(conn):
    base_q = "SELECT id, a, b > 0 AS b FROM base"
    cur_q = "SELECT id, a, b > 0.6 AS b FROM cur"
    result = {r[0]: r for r in drift(conn, "lin", base_q, cur_q)}
    assert result["b"][2] == "categorical"
    to01 = lambda vs: [None if v is None else str(int(v)) for v in vs]
    base_b = to01(column(conn, f"SELECT b FROM ({base_q}) t"))
    cur_b = to01(column(conn, f"SELECT b FROM ({cur_q}) t"))
    check_row(result["b"], base_b, cur_b)
    # The log holds what the model saw (1 / 0): the monitor compares the same categories.
    run(conn, "SELECT flock.register_model('lin_bool', %s)", (linear_regressor([1.0, 10.0], 0.5, ["a", "b"]),))
    run(conn, "CREATE TABLE cur_bool AS " + cur_q)
    run(conn, "SELECT flock.set_audit('lin_bool', 'all')")
    assert one(conn, "SELECT count(flock.predict('lin_bool', t)) FROM cur_bool t") == 125
    assert one(conn, "SELECT flock.audit_flush()") is True
    run(conn, "SELECT flock.set_audit('lin_bool', 'off')")
    monitored = [r[0] for r in rows(conn, "SELECT row_to_json(r) FROM flock.monitor('lin_bool', %s, '1 hour', "
                                          "now() - interval '1 hour') r WHERE feature = 'b'", (base_q,))]
    assert len(monitored) == 1
    check_row(tuple(monitored[0][k] for k in DRIFT_COLUMNS), base_b, cur_b)


def test_models_without_names_read_their_first_columns_and_names_match_ignoring_case(conn):
    run(conn, "SELECT flock.register_model('anon', %s)", (linear_regressor([1.0, 100.0], 0.0),))
    result = drift(conn, "anon", "SELECT a, b, c, id FROM base", "SELECT a, b, c, id FROM cur")
    assert [r[0] for r in result] == ["a", "b", "prediction"]
    base = column(conn, "SELECT flock.predict('anon', ROW(a, b)) FROM base")
    cur = column(conn, "SELECT flock.predict('anon', ROW(a, b)) FROM cur")
    check_row(result[-1], base, cur)
    result = drift(conn, "lin", 'SELECT a AS "A", b AS "B" FROM base', "TABLE cur")
    assert [r[0] for r in result] == ["a", "b", "prediction"]
    check_row(result[0], column(conn, "SELECT a FROM base"), column(conn, "SELECT a FROM cur"))


def test_monitor_windows_from_log_rows_with_known_times(conn):
    """Log rows written directly (as the writer would) at chosen times: windows 1 and 3 of four hold
    predictions, window 2 and 4 none; the log's feature order differs from the model's (bound by
    name), text features come from input_text, labels from output_label."""
    since = one(conn, "SELECT date_trunc('hour', now()) - interval '4 hours'")
    cols = ["age", "income", "tenure_months", "monthly_spend", "support_calls", "plan", "region"]
    logged_order = list(reversed(cols))
    batches = {0: "SELECT * FROM customers WHERE id % 4 = 1 AND id < 400",
               2: "SELECT * FROM customers WHERE id % 4 = 2 AND plan <> 'basic'"}
    for window, query in batches.items():
        data = rows(conn, f"SELECT {', '.join(logged_order)}, flock.predict_label('churn', t) FROM ({query}) t")
        numbers = [[None if isinstance(v, str) else v for v in r[:-1]] for r in data]
        texts = [[v if isinstance(v, str) else None for v in r[:-1]] for r in data]
        run(conn, "INSERT INTO flock.inference_log (logged_at, role, model_name, model_version, function, n_rows, "
                  "features, input, input_text, output_label) VALUES (%s + %s * interval '1 hour' + interval '10 min', "
                  "current_user, 'churn', 1, 'predict_label', %s, %s, %s::float8[], %s::text[], %s)",
            (since, window, len(data), logged_order, numbers, texts, [r[-1] for r in data]))
    result = [r[0] for r in rows(conn, "SELECT row_to_json(r) FROM flock.monitor('churn', "
                                       "'SELECT * FROM customers WHERE id >= 400', '1 hour', %s) r", (since,))]
    starts = sorted({r["window_start"] for r in result})
    assert len(starts) == 2  # windows 0 and 2; 1 and 3 are empty
    base_q = "SELECT * FROM customers WHERE id >= 400"
    for window, query in batches.items():
        got = {r["feature"]: r for r in result if r["window_start"] == starts[0 if window == 0 else 1]}
        assert set(got) == set(cols) | {"prediction"}
        for feature in cols:
            check_row(tuple(got[feature][k] for k in DRIFT_COLUMNS), column(conn, f"SELECT {feature} FROM ({base_q}) t"),
                      column(conn, f"SELECT {feature} FROM ({query}) t"))
        check_row(tuple(got["prediction"][k] for k in DRIFT_COLUMNS),
                  column(conn, f"SELECT flock.predict_label('churn', t) FROM ({base_q}) t"),
                  column(conn, f"SELECT flock.predict_label('churn', t) FROM ({query}) t"))


def test_predictions_made_by_the_analysis_are_not_traffic(conn):
    """drift / monitor / fairness predict the baseline (and drift the current data): an audited
    model's log records those predictions, and flock.monitor leaves them out of its windows."""
    run(conn, "SELECT flock.set_audit('lin', 'all')")
    assert one(conn, "SELECT count(flock.predict('lin', t)) FROM cur t") == 125
    assert one(conn, "SELECT flock.audit_flush()") is True
    logged = lambda: one(conn, "SELECT coalesce(sum(n_rows), 0) FROM flock.inference_log WHERE model_name = 'lin'")
    monitor = "SELECT feature, n_current FROM flock.monitor('lin', 'base@1', '1 hour', now() - interval '1 hour') " \
              "ORDER BY feature"
    before = logged()
    first = rows(conn, monitor)
    assert len(drift(conn, "lin", "base@1", "TABLE cur")) == 3
    assert one(conn, "SELECT flock.audit_flush()") is True
    assert logged() == before + 400 + 400 + 125  # the monitor's baseline, drift's baseline and current
    assert rows(conn, monitor) == first
    assert one(conn, "SELECT count(*) FROM flock.monitor_statements WHERE model_name = 'lin'") >= 3
    run(conn, "SELECT flock.set_audit('lin', 'off')")
