"""The broadcaster's rounds: the terminal is answered first, one write per client per round,
coalescing in id order, shared bytes, valid HTTP chunk framing, the send(2) fast path."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
import treq
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web import http

from tests.harness import (
    RunningServer,
    SSEClient,
    drain,
    memory_request,
    raw_request,
    wait_until,
)
from zkserver import broadcaster as broadcaster_module
from zkserver.broadcaster import ROUND_EVENTS, Broadcaster, EventFilter, Subscriber, chunk
from zkserver.events import Event


def event(event_id: int, serial: str = "SN1", kind: str = "attendance") -> Event:
    return Event(
        id=event_id,
        type=kind,
        payload={"type": kind, "serial_number": serial, "user_id": str(event_id)},
        serial_number=serial,
    )


class NoStore:
    """An event source that must not be asked (no holes in these tests)."""

    def events_after(self, last_id: int, limit: int = 1000) -> Any:
        raise AssertionError(f"unexpected read after {last_id}")


class ListStore:
    """Committed events held in a list (what another process committed)."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.reads: list[int] = []

    def events_after(self, last_id: int, limit: int = 1000) -> Any:
        from twisted.internet.defer import succeed

        self.reads.append(last_id)
        return succeed([e for e in self.events if e.id > last_id][:limit])


class CountingTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def open_stream(broadcaster: Broadcaster, **kwargs: Any) -> tuple[Subscriber, CountingTransport]:
    """A real twisted.web request on an in-memory transport, opened like EventStream does."""
    transport = CountingTransport()
    request = memory_request(transport)
    subscriber = Subscriber(target=request, on_overflow=lambda s: None, **kwargs)
    request.registerProducer(subscriber, True)
    request.write(b"retry: 3000\n\n")
    subscriber.attach()
    broadcaster.subscribe(subscriber)
    transport.writes = 0
    return subscriber, transport


def body_of(transport: StringTransport) -> tuple[bytes, int]:
    """Decode the chunked body written so far; returns (body, chunks)."""
    raw = transport.value().split(b"\r\n\r\n", 1)[1]
    parts: list[bytes] = []
    done: list[bytes] = []
    decoder = http._ChunkedTransferDecoder(parts.append, done.append)
    decoder.dataReceived(raw)
    return b"".join(parts), raw.count(b"\r\n") // 2


def frame_ids(body: bytes) -> list[int]:
    return [int(line[4:]) for line in body.split(b"\n") if line.startswith(b"id: ")]


def test_nothing_is_written_in_the_publishers_call_stack() -> None:
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    subscriber, transport = open_stream(broadcaster)
    broadcaster.publish([event(1)])
    assert transport.writes == 0 and subscriber.last_id == 0  # queued, not written
    clock.advance(0)
    assert transport.writes == 1 and subscriber.last_id == 1


def test_events_published_before_a_round_go_in_one_write_per_client_in_id_order() -> None:
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    streams = [open_stream(broadcaster) for _ in range(3)]
    broadcaster.publish([event(1), event(2)])
    broadcaster.publish([event(3)])
    clock.advance(0)
    for _, transport in streams:
        assert transport.writes == 1
        body, chunks = body_of(transport)
        assert frame_ids(body) == [1, 2, 3] and chunks == 2  # retry + one round
    assert broadcaster.rounds == 1


def test_the_same_bytes_object_goes_to_every_client_and_paused_ones_keep_a_reference() -> None:
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    (a, _), (b, _) = open_stream(broadcaster), open_stream(broadcaster)
    a.pauseProducing()
    b.pauseProducing()
    broadcaster.publish([event(1), event(2)])
    clock.advance(0)
    assert len(a._pending) == len(b._pending) == 1
    assert a._pending[0] is b._pending[0]
    assert a._pending[0] == chunk(event(1).frame + event(2).frame)


def test_paused_client_gets_its_queue_in_one_write_when_resumed_and_the_cap_still_drops() -> None:
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    dropped: list[Subscriber] = []
    subscriber, transport = open_stream(broadcaster, max_buffer=10_000)
    subscriber.on_overflow = dropped.append
    subscriber.pauseProducing()
    for i in range(1, 4):
        broadcaster.publish([event(i)])
        clock.advance(0)
    assert transport.writes == 0
    subscriber.resumeProducing()
    assert transport.writes == 1
    assert frame_ids(body_of(transport)[0]) == [1, 2, 3]
    subscriber.pauseProducing()
    next_id = 4
    while not dropped:
        broadcaster.publish([event(next_id)])
        next_id += 1
        clock.advance(0)
    assert dropped == [subscriber] and subscriber.closed


def test_chunked_framing_stays_valid_through_finish() -> None:
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    subscriber, transport = open_stream(broadcaster)
    for i in range(1, 6):
        broadcaster.publish([event(i)])
        if i % 2:
            clock.advance(0)
    broadcaster.heartbeat()
    clock.advance(0)
    subscriber.target.unregisterProducer()  # type: ignore[attr-defined]
    subscriber.target.finish()  # type: ignore[attr-defined]
    raw = transport.value().split(b"\r\n\r\n", 1)[1]
    parts: list[bytes] = []
    done: list[bytes] = []
    decoder = http._ChunkedTransferDecoder(parts.append, done.append)
    decoder.dataReceived(raw)
    assert done == [b""]  # the terminating zero-length chunk was found, nothing after it
    body = b"".join(parts)
    assert frame_ids(body) == [1, 2, 3, 4, 5] and body.endswith(b": ping\n\n")
    assert subscriber.target.sentLength == len(body)  # type: ignore[attr-defined]


def test_filters_get_their_own_shared_bytes() -> None:
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    only_b, tb = open_stream(broadcaster, event_filter=EventFilter(serials=frozenset({"B"})))
    status, ts = open_stream(
        broadcaster, event_filter=EventFilter(types=frozenset({"device_status"}))
    )
    everything, te = open_stream(broadcaster)
    broadcaster.publish([event(1, "A"), event(2, "B"), event(3, "B", "device_status")])
    clock.advance(0)
    assert frame_ids(body_of(tb)[0]) == [2, 3]
    assert frame_ids(body_of(ts)[0]) == [3]
    assert frame_ids(body_of(te)[0]) == [1, 2, 3]
    assert only_b.last_id == status.last_id == everything.last_id == 3


def test_out_of_order_publishes_and_duplicates_go_out_once_in_id_order() -> None:
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    _, transport = open_stream(broadcaster)
    broadcaster.publish([event(2), event(3)])
    broadcaster.publish([event(1)])
    broadcaster.publish([event(3)])
    clock.advance(0)
    assert frame_ids(body_of(transport)[0]) == [1, 2, 3]
    broadcaster.publish([event(2)])  # already published
    clock.advance(0)
    assert frame_ids(body_of(transport)[0]) == [1, 2, 3]


def test_a_hole_is_filled_from_the_store_before_later_events() -> None:
    clock = Clock()
    store = ListStore([event(1), event(2), event(3)])
    broadcaster = Broadcaster(source=store, clock=clock)
    _, transport = open_stream(broadcaster)
    broadcaster.publish([event(4)])  # 1..3 were committed by another process
    clock.advance(0)
    clock.advance(0)
    assert frame_ids(body_of(transport)[0]) == [1, 2, 3, 4]
    assert store.reads == [0]
    broadcaster.catch_up(6)  # another process committed 5 and 6; 5 rolled back (a hole)
    store.events.append(event(6))
    clock.advance(0)
    clock.advance(0)
    assert frame_ids(body_of(transport)[0]) == [1, 2, 3, 4, 6]


def test_a_catch_up_already_being_read_fires_once_every_stream_has_the_events() -> None:
    """A second notification for ids whose read from the store is still under way (or
    that are still being swept) fires like publish(): once every stream was offered them,
    not at once."""
    clock = Clock()
    store = ListStore([event(1), event(2)])
    held: list[Any] = []
    read = store.events_after

    def late_read(last_id: int, limit: int = 1000) -> Any:
        from twisted.internet.defer import Deferred

        d: Deferred[Any] = Deferred()
        held.append((d, read(last_id, limit)))
        return d

    store.events_after = late_read  # type: ignore[method-assign]
    broadcaster = Broadcaster(source=store, clock=clock)
    _, transport = open_stream(broadcaster)
    first = broadcaster.catch_up(2)
    clock.advance(0)  # the read is under way
    again = broadcaster.catch_up(2)
    assert held and not first.called and not again.called
    d, answer = held.pop()
    answer.addCallback(d.callback)
    clock.advance(0)
    assert frame_ids(body_of(transport)[0]) == [1, 2]
    assert first.called and again.called
    done = broadcaster.catch_up(1)  # long published: fires after the next step
    clock.advance(0)
    assert done.called and broadcaster._waiters == []


class HeldStore:
    """Committed events whose reads answer (or fail) only when the test says."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.reads: list[tuple[int, Any]] = []

    def events_after(self, last_id: int, limit: int = 1000) -> Any:
        from twisted.internet.defer import Deferred

        d: Deferred[list[Event]] = Deferred()
        self.reads.append((last_id, d))
        return d

    def answer(self) -> None:
        last_id, d = self.reads.pop(0)
        d.callback([e for e in self.events if e.id > last_id])

    def fail(self) -> None:
        from twisted.python.failure import Failure

        _, d = self.reads.pop(0)
        d.errback(Failure(OSError("database gone")))


def test_a_hole_being_read_does_not_hold_back_the_pass_under_way(monkeypatch: Any) -> None:
    """Events another process committed are read from the store (a hole); while that read
    is under way (a slow or unreachable database), the streams the pass has not reached
    yet still get what the others already got, and heartbeats still go out."""
    monkeypatch.setattr(broadcaster_module, "SLICE", 1)
    clock = Clock()
    store = HeldStore([event(1), event(2), event(3)])
    broadcaster = Broadcaster(source=store, clock=clock)
    streams = [open_stream(broadcaster) for _ in range(3)]
    broadcaster.publish([event(1)])
    step(broadcaster)  # stream 0 gets 1
    broadcaster.catch_up(3)  # 2 and 3 were committed by another process
    clock.advance(0)
    assert len(store.reads) == 1  # the hole is being read
    assert [frame_ids(body_of(t)[0]) for _, t in streams] == [[1]] * 3
    broadcaster.heartbeat()
    clock.advance(0)
    assert all(body_of(t)[0].endswith(b": ping\n\n") for _, t in streams)
    assert len(store.reads) == 1  # one read at a time
    store.answer()
    clock.advance(0)
    assert [frame_ids(body_of(t)[0]) for _, t in streams] == [[1, 2, 3]] * 3


def test_a_failed_hole_read_is_retried_after_a_delay_while_the_sweep_goes_on() -> None:
    clock = Clock()
    store = HeldStore([event(1), event(2)])
    broadcaster = Broadcaster(source=store, clock=clock)
    _, transport = open_stream(broadcaster)
    done = broadcaster.catch_up(2)
    clock.advance(0)
    store.fail()
    for _ in range(3):  # heartbeats keep the sweep busy; the store is not asked again yet
        broadcaster.heartbeat()
        clock.advance(0)
    assert store.reads == [] and body_of(transport)[0].count(b": ping") == 3
    clock.advance(broadcaster_module.FILL_RETRY)
    assert len(store.reads) == 1
    store.answer()
    clock.advance(0)
    assert frame_ids(body_of(transport)[0]) == [1, 2] and done.called


def test_a_large_backlog_is_split_into_bounded_rounds() -> None:
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    _, transport = open_stream(broadcaster)
    broadcaster.publish([event(i) for i in range(1, 2 * ROUND_EVENTS + 2)])
    clock.advance(0)  # runs the round and the two it schedules at once
    assert transport.writes == 3 and broadcaster.rounds == 3
    assert frame_ids(body_of(transport)[0]) == list(range(1, 2 * ROUND_EVENTS + 2))


def test_a_client_in_replay_holds_references_then_gets_them_after() -> None:
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    subscriber, transport = open_stream(broadcaster, holding=True)
    e1, e2 = event(1), event(2)
    broadcaster.publish([e1, e2])
    clock.advance(0)
    assert transport.writes == 0 and subscriber._held[0] is e1
    subscriber.send_event(e1)  # the replay read event 1 from the store
    subscriber.release()
    assert frame_ids(body_of(transport)[0]) == [1, 2]


def step(broadcaster: Broadcaster) -> None:
    """Run exactly one step of the sweep now (the one the broadcaster scheduled)."""
    assert broadcaster._call is not None
    broadcaster._call.cancel()
    broadcaster._round()


def writes_of(transport: StringTransport) -> list[list[int]]:
    """The event ids of each chunk written after the ``retry:`` chunk, one list per write."""
    raw = transport.value().split(b"\r\n\r\n", 1)[1]
    parts: list[bytes] = []
    decoder = http._ChunkedTransferDecoder(parts.append, lambda _: None)
    decoder.dataReceived(raw)
    return [frame_ids(p) for p in parts[1:]]


def test_a_step_visits_one_slice_and_lets_the_reactor_run(monkeypatch: Any) -> None:
    monkeypatch.setattr(broadcaster_module, "SLICE", 2)
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    streams = [open_stream(broadcaster) for _ in range(5)]
    broadcaster.publish([event(1)])
    step(broadcaster)
    assert [t.writes for _, t in streams] == [1, 1, 0, 0, 0]
    assert broadcaster._call is not None  # the rest in the next step, after the reactor
    clock.advance(0)
    assert [t.writes for _, t in streams] == [1, 1, 1, 1, 1]
    assert broadcaster._call is None and broadcaster._log == []


def test_an_event_committed_mid_pass_joins_the_write_of_streams_not_yet_visited(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(broadcaster_module, "SLICE", 2)
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    streams = [open_stream(broadcaster) for _ in range(5)]
    done = broadcaster.publish([event(1)])
    step(broadcaster)  # streams 0, 1 get [1]
    broadcaster.publish([event(2)])
    step(broadcaster)  # 2 and 3 get [1, 2] in one write
    assert not done.called
    clock.advance(0)  # 4 gets [1, 2]; the cursor wraps; 0 and 1 get [2]
    assert [writes_of(t) for _, t in streams] == [
        [[1], [2]],
        [[1], [2]],
        [[1, 2]],
        [[1, 2]],
        [[1, 2]],
    ]
    assert all(s.last_id == 2 for s, _ in streams)
    assert done.called and broadcaster._log == [] and broadcaster._log_bytes == 0


def test_a_stream_that_joins_mid_pass_gets_only_what_is_admitted_after(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(broadcaster_module, "SLICE", 1)
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    first = [open_stream(broadcaster) for _ in range(3)]
    broadcaster.publish([event(1)])
    step(broadcaster)
    late, late_t = open_stream(broadcaster)  # event 1 was admitted before it came
    broadcaster.publish([event(2)])
    clock.advance(0)
    assert writes_of(late_t) == [[2]]
    assert [writes_of(t) for _, t in first] == [[[1], [2]], [[1, 2]], [[1, 2]]]


def test_a_stream_that_joins_mid_pass_does_not_take_the_visit_of_one_before_the_cursor(
    monkeypatch: Any,
) -> None:
    """A pass that starts mid-list must still reach the streams before the cursor after
    the wrap when a stream joins (at the end of the list) while it runs."""
    monkeypatch.setattr(broadcaster_module, "SLICE", 1)
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    streams = [open_stream(broadcaster) for _ in range(3)]
    broadcaster.publish([event(1)])
    step(broadcaster)  # stream 0 gets 1; the cursor is on stream 1
    broadcaster.publish([event(2)])
    step(broadcaster)  # 2 is admitted mid-list: stream 1 gets [1, 2]
    late, late_t = open_stream(broadcaster)  # joins while the pass runs
    clock.advance(0)
    assert [frame_ids(body_of(t)[0]) for _, t in streams] == [[1, 2]] * 3
    assert late_t.writes == 0 and late.last_id == 2
    assert broadcaster._log == []


def test_a_pass_that_starts_mid_list_reaches_the_streams_before_the_cursor(
    monkeypatch: Any,
) -> None:
    """After a stream joins, the sweep goes idle with its cursor in the middle of the
    list; the next event must still reach the streams before the cursor after the wrap."""
    monkeypatch.setattr(broadcaster_module, "SLICE", 1)
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    streams = [open_stream(broadcaster) for _ in range(5)]
    broadcaster.publish([event(1)])
    clock.advance(0)
    streams.append(open_stream(broadcaster))
    for i in (2, 3):
        broadcaster.publish([event(i)])
        clock.advance(0)
    assert 0 < broadcaster._cursor < len(broadcaster._members)
    assert [frame_ids(body_of(t)[0]) for _, t in streams] == [[1, 2, 3]] * 5 + [[2, 3]]


def test_a_stream_that_leaves_mid_pass_is_skipped_and_forgotten(monkeypatch: Any) -> None:
    monkeypatch.setattr(broadcaster_module, "SLICE", 1)
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    streams = [open_stream(broadcaster) for _ in range(3)]
    broadcaster.publish([event(1)])
    step(broadcaster)
    gone, gone_t = streams[2]
    broadcaster.unsubscribe(gone)
    clock.advance(0)
    assert gone_t.writes == 0
    assert [t.writes for _, t in streams[:2]] == [1, 1]
    broadcaster.publish([event(2)])
    clock.advance(0)  # the cursor wraps: the list no longer holds it
    assert gone not in broadcaster._members and gone_t.writes == 0


def test_a_mass_disconnect_frees_the_members_without_waiting_for_a_wrap() -> None:
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    streams = [open_stream(broadcaster) for _ in range(200)]
    for subscriber, _ in streams[:150]:
        broadcaster.unsubscribe(subscriber)
    assert len(broadcaster._members) <= 200 - 65  # compacted along the way
    broadcaster.publish([event(1)])
    clock.advance(0)
    assert [t.writes for _, t in streams] == [0] * 150 + [1] * 50


class FailingTarget:
    """A stream whose write raises (the broadcaster drops it)."""

    def write(self, data: bytes) -> None:
        raise OSError("broken")


@pytest.mark.parametrize("how", ["overflow", "raise"])
def test_streams_dropped_during_a_visit_do_not_make_the_sweep_skip_the_others(how: str) -> None:
    """Dropping a stream inside a visit (a paused one past its cap, whose on_overflow
    unsubscribes it as EventStream does; or one whose write raises) can compact the member
    list under the visit's feet: the streams after them must still get the event."""
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    dropped: list[Subscriber] = []
    for _ in range(101):  # more than half of the streams, and more than 64: a compaction
        if how == "overflow":
            slow, _ = open_stream(broadcaster, max_buffer=100)
            slow.pauseProducing()
        else:
            slow = Subscriber(target=FailingTarget(), on_overflow=lambda s: None)
            broadcaster.subscribe(slow)
        slow.on_overflow = broadcaster.unsubscribe
        dropped.append(slow)
    healthy = [open_stream(broadcaster) for _ in range(99)]
    broadcaster.publish([event(1, serial="X" * 200)])
    clock.advance(0)
    assert all(s.closed and not s.subscribed for s in dropped)
    assert [frame_ids(body_of(t)[0]) for _, t in healthy] == [[1]] * 99
    assert broadcaster._members == [s for s, _ in healthy]


def test_a_stream_whose_write_raises_is_disconnected_not_left_open_and_silent() -> None:
    """Dropped from the sweep, it must also lose its connection: otherwise the client
    keeps an open stream that never gets another byte (no event, no ping) and never
    reconnects to replay what it missed."""
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    broken, broken_t = open_stream(broadcaster)
    healthy, healthy_t = open_stream(broadcaster)

    def fail(data: bytes) -> None:
        raise OSError("broken")

    broken_t.write = fail  # type: ignore[method-assign]
    broadcaster.publish([event(1)])
    clock.advance(0)
    assert broken.closed and broken not in broadcaster.subscribers
    assert broken_t.disconnecting  # aborted: the client sees the end and reconnects
    assert frame_ids(body_of(healthy_t)[0]) == [1] and not healthy_t.disconnecting


def test_the_heartbeat_reaches_every_stream_once_with_events_in_the_same_write(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(broadcaster_module, "SLICE", 2)
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    streams = [open_stream(broadcaster) for _ in range(4)]
    broadcaster.heartbeat()
    broadcaster.publish([event(1)])
    clock.advance(0)
    for _, transport in streams:
        assert transport.writes == 1
        body, _ = body_of(transport)
        assert frame_ids(body) == [1] and body.count(b": ping\n\n") == 1
    broadcaster.heartbeat()
    clock.advance(0)
    assert all(body_of(t)[0].count(b": ping\n\n") == 2 for _, t in streams)


def test_under_a_steady_stream_the_log_stays_bounded(monkeypatch: Any) -> None:
    """Events arrive at every step, so the sweep never goes idle: the log must still be
    trimmed at each wrap, and every stream gets every event once, in order."""
    monkeypatch.setattr(broadcaster_module, "SLICE", 3)
    clock = Clock()
    broadcaster = Broadcaster(source=NoStore(), clock=clock)
    streams = [open_stream(broadcaster) for _ in range(7)]
    largest = 0
    for i in range(1, 200):
        broadcaster.publish([event(i)])
        step(broadcaster)
        largest = max(largest, len(broadcaster._log))
    clock.advance(0)
    assert largest <= 10  # about one cycle (7 streams / 3 per step) of events
    for _, transport in streams:
        assert frame_ids(body_of(transport)[0]) == list(range(1, 200))


@settings(max_examples=150)
@given(
    slice_size=st.integers(1, 5),
    ops=st.lists(
        st.one_of(
            st.just(("publish",)),
            st.just(("step",)),
            st.just(("join",)),
            st.tuples(st.just("leave"), st.integers(0, 30)),
            st.just(("ping",)),
        ),
        max_size=60,
    ),
)
def test_every_stream_gets_every_event_after_it_joined_once_in_order(
    slice_size: int, ops: list[tuple[Any, ...]]
) -> None:
    """Any interleaving of publishes, sweep steps, joins, leaves and heartbeats: once the
    sweep is done, each open stream has exactly the events admitted after it joined."""
    original = broadcaster_module.SLICE
    broadcaster_module.SLICE = slice_size
    try:
        clock = Clock()
        broadcaster = Broadcaster(source=NoStore(), clock=clock)
        streams: list[tuple[Subscriber, CountingTransport, int]] = []
        next_id = 1
        for op in ops:
            if op[0] == "publish":
                broadcaster.publish([event(next_id)])
                next_id += 1
            elif op[0] == "step" and broadcaster._call is not None:
                step(broadcaster)
            elif op[0] == "join":
                # it gets what is admitted from now on: everything still queued, too
                first = broadcaster.last_published + 1
                subscriber, transport = open_stream(broadcaster)
                streams.append((subscriber, transport, first))
            elif op[0] == "leave" and streams:
                subscriber, _, _ = streams.pop(op[1] % len(streams))
                broadcaster.unsubscribe(subscriber)
            elif op[0] == "ping":
                broadcaster.heartbeat()
        clock.advance(0)
        assert broadcaster._log == [] and broadcaster._call is None
        for _, transport, first in streams:
            assert frame_ids(body_of(transport)[0]) == list(range(first, next_id))
    finally:
        broadcaster_module.SLICE = original


# --------------------------------------------------------------------------- real server


@pytest_twisted.ensureDeferred
async def test_terminal_reply_is_written_before_any_sse_client_gets_the_event(
    server: RunningServer,
) -> None:
    """Instrument the push listener's channel and an SSE subscriber; the order of their
    first writes is the order of the server's calls (no clock involved)."""
    order: list[str] = []
    site = server.service.push_listeners[0].factory
    build = site.buildProtocol

    def instrumented(addr: Any) -> Any:
        protocol = build(addr)
        channel = protocol._channel  # the HTTPChannel inside the protocol-switching wrapper
        write_headers = channel.writeHeaders

        def record(*args: Any) -> Any:
            order.append("reply")
            return write_headers(*args)

        channel.writeHeaders = record
        return protocol

    site.buildProtocol = instrumented  # type: ignore[method-assign]

    class Recorder:
        def write(self, data: bytes) -> None:
            if b'"type":"attendance"' in data:
                order.append("sse")

    server.service.broadcaster.subscribe(Subscriber(target=Recorder(), on_overflow=print))
    client = await SSEClient(
        f"{server.web_url}/devices/events?token={server.token}&type=attendance"
    ).connect()
    try:
        url = f"{server.push_url}/iclock/cdata?SN=ORDER1&table=ATTLOG"
        response = await treq.post(
            url, data=b"1\t2025-10-09 08:00:00\t0\t1\t0\t0\t0", pool=server.pool
        )
        assert await response.content() == b"OK: 1"
        await client.wait_for(1)
        await wait_until(lambda: "sse" in order)
        assert order == ["reply", "sse"]  # the only push request, and its one punch
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_a_writable_socket_gets_its_round_without_an_epoll_registration(
    server: RunningServer,
) -> None:
    client = await SSEClient(f"{server.web_url}/devices/events?token={server.token}").connect()
    try:
        broadcaster = server.service.broadcaster
        await wait_until(lambda: len(broadcaster.subscribers) == 1)
        (subscriber,) = broadcaster.subscribers
        transport = subscriber.target.channel.transport  # type: ignore[attr-defined]
        assert subscriber._socket is not None and subscriber.chunked
        next_id = broadcaster.last_published + 1
        broadcaster.publish([event(next_id)])
        assert broadcaster._call is not None
        broadcaster._call.cancel()
        broadcaster._round()  # run the round now, synchronously
        assert transport._tempDataLen == 0 and not transport.dataBuffer
        assert transport not in reactor.getWriters()  # type: ignore[attr-defined]
        await wait_until(lambda: next_id in client.ids)
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_an_event_swept_before_the_headers_are_flushed_goes_after_them(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream is subscribed in the call that wrote its headers, which then sit in the
    transport's buffer until the reactor flushes them: a sweep in between must queue its
    bytes behind them, not hand them to the socket first."""
    broadcaster = server.service.broadcaster
    subscribe = Broadcaster.subscribe
    swept: list[int] = []

    def subscribe_and_sweep(self: Broadcaster, subscriber: Subscriber) -> None:
        subscribe(self, subscriber)
        swept.append(broadcaster.last_published + 1)
        broadcaster.publish([event(swept[0])])
        assert broadcaster._call is not None
        broadcaster._call.cancel()
        broadcaster._round()  # now, before the reactor flushes the headers

    monkeypatch.setattr(Broadcaster, "subscribe", subscribe_and_sweep)
    port = server.service.web_listeners[0].port.getHost().port
    sock = await raw_request(
        port, f"GET /devices/events?token={server.token} HTTP/1.1\r\n\r\n".encode()
    )
    received = b""
    try:

        def got_event() -> bool:
            nonlocal received
            received += drain(sock)
            return b"id: " in received

        await wait_until(got_event)
        assert received.startswith(b"HTTP/1.1 200")
        head, body = received.split(b"\r\n\r\n", 1)
        parts: list[bytes] = []
        http._ChunkedTransferDecoder(parts.append, lambda _: None).dataReceived(body)
        assert b"".join(parts).startswith(b"retry: 3000\n\n")
        assert frame_ids(b"".join(parts)) == swept
    finally:
        sock.close()


@pytest_twisted.ensureDeferred
async def test_an_http10_stream_gets_unframed_bytes_next_to_chunked_ones(
    server: RunningServer,
) -> None:
    """An HTTP/1.0 client (no chunked encoding) and HTTP/1.1 ones with and without a
    filter, in one pass over real sockets: each gets its events once, in order, in its
    own framing."""

    chunked = await SSEClient(f"{server.web_url}/devices/events?token={server.token}").connect()
    filtered = await SSEClient(
        f"{server.web_url}/devices/events?token={server.token}&device=H10B"
    ).connect()
    received = b""
    port = server.service.web_listeners[0].port.getHost().port
    plain = await raw_request(
        port, f"GET /devices/events?token={server.token} HTTP/1.0\r\n\r\n".encode()
    )
    try:
        await wait_until(lambda: len(server.service.broadcaster.subscribers) == 3)
        for user, serial in enumerate(("H10A", "H10B", "H10A")):
            url = f"{server.push_url}/iclock/cdata?SN={serial}&table=ATTLOG"
            row = f"{user}\t2025-10-09 08:00:00\t0\t1\t0\t0\t0".encode()
            response = await treq.post(url, data=row, pool=server.pool)
            assert await response.content() == b"OK: 1"
        await chunked.wait_for(3)  # and the first punch of each terminal: device_status
        await filtered.wait_for(1)

        def read_all() -> bool:
            nonlocal received
            received += drain(plain)
            return b"\r\n\r\n" in received and frame_ids(received) == chunked.ids

        await wait_until(read_all)
        head, body = received.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.0 200") and b"chunked" not in head.lower()
        assert body.startswith(b"retry: 3000\n\n")  # no chunk size line before it
        assert b"\r\n" not in body and body.endswith(b"\n\n")
        assert len(chunked.ids) == 5 and chunked.ids == sorted(chunked.ids)
        assert [e["serial_number"] for e in chunked.events] == ["H10A"] * 2 + ["H10B"] * 2 + [
            "H10A"
        ]
        assert filtered.ids == chunked.ids[2:4]
    finally:
        plain.close()
        await chunked.close()
        await filtered.close()
