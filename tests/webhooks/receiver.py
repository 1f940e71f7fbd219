"""A real webhook receiver on loopback (twisted.web) that verifies signatures the way a
receiver would, and can fail its first N requests (with a status and a Retry-After of
one's choice), or never answer."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from zkserver.webhooks.signing import verify


@define(eq=False)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool
    status: int = 0

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event_ids(self) -> list[int]:
        return [int(i) for i in self.headers["x-zkserver-event-id"].split(",")]


@define(eq=False)
class Receiver(Resource):
    """``fail_first``: answer ``fail_code`` to that many requests, with ``retry_after``
    (a value, or a function of nothing giving one) as Retry-After; ``dead``: never answer."""

    secret: str = ""
    fail_first: int = 0
    dead: bool = False
    fail_code: int = 500
    retry_after: str | Callable[[], str] | None = None
    requests: list[Received] = field(factory=list)
    held: list[Any] = field(factory=list)
    port: Any = None
    wrapper: WrappingFactory | None = None
    isLeaf = True  # noqa: N815

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)

    def render_POST(self, request: Any) -> Any:  # noqa: N802
        body = request.content.read()
        headers = {
            k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()
        }
        ok = verify(
            self.secret,
            headers.get("x-zkserver-timestamp", ""),
            body,
            headers.get("x-zkserver-signature", ""),
            now=reactor.seconds(),
        )
        received = Received(request.path.decode(), headers, body, ok)
        self.requests.append(received)
        if self.dead:
            self.held.append(request)
            return NOT_DONE_YET
        received.status = self.fail_code if self.fail_first > 0 else 204
        if self.fail_first > 0 and self.retry_after is not None:
            value = self.retry_after if isinstance(self.retry_after, str) else self.retry_after()
            request.setHeader(b"retry-after", value.encode("latin-1"))
        self.fail_first = max(0, self.fail_first - 1)
        request.setResponseCode(received.status)
        return b""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}/hook"

    def delivered_ids(self) -> list[int]:
        """Event ids of the requests answered 2xx, in the order they came."""
        return [i for r in self.requests if r.status == 204 for i in r.event_ids]

    async def start(self) -> Receiver:
        self.wrapper = WrappingFactory(Site(self))
        self.port = reactor.listenTCP(0, self.wrapper, interface="127.0.0.1")
        return self

    @property
    def connections(self) -> int:
        """The senders' TCP connections open now."""
        return len(self.wrapper.protocols) if self.wrapper is not None else 0

    async def stop(self) -> None:
        for request in self.held:
            if not request.finished and not request._disconnected:
                request.setResponseCode(503)
                request.finish()
        self.held.clear()
        if self.port is not None:
            d: Deferred[None] = self.port.stopListening()
            await d
