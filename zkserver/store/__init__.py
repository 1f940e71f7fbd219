"""Storage: one schema, two backends (SQLite embedded, PostgreSQL for production).

``open_store(db, data_dir)`` picks the backend from the ``--db`` option.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from zkserver.localtime import TimePolicy
from zkserver.store.base import (
    AttendancePage,
    DuplicateDevice,
    ReplayPage,
    Store,
    StoreUnavailable,
)
from zkserver.store.dialect import Q, Script, utc_now
from zkserver.store.postgres import PostgresStore
from zkserver.store.schema import MIGRATIONS, Migration
from zkserver.store.sql import SQLStore
from zkserver.store.sqlite import SqliteStore

__all__ = [
    "MIGRATIONS",
    "AttendancePage",
    "DuplicateDevice",
    "Migration",
    "PostgresStore",
    "Q",
    "ReplayPage",
    "SQLStore",
    "Script",
    "SqliteStore",
    "Store",
    "StoreUnavailable",
    "open_store",
    "utc_now",
]

DEFAULT_SQLITE = "zkserver.sqlite3"

if TYPE_CHECKING:

    def _both_backends_are_stores(sqlite: SqliteStore, postgres: PostgresStore) -> list[Store]:
        """Never called: mypy checks that each backend satisfies the whole Store protocol
        (every method, same signatures), so nothing needs to probe a store with getattr."""
        return [sqlite, postgres]


def open_store(
    db: str, data_dir: str, reactor: Any = None, time_policy: TimePolicy | None = None
) -> Store:
    """A not yet started store for ``db``:

    - ``""``, ``sqlite:`` -> ``<data_dir>/zkserver.sqlite3``
    - ``sqlite:PATH`` (relative paths are under ``data_dir``; ``sqlite:///abs`` works too;
      ``?timeout=SECONDS`` sets how long a write waits for a lock, default 5)
    - ``postgresql://user@host:port/dbname[?options=-csearch_path%3Dschema]``
      (``postgres://`` too; the URL goes to libpq unchanged)
    """
    db = db.strip()
    if db.startswith(("postgresql://", "postgres://")):
        pg = PostgresStore(db, reactor=reactor)
        if time_policy is not None:
            pg.time_policy = time_policy
        return pg
    if db and not db.startswith("sqlite:"):
        raise ValueError(f"unsupported --db {db!r}: use sqlite:PATH or postgresql://...")
    spec = db[len("sqlite:") :]
    spec, _, query = spec.partition("?")
    if spec.startswith("//"):
        spec = spec[2:]
    options = parse_qs(query)
    unknown = set(options) - {"timeout"}
    if unknown:
        raise ValueError(f"unknown sqlite options {sorted(unknown)}")
    timeout = float(options.get("timeout", ["5"])[-1])
    path = os.path.expanduser(spec) if spec else DEFAULT_SQLITE
    path = os.path.join(os.path.expanduser(data_dir), path)  # an absolute path wins
    store = SqliteStore(path, reactor=reactor, busy_timeout=timeout)
    if time_policy is not None:
        store.time_policy = time_policy
    return store
