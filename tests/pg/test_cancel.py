"""Cancellable inference and memory budgets (issue 11, attack 4): query cancel and
statement_timeout stop a model run whatever flock.batch_size says, a batch never takes more than
flock.batch_memory, and the model cache stays within flock.model_cache_memory.

Everything runs as an ordinary LOGIN role, as the attack did. The latency bound asserted here (one
second past the timeout) is a safety net; bench/cancel.py measures the latency itself."""
import json
import threading
import time

import psycopg2
import pytest

from cancel_models import FEATURES, mlp, score_query, xgboost_trees
from test_catalog import one

ROLE = "cancel_user"      # registers the models; granted SET on the memory limits
PLAIN = "cancel_plain"    # an ordinary role and nothing more
ROWS = 1_000_000
HUGE_BATCH = 1 << 20  # flock.batch_size's maximum: the batch is capped by flock.batch_memory instead
TIMEOUT_MS = 1000
SLACK_S = 1.0


@pytest.fixture(scope="module", autouse=True)
def models(cluster, dbname):
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE ROLE {ROLE} LOGIN")
        cur.execute(f"CREATE ROLE {PLAIN} LOGIN")
        # The memory limits are the administrator's; the tests that change them get the right to.
        cur.execute(f"GRANT SET ON PARAMETER flock.batch_memory, flock.model_cache_memory TO {ROLE}")
    conn.close()
    user = psycopg2.connect(cluster.dsn(dbname, user=ROLE))
    user.autocommit = True
    with user.cursor() as cur:
        cur.execute("SELECT flock.register_model('trees', %s)", (xgboost_trees(),))
        cur.execute("SELECT flock.register_model('mlp', %s)", (mlp(),))
    user.close()


def settings(conn, **gucs):
    with conn.cursor() as cur:
        for name, value in gucs.items():
            cur.execute(f"SET {name} = %s", (str(value),))


def explain_json(conn, sql):
    with conn.cursor() as cur:
        cur.execute("EXPLAIN (FORMAT JSON) " + sql)
        return cur.fetchone()[0][0]["Plan"]


def batch_node(plan):
    if plan.get("Custom Plan Provider") == "FlockBatchScore":
        return plan
    for child in plan.get("Plans", []):
        found = batch_node(child)
        if found:
            return found
    return None


def timed_cancel(conn, sql):
    """Runs sql, which must be cancelled; returns (error, seconds it ran)."""
    start = time.monotonic()
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.QueryCanceled) as err:
            cur.execute(sql)
    return err.value, time.monotonic() - start


@pytest.mark.parametrize("model", ["trees", "mlp"])
@pytest.mark.parametrize("batch_size", [256, HUGE_BATCH])
def test_statement_timeout_stops_scoring(connect_as, model, batch_size):
    conn = connect_as(ROLE)
    settings(conn, **{"flock.batch_size": batch_size})
    sql = score_query(model, ROWS)
    assert batch_node(explain_json(conn, sql)), "the query is scored by the batch node"
    settings(conn, statement_timeout=TIMEOUT_MS)
    err, took = timed_cancel(conn, sql)
    assert err.pgcode == "57014"
    assert "statement timeout" in err.pgerror
    assert took < TIMEOUT_MS / 1000 + SLACK_S, f"{model} at batch {batch_size}: cancelled after {took:.2f} s"
    # The backend is fine afterwards, and the model still scores.
    settings(conn, statement_timeout=0)
    assert one(conn, score_query(model, 300)) is not None


@pytest.mark.parametrize("model", ["trees", "mlp"])
def test_pg_cancel_backend_stops_scoring(connect_as, model):
    conn = connect_as(ROLE)
    other = connect_as(ROLE)  # a role may cancel its own backends
    settings(conn, **{"flock.batch_size": HUGE_BATCH})
    pid = conn.get_backend_pid()
    sql = score_query(model, ROWS)
    result = {}

    def run():
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
            result["error"] = None
        except psycopg2.Error as e:
            result["error"] = e
        result["end"] = time.monotonic()

    worker = threading.Thread(target=run)
    worker.start()
    # Wait until the query is running in the backend, then give it time to reach a model run.
    deadline = time.monotonic() + 10
    while one(other, "SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)) != "active":
        assert time.monotonic() < deadline, "the query never started"
        time.sleep(0.01)
    time.sleep(0.5)
    asked = time.monotonic()
    assert one(other, "SELECT pg_cancel_backend(%s)", (pid,))
    worker.join(30)
    assert not worker.is_alive()
    err = result["error"]
    assert err is not None, "the query ended before the cancel: score more rows"
    assert err.pgcode == "57014", err
    assert "user request" in err.pgerror
    assert result["end"] - asked < SLACK_S, f"cancelled {result['end'] - asked:.2f} s after the request"


def test_batch_size_is_capped_by_batch_memory(connect_as):
    conn = connect_as(ROLE)
    assert one(conn, "SHOW flock.batch_memory") == "64MB"
    settings(conn, **{"flock.batch_size": HUGE_BATCH})
    # The setting is kept as given; the batch node uses as many rows as fit in flock.batch_memory.
    assert one(conn, "SHOW flock.batch_size") == str(HUGE_BATCH)
    sizes = {}
    for model in ("trees", "mlp"):
        node = batch_node(explain_json(conn, score_query(model, 10)))
        sizes[model] = node["Batch Size"]
        # A row takes at least its 28 float features.
        assert 1 <= sizes[model] <= 64 * 1024 * 1024 // (len(FEATURES) * 4)
    # The MLP keeps two 1024-wide hidden layers per row: far fewer rows fit than for the trees.
    assert sizes["mlp"] * 2 * 1024 * 4 <= 64 * 1024 * 1024
    assert sizes["mlp"] < sizes["trees"]
    # Halving the budget halves the rows (within rounding).
    settings(conn, **{"flock.batch_memory": "32MB"})
    half = batch_node(explain_json(conn, score_query("mlp", 10)))["Batch Size"]
    assert abs(half - sizes["mlp"] // 2) <= 1
    # A small batch_size is kept as it is.
    settings(conn, **{"flock.batch_size": 100})
    assert batch_node(explain_json(conn, score_query("mlp", 10)))["Batch Size"] == 100
    # And a capped batch gives the same results as small batches.
    settings(conn, **{"flock.batch_size": HUGE_BATCH, "flock.batch_memory": "1MB"})
    capped = one(conn, score_query("mlp", 3000))
    settings(conn, **{"flock.batch_size": 7})
    assert one(conn, score_query("mlp", 3000)) == pytest.approx(capped, rel=1e-6)


def test_only_the_administrator_raises_the_memory_limits(connect_as):
    conn = connect_as(PLAIN)
    with conn.cursor() as cur:
        for guc in ("flock.batch_memory", "flock.model_cache_memory"):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(f"SET {guc} = '1TB'")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(f"SET {guc} = '1MB'")
        # flock.batch_size stays open to every role: it is capped by the limit anyway.
        cur.execute(f"SET flock.batch_size = {HUGE_BATCH}")


def test_batch_memory_rejects_nonsense(connect_as):
    conn = connect_as(ROLE)
    with conn.cursor() as cur:
        for bad in ("0", "-1", "100kB"):
            with pytest.raises(psycopg2.errors.InvalidParameterValue):
                cur.execute(f"SET flock.batch_memory = '{bad}'")
            with pytest.raises(psycopg2.errors.InvalidParameterValue):
                cur.execute(f"SET flock.model_cache_memory = '{bad}'")


def test_model_cache_stays_within_its_byte_budget(cluster, dbname):
    fresh = psycopg2.connect(cluster.dsn(dbname, user=ROLE))  # a backend with an empty cache
    fresh.autocommit = True
    try:
        stats = one(fresh, "SELECT flock.cache_stats()")
        assert stats["budget_bytes"] == 256 * 1024 * 1024
        assert stats["bytes"] == 0 and stats["evictions"] == 0
        one(fresh, score_query("trees", 1000))
        one(fresh, score_query("mlp", 1000))
        both = one(fresh, "SELECT flock.cache_stats()")
        assert both["entries"] == 2 and both["evictions"] == 0
        # The MLP's weights alone are 4 MB (1024 x 1024 floats), and its run buffers count too.
        assert both["bytes"] > 1024 * 1024 * 4
        settings(fresh, **{"flock.model_cache_memory": "1MB"})
        # Each model is larger than the budget: it still loads and scores, and is the one dropped
        # when the next model is needed.
        one(fresh, score_query("trees", 1000))
        after = one(fresh, "SELECT flock.cache_stats()")
        assert after["budget_bytes"] == 1024 * 1024
        assert after["entries"] == 1 and after["evictions"] == 1
        one(fresh, score_query("mlp", 1000))
        last = one(fresh, "SELECT flock.cache_stats()")
        assert last["entries"] == 1 and last["evictions"] == 2
        assert last["compiles"] == both["compiles"] + 1  # the MLP was compiled again
        # Within a larger budget, the least recently used model goes first.
        settings(fresh, **{"flock.model_cache_memory": "256MB"})
        one(fresh, score_query("trees", 1000))
        one(fresh, score_query("mlp", 1000))
        fits = one(fresh, "SELECT flock.cache_stats()")
        assert fits["entries"] == 2 and fits["bytes"] <= fits["budget_bytes"]
        mlp_bytes = fits["bytes"] - after["bytes"]  # trees' bytes were `after`'s
        settings(fresh, **{"flock.model_cache_memory": f"{(fits['bytes'] - 1) // 1024}kB"})
        one(fresh, score_query("trees", 10))  # trees most recent: the MLP is evicted
        small = one(fresh, "SELECT flock.cache_stats()")
        assert small["entries"] == 1 and small["evictions"] == fits["evictions"] + 1
        assert small["bytes"] < fits["bytes"] - mlp_bytes / 2
    finally:
        fresh.close()
