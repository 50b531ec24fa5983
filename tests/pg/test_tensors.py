"""Models whose output is a tensor: flock.predict_tensor, and the registration checks for neural
network graphs (opset, element types, symbolic shapes, tensor limits)."""
import numpy as np
import psycopg2
import pytest

from onnx_builders import cast_to_float16, dense_relu, future_opset, symbolic_feature_dim
from test_catalog import one, sqlstate

W = [[1.0, -1.0, 0.5], [2.0, 0.0, -3.0]]
B = [0.5, 0.25, 0.0]


@pytest.fixture(scope="module", autouse=True)
def models(cluster, dbname):
    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT flock.register_model('dense', %s, features => ARRAY['x', 'y'])", (dense_relu(W, B),))
    conn.close()


def expected(x, y):
    return np.maximum(np.array([x, y], dtype=np.float32) @ np.array(W, dtype=np.float32) + np.array(B, dtype=np.float32), 0)


def test_predict_tensor_returns_the_output_row(conn):
    got = one(conn, "SELECT flock.predict_tensor('dense', ARRAY[1, 2]::float4[])")
    assert got == pytest.approx(expected(1, 2).tolist())
    got = one(conn, "SELECT flock.predict_tensor('dense', r) FROM (SELECT 2::float8 AS y, -1::int AS x) r")
    assert got == pytest.approx(expected(-1, 2).tolist())
    got = one(conn, "SELECT flock.predict_tensor(m.model, ARRAY[1, 2]::float4[]) FROM flock.models m WHERE name = 'dense'")
    assert got == pytest.approx(expected(1, 2).tolist())


def test_predict_on_a_vector_output_points_to_predict_tensor(conn):
    err = sqlstate(conn, "SELECT flock.predict('dense', ARRAY[1, 2]::float4[])")
    assert err.pgcode == "42804" and "predict_tensor" in err.diag.message_hint


def test_symbolic_feature_dimension_registers_but_cannot_bind(conn):
    assert one(conn, "SELECT flock.register_model('symbolic', %s)", (symbolic_feature_dim(),)) == "symbolic@1"
    err = sqlstate(conn, "SELECT flock.predict_tensor('symbolic', ARRAY[1, 2]::float4[])")
    assert err.pgcode == "0A000" and "symbolic" in err.diag.message_primary and err.diag.message_hint


def test_unknown_opset_is_rejected(conn):
    before = one(conn, "SELECT count(*) FROM flock.models")
    err = sqlstate(conn, "SELECT flock.register_model('future', %s)", (future_opset(),))
    assert err.pgcode == "0A000" and "opset 99" in err.diag.message_primary
    assert err.diag.message_hint
    assert one(conn, "SELECT count(*) FROM flock.models") == before


def test_unsupported_element_type_fails_at_registration_naming_op_and_type(conn):
    err = sqlstate(conn, "SELECT flock.register_model('half', %s)", (cast_to_float16(),))
    assert err.pgcode == "0A000", err.pgerror
    assert "Cast" in err.diag.message_primary and "16" in err.diag.message_primary
    assert one(conn, "SELECT count(*) FROM flock.models WHERE name = 'half'") == 0


def test_tensor_limit_applies_to_outputs(conn):
    with conn.cursor() as cur:
        cur.execute("SET flock.max_tensor_elements = 2")
        try:
            with pytest.raises(psycopg2.Error) as err:
                cur.execute("SELECT flock.predict_tensor('dense', ARRAY[1, 2]::float4[])")
            assert err.value.pgcode == "54000"
        finally:
            cur.execute("RESET flock.max_tensor_elements")
