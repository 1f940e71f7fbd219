"""The broadcaster's rounds: the terminal is answered first, one write per client per round,
coalescing in id order, shared bytes, valid HTTP chunk framing, the send(2) fast path."""

from __future__ import annotations

from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web import http, resource, server

from tests.harness import RunningServer, SSEClient, wait_until
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
    channel = http.HTTPChannel()
    channel.site = server.Site(resource.Resource())
    transport = CountingTransport()
    channel.makeConnection(transport)
    request = server.Request(channel, False)
    channel.requests.append(request)
    request.method = b"GET"
    request.clientproto = b"HTTP/1.1"
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
