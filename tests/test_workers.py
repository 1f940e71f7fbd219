"""--workers N: processes sharing the listeners on PostgreSQL; refused on SQLite."""

from __future__ import annotations

import os
import resource
import signal
import socket

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactor
from twisted.python import usage

from tests.databases import postgres_schema
from tests.harness import SSEClient, sleep, start_server
from zkserver.tap import Options, _send_threads, makeService
from zkserver.workers import AdoptedListener, WorkerPool, worker_argv


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


def _listening_fd() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock.detach()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_a_worker_accepts_nothing_until_its_database_is_ready() -> None:
    """A starting worker would answer every request 503 (its database gate): it leaves
    the connections to the processes already serving until its store is ready."""
    reactor = MemoryReactor()
    ready: Deferred[None] = Deferred()
    fd = _listening_fd()
    listener = AdoptedListener("web fd", fd, object(), reactor, ready=lambda: ready)
    listener.startService()
    assert reactor.adoptedPorts == [] and listener.port is None
    assert listener.listening is not None and not listener.listening.called
    ready.callback(None)
    assert [(f, factory) for f, _, factory in reactor.adoptedPorts] == [(fd, listener.factory)]
    assert listener.listening.result is listener.port
    assert not _is_open(fd)  # adoptStreamPort took a duplicate; the inherited one is closed
    listener.stopService()


def test_a_worker_stopped_before_ready_never_accepts() -> None:
    reactor = MemoryReactor()
    ready: Deferred[None] = Deferred()
    fd = _listening_fd()
    listener = AdoptedListener("web fd", fd, object(), reactor, ready=lambda: ready)
    listener.startService()
    listener.stopService()
    ready.callback(None)  # cancelled: ignored
    assert reactor.adoptedPorts == [] and not _is_open(fd)


@pytest_twisted.ensureDeferred
async def test_two_workers_clients_on_both_get_every_event_once_in_order(tmp_path) -> None:
    """Which process serves a connection is forced, not left to chance: the worker is
    paused (SIGSTOP) while this process must accept, and this process stops reading its
    listeners while the worker must. The worker's clients connect while it is still
    starting: they wait for it and get their stream, never its start-up 503."""
    with postgres_schema() as url:
        running = await start_server(
            url, str(tmp_path / "d"), "--auto-approve", "--token", "t", "--workers", "2"
        )
        broadcaster = running.service.broadcaster
        web_port = running.service.web_listeners[0].port
        push_port = running.service.push_listeners[0].port
        (pool,) = [s for s in running.service if isinstance(s, WorkerPool)]
        assert list(pool.transports) == [1] and pool.transports[1].pid
        worker = pool.transports[1]
        stream = f"{running.web_url}/devices/events?token=t&type=attendance"
        here: list[SSEClient] = []
        there: list[SSEClient] = []
        paused = False

        def pause(on: bool) -> None:
            nonlocal paused
            worker.signalProcess(signal.SIGSTOP if on else signal.SIGCONT)
            paused = on

        async def punch(i: int) -> None:
            response = await treq.post(
                f"{running.push_url}/iclock/cdata?SN=WORKERS1&table=ATTLOG",
                data=f"{i}\t2025-10-09 08:00:{i:02d}\t0\t1\t0\t0\t0".encode(),
                pool=running.pool,
            )
            assert await response.content() == b"OK: 1"

        try:
            pause(True)  # only this process accepts
            for _ in range(2):
                here.append(await SSEClient(stream).connect())
            assert len(broadcaster.subscribers) == 2
            pause(False)
            web_port.stopReading()  # only the worker accepts (once it is ready)
            for _ in range(2):
                there.append(await SSEClient(stream).connect())
            web_port.startReading()
            assert len(broadcaster.subscribers) == 2
            clients = here + there
            assert [c.status for c in clients] == [200] * 4
            # Punches through both processes: this one (worker paused), then the worker.
            pause(True)
            for i in range(3):
                await punch(i)
            pause(False)
            push_port.stopReading()
            for i in range(3, 6):
                await punch(i)
            push_port.startReading()
            for client in clients:
                await client.wait_for(6, timeout=20)
            await sleep(0.3)  # a duplicate would arrive now
            for client in clients:
                assert [e["user_id"] for e in client.events] == [str(i) for i in range(6)]
                assert client.ids == sorted(client.ids) == clients[0].ids
        finally:
            if paused:
                pause(False)
            for client in here + there:
                await client.close()
            await running.stop()


def _soft_nofile(pid: int) -> int:
    for line in open(f"/proc/{pid}/limits"):
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files limit")


@pytest_twisted.ensureDeferred
async def test_every_worker_runs_with_the_raised_open_files_limit(tmp_path) -> None:
    """Each worker holds thousands of streams: a soft limit of 1,024 (a shell's usual
    one) would make it refuse them. Started with a low soft limit, the server raises it
    to the hard one before it starts its workers, which inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(hard, 1024)
    if low == hard:
        pytest.skip("the hard open-files limit is 1,024 or less here: nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        with postgres_schema() as url:
            running = await start_server(url, str(tmp_path / "d"), "--workers", "2")
            try:
                (pool,) = [s for s in running.service if isinstance(s, WorkerPool)]
                worker = pool.transports[1].pid
                assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > low
                assert _soft_nofile(worker) == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            finally:
                await running.stop()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_workers_use_the_send_threads_the_first_process_resolved(monkeypatch, tmp_path) -> None:
    """``--send-threads`` -1 is one fewer than the cores per process: with ``--workers 2``
    on two cores, none in each process. A worker's own options have no ``--workers``,
    so resolved there it would count both cores as its own."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    config = Options()
    config.parseOptions(
        ["--data-dir", str(tmp_path), "--db", "postgresql://x@127.0.0.1/db", "--workers", "2"]
    )
    service = makeService(config, MemoryReactor())
    (pool,) = [s for s in service if isinstance(s, WorkerPool)]
    assert service.broadcaster.sender.helpers == 0
    worker = Options()
    worker.parseOptions([*pool.argv, "--worker", "push=7,web=8"])
    assert _send_threads(worker) == 0
