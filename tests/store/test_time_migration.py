"""Migration 0004 on a database that already holds punches, on SQLite and PostgreSQL: the
database is created at the version before 0004, punches are inserted with the old columns,
then the store starts again and migrates (the Python step fills the instants in batches)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import pytest_twisted

from tests.store.conftest import Stores
from zkserver.localtime import TimePolicy
from zkserver.store import schema
from zkserver.store.dialect import Q, Script, values

DEVICES = [
    ("dev-ber", "BER1", "Europe/Berlin"),
    ("dev-kol", "KOL1", "Asia/Kolkata"),
    ("dev-nyc", "NYC1", "America/New_York"),
    ("dev-def", "DEF1", ""),  # no zone: the server's default (--timezone)
]
RECEIVED = "2026-06-01T12:00:00.000000+00:00"

# (device, user, local time, raw, expected timestamp_utc, ambiguous, suspect prefix)
PUNCHES = [
    ("dev-ber", "1", "2026-03-29 02:30:00", "{}", "2026-03-29T01:30:00Z", True, None),
    ("dev-ber", "1", "2026-03-29 03:00:00", "{}", "2026-03-29T01:00:00Z", False, None),
    ("dev-ber", "2", "2026-10-25 02:30:00", "{}", "2026-10-25T00:30:00Z", True, "future"),
    ("dev-ber", "3", "2026-06-01 15:00:00", "{}", "2026-06-01T13:00:00Z", False, "future"),
    ("dev-ber", "4", "2024-01-01 09:00:00", "{}", "2024-01-01T08:00:00Z", False, "past"),
    (
        "dev-ber",
        "5",
        "2026-03-29 09:00:00",
        '{"user_id": "5", "time_offset": "+28800"}',
        "2026-03-29T01:00:00Z",
        False,
        None,
    ),
    ("dev-kol", "1", "2026-01-15 09:00:00", "{}", "2026-01-15T03:30:00Z", False, None),
    ("dev-nyc", "1", "2026-11-01 01:30:00", "{}", "2026-11-01T05:30:00Z", True, "future"),
    ("dev-def", "1", "2026-01-15 09:00:00", "{}", "2026-01-15T03:30:00Z", False, None),
    ("gone", "1", "2026-01-15 09:00:00", "{}", "2026-01-15T03:30:00Z", False, None),
]
BULK = 2500  # more than two batches of the Python step


def old_rows() -> Script[None]:
    sql, params = values(
        [
            (i, sn, sn, "push", "online", 1, tz, "", 4370, 0, "tcp", "{}", RECEIVED)
            for i, sn, tz in DEVICES
        ]
    )
    yield Q(
        "INSERT INTO devices (id, serial_number, name, kind, status, approved, timezone,"
        f" host, port, comm_key, transport, info, created_at) VALUES {sql}",
        params,
    )
    rows = [
        (device, device.upper(), user, ts, 0, 1, "", raw, RECEIVED)
        for device, user, ts, raw, *_ in PUNCHES
    ]
    rows += [
        (
            "dev-kol",
            "KOL1",
            f"bulk{i}",
            f"2026-02-{1 + i % 28:02d} 10:{i // 60 % 60:02d}:{i % 60:02d}",
            0,
            1,
            "",
            "{}",
            RECEIVED,
        )
        for i in range(BULK)
    ]
    for start in range(0, len(rows), 200):
        sql, params = values(rows[start : start + 200])
        yield Q(
            "INSERT INTO punches (device_id, serial_number, user_id, timestamp, status, verify,"
            f" workcode, raw, received_at) VALUES {sql}",
            params,
        )


def new_columns() -> Script[list[tuple[Any, ...]]]:
    rows = yield Q(
        "SELECT device_id, user_id, timestamp, timestamp_utc, time_ambiguous, suspect_time"
        " FROM punches ORDER BY id"
    )
    return [tuple(r) for r in rows]


def device_counts() -> Script[dict[str, tuple[int, Any]]]:
    rows = yield Q("SELECT id, suspect_punches, clock_offset_s FROM devices")
    return {r[0]: (int(r[1]), r[2]) for r in rows}


@pytest_twisted.ensureDeferred
async def test_migration_fills_existing_punches(stores: Stores, monkeypatch: pytest.MonkeyPatch):
    full = schema.MIGRATIONS
    monkeypatch.setattr(schema, "MIGRATIONS", tuple(m for m in full if m.version < 4))
    old = await stores.open()
    versions = await old.schema_versions()
    assert 4 not in versions and 1 in versions
    await old._run(old_rows())  # type: ignore[attr-defined]
    await old.stop()

    monkeypatch.setattr(schema, "MIGRATIONS", full)
    store = stores.make()
    store.time_policy = TimePolicy(default_zone="Asia/Kolkata")  # type: ignore[attr-defined]
    await store.start()
    assert 4 in await store.schema_versions()

    rows = await store._run(new_columns(), write=False)  # type: ignore[attr-defined]
    assert len(rows) == len(PUNCHES) + BULK
    for (device, user, ts, _raw, utc, ambiguous, suspect), row in zip(PUNCHES, rows, strict=False):
        assert row[:4] == (device, user, ts, utc), row
        assert bool(row[4]) is ambiguous, row
        if suspect is None:
            assert row[5] is None, row
        else:
            assert row[5].startswith(suspect + ": "), row
    bulk = rows[len(PUNCHES) :]
    kolkata = timedelta(hours=5, minutes=30)
    assert [r[3] for r in bulk] == [
        (datetime.fromisoformat(r[2]) - kolkata).strftime("%Y-%m-%dT%H:%M:%SZ") for r in bulk
    ]
    assert not any(r[4] or r[5] for r in bulk)
    counts = await store._run(device_counts(), write=False)  # type: ignore[attr-defined]
    assert counts["dev-ber"] == (3, None)
    assert counts["dev-nyc"] == (1, None)
    assert counts["dev-kol"] == (0, None)

    # The API view of the same rows: ordered by instant, the new fields present.
    page, _ = await store.attendance(device_id="dev-ber", limit=10)
    assert [r["timestamp_utc"] for r in page] == sorted(
        (p[4] for p in PUNCHES if p[0] == "dev-ber"), reverse=True
    )
    gap = next(r for r in page if r["timestamp"] == "2026-03-29 02:30:00")
    assert (gap["time_ambiguous"], gap["suspect_time"]) == (True, None)


@pytest_twisted.ensureDeferred
async def test_an_interrupted_migration_leaves_the_old_version_and_runs_again(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
):
    import importlib

    step = importlib.import_module("zkserver.store.migrations.0004_time")
    full = schema.MIGRATIONS
    monkeypatch.setattr(schema, "MIGRATIONS", tuple(m for m in full if m.version < 4))
    old = await stores.open()
    await old._run(old_rows())  # type: ignore[attr-defined]
    await old.stop()

    # The step dies after two batches are written (as a kill would, mid-way).
    monkeypatch.setattr(schema, "MIGRATIONS", full)
    monkeypatch.setattr(step, "BATCH", 1000)
    monkeypatch.setattr(step, "INDEXES", ("SELECT * FROM no_such_table_here",))
    broken = stores.make()
    with pytest.raises(Exception, match="no_such_table_here"):
        await broken.start()
    try:
        await broken.stop()
    except Exception:
        pass
    monkeypatch.undo()
    monkeypatch.setattr(schema, "MIGRATIONS", tuple(m for m in full if m.version < 4))
    again = await stores.open()  # still the old version: no new column, nothing half-done
    assert 4 not in await again.schema_versions()
    await again.stop()

    monkeypatch.setattr(schema, "MIGRATIONS", full)
    store = stores.make()
    store.time_policy = TimePolicy(default_zone="Asia/Kolkata")  # type: ignore[attr-defined]
    await store.start()
    assert 4 in await store.schema_versions()
    rows = await store._run(new_columns(), write=False)  # type: ignore[attr-defined]
    assert len(rows) == len(PUNCHES) + BULK and all(r[3] for r in rows)
    counts = await store._run(device_counts(), write=False)  # type: ignore[attr-defined]
    assert counts["dev-ber"] == (3, None)
