"""Hostile model bytes through SQL, as an unprivileged LOGIN role under a statement_timeout.

Thousands of mutants of the fuzz seed corpora (tests/fuzz/corpus: the project's test models and one
small model per operator family) go through the type's input function (the cast
'\\x…'::flock.model), a subset through flock.register_model, and the accepted ones are scored once.
Mutations are deterministic (fixed seeds): raw byte edits (bit flips, truncations, swapped and
duplicated chunks, interesting integers) and edits at the protobuf / JSON level (huge and negative
dims, bad axes, zero strides, cycles, non-UTF-8 strings, swapped values and types, out-of-range
node and feature indices). Whatever the bytes, each statement must end in a clean error with an
SQLSTATE other than XX000, or succeed, and end within its timeout plus a second; the backend must
never crash (the connection survives, pg_postmaster_start_time() stays, the server log has no
"terminated by signal") and no statement may keep running after the test.

The attacks of issue 11 are regression tests by name, below the mutation runs.
"""
import copy
import json
import pathlib
import random
import time

import numpy as np
import onnx
import psycopg2
import pytest
from onnx import TensorProto, helper, numpy_helper

ROLE = "flock_hostile"
TIMEOUT_S = 2.0
CORPUS = pathlib.Path(__file__).resolve().parent.parent / "fuzz" / "corpus"
RESULTS = pathlib.Path(__file__).resolve().parent / "results"
# Mutants per family: enough to reach thousands in total, small enough for < 3 min.
RAW_ONNX_MUTANTS = 1200
PROTO_MUTANTS = 900
XGBOOST_MUTANTS = 600
REGISTER_EVERY = 10  # every tenth mutant also goes through flock.register_model


# ----------------------------------------------------------------------------------------------
# The harness: one hostile session, every statement timed and classified.
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hostile_role(cluster, dbname):
    admin = psycopg2.connect(cluster.dsn(dbname))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP ROLE IF EXISTS {ROLE}")
        cur.execute(f"CREATE ROLE {ROLE} LOGIN")  # no grants beyond PUBLIC's
        cur.execute(f"ALTER ROLE {ROLE} SET statement_timeout = '{int(TIMEOUT_S * 1000)}ms'")
    admin.close()
    return ROLE


class Session:
    """The hostile role's connection; records every failure the test cares about."""

    def __init__(self, cluster, dbname):
        self.cluster, self.dbname = cluster, dbname
        self.admin = psycopg2.connect(cluster.dsn(dbname))
        self.admin.autocommit = True
        self.started = self.admin_one("SELECT pg_postmaster_start_time()")
        self.log_offset = len(cluster.server_log())
        self.conn = self._connect()
        self.failures = []
        self.statements = 0
        self.accepted = 0
        self.slowest = 0.0

    def _connect(self):
        c = psycopg2.connect(self.cluster.dsn(self.dbname, user=ROLE))
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute("SHOW statement_timeout")
            assert cur.fetchone()[0] == f"{int(TIMEOUT_S)}s"
        return c

    def admin_one(self, sql, args=None):
        with self.admin.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchone()[0]

    def run(self, what, sql, args=None, save=None):
        """Runs one statement; returns its rows, or None when it failed (cleanly or not)."""
        self.statements += 1
        t0 = time.monotonic()
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, args)
                rows = cur.fetchall()
            ok = True
        except psycopg2.Error as e:
            ok, rows = False, None
            elapsed = time.monotonic() - t0
            if self.conn.closed or e.pgcode is None:
                self._fail(what, f"connection lost ({type(e).__name__}: {str(e).strip()[:200]})", save)
                self._recover()
            elif e.pgcode == "XX000":
                self._fail(what, f"XX000: {e.pgerror.strip()[:300]}", save)
        except Exception as e:  # e.g. an error message that is not valid UTF-8
            ok, rows = False, None
            self._fail(what, f"{type(e).__name__}: {str(e)[:200]}", save)
            self._recover()
        elapsed = time.monotonic() - t0
        self.slowest = max(self.slowest, elapsed)
        if elapsed > TIMEOUT_S + 1.0:
            self._fail(what, f"ran {elapsed:.1f} s under a {TIMEOUT_S:.0f} s statement_timeout", save)
        return rows if ok else None

    def _fail(self, what, why, save):
        name = None
        if save is not None:
            RESULTS.mkdir(exist_ok=True)
            name = RESULTS / f"hostile-{len(self.failures)}-{what.replace('/', '_').replace(' ', '_')[:80]}"
            name.write_bytes(save)
        self.failures.append(f"{what}: {why}" + (f" [bytes: {name}]" if name else ""))

    def _recover(self):
        try:
            self.conn.close()
        except Exception:
            pass
        for _ in range(60):  # the postmaster restarts every backend after a crash
            try:
                self.conn = self._connect()
                return
            except psycopg2.Error:
                time.sleep(0.5)
        raise RuntimeError("the server did not come back")

    def check_server(self):
        """Appends the server-level failures: restarts, crashes in the log, statements still running."""
        try:
            started = self.admin_one("SELECT pg_postmaster_start_time()")
        except psycopg2.Error:
            self.admin = psycopg2.connect(self.cluster.dsn(self.dbname))
            self.admin.autocommit = True
            started = self.admin_one("SELECT pg_postmaster_start_time()")
        if started != self.started:
            self.failures.append(f"the server restarted (postmaster start {self.started} -> {started})")
        log = self.cluster.server_log()[self.log_offset:]
        for line in log.splitlines():
            if "terminated by signal" in line or ("server process" in line and "was terminated" in line):
                self.failures.append(f"server log: {line.strip()[:300]}")
            if "\ufffd" in line:  # bytes that are not UTF-8 reached an error message (the server's encoding)
                self.failures.append(f"server log line not UTF-8: {line.strip()[:300]}")
        running = self.admin_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND state = 'active' AND pid <> pg_backend_pid()",
            (ROLE,))
        if running:
            self.failures.append(f"{running} statement(s) of {ROLE} still running after the test")

    def close(self):
        for c in (self.conn, self.admin):
            try:
                c.close()
            except Exception:
                pass


@pytest.fixture
def hostile(cluster, dbname, hostile_role):
    s = Session(cluster, dbname)
    yield s
    s.close()


def as_hex_text(data):
    return "\\x" + data.hex()


def try_model(s, what, data, register=False):
    """The cast, then (if accepted) a scoring of one row; optionally register_model."""
    rows = s.run(f"{what} cast", "SELECT flock.model_signature(%s::flock.model)", (as_hex_text(data),), save=data)
    if rows is not None:
        s.accepted += 1
        sig = rows[0][0] or {}
        inputs = sig.get("inputs") or []
        if len(inputs) == 1 and isinstance(inputs[0].get("width"), int) and 0 < inputs[0]["width"] <= 4096:
            s.run(f"{what} predict_tensor",
                  "SELECT flock.predict_tensor(%s::flock.model, array_fill(0.5::float4, ARRAY[%s]))",
                  (as_hex_text(data), inputs[0]["width"]), save=data)
    if register:
        s.run(f"{what} register_model", "SELECT flock.register_model(%s, %s)",
              ("hostile_" + str(s.statements), psycopg2.Binary(data)), save=data)


def report(s, label):
    s.check_server()
    print(f"{label}: {s.statements} statements, {s.accepted} models accepted, slowest {s.slowest:.2f} s, "
          f"{len(s.failures)} failures")
    assert not s.failures, f"{len(s.failures)} failures:\n" + "\n".join(s.failures[:40])


# ----------------------------------------------------------------------------------------------
# Mutators (deterministic: each takes its own random.Random).
# ----------------------------------------------------------------------------------------------

def seeds(kind):
    files = sorted((CORPUS / kind).iterdir())
    assert files, f"no seeds in {CORPUS / kind}"
    return [(p.stem, p.read_bytes()) for p in files]


INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
               b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x00\x00\x00\x00", b"\xff\xfe"]


def mutate_bytes(data, rng):
    b = bytearray(data)
    op = rng.choice(["flip", "flip", "truncate", "swap", "dup", "interesting", "delete", "insert"])
    if op == "flip":
        for _ in range(rng.randint(1, 8)):
            k = rng.randrange(len(b))
            b[k] ^= 1 << rng.randrange(8)
    elif op == "truncate":
        b = b[:rng.randrange(len(b))]
    elif op == "swap" and len(b) > 8:
        n = rng.randint(1, max(1, len(b) // 8))
        i, j = sorted(rng.sample(range(len(b) - n), 2)) if len(b) - n > 2 else (0, 0)
        b[i:i + n], b[j:j + n] = b[j:j + n], b[i:i + n]
    elif op == "dup":
        i = rng.randrange(len(b))
        n = rng.randint(1, 64)
        b[i:i] = b[i:i + n]
    elif op == "interesting":
        i = rng.randrange(len(b))
        v = rng.choice(INTERESTING)
        b[i:i + len(v)] = v
    elif op == "delete":
        i = rng.randrange(len(b))
        del b[i:i + rng.randint(1, 16)]
    else:
        i = rng.randrange(len(b) + 1)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return op, bytes(b)


HUGE = [0, -1, -5, 2**31, 2**31 - 1, 2**32 + 1, 2**62 + 1, 2**63 - 1, -2**63]
BAD_AXES = [-100, -3, 5, 7, 2**31, -2**63, 2**63 - 1]
BAD_UTF8 = [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"abc\x80", b"\xf8\x88\x80\x80\x80"]


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(a.g)


def _set_bad_bytes(field_setter, rng):
    field_setter(rng.choice(BAD_UTF8))


def mutate_proto(model, rng):
    """One structural mutation of an ONNX model; returns (name, bytes)."""
    m = copy.deepcopy(model)
    g = m.graph
    nodes = list(_all_nodes(g))
    op = rng.choice(["huge_input_dims", "huge_init_dims", "short_raw_data", "bad_axis", "zero_stride", "cycle",
                     "self_loop", "non_utf8", "swap_attrs", "swap_types", "int_attr_values", "opset", "drop_init",
                     "reorder_nodes", "dangling_input"])
    if op == "huge_input_dims" and g.input:
        vi = rng.choice(list(g.input))
        dims = vi.type.tensor_type.shape.dim
        if dims:
            d = rng.choice(list(dims))
            d.Clear()
            d.dim_value = rng.choice(HUGE)
    elif op == "huge_init_dims" and g.initializer:
        t = rng.choice(list(g.initializer))
        if t.dims:
            t.dims[rng.randrange(len(t.dims))] = rng.choice(HUGE)
        else:
            t.dims.append(rng.choice(HUGE))
    elif op == "short_raw_data" and g.initializer:
        t = rng.choice(list(g.initializer))
        arr = numpy_helper.to_array(t) if t.data_type != TensorProto.STRING else None
        if arr is not None:
            raw = arr.tobytes()
            t.ClearField("float_data"), t.ClearField("int64_data"), t.ClearField("double_data"), t.ClearField("int32_data")
            t.raw_data = raw[:rng.randrange(len(raw) + 1)] if raw else b"\x01"
    elif op == "bad_axis" and nodes:
        node = rng.choice(nodes)
        for a in node.attribute:
            if a.name in ("axis", "axes", "perm", "batch_dims", "blocksize"):
                if a.type == onnx.AttributeProto.INT:
                    a.i = rng.choice(BAD_AXES)
                elif a.ints:
                    a.ints[rng.randrange(len(a.ints))] = rng.choice(BAD_AXES)
                break
        else:
            node.attribute.append(helper.make_attribute("axis", rng.choice(BAD_AXES)))
    elif op == "zero_stride" and nodes:
        node = rng.choice(nodes)
        name = rng.choice(["strides", "dilations", "kernel_shape", "pads"])
        for a in list(node.attribute):
            if a.name == name:
                node.attribute.remove(a)
        node.attribute.append(helper.make_attribute(name, [rng.choice([0, -1, 2**31, 2**62])] * rng.randint(1, 4)))
    elif op == "cycle" and len(g.node) >= 2:
        i, j = sorted(rng.sample(range(len(g.node)), 2))
        if g.node[i].input and g.node[j].output:
            g.node[i].input[rng.randrange(len(g.node[i].input))] = g.node[j].output[0]
    elif op == "self_loop" and g.node:
        node = rng.choice(list(g.node))
        if node.input and node.output:
            node.input[0] = node.output[0]
    elif op == "non_utf8":
        target = rng.choice(["producer", "node_name", "input_name", "metadata", "labels", "doc"])
        bad = rng.choice(BAD_UTF8)
        raw = m.SerializeToString()
        marker = {"producer": "PRODUCER_MARK", "node_name": "NODE_MARK", "input_name": "INPUT_MARK",
                  "metadata": "META_MARK", "labels": "LABEL_MARK", "doc": "DOC_MARK"}[target]
        if target == "producer":
            m.producer_name = marker
        elif target == "node_name" and g.node:
            rng.choice(list(g.node)).name = marker
        elif target == "input_name" and g.input:
            old = g.input[0].name
            g.input[0].name = marker
            for node in g.node:
                for k, name in enumerate(node.input):
                    if name == old:
                        node.input[k] = marker
        elif target == "metadata":
            helper.set_model_props(m, {"feature_names": json.dumps([marker, "b"])})
        elif target == "labels" and nodes:
            for node in nodes:
                for a in node.attribute:
                    if a.name == "classlabels_strings" and a.strings:
                        a.strings[0] = marker.encode()
        else:
            g.doc_string = marker
        raw = m.SerializeToString()
        # Same length, so protobuf's length prefixes stay right: the mark becomes bad bytes.
        bad_mark = (bad * 20)[:len(marker)]
        return f"non_utf8_{target}", raw.replace(marker.encode(), bad_mark)
    elif op == "swap_attrs" and nodes:
        node = rng.choice(nodes)
        if len(node.attribute) >= 2:
            a, b = rng.sample(range(len(node.attribute)), 2)
            na, nb = node.attribute[a].name, node.attribute[b].name
            node.attribute[a].name, node.attribute[b].name = nb, na
    elif op == "swap_types":
        if g.initializer and rng.random() < 0.5:
            t = rng.choice(list(g.initializer))
            t.data_type = rng.choice([TensorProto.FLOAT, TensorProto.INT64, TensorProto.DOUBLE, TensorProto.STRING,
                                      TensorProto.BOOL, TensorProto.INT8, TensorProto.FLOAT16, 0, 99])
        elif g.input:
            g.input[0].type.tensor_type.elem_type = rng.choice([TensorProto.INT64, TensorProto.STRING, TensorProto.BOOL,
                                                                TensorProto.DOUBLE, TensorProto.UINT8, 0, 99])
    elif op == "int_attr_values" and nodes:
        # Tree node / feature / class ids, coefficients' lengths, class label counts: index-like ints.
        node = rng.choice(nodes)
        ints = [a for a in node.attribute if a.ints]
        if ints:
            a = rng.choice(ints)
            k = rng.randrange(len(a.ints))
            a.ints[k] = rng.choice(HUGE + [len(a.ints), a.ints[k] + 1, 1000])
            if rng.random() < 0.3:
                del a.ints[-1]
    elif op == "opset":
        if m.opset_import:
            m.opset_import[rng.randrange(len(m.opset_import))].version = rng.choice([0, 1, 6, 18, 99, -1, 2**40])
    elif op == "drop_init" and g.initializer:
        del g.initializer[rng.randrange(len(g.initializer))]
    elif op == "reorder_nodes" and len(g.node) >= 2:
        nodes_list = list(g.node)
        rng.shuffle(nodes_list)
        del g.node[:]
        g.node.extend(nodes_list)
    elif op == "dangling_input" and g.node:
        node = rng.choice(list(g.node))
        node.input.append(rng.choice(["", "no_such_value", node.output[0] if node.output else "x"]))
    return op, m.SerializeToString()


def mutate_xgboost(doc, rng):
    """One mutation of a parsed XGBoost JSON model; returns (name, bytes)."""
    d = copy.deepcopy(doc)
    learner = d.get("learner", {})
    trees = learner.get("gradient_booster", {}).get("model", {}).get("trees", [])
    op = rng.choice(["child_index", "child_cycle", "split_index", "num_feature", "num_class", "truncate_array",
                     "base_score", "num_nodes", "non_utf8_name", "objective", "swap_arrays", "num_trees", "tree_info"])
    tree = rng.choice(trees) if trees else {}
    if op == "child_index" and tree.get("left_children"):
        arr = tree[rng.choice(["left_children", "right_children", "parents"])]
        arr[rng.randrange(len(arr))] = rng.choice([-2, len(arr), 2**31 - 1, -2**31, 2**40])
    elif op == "child_cycle" and tree.get("left_children") and len(tree["left_children"]) > 1:
        k = rng.randrange(1, len(tree["left_children"]))
        tree["left_children"][k] = rng.choice([0, k])  # back to the root, or to itself
        tree["right_children"][k] = 0
    elif op == "split_index" and tree.get("split_indices"):
        arr = tree["split_indices"]
        arr[rng.randrange(len(arr))] = rng.choice([-1, 2**31 - 1, 2**40, 10**6])
    elif op == "num_feature":
        learner.setdefault("learner_model_param", {})["num_feature"] = rng.choice(["0", "-1", "4294967297", "x", "100000000000"])
    elif op == "num_class":
        learner.setdefault("learner_model_param", {})["num_class"] = rng.choice(["0", "-3", "1", "1000000", "2147483648"])
    elif op == "truncate_array" and tree:
        key = rng.choice([k for k, v in tree.items() if isinstance(v, list) and v] or ["left_children"])
        if isinstance(tree.get(key), list) and tree[key]:
            del tree[key][rng.randrange(len(tree[key])):]
    elif op == "base_score":
        learner.setdefault("learner_model_param", {})["base_score"] = rng.choice(["nan", "1e400", "-inf", "", "[0.5]"])
    elif op == "num_nodes" and tree:
        tree.setdefault("tree_param", {})["num_nodes"] = rng.choice(["0", "-1", "999999999", "2147483648"])
    elif op == "non_utf8_name":
        learner["feature_names"] = ["NAMEMARK"] + [f"f{k}" for k in range(len(learner.get("feature_names", [])) - 1)]
        text = json.dumps(d).encode()
        return op, text.replace(b"NAMEMARK", (rng.choice(BAD_UTF8) * 8)[:8])
    elif op == "objective":
        learner.setdefault("objective", {})["name"] = rng.choice(["multi:softprob", "binary:logistic", "rank:pairwise", "", "\u0000"])
    elif op == "swap_arrays" and tree.get("left_children"):
        tree["left_children"], tree["right_children"] = tree["right_children"], tree["left_children"]
        if rng.random() < 0.5:
            tree["split_conditions"], tree["split_indices"] = tree.get("split_indices"), tree.get("split_conditions")
    elif op == "num_trees":
        gb = learner.get("gradient_booster", {}).get("model", {})
        gb.setdefault("gbtree_model_param", {})["num_trees"] = rng.choice(["0", "-1", "100000", "1"])
    elif op == "tree_info":
        gb = learner.get("gradient_booster", {}).get("model", {})
        info = gb.get("tree_info", [])
        if info:
            info[rng.randrange(len(info))] = rng.choice([-1, 5, 2**31, 1000])
    return op, json.dumps(d).encode()


# ----------------------------------------------------------------------------------------------
# The mutation runs.
# ----------------------------------------------------------------------------------------------

def test_raw_byte_mutants_of_onnx_models(hostile):
    base = seeds("onnx_import")
    rng = random.Random(20261202)
    for k in range(RAW_ONNX_MUTANTS):
        name, data = rng.choice(base)
        op, mutant = mutate_bytes(data, rng)
        try_model(hostile, f"onnx raw #{k} {op} of {name}", mutant, register=k % REGISTER_EVERY == 0)
    report(hostile, "raw ONNX mutants")


def test_protobuf_level_mutants_of_onnx_models(hostile):
    base = [(n, onnx.load_from_string(d)) for n, d in seeds("onnx_import")]
    rng = random.Random(11)
    for k in range(PROTO_MUTANTS):
        name, model = rng.choice(base)
        op, mutant = mutate_proto(model, rng)
        try_model(hostile, f"onnx proto #{k} {op} of {name}", mutant, register=k % REGISTER_EVERY == 0)
    report(hostile, "protobuf-level ONNX mutants")


def test_mutants_of_xgboost_models(hostile):
    base = [(n, json.loads(d)) for n, d in seeds("xgboost_import")]
    rng = random.Random(42)
    for k in range(XGBOOST_MUTANTS):
        name, doc = rng.choice(base)
        if k % 3 == 0:
            op, mutant = mutate_bytes(json.dumps(doc).encode(), rng)
        else:
            op, mutant = mutate_xgboost(doc, rng)
        try_model(hostile, f"xgboost #{k} {op} of {name}", mutant, register=k % REGISTER_EVERY == 0)
    report(hostile, "XGBoost mutants")


def test_text_forms_of_the_type_input(hostile):
    """The input function's own parsing: bad hex, odd digits, escapes, empty, huge declared text."""
    texts = ["", "\\x", "\\x0", "\\xzz", "\\x 08 07", "\\\\", "\\400", "\\777", "\\0", "abc\\", "{", "{}", "[]",
             "{\"learner\": null}", "\\x7b7d", "\\x" + "00" * 10000, "\\x" + "ff" * 70000, "x" * 100000]
    for k, text in enumerate(texts):
        hostile.run(f"text #{k} {text[:20]!r}", "SELECT %s::flock.model IS NOT NULL", (text,))
    report(hostile, "text forms")


# ----------------------------------------------------------------------------------------------
# The crafted attacks of issue 11, by name. Each must fail with a clean SQLSTATE (never XX000, never
# a crash) or, where a model is accepted, its use must fail cleanly; the server stays up.
# ----------------------------------------------------------------------------------------------

CLEAN = ("22", "0A", "54", "53", "57014", "42804")


def _model(nodes, inputs, outputs, inits=(), opset=15, producer="flock-hostile"):
    m = helper.make_model(helper.make_graph(nodes, "attack", inputs, outputs, list(inits)),
                          opset_imports=[helper.make_opsetid("", opset)], producer_name=producer)
    m.ir_version = 8
    return m


def expect_clean_rejection(s, what, sql, args, data):
    """Runs sql; it must fail with a clean SQLSTATE. Returns the SQLSTATE."""
    t0 = time.monotonic()
    try:
        with s.conn.cursor() as cur:
            cur.execute(sql, args)
            rows = cur.fetchall()
    except psycopg2.Error as e:
        elapsed = time.monotonic() - t0
        assert not s.conn.closed and e.pgcode is not None, f"{what}: the backend died ({e})"
        assert e.pgcode != "XX000", f"{what}: internal error: {e.pgerror}"
        assert e.pgcode.startswith(CLEAN) or e.pgcode in CLEAN, f"{what}: unexpected SQLSTATE {e.pgcode}: {e.pgerror}"
        assert elapsed <= TIMEOUT_S + 1.0, f"{what}: took {elapsed:.1f} s"
        return e.pgcode
    pytest.fail(f"{what}: accepted; returned {str(rows)[:200]}")


def test_overflowing_initializer_dims_with_gather_reads_no_memory(hostile):
    """Issue 11, attack 2: dims [2^62+1, 4] wrap to 4 elements; Gather must not read past 16 bytes."""
    table = TensorProto(name="table", data_type=TensorProto.FLOAT, dims=[2**62 + 1, 4], raw_data=b"\x00" * 16)
    m = _model([helper.make_node("Gather", ["table", "idx"], ["y"], axis=0)],
               [helper.make_tensor_value_info("idx", TensorProto.INT64, ["N", 1])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 4])], [table])
    data = m.SerializeToString()
    s = hostile
    accepted = s.run("gather overflow cast", "SELECT %s::flock.model IS NOT NULL", (as_hex_text(data),))
    if accepted is not None:
        # The load let it through: reading row 10^6 of a 1-row table must fail, not return memory.
        expect_clean_rejection(s, "gather overflow predict_tensor",
                               "SELECT flock.predict_tensor(%s::flock.model, ROW(1000000::bigint))",
                               (as_hex_text(data),), data)
    else:
        expect_clean_rejection(s, "gather overflow cast", "SELECT %s::flock.model", (as_hex_text(data),), data)
    report(s, "gather overflow")


def test_layer_normalization_axis_minus_100(hostile):
    """Issue 11, attack 3: libonnx's shape inference indexed the input's dims with axis -100."""
    m = _model([helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y", "mean", "inv_std"], axis=-100)],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
                helper.make_tensor_value_info("mean", TensorProto.FLOAT, None),
                helper.make_tensor_value_info("inv_std", TensorProto.FLOAT, None)],
               [numpy_helper.from_array(np.ones(4, np.float32), "scale"),
                numpy_helper.from_array(np.zeros(4, np.float32), "bias")], opset=17)
    data = m.SerializeToString()
    expect_clean_rejection(hostile, "LayerNormalization axis=-100", "SELECT %s::flock.model", (as_hex_text(data),), data)
    report(hostile, "LayerNormalization axis")


def test_int64_initializer_with_too_few_raw_bytes(hostile):
    """Issue 11, attack 3: a shape initializer of 2 int64 values stored in 4 bytes."""
    shape = TensorProto(name="shape", data_type=TensorProto.INT64, dims=[2], raw_data=b"\x01\x00\x00\x00")
    m = _model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [shape])
    data = m.SerializeToString()
    expect_clean_rejection(hostile, "int64 initializer short raw_data", "SELECT %s::flock.model", (as_hex_text(data),), data)
    report(hostile, "short raw data")


def test_maxpool_zero_stride(hostile):
    """Issue 11, attack 3: MaxPool with strides [0] divided by zero (SIGFPE) in libonnx."""
    m = _model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2], strides=[0])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    data = m.SerializeToString()
    expect_clean_rejection(hostile, "MaxPool strides=[0]", "SELECT %s::flock.model", (as_hex_text(data),), data)
    # And through register_model, the other entry that turns bytes into a model.
    expect_clean_rejection(hostile, "MaxPool strides=[0] register_model", "SELECT flock.register_model('h_maxpool', %s)",
                           (psycopg2.Binary(data),), data)
    report(hostile, "MaxPool zero stride")


def test_non_utf8_producer_name(hostile):
    """Issue 11: a producer_name that is not UTF-8 gave XX000 (json type_error.316)."""
    m = _model([helper.make_node("Relu", ["x"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], producer="PRODUCER")
    data = m.SerializeToString().replace(b"PRODUCER", b"PRO\xb4\xffCER")
    expect_clean_rejection(hostile, "non-UTF-8 producer_name", "SELECT flock.model_signature(%s::flock.model)",
                           (as_hex_text(data),), data)
    expect_clean_rejection(hostile, "non-UTF-8 producer_name register_model", "SELECT flock.register_model('h_utf8', %s)",
                           (psycopg2.Binary(data),), data)
    report(hostile, "non-UTF-8 producer")


def test_huge_declared_input_dims_fail_fast(hostile):
    """Issue 11, attack 4: an input declared [N, 2^31, 2^31] must fail cleanly within the timeout."""
    m = _model([helper.make_node("Relu", ["x"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2**31, 2**31])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2**31, 2**31])])
    data = m.SerializeToString()
    hostile.run("huge input dims", "SELECT %s::flock.model IS NOT NULL", (as_hex_text(data),), save=data)
    report(hostile, "huge input dims")
