"""Storage: one schema, two backends (SQLite embedded, PostgreSQL for production).

``open_store(db, data_dir)`` picks the backend from the ``--db`` option.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from zkserver.localtime import TimePolicy
from zkserver.store.base import (
    AttendancePage,
    DuplicateDevice,
    ReplayPage,
    Store,
    StoreUnavailable,
)
from zkserver.store.dialect import Q, Script, utc_now
from zkserver.store.postgres import PostgresStore, redact_db
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
    "check_db",
    "open_store",
    "redact_db",
    "utc_now",
]

DEFAULT_SQLITE = "zkserver.sqlite3"

if TYPE_CHECKING:

    def _both_backends_are_stores(sqlite: SqliteStore, postgres: PostgresStore) -> list[Store]:
        """Never called: mypy checks that each backend satisfies the whole Store protocol
        (every method, same signatures), so nothing needs to probe a store with getattr."""
        return [sqlite, postgres]


def _postgres_problem(db: str) -> str | None:
    """Why libpq cannot use the URL ``db`` (without its password), or None."""
    authority = db.partition("://")[2].partition("/")[0].partition("?")[0]
    if authority.count("@") > 1:
        return "more than one @ before the host: write an @ in the password as %40"
    if "@" not in authority and "@" in db.partition("://")[2].partition("?")[0]:
        # libpq ends the host at the first /: zk:Ab12/xyZ@db/zk is host zk, port Ab12
        # (its error message then shows that part of the password).
        return "an @ after a / in the URL: write a / in the password as %2F (an @ as %40)"
    from psycopg2 import ProgrammingError
    from psycopg2.extensions import parse_dsn

    try:
        parse_dsn(db)
    except ProgrammingError as e:
        text = str(e).strip()
        password = urlsplit(db).password
        for secret in {password, unquote(password or "")} - {None, ""}:
            text = text.replace(str(secret), "***")
        return text
    return None


def _sqlite_spec(db: str, data_dir: str) -> tuple[str, float]:
    """The database file and busy timeout of ``""``, ``sqlite:`` or ``sqlite:PATH...``."""
    if db and not db.startswith("sqlite:"):
        raise ValueError(f"unsupported --db {db!r}: use sqlite:PATH or postgresql://...")
    spec = db[len("sqlite:") :]
    spec, _, query = spec.partition("?")
    if spec.startswith("//"):
        spec = spec[2:]
    spec = unquote(spec, errors="strict")  # a URL: %20 is a space, %25 a percent sign
    options = parse_qs(query, keep_blank_values=True)
    unknown = set(options) - {"timeout"}
    if unknown:
        raise ValueError(f"unknown sqlite options {sorted(unknown)} (only timeout=SECONDS)")
    raw = options.get("timeout", ["5"])[-1]
    try:
        timeout = float(raw)
    except ValueError:
        timeout = -1.0
    if not timeout >= 0 or timeout == float("inf"):
        raise ValueError(f"sqlite timeout={raw!r}: expected a number of seconds >= 0")
    path = os.path.expanduser(spec) if spec else DEFAULT_SQLITE
    return os.path.join(os.path.expanduser(data_dir), path), timeout  # an absolute path wins


def check_db(db: str) -> None:
    """Raise ValueError (its text free of the password) if ``open_store`` cannot use
    ``db``; nothing is opened or connected."""
    db = db.strip()
    if db.startswith(("postgresql://", "postgres://")):
        problem = _postgres_problem(db)
        if problem is not None:
            raise ValueError(f"{redact_db(db)!r}: {problem}")
        return
    try:
        _sqlite_spec(db, ".")
    except UnicodeDecodeError:
        raise ValueError(f"{db!r}: a %-escape in the path is not UTF-8") from None


def open_store(
    db: str, data_dir: str, reactor: Any = None, time_policy: TimePolicy | None = None
) -> Store:
    """A not yet started store for ``db``:

    - ``""``, ``sqlite:`` -> ``<data_dir>/zkserver.sqlite3``
    - ``sqlite:PATH`` (relative paths are under ``data_dir``; ``sqlite:///abs`` works too;
      ``%XX`` escapes are decoded, ``%20`` a space; ``?timeout=SECONDS`` sets how long a
      write waits for a lock, default 5)
    - ``postgresql://user@host:port/dbname[?options=-csearch_path%3Dschema]``
      (``postgres://`` too; the URL goes to libpq unchanged)
    """
    db = db.strip()
    if db.startswith(("postgresql://", "postgres://")):
        pg = PostgresStore(db, reactor=reactor)
        if time_policy is not None:
            pg.time_policy = time_policy
        return pg
    path, timeout = _sqlite_spec(db, data_dir)
    store = SqliteStore(path, reactor=reactor, busy_timeout=timeout)
    if time_policy is not None:
        store.time_policy = time_policy
    return store
