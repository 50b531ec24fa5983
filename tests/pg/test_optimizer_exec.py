"""The optimizer's executor-side passes (issue 13) beyond the scan's constant quals: facts from a
table's validated CHECK constraints, NOT NULL columns and a partition's bounds, parameters ($1)
known at executor start (generic plans, NULL parameters), the per-backend cache of specialized
models, and features the specialized model does not read left unread. The proof is differential,
as in test_optimizer.py: seeded random queries over partitioned tables (range partitions on a model
input, a sub-partitioned one, one attached with its columns in another order, a default partition
for NULLs) and CHECK-constrained tables, prepared statements under custom and generic plans, outer
joins, subqueries and parallel plans return exactly the same rows with flock.optimizer on as off;
EXPLAIN shows what was done.
"""
import csv
import json
import math
import os
import random

import numpy as np
import psycopg2
import psycopg2.extras
import pytest

from test_optimizer import MODELS_DIR, PARALLEL, canonical, constant, literal, predicate, split_thresholds

SEED = int(os.environ.get("FLOCK_OPTIMIZER_SEED", "1313"))
QUERIES_PER_TABLE = 250
# Tree models (specialized) and a linear control (left as it is).
MODEL_NAMES = ["diabetes_xgb", "diabetes_gb", "breast_cancer_xgb", "diabetes_linreg"]


def _manifest():
    path = os.path.join(MODELS_DIR, "manifest.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [e for e in json.load(f) if e["name"] in MODEL_NAMES]


MODELS = _manifest()


def is_tree(entry):
    return entry["format"] == "xgboost" or "Boosting" in entry["estimator"]


def _rows(entry):
    with open(os.path.join(MODELS_DIR, "datasets.json")) as f:
        data = json.load(f)[entry["dataset"]]
    with open(os.path.join(MODELS_DIR, data["file"])) as f:
        return list(csv.DictReader(f))


def split_column(entry, thresholds):
    """The feature most split on: partitions and CHECK constraints on it prune the most."""
    return max(thresholds, key=lambda j: len(thresholds[j])) if thresholds else 0


@pytest.fixture(scope="module")
def tables(cluster, dbname):
    """Per model: `p_<m>`, range-partitioned on its most split feature (three ranges, the last
    sub-partitioned on a second feature, the middle one attached with its columns in reverse
    order, a default partition that takes NULLs), and `c_<m>`, with CHECK constraints on two
    features, a NOT NULL column, and a NOT VALID constraint its rows break. Rows include NULLs,
    NaNs and values on and next to the split thresholds."""
    if not MODELS:
        pytest.fail(f"models missing from {MODELS_DIR!r}: run `make models`")
    rng = random.Random(SEED)
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    info = {}
    with conn.cursor() as cur:
        for entry in MODELS:
            m, feats = entry["name"], entry["features"]
            th = split_thresholds(entry) if is_tree(entry) else {}
            j = split_column(entry, th)
            k = next(i for i in range(len(feats)) if i != j)
            n = next(i for i in range(len(feats)) if i not in (j, k))
            types = [rng.choice(["real", "float8", "float8", "int4"]) for _ in feats]
            types[j] = types[k] = types[n] = "float8"  # partition keys and CHECKed columns
            raw = _rows(entry)

            def value(r, i):
                v = r.get(feats[i])
                if v is None or v == "":
                    return None
                v = float(v)
                return int(round(v)) if types[i] == "int4" else v

            values = [[value(r, i) for i in range(len(feats))] for r in raw]
            data = [list(r) for r in values]  # the data set's own values, for random constants
            for row in rng.sample(values, len(values) // 5):
                row = list(row)
                for i, t in enumerate(types):
                    if rng.random() < 0.25:
                        row[i] = None if t == "int4" or rng.random() < 0.5 else float("nan")
                values.append(row)
            for _ in range(len(values) // 6):
                row = list(rng.choice(values))
                for i, t in enumerate(types):
                    if i in th and rng.random() < 0.5:
                        x = rng.choice(th[i])
                        x = rng.choice([x, float(np.nextafter(np.float32(x), np.float32(np.inf))),
                                        float(np.nextafter(np.float32(x), np.float32(-np.inf)))])
                        row[i] = int(math.floor(x)) if t == "int4" else x
                values.append(row)
            seen_j = sorted(r[j] for r in values if r[j] is not None and not math.isnan(r[j]))
            seen_k = sorted(r[k] for r in values if r[k] is not None and not math.isnan(r[k]))
            q1, q2 = seen_j[len(seen_j) // 3], seen_j[2 * len(seen_j) // 3]
            if th.get(j):  # a bound on a split threshold prunes exactly there
                q1 = min(th[j], key=lambda t: abs(t - q1))
                q2 = max(q2, q1 + 1e-3)
            mk = seen_k[len(seen_k) // 2]
            cols = ", ".join(f'"{c}" {t}' for c, t in zip(feats, types))
            rev = ", ".join(f'"{c}" {t}' for c, t in reversed(list(zip(feats, types))))
            p, c = f"p_{m}", f"c_{m}"
            cur.execute(f'DROP TABLE IF EXISTS "{p}", "{c}", "{p}_mid"')
            cur.execute(f'CREATE TABLE "{p}" ({cols}) PARTITION BY RANGE ("{feats[j]}")')
            cur.execute(f'CREATE TABLE "{p}_low" PARTITION OF "{p}" FOR VALUES FROM (MINVALUE) TO ({q1!r})')
            cur.execute(f'CREATE TABLE "{p}_mid" ({rev})')
            cur.execute(f'ALTER TABLE "{p}" ATTACH PARTITION "{p}_mid" FOR VALUES FROM ({q1!r}) TO ({q2!r})')
            cur.execute(f'CREATE TABLE "{p}_high" PARTITION OF "{p}" FOR VALUES FROM ({q2!r}) TO (MAXVALUE) '
                        f'PARTITION BY RANGE ("{feats[k]}")')
            cur.execute(f'CREATE TABLE "{p}_high_a" PARTITION OF "{p}_high" FOR VALUES FROM (MINVALUE) TO ({mk!r})')
            cur.execute(f'CREATE TABLE "{p}_high_b" PARTITION OF "{p}_high" DEFAULT')
            cur.execute(f'CREATE TABLE "{p}_null" PARTITION OF "{p}" DEFAULT')
            psycopg2.extras.execute_values(cur, f'INSERT INTO "{p}" VALUES %s', values)
            # CHECK constraints: the partition column's lower third excluded, the other capped.
            cur.execute(f'CREATE TABLE "{c}" ({cols}, CHECK ("{feats[j]}" >= {q1!r}), '
                        f'CHECK ("{feats[k]}" < {mk!r} AND "{feats[k]}" > -1e9))')
            kept = [r for r in values
                    if (r[j] is None or math.isnan(r[j]) or r[j] >= q1) and (r[k] is None or r[k] < mk)
                    and r[k] is not None]
            psycopg2.extras.execute_values(cur, f'INSERT INTO "{c}" VALUES %s', kept)
            cur.execute(f'ALTER TABLE "{c}" ALTER COLUMN "{feats[k]}" SET NOT NULL')
            # A constraint its rows break, NOT VALID: never a fact.
            bad = [r[n] for r in kept if r[n] is not None and not (isinstance(r[n], float) and math.isnan(r[n]))]
            median = sorted(bad)[len(bad) // 2] if bad else 0
            cur.execute(f'ALTER TABLE "{c}" ADD CONSTRAINT not_valid CHECK ("{feats[n]}" < {median!r}) NOT VALID')
            cur.execute(f'CREATE INDEX ON "{c}" ("{feats[j]}")')
            cur.execute(f'ANALYZE "{p}"')
            cur.execute(f'ANALYZE "{c}"')
            with open(os.path.join(MODELS_DIR, entry["file"]), "rb") as f:
                cur.execute("SELECT flock.register_model(%s, %s, %s)", (m, f.read(), entry["format"]))
            info[m] = {"types": types, "thresholds": th, "values": data, "kept": kept, "j": j, "k": k, "n": n,
                       "q1": q1, "q2": q2, "mk": mk}
        cur.execute("DROP TABLE IF EXISTS opt_dim")
        cur.execute("CREATE TABLE opt_dim (v float8 PRIMARY KEY, w int)")
        seen = sorted({r[0] for e in MODELS for r in info[e["name"]]["values"] if r[0] is not None})
        psycopg2.extras.execute_values(cur, "INSERT INTO opt_dim VALUES %s", [(v, i) for i, v in enumerate(seen[::3])])
        cur.execute("ANALYZE opt_dim")
    conn.close()
    return info


def fn_of(entry, rng):
    if entry["task"] == "classification":
        return rng.choice(["flock.predict", "flock.predict_label", "flock.predict_proba"])
    return "flock.predict"


def queries(entry, info, rng):
    """(kind, sql, params) triples; params are the values of a prepared statement's $1."""
    m, feats = entry["name"], entry["features"]
    out = []
    for _ in range(QUERIES_PER_TABLE):
        table = rng.choice([f"p_{m}", f"c_{m}", f"p_{m}_high"])
        where = predicate(rng, entry, info) if rng.random() < 0.7 else "true"
        fn = fn_of(entry, rng)
        shape = rng.random()
        if shape < 0.3:
            out.append(("rows", f'SELECT tableoid::regclass::text, ctid::text, {fn}(\'{m}\', t) FROM "{table}" t '
                                f"WHERE {where}", None))
        elif shape < 0.4:
            out.append(("parallel", f'SELECT count(*), sum(flock.predict(\'{m}\', t)) FROM "{table}" t WHERE {where}',
                        None))
        elif shape < 0.7:  # `column OP $1`: a generic plan specializes at executor start
            j = rng.randrange(len(feats))
            op = rng.choice(["<", "<=", "=", ">=", ">"])
            ptype = "int4" if info["types"][j] == "int4" else rng.choice(["float8", "real", "float8"])
            v = None if rng.random() < 0.15 else constant(rng, info, j)
            if isinstance(v, str):
                v = float(v.lower().replace("infinity", "inf"))
            if v is not None and ptype == "int4":
                v = int(math.floor(v)) if math.isfinite(v) else 0
            sql = (f'SELECT tableoid::regclass::text, ctid::text, {fn}(\'{m}\', t) FROM "{table}" t '
                   f'WHERE t."{feats[j]}" {op} $1 AND {where}')
            out.append(("prepared", sql, (ptype, v)))
        elif shape < 0.8:  # a subquery's row
            out.append(("rows", f"SELECT {fn}('{m}', s) FROM (SELECT * FROM \"{table}\" t WHERE {where}) s", None))
        elif shape < 0.9:  # an outer join: ON quals on the preserved side say nothing about its rows
            col = f't."{feats[0]}"'
            c = literal(rng, constant(rng, info, info["j"]), info["types"][info["j"]])
            out.append(("rows", f'SELECT {fn}(\'{m}\', t), d.w FROM "{table}" t LEFT JOIN opt_dim d '
                                f'ON d.v = {col} AND t."{feats[info["j"]]}" > {c} WHERE {where}', None))
        else:  # the nullable side: its ON quals hold for the rows that join
            c = literal(rng, constant(rng, info, info["j"]), info["types"][info["j"]])
            out.append(("rows", f'SELECT d.w, {fn}(\'{m}\', t) FROM opt_dim d LEFT JOIN "{table}" t '
                                f'ON t."{feats[0]}" = d.v AND t."{feats[info["j"]]}" > {c}', None))
    return out


def settings_for(kind):
    s = {"jit": "off"}
    if kind == "parallel":
        s.update(PARALLEL)
    return s


def run(conn, kind, sql, params, optimizer, plan_cache_mode="auto"):
    """Rows as a sorted list (order is not part of the comparison), or the error's SQLSTATE."""
    with conn.cursor() as cur:
        cur.execute(f"SET flock.optimizer = {optimizer}")
        for k, v in settings_for(kind).items():
            cur.execute(f"SET {k} = {v}")
        cur.execute(f"SET plan_cache_mode = {plan_cache_mode}")
        try:
            if params is None:
                cur.execute(sql)
                got = cur.fetchall()
            else:
                ptype, value = params
                cur.execute(f"PREPARE q({ptype}) AS {sql}")
                got = []
                for _ in range(2):
                    cur.execute("EXECUTE q(%s)", (value,))
                    got += cur.fetchall()
            return ("rows", sorted((canonical(list(r)) for r in got), key=repr))
        except psycopg2.Error as e:
            return ("error", e.pgcode)
        finally:
            if params is not None:
                cur.execute("DEALLOCATE ALL")
            cur.execute("RESET ALL")


def explain(conn, sql, params=None, **settings):
    with conn.cursor() as cur:
        for k, v in settings.items():
            cur.execute(f"SET {k} = {v}")
        if params is None:
            cur.execute("EXPLAIN (COSTS OFF) " + sql)
        else:
            cur.execute(f"PREPARE e({params[0]}) AS {sql}")
            cur.execute("EXPLAIN (COSTS OFF) EXECUTE e(%s)", (params[1],))
        text = "\n".join(r[0] for r in cur.fetchall())
        if params is not None:
            cur.execute("DEALLOCATE e")
        cur.execute("RESET ALL")
        return text


def test_optimized_results_equal_unoptimized(conn, tables):
    rng = random.Random(SEED + 2)
    counts = {"cases": 0, "pruned": 0, "generic_pruned": 0, "parallel": 0, "errors": 0, "narrowed": 0}
    for entry in MODELS:
        for kind, sql, params in queries(entry, tables[entry["name"]], rng):
            modes = ["force_custom_plan", "force_generic_plan"] if params else ["auto"]
            for mode in modes:
                off = run(conn, kind, sql, params, "off", mode)
                on = run(conn, kind, sql, params, "on", mode)
                assert on == off, f"seed {SEED}, {mode}, params {params}: {sql}"
                counts["cases"] += 1
                counts["errors"] += on[0] == "error" and is_tree(entry)  # a linear model's NULL input fails
            plan = explain(conn, sql, params, **settings_for(kind),
                           **({"plan_cache_mode": "force_generic_plan"} if params else {}))
            if not is_tree(entry):
                assert "Flock Pruned" not in plan, plan
            elif "Flock Pruned" in plan:
                counts["pruned"] += 1
                counts["generic_pruned"] += params is not None and "$1" in plan
            counts["parallel"] += "Gather" in plan
            counts["narrowed"] += "Flock Narrowed Input" in plan  # breast_cancer_xgb reads 25 of 30
    # Not vacuous: pruning happens, under generic plans too, and parallel plans are among the cases.
    assert counts["pruned"] >= counts["cases"] // 6, counts
    assert counts["generic_pruned"] > 0 and counts["parallel"] > 0 and counts["narrowed"] > 0, counts
    assert counts["errors"] <= counts["cases"] // 20, counts


def pruned_lines(plan):
    return [line.strip() for line in plan.splitlines() if "Flock Pruned" in line]


def test_partition_bounds_prune_each_partition(conn, tables):
    entry = next(e for e in MODELS if e["format"] == "xgboost")
    m, info, feats = entry["name"], tables[entry["name"]], entry["features"]
    sql = f'SELECT flock.predict(\'{m}\', t) FROM "p_{m}" t'
    plan = explain(conn, sql)
    lines = pruned_lines(plan)
    # No WHERE clause: the bounds alone. The low partition and the sub-partitions at least (the
    # partition attached with its columns in another order binds its own row type, converted).
    assert len(lines) >= 3, plan
    assert all(f'{feats[info["j"]]}' in line for line in lines), plan
    assert any(f'{feats[info["k"]]}' in line for line in lines), plan  # the sub-partition's own bound
    off = run(conn, "rows", sql.replace("SELECT ", "SELECT tableoid::regclass::text, ctid::text, "), None, "off")
    on = run(conn, "rows", sql.replace("SELECT ", "SELECT tableoid::regclass::text, ctid::text, "), None, "on")
    assert on == off
    # An aggregate over the partitions: a batch node per partition under the Append, each pruned.
    agg = f'SELECT count(*), sum(flock.predict(\'{m}\', t)) FROM "p_{m}" t'
    for settings in ({}, PARALLEL):
        plan = explain(conn, agg, **settings)
        assert len(pruned_lines(plan)) >= 3 and "Append" in plan, plan
        kind = "parallel" if settings else "rows"
        assert run(conn, kind, agg, None, "on") == run(conn, kind, agg, None, "off")
    with conn.cursor() as cur:
        cur.execute("SET flock.batching = off")
        cur.execute(agg)
        unbatched = canonical(list(cur.fetchone()))
        cur.execute("RESET flock.batching")
    assert run(conn, "rows", agg, None, "on")[1] == [unbatched]


def test_check_constraints_prune_but_not_valid_ones_do_not(conn, tables):
    entry = next(e for e in MODELS if e["format"] == "xgboost")
    m, info, feats = entry["name"], tables[entry["name"]], entry["features"]
    sql = f'SELECT ctid::text, flock.predict(\'{m}\', t) FROM "c_{m}" t'
    plan = explain(conn, sql)
    lines = pruned_lines(plan)
    assert len(lines) == 1 and feats[info["j"]] in lines[0], plan
    assert f'{feats[info["n"]]} ' not in lines[0], plan  # the NOT VALID constraint is no fact
    assert run(conn, "rows", sql, None, "on") == run(conn, "rows", sql, None, "off")
    # With the NOT VALID constraint's rows removed and the constraint validated, it is one.
    with conn.cursor() as cur:
        cur.execute(f'CREATE TABLE "v_{m}" (LIKE "c_{m}" INCLUDING CONSTRAINTS)')
        cur.execute(f'ALTER TABLE "v_{m}" DROP CONSTRAINT not_valid')
        cur.execute(f'INSERT INTO "v_{m}" SELECT * FROM "c_{m}" t WHERE NOT (t."{feats[info["n"]]}" >= 0.0)')
        cur.execute(f'ALTER TABLE "v_{m}" ADD CONSTRAINT now_valid CHECK ("{feats[info["n"]]}" < 0.0)')
    vsql = sql.replace(f'"c_{m}"', f'"v_{m}"')
    vplan = explain(conn, vsql)
    assert f'{feats[info["n"]]} < 0' in "\n".join(pruned_lines(vplan)), vplan
    assert run(conn, "rows", vsql, None, "on") == run(conn, "rows", vsql, None, "off")


def test_a_generic_plan_specializes_for_the_parameter_and_a_null_one_is_harmless(conn, tables):
    entry = next(e for e in MODELS if e["format"] == "xgboost")
    m, info, feats = entry["name"], tables[entry["name"]], entry["features"]
    col = feats[info["k"]]
    th = info["thresholds"].get(info["k"]) or [0.0]
    sql = f'SELECT ctid::text, flock.predict(\'{m}\', t) FROM "c_{m}" t WHERE t."{col}" > $1'
    # Without the parameter's qual: what the CHECK constraints alone give.
    baseline = pruned_lines(explain(conn, sql.split(" WHERE ")[0]))
    plan = explain(conn, sql, ("float8", th[len(th) // 2]), plan_cache_mode="force_generic_plan")
    assert "$1" in plan and pruned_lines(plan) != baseline and f"{col} > " in pruned_lines(plan)[0], plan
    # A NULL parameter: the qual passes no row, and gives no fact.
    plan_null = explain(conn, sql, ("float8", None), plan_cache_mode="force_generic_plan")
    assert pruned_lines(plan_null) == baseline, plan_null
    for value in (th[0], th[-1], None, float("nan"), float("inf")):
        for mode in ("force_generic_plan", "force_custom_plan"):
            on = run(conn, "rows", sql, ("float8", value), "on", mode)
            assert on == run(conn, "rows", sql, ("float8", value), "off", mode), (value, mode)


def cache_stats(cur):
    cur.execute("SELECT flock.cache_stats()")
    return cur.fetchone()[0]


def test_a_prepared_statement_specializes_once(cluster, dbname, tables):
    entry = next(e for e in MODELS if e["format"] == "xgboost")
    m, info, feats = entry["name"], tables[entry["name"]], entry["features"]
    fresh = psycopg2.connect(cluster.dsn(dbname))
    fresh.autocommit = True
    try:
        with fresh.cursor() as cur:
            for mode in ("force_generic_plan", "force_custom_plan"):
                cur.execute(f"SET plan_cache_mode = {mode}")
                cur.execute(f'PREPARE q(float8) AS SELECT flock.predict(\'{m}\', t) FROM "p_{m}" t '
                            f'WHERE t."{feats[info["k"]]}" < $1')
                before = cache_stats(cur)
                for _ in range(20):
                    cur.execute("EXECUTE q(%s)", (info["mk"],))
                    cur.fetchall()
                after = cache_stats(cur)
                cur.execute("DEALLOCATE q")
                made = after["specializations"] - before["specializations"]
                # At most once per partition scanned, the first time (the custom plan's constants
                # are the generic plan's values: nothing new the second round).
                assert made <= 5, (mode, before, after)
                assert after["specialized_hits"] - before["specialized_hits"] >= 19 * max(made, 1), (mode, before, after)
            assert after["specialized_entries"] >= 1
    finally:
        fresh.close()


def test_the_specialized_model_reads_fewer_columns(conn, tables):
    entry = next(e for e in MODELS if e["format"] == "xgboost")
    m, feats = entry["name"], entry["features"]
    info = tables[m]
    th = info["thresholds"]
    # Pin the float8 features to the values of a row of the table: the model then reads fewer.
    pinned = [j for j in range(len(feats)) if info["types"][j] == "float8" and j != info["j"]]
    row = next(r for r in info["kept"] if all(r[j] is not None and math.isfinite(r[j]) for j in pinned))
    where = " AND ".join(f't."{feats[j]}" = {row[j]!r}::float8' for j in pinned)
    sql = f'SELECT ctid::text, flock.predict(\'{m}\', t) FROM "c_{m}" t WHERE {where}'
    assert run(conn, "rows", sql, None, "off")[1], "the pinned row is there"
    plan = explain(conn, sql)
    line = next(l for l in plan.splitlines() if "Flock Inputs Read" in l)
    read, of = [int(x) for x in line.split(":")[1].replace("of", " ").split()]
    assert read < of, plan
    assert run(conn, "rows", sql, None, "on") == run(conn, "rows", sql, None, "off")
    # The same on rows that do not satisfy the pins (a disjunction: no pruning, all read).
    loose = sql.replace(" AND ", " OR ")
    assert run(conn, "rows", loose, None, "on") == run(conn, "rows", loose, None, "off")


def test_outer_join_on_quals_of_the_preserved_side_are_no_facts(conn, tables):
    entry = next(e for e in MODELS if e["format"] == "xgboost")
    m, info, feats = entry["name"], tables[entry["name"]], entry["features"]
    col = feats[info["k"]]
    sql = (f'SELECT t.ctid::text, flock.predict(\'{m}\', t), d.w FROM "p_{m}_low" t LEFT JOIN opt_dim d '
           f'ON d.v = t."{feats[0]}" AND t."{col}" > {info["mk"]!r}')
    plan = explain(conn, sql)
    assert not any(f"{col} > " in line for line in pruned_lines(plan)), plan
    assert run(conn, "rows", sql, None, "on") == run(conn, "rows", sql, None, "off")


# ---- A whole-row input of a subquery or join narrowed to the columns the model reads

@pytest.fixture(scope="module")
def narrow(cluster, dbname):
    """diabetes_tree (a decision tree that splits on 8 of its 10 features) as `dtree`, `n_base`
    (id, the features; NULLs and NaNs among them) and `n_extra` (id primary key, the value of a
    feature the tree never splits on, `spare`, and one it does, `used`)."""
    entry = next(e for e in json.load(open(os.path.join(MODELS_DIR, "manifest.json"))) if e["name"] == "diabetes_tree")
    feats = entry["features"]
    read = set(split_thresholds(entry))
    unread = [f for j, f in enumerate(feats) if j not in read]
    assert unread, "diabetes_tree reads every feature: pick another model for this test"
    rng = random.Random(SEED + 3)
    rows = []
    for i, r in enumerate(_rows(entry)):
        vals = [float(r[f]) for f in feats]
        if rng.random() < 0.1:
            vals[rng.randrange(len(vals))] = rng.choice([None, float("nan")])
        rows.append([i] + vals)
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        with open(os.path.join(MODELS_DIR, entry["file"]), "rb") as f:
            cur.execute("SELECT flock.register_model('dtree', %s, 'onnx')", (f.read(),))
        cols = ", ".join(f'"{f}" float8' for f in feats)
        cur.execute(f"CREATE TABLE n_base (id int, {cols})")
        psycopg2.extras.execute_values(cur, "INSERT INTO n_base VALUES %s", rows)
        cur.execute("CREATE TABLE n_extra (id int PRIMARY KEY, spare float8, used float8)")
        used = feats[sorted(read)[0]]
        spare = unread[0]
        cur.execute(f'INSERT INTO n_extra SELECT id, "{spare}" + 1, "{used}" FROM n_base WHERE id % 3 <> 0')
        cur.execute("ANALYZE n_base")
        cur.execute("ANALYZE n_extra")
    conn.close()
    return {"feats": feats, "spare": spare, "used": used}


def subquery_sql(narrow, fn, from_extra):
    """The model's row from a subquery whose column `from_extra` comes from a LEFT JOIN."""
    cols = ", ".join(f'e.{"spare" if f == narrow["spare"] else "used"} AS "{f}"' if f == from_extra else f'b."{f}"'
                     for f in narrow["feats"])
    return (f"SELECT s.id, {fn}('dtree', s) FROM (SELECT b.id, {cols} FROM n_base b "
            f"LEFT JOIN n_extra e ON e.id = b.id) s")


def test_a_left_join_feeding_only_unread_columns_is_removed(conn, narrow):
    sql = subquery_sql(narrow, "flock.predict", narrow["spare"])
    plan = explain(conn, sql)
    assert "Join" not in plan and "n_extra" not in plan, plan
    assert "Flock Narrowed Input: dtree@1: " in plan, plan
    assert "Join" in explain(conn, sql, **{"flock.optimizer_projection": "off"})
    assert "Join" in explain(conn, sql, **{"flock.optimizer": "off"})
    assert run(conn, "rows", sql, None, "on") == run(conn, "rows", sql, None, "off")
    # An aggregate, a parallel plan, and a subquery that is not pulled up (LIMIT).
    agg = f"SELECT count(*), sum(p) FROM ({sql.replace('SELECT s.id, ', 'SELECT ')}) q(p)"
    for kind in ("rows", "parallel"):
        assert run(conn, kind, agg, None, "on") == run(conn, kind, agg, None, "off")
    limited = sql.replace("LEFT JOIN n_extra e ON e.id = b.id)", "LEFT JOIN n_extra e ON e.id = b.id LIMIT 100000)")
    assert "Join" not in explain(conn, limited)
    assert run(conn, "rows", limited, None, "on") == run(conn, "rows", limited, None, "off")


def test_a_views_row_is_narrowed_too(conn, narrow):
    # A view's whole row has the view's composite type (not RECORD) once the view is expanded.
    view_sql = subquery_sql(narrow, "flock.predict", narrow["spare"])
    body = view_sql[view_sql.index("(SELECT b.id") + 1:view_sql.rindex(") s")]
    with conn.cursor() as cur:
        cur.execute(f"CREATE OR REPLACE VIEW n_view AS {body}")
    sql = "SELECT v.id, flock.predict('dtree', v) FROM n_view v"
    plan = explain(conn, sql)
    assert "Join" not in plan and "Flock Narrowed Input: dtree@1: " in plan, plan
    assert "Join" in explain(conn, sql, **{"flock.optimizer": "off"})
    assert run(conn, "rows", sql, None, "on") == run(conn, "rows", sql, None, "off")
    # The narrowed row is read from the scan's columns (not formed per row), and the scan's quals
    # on those columns prune the model under the view's column numbers.
    assert "Flock Inputs Read" in plan, plan
    agg = "SELECT count(*), sum(flock.predict('dtree', v)) FROM n_view v"
    assert "Flock Inputs Read" in explain(conn, agg)
    assert run(conn, "rows", agg, None, "on") == run(conn, "rows", agg, None, "off")
    with conn.cursor() as cur:
        cur.execute(f'SELECT percentile_disc(ARRAY[0.25, 0.5, 0.75]) WITHIN GROUP (ORDER BY "{narrow["used"]}") FROM n_base')
        cuts = cur.fetchone()[0]
    for cut in cuts:
        for op in ("<", ">=", "="):
            where = f'WHERE v."{narrow["used"]}" {op} {cut!r}'
            for q in (f"{sql} {where}", f"{agg} {where}"):
                assert run(conn, "rows", q, None, "on") == run(conn, "rows", q, None, "off"), q
    assert "Flock Pruned" in explain(conn, f'{sql} WHERE v."{narrow["used"]}" < {cuts[0]!r}')


def test_a_join_feeding_a_read_column_stays(conn, narrow):
    sql = subquery_sql(narrow, "flock.predict", narrow["used"])
    plan = explain(conn, sql)
    assert "Join" in plan, plan
    assert run(conn, "rows", sql, None, "on") == run(conn, "rows", sql, None, "off")


def test_a_join_row_and_a_nullable_row(conn, narrow):
    # The whole row of a join: its extra columns, bound to no feature, become NULLs too.
    join_row = ("SELECT flock.predict('dtree', j) FROM (n_base b LEFT JOIN "
                "(SELECT id AS eid, spare AS x FROM n_extra) e ON e.eid = b.id) j")
    plan = explain(conn, join_row)
    assert "Flock Narrowed Input" in plan and "Join" not in plan, plan
    assert run(conn, "rows", join_row, None, "on") == run(conn, "rows", join_row, None, "off")
    # On the nullable side of an outer join the row itself is NULL for unmatched rows: left whole.
    cols = ", ".join(f'b."{f}"' for f in narrow["feats"])
    nullable = (f"SELECT e.id, flock.predict('dtree', s) FROM n_extra e LEFT JOIN "
                f"(SELECT b.id, {cols} FROM n_base b WHERE b.id % 2 = 0) s ON s.id = e.id")
    assert "Flock Narrowed Input" not in explain(conn, nullable)
    assert run(conn, "rows", nullable, None, "on") == run(conn, "rows", nullable, None, "off")


def test_an_audited_model_keeps_its_whole_row(conn, narrow):
    sql = subquery_sql(narrow, "flock.predict", narrow["spare"])
    with conn.cursor() as cur:
        cur.execute("SELECT flock.set_audit('dtree', 'all')")
        try:
            plan = explain(conn, sql)
            assert "Flock Narrowed Input" not in plan and "Join" in plan, plan
        finally:
            cur.execute("SELECT flock.set_audit('dtree', 'off')")
    assert "Flock Narrowed Input" in explain(conn, sql)


def test_grouped_and_windowed_rows_are_left_whole(conn, narrow):
    inner = subquery_sql(narrow, "flock.predict", narrow["spare"]).split(" FROM ", 1)[1]
    for sql in (f"SELECT s, flock.predict('dtree', s), count(*) FROM {inner} GROUP BY s",
                f"SELECT flock.predict('dtree', s), count(*) OVER (PARTITION BY s) FROM {inner}",
                f"SELECT sum(flock.predict('dtree', s)) FROM {inner} GROUP BY s.id % 7"):
        assert run(conn, "rows", sql, None, "on") == run(conn, "rows", sql, None, "off"), sql
        assert run(conn, "rows", sql, None, "on")[0] == "rows", sql


def test_narrowing_acts_for_the_current_user(conn, connect_as, narrow):
    sql = subquery_sql(narrow, "flock.predict", narrow["spare"])
    with conn.cursor() as cur:
        for role in ("opt_exec_user", "opt_exec_nobody"):
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if not cur.fetchone():
                cur.execute(f"CREATE ROLE {role} LOGIN")
            cur.execute(f"GRANT SELECT ON n_base, n_extra TO {role}")
        cur.execute("SELECT flock.grant_model('dtree', 'opt_exec_user', 'use')")
    user = connect_as("opt_exec_user")
    assert "Flock Narrowed Input" in explain(user, sql)
    assert run(user, "rows", sql, None, "on") == run(conn, "rows", sql, None, "off")
    # No privilege on the model: nothing resolved at plan time, and the same error as without.
    nobody = connect_as("opt_exec_nobody")
    assert "Flock Narrowed Input" not in explain(nobody, sql)
    on = run(nobody, "rows", sql, None, "on")
    assert on[0] == "error" and on == run(nobody, "rows", sql, None, "off")


def test_plpgsql_variables_are_parameters_too(conn, tables):
    entry = next(e for e in MODELS if e["format"] == "xgboost")
    m, info, feats = entry["name"], tables[entry["name"]], entry["features"]
    col = feats[info["k"]]
    with conn.cursor() as cur:
        cur.execute(f"""CREATE OR REPLACE FUNCTION opt_exec_sum(lim float8) RETURNS float8 LANGUAGE plpgsql AS $$
                        DECLARE r float8;
                        BEGIN
                          SELECT sum(p) INTO r FROM (SELECT flock.predict('{m}', t) AS p FROM "p_{m}" t
                                                     WHERE t."{col}" > lim) x;
                          RETURN r;
                        END $$""")
    th = info["thresholds"].get(info["k"]) or [0.0]
    calls = ", ".join(f"opt_exec_sum({v!r}::float8)" for v in th[:5] + th[:5]) + ", opt_exec_sum(NULL)"
    for mode in ("force_generic_plan", "force_custom_plan"):
        got = {o: run(conn, "rows", f"SELECT {calls}", None, o, mode) for o in ("on", "off")}
        with conn.cursor() as cur:
            cur.execute(f"SET plan_cache_mode = {mode}")
            cur.execute(f"SELECT {calls}")
            direct = canonical(list(cur.fetchone()))
            cur.execute("RESET plan_cache_mode")
        assert got["on"] == got["off"] == ("rows", [direct]), mode
