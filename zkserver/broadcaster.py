"""Fan committed events out to open Server-Sent-Events clients.

The broadcaster never touches the database on the hot path: ingest hands it the events
a transaction just committed and it writes each event's pre-encoded frame (one ``bytes``
object, encoded once) to every interested client. Publishing is serialised and ordered
by event id: an event id at or below the last one published is skipped (a duplicate),
and a hole before the first new id (another process committed in between) is filled
from the store first, so clients see ids in commit order without gaps.

Each client is an :class:`IPushProducer` registered with its request: when the socket's
send buffer is full Twisted pauses it, frames queue in memory up to ``max_buffer``
bytes, and a client past that cap is disconnected (it reconnects with Last-Event-ID and
replays what it missed from the database).

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
run in the database thread, outside the GIL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from zkserver.events import Event, encode_comment

__all__ = ["Broadcaster", "Subscriber", "EventFilter", "EventSource"]

log = Logger()


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


class Writable(Protocol):
    """The part of a twisted.web request a subscriber writes to."""

    def write(self, data: bytes) -> None: ...


@implementer(IPushProducer)
@define(eq=False)
class Subscriber:
    """One open event stream.

    While ``holding`` (Last-Event-ID replay in progress) live events are kept aside and
    written after the replay, so nothing is missed or sent twice.
    """

    target: Writable
    on_overflow: Callable[[Subscriber], None]
    event_filter: EventFilter = field(factory=EventFilter)
    max_buffer: int = 1 << 20
    last_id: int = 0
    holding: bool = False
    paused: bool = False
    closed: bool = False
    _held: list[Event] = field(factory=list)
    _pending: list[bytes] = field(factory=list)
    _pending_bytes: int = 0
    _drain_waiters: list[Deferred[None]] = field(factory=list)

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
            self.send(event.frame)

    def send(self, data: bytes) -> None:
        """Write bytes now, or queue them while the client's socket is full."""
        if self.closed:
            return
        if self.paused:
            self._pending.append(data)
            self._count(len(data))
        else:
            self.target.write(data)

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
            self.target.write(b"".join(pending))
        waiters, self._drain_waiters = self._drain_waiters, []
        for d in waiters:
            d.callback(None)

    def stopProducing(self) -> None:
        self.close()

    def _count(self, size: int) -> None:
        self._pending_bytes += size
        if self._pending_bytes > self.max_buffer and not self.closed:
            self.close()
            self.on_overflow(self)


@define(eq=False)
class Broadcaster:
    """Publishes committed events to subscribers, in id order, each once."""

    source: EventSource
    last_published: int = 0
    subscribers: set[Subscriber] = field(factory=set)
    _lock: DeferredLock = field(factory=DeferredLock)
    published_count: int = 0

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def publish(self, events: Sequence[Event]) -> Deferred[None]:
        """Publish events a transaction just committed (ids ascending)."""
        if not events:
            return succeed(None)
        batch = list(events)
        return self._lock.run(lambda: Deferred.fromCoroutine(self._publish_locked(batch)))

    def catch_up(self, committed_up_to: int) -> Deferred[None]:
        """Another process committed events up to this id: read and publish them."""
        if committed_up_to <= self.last_published:
            return succeed(None)
        return self._lock.run(lambda: Deferred.fromCoroutine(self._fill_to(committed_up_to)))

    def heartbeat(self) -> None:
        """Write an SSE comment to every client so idle proxies keep the stream open."""
        ping = encode_comment("ping")
        for subscriber in list(self.subscribers):
            subscriber.send(ping)

    async def _publish_locked(self, events: list[Event]) -> None:
        if events[0].id > self.last_published + 1:
            await self._fill_to(events[0].id - 1)
        self._fan_out(events)

    async def _fill_to(self, up_to: int) -> None:
        while self.last_published < up_to:
            missing = await self.source.events_after(self.last_published, 1000)
            missing = [e for e in missing if e.id <= up_to]
            if not missing:
                # A hole left by a rolled-back transaction: nothing will ever fill it.
                self.last_published = up_to
                break
            self._fan_out(missing)

    def _fan_out(self, events: Iterable[Event]) -> None:
        for event in events:
            if event.id <= self.last_published:
                continue
            self.last_published = event.id
            self.published_count += 1
            for subscriber in list(self.subscribers):
                try:
                    subscriber.deliver(event)
                except Exception:
                    log.failure("Dropping an SSE client that failed a write")
                    self.unsubscribe(subscriber)
                    subscriber.close()

    def stats(self) -> dict[str, Any]:
        return {
            "clients": len(self.subscribers),
            "last_event_id": self.last_published,
            "published": self.published_count,
        }
