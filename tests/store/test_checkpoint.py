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


async def started_with_interval(path: str, interval: float) -> tuple[SqliteStore, WalCheckpointer]:
    """A started store whose checkpointer ticks every ``interval`` seconds."""
    store = SqliteStore(path, reactor)
    await store.start()
    checkpointer = store._checkpointer
    assert checkpointer is not None
    await checkpointer.stop()
    checkpointer.interval = interval
    checkpointer.start()  # again, at the new interval
    return store, checkpointer


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
    store, checkpointer = await started_with_interval(path, 0.05)
    device = await store.add_device(serial_number="WAL2", status="online")
    await store.save_punches(device, punches(0, 10))
    await wait_until(lambda: checkpointer.checkpoints >= 2 and checkpointer.last is not None)
    await store.stop()
    count = checkpointer.checkpoints
    await sleep(0.2)
    assert checkpointer.checkpoints == count  # no tick after stop


@pytest_twisted.ensureDeferred
async def test_a_failing_checkpoint_is_logged_once_and_the_next_ticks_try_again(
    tmp_path: Any, log_events: list[dict[str, Any]]
) -> None:
    directory = tmp_path / "missing-dir"
    checkpointer = WalCheckpointer(str(directory / "x.sqlite3"), reactor)
    checkpointer.start()
    try:
        for _ in range(3):
            await checkpointer.run()
        assert checkpointer.failures == 3 and checkpointer.checkpoints == 0
        directory.mkdir()  # the file can be opened now: the next tick checkpoints
        await checkpointer.run()
    finally:
        await checkpointer.stop()
    formats = [e.get("log_format", "") for e in log_events]
    assert len([f for f in formats if "WAL checkpoint of" in f]) == 1  # not one a tick
    assert len([f for f in formats if "resumed after" in f]) == 1
    assert checkpointer.checkpoints == 1 and checkpointer.failures == 0


@pytest_twisted.ensureDeferred
async def test_a_store_stopped_while_it_starts_leaves_no_checkpointer(tmp_path: Any) -> None:
    store = SqliteStore(str(tmp_path / "s.sqlite3"), reactor)
    starting = store.start()
    await store.stop()  # before the migrations have run
    await starting
    assert store._checkpointer is None and store._readers is None
    assert not [c for c in reactor.getDelayedCalls() if "LoopingCall" in repr(c.func)]


@pytest_twisted.ensureDeferred
async def test_commits_survive_a_restart_and_a_crash_copy_with_checkpoints_running(
    tmp_path: Any,
) -> None:
    """A stop/start keeps every commit, and so does a copy of the files taken while the
    store runs (what a kill -9 leaves: the database file and its WAL, replayed on open)."""
    path = str(tmp_path / "r.sqlite3")
    store, checkpointer = await started_with_interval(path, 0.01)
    device = await store.add_device(serial_number="WAL3", status="online")
    for k in range(20):
        await store.save_punches(device, punches(k * 10, 10))
        if k == 10:  # half of them checkpointed into the database file, half in the WAL
            before = checkpointer.checkpoints
            await wait_until(lambda: checkpointer.checkpoints > before)  # noqa: B023
    crashed = str(tmp_path / "crashed.sqlite3")
    for suffix in ("", "-wal"):  # no -shm: the WAL index is rebuilt on open
        with open(path + suffix, "rb") as source, open(crashed + suffix, "wb") as copy:
            copy.write(source.read())
    await store.stop()
    for each in (path, crashed):
        again = SqliteStore(each, reactor)
        await again.start()
        try:
            assert again._checkpointer is not None  # a new one for the new start
            events = await again.events_after(0, limit=1000)
            assert len(events) == 200, each
        finally:
            await again.stop()
