"""Test harness: a real zkserver on loopback ports, and a real SSE client over treq."""

from __future__ import annotations

import json
import socket
from typing import Any

import treq
from attrs import define, field
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.web import http, resource, server
from twisted.web.client import HTTPConnectionPool

from zkserver.eventsource import Comment, EventStreamParser
from zkserver.tap import Options, ZKServer, makeService

__all__ = [
    "RunningServer",
    "start_server",
    "SSEClient",
    "wait_until",
    "new_pool",
    "sleep",
    "raw_request",
    "drain",
    "memory_request",
]


def new_pool() -> HTTPConnectionPool:
    return HTTPConnectionPool(reactor, persistent=False)


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll ``predicate()`` on the reactor until true; AssertionError after ``timeout``."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await deferLater(reactor, interval, lambda: None)
        waited += interval


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


async def raw_request(port: int, request: bytes, rcvbuf: int | None = None) -> socket.socket:
    """A non-blocking loopback socket to ``port`` that has sent ``request`` (the reactor
    runs while it connects); ``rcvbuf`` is its SO_RCVBUF, set before connecting (a small
    one makes a client that does not read fill up fast). The caller closes it."""
    sock = socket.socket()
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            sock.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        await wait_until(lambda: _connected(sock))
        sock.send(request)
    except BaseException:
        sock.close()
        raise
    return sock


def memory_request(transport: Any, clientproto: bytes = b"HTTP/1.1") -> server.Request:
    """A real twisted.web GET request on an HTTP channel over ``transport`` (in memory,
    e.g. a StringTransport), as a Site would hand it to a resource."""
    channel = http.HTTPChannel()
    channel.site = server.Site(resource.Resource())
    channel.makeConnection(transport)
    request = server.Request(channel, False)
    channel.requests.append(request)
    request.method = b"GET"
    request.clientproto = clientproto
    return request


def drain(sock: socket.socket) -> bytes:
    """Whatever a non-blocking socket has to read now (until it would block or ends)."""
    out = b""
    while True:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return out
        if not data:
            return out
        out += data


@define
class RunningServer:
    service: ZKServer
    args: list[str]
    pool: HTTPConnectionPool = field(factory=new_pool)

    @property
    def push_url(self) -> str:
        return f"http://127.0.0.1:{self.service.push_listeners[0].port.getHost().port}"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.service.web_listeners[0].port.getHost().port}"

    @property
    def token(self) -> str:
        return self.service.token

    @property
    def store(self) -> Any:
        return self.service.store

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def api(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        """Call the API with the token; returns (status code, decoded JSON or text)."""
        headers = {**self.auth, **kwargs.pop("headers", {})}
        if body is not None:
            kwargs["data"] = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        response = await treq.request(
            method, self.web_url + path, headers=headers, pool=self.pool, **kwargs
        )
        text = await response.text("utf-8")
        try:
            return response.code, json.loads(text)
        except ValueError:
            return response.code, text

    async def stop(self) -> None:
        await self.service.stopService()
        await self.pool.closeCachedConnections()


async def start_server(db: str, data_dir: str, *extra: str) -> RunningServer:
    args = [
        "--data-dir",
        data_dir,
        "--db",
        db,
        "--push",
        "tcp:0:interface=127.0.0.1",
        "--web",
        "tcp:0:interface=127.0.0.1",
        *extra,
    ]
    config = Options()
    config.parseOptions(args)
    service = makeService(config, reactor)
    service.startService()
    await service.ready
    return RunningServer(service=service, args=args)


class _Body(Protocol):
    def __init__(self, client: SSEClient) -> None:
        self.client = client

    def dataReceived(self, data: bytes) -> None:
        self.client.feed(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.client.closed = True
        if not self.client.finished.called:
            self.client.finished.callback(None)


@define(eq=False)
class SSEClient:
    """Reads ``GET /devices/events`` over a real socket and parses its frames."""

    url: str
    headers: dict[str, str] = field(factory=dict)
    events: list[dict[str, Any]] = field(factory=list)
    ids: list[int] = field(factory=list)
    comments: list[str] = field(factory=list)
    retry: int | None = None
    closed: bool = False
    status: int | None = None
    response_headers: Any = None
    finished: Deferred[None] = field(factory=Deferred)
    _parser: EventStreamParser = field(factory=EventStreamParser)
    _body: _Body | None = None
    _pool: HTTPConnectionPool = field(factory=new_pool)

    async def connect(self) -> SSEClient:
        response = await treq.get(self.url, headers=self.headers, unbuffered=True, pool=self._pool)
        self.status = response.code
        self.response_headers = response.headers
        self._body = _Body(self)
        response.deliverBody(self._body)
        return self

    def feed(self, data: bytes) -> None:
        for item in self._parser.feed(data):
            if isinstance(item, Comment):
                self.comments.append(item.text.strip())
                continue
            assert item.id.isdigit(), f"event without a numeric id: {item!r}"
            self.ids.append(int(item.id))
            self.events.append(json.loads(item.data))
        self.retry = self._parser.retry

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    async def wait_for(self, count: int, kind: str = "attendance", timeout: float = 10) -> None:
        await wait_until(lambda: len(self.of_type(kind)) >= count, timeout)

    async def close(self) -> None:
        if self._body is not None and self._body.transport is not None and not self.closed:
            self._body.transport.stopProducing()
        if self._body is not None:
            await self.finished
        await self._pool.closeCachedConnections()
