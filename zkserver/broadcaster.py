"""Fan committed events out to open Server-Sent-Events clients, by a sweep.

The broadcaster never touches the database on the hot path: ingest hands it the events
a transaction just committed (:meth:`Broadcaster.publish`) and returns at once. Nothing is
written to any client in the caller's call stack: ``publish`` queues the events and
schedules a step of the *sweep* with ``callLater(0)``, so the terminal's ``OK: n`` (or
the pull ACK), written by the caller right after the commit, is on its socket before the
first client gets a byte.

The sweep
    Committed events are *admitted* in id order into a short log (at most
    :data:`ROUND_EVENTS` events and about :data:`ROUND_BYTES` bytes; the rest wait in the
    queue). A cursor walks the list of streams; at each stream it writes, in **one write**,
    every log event after the last one that stream has: one ``bytes`` object, HTTP chunk
    framing included, built once per (filter, framing, last id) and shared by every stream
    that needs the same (consecutive streams almost always do), so the hot loop creates no
    per-client Python object per event. Admitting events starts a new pass: every stream
    is visited once more, from wherever the cursor is. Events committed while a pass runs
    are admitted at the next step, so streams the cursor has not reached yet get them in the
    same write as the older ones, and the rest at their next visit: under load each stream
    gets several events per write, and an event reaches every stream within **one cycle of
    the cursor** (about N × the cost of one ``send(2)``), instead of waiting for a whole
    round to end before its own round starts.

How a step is bounded
    The sweep runs in steps of at most :data:`SLICE` visits, each scheduled with
    ``callLater(0)``; between steps the reactor serves its sockets (terminals' POSTs,
    database replies, new streams), so a commit never waits for a whole pass. A step costs
    O(SLICE) small steps (one ``send(2)`` each for a healthy stream) plus, when events are
    admitted, O(events) joins; it never waits on the database: while a hole in the ids
    (below) is read from the store, the pass under way and heartbeats go on, and the events
    after the hole wait in the queue (a failed read is tried again after
    :data:`FILL_RETRY` seconds). The log is bounded as above; at each wrap of the cursor
    it forgets the events every stream was offered, and once a full cycle has passed since
    the last admission it is empty.

The write
    goes straight to the connection's transport, bypassing ``Request.write`` (which would
    build a chunk tuple and call ``writeSequence`` per client and event). The bytes are
    already a complete HTTP chunk, so the response's chunked framing stays valid and
    ``Request.finish`` still ends it correctly; ``request.sentLength`` is brought up to
    date when the stream closes. When the transport is a plain TCP connection
    (:class:`twisted.internet.tcp.Connection`, not TLS) whose user-space buffer is empty
    (``dataBuffer`` and ``_tempDataBuffer``, see ``FileDescriptor.doWrite``), the bytes are
    handed to the socket's ``send`` directly: nothing is queued ahead of them, so ordering
    is kept, and a socket that takes them all needs no epoll registration
    (``startWriting``/``stopWriting``) at all. Once attached, only the stream writes to its
    transport, so it looks at the buffer only after its own last write went through it
    (``Subscriber.clean``): the hot loop touches the stream and its socket, nothing
    else. A step collects these writes and sends them together at its end through a
    :class:`~zkserver.sendpool.SendPool`: on the reactor thread alone, or shared with
    ``--send-threads`` helper threads while the reactor thread waits (the kernel's part of
    a ``send`` runs outside the GIL, so the shares run on several cores). What the
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
    write's bytes (one append per visit, never a copy) up to ``max_buffer`` bytes, and a
    client past that cap is disconnected (it reconnects with Last-Event-ID and replays what
    it missed from the database). A client still replaying keeps references to the live
    events it is offered meanwhile and gets them after the replay.

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
run in the database thread, outside the GIL). The sweep allocates nothing per client that
outlives a visit (the kernel takes the bytes), the heartbeat is one more pass, and
zkserver/gcpolicy.py freezes what survives a full collection so the next ones stay short.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
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
from zkserver.sendpool import SendPool

__all__ = [
    "Broadcaster",
    "Subscriber",
    "EventFilter",
    "EventSource",
    "chunk",
    "ROUND_EVENTS",
    "ROUND_BYTES",
    "SLICE",
]

log = Logger()

#: Most events in the sweep's log at once (the rest wait in the queue).
ROUND_EVENTS = 1000
#: About the most bytes of events in the log at once (so in one write to a client).
ROUND_BYTES = 256 * 1024
#: The heartbeat comment.
PING = encode_comment("ping")
#: Most streams one step of the sweep visits before the reactor serves its sockets again.
SLICE = 256
#: Streams that left before the member list is compacted without waiting for a wrap
#: (when they are also most of it: a mass disconnect).
COMPACT_AFTER = 64
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
    """Which events a client asked for (``?device=SN&type=attendance``); empty = all.

    ``serials`` holds what ``?device=`` named: serial numbers or device ids (a pull
    device has no serial number until it is first read)."""

    serials: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()

    def accepts(self, event: Event) -> bool:
        if self.types and event.type not in self.types:
            return False
        if (
            self.serials
            and event.serial_number not in self.serials
            and event.payload.get("device_id") not in self.serials
        ):
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
    #: Live events kept during a replay (a list only while one is held).
    _held: list[Event] | None = None
    _pending: list[bytes] = field(factory=list)
    _pending_bytes: int = 0
    #: Replays waiting for a paused client to drain (a list only while one waits).
    _drain_waiters: list[Deferred[None]] | None = None
    _transport: Any = None
    _request: Any = None  # the twisted.web Request, once attached
    _socket: Any = None
    #: Identifies (filter, framing) among subscribers: the sweep builds bytes once per key.
    key: int = -1
    #: Set while the broadcaster's sweep visits it (see Broadcaster.subscribe).
    subscribed: bool = False
    #: While ``holding``: the newest live event id already kept aside for it.
    offered: int = 0
    #: The broadcaster's heartbeat count when it last got a ping.
    ping_seen: int = 0
    #: The transport's buffer was empty when last looked at, and nothing went through
    #: it since (so bytes for this stream may go to its socket directly); see
    #: :meth:`recheck`. False at first: the response headers may still be buffered.
    clean: bool = False
    #: SSE bytes sent to the socket directly, not yet added to ``request.sentLength``
    #: (added at :meth:`close`; nothing reads it before: a stream is never finished).
    unlogged: int = 0

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
        self.clean = False  # the headers are in the transport's buffer until it flushes
        self.chunked = bool(getattr(request, "chunked", False))
        self._set_key()
        # The send(2) fast path only for plain TCP: TLS and other transports keep their
        # own write path.
        if isinstance(transport, tcp.Connection):
            self._socket = transport.socket

    # --- what the broadcaster and the replay call ------------------------------------
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
        sock = self.idle_socket()
        if sock is not None:
            try:
                sent = sock.send(data)
            except OSError:  # EAGAIN, or an error the transport will notice and report
                sent = 0
            if sent == len(data):
                return
            if sent:
                data = data[sent:]
        self.clean = False
        transport.write(data)

    def idle_socket(self) -> Any:
        """The socket to ``send`` to directly now, or None: only a plain TCP transport
        that is connected and has nothing queued in user space (``dataBuffer`` and
        ``_tempDataBuffer``, see ``FileDescriptor.doWrite``), so bytes sent now are next
        in line, and only while the stream is open and not paused."""
        sock = self._socket
        if sock is None or self.closed or self.paused:
            return None
        transport = self._transport
        if (
            transport.dataBuffer
            or transport._tempDataLen
            or not transport.connected
            or transport.disconnecting
        ):
            return None
        return sock

    def sent_rest(self, data: bytes, sent: int) -> None:
        """``data`` went to :meth:`idle_socket`, which took only ``sent`` bytes of it: the
        rest goes through the transport."""
        self.clean = False
        self._transport.write(data[sent:] if sent else data)

    def recheck(self) -> bool:
        """Whether bytes may go to the socket directly now (:meth:`idle_socket`): after a
        write went through the transport, until its buffer has drained. Only this stream
        writes to the transport once attached, so while ``clean`` holds the sweep need
        not look at the transport at all (one object less to touch per stream)."""
        if self.idle_socket() is None:
            return False
        self.clean = True
        return True

    def release(self) -> None:
        """End a replay: write the live events held meanwhile, then go live."""
        held, self._held = self._held or [], None
        self.holding = False
        for event in held:
            self._pending_bytes -= len(event.frame)
            self.send_event(event)

    def drained(self) -> Deferred[None]:
        """Fire when the client can take more (immediately unless paused)."""
        if not self.paused or self.closed:
            return succeed(None)
        d: Deferred[None] = Deferred()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(d)
        return d

    def close(self) -> None:
        if self.unlogged and self._request is not None:
            self._request.sentLength += self.unlogged
            self.unlogged = 0
        self.closed = True
        self._pending.clear()
        self._held = None
        waiters, self._drain_waiters = self._drain_waiters or (), None
        for d in waiters:
            d.callback(None)

    def abort(self) -> None:
        """Close the stream and its connection: the client sees the end, reconnects with
        its Last-Event-ID and replays what it missed."""
        self.close()
        transport = self._transport or getattr(
            getattr(self.target, "channel", None), "transport", None
        )
        if transport is not None:
            try:
                transport.abortConnection()
            except Exception:
                log.failure("Aborting an SSE client's connection failed")

    # --- IPushProducer (called by Twisted's transport) --------------------------------
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        pending, self._pending = self._pending, []
        self._pending_bytes = sum(len(e.frame) for e in self._held or ())
        if pending and not self.closed:
            self._write(b"".join(pending))
        waiters, self._drain_waiters = self._drain_waiters or (), None
        for d in waiters:
            d.callback(None)

    def stopProducing(self) -> None:
        self.close()

    def _hold(self, events: list[Event]) -> None:
        """Keep live events (references) for after the replay."""
        if self._held is None:
            self._held = []
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
    """Publishes committed events to subscribers by a sweep, in id order, each once."""

    source: EventSource
    last_published: int = 0
    subscribers: set[Subscriber] = field(factory=set)
    published_count: int = 0
    clock: IReactorTime = field(factory=_default_clock)
    #: Sends each step's writes to idle sockets, on helper threads too (see sendpool).
    sender: SendPool = field(factory=lambda: SendPool(0))
    #: Admissions so far (each one a batch of events, a ping or both, swept to everyone).
    rounds: int = 0
    _queue: list[Event] = field(factory=list)
    _sorted: bool = True
    _wanted: int = 0
    _call: IDelayedCall | None = None
    _filling: bool = False  # a hole is being read from the store
    _fill_not_before: float = 0.0  # after a failed read: when to read again
    #: (highest id covered, Deferred): fired once every client was offered that id.
    _waiters: list[tuple[int, Deferred[None]]] = field(factory=list)
    # --- the sweep
    _members: list[Subscriber] = field(factory=list)  # visiting order; joiners at the end
    _cursor: int = 0  # the next member to visit
    _gone: int = 0  # members that left since the list was last compacted
    _visits_left: int = 0  # visits until every member was offered everything (0: idle)
    _log: list[Event] = field(factory=list)  # admitted events some member may still need
    _log_ids: list[int] = field(factory=list)
    _log_bytes: int = 0
    _pass_floor: int | None = None  # the log's newest id at this pass's first visit
    _ping: int = 0  # heartbeats asked for so far
    _cache: dict[tuple[int, int, bool], tuple[bytes, int, int]] = field(factory=dict)
    _pass_started: float | None = None

    def subscribe(self, subscriber: Subscriber) -> None:
        """Add a stream. One without Last-Event-ID (not ``holding``) gets events admitted
        from now on; one in replay is offered (and holds) those too."""
        if subscriber in self.subscribers:
            return
        self.subscribers.add(subscriber)
        subscriber.subscribed = True
        subscriber.ping_seen = self._ping
        if subscriber.holding:
            subscriber.offered = max(subscriber.offered, self.last_published)
        else:
            subscriber.last_id = max(subscriber.last_id, self.last_published)
        self._members.append(subscriber)
        if self._visits_left:
            # A pass is running: the cursor reaches the end of the list (so this stream)
            # before it wraps to the streams before where the pass started. Without one
            # more visit the pass would end one stream short of them, and the log would be
            # trimmed before that stream got the pass's events.
            self._visits_left += 1

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber not in self.subscribers:
            return
        self.subscribers.discard(subscriber)
        subscriber.subscribed = False  # skipped by the sweep, dropped at its next wrap
        self._gone += 1
        if self._gone > COMPACT_AFTER and 2 * self._gone > len(self._members):
            self._compact()  # most are gone (a mass disconnect): do not wait for a wrap

    def _compact(self) -> None:
        """Drop members that left, keeping the cursor on the same next member."""
        before = sum(1 for m in self._members[: self._cursor] if m.subscribed)
        self._members = [m for m in self._members if m.subscribed]
        self._cursor = before
        self._gone = 0

    def publish(self, events: Sequence[Event]) -> Deferred[None]:
        """Queue events a transaction just committed (ids ascending) for the sweep.

        Returns at once; nothing is written in the caller's call stack. The Deferred
        fires once every stream was offered them (it never fails)."""
        if not events:
            return succeed(None)
        queue = self._queue
        if queue and events[0].id < queue[-1].id:
            self._sorted = False
        queue.extend(events)
        return self._schedule(max(e.id for e in events))

    def catch_up(self, committed_up_to: int) -> Deferred[None]:
        """Another process committed events up to this id: read and publish them. The
        Deferred fires once every stream was offered them (like :meth:`publish`'s), also
        when they are already being read or swept."""
        self._wanted = max(self._wanted, committed_up_to)
        return self._schedule(committed_up_to)

    def heartbeat(self) -> None:
        """An SSE comment to every client (swept like events) so idle proxies keep the
        stream open."""
        self._ping += 1
        self._cache.clear()
        self._start_pass()
        self._schedule(None)

    def _schedule(self, covers: int | None) -> Deferred[None]:
        d: Deferred[None] = succeed(None) if covers is None else Deferred()
        if covers is not None:
            self._waiters.append((covers, d))
        # Ids published already: a step fires the Deferred once every stream has them.
        self._next_step(covers is not None and covers <= self.last_published)
        return d

    def _next_step(self, wanted: bool = False) -> None:
        """Schedule the next step if anything is left to do (or ``wanted``): visits at
        once (also while a hole is being read: the log's events do not wait for it);
        queued events or a hole once no read is under way (after a failed one, once its
        retry time has come)."""
        if self._visits_left or wanted:
            delay = 0.0
        elif self._filling or not (self._queue or self._wanted > self.last_published):
            return
        else:
            delay = max(0.0, self._fill_not_before - self.clock.seconds())
        call = self._call
        if call is None:
            self._call = self.clock.callLater(delay, self._round)
        elif delay == 0.0 and call.getTime() > self.clock.seconds():
            call.reset(0)

    def _start_pass(self) -> None:
        """Every member must be visited once more, from the cursor on."""
        self._visits_left = len(self._members)
        self.rounds += 1

    # --- one step of the sweep -----------------------------------------------------------
    def _round(self) -> None:
        """One step: admit what is queued (while the log has room) and visit up to
        :data:`SLICE` members; schedule the next step while anything is left to do."""
        self._call = None
        budget = SLICE
        while True:
            more = self._admit()  # False while a hole is read: the visits go on meanwhile
            if self._visits_left:
                budget = self._visit(budget)
                if self._visits_left:
                    break  # this step's share is done; the reactor serves its sockets
            self._caught_up()  # every member has every admitted event
            if not more or not self._queue or not budget:
                break
        self._next_step()

    def _admit(self) -> bool:
        """Move queued events (id order, no holes) into the log while it has room; a hole
        before them is read from the store first. Returns False when nothing more can be
        admitted before a read from the store (under way, or to retry later)."""
        if self._filling:
            return False
        room = ROUND_EVENTS - len(self._log)
        if room <= 0 or self._log_bytes >= ROUND_BYTES:
            return True  # once the pass under way ends, the log is trimmed
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
            if self.clock.seconds() >= self._fill_not_before:
                self._fill(gap_end)
            return False
        admitted: list[Event] = []
        size = self._log_bytes
        i = start
        while i < len(queue) and len(admitted) < room and size < ROUND_BYTES:
            event = queue[i]
            i += 1
            if event.id <= last:
                continue  # the same id twice in the queue
            if event.id > last + 1 and admitted:
                break  # a hole: the next step fills it first
            admitted.append(event)
            last = event.id
            size += len(event.frame)
        del queue[:i]
        if admitted:
            self.last_published = last
            self.published_count += len(admitted)
            metrics.published(admitted)
            self._log.extend(admitted)
            self._log_ids.extend(e.id for e in admitted)
            self._log_bytes = size
            self._cache.clear()
            self._start_pass()
        return True

    def _visit(self, budget: int) -> int:
        """Visit up to ``budget`` members from the cursor: offer each, in one write, every
        log event after the last one it has.

        Members are taken a run at a time (up to the budget, the visits left and the end of
        the list): the cursor moves past the whole run first, then the run's members are
        visited from a copy of that stretch of the list. A member dropped during the run
        (its write raised, or a paused one passed its cap) may compact the list; the
        compaction counts the run as visited, so the cursor still points at the member
        after it, and the rest of the run is visited from the copy."""
        newest = self.last_published
        ping = self._ping
        cache = self._cache
        delivered = 0
        # The last (filter/framing key, last id, ping) seen and its bytes: members next to
        # each other in the sweep almost always share them.
        memo_key, memo_last, memo_ping = -1, -1, False
        data, size, count = b"", 0, 0
        # This step's writes to idle sockets, sent together at the end (on several
        # threads when the pool has helpers): the streams, their sockets, the bytes.
        batch: list[Subscriber] = []
        socks: list[Any] = []
        datas: list[bytes] = []
        sizes: list[int] = []
        if self._visits_left and self._pass_started is None:
            self._pass_started = metrics.now()
        while self._visits_left and budget:
            members = self._members
            cursor = self._cursor
            if cursor >= len(members):
                if batch:  # a stream is visited at most once between two sends
                    self._send_batch(batch, socks, datas, sizes)
                    batch, socks, datas, sizes = [], [], [], []
                self._wrap()
                if not self._members:
                    self._visits_left = 0
                    break
                continue
            end = min(len(members), cursor + min(budget, self._visits_left))
            self._cursor = end
            self._visits_left -= end - cursor
            budget -= end - cursor
            if self._pass_floor is None:
                self._pass_floor = newest
            for subscriber in members[cursor:end]:
                if not subscriber.subscribed or subscriber.closed:
                    continue
                if subscriber.holding:  # in replay: keep references for after it
                    if subscriber.offered < newest:
                        try:
                            subscriber._hold(
                                self._log[bisect_right(self._log_ids, subscriber.offered) :]
                            )
                        except Exception:
                            self._drop(subscriber)
                        subscriber.offered = newest
                    continue
                seen = subscriber.last_id
                pinged = subscriber.ping_seen != ping
                if seen >= newest and not pinged:
                    continue
                key = subscriber.key
                if key != memo_key or seen != memo_last or pinged != memo_ping:
                    found = cache.get((key, seen, pinged))
                    if found is None:
                        try:
                            found = self._bytes_for(subscriber, seen, pinged)
                        except Exception:  # its filter failed
                            self._drop(subscriber)
                            continue
                        cache[(key, seen, pinged)] = found
                    memo_key, memo_last, memo_ping = key, seen, pinged
                    data, size, count = found
                if seen < newest:
                    subscriber.last_id = newest
                subscriber.ping_seen = ping
                if not size:
                    continue
                delivered += count
                # The per-client hot path: a clean stream's transport is not looked at
                # (Subscriber.recheck does, after a write went through it).
                sock = subscriber._socket
                if (
                    sock is not None
                    and not subscriber.paused
                    and (subscriber.clean or subscriber.recheck())
                ):
                    batch.append(subscriber)
                    socks.append(sock)
                    datas.append(data)
                    sizes.append(size)
                    continue
                try:
                    subscriber.send_framed(data, size)
                except Exception:
                    self._drop(subscriber)
        if batch:
            self._send_batch(batch, socks, datas, sizes)
        if delivered:
            metrics.SSE_DELIVERIES.inc(delivered)
        return budget

    def _send_batch(
        self, batch: list[Subscriber], socks: list[Any], datas: list[bytes], sizes: list[int]
    ) -> None:
        """Send a step's writes to idle sockets (see :mod:`zkserver.sendpool`); what a
        socket did not take goes through its transport, here on the reactor thread."""
        sent = self.sender.send_all(socks, datas)
        for subscriber, data, size, n in zip(batch, datas, sizes, sent, strict=True):
            subscriber.unlogged += size
            if n != len(data):
                try:
                    subscriber.sent_rest(data, n)
                except Exception:
                    self._drop(subscriber)

    def _drop(self, subscriber: Subscriber) -> None:
        log.failure("Dropping an SSE client that failed a write")
        metrics.SSE_CLIENTS_DROPPED.inc()
        self.unsubscribe(subscriber)
        subscriber.abort()

    def _bytes_for(self, subscriber: Subscriber, seen: int, pinged: bool) -> tuple[bytes, int, int]:
        """(bytes to write, SSE bytes in them, events in them) for a member with this
        filter and framing that has every event up to ``seen``."""
        flt = subscriber.event_filter
        events = self._log[bisect_right(self._log_ids, seen) :]
        frames = [e.frame for e in events if flt.everything or flt.accepts(e)]
        body = b"".join(frames) + (PING if pinged else b"")
        return (chunk(body) if subscriber.chunked and body else body, len(body), len(frames))

    def _wrap(self) -> None:
        """The cursor passed the last member: every member was visited since the last
        wrap, so log events up to this pass's floor were offered to all of them."""
        self._members = [m for m in self._members if m.subscribed]
        self._gone = 0
        self._cursor = 0
        if self._pass_started is not None:
            metrics.fanout_round(self._pass_started)
            self._pass_started = None
        floor, self._pass_floor = self._pass_floor, None
        if floor is not None:
            self._trim(floor)

    def _trim(self, floor: int) -> None:
        """Forget log events every member was offered (ids up to ``floor``)."""
        cut = bisect_right(self._log_ids, floor)
        if cut:
            self._log_bytes -= sum(len(e.frame) for e in self._log[:cut])
            del self._log[:cut]
            del self._log_ids[:cut]
            self._cache.clear()
        if self._waiters:
            ready = [d for covers, d in self._waiters if covers <= floor]
            if ready:
                self._waiters = [(c, d) for c, d in self._waiters if c > floor]
                for d in ready:
                    d.callback(None)

    def _caught_up(self) -> None:
        """Every member was offered every admitted event (a full cycle since the last
        admission): the log and the waiters covered by it are done with. Members before
        the cursor are not visited again until the next wrap, so this pass's floor is
        what they all have."""
        if self._pass_started is not None:
            metrics.fanout_round(self._pass_started)
            self._pass_started = None
        self._trim(self.last_published)
        self._pass_floor = self.last_published

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
            self._next_step()

        def failed(failure: Any) -> None:
            log.failure(
                "Reading events after {last} failed; retrying", failure, last=self.last_published
            )
            self._filling = False
            self._fill_not_before = self.clock.seconds() + FILL_RETRY
            self._next_step()

        d.addCallbacks(got, failed)

    def stats(self) -> dict[str, Any]:
        return {
            "clients": len(self.subscribers),
            "last_event_id": self.last_published,
            "published": self.published_count,
        }


def _event_id(event: Event) -> int:
    return event.id
