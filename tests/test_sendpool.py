"""The send pool: a step's socket sends on the reactor thread and helper threads, fork-join.

Unit tests over real socket pairs (no reactor), then a real server whose sweep sends to
150 loopback streams through two helpers, including one stream whose socket takes only
part of a write (the rest must go through its transport, in order)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
import treq
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.harness import drain, raw_request, start_server, wait_until
from zkserver.sendpool import MIN_SHARE, SendPool
from zkserver.tap import Options, _send_threads


def helper_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("zkserver-send-")]


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made: list[tuple[socket.socket, socket.socket]] = []
    for _ in range(4 * MIN_SHARE):
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        made.append((a, b))
    yield made
    for a, b in made:
        a.close()
        b.close()


@pytest.fixture
def pool() -> Iterator[SendPool]:
    made = SendPool(2)
    yield made
    made.stop()


def test_each_socket_gets_its_own_bytes_across_threads(
    pool: SendPool, pairs: list[tuple[socket.socket, socket.socket]]
) -> None:
    assert helper_threads() == []  # started at the first step that needs them
    datas = [b"event %d\n" % i for i in range(len(pairs))]
    sent = pool.send_all([a for a, _ in pairs], datas)
    assert sent == [len(d) for d in datas]
    assert [drain(b) for _, b in pairs] == datas
    assert pool.batches == 1 and len(helper_threads()) == 2


def test_a_small_step_stays_on_the_calling_thread(
    pool: SendPool, pairs: list[tuple[socket.socket, socket.socket]]
) -> None:
    few = pairs[: 2 * MIN_SHARE - 1]  # not enough for two shares
    sent = pool.send_all([a for a, _ in few], [b"x"] * len(few))
    assert sent == [1] * len(few)
    assert pool.batches == 0 and helper_threads() == []


def test_a_helper_that_never_gets_a_core_does_not_hold_up_the_step(
    pool: SendPool, pairs: list[tuple[socket.socket, socket.socket]]
) -> None:
    """The caller claims sends itself until none is left: it never waits for a helper to
    start (on a busy machine a woken thread may not run for milliseconds)."""

    class NeverWakes:
        def __init__(self) -> None:
            self.asked = 0

        def release(self, n: int = 1) -> None:
            self.asked += n

    socks = [a for a, _ in pairs]
    pool.send_all(socks, [b"-"] * len(socks))  # the helpers start, then wait for a wake-up
    assert [drain(b) for _, b in pairs] == [b"-"] * len(socks)
    sleepy = NeverWakes()
    pool._wake, real = sleepy, pool._wake  # type: ignore[assignment]
    try:
        datas = [b"%d" % i for i in range(len(pairs))]
        assert pool.send_all(socks, datas) == [len(d) for d in datas]
        assert sleepy.asked == 2  # both helpers were asked, neither came
        assert [drain(b) for _, b in pairs] == datas
    finally:
        pool._wake = real


def test_a_full_socket_takes_part_and_a_broken_one_nothing_without_raising(
    pool: SendPool, pairs: list[tuple[socket.socket, socket.socket]]
) -> None:
    socks = [a for a, _ in pairs]
    full, broken = socks[MIN_SHARE + 3], socks[-2]  # in the helpers' shares
    big = b"y" * (1 << 16)
    while True:  # fill one socket's buffers up to a partial write
        try:
            if full.send(big) < len(big):
                break
        except BlockingIOError:
            break
    pairs[-2][1].close()  # the peer is gone: EPIPE
    sent = pool.send_all(socks, [big] * len(socks))
    assert sent[socks.index(full)] < len(big)
    assert sent[socks.index(broken)] == 0
    assert sent.count(len(big)) >= len(socks) - 2


def test_after_stop_the_threads_end_and_sends_go_inline(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    pool = SendPool(1)
    socks = [a for a, _ in pairs]
    pool.send_all(socks, [b"a"] * len(socks))
    (thread,) = helper_threads()
    pool.stop()
    assert not thread.is_alive()
    assert pool.send_all(socks, [b"b"] * len(socks)) == [1] * len(socks)
    assert helper_threads() == []
    assert [drain(b) for _, b in pairs] == [b"ab"] * len(socks)


def test_negative_helpers_are_refused() -> None:
    with pytest.raises(ValueError, match="helpers must be >= 0"):
        SendPool(-1)


@settings(max_examples=25)
@given(count=st.integers(0, 4 * MIN_SHARE), helpers=st.integers(0, 3))
def test_every_byte_goes_to_its_socket_once(count: int, helpers: int) -> None:
    made = [socket.socketpair() for _ in range(count)]
    pool = SendPool(helpers)
    try:
        for a, b in made:
            a.setblocking(False)
            b.setblocking(False)
        datas = [bytes([i % 251]) * (i + 1) for i in range(count)]
        sent = pool.send_all([a for a, _ in made], datas)
        assert sent == [len(d) for d in datas]
        assert [drain(b) for _, b in made] == datas
    finally:
        pool.stop()
        for a, b in made:
            a.close()
            b.close()


@pytest.mark.parametrize(
    ("given_value", "workers", "cores", "expected"),
    [("-1", 1, 1, 0), ("-1", 1, 2, 1), ("-1", 1, 16, 3), ("-1", 2, 2, 0), ("2", 1, 1, 2)],
)
def test_send_threads_default_is_one_fewer_than_the_cores_per_process(
    monkeypatch: pytest.MonkeyPatch, given_value: str, workers: int, cores: int, expected: int
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)))
    options = Options()
    options["send-threads"] = given_value
    options["workers"] = workers
    assert _send_threads(options) == expected


# --------------------------------------------------------------------------- real server


def ids_in(raw: bytes) -> list[int]:
    return [int(line[4:]) for line in raw.split(b"\n") if line.startswith(b"id: ")]


@pytest_twisted.ensureDeferred
async def test_a_sweep_over_helper_threads_gives_every_stream_every_event_once_in_order(
    db_url: str, tmp_path: Any
) -> None:
    server = await start_server(
        db_url, str(tmp_path / "data"), "--auto-approve", "--send-threads", "2"
    )
    streams: list[socket.socket] = []
    received: dict[int, bytes] = {}
    try:
        broadcaster = server.service.broadcaster
        port = server.service.web_listeners[0].port.getHost().port
        request = (
            f"GET /devices/events?token={server.token}&type=attendance HTTP/1.1\r\n"
            "Host: 127.0.0.1\r\n\r\n"
        ).encode()
        streams = [await raw_request(port, request) for _ in range(150)]
        await wait_until(lambda: len(broadcaster.subscribers) == len(streams))
        # One stream's server-side socket buffer is made tiny and its client reads nothing
        # until the end: the sweep's send takes part of a batch write, the transport the rest.
        slow = streams[100]
        slow_port = slow.getsockname()[1]
        (slow_subscriber,) = [
            s for s in broadcaster.subscribers if s._socket.getpeername()[1] == slow_port
        ]
        slow_subscriber._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        batches = broadcaster.sender.batches
        for k in range(3):
            rows = "\n".join(
                f"{k * 100 + i}\t2025-10-09 08:{i // 60:02d}:{i % 60:02d}\t0\t1\t0\t0\t0"
                for i in range(100)
            )
            response = await treq.post(
                f"{server.push_url}/iclock/cdata?SN=POOL1&table=ATTLOG",
                data=rows.encode(),
                pool=server.pool,
            )
            assert await response.content() == b"OK: 100"

        def has_all(indexes: list[int]) -> bool:
            for i in indexes:
                received[i] = received.get(i, b"") + drain(streams[i])
            return all(len(ids_in(received[i])) >= 300 for i in indexes)

        others = [i for i in range(len(streams)) if i != 100]
        await wait_until(lambda: has_all(others))
        await wait_until(lambda: has_all([100]))  # the slow one reads only now
        first = ids_in(received[0])
        assert len(first) == 300 and first == sorted(set(first))
        for i in range(len(streams)):
            assert ids_in(received[i]) == first, i
        assert broadcaster.sender.batches > batches  # the helpers took shares
        assert len(helper_threads()) == 2
    finally:
        for sock in streams:
            sock.close()
        await server.stop()
    assert helper_threads() == []


def test_a_helper_that_cannot_be_started_leaves_the_sends_to_the_caller(
    monkeypatch: pytest.MonkeyPatch,
    pool: SendPool,
    pairs: list[tuple[socket.socket, socket.socket]],
    log_events: list[dict[str, Any]],
) -> None:
    """No thread to be had (RLIMIT_NPROC, a cgroup's pids.max): the step is still sent,
    by the caller. Raising instead would end the sweep's step after it had marked these
    streams as having the events, so they would never get them."""

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    socks = [a for a, _ in pairs]
    datas = [b"%d" % i for i in range(len(pairs))]
    assert pool.send_all(socks, datas) == [len(d) for d in datas]
    assert [drain(b) for _, b in pairs] == datas
    assert pool.helpers == 0 and helper_threads() == []
    assert any("helper thread" in str(e.get("log_format", "")) for e in log_events)
    assert pool.send_all(socks, datas) == [len(d) for d in datas]  # later steps too
