"""--workers N: processes sharing the listeners on PostgreSQL; refused on SQLite."""

from __future__ import annotations

import pytest
import pytest_twisted
import treq
from twisted.python import usage

from tests.databases import postgres_schema
from tests.harness import SSEClient, sleep, start_server
from zkserver.tap import Options
from zkserver.workers import WorkerPool, worker_argv


def test_more_than_one_worker_is_refused_with_sqlite(tmp_path) -> None:
    for db in ([], ["--db", f"sqlite:{tmp_path}/x.sqlite3"]):
        with pytest.raises(usage.UsageError, match="needs PostgreSQL"):
            Options().parseOptions(["--workers", "2", *db])
    Options().parseOptions(["--workers", "1"])  # one process is fine


def test_workers_need_plain_sockets() -> None:
    with pytest.raises(usage.UsageError, match="proxy"):
        Options().parseOptions(
            [
                "--workers",
                "2",
                "--db",
                "postgresql://x@127.0.0.1/db",
                "--web",
                "ssl:8443:privateKey=k.pem",
            ]
        )


def test_worker_argv_drops_the_listeners_and_the_count() -> None:
    argv = [
        "--db",
        "postgresql://x/y",
        "--workers",
        "2",
        "--push=tcp:1",
        "--web",
        "tcp:2",
        "--token",
        "t",
    ]
    assert worker_argv(argv) == ["--db", "postgresql://x/y", "--token", "t"]


@pytest_twisted.ensureDeferred
async def test_two_workers_clients_on_both_get_every_event_once_in_order(tmp_path) -> None:
    with postgres_schema() as url:
        running = await start_server(
            url, str(tmp_path / "d"), "--auto-approve", "--token", "t", "--workers", "2"
        )
        broadcaster = running.service.broadcaster
        web_port = running.service.web_listeners[0].port
        push_port = running.service.push_listeners[0].port
        stream = f"{running.web_url}/devices/events?token=t&type=attendance"
        clients: list[SSEClient] = []
        try:
            # A client of this process: connect until this process has accepted one
            # (a stream is subscribed before its headers are sent).
            while not broadcaster.subscribers:
                assert len(clients) < 20
                clients.append(await SSEClient(stream).connect())
            # The other worker alone accepts while this process stops reading: wait until
            # it is ready, then connect its clients.
            here = len(broadcaster.subscribers)
            web_port.stopReading()

            async def other_ready() -> bool:
                response = await treq.get(f"{running.web_url}/healthz", pool=running.pool)
                await response.content()
                return response.code == 200

            for _ in range(300):
                if await other_ready():
                    break
                await sleep(0.05)
            for _ in range(2):
                clients.append(await SSEClient(stream).connect())
            assert len(broadcaster.subscribers) == here
            (pool,) = [s for s in running.service if isinstance(s, WorkerPool)]
            assert list(pool.transports) == [1] and pool.transports[1].pid
            web_port.startReading()
            # Punches through both processes: this one, then the other one only.
            for i in range(6):
                if i == 3:
                    push_port.stopReading()
                response = await treq.post(
                    f"{running.push_url}/iclock/cdata?SN=WORKERS1&table=ATTLOG",
                    data=f"{i}\t2025-10-09 08:00:{i:02d}\t0\t1\t0\t0\t0".encode(),
                    pool=running.pool,
                )
                assert await response.content() == b"OK: 1"
            push_port.startReading()
            for client in clients:
                await client.wait_for(6, timeout=20)
            for client in clients:
                assert [e["user_id"] for e in client.events] == [str(i) for i in range(6)]
                assert client.ids == sorted(client.ids) == clients[0].ids
        finally:
            for client in clients:
                await client.close()
            await running.stop()
