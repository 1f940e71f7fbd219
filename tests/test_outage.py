"""The database goes away and comes back: terminals get 503 and resend, SSE clients stay
connected, and afterwards every punch is saved and broadcast exactly once."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest_twisted
import treq

from tests.databases import postgres_schema
from tests.harness import RunningServer, SSEClient, sleep, start_server, wait_until
from tests.tcpproxy import TCPProxy

SN = "OUTAGE01"


class SqliteOutage:
    """Another connection holds an exclusive lock: every write fails until released."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def cut(self) -> None:
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("BEGIN EXCLUSIVE")

    def restore(self) -> None:
        assert self.conn is not None
        self.conn.execute("ROLLBACK")
        self.conn.close()


@pytest_twisted.async_yield_fixture
async def outage_server(backend: str, tmp_path) -> AsyncIterator[tuple[RunningServer, object]]:
    if backend == "sqlite":
        path = str(tmp_path / "outage.sqlite3")
        running = await start_server(
            f"sqlite:{path}?timeout=0.2", str(tmp_path / "d"), "--auto-approve"
        )
        yield running, SqliteOutage(path)
        await running.stop()
        return
    with postgres_schema() as url:
        parts = urlsplit(url)
        proxy = TCPProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
        port = await proxy.start()
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0] + "@" if len(netloc) == 2 else ""
        proxied = urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))
        running = await start_server(proxied, str(tmp_path / "d"), "--auto-approve")
        yield running, proxy
        proxy.restore()
        await running.stop()
        await proxy.stop()


async def upload(server: RunningServer, line: str) -> tuple[int, bytes]:
    response = await treq.post(
        f"{server.push_url}/iclock/cdata?SN={SN}&table=ATTLOG", data=line.encode(), pool=server.pool
    )
    return response.code, await response.content()


@pytest_twisted.ensureDeferred
async def test_outage_answers_503_then_recovers_without_loss_or_duplicates(outage_server):
    server, outage = outage_server
    client = await SSEClient(
        f"{server.web_url}/devices/events?token={server.token}&type=attendance"
    ).connect()
    try:
        first = "5001\t2025-10-09 08:00:00\t0\t1\t0\t0\t0"
        second = "5002\t2025-10-09 08:05:00\t1\t1\t0\t0\t0"
        assert await upload(server, first) == (200, b"OK: 1")
        await client.wait_for(1)

        outage.cut()
        code, _ = await upload(server, second)
        assert code == 503
        assert not client.closed
        # A client reconnecting meanwhile: SQLite (WAL) still serves reads, so it is
        # replayed; with PostgreSQL gone the stream is closed cleanly (EventSource retries
        # with the same Last-Event-ID) and the server carries on.
        replaying = await SSEClient(
            f"{server.web_url}/devices/events?token={server.token}&last_event_id=0"
        ).connect()
        if isinstance(outage, SqliteOutage):
            await replaying.wait_for(1)
            await replaying.close()
        else:
            await wait_until(lambda: replaying.closed, 30)

        outage.restore()
        results: list[tuple[int, bytes]] = []

        async def resend() -> None:
            results.append(await upload(server, second))

        # The terminal resends until the server has recovered by itself.
        for _ in range(100):
            await resend()
            if results[-1][0] == 200:
                break
            await sleep(0.1)
        assert results[-1] == (200, b"OK: 1")
        assert await upload(server, second) == (200, b"OK: 1")  # a resend: no new row

        await client.wait_for(2)
        await sleep(0.3)
        assert [e["user_id"] for e in client.of_type("attendance")] == ["5001", "5002"]
        _, page = await server.api("GET", "/api/attendance")
        assert sorted(row["user_id"] for row in page["items"]) == ["5001", "5002"]
    finally:
        await client.close()
