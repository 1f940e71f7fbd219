"""Each person's day (``GET /api/days``) as transaction scripts over the punches table.

Punches are read page by page, each page its own short read transaction (so a long range
never holds SQLite's only connection for long), in ``(timestamp, id)`` order over the
device-local time index, and folded into :class:`zkserver.localtime.Days`: memory grows
with the number of rows (people x days), not with the number of punches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any, TypeVar

from zkserver.localtime import DayPunch, Days, format_day_start
from zkserver.store.base import StoreUnavailable
from zkserver.store.dialect import Q, Script

__all__ = ["PAGE", "day_rows", "local_range"]

T = TypeVar("T")

#: Punches read per page.
PAGE = 5000


def local_range(first: date, last: date, day_starts_at: int) -> tuple[str, str]:
    """The device-local text range ``[start, end)`` holding the days ``first``..``last``."""
    start = f"{first.isoformat()} {format_day_start(day_starts_at)}:00"
    end = f"{(last + timedelta(days=1)).isoformat()} {format_day_start(day_starts_at)}:00"
    return start, end


def _page(
    start: str,
    end: str,
    after: tuple[str, int],
    user_id: str | None,
    device_id: str | None,
) -> Script[list[tuple[Any, ...]]]:
    where = ["p.timestamp >= %s", "p.timestamp < %s", "(p.timestamp, p.id) > (%s, %s)"]
    params: list[Any] = [start, end, after[0], after[1]]
    if user_id is not None:
        where.append("p.user_id = %s")
        params.append(user_id)
    if device_id is not None:
        where.append("p.device_id = %s")
        params.append(device_id)
    rows = yield Q(
        "SELECT p.id, p.user_id, p.device_id, p.timestamp, p.timestamp_utc, p.status"
        " FROM punches p WHERE " + " AND ".join(where) + " ORDER BY p.timestamp, p.id LIMIT %s",
        (*params, PAGE),
    )
    return list(rows)


#: Whether a table exists, without a failing statement (a query on a missing table is an
#: ERROR in PostgreSQL's log and aborts the transaction), per dialect.
_TABLE_EXISTS = {
    "sqlite": "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = %s",
    "postgresql": "SELECT COUNT(*) FROM information_schema.tables"
    " WHERE table_schema = current_schema() AND table_name = %s",
}


def _names(user_ids: list[str], table: str = "users", dialect: str = "") -> Script[dict[str, str]]:
    """A name per user id: from the device users (the first device, by id, that has one),
    or from the people registry (``table="persons"``; none while that table does not exist,
    which is asked first when ``dialect`` is known)."""
    if table != "users" and dialect in _TABLE_EXISTS:
        found = yield Q(_TABLE_EXISTS[dialect], (table,))
        if not found or not int(found[0][0]):
            return {}
    order = " ORDER BY device_id" if table == "users" else ""
    names: dict[str, str] = {}
    for start in range(0, len(user_ids), 500):
        chunk = user_ids[start : start + 500]
        marks = ", ".join(["%s"] * len(chunk))
        rows = yield Q(
            f"SELECT user_id, name FROM {table} WHERE user_id IN ({marks}) AND name <> ''" + order,
            tuple(chunk),
        )
        for user_id, name in rows:
            names.setdefault(user_id, name)
    return names


async def _all_names(
    run: Callable[[Script[Any]], Awaitable[Any]], user_ids: list[str], dialect: str = ""
) -> dict[str, str]:
    """Names from the people registry where it has one, else from the device users. The
    registry (table ``persons``, migration 0006) is optional: without it, device users
    only, and no statement fails on its account."""
    names: dict[str, str] = await run(_names(user_ids))
    try:
        registry: dict[str, str] = await run(_names(user_ids, "persons", dialect))
    except StoreUnavailable:
        raise
    except Exception:  # no registry in this database (yet), dialect unknown
        registry = {}
    names.update(registry)
    return names


async def day_rows(
    run: Callable[[Script[Any]], Awaitable[Any]],
    *,
    first: date,
    last: date,
    day_starts_at: int = 0,
    user_id: str | None = None,
    device_id: str | None = None,
    dialect: str = "",
) -> list[dict[str, Any]]:
    """The rows of ``GET /api/days``; ``run`` runs one read-only script; ``dialect``
    (``sqlite``/``postgresql``) lets the optional registry be looked for first."""
    start, end = local_range(first, last, day_starts_at)
    days = Days(day_starts_at=day_starts_at)
    after: tuple[str, int] = ("", -1)
    while True:
        rows = await run(_page(start, end, after, user_id, device_id))
        for _id, user, device, timestamp, timestamp_utc, status in rows:
            days.add(DayPunch(user, device, timestamp, timestamp_utc or "", int(status)))
        if len(rows) < PAGE:
            break
        after = (rows[-1][3], int(rows[-1][0]))
    user_ids = sorted({key[0] for key in days.keys()})
    names = await _all_names(run, user_ids, dialect) if user_ids else {}
    return days.rows(names)
