"""Fan committed events out to open Server-Sent-Events clients, in rounds.

The broadcaster never touches the database on the hot path: ingest hands it the events
a transaction just committed (:meth:`Broadcaster.publish`) and returns at once. Nothing is
written to any client in the caller's call stack: ``publish`` queues the events and
schedules a *round* with ``callLater(0)``, so the terminal's ``OK: n`` (or the pull ACK),
written by the caller right after the commit, is on its socket before the first client
gets a byte.

One round
    takes the queued events in id order (at most :data:`ROUND_EVENTS` events and about
    :data:`ROUND_BYTES` bytes; the rest wait for the next round, scheduled at once), joins
    their pre-encoded frames into one ``bytes`` per distinct client filter, wraps it once
    in HTTP chunk framing (``<hex len>\\r\\n`` + frames + ``\\r\\n``; a second, unframed copy
    only if an HTTP/1.0 client is connected), then makes **one write per client**: the
    same object for every client, no per-client Python object per event. Events committed
    while a round runs (or while the reactor serves sockets between rounds) go together
    in the next round, so under load each client gets several events in one write and
    latency is bounded by about one round, not by a growing queue. A round costs
    O(clients) small steps (one ``send(2)`` each for a healthy client) plus O(events)
    joins; it never waits on the database, except to fill a hole in the ids (below),
    during which new events keep queueing.

The write
    goes straight to the connection's transport, bypassing ``Request.write`` (which would
    build a chunk tuple and call ``writeSequence`` per client and event). The bytes are
    already a complete HTTP chunk, so the response's chunked framing stays valid and
    ``Request.finish`` still ends it correctly; ``request.sentLength`` is kept up to date.
    When the transport is a plain TCP connection (:class:`twisted.internet.tcp.Connection`,
    not TLS) whose user-space buffer is empty (``dataBuffer`` and ``_tempDataBuffer``,
    see ``FileDescriptor.doWrite``), the bytes are handed to the socket's ``send`` directly:
    nothing is queued ahead of them, so ordering is kept, and a socket that takes them
    all needs no epoll registration (``startWriting``/``stopWriting``) at all. What the
    kernel does not take (and every error: the transport notices it on its next write
    attempt and closes the connection through its usual path) goes to
    ``transport.write``, whose buffer, producer pausing and connection-loss handling are
    Twisted's own.

Order and holes
    Publishing is ordered by event id: an id at or below the last one published is skipped
    (a duplicate), and a hole before the first queued id (another process committed in
    between, see :meth:`catch_up`) is filled from the store first, so clients see ids in
    commit order without gaps.

Slow clients
    Each client is an :class:`IPushProducer` registered with its request: when the
    transport's buffer is full Twisted pauses it; a paused client keeps a reference to each
    round's bytes (one append per round, never a copy) up to ``max_buffer`` bytes, and a
    client past that cap is disconnected (it reconnects with Last-Event-ID and replays what
    it missed from the database). A client still replaying keeps references to the live
    events meanwhile and gets them after the replay.

What held a punch ~0.5 s before its fan-out (measured 2026-11-29 with
``bench/push_to_sse.py --gc-log`` and py-spy, SQLite, 3,000 and 6,000 clients): full
(generation 2) garbage collections. Each event left a few container objects per client
alive across young collections (the chunk tuple ``Request.write`` builds, the transport's
buffered write list, epoll registrations) while the loop served every client before any
socket was flushed; they were promoted, and every ~11 s (6,000 clients, 5 punches/s) the
old generation had grown by a quarter, so CPython walked all ~744,000 tracked objects:
322 ms with the reactor stopped (~0.5 s at 10,000 clients). The heartbeat was a full
per-client fan-out too, and the fan-out ran inside the terminal's POST handler (POST round
trip p50 122 ms at 6,000 clients). SQLite checkpoints were not seen in the profiles (they
run in the database thread, outside the GIL). Rounds allocate nothing per client that
outlives the round (the kernel takes the bytes), the heartbeat is one more round, and
zkserver/gcpolicy.py freezes what survives a full collection so the next ones stay short.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from attrs import define, field
from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from zkserver import metrics
from zkserver.events import Event, encode_comment

__all__ = [
    "Broadcaster",
    "Subscriber",
    "EventFilter",
    "EventSource",
    "chunk",
    "ROUND_EVENTS",
    "ROUND_BYTES",
]

log = Logger()

#: Most events one round sends (the rest go in the next round, scheduled at once).
ROUND_EVENTS = 1000
#: About the most bytes of events one round sends to a client.
ROUND_BYTES = 256 * 1024
#: How long to wait before reading a hole's events again after the store failed.
FILL_RETRY = 1.0


def chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk (``<hex len>\\r\\n`` + data + ``\\r\\n``)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class EventSource(Protocol):
    """What the broadcaster needs from the store."""

    def events_after(self, last_id: int, limit: int = 1000) -> Deferred[list[Event]]: ...


@define(frozen=True)
class EventFilter:
    """Which events a client asked for (``?device=SN&type=attendance``); empty = all."""

    serials: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()

    def accepts(self, event: Event) -> bool:
        if self.types and event.type not in self.types:
            return False
        if self.serials and event.serial_number not in self.serials:
            return False
        return True

    @property
    def everything(self) -> bool:
        return not self.types and not self.serials


#: (filter, framing) -> a small int, shared by every subscriber with the same pair.
_KEYS: dict[tuple[EventFilter, bool], int] = {}
_KEY_NUMBERS = itertools.count()


class Writable(Protocol):
    """The part of a twisted.web request a subscriber writes to."""

    def write(self, data: bytes) -> None: ...


@implementer(IPushProducer)
@define(eq=False)
class Subscriber:
    """One open event stream.

    While ``holding`` (Last-Event-ID replay in progress) live events are kept aside and
    written after the replay, so nothing is missed or sent twice.

    Until :meth:`attach` finds the request's transport (or when the target is not a
    twisted.web request), bytes go through ``target.write`` unframed.
    """

    target: Writable
    on_overflow: Callable[[Subscriber], None]
    event_filter: EventFilter = field(factory=EventFilter)
    max_buffer: int = 1 << 20
    last_id: int = 0
    holding: bool = False
    paused: bool = False
    closed: bool = False
    #: Whether bytes for this client carry HTTP chunk framing (set by :meth:`attach`).
    chunked: bool = False
    _held: list[Event] = field(factory=list)
    _pending: list[bytes] = field(factory=list)
    _pending_bytes: int = 0
    _drain_waiters: list[Deferred[None]] = field(factory=list)
    _transport: Any = None
    _request: Any = None  # the twisted.web Request, once attached
    _socket: Any = None
    #: Identifies (filter, framing) among subscribers: rounds build bytes once per key.
    key: int = -1

    def __attrs_post_init__(self) -> None:
        self._set_key()

    def _set_key(self) -> None:
        pair = (self.event_filter, self.chunked)
        key = _KEYS.get(pair)
        if key is None:
            if len(_KEYS) >= 4096:  # many distinct filters: forget them (keys never repeat)
                _KEYS.clear()
            key = _KEYS[pair] = next(_KEY_NUMBERS)
        self.key = key

    def attach(self) -> None:
        """Write to the request's transport directly from now on (call once the response
        headers are out, i.e. after the first ``request.write``)."""
        request: Any = self.target
        channel = getattr(request, "channel", None)
        transport = getattr(channel, "transport", None)
        if transport is None or not getattr(request, "startedWriting", False):
            return
        self._transport = transport
        self._request = request
        self.chunked = bool(getattr(request, "chunked", False))
        self._set_key()
        # The send(2) fast path only for plain TCP: TLS and other transports keep their
        # own write path.
        if isinstance(transport, tcp.Connection):
            self._socket = transport.socket

    # --- what the broadcaster and the replay call ------------------------------------
    def deliver(self, event: Event) -> None:
        """Offer one live event (already committed, ids ascending)."""
        if self.closed or event.id <= self.last_id:
            return
        if self.holding:
            self._held.append(event)
            self._count(len(event.frame))
            return
        self.send_event(event)

    def send_event(self, event: Event) -> None:
        """Write one event (replay or live), once, if the filter wants it."""
        if self.closed or event.id <= self.last_id:
            return
        self.last_id = event.id
        if self.event_filter.accepts(event):
            metrics.SSE_DELIVERIES.inc()
            self.send(event.frame)

    def send(self, data: bytes) -> None:
        """Write SSE bytes (framed here if the response is chunked)."""
        if data and not self.closed:
            self.send_framed(chunk(data) if self.chunked else data, len(data))

    def send_framed(self, data: bytes, size: int) -> None:
        """Write bytes already framed for this client (``size`` bytes of SSE in them) now,
        or keep a reference to them while its socket is full."""
        if self.closed:
            return
        if self._request is not None:
            self._request.sentLength += size
        if self.paused:
            self._pending.append(data)
            self._count(len(data))
        else:
            self._write(data)

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            self.target.write(data)
            return
        sock = self._socket
        if (
            sock is not None
            and not transport.dataBuffer
            and not transport._tempDataLen
            and transport.connected
            and not transport.disconnecting
        ):
            try:
                sent = sock.send(data)
            except OSError:  # EAGAIN, or an error the transport will notice and report
                sent = 0
            if sent == len(data):
                return
            if sent:
                data = data[sent:]
        transport.write(data)

    def release(self) -> None:
        """End a replay: write the live events held meanwhile, then go live."""
        held, self._held = self._held, []
        self.holding = False
        for event in held:
            self._pending_bytes -= len(event.frame)
            self.send_event(event)

    def drained(self) -> Deferred[None]:
        """Fire when the client can take more (immediately unless paused)."""
        if not self.paused or self.closed:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drain_waiters.append(d)
        return d

    def close(self) -> None:
        self.closed = True
        self._pending.clear()
        self._held.clear()
        waiters, self._drain_waiters = self._drain_waiters, []
        for d in waiters:
            d.callback(None)

    # --- IPushProducer (called by Twisted's transport) --------------------------------
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        pending, self._pending = self._pending, []
        self._pending_bytes = sum(len(e.frame) for e in self._held)
        if pending and not self.closed:
            self._write(b"".join(pending))
        waiters, self._drain_waiters = self._drain_waiters, []
        for d in waiters:
            d.callback(None)

    def stopProducing(self) -> None:
        self.close()

    def _hold(self, events: list[Event]) -> None:
        """Keep live events (references) for after the replay."""
        self._held.extend(events)
        self._count(sum(len(e.frame) for e in events))

    def _count(self, size: int) -> None:
        self._pending_bytes += size
        if self._pending_bytes > self.max_buffer and not self.closed:
            self.close()
            self.on_overflow(self)


def _default_clock() -> IReactorTime:
    from twisted.internet import reactor

    return reactor


@define(eq=False)
class Broadcaster:
    """Publishes committed events to subscribers in rounds, in id order, each once."""

    source: EventSource
    last_published: int = 0
    subscribers: set[Subscriber] = field(factory=set)
    published_count: int = 0
    clock: IReactorTime = field(factory=_default_clock)
    rounds: int = 0
    _queue: list[Event] = field(factory=list)
    _sorted: bool = True
    _wanted: int = 0
    _comment: bytes = b""
    _call: IDelayedCall | None = None
    _filling: bool = False
    _waiters: list[Deferred[None]] = field(factory=list)

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def publish(self, events: Sequence[Event]) -> Deferred[None]:
        """Queue events a transaction just committed (ids ascending) for the next round.

        Returns at once; nothing is written in the caller's call stack. The Deferred
        fires once a round has sent them (it never fails)."""
        if not events:
            return succeed(None)
        queue = self._queue
        if queue and events[0].id < queue[-1].id:
            self._sorted = False
        queue.extend(events)
        return self._schedule(waiter=True)

    def catch_up(self, committed_up_to: int) -> Deferred[None]:
        """Another process committed events up to this id: read and publish them."""
        if committed_up_to <= max(self.last_published, self._wanted):
            return succeed(None)
        self._wanted = committed_up_to
        return self._schedule(waiter=True)

    def heartbeat(self) -> None:
        """An SSE comment to every client (in the next round) so idle proxies keep the
        stream open."""
        self._comment = encode_comment("ping")
        self._schedule()

    def _schedule(self, waiter: bool = False) -> Deferred[None]:
        d: Deferred[None] = Deferred() if waiter else succeed(None)
        if waiter:
            self._waiters.append(d)
        if self._call is None and not self._filling:
            self._call = self.clock.callLater(0, self._round)
        return d

    # --- one round ----------------------------------------------------------------------
    def _round(self) -> None:
        self._call = None
        queue = self._queue
        if not self._sorted:
            queue.sort(key=_event_id)
            self._sorted = True
        last = self.last_published
        start = 0
        while start < len(queue) and queue[start].id <= last:
            start += 1  # published already (a duplicate, or read while filling a hole)
        gap_end = queue[start].id - 1 if start < len(queue) else self._wanted
        if gap_end > last:
            del queue[:start]
            self._fill(gap_end)
            return
        events: list[Event] = []
        size = 0
        i = start
        while i < len(queue) and len(events) < ROUND_EVENTS and size < ROUND_BYTES:
            event = queue[i]
            i += 1
            if event.id <= last:
                continue  # the same id twice in the queue
            if event.id > last + 1 and events:
                break  # a hole: the next round fills it first
            events.append(event)
            last = event.id
            size += len(event.frame)
        del queue[:i]
        comment, self._comment = self._comment, b""
        if events or comment:
            self._send_round(events, comment)
        if queue or self._wanted > self.last_published:
            self._call = self.clock.callLater(0, self._round)
        else:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

    def _send_round(self, events: list[Event], comment: bytes) -> None:
        started = metrics.now()
        self.rounds += 1
        first = events[0].id if events else 0
        last = events[-1].id if events else self.last_published
        if events:
            self.last_published = last
            self.published_count += len(events)
            metrics.published(events)
        # Bytes per (filter, framing), built once per round; almost every client shares
        # one filter, so this is one join and one chunk header. Keyed by the small int
        # each subscriber got for its (filter, framing) when it attached.
        # The deliveries metric is counted per key too, and added once per round.
        cache: dict[int, tuple[bytes, int, int]] = {}
        delivered = 0

        def data_for(subscriber: Subscriber) -> tuple[bytes, int, int]:
            flt, framed = subscriber.event_filter, subscriber.chunked
            frames = [e.frame for e in events if flt.everything or flt.accepts(e)]
            body = b"".join(frames) + comment
            found = cache[subscriber.key] = (
                chunk(body) if framed and body else body,
                len(body),
                len(frames),
            )
            return found

        for subscriber in list(self.subscribers):
            try:
                if subscriber.closed:
                    continue
                if subscriber.holding:
                    if events:
                        subscriber._hold(events)
                    continue
                seen = subscriber.last_id
                if not events or seen < first:  # the usual case: one shared write
                    found = cache.get(subscriber.key)
                    data, size, count = found if found is not None else data_for(subscriber)
                    if events:
                        subscriber.last_id = last
                    if size:
                        subscriber.send_framed(data, size)
                        delivered += count
                elif seen >= last:  # a replay that just ended sent these already
                    if comment:
                        subscriber.send(comment)
                else:  # it has some of these already (a replay just ended): one by one
                    for event in events:
                        subscriber.send_event(event)
                    if comment:
                        subscriber.send(comment)
            except Exception:
                log.failure("Dropping an SSE client that failed a write")
                metrics.SSE_CLIENTS_DROPPED.inc()
                self.unsubscribe(subscriber)
                subscriber.close()
        if delivered:
            metrics.SSE_DELIVERIES.inc(delivered)
        metrics.fanout_round(started)

    # --- holes --------------------------------------------------------------------------
    def _fill(self, up_to: int) -> None:
        """Read committed events after the last published one, up to ``up_to``, from the
        store (another process committed them, or a rolled-back transaction left a hole)."""
        self._filling = True
        d = self.source.events_after(self.last_published, ROUND_EVENTS)

        def got(found: list[Event]) -> None:
            found = [e for e in found if self.last_published < e.id <= up_to]
            if found:
                self._queue[:0] = found
                self._sorted = False
            else:  # a hole left by a rolled-back transaction: nothing will ever fill it
                self.last_published = max(self.last_published, up_to)
            self._filling = False
            self._call = self.clock.callLater(0, self._round)

        def failed(failure: Any) -> None:
            log.failure(
                "Reading events after {last} failed; retrying", failure, last=self.last_published
            )
            self._filling = False
            self._call = self.clock.callLater(FILL_RETRY, self._round)

        d.addCallbacks(got, failed)

    def stats(self) -> dict[str, Any]:
        return {
            "clients": len(self.subscribers),
            "last_event_id": self.last_published,
            "published": self.published_count,
        }


def _event_id(event: Event) -> int:
    return event.id
