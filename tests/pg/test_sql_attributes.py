"""Every function of the extension states its attributes instead of taking PostgreSQL's defaults.

pg_proc cannot tell a stated attribute from a defaulted one, so the install sources (pg/sql/*.sql)
are parsed: each CREATE FUNCTION must name its volatility (IMMUTABLE / STABLE / VOLATILE), its
strictness (STRICT / RETURNS NULL ON NULL INPUT / CALLED ON NULL INPUT), its PARALLEL safety and,
for the prediction functions, its COST. The installed catalog (pg_proc, the functions pg_depend
ties to the extension) is then checked against what the files state, so the two cannot drift.
"""
import os
import re

import pytest

SQL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "pg", "sql")

# The scoring functions: they state a COST (PostgreSQL's planner weighs it per row).
PREDICTION_FUNCTIONS = {"predict", "predict_proba", "predict_label", "predict_tensor"}

VOLATILITY = {"IMMUTABLE": "i", "STABLE": "s", "VOLATILE": "v"}
PARALLEL = {"SAFE": "s", "RESTRICTED": "r", "UNSAFE": "u"}
ARG_MODES = {"IN", "OUT", "INOUT", "VARIADIC"}


def statements(text):
    """Yields (statement, header) for each top-level statement: header is the statement with its
    comments, string literals and dollar-quoted bodies blanked out, so keywords inside them do not
    count."""
    out_stmt, out_head = [], []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("--", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out_stmt.append(text[i:j])
            out_head.append(" ")
            i = j
        elif c == "'":
            j = i + 1
            while j < n:
                if text[j] == "'" and text.startswith("''", j):
                    j += 2
                elif text[j] == "'":
                    break
                else:
                    j += 1
            out_stmt.append(text[i:j + 1])
            out_head.append(" '' ")
            i = j + 1
        elif c == "$" and re.match(r"\$[A-Za-z_]*\$", text[i:]):
            tag = re.match(r"\$[A-Za-z_]*\$", text[i:]).group(0)
            j = text.find(tag, i + len(tag))
            assert j >= 0, f"unterminated {tag} body"
            out_stmt.append(text[i:j + len(tag)])
            out_head.append(" $body$ ")
            i = j + len(tag)
        elif c == ";":
            yield "".join(out_stmt).strip(), "".join(out_head).strip()
            out_stmt, out_head = [], []
            i += 1
        else:
            out_stmt.append(c)
            out_head.append(c)
            i += 1


def split_top_level(s):
    parts, depth, cur = [], 0, []
    for c in s:
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return [p.strip() for p in parts]


def identity_types(arglist):
    """The argument types that identify a function (OUT arguments and defaults left out)."""
    types = []
    for arg in split_top_level(arglist):
        arg = re.split(r"\s+DEFAULT\s+|\s*=\s*", arg, maxsplit=1, flags=re.I)[0].split()
        mode = "IN"
        if arg[0].upper() in ARG_MODES:
            mode = arg.pop(0).upper()
        if mode == "OUT":
            continue
        types.append(" ".join(arg[1:] if len(arg) > 1 else arg))
    return types


def declared_functions():
    """[(file, name, identity types, header after the argument list, OR REPLACE?)] for every
    CREATE FUNCTION."""
    found = []
    for file in sorted(f for f in os.listdir(SQL_DIR) if f.endswith(".sql")):
        with open(os.path.join(SQL_DIR, file)) as f:
            text = f.read()
        for _, head in statements(text):
            m = re.match(r"CREATE\s+(OR\s+REPLACE\s+)?FUNCTION\s+([\w.]+)\s*\(", head, re.I)
            if not m:
                continue
            depth, j = 1, m.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(head[j], 0)
                j += 1
            found.append((file, m.group(2), identity_types(head[m.end():j - 1]), " ".join(head[j:].split()),
                          bool(m.group(1))))
    return found


def stated(name, attrs):
    """(the attributes a CREATE FUNCTION states, as pg_proc spells them; what it leaves out)."""
    upper = f" {attrs.upper()} "
    missing = []
    vol = [k for k in VOLATILITY if f" {k} " in upper]
    if len(vol) != 1:
        missing.append("volatility (IMMUTABLE, STABLE or VOLATILE)")
    called = " CALLED ON NULL INPUT " in upper
    strict = " STRICT " in upper or " RETURNS NULL ON NULL INPUT " in upper
    if called == strict:
        missing.append("strictness (STRICT or CALLED ON NULL INPUT)")
    par = re.findall(r" PARALLEL (SAFE|RESTRICTED|UNSAFE) ", upper)
    if len(par) != 1:
        missing.append("PARALLEL SAFE / RESTRICTED / UNSAFE")
    cost = re.findall(r" COST ([0-9.]+) ", upper)
    if name.split(".")[-1] in PREDICTION_FUNCTIONS and len(cost) != 1:
        missing.append("COST (a prediction function)")
    return ({"provolatile": VOLATILITY[vol[0]] if len(vol) == 1 else None, "proisstrict": strict,
             "proparallel": PARALLEL[par[0]] if len(par) == 1 else None,
             "procost": float(cost[0]) if cost else None}, missing)


@pytest.fixture(scope="module")
def catalog(cluster, dbname):
    """({regprocedure text: pg_proc attributes} for every function of the extension, the declared
    functions resolved to the same keys, [definitions that repeat or replace another])."""
    import psycopg2
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("""
            SELECT p.oid::regprocedure::text, p.provolatile, p.proisstrict, p.proparallel, p.procost::float8,
                   p.prosecdef, p.prosrc, l.lanname
              FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid JOIN pg_language l ON l.oid = p.prolang
             WHERE d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
               AND d.refclassid = 'pg_extension'::regclass
               AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'flock')
               AND p.prokind <> 'p'  -- procedures (flock.add_shard...) have no volatility, strictness or cost""")
        installed = {r[0]: dict(zip(("provolatile", "proisstrict", "proparallel", "procost", "prosecdef",
                                     "prosrc", "lanname"), r[1:])) for r in cur.fetchall()}
        declared, redefined = {}, []
        for file, name, types, attrs, or_replace in declared_functions():
            cur.execute("SELECT %s::regprocedure::text", (f"{name}({', '.join(types)})",))
            key = cur.fetchone()[0]
            if key in declared or or_replace:
                redefined.append(f"{file}: {key}")
            declared[key] = (file, name, attrs)
    conn.close()
    return installed, declared, redefined


def test_sql_files_declare_every_installed_function_once(catalog):
    installed, declared, redefined = catalog
    assert redefined == [], "one definition per function: no second CREATE, no CREATE OR REPLACE"
    assert len(installed) > 50
    assert sorted(set(installed) - set(declared)) == [], "installed but not found in pg/sql/*.sql"
    assert sorted(set(declared) - set(installed)) == [], "declared in pg/sql/*.sql but not installed"


def test_every_function_states_volatility_strictness_parallel_and_prediction_cost(catalog):
    _, declared, _ = catalog
    unstated = [f"{file}: {key} states no {', no '.join(missing)}"
                for key, (file, name, attrs) in sorted(declared.items())
                for missing in [stated(name, attrs)[1]] if missing]
    assert unstated == []


def test_pg_proc_matches_what_the_files_state(catalog):
    installed, declared, _ = catalog
    drift = []
    for key, (file, name, attrs) in sorted(declared.items()):
        want, _ = stated(name, attrs)
        got = installed[key]
        for attr in ("provolatile", "proisstrict", "proparallel", "procost"):
            if want[attr] is not None and got[attr] != want[attr]:
                drift.append(f"{file}: {key}: pg_proc.{attr} is {got[attr]!r}, the file states {want[attr]!r}")
    assert drift == []


def test_prediction_functions_agree_and_stay_stable(catalog):
    """Every overload of the scoring functions is STABLE (it reads the catalog; the planner hook and
    the tests rely on it), PARALLEL SAFE (batched scans run under Gather) and costs the same."""
    installed, _, _ = catalog
    scoring = {k: v for k, v in installed.items() if k.split("(")[0].split(".")[-1] in PREDICTION_FUNCTIONS}
    assert len(scoring) == 16
    assert {(v["provolatile"], v["proparallel"], v["procost"]) for v in scoring.values()} == {("s", "s", 1.0)}


def test_backend_local_state_is_parallel_restricted(catalog):
    """A parallel worker has its own model cache, acting-for note and audit counters: functions
    reporting them must run in the leader."""
    installed, _, _ = catalog
    for key in ("flock.cache_stats()", "flock._caller()", "flock.audit_flush(interval)", "flock.audit_status()"):
        assert installed[key]["proparallel"] == "r", key


def test_entry_points_are_parallel_unsafe_and_match_their_implementation(catalog):
    """A governance entry point (flock_entry) switches whom Flock acts for and calls its SECURITY
    DEFINER implementation flock._<name>: never in a parallel worker, and with the same volatility
    and strictness as the implementation (identity.cpp refuses a strictness mismatch)."""
    installed, _, _ = catalog
    entries = {k: v for k, v in installed.items() if v["lanname"] == "c" and v["prosrc"] == "flock_entry"}
    assert len(entries) >= 10
    for key, entry in entries.items():
        impl_key = re.sub(r"^flock\.", "flock._", key)
        impl = installed[impl_key]
        assert entry["proparallel"] == "u" and impl["proparallel"] == "u", key
        assert impl["prosecdef"], impl_key
        assert (entry["provolatile"], entry["proisstrict"]) == (impl["provolatile"], impl["proisstrict"]), key
