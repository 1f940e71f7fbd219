"""Start-up is quiet when nothing is wrong: no "pull devices not loaded yet ... retrying",
and the pull sessions start as soon as the database is migrated."""

from __future__ import annotations

import socket

import pytest_twisted
from twisted.logger import LogLevel, formatEvent

from tests.harness import start_server, wait_until
from zkserver.store import open_store


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest_twisted.ensureDeferred
async def test_pull_sessions_start_once_migrated_without_retry_messages(
    db_url, tmp_path, log_events
):
    store = open_store(db_url, str(tmp_path / "data"))
    await store.start()
    device = await store.add_device(
        serial_number="",
        kind="pull",
        host="127.0.0.1",
        port=closed_port(),
        status="offline",
        approved=True,
    )
    await store.stop()
    log_events.clear()

    running = await start_server(db_url, str(tmp_path / "data"))
    try:
        manager = running.service.pull
        # Loading starts when the database is ready (one query away), not after a retry.
        try:
            await wait_until(lambda: manager.loaded.called, timeout=3)
        except AssertionError:
            print("\n".join(formatEvent(e) for e in log_events))
            raise
        assert device.id in manager.devices
        messages = [formatEvent(e) for e in log_events]
        assert not [m for m in messages if "not loaded yet" in m or "retrying" in m], messages
        warnings = [
            m
            for e, m in zip(log_events, messages, strict=True)
            if e.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical)
            and "127.0.0.1" not in m  # the device itself refuses connections: expected
        ]
        assert not warnings, warnings
    finally:
        await running.stop()
