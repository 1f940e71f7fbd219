"""The sweep against a model: any interleaving of commits (local, another process's,
rolled back), publishes out of order, hole fills and Last-Event-ID replays whose store
reads answer late (or fail), clients joining, leaving, pausing, resuming, overflowing their
cap, with filters and HTTP/1.0 framing mixed in one pass, heartbeats, and sweep steps.

Once everything is flushed, every open stream has exactly the events it asked for, once,
in id order; a stream that was dropped has a gap-free prefix of them."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web import http, server

from tests.harness import memory_request
from zkserver import broadcaster as broadcaster_module
from zkserver.broadcaster import Broadcaster, EventFilter, Subscriber
from zkserver.events import Event
from zkserver.store.base import ReplayPage
from zkserver.web import sse as sse_module
from zkserver.web.sse import EventStream

SERIALS = ("A", "B")
TYPES = ("attendance", "device_status")
FILTERS = {
    "": EventFilter(),
    "?device=A": EventFilter(serials=frozenset({"A"})),
    "?type=device_status": EventFilter(types=frozenset({"device_status"})),
    "?device=A,B&type=attendance": EventFilter(
        serials=frozenset({"A", "B"}), types=frozenset({"attendance"})
    ),
}


class LateStore:
    """Committed events; every read answers only when the test says (or fails)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.newest = 0
        self.pruned = 0
        self.pending: list[tuple[Deferred[Any], Any]] = []

    def _later(self, answer: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((d, answer))
        return d

    def events_after(self, last_id: int, limit: int = 1000) -> Deferred[list[Event]]:
        return self._later(lambda: [e for e in self.events if e.id > last_id][:limit])

    def last_event_id(self) -> Deferred[int]:
        return self._later(lambda: self.newest)

    def events_pruned_through(self) -> Deferred[int]:
        return self._later(lambda: self.pruned)

    def replay_page(self, last_id: int, limit: int = 500) -> Deferred[ReplayPage]:
        """Events, mark and newest id at one instant (when the test answers)."""
        return self._later(
            lambda: ReplayPage(
                [e for e in self.events if e.id > last_id][:limit], self.pruned, self.newest
            )
        )

    def answer(self, index: int, fail: bool = False) -> None:
        d, answer = self.pending.pop(index % len(self.pending))
        if fail:
            d.errback(Failure(OSError("database gone")))
        else:
            d.callback(answer())


class Transport(StringTransport):
    broken = False

    def write(self, data: bytes) -> None:
        if self.broken:
            raise OSError("broken pipe")
        super().write(data)


class Stream:
    def __init__(self, request: server.Request, transport: Transport, **kw: Any) -> None:
        self.request = request
        self.transport = transport
        self.subscriber: Subscriber = request.producer  # type: ignore[assignment]
        self.flt: EventFilter = kw["flt"]
        self.first_after: int | None = kw.get("first_after")  # plain stream: after this id
        self.last_event_id: int | None = kw.get("last_event_id")
        self.chunked = kw["chunked"]
        self.left = False
        self.broken = False

    def frames(self) -> list[bytes]:
        raw = self.transport.value().split(b"\r\n\r\n", 1)[1]
        if self.chunked:
            parts: list[bytes] = []
            http._ChunkedTransferDecoder(parts.append, lambda _: None).dataReceived(raw)
            raw = b"".join(parts)
        assert raw.startswith(b"retry: 3000\n\n")
        return [f for f in raw[len(b"retry: 3000\n\n") :].split(b"\n\n") if f]


def ids_of(frames: list[bytes]) -> list[int]:
    return [int(f.split(b"\n")[0][4:]) for f in frames if f.startswith(b"id: ")]


class SweepMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.original = (
            broadcaster_module.SLICE,
            broadcaster_module.COMPACT_AFTER,
            broadcaster_module.ROUND_EVENTS,
            broadcaster_module.ROUND_BYTES,
            sse_module.REPLAY_PAGE,
        )
        broadcaster_module.COMPACT_AFTER = 1  # compactions inside visits happen here too
        sse_module.REPLAY_PAGE = 2  # replays of several pages
        self.clock = Clock()
        self.store = LateStore()
        self.broadcaster = Broadcaster(source=self.store, clock=self.clock)
        self.events_view = EventStream(
            broadcaster=self.broadcaster, store=self.store, max_buffer=1 << 20
        )
        self.streams: list[Stream] = []
        self.next_id = 1
        self.unpublished: list[list[Event]] = []  # committed here, publish() not called yet
        self.published: list[Deferred[None]] = []
        self.committed: list[Event] = []
        self.early: list[tuple[int, int, bool]] = []  # publish Deferreds that fired early
        self.pruned: set[int] = set()

    @initialize(
        size=st.integers(1, 4), log_events=st.integers(1, 5), log_bytes=st.sampled_from([1, 200])
    )
    def bounds(self, size: int, log_events: int, log_bytes: int) -> None:
        """Small slices, and a log that is full after a few events (or bytes)."""
        broadcaster_module.SLICE = size
        broadcaster_module.ROUND_EVENTS = log_events
        broadcaster_module.ROUND_BYTES = log_bytes * 1024

    # --- commits ------------------------------------------------------------------------
    def _commit(self, serial: str, kind: str) -> Event:
        e = Event(
            id=self.next_id,
            type=kind,
            payload={"type": kind, "serial_number": serial, "n": self.next_id},
            serial_number=serial,
        )
        self.next_id += 1
        self.store.events.append(e)
        self.committed.append(e)
        self.store.newest = e.id
        return e

    @rule(
        batch=st.lists(
            st.tuples(st.sampled_from(SERIALS), st.sampled_from(TYPES)), min_size=1, max_size=3
        )
    )
    def commit_here(self, batch: list[tuple[str, str]]) -> None:
        self.unpublished.append([self._commit(s, k) for s, k in batch])

    @precondition(lambda self: self.unpublished)
    @rule(index=st.integers(0, 5))
    def publish(self, index: int) -> None:
        events = self.unpublished.pop(index % len(self.unpublished))
        self._watch(self.broadcaster.publish(events), max(e.id for e in events))

    @rule(serial=st.sampled_from(SERIALS), kind=st.sampled_from(TYPES))
    def commit_elsewhere(self, serial: str, kind: str) -> None:
        self._commit(serial, kind)

    @rule()
    def roll_back(self) -> None:
        self.next_id += 1  # an id taken by a transaction that rolled back

    @rule()
    def notify(self) -> None:
        self._watch(self.broadcaster.catch_up(self.store.newest), self.store.newest)

    @precondition(lambda self: self.store.events)
    @rule(data=st.data())
    def prune(self, data: st.DataObject) -> None:
        # Retention deletes old events only: never ones this process has still to publish.
        limit = min(self.broadcaster.last_published, self.store.events[-1].id - 1)
        if limit <= self.store.pruned:
            return
        through = data.draw(st.integers(self.store.pruned + 1, limit))
        self.pruned.update(e.id for e in self.store.events if e.id <= through)
        self.store.events = [e for e in self.store.events if e.id > through]
        self.store.pruned = through

    @precondition(lambda self: self.store.pending)
    @rule(index=st.integers(0, 5), fail=st.sampled_from([False, False, False, True]))
    def store_answers(self, index: int, fail: bool) -> None:
        self.store.answer(index, fail)

    # --- the sweep ----------------------------------------------------------------------
    @precondition(lambda self: self.broadcaster._call is not None)
    @rule()
    def step(self) -> None:
        """Exactly one step of the sweep (Clock.advance would run the steps it schedules)."""
        call = self.broadcaster._call
        assert call is not None
        call.cancel()
        self.broadcaster._call = None
        self.broadcaster._round()

    @rule()
    def heartbeat(self) -> None:
        self.broadcaster.heartbeat()

    # --- clients ------------------------------------------------------------------------
    @rule(
        query=st.sampled_from(sorted(FILTERS)),
        http10=st.booleans(),
        last_event_id=st.one_of(st.none(), st.integers(0, 12)),
        small_cap=st.booleans(),
    )
    def connect(self, query: str, http10: bool, last_event_id: int | None, small_cap: bool) -> None:
        transport = Transport()
        request = memory_request(transport, b"HTTP/1.0" if http10 else b"HTTP/1.1")
        request.uri = b"/devices/events" + query.encode()
        if last_event_id is not None:
            # An id this database gave (one from another database starts live instead).
            last_event_id = min(last_event_id, self.store.newest)
            request.requestHeaders.setRawHeaders(b"last-event-id", [str(last_event_id).encode()])
        self.events_view.max_buffer = 400 if small_cap else 1 << 20
        first_after = None if last_event_id is not None else self.broadcaster.last_published
        self.events_view.serve(request)
        self.streams.append(
            Stream(
                request,
                transport,
                flt=FILTERS[query],
                first_after=first_after,
                last_event_id=last_event_id,
                chunked=not http10,
            )
        )

    def _watch(self, d: Deferred[None], covers: int) -> None:
        """A publish Deferred fires once every stream was offered what it covers."""
        self.published.append(d)

        def fired(_: object) -> None:
            for subscriber in self.broadcaster.subscribers:
                if subscriber.closed:
                    continue
                have = subscriber.offered if subscriber.holding else subscriber.last_id
                if have < covers:
                    self.early.append((covers, have, subscriber.holding))

        d.addCallback(fired)

    def _open(self) -> list[Stream]:
        return [s for s in self.streams if not s.left and not s.subscriber.closed]

    @precondition(lambda self: self._open())
    @rule(index=st.integers(0, 30))
    def leave(self, index: int) -> None:
        stream = self._open()[index % len(self._open())]
        stream.left = True
        stream.request.connectionLost(Failure(ConnectionDone()))

    @precondition(lambda self: self._open())
    @rule(index=st.integers(0, 30))
    def break_its_socket(self, index: int) -> None:
        stream = self._open()[index % len(self._open())]
        stream.transport.broken = stream.broken = True

    @precondition(lambda self: self._open())
    @rule(index=st.integers(0, 30))
    def pause(self, index: int) -> None:
        self._open()[index % len(self._open())].subscriber.pauseProducing()

    @precondition(lambda self: self._open())
    @rule(index=st.integers(0, 30))
    def resume(self, index: int) -> None:
        self._resume(self._open()[index % len(self._open())])

    def _resume(self, stream: Stream) -> None:
        """What the transport does when its buffer drains (a write that raises there
        loses the connection)."""
        if stream.subscriber.paused and not stream.subscriber.closed:
            try:
                stream.subscriber.resumeProducing()
            except OSError as e:
                assert stream.broken
                stream.left = True
                stream.request.connectionLost(Failure(e))

    # --- what must hold -----------------------------------------------------------------
    @invariant()
    def ids_only_ascend_and_the_log_is_bounded(self) -> None:
        assert len(self.broadcaster._log) <= broadcaster_module.ROUND_EVENTS
        for stream in self.streams:
            ids = ids_of(stream.frames())
            assert ids == sorted(set(ids)), ids

    def _expected(self, stream: Stream, frames: list[bytes]) -> list[int]:
        """The ids this stream should have, in order (a reset's id at its place)."""
        wanted = [e.id for e in self.committed if stream.flt.accepts(e)]
        if stream.first_after is not None:  # no Last-Event-ID: what is admitted after it
            return [i for i in wanted if i > stream.first_after]
        assert stream.last_event_id is not None
        after = [i for i in wanted if i > stream.last_event_id]
        resets = [n for n, f in enumerate(frames) if b'"type":"reset"' in f]
        if not resets:  # every event after its Last-Event-ID: none missed silently
            return after
        # One reset (retention deleted events the replay had not sent yet): before it, a
        # gap-free run of the events after its Last-Event-ID; after it, every event after
        # the reset's id.
        (n,) = resets
        assert stream.last_event_id < self.store.pruned
        reset_id = ids_of(frames[n : n + 1])[0]
        reset = json.loads(frames[n].split(b"data: ", 1)[1])
        sent_before = after[n - 1] if n else stream.last_event_id
        assert reset_id >= reset["pruned_through"] > sent_before
        return after[:n] + [reset_id] + [i for i in wanted if i > reset_id]

    def _flush(self) -> None:
        """Everything in flight lands: publishes, notifications, store answers, resumes."""
        for _ in range(100):
            for events in self.unpublished:
                self._watch(self.broadcaster.publish(events), max(e.id for e in events))
            self.unpublished.clear()
            self.broadcaster.catch_up(self.store.newest)
            for stream in self.streams:
                self._resume(stream)
            while self.store.pending:
                self.store.answer(0)
            self.clock.advance(0)
            if self.broadcaster._call is not None:
                self.clock.advance(broadcaster_module.FILL_RETRY)
            if not self.store.pending and self.broadcaster._call is None:
                break
        assert not self.store.pending and self.broadcaster._call is None

    def teardown(self) -> None:
        try:
            self._flush()
            for _ in range(2):  # two passes: at least one wrap, so the list is compacted
                self.broadcaster.heartbeat()
                self._flush()
            assert self.early == []
            members = self.broadcaster._members
            assert {id(s) for s in members} == {id(s) for s in self.broadcaster.subscribers}
            assert len(members) == len(self.broadcaster.subscribers)
            assert self.broadcaster._log == [] and self.broadcaster._waiters == []
            assert all(d.called for d in self.published)
            live = [s.subscriber for s in self._open()]
            assert {id(s) for s in live} == {id(s) for s in self.broadcaster.subscribers}
            for stream in self.streams:
                frames = stream.frames()
                if not stream.left and not stream.subscriber.closed:
                    assert not stream.broken
                    assert frames[-1] == b": ping"  # the last heartbeat reached it
                frames = [f for f in frames if f != b": ping"]
                expected = self._expected(stream, frames)
                got = ids_of(frames)
                if stream.subscriber.closed and not stream.left:
                    # Dropped (past its cap, a write that raised, a failed replay): its
                    # connection is closed too, so the client reconnects and replays.
                    assert stream.transport.disconnecting
                if stream.left or stream.subscriber.closed:
                    assert got == expected[: len(got)], (got, expected)
                else:
                    assert got == expected, (
                        got,
                        expected,
                        stream.first_after,
                        stream.last_event_id,
                    )
        finally:
            (
                broadcaster_module.SLICE,
                broadcaster_module.COMPACT_AFTER,
                broadcaster_module.ROUND_EVENTS,
                broadcaster_module.ROUND_BYTES,
                sse_module.REPLAY_PAGE,
            ) = self.original


SweepMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("SWEEP_EXAMPLES", "300")),
    stateful_step_count=60,
    deadline=None,
)
test_the_sweep_against_its_model = SweepMachine.TestCase


@pytest.mark.parametrize("before_answer", [1, 2, 3])
def test_a_prune_between_a_replays_reads_in_the_model(before_answer: int) -> None:
    """The interleaving the search rarely reaches, by hand: six events published, a client
    with Last-Event-ID 1 replaying in pages of two, and retention deleting through id 4
    just before the store answers the replay's n-th read. The teardown's check holds:
    the client has every event after 1, or one reset and every event after its id."""
    machine = SweepMachine()
    try:
        machine.bounds(size=4, log_events=5, log_bytes=200)
        machine.commit_here([("A", "attendance")] * 3)
        machine.commit_here([("B", "device_status")] * 3)
        machine.publish(0)
        machine.publish(0)
        while machine.broadcaster._call is not None:
            machine.step()
        machine.connect("", http10=False, last_event_id=1, small_cap=False)
        for answer in range(1, before_answer + 1):
            assert machine.store.pending, "the replay ended before the prune"
            if answer == before_answer:
                machine.pruned.update(e.id for e in machine.store.events if e.id <= 4)
                machine.store.events = [e for e in machine.store.events if e.id > 4]
                machine.store.pruned = 4
            machine.store.answer(0)
    finally:
        machine.teardown()
