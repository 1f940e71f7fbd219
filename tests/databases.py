"""Real databases for tests: a SQLite file, or a fresh schema in PostgreSQL.

PostgreSQL comes from ``ZKSERVER_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``). Each use gets its own schema, so tests
(and engineers) can share one database. When it is unreachable the tests skip, except
under CI (``CI`` set), where they fail: CI must exercise PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import psycopg2
import pytest

__all__ = ["POSTGRES_URL", "postgres_schema", "with_schema", "BACKENDS"]

POSTGRES_URL = os.environ.get("ZKSERVER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgres"]


def with_schema(url: str, schema: str) -> str:
    """``url`` with ``search_path`` set to ``schema`` (libpq ``options``)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote('-csearch_path=' + schema, safe='')}"


@contextmanager
def postgres_schema() -> Iterator[str]:
    """Create a uniquely named schema, yield a URL that uses it, drop it afterwards."""
    schema = "zkt_" + uuid.uuid4().hex[:12]
    try:
        conn = psycopg2.connect(POSTGRES_URL, connect_timeout=5)
    except psycopg2.OperationalError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_URL}: {e}")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {schema}")
        yield with_schema(POSTGRES_URL, schema)
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.close()


@contextmanager
def database(backend: str, tmp_path: os.PathLike[str]) -> Iterator[str]:
    """A ``--db`` value for the backend: a SQLite file in tmp_path, or a fresh PG schema."""
    if backend == "sqlite":
        yield f"sqlite:{os.fspath(tmp_path)}/zkserver.sqlite3"
    else:
        with postgres_schema() as url:
            yield url
