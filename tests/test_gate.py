"""In front of every route: a request the HTTP layer cannot read gets 400 without a
traceback (item: Host header bytes FF FE), and until the database is migrated every route,
web and push, answers 503 with a JSON (web) or terminal-text (push) error, never 500."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import LogLevel

from tests.databases import POSTGRES_URL, postgres_schema
from tests.harness import RunningServer, new_pool
from zkserver.push.resource import routes as push_routes
from zkserver.tap import Options, makeService
from zkserver.web.app import routes as web_routes


class _Raw(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(self.data)


async def raw_request(port: int, request: bytes) -> bytes:
    """Send bytes as they are (no client library would send these) and read the reply."""
    protocol = _Raw()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)
    protocol.transport.write(request)
    return await protocol.done


BAD_REQUESTS = [
    b"GET /healthz HTTP/1.1\r\nHost: \xff\xfe\r\nConnection: close\r\n\r\n",
    b"GET /iclock/ping?SN=A1 HTTP/1.1\r\nHost: \xff\xfe:8081\r\nConnection: close\r\n\r\n",
    b"GET /api/%FF%FE HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    b"GET /\xff\xfe HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
]


@pytest_twisted.ensureDeferred
async def test_unreadable_header_or_path_gets_400_without_a_traceback(server, log_events):
    ports = [
        listener.port.getHost().port
        for listener in server.service.web_listeners + server.service.push_listeners
    ]
    for port in ports:
        for request in BAD_REQUESTS:
            for _ in range(2):  # every time, not only the first
                reply = await raw_request(port, request)
                assert reply.startswith(b"HTTP/1.1 400 "), reply
    noisy = [
        e
        for e in log_events
        if e.get("log_failure") is not None
        or e.get("isError")
        or e.get("log_level") in (LogLevel.error, LogLevel.critical)
    ]
    assert not noisy, noisy


def every_route(routes: Any) -> list[tuple[str, str]]:
    """(method, path) of every route of a Klein app, with placeholders filled in."""
    found = []
    for rule in routes.url_map.iter_rules():
        path = re.sub(r"<(?:int:)?[^>]+>", "1", rule.rule).replace("<path:_rest>", "x")
        for method in sorted(rule.methods or {"GET"}):
            found.append((method, path))
    return found


@pytest.fixture
def delayed_migrations() -> Iterator[tuple[str, Any]]:
    """A PostgreSQL schema whose migrations cannot run until the test lets them: another
    connection holds schema_version locked."""
    with postgres_schema() as url:
        try:
            conn = psycopg2.connect(url, connect_timeout=5)
        except psycopg2.OperationalError as e:  # pragma: no cover - postgres_schema skips
            pytest.skip(f"PostgreSQL unreachable at {POSTGRES_URL}: {e}")
        with conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            conn.commit()
            cur.execute("LOCK TABLE schema_version IN ACCESS EXCLUSIVE MODE")
        try:
            yield url, conn
        finally:
            conn.rollback()
            conn.close()


@pytest_twisted.ensureDeferred
async def test_every_route_answers_503_until_the_schema_is_ready(tmp_path, delayed_migrations):
    url, lock = delayed_migrations
    config = Options()
    config.parseOptions(
        [
            "-d",
            str(tmp_path / "data"),
            "--db",
            url,
            "--auto-approve",
            "--push",
            "tcp:0:interface=127.0.0.1",
            "--web",
            "tcp:0:interface=127.0.0.1",
        ]
    )
    service = makeService(config, reactor)
    service.startService()
    running = RunningServer(service=service, args=[], pool=new_pool())
    try:
        web = [(m, p) for m, p in every_route(web_routes) if m != "HEAD"]
        push = [(m, p) for m, p in every_route(push_routes) if m != "HEAD"]
        assert len(web) > 20 and len(push) > 8
        for method, path in web:
            response = await treq.request(
                method,
                running.web_url + path,
                headers=running.auth,
                data=b"{}",
                pool=running.pool,
            )
            body = await response.text("utf-8")
            assert response.code == 503, (method, path, response.code, body)
            assert response.headers.getRawHeaders("content-type") == ["application/json"]
            assert json.loads(body)["error"] == "starting", (method, path, body)
            if path == "/healthz":  # keeps the Health shape: status says why
                assert json.loads(body)["status"] == "starting", body
        for method, path in push:
            response = await treq.request(
                method,
                f"{running.push_url}{path}?SN=GATE01&table=ATTLOG",
                data=b"1\t2025-01-01 08:00:00\t0\t1",
                pool=running.pool,
            )
            body = await response.text("utf-8")
            assert response.code == 503, (method, path, response.code, body)
            assert body.startswith("ERROR: "), (method, path, body)
        assert not service.ready.called  # the migrations were really still waiting

        lock.rollback()  # let the migrations run
        await service.ready
        code, devices = await running.api("GET", "/api/devices")
        assert (code, devices) == (200, [])
        response = await treq.get(f"{running.push_url}/iclock/ping?SN=GATE01", pool=running.pool)
        assert response.code == 200
        await response.content()
    finally:
        lock.rollback()  # a failed assertion above must not leave stop() waiting on it
        await running.stop()
