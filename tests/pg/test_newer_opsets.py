"""Models at the ONNX versions newer than Debian's libonnx 1.12 (issue 19): an ai.onnx.ml 5
TreeEnsemble with a set-membership split registers and predicts through SQL, model_info states
the supported range, and a model past it fails with 0A000 naming its opset and the range.
(The operator-by-operator proof is tests/conformance/newer_opsets.py.)"""
import os
import sys

import numpy as np
import psycopg2
from onnx import TensorProto, helper, numpy_helper

from test_catalog import one, sqlstate

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conformance"))
import newer_opsets  # noqa: E402


def member_tree():
    """x0 in {1, 3} ? 10 : (x1 <= 0.5 ? 20 : 30), one tree, ai.onnx 21 / ai.onnx.ml 5."""
    nodes = [(0, 6, 0.0, ("l", 0), ("n", 1), 0), (1, 0, 0.5, ("l", 1), ("l", 2), 0)]
    te = newer_opsets.tree_ensemble_node(nodes, [(0, 10.0), (0, 20.0), (0, 30.0)], [0], 1, members=[1, 3, np.nan])
    m = newer_opsets.model([te], [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2])],
                           [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 1])], 21, ml=5)
    return m.SerializeToString()


def relu(opset):
    n = [helper.make_node("Relu", ["x"], ["y"])]
    return newer_opsets.model(n, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], opset).SerializeToString()


def test_tree_ensemble_ml5_registers_and_predicts(conn):
    assert one(conn, "SELECT flock.register_model('te5', %s)", (psycopg2.Binary(member_tree()),)) == "te5@1"
    # Hand-computed: x0 = 3 is in the set; x0 = 2 is not, then x1 decides.
    for x0, x1, want in ((3, 9, 10.0), (1, 0, 10.0), (2, 0.25, 20.0), (2, 0.75, 30.0), (None, 0.25, 20.0)):
        got = one(conn, "SELECT flock.predict('te5', ARRAY[%s, %s]::float4[])",
                  ("NaN" if x0 is None else x0, x1))
        assert got == want, (x0, x1, got)
    info = one(conn, "SELECT flock.model_info('te5')")
    assert info["opset"] == 21 and info["ml_opset"] == 5
    assert info["supported_opsets"] == {"ai.onnx": [7, 21], "ai.onnx.ml": [1, 5]}


def test_opset_above_the_range_names_it(conn):
    assert one(conn, "SELECT flock.register_model('relu21', %s)", (psycopg2.Binary(relu(21)),)) == "relu21@1"
    err = sqlstate(conn, "SELECT flock.register_model('relu22', %s)", (psycopg2.Binary(relu(22)),))
    assert err.pgcode == "0A000", err.pgerror
    assert "opset 22" in err.diag.message_primary and "7 to 21" in err.diag.message_primary
    assert err.diag.message_hint
