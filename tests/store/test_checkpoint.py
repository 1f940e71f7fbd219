"""SQLite WAL checkpoints run on the checkpointer's own connection, never in a commit."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import pytest_twisted
from twisted.internet import reactor

from tests.harness import sleep, wait_until
from zkserver.records import Punch
from zkserver.store.checkpoint import WAL_SIZE_LIMIT, WRITER_AUTOCHECKPOINT, WalCheckpointer
from zkserver.store.sqlite import SqliteStore


def punches(start: int, count: int) -> list[Punch]:
    return [
        Punch(str(i), f"2025-10-09 08:{i // 60 % 60:02d}:{i % 60:02d}", status=0, verify=15)
        for i in range(start, start + count)
    ]


def wal_frames(path: str) -> int:
    """Frames in the WAL file now (its 32-byte header, then 24 + page-size bytes each)."""
    size = os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0
    return max(0, (size - 32) // (24 + 4096))


@pytest_twisted.ensureDeferred
async def test_the_writer_leaves_checkpoints_to_the_checkpointer(tmp_path: Any) -> None:
    path = str(tmp_path / "z.sqlite3")
    store = SqliteStore(path, reactor)
    await store.start()
    try:
        checkpointer = store._checkpointer
        assert checkpointer is not None and checkpointer.interval == 1.0
        assert store._pool is not None

        def settings(conn: sqlite3.Connection) -> tuple[int, int]:
            auto = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
            limit = conn.execute("PRAGMA journal_size_limit").fetchone()[0]
            return int(auto), int(limit)

        assert await store._pool.runWithConnection(settings) == (
            WRITER_AUTOCHECKPOINT,
            WAL_SIZE_LIMIT,
        )
        await checkpointer.stop()  # no tick while writing (a tick could come any time)
        device = await store.add_device(serial_number="WAL1", status="online")
        for k in range(60):
            await store.save_punches(device, punches(k * 50, 50))
        checkpointer.start()
        await checkpointer.run()  # what the next tick does
        assert checkpointer.checkpoints == 1 and checkpointer.last is not None
        busy, frames, done = checkpointer.last
        # Every frame since the store started is still in the WAL: far past SQLite's
        # default automatic checkpoint (1,000 pages), after which the commits themselves
        # would have checkpointed and the WAL would have started again from its beginning.
        assert frames > 1000 and wal_frames(path) >= frames
        assert busy == 0 and done == frames  # nothing else held the WAL
    finally:
        await store.stop()
    assert store._checkpointer is None


@pytest_twisted.ensureDeferred
async def test_the_checkpointer_ticks_and_stops_with_the_store(tmp_path: Any) -> None:
    path = str(tmp_path / "t.sqlite3")
    store = SqliteStore(path, reactor)
    await store.start()
    checkpointer = store._checkpointer
    assert checkpointer is not None
    checkpointer.interval = 0.05
    checkpointer.stop()
    checkpointer.start()  # again, at the short interval
    device = await store.add_device(serial_number="WAL2", status="online")
    await store.save_punches(device, punches(0, 10))
    await wait_until(lambda: checkpointer.checkpoints >= 2 and checkpointer.last is not None)
    await store.stop()
    count = checkpointer.checkpoints
    await sleep(0.2)
    assert checkpointer.checkpoints == count  # no tick after stop


@pytest_twisted.ensureDeferred
async def test_a_failing_checkpoint_is_logged_and_the_next_tick_tries_again(
    tmp_path: Any, log_events: list[dict[str, Any]]
) -> None:
    checkpointer = WalCheckpointer(str(tmp_path / "missing-dir" / "x.sqlite3"), reactor)
    checkpointer.start()
    try:
        await checkpointer.run()
        await checkpointer.run()
    finally:
        await checkpointer.stop()
    failures = [e for e in log_events if "WAL checkpoint of" in e.get("log_format", "")]
    assert len(failures) == 2 and checkpointer.checkpoints == 0
