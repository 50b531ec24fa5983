"""flock.fairness (issue 14): per-group rates and their differences equal a numpy computation of
Fairlearn's definitions on the same rows (a single-class group included), regression error
statistics per group, and clear errors (also as an unprivileged role)."""
import numpy as np
import psycopg2
import pytest

from onnx_builders import dense_relu, linear_regressor, stump_classifier
from test_catalog import one, rows, run, sqlstate


@pytest.fixture(scope="module", autouse=True)
def setup(cluster, dbname):
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    run(conn, "SELECT flock.register_model('stump', %s)", (stump_classifier(0, 0.5, feature_names=["x", "z"]),))
    run(conn, "SELECT flock.register_model('colors', %s)",
        (stump_classifier(0, 0.5, labels=("red", "blue"), feature_names=["x", "z"]),))
    run(conn, "SELECT flock.register_model('lin', %s)", (linear_regressor([2.0, -1.0], 0.25, ["x", "z"]),))
    run(conn, "SELECT flock.register_model('dense2', %s)", (dense_relu([[1.0, 2.0], [3.0, 4.0]], [0.0, 1.0]),))
    # Groups by sex and band; band 'c' has only negative labels (its TPR is undefined).
    run(conn, "CREATE TABLE people (id int, x float8, z float8, sex text, band text, y int, ok boolean, "
              "colour text, score float8, kind text)")
    run(conn, """INSERT INTO people
                 SELECT g, ((g * 37) % 100) / 100.0, (g % 7) / 7.0,
                        CASE WHEN g % 3 = 0 THEN 'F' ELSE 'M' END,
                        CASE WHEN g % 5 = 0 THEN 'c' WHEN g % 2 = 0 THEN 'a' ELSE 'b' END,
                        CASE WHEN g % 5 = 0 THEN 0 WHEN (g * 13) % 10 < 6 THEN 1 ELSE 0 END,
                        (g * 13) % 10 < 6,
                        CASE WHEN (g * 13) % 10 < 6 THEN 'blue' ELSE 'red' END,
                        ((g * 37) % 100) / 50.0 + (g % 7) / 10.0,
                        CASE g % 3 WHEN 0 THEN 'p' WHEN 1 THEN 'q' ELSE 'r' END
                   FROM generate_series(1, 300) g""")
    run(conn, "CREATE TABLE nobody (x float8, z float8, sex text, y int)")
    run(conn, "SELECT flock.snapshot_dataset('people', 'TABLE people')")
    run(conn, "DROP ROLE IF EXISTS fair_analyst")
    run(conn, "CREATE ROLE fair_analyst LOGIN")
    conn.close()


def fairness(conn, *args):
    marks = ", ".join("%s" for _ in args)
    out = {}
    for scope, group, metric, value in rows(conn, f"SELECT * FROM flock.fairness({marks})", args):
        key = scope if group is None else tuple(sorted(group.items()))
        out.setdefault(key, {})[metric] = value
    return out


def rate(num, den):
    return None if den == 0 else num / den


def classification_oracle(keys, y, p):
    """Fairlearn's metrics with numpy: rates per group, differences = max - min over the groups
    where the rate is defined, ratio = min / max."""
    y, p = np.array(y, dtype=bool), np.array(p, dtype=bool)

    def metrics(mask):
        yy, pp = y[mask], p[mask]
        tp, fp = int(np.sum(yy & pp)), int(np.sum(~yy & pp))
        return {"count": float(mask.sum()), "positives": float(yy.sum()), "selection_rate": float(pp.mean()),
                "true_positive_rate": rate(tp, int(yy.sum())), "false_positive_rate": rate(fp, int((~yy).sum())),
                "precision": rate(tp, int(pp.sum())), "accuracy": float(np.mean(yy == pp))}

    out = {"overall": metrics(np.ones(len(y), dtype=bool))}
    for k in sorted(set(keys)):
        out[k] = metrics(np.array([key == k for key in keys]))
    groups = [v for k, v in out.items() if k != "overall"]

    def spread(name):
        vals = [g[name] for g in groups if g[name] is not None]
        return max(vals) - min(vals) if vals else None

    def ratio(name):
        vals = [g[name] for g in groups if g[name] is not None]
        return min(vals) / max(vals) if vals and max(vals) > 0 else None

    sel = [g["selection_rate"] for g in groups]
    tpr_ratio, fpr_ratio = ratio("true_positive_rate"), ratio("false_positive_rate")
    tpr, fpr = spread("true_positive_rate"), spread("false_positive_rate")
    out["summary"] = {"demographic_parity_difference": max(sel) - min(sel),
                      "demographic_parity_ratio": min(sel) / max(sel) if max(sel) > 0 else None,
                      "true_positive_rate_difference": tpr, "false_positive_rate_difference": fpr,
                      "equalized_odds_difference": max(tpr, fpr) if tpr is not None and fpr is not None else None,
                      "equal_opportunity_difference": tpr, "accuracy_difference": spread("accuracy"),
                      "true_positive_rate_ratio": tpr_ratio, "false_positive_rate_ratio": fpr_ratio,
                      "equalized_odds_ratio": min(tpr_ratio, fpr_ratio)
                      if tpr_ratio is not None and fpr_ratio is not None else None,
                      "equal_opportunity_ratio": tpr_ratio}
    return out


def assert_same(got, expected):
    assert set(got) == set(expected)
    for key, metrics in expected.items():
        assert set(got[key]) == set(metrics), key
        for name, value in metrics.items():
            if value is None:
                assert got[key][name] is None, (key, name)
            else:
                assert got[key][name] == pytest.approx(value, rel=1e-12, abs=1e-15), (key, name)


def test_classification_matches_numpy_with_a_single_class_group(conn):
    data = rows(conn, "SELECT band, y, flock.predict_label('stump', t) FROM people t")
    keys = [(("band", b),) for b, _, _ in data]
    got = fairness(conn, "stump", "people@1", "band", "y")
    expected = classification_oracle(keys, [y == 1 for _, y, _ in data], [p == "1" for _, _, p in data])
    assert expected[(("band", "c"),)]["true_positive_rate"] is None  # the single-class group
    assert_same(got, expected)


def test_two_sensitive_columns_and_a_boolean_label(conn):
    data = rows(conn, "SELECT sex, band, ok, flock.predict_label('stump', t) FROM people t")
    got = fairness(conn, "stump", "SELECT * FROM people", "sex, band", "ok")
    expected = classification_oracle([(("band", b), ("sex", s)) for s, b, _, _ in data],
                                     [ok for _, _, ok, _ in data], [p == "1" for *_, p in data])
    assert len([k for k in got if isinstance(k, tuple)]) == 6
    assert_same(got, expected)


def test_text_labels_with_positive(conn):
    data = rows(conn, "SELECT sex, colour, flock.predict_label('colors', t) FROM people t")
    got = fairness(conn, "colors", "people", "sex", "colour", "blue")
    expected = classification_oracle([(("sex", s),) for s, _, _ in data], [c == "blue" for _, c, _ in data],
                                      [p == "blue" for *_, p in data])
    assert_same(got, expected)
    # A multi-class label measured one class against the rest.
    data = rows(conn, "SELECT sex, kind, flock.predict_label('stump', t) FROM people t")
    got = fairness(conn, "stump", "SELECT x, z, sex, CASE kind WHEN 'p' THEN 1 WHEN 'q' THEN 0 ELSE 2 END AS k "
                                  "FROM people", "sex", "k", "1")
    expected = classification_oracle([(("sex", s),) for s, _, _ in data], [k == "p" for _, k, _ in data],
                                     [p == "1" for *_, p in data])
    assert_same(got, expected)


def test_regression_error_statistics_match_numpy(conn):
    data = rows(conn, "SELECT sex, score, flock.predict('lin', t) FROM people t")
    got = fairness(conn, "lin", "people@1", "sex", "score")
    keys = np.array([s for s, _, _ in data])
    y = np.array([v for _, v, _ in data])
    p = np.array([v for *_, v in data])

    def stats(mask):
        e = p[mask] - y[mask]
        return {"count": float(mask.sum()), "mean_label": float(np.mean(y[mask])),
                "mean_prediction": float(np.mean(p[mask])), "mean_error": float(np.mean(e)),
                "mae": float(np.mean(np.abs(e))), "rmse": float(np.sqrt(np.mean(e * e)))}

    expected = {"overall": stats(np.ones(len(y), dtype=bool))}
    for k in ("F", "M"):
        expected[(("sex", k),)] = stats(keys == k)
    g = [expected[(("sex", k),)] for k in ("F", "M")]
    spread = lambda name: max(x[name] for x in g) - min(x[name] for x in g)
    expected["summary"] = {"mean_error_difference": spread("mean_error"), "mae_difference": spread("mae"),
                           "rmse_difference": spread("rmse"),
                           "mae_ratio": min(x["mae"] for x in g) / max(x["mae"] for x in g)}
    for key, metrics in expected.items():
        for name, value in metrics.items():
            assert got[key][name] == pytest.approx(value, rel=1e-9, abs=1e-12), (key, name)
    assert set(got) == set(expected)


def fairness_error(conn, *args):
    marks = ", ".join("%s" for _ in args)
    return sqlstate(conn, f"SELECT * FROM flock.fairness({marks})", args)


def test_errors_are_clear(conn):
    e = fairness_error(conn, "stump", "people@1", "gender", "y")
    assert e.pgcode == "42703" and 'column "gender" does not exist in the data' in e.pgerror
    assert "sex" in e.diag.message_hint
    e = fairness_error(conn, "stump", "people@1", "sex", "label")
    assert e.pgcode == "42703"
    e = fairness_error(conn, "stump", "SELECT x, z, NULLIF(sex, 'F') AS sex, y FROM people", "sex", "y")
    assert e.pgcode == "22004" and 'sensitive column "sex" is NULL in 100 rows' in e.pgerror and e.diag.message_hint
    e = fairness_error(conn, "stump", "SELECT x, z, sex, NULLIF(y, 1) AS y FROM people", "sex", "y")
    assert e.pgcode == "22004"
    e = fairness_error(conn, "stump", "SELECT x, z, sex, kind FROM people", "sex", "kind")
    assert e.pgcode == "22023" and "3 classes" in e.pgerror and "positive" in e.diag.message_hint
    e = fairness_error(conn, "colors", "people", "sex", "colour")
    assert e.pgcode == "22023" and "positive" in e.diag.message_hint
    e = fairness_error(conn, "colors", "people", "sex", "colour", "green")
    assert e.pgcode == "22023" and "red" in e.diag.message_hint
    e = fairness_error(conn, "colors", "people", "sex", "y")  # labels 0 / 1, the model says red / blue
    assert e.pgcode == "22023" and 'positive class "1" is not a class of model colors@1' in e.pgerror
    e = fairness_error(conn, "lin", "people", "sex", "score", "1")
    assert e.pgcode == "22023"
    e = fairness_error(conn, "lin", "people", "sex", "band")
    assert e.pgcode == "42804"
    e = fairness_error(conn, "stump", "TABLE nobody", "sex", "y")
    assert e.pgcode == "22023" and "no rows" in e.pgerror
    e = fairness_error(conn, "dense2", "SELECT 1.0 AS x, 2.0 AS z, 'a' AS sex, 1.0 AS y", "sex", "y")
    assert e.pgcode == "42804" and "no numeric output" in e.pgerror
    e = fairness_error(conn, "stump", "people", None, "y")
    assert e.pgcode == "22004"


def test_errors_as_an_unprivileged_role(conn, connect_as):
    analyst = connect_as("fair_analyst")
    e = fairness_error(analyst, "stump", "people@1", "sex", "y")
    assert e.pgcode == "42501"
    run(conn, "SELECT flock.grant_model('stump', 'fair_analyst')")
    e = fairness_error(analyst, "stump", "people@1", "sex", "y")  # the data set's table is not theirs
    assert e.pgcode == "42501" and e.diag.message_hint
    e = fairness_error(analyst, "stump", "TABLE people", "sex", "y")
    assert e.pgcode == "42501"
    run(conn, "GRANT SELECT ON people TO fair_analyst")
    e = fairness_error(analyst, "stump", "TABLE people", "gender", "y")
    assert e.pgcode == "42703"
    e = fairness_error(analyst, "stump", "SELECT x, z, NULLIF(sex, 'F') AS sex, y FROM people", "sex", "y")
    assert e.pgcode == "22004"
    e = fairness_error(analyst, "stump", "SELECT x, z, sex, kind FROM people", "sex", "kind")
    assert e.pgcode == "22023"
    assert fairness(analyst, "stump", "TABLE people", "sex", "y")["overall"]["count"] == 300
    run(conn, "SELECT flock.revoke_model('stump', 'fair_analyst')")
