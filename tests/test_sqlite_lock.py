"""SQLite held by another writer (a backup tool, a second process in BEGIN EXCLUSIVE):
uploads answer 503 within about one busy timeout each, not one after the other; reads
(/healthz, API, SSE replay) do not wait behind the blocked writer; when the lock goes,
the queued work completes and terminals' resends are saved once."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList

from tests.harness import RunningServer, SSEClient, start_server, wait_until

SN = "LOCKED01"


class Holder:
    """A second, real SQLite connection holding the write lock."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        self.held = False

    def lock(self) -> None:
        self.conn.execute("BEGIN EXCLUSIVE")
        self.held = True

    def release(self) -> None:
        if self.held:
            self.conn.execute("ROLLBACK")
            self.held = False

    def close(self) -> None:
        self.release()
        self.conn.close()


def line(user: int) -> bytes:
    return f"{user}\t2026-11-28 08:{user % 60:02d}:00\t0\t1\t0\t0\t0".encode()


async def upload(server: RunningServer, body: bytes) -> tuple[int, str]:
    response = await treq.post(
        f"{server.push_url}/iclock/cdata?SN={SN}&table=ATTLOG", data=body, pool=server.pool
    )
    return response.code, await response.text("utf-8")


async def start(tmp_path: Any, timeout: float) -> tuple[RunningServer, Holder, SSEClient]:
    path = str(tmp_path / "locked.sqlite3")
    server = await start_server(
        f"sqlite:{path}?timeout={timeout}", str(tmp_path / "data"), "--auto-approve"
    )
    assert await upload(server, line(1)) == (200, "OK: 1")  # device known, one event
    client = await SSEClient(
        f"{server.web_url}/devices/events?token={server.token}&type=attendance&last_event_id=0"
    ).connect()
    await client.wait_for(1)
    return server, Holder(path), client


@pytest_twisted.async_yield_fixture
async def locked_server(tmp_path) -> AsyncIterator[tuple[RunningServer, Holder, SSEClient]]:
    server, holder, client = await start(tmp_path, timeout=1.0)
    yield server, holder, client
    holder.close()
    await client.close()
    await server.stop()


async def reads_answer(server: RunningServer) -> None:
    """/healthz, the API and an SSE replay, all while the writer is blocked."""
    response = await treq.get(f"{server.web_url}/healthz", pool=server.pool)
    assert response.code == 200, await response.text()
    await response.content()
    code, devices = await server.api("GET", "/api/devices")
    assert code == 200 and [d["serial_number"] for d in devices] == [SN]
    code, page = await server.api("GET", "/api/attendance")
    assert code == 200 and [row["user_id"] for row in page["items"]] == ["1"]
    replay = await SSEClient(
        f"{server.web_url}/devices/events?token={server.token}&last_event_id=0&type=attendance"
    ).connect()
    try:
        await replay.wait_for(1)
    finally:
        await replay.close()


@pytest_twisted.ensureDeferred
async def test_six_uploads_get_503_while_locked_and_reads_go_on(locked_server):
    server, holder, client = locked_server
    holder.lock()
    replies: list[tuple[int, str, bool]] = []  # (code, body, lock still held when it came)

    async def one(user: int) -> None:
        code, body = await upload(server, line(user))
        replies.append((code, body, holder.held))

    uploads = [Deferred.fromCoroutine(one(user)) for user in range(2, 8)]
    await reads_answer(server)
    assert replies == []  # the reads did not queue behind the blocked uploads
    # The holder keeps the lock for four busy timeouts; one after the other, the uploads
    # would need six. Each must have had its 503 before the lock went.
    reactor.callLater(4.0, holder.release)
    await DeferredList(uploads, fireOnOneErrback=True)
    assert [(code, held) for code, _, held in replies] == [(503, True)] * 6, replies
    assert all(body.startswith("ERROR: database unavailable") for _, body, _ in replies)

    await wait_until(lambda: not holder.held, timeout=10)
    # The terminals resend: each batch saved once, a second resend adds nothing.
    for _ in range(2):
        results = await DeferredList(
            [Deferred.fromCoroutine(upload(server, line(user))) for user in range(2, 8)],
            fireOnOneErrback=True,
        )
        assert [result for _, result in results] == [(200, "OK: 1")] * 6
    await client.wait_for(7)
    _, page = await server.api("GET", "/api/attendance")
    assert sorted(int(row["user_id"]) for row in page["items"]) == list(range(1, 8))
    assert sorted(int(e["user_id"]) for e in client.of_type("attendance")) == list(range(1, 8))


@pytest_twisted.ensureDeferred
async def test_work_queued_behind_a_lock_completes_when_it_goes(tmp_path):
    server, holder, client = await start(tmp_path, timeout=5.0)
    try:
        holder.lock()
        replies: list[tuple[int, str]] = []

        async def one(user: int) -> None:
            replies.append(await upload(server, line(user)))

        uploads = [Deferred.fromCoroutine(one(user)) for user in range(2, 8)]
        await reads_answer(server)
        assert replies == []
        holder.release()  # well within the busy timeout: the waiting writes go through
        await DeferredList(uploads, fireOnOneErrback=True)
        assert replies == [(200, "OK: 1")] * 6
        await client.wait_for(7)
        _, page = await server.api("GET", "/api/attendance")
        assert sorted(int(row["user_id"]) for row in page["items"]) == list(range(1, 8))
        ids = client.ids
        assert len(ids) == len(set(ids)) == 7
    finally:
        holder.close()
        await client.close()
        await server.stop()
