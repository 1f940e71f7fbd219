"""``GET /api/attendance.csv`` and ``/api/days.csv`` honour backpressure: a client that
reads slowly does not make the server buffer the export; pages are produced as the socket
takes them."""

from __future__ import annotations

import csv
import io
import socket
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall

from tests.harness import RunningServer
from zkserver.web import persons_api

SN = "CSVSLOW1"
ROWS = 6000
PERSONS = 2000
SMALL = 4096  # socket buffers on both ends: the kernel holds next to nothing


async def fill(server: RunningServer) -> None:
    for batch in range(ROWS // 1000):
        lines = "\n".join(
            f"{batch * 1000 + i}\t2026-11-{1 + batch:02d} {i // 60 % 24:02d}:{i % 60:02d}:00"
            "\t0\t1\t0\t0\t0"
            for i in range(1000)
        )
        response = await treq.post(
            f"{server.push_url}/iclock/cdata?SN={SN}&table=ATTLOG",
            data=lines.encode(),
            pool=server.pool,
        )
        assert (response.code, await response.text()) == (200, "OK: 1000")


class SlowReader(Protocol):
    """Reads one socket buffer's worth every few milliseconds."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.transport.pauseProducing()
        reactor.callLater(0.005, self._resume)

    def _resume(self) -> None:
        if self.transport.connected:
            self.transport.resumeProducing()

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(bytes(self.received))


def buffered(transport: Any) -> int:
    """Bytes the server's transport holds that the kernel has not taken yet."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


@pytest.mark.parametrize(
    "path, rows, first",
    [
        ("/api/attendance.csv", ROWS, "timestamp"),
        # one row per person per day: 6000 people on 6 days, written 500 rows at a time
        ("/api/days.csv?from=2026-10-31&to=2026-11-07", ROWS, "date"),
        ("/api/persons.csv", PERSONS, "user_id"),  # the registry, imported below
    ],
)
@pytest_twisted.ensureDeferred
async def test_slow_client_does_not_make_the_server_buffer_the_export(
    server, path, rows, first, monkeypatch
):
    page_rows = 1000
    if path.startswith("/api/persons"):
        # importing persons is slow (about 50 s for these on PostgreSQL under load): the
        # route is the same on both backends, so SQLite only, fewer rows, pages of 200
        if any(arg.startswith("postgres") for arg in server.args):
            pytest.skip("persons.csv streaming is checked on SQLite (the import is slow)")
        page_rows = 200
        monkeypatch.setattr(persons_api, "CSV_PAGE", page_rows, raising=False)
        text = "user_id,name,card,privilege,group,devices,active\r\n" + "".join(
            f"{1000000 + i},Slow export person {i:05d},{i + 1},0,1,all,true\r\n"
            for i in range(rows)
        )
        code, body = await server.api(
            "POST", "/api/persons.csv", data=text.encode(), headers={"Content-Type": "text/csv"}
        )
        assert code == 200, body
    else:
        await fill(server)
    site = server.service.web_listeners[0].factory
    transports: list[Any] = []
    build = site.buildProtocol

    def small_send_buffer(addr: Any) -> Any:
        protocol = build(addr)
        make = protocol.makeConnection

        def make_connection(transport: Any) -> None:
            transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL)
            transports.append(transport)
            make(transport)

        protocol.makeConnection = make_connection
        return protocol

    site.buildProtocol = small_send_buffer
    peak = 0

    def sample() -> None:
        nonlocal peak
        for transport in transports:
            peak = max(peak, buffered(transport))

    sampler = LoopingCall(sample)
    sampler.start(0.002)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL)
        sock.connect(("127.0.0.1", server.service.web_listeners[0].port.getHost().port))
        sock.setblocking(False)
        reader = SlowReader()
        factory = Factory.forProtocol(lambda: reader)
        reactor.adoptStreamConnection(sock.fileno(), socket.AF_INET, factory)
        sock.close()  # the reactor holds its own copy of the descriptor
        reader.transport.write(
            b"GET "
            + path.encode()
            + b" HTTP/1.0\r\nAuthorization: Bearer "
            + server.token.encode()
            + b"\r\n\r\n"
        )
        response = await reader.done
    finally:
        sampler.stop()
        site.buildProtocol = build
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head
    table = list(csv.reader(io.StringIO(body.decode())))
    assert len(table) == rows + 1 and table[0][0] == first, (len(table), table[:2])
    assert len({(r[0], r[1]) for r in table[1:]}) == rows
    page = len(body) / (rows / page_rows)  # bytes of one page
    # At most what the transport takes before it pauses (64 KiB) plus one page in flight.
    assert peak <= 64 * 1024 + 1.5 * page, (peak, page, len(body))


class Leaver(Protocol):
    """Reads the first bytes of the export, then goes away."""

    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(None)


@pytest_twisted.ensureDeferred
async def test_client_leaving_mid_export_stops_it_quietly(server):
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.logger import globalLogPublisher

    await fill(server)
    failures: list[Any] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        calls: list[int] = []
        attendance = server.store.attendance

        def counted(**kwargs: Any) -> Any:
            calls.append(1)
            return attendance(**kwargs)

        server.store.attendance = counted
        leaver = Leaver()
        port = server.service.web_listeners[0].port.getHost().port
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), leaver)
        leaver.transport.write(
            b"GET /api/attendance.csv HTTP/1.0\r\nAuthorization: Bearer "
            + server.token.encode()
            + b"\r\n\r\n"
        )
        await leaver.done
        code, _ = await server.api("GET", "/api/attendance?limit=1")  # still serving
        assert code == 200
        assert len(calls) < ROWS // 1000 + 1  # the export stopped before the last page
    finally:
        globalLogPublisher.removeObserver(observe)
        server.store.attendance = attendance
    assert not failures, failures
