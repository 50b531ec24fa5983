"""Shared pytest fixtures: one private PostgreSQL cluster per test session, a fresh database with
the extension for each test module."""
import itertools
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from pgcluster import Cluster  # noqa: E402

psycopg2 = pytest.importorskip("psycopg2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def cluster():
    c = Cluster().start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def dbname(cluster):
    name = f"flock_test_{next(_db_counter)}"
    conn = psycopg2.connect(cluster.dsn())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    conn = psycopg2.connect(cluster.dsn(name))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION flock")
    conn.close()
    return name


@pytest.fixture
def conn(cluster, dbname):
    """A connection in autocommit mode to the module's database."""
    c = psycopg2.connect(cluster.dsn(dbname))
    c.autocommit = True
    yield c
    c.close()


@pytest.fixture
def connect_as(cluster, dbname):
    """connect_as(role): an autocommit connection to the module's database as that role, closed
    after the test."""
    opened = []

    def _connect(role):
        c = psycopg2.connect(cluster.dsn(dbname, user=role))
        c.autocommit = True
        opened.append(c)
        return c
    yield _connect
    for c in opened:
        c.close()
