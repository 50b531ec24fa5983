"""Data set content hashes (issue 16): the two definitions and what verify_dataset detects with each.

Definition 'binary' (new snapshots) is recomputed here from PostgreSQL's binary COPY output, parsed in
Python (binary_oracle), independently of the C code that computes it while writing a snapshot;
definition 'text' (snapshots taken before it, and columns the binary form cannot hash portably)
has its SQL form, flock._table_hash_sql. For each: an untouched snapshot verifies; a changed, a
deleted, an added row and a value set to NULL are detected, by the stored check and by the check of
the source.
"""
import hashlib
import io
import struct

import pytest

from test_catalog import one, rows

CHUNK = 8192


def copy_rows(conn, table):
    """The tuples of COPY table TO STDOUT (FORMAT binary), each as its bytes (field count included)."""
    buf = io.BytesIO()
    with conn.cursor() as cur:
        cur.execute("SET client_encoding = 'UTF8'")
        cur.copy_expert(f"COPY {table} TO STDOUT (FORMAT binary)", buf)
    data = buf.getvalue()
    assert data[:11] == b"PGCOPY\n\xff\r\n\x00"
    pos = 11 + 4
    (ext,) = struct.unpack_from(">i", data, pos)
    pos += 4 + ext
    out = []
    while True:
        start = pos
        (fields,) = struct.unpack_from(">h", data, pos)
        pos += 2
        if fields == -1:
            return out
        for _ in range(fields):
            (length,) = struct.unpack_from(">i", data, pos)
            pos += 4 + max(length, 0)
        out.append(data[start:pos])


def binary_oracle(conn, table):
    """The README's definition 'binary': sha256(columns::text || '\\n' || row_count || sha256(chunk
    hashes)), chunk hashes = sha256 of each 8192 sorted row hashes, row hash = sha256(COPY tuple)."""
    hashes = sorted(hashlib.sha256(r).digest() for r in copy_rows(conn, table))
    chunks = b"".join(hashlib.sha256(b"".join(hashes[i:i + CHUNK])).digest() for i in range(0, len(hashes), CHUNK))
    columns = one(conn, "SELECT flock._table_columns(%s::regclass)::text", (table,))
    head = (columns + "\n" + str(len(hashes))).encode("utf-8")
    return hashlib.sha256(head + hashlib.sha256(chunks).digest()).hexdigest()


@pytest.fixture
def source(conn):
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS hash_src")
        cur.execute("CREATE TABLE hash_src (id int, x real, y float8, name text, flag boolean, n numeric, "
                    "ts timestamptz, tags text[])")
        cur.execute("INSERT INTO hash_src SELECT i, i / 7.0, CASE WHEN i % 5 = 0 THEN NULL ELSE i * 1e-3 END, "
                    "'row ' || i || ' é', i % 2 = 0, i * 1.25, '2026-12-03 10:00+00'::timestamptz + i * interval '1 h', "
                    "ARRAY['a', NULL, i::text] FROM generate_series(1, 20000) i")
    return "hash_src"


def snapshot(conn, name, method):
    """A snapshot of hash_src recorded with definition `method`. 'text' stands for a snapshot taken
    before the binary definition existed: its row as such a version has it (hash by the SQL form)."""
    ref = one(conn, "SELECT flock.snapshot_dataset(%s, 'SELECT * FROM hash_src')", (name,))
    table, recorded, recorded_method = rows(conn, "SELECT table_name, content_hash, hash_method FROM flock.datasets "
                                                  "WHERE name || '@' || version = %s", (ref,))[0]
    assert recorded_method == "binary" and recorded == binary_oracle(conn, table)
    if method == "text":
        with conn.cursor() as cur:
            cur.execute("UPDATE flock.datasets d SET hash_method = 'text', content_hash = h.content_hash "
                        "FROM flock._table_hash_sql(%s::regclass) h WHERE d.name || '@' || d.version = %s", (table, ref))
    return ref, table


def tamper(conn, table, sql):
    with conn.cursor() as cur:
        cur.execute(f"ALTER TABLE {table} DISABLE TRIGGER immutable")
        cur.execute(sql.format(t=table))
        cur.execute(f"ALTER TABLE {table} ENABLE TRIGGER immutable")


CHANGES = {
    "changed row": "UPDATE {t} SET x = x + 1e-6 WHERE id = 17",
    "deleted row": "DELETE FROM {t} WHERE id = 17",
    "added row": "INSERT INTO {t} SELECT * FROM {t} WHERE id = 17",  # a duplicate: same rows, one more
    "NULL": "UPDATE {t} SET name = NULL WHERE id = 17",
    "NULL moved": "UPDATE {t} SET y = CASE WHEN id = 5 THEN 0.005 ELSE NULL END WHERE id IN (5, 6)",
}


@pytest.mark.parametrize("method", ["binary", "text"])
def test_untouched_snapshot_verifies(conn, source, method):
    ref, _ = snapshot(conn, "hash_ok_" + method, method)
    report = one(conn, "SELECT flock.verify_dataset_report(%s)", (ref,))
    assert report["ok"] and report["stored"]["ok"] and report["source"]["ok"], report


@pytest.mark.parametrize("method", ["binary", "text"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_verify_detects_a_changed_snapshot(conn, source, method, change):
    ref, table = snapshot(conn, f"hash_{method}_{change.replace(' ', '_')}", method)
    tamper(conn, table, CHANGES[change])
    report = one(conn, "SELECT flock.verify_dataset_report(%s, false)", (ref,))
    assert report["ok"] is False and report["stored"]["ok"] is False, report
    if method == "binary":
        assert report["stored"]["content_hash"] == binary_oracle(conn, table)


@pytest.mark.parametrize("method", ["binary", "text"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_verify_detects_a_changed_source(conn, source, method, change):
    ref, _ = snapshot(conn, f"src_{method}_{change.replace(' ', '_')}", method)
    with conn.cursor() as cur:
        cur.execute(CHANGES[change].format(t="hash_src"))
    report = one(conn, "SELECT flock.verify_dataset_report(%s)", (ref,))
    assert report["stored"]["ok"] is True and report["source"]["ok"] is False and report["ok"] is False, report


def test_columns_the_binary_form_cannot_hash_use_the_text_definition(conn):
    """A composite column's binary form holds its type's OID, which another database gives another
    value: such a snapshot is hashed by definition 'text' (general path) and verifies."""
    with conn.cursor() as cur:
        cur.execute("DROP TYPE IF EXISTS hash_pair CASCADE")
        cur.execute("CREATE TYPE hash_pair AS (a int, b text)")
    ref = one(conn, "SELECT flock.snapshot_dataset('hash_composite', "
                    "'SELECT i, ROW(i, ''x'')::hash_pair AS p FROM generate_series(1, 10) i')")
    table, recorded, method = rows(conn, "SELECT table_name, content_hash, hash_method FROM flock.datasets "
                                         "WHERE name || '@' || version = %s", (ref,))[0]
    assert method == "text"
    assert recorded == one(conn, "SELECT content_hash FROM flock._table_hash_sql(%s::regclass)", (table,))
    assert one(conn, "SELECT flock.verify_dataset(%s)", (ref,)) is True


def test_another_client_encoding_gives_the_same_hash(conn, source):
    """Text values are hashed as UTF-8 whatever the session's client_encoding (general path then)."""
    with conn.cursor() as cur:
        cur.execute("SET client_encoding = 'LATIN1'")
        cur.execute("SELECT flock.snapshot_dataset('hash_latin1', 'SELECT * FROM hash_src')")
        ref = cur.fetchone()[0]
        cur.execute("SET client_encoding = 'UTF8'")
    table, recorded, method = rows(conn, "SELECT table_name, content_hash, hash_method FROM flock.datasets "
                                         "WHERE name || '@' || version = %s", (ref,))[0]
    assert method == "binary" and recorded == binary_oracle(conn, table)
    with conn.cursor() as cur:
        cur.execute("SET client_encoding = 'LATIN1'")
        cur.execute("SELECT flock.verify_dataset(%s)", (ref,))
        assert cur.fetchone()[0] is True
        cur.execute("SET client_encoding = 'UTF8'")
