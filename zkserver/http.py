"""twisted.web plumbing shared by both listeners: a body-size cap, plain-text replies, and
the gate in front of every route (unreadable requests, not ready yet)."""

from __future__ import annotations

import codecs
import json
import re
import zlib
from collections.abc import Callable
from io import BytesIO
from typing import Any

from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from zope.interface import implementer

__all__ = [
    "BodyTooLarge",
    "Gate",
    "LimitedRequest",
    "json_error",
    "inflate",
    "make_site",
    "origin_form",
    "text_error",
    "text_reply",
    "web_request",
]

log = Logger()


def web_request(request: IRequest) -> server.Request:
    """The twisted.web request behind the ``IRequest`` Klein hands to a route.

    Streaming responses and cookies need what only the class offers (``notifyFinish``,
    ``registerProducer``, ``loseConnection``, ``addCookie(httpOnly=, sameSite=)``).
    """
    if not isinstance(request, server.Request):
        raise TypeError(f"not a twisted.web request: {request!r}")
    return request


class LimitedRequest(server.Request):
    """A request that stops buffering a body past ``max_body`` bytes and answers 413.

    The limit is checked against Content-Length before the body arrives and against the
    bytes actually received (chunked uploads), so an oversize upload never fills memory
    or the disk.
    """

    max_body: int = 16 * 1024 * 1024
    _too_large: bool = False
    _received: int = 0

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # An absolute request target (``GET http://host/iclock/cdata?...``, what a client
        # set to use a proxy writes; RFC 9112 §3.2.2) is routed by its path and query
        # (docs/protocols.md §A.11).
        super().requestReceived(command, origin_form(path), version)

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
            if self.content is not None:
                self.content.seek(0)
                self.content.truncate()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if not self._too_large:
            self._inflate()
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

    def _inflate(self) -> None:
        """A body sent with ``Content-Encoding: gzip`` or ``deflate`` (or a list of them,
        ``identity`` ignored) is inflated, up to ``max_body`` bytes (more is 413, as for a
        body sent that large); one that is not compressed as labelled is read as sent
        (docs/protocols.md §A.11)."""
        header = self.getHeader(b"content-encoding")
        if not header or self.content is None:
            return
        self.content.seek(0)
        try:
            inflated = inflate(self.content.read(), header, self.max_body)
        except BodyTooLarge:
            self._too_large = True
            return
        if inflated is None:
            codings = _codings(header)
            if codings and all(coding in _WBITS for coding in codings):
                log.info(
                    "A body labelled {coding} from {peer} is not; read as sent",
                    coding=header[:80].decode("latin-1"),
                    peer=str(self.getClientAddress()),
                )
            self.content.seek(0)
            return
        self.content = BytesIO(inflated)
        self.requestHeaders.removeHeader(b"content-encoding")


class BodyTooLarge(ValueError):
    """A compressed body inflates to more than the body limit."""


#: zlib window bits to try per Content-Encoding: gzip (or zlib), zlib then raw deflate.
_WBITS = {b"gzip": (47,), b"x-gzip": (47,), b"deflate": (15, -15)}


def _codings(header: bytes) -> list[bytes]:
    """The codings a Content-Encoding header lists, in the order they were applied."""
    names = (name.strip().lower() for name in header.split(b","))
    return [name for name in names if name and name != b"identity"]


def inflate(data: bytes, header: bytes, limit: int) -> bytes | None:
    """``data`` decoded by the codings ``header`` (a Content-Encoding value) lists, last
    applied first; None when it lists none, one zkserver does not know, or ``data`` is not
    coded as it says. Every member of a gzip body is read (RFC 1952 §2.2: ``cat a.gz b.gz``
    is one); bytes after the last member that are not one (cut off, junk) follow as they
    were sent, so the lines they hold are kept as rejected input, NUL padding is dropped.
    BodyTooLarge when the result, or a step of it, is over ``limit`` bytes."""
    codings = _codings(header)
    if not codings or any(coding not in _WBITS for coding in codings):
        return None
    for coding in reversed(codings):
        decoded = _decode(data, _WBITS[coding], limit)
        if decoded is None:
            return None
        data = decoded
    return data


def _decode(data: bytes, choices: tuple[int, ...], limit: int) -> bytes | None:
    for wbits in choices:
        out = bytearray()
        rest = data
        while rest:
            inflater = zlib.decompressobj(wbits)
            try:
                piece = inflater.decompress(rest, limit + 1 - len(out))
            except zlib.error:
                piece, finished = b"", False
            else:
                finished = inflater.eof
            if len(out) + len(piece) > limit:
                raise BodyTooLarge(f"inflates to more than {limit} bytes")
            if not finished:
                if not out:
                    break  # not this coding (or not coded at all): try the next window
                out += rest if rest.strip(b"\0") else b""  # not a member: as sent
                return bytes(out)
            out += piece
            rest = inflater.unused_data
        else:
            return bytes(out)
    return None


_ABSOLUTE = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")


def origin_form(target: bytes) -> bytes:
    """``http://host:port/path?query`` -> ``/path?query``; any other target unchanged."""
    match = _ABSOLUTE.match(target)
    if match is None:
        return target
    rest = target[match.end() :]
    return rest if rest.startswith(b"/") else b"/" + rest


#: ``token=VALUE`` in a query string (the page's ``/?token=``, an EventSource URL) or in a
#: Referer that carries one (every asset the page loads sends it).
_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&#\s\"]*", re.IGNORECASE)


def access_log_line(timestamp: str, request: IRequest) -> str:
    """Twisted's combined log line, with every query-string token replaced by ``***``:
    the access log must not hand the operator token to whoever reads the journal."""
    return _TOKEN_IN_QUERY.sub(r"\1***", http.combinedLogFormatter(timestamp, request))


def make_site(resource: IResource, max_body: int, timeout: float | None = 60 * 5) -> server.Site:
    """A Site whose requests cap their bodies at ``max_body`` bytes (``timeout`` None: no
    idle timeout, for streams). Bodies are never parsed as forms into ``request.args``
    (nothing reads it): terminals label their ATTLOG text form-encoded, and Twisted
    would otherwise parse every upload's Content-Type with the email package and its
    body as a query string, ~50 us a request for nothing."""
    request_class: Any = type("Request", (LimitedRequest,), {"max_body": max_body})
    site = server.Site(
        resource,
        requestFactory=request_class,
        timeout=timeout,
        parsePOSTFormSubmission=False,
        logFormatter=access_log_line,
    )
    site.displayTracebacks = False
    return site


def text_reply(request: IRequest, body: str, code: int = http.OK, encoding: str = "utf-8") -> bytes:
    """A plain-text reply with an exact Content-Length (terminals are simple clients).

    ``encoding``: a push terminal's text encoding for replies that carry names (a character
    it cannot hold becomes ``?``); the charset is named only for UTF-8, the codec names of
    Python are not all charset names."""
    data = body.encode(encoding, errors="replace")
    request.setResponseCode(code)
    utf8 = codecs.lookup(encoding).name == "utf-8"
    request.setHeader(b"content-type", b"text/plain; charset=utf-8" if utf8 else b"text/plain")
    request.setHeader(b"content-length", str(len(data)).encode())
    return data


def text_error(request: IRequest, code: int, message: str) -> bytes:
    """A terminal-text error (``ERROR: ...``), as push terminals expect."""
    return text_reply(request, f"ERROR: {message}\n", code)


def json_error(request: IRequest, code: int, message: str, error: str = "") -> bytes:
    """A JSON error ``{"error": ..., "detail": ...}`` as the API answers."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(
        {"error": error or http.RESPONSES.get(code, b"").decode(), "detail": message}
    ).encode()


ErrorReply = Callable[[IRequest, int, str, str], bytes]


def _readable(request: IRequest) -> str | None:
    """What makes the request unreadable for the routes (None if nothing): the Host
    header and the path must be UTF-8 (twisted.web accepts any bytes; Klein cannot)."""
    try:
        request.getRequestHostname().decode("utf-8")
    except UnicodeDecodeError:
        return "the Host header is not UTF-8"
    try:
        b"/".join(request.prepath + request.postpath).decode("utf-8")
    except UnicodeDecodeError:
        return "the path is not UTF-8"
    return None


@implementer(IResource)
class Gate:
    """In front of a listener's routes: answers 400 for a request the routes cannot read
    (instead of a logged traceback), and 503 to everything until ``ready()`` (the
    database is migrated), with ``refuse(request, code, detail, error)`` as the body."""

    isLeaf = True

    def __init__(self, wrapped: IResource, ready: Callable[[], bool], refuse: ErrorReply) -> None:
        self.wrapped = wrapped
        self.ready = ready
        self.refuse = refuse

    def render(self, request: IRequest) -> Any:
        problem = _readable(request)
        if problem is not None:
            log.debug(
                "Refused an unreadable request from {peer}: {problem}",
                peer=str(request.getClientAddress()),
                problem=problem,
            )
            request.setHeader(b"connection", b"close")
            return self.refuse(request, http.BAD_REQUEST, problem, "bad request")
        if not self.ready():
            request.setHeader(b"retry-after", b"5")
            return self.refuse(
                request,
                http.SERVICE_UNAVAILABLE,
                "server starting (database not ready yet), retry later",
                "starting",
            )
        return self.wrapped.render(request)

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:  # noqa: N802
        return self  # a leaf: never asked

    def putChild(self, path: bytes, child: IResource) -> None:  # noqa: N802
        raise NotImplementedError("the gate wraps one resource")


def push_refusal(request: IRequest, code: int, detail: str, error: str) -> bytes:
    return text_error(request, code, detail)


def web_refusal(request: IRequest, code: int, detail: str, error: str) -> bytes:
    body = json_error(request, code, detail, error)
    if code == http.SERVICE_UNAVAILABLE and request.path == b"/healthz":
        # /healthz keeps its own shape while starting, so a health check reading
        # "status" sees "starting" (503: not ready for traffic yet), not a missing key.
        health = json.loads(body)
        health.update(status="starting", database="not ready (migrations running)")
        body = json.dumps(health).encode()
    return body
