"""``GET /devices/events``: the Server-Sent-Events stream dashboards read."""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from zkserver import metrics
from zkserver.broadcaster import Broadcaster, EventFilter, Subscriber
from zkserver.events import encode_payload
from zkserver.store.base import Store
from zkserver.web.auth import query_lists, query_params

__all__ = ["EventStream"]

log = Logger()

REPLAY_PAGE = 500


def reset_frame(event_id: int, pruned_through: int) -> bytes:
    """The one ``reset`` event a client gets when events it missed were pruned: reload
    your state (from the API), then live events follow."""
    payload = {
        "type": "reset",
        "reason": "events after your Last-Event-ID were pruned; reload your state",
        "pruned_through": pruned_through,
    }
    return f"id: {event_id}\ndata: {encode_payload(payload)}\n\n".encode()


_EMPTY: frozenset[str] = frozenset()
#: Equal filters share one object (and its frozensets) across clients.
_FILTERS: dict[EventFilter, EventFilter] = {}


def _split(values: list[str]) -> frozenset[str]:
    """A filter's values: comma-separated, and the parameter repeated (``?type=a&type=b``,
    as ``URLSearchParams.append`` writes a list) adds up."""
    found = frozenset(v.strip() for value in values for v in value.split(",") if v.strip())
    return found or _EMPTY


#: Above the largest id a database column holds (SQLite INTEGER, PostgreSQL bigint): no
#: event has it, so the client starts live, as for any id above the newest.
_MAX_ID = (1 << 63) - 1

#: The resume id's spellings, in order: the header EventSource sends, then the query
#: parameters of clients that cannot set headers (``lastEventId``: EventSource polyfills).
_RESUME_PARAMS = ("last_event_id", "lastEventId")


def _last_event_id(request: IRequest, params: dict[str, str]) -> int | None:
    """The id to resume after, or None (start live) when none is given or it is not an
    integer; a negative one counts as 0 (everything), one too large for any database as
    the largest id (nothing to replay)."""
    raw = request.getHeader(b"last-event-id")
    text = raw.decode("latin-1") if raw else None
    for name in _RESUME_PARAMS:
        if text is not None and text.strip():
            break
        text = params.get(name)
    if text is None or not text.strip():
        return None
    try:
        return min(max(0, int(text.strip())), _MAX_ID)
    except ValueError:
        return None


def _travel_light(request: Request) -> None:
    """Drop what an open stream's request keeps but never needs again.

    A stream lives for hours, and with thousands of them every few hundred bytes count
    (issue 10: <= 12 KB per idle client). Once the response headers are on the wire
    (the first ``request.write``) and the stream's parameters are read:

    - the request headers: only ``User-Agent`` and ``Referer`` are kept, the two the
      access log line (``combinedLogFormatter``, written if the request is finished)
      reads; the rest (a browser sends a dozen) is not read again;
    - the response headers: already sent; nothing reads them afterwards;
    - ``args`` (the parsed query string), ``received_cookies`` and the (empty) body
      file ``content``: read before the stream opened, never again.

    What the response still needs stays: the channel and transport, ``method``,
    ``uri``, ``clientproto``, ``code`` and ``sentLength`` (the log line), the producer
    registration and ``notifyFinish``.
    """
    kept = Headers()
    for name in (b"user-agent", b"referer"):
        values = request.requestHeaders.getRawHeaders(name)
        if values:
            kept.setRawHeaders(name, values)
    request.requestHeaders = kept
    request.responseHeaders = Headers()
    request.args = {}
    request.received_cookies = {}
    if request.content is not None:
        request.content.close()
        request.content = None


@define(eq=False)
class EventStream:
    """Opens one stream per request: optional replay from the store, then live events."""

    broadcaster: Broadcaster
    store: Store
    max_buffer: int = 1 << 20
    retry_ms: int = 3000
    # Bound once, not once per stream (each stream keeps a reference to both).
    _on_overflow: Callable[[Subscriber], None] = field(init=False)
    _on_finish: Callable[[object, Subscriber], None] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._on_overflow = self._drop
        self._on_finish = self._finished

    def serve(self, request: Request) -> None:
        """Open the stream on ``request`` (its token already checked); the caller returns
        ``NOT_DONE_YET``. A replay that fails closes the connection. A ``HEAD`` request
        gets the stream's headers and is finished at once.

        Nothing per client stays waiting in a coroutine or a Deferred chain: after this
        returns, an idle stream is its connection, its request (lightened by
        :func:`_travel_light`), its :class:`Subscriber` and the one ``notifyFinish``
        Deferred that unsubscribes it."""
        params = query_params(request)
        lists = query_lists(request)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        if request.method == b"HEAD":
            # The headers only, and the response ends: Request.write drops a HEAD body,
            # but the broadcaster writes to the transport itself, so a subscribed HEAD
            # would get event bytes after its headers (read as the next response) and
            # hold the connection forever.
            request.finish()
            return
        last_id = _last_event_id(request, params)
        flt = EventFilter(
            serials=_split(lists.get("device", [])), types=_split(lists.get("type", []))
        )
        subscriber = Subscriber(
            target=request,
            on_overflow=self._on_overflow,
            event_filter=_FILTERS.setdefault(flt, flt) if len(_FILTERS) < 4096 else flt,
            max_buffer=self.max_buffer,
            last_id=last_id or 0,
            holding=last_id is not None,
        )
        request.notifyFinish().addBoth(self._on_finish, subscriber)
        request.registerProducer(subscriber, True)
        # The first write sends the headers; from then on the broadcaster writes complete
        # HTTP chunks to the transport itself (see zkserver.broadcaster).
        request.write(f"retry: {self.retry_ms}\n\n".encode())
        subscriber.attach()
        _travel_light(request)
        self.broadcaster.subscribe(subscriber)
        if last_id is not None:
            Deferred.fromCoroutine(self._replay_or_close(request, subscriber, last_id))

    async def _replay_or_close(
        self, request: Request, subscriber: Subscriber, last_id: int
    ) -> None:
        try:
            await self._replay(subscriber, last_id)
        except Exception:
            if subscriber.closed:
                return  # the client went away during the replay
            # Headers are sent: the only honest answer is to close the stream. The
            # client reconnects with its Last-Event-ID and replays again.
            log.failure("Replay after event {last_id} failed; closing the stream", last_id=last_id)
            self._closed(subscriber)
            request.loseConnection()

    async def _replay(self, subscriber: Subscriber, last_id: int) -> None:
        """Send the events after ``last_id`` from the store, page by page, then release
        the live events held meanwhile.

        The stream is subscribed before the first read, so whatever commits after a read
        reaches it live (held until :meth:`Subscriber.release`): the replay ends at a
        short page, or at a reset.

        Retention may delete events at any moment, between or during these reads. Each
        page comes with the pruned-through mark read at the same instant
        (:meth:`Store.replay_page`): a mark at or below the cursor the page was read from
        means the page is whole; above it, events the page should hold were deleted
        before the client got them. The client then gets ONE ``reset`` (id: the newest
        id at that read, at or above the mark), and the replay ends there: live events
        after that id follow."""
        cursor = last_id
        first = True
        while not subscriber.closed:
            page = await self.store.replay_page(cursor, REPLAY_PAGE)
            if first and cursor > page.newest:
                # An id this database never gave out (another database, or a reset one):
                # nothing to replay, start live.
                subscriber.last_id = page.newest
                break
            first = False
            if page.pruned_through > cursor:  # it missed events that are gone: reload
                subscriber.last_id = page.newest
                subscriber.send(reset_frame(page.newest, page.pruned_through))
                break
            for event in page.events:
                if subscriber.paused:  # replay at the pace the client reads, within the cap
                    await subscriber.drained()
                subscriber.send_event(event)
            if len(page.events) < REPLAY_PAGE:
                break
            cursor = page.events[-1].id
        subscriber.release()

    def _finished(self, _: object, subscriber: Subscriber) -> None:
        """The response ended (the client went away, or it was finished): forget it."""
        self._closed(subscriber)

    def _closed(self, subscriber: Subscriber) -> None:
        self.broadcaster.unsubscribe(subscriber)
        subscriber.close()

    def _drop(self, subscriber: Subscriber) -> None:
        metrics.SSE_CLIENTS_DROPPED.inc()
        log.warn(
            "Dropping a slow SSE client after {limit} bytes queued (it replays on reconnect)",
            limit=self.max_buffer,
        )
        self.broadcaster.unsubscribe(subscriber)
        request = subscriber.target
        transport = getattr(getattr(request, "channel", None), "transport", None)
        if transport is not None:
            transport.abortConnection()
