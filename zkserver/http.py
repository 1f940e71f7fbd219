"""twisted.web plumbing shared by both listeners: a body-size cap and plain-text replies."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

__all__ = ["LimitedRequest", "make_site", "text_reply"]

log = Logger()


class LimitedRequest(server.Request):
    """A request that stops buffering a body past ``max_body`` bytes and answers 413.

    The limit is checked against Content-Length before the body arrives and against the
    bytes actually received (chunked uploads), so an oversize upload never fills memory
    or the disk.
    """

    max_body: int = 16 * 1024 * 1024
    _too_large: bool = False
    _received: int = 0

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body:
            self._too_large = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._too_large:
            return
        self._received += len(data)
        if self._received > self.max_body:
            self._too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if self._too_large:
            log.warn(
                "Refused an upload over {limit} bytes to {uri} from {peer}",
                limit=self.max_body,
                uri=self.uri,
                peer=str(self.getClientAddress()),
            )
            self.setResponseCode(413)
            body = f"body larger than {self.max_body} bytes\n".encode()
            self.setHeader(b"content-type", b"text/plain; charset=utf-8")
            self.setHeader(b"content-length", str(len(body)).encode())
            self.setHeader(b"connection", b"close")
            self.write(body)
            self.finish()
            return
        super().process()


def make_site(resource: IResource, max_body: int, timeout: float = 60 * 5) -> server.Site:
    """A Site whose requests cap their bodies at ``max_body`` bytes."""
    request_class: Any = type("Request", (LimitedRequest,), {"max_body": max_body})
    site = server.Site(resource, requestFactory=request_class, timeout=timeout)
    site.displayTracebacks = False
    return site


def text_reply(request: IRequest, body: str, code: int = http.OK) -> bytes:
    """A plain-text reply with an exact Content-Length (terminals are simple clients)."""
    data = body.encode("utf-8")
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"content-length", str(len(data)).encode())
    return data
