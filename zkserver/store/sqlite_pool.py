"""An adbapi connection pool over one SQLite file, opened the way every zkserver pool is."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from twisted.enterprise import adbapi

__all__ = ["sqlite_pool"]


def sqlite_pool(
    path: str,
    reactor: Any,
    busy_timeout: float,
    cp_max: int = 1,
    openfun: Callable[[sqlite3.Connection], None] | None = None,
) -> adbapi.ConnectionPool:
    """A pool of ``cp_max`` connections to ``path`` (at least one open from the start):
    ``busy_timeout`` seconds of waiting for another connection's lock, transactions issued
    by the caller (no implicit BEGIN), usable from any pool thread (adbapi closes them
    from the reactor thread), ``openfun`` run on each new connection in its thread."""
    return adbapi.ConnectionPool(
        "sqlite3",
        path,
        timeout=busy_timeout,
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        check_same_thread=False,
        cp_min=1,
        cp_max=cp_max,
        cp_openfun=openfun,
        cp_reactor=reactor,
    )
