"""The ZK client session in memory: StringTransport + Clock, a scripted device behind it."""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from zkserver.pull import codec
from zkserver.pull.codec import (
    AttendanceEvent,
    Cmd,
    Packet,
    PullRecord,
    Reply,
    Sizes,
    TcpDeframer,
)
from zkserver.pull.protocol import (
    AuthenticationFailed,
    CommandFailed,
    DatasetUnreadable,
    ProtocolError,
    RequestTimeout,
    SessionClosed,
    ZKClientProtocol,
    ZKDatagramProtocol,
    failure_detail,
)
from zkserver.records import DeviceUser

SESSION = 0x4D2


def result_of(d: Deferred[Any]) -> Any:
    """The result of an already-fired Deferred (raises its failure)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def records(n: int) -> list[PullRecord]:
    return [
        PullRecord(
            str(1000 + i % 7),
            datetime(2025, 10, 9, 8, 0, i % 60).replace(minute=i // 60 % 60, hour=8 + i // 3600),
            i % 2,
            15,
            uid=i % 7 + 1,
        )
        for i in range(n)
    ]


class FakeDevice:
    """Answers client packets like a terminal (reply ids echoed, chunked bulk reads)."""

    def __init__(
        self,
        *,
        comm_key: int = 0,
        log: list[PullRecord] | None = None,
        users: list[DeviceUser] | None = None,
        record_size: int = 40,
        udp: bool = False,
    ) -> None:
        self.comm_key = comm_key
        self.log = log or []
        self.users = users or []
        self.record_size = record_size
        self.udp = udp
        self.received: list[Packet] = []
        self.buffer = b""
        self.time = datetime(2025, 10, 9, 18, 30, 45)
        self.extra: dict[int, Callable[[Packet], list[Packet]]] = {}

    def reply(self, p: Packet, command: int, data: bytes = b"", session: int = SESSION) -> Packet:
        return Packet(command, session, p.reply_id, data)

    def handle(self, p: Packet) -> list[Packet]:
        self.received.append(p)
        if p.command in self.extra:
            return self.extra[p.command](p)
        c = p.command
        if c == Cmd.CONNECT:
            return [self.reply(p, Reply.ACK_UNAUTH if self.comm_key else Reply.ACK_OK)]
        if c == Cmd.AUTH:
            ok = codec.check_commkey(p.data, self.comm_key, SESSION)
            return [self.reply(p, Reply.ACK_OK if ok else Reply.ACK_UNAUTH)]
        if c == Cmd.GET_FREE_SIZES:
            sizes = Sizes.of(len(self.users), 0, len(self.log))
            return [self.reply(p, Reply.ACK_OK, codec.encode_free_sizes(sizes))]
        if c == Cmd.PREPARE_BUFFER:
            command, _fct, _ext = codec.parse_prepare_buffer(p.data)
            if command == Cmd.ATTLOG_RRQ:
                self.buffer = codec.encode_attendance(self.log, self.record_size, self.users)
            else:
                self.buffer = codec.encode_users(self.users, 72)
            return [self.reply(p, Reply.ACK_OK, codec.encode_prepare_buffer_ack(len(self.buffer)))]
        if c == Cmd.READ_BUFFER:
            start, size = codec.parse_read_chunk(p.data)
            chunk = self.buffer[start : start + size]
            pieces = (
                [chunk[i : i + 1024] for i in range(0, len(chunk), 1024)] if self.udp else [chunk]
            )
            return [
                self.reply(p, Cmd.PREPARE_DATA, codec.encode_prepare_data(len(chunk))),
                *(self.reply(p, Cmd.DATA, piece) for piece in pieces),
                self.reply(p, Reply.ACK_OK),
            ]
        if c == Cmd.GET_TIME:
            return [self.reply(p, Reply.ACK_OK, codec.pack_time(self.time))]
        if c == Cmd.SET_TIME:
            self.time = codec.unpack_time(p.data)
            return [self.reply(p, Reply.ACK_OK)]
        if c == Cmd.OPTIONS_RRQ:
            return [self.reply(p, Reply.ACK_OK, codec.encode_option_reply("~SerialNumber", "ZK1"))]
        if c == Cmd.GET_VERSION:
            return [self.reply(p, Reply.ACK_OK, codec.encode_version("Ver 6.60 Apr 28 2017"))]
        if c in (Cmd.REG_EVENT, Cmd.FREE_DATA, Cmd.EXIT):
            return [self.reply(p, Reply.ACK_OK)]
        if c == Reply.ACK_OK:  # the client's ACK of an event
            return []
        return [self.reply(p, Reply.ACK_UNKNOWN)]


class Wire:
    """A ZKClientProtocol on a StringTransport and a FakeDevice answering it."""

    def __init__(self, device: FakeDevice | None = None, timeout: float = 5.0) -> None:
        self.clock = Clock()
        self.device = device or FakeDevice()
        self.events: list[AttendanceEvent] = []
        self.proto = ZKClientProtocol(
            self.clock, timeout=timeout, on_event=self.events.append, peer="dev:4370"
        )
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.sent = TcpDeframer()
        self.sent_packets: list[Packet] = []

    def take(self) -> list[Packet]:
        """Packets the client wrote since the last call."""
        out = self.sent.feed(self.transport.value())
        self.transport.clear()
        self.sent_packets += out
        return out

    def feed(self, *packets: Packet, split: int | None = None) -> None:
        data = b"".join(codec.encode_tcp(p) for p in packets)
        if split is None:
            self.proto.dataReceived(data)
        else:
            for i in range(0, len(data), split):
                self.proto.dataReceived(data[i : i + split])

    def pump(self, split: int | None = None, coalesce: bool = True) -> None:
        """Let the device answer until the client is quiet."""
        for _ in range(10_000):
            packets = self.take()
            if not packets:
                return
            replies = [r for p in packets for r in self.device.handle(p)]
            if coalesce:
                self.feed(*replies, split=split)
            else:
                for r in replies:
                    self.feed(r, split=split)
        raise AssertionError("client never went quiet")


# --------------------------------------------------------------------------- handshake


def test_connect_without_key_sends_pyzk_bytes() -> None:
    w = Wire()
    d = w.proto.connect(0)
    raw = w.transport.value()
    # magic, length 8, CMD_CONNECT, checksum, session 0, reply id 0 (pyzk's first id)
    assert raw[:8] == codec.TCP_MAGIC + struct.pack("<I", 8)
    command, csum, session, reply_id = struct.unpack("<4H", raw[8:16])
    assert (command, session, reply_id) == (Cmd.CONNECT, 0, 0)
    assert csum == codec.checksum(struct.pack("<4H", Cmd.CONNECT, 0, 0, 0))
    w.pump()
    assert result_of(d) is None
    assert w.proto.session_id == SESSION and w.proto.authenticated
    w.proto.read_time()
    (p,) = w.take()
    assert (p.command, p.session_id, p.reply_id) == (Cmd.GET_TIME, SESSION, 1)


def test_auth_with_comm_key() -> None:
    w = Wire(FakeDevice(comm_key=123456))
    d = w.proto.connect(123456)
    w.pump()
    assert result_of(d) is None
    connect, auth = w.sent_packets
    assert auth.command == Cmd.AUTH and auth.session_id == SESSION and auth.reply_id == 1
    assert auth.data == codec.make_commkey(123456, SESSION)


def test_wrong_comm_key_raises_authentication_failed() -> None:
    w = Wire(FakeDevice(comm_key=123456))
    d = w.proto.connect(654321)
    w.pump()
    with pytest.raises(AuthenticationFailed):
        result_of(d)
    assert [p.command for p in w.sent_packets] == [Cmd.CONNECT, Cmd.AUTH]


def test_connect_error_reply() -> None:
    w = Wire()
    w.device.extra[Cmd.CONNECT] = lambda p: [Packet(Reply.ACK_ERROR, 0, p.reply_id)]
    d = w.proto.connect(0)
    w.pump()
    with pytest.raises(CommandFailed):
        result_of(d)


# --------------------------------------------------------------------------- requests


def test_one_request_in_flight_and_reply_ids_matched() -> None:
    w = Wire()
    w.proto.connect(0)
    w.pump()
    d1 = w.proto.read_time()
    d2 = w.proto.read_firmware()
    (p1,) = w.take()  # the second waits for the first reply
    assert p1.command == Cmd.GET_TIME and w.take() == []
    # a stale reply (wrong id) is ignored
    w.feed(Packet(Reply.ACK_OK, SESSION, p1.reply_id + 7, codec.pack_time(datetime(2001, 1, 1))))
    assert not d1.called
    w.feed(*w.device.handle(p1))
    assert result_of(d1) == datetime(2025, 10, 9, 18, 30, 45)
    (p2,) = w.take()
    assert p2.command == Cmd.GET_VERSION and p2.reply_id == p1.reply_id + 1
    w.feed(*w.device.handle(p2))
    assert result_of(d2) == "Ver 6.60 Apr 28 2017"


def test_identity_sizes_time_and_events_registration() -> None:
    w = Wire(FakeDevice(log=records(3)))
    w.proto.connect(0)
    ds = [
        w.proto.read_serial_number(),
        w.proto.read_firmware(),
        w.proto.read_sizes(),
        w.proto.set_time(datetime(2024, 2, 29, 23, 59, 58)),
        w.proto.read_time(),
        w.proto.register_events(),
    ]
    w.pump()
    serial, firmware, sizes, _none, now, _reg = [result_of(d) for d in ds]
    assert (serial, firmware, sizes.records) == ("ZK1", "Ver 6.60 Apr 28 2017", 3)
    assert now == datetime(2024, 2, 29, 23, 59, 58)
    reg = w.sent_packets[-1]
    assert reg.command == Cmd.REG_EVENT and reg.data == struct.pack("<I", 1)


def test_error_reply_fails_only_that_request() -> None:
    w = Wire()
    w.proto.connect(0)
    w.device.extra[Cmd.GET_TIME] = lambda p: [Packet(Reply.ACK_ERROR, SESSION, p.reply_id)]
    d = w.proto.read_time()
    d2 = w.proto.read_firmware()
    w.pump()
    with pytest.raises(CommandFailed):
        result_of(d)
    assert result_of(d2).startswith("Ver")
    assert not w.proto.closed


@pytest.mark.parametrize("record_size", [8, 16, 40])
@pytest.mark.parametrize("split", [None, 1, 7, 1000])
def test_read_attendance_chunked(record_size: int, split: int | None) -> None:
    users = [DeviceUser(str(1000 + i), f"U{i}", uid=i + 1) for i in range(7)]
    log = records(9000)  # 40 * 9000 bytes > 5 TCP chunks
    w = Wire(FakeDevice(log=log, users=users, record_size=record_size))
    w.proto.connect(0)
    d = w.proto.read_attendance()
    w.pump(split=split)
    got = result_of(d)
    assert [(r.user_id, r.timestamp, r.state, r.verify_method) for r in got] == [
        (r.user_id, r.timestamp, r.state, r.verify_method) for r in log
    ]
    reads = [p for p in w.sent_packets if p.command == Cmd.READ_BUFFER]
    total = 4 + record_size * len(log)
    plan = codec.chunk_plan(total)
    assert [codec.parse_read_chunk(p.data) for p in reads][: len(plan)] == plan
    assert w.sent_packets[-1].command == Cmd.FREE_DATA
    # 8-byte records carry only the uid: the users are read to map it to a user id
    assert (record_size == 8) == (len(reads) > len(plan))


def test_read_attendance_empty_log_reads_no_buffer() -> None:
    w = Wire()
    w.proto.connect(0)
    d = w.proto.read_attendance()
    w.pump()
    assert result_of(d) == []
    assert Cmd.PREPARE_BUFFER not in [p.command for p in w.sent_packets]


def test_read_users_inline_data() -> None:
    users = [DeviceUser("1001", "Ann", uid=1), DeviceUser("1002", "Bo", uid=2)]
    dev = FakeDevice(users=users)
    dev.extra[Cmd.PREPARE_BUFFER] = lambda p: [
        Packet(Cmd.DATA, SESSION, p.reply_id, codec.encode_users(users, 72))
    ]
    w = Wire(dev)
    w.proto.connect(0)
    d = w.proto.read_users()
    w.pump()
    assert [(u.user_id, u.name, u.uid) for u in result_of(d)] == [
        ("1001", "Ann", 1),
        ("1002", "Bo", 2),
    ]


def test_operations_do_not_interleave() -> None:
    """A probe issued during a bulk read waits until the read (and FREE_DATA) is done."""
    w = Wire(FakeDevice(log=records(20000)))
    w.proto.connect(0)
    w.pump()
    d = w.proto.read_attendance()
    first = w.take()
    probe = w.proto.read_time()
    w.feed(*[r for p in first for r in w.device.handle(p)])
    w.pump()
    commands = [p.command for p in w.sent_packets]
    assert commands[-1] == Cmd.GET_TIME and commands[-2] == Cmd.FREE_DATA
    assert len(result_of(d)) == 20000 and result_of(probe)


# --------------------------------------------------------------------------- events


def _event(user: str = "1001", size: int = 36) -> Packet:
    data = codec.encode_attendance_event(user, 1, 15, datetime(2025, 10, 9, 18, 30, 45), size)
    return Packet(Cmd.REG_EVENT, codec.EventCode.ATTLOG, 0, data)


def test_event_between_requests_is_acked_and_delivered() -> None:
    w = Wire()
    w.proto.connect(0)
    w.pump()
    w.feed(_event("1001"), _event("1002", 12), split=5)
    acks = w.take()
    assert [(a.command, a.session_id) for a in acks] == [(Reply.ACK_OK, SESSION)] * 2
    assert [(e.user_id, e.state, e.verify_method) for e in w.events] == [
        ("1001", 1, 15),
        ("1002", 1, 15),
    ]


def test_event_inside_a_request_and_inside_a_chunk() -> None:
    w = Wire(FakeDevice(log=records(100)))
    w.proto.connect(0)
    w.pump()
    d = w.proto.read_time()
    (p,) = w.take()
    # the event arrives in the same read as the reply, before it
    w.feed(_event("7"), *w.device.handle(p), split=3)
    assert result_of(d) == w.device.time
    assert [e.user_id for e in w.events] == ["7"]
    assert [a.command for a in w.take()] == [Reply.ACK_OK]
    # and between PREPARE_DATA and DATA of a chunk
    d = w.proto.read_attendance()
    for _ in range(20):
        packets = w.take()
        if not packets:
            break
        for q in packets:
            replies = w.device.handle(q)
            if q.command == Cmd.READ_BUFFER:
                replies.insert(1, _event("8"))
            w.feed(*replies)
    assert len(result_of(d)) == 100
    assert [e.user_id for e in w.events] == ["7", "8"]


def test_other_and_undecodable_events_are_skipped() -> None:
    w = Wire()
    w.proto.connect(0)
    w.pump()
    w.feed(
        Packet(Cmd.REG_EVENT, codec.EventCode.BUTTON, 0, b"\x01\x02"),
        Packet(Cmd.REG_EVENT, codec.EventCode.ATTLOG, 0, b"\x00" * 5),
        _event("9"),
    )
    assert len(w.take()) == 3  # every event is ACKed
    assert [e.user_id for e in w.events] == ["9"]
    assert not w.proto.closed


def test_event_handler_failure_does_not_break_the_session() -> None:
    w = Wire()
    w.proto.on_event = lambda e: 1 / 0
    w.proto.connect(0)
    w.pump()
    w.feed(_event())
    d = w.proto.read_time()
    w.pump()
    assert result_of(d)


# --------------------------------------------------------------------------- failures


def test_timeout_fails_everything_and_closes() -> None:
    w = Wire(timeout=5.0)
    closed = w.proto.notify_closed()
    d1 = w.proto.read_time()
    d2 = w.proto.read_firmware()
    w.clock.advance(4.9)
    assert not d1.called
    w.clock.advance(0.2)
    for d in (d1, d2):
        with pytest.raises(RequestTimeout):
            result_of(d)
    assert w.transport.disconnecting
    assert isinstance(result_of(closed), RequestTimeout)
    with pytest.raises(RequestTimeout):
        result_of(w.proto.read_time())  # later requests fail at once
    assert not w.clock.getDelayedCalls()


def test_each_reply_packet_restarts_the_timer() -> None:
    w = Wire(timeout=5.0)
    d = w.proto.request(Cmd.READ_BUFFER, codec.encode_read_chunk(0, 2048), multi=True)
    (p,) = w.take()
    w.clock.advance(4)
    w.feed(Packet(Cmd.PREPARE_DATA, SESSION, p.reply_id, codec.encode_prepare_data(2048)))
    w.clock.advance(4)
    w.feed(Packet(Cmd.DATA, SESSION, p.reply_id, b"x" * 2048))
    w.clock.advance(4)
    w.feed(Packet(Reply.ACK_OK, SESSION, p.reply_id))
    assert [q.command for q in result_of(d)] == [Cmd.PREPARE_DATA, Cmd.DATA, Reply.ACK_OK]
    assert not w.clock.getDelayedCalls()


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # wrong magic
        b"\x50\x50\x82\x7e" + struct.pack("<I", 8) + b"\x00" * 8,  # wrong magic
        codec.TCP_MAGIC + struct.pack("<I", 0x7FFFFFFF),  # absurd length
        codec.TCP_MAGIC + struct.pack("<I", 3) + b"abc",  # shorter than a header
    ],
)
def test_bad_framing_fails_pending_and_closes(garbage: bytes) -> None:
    w = Wire()
    closed = w.proto.notify_closed()
    d = w.proto.read_time()
    w.proto.dataReceived(garbage[:3])
    assert not d.called
    w.proto.dataReceived(garbage[3:])
    with pytest.raises(ProtocolError):
        result_of(d)
    assert w.transport.disconnected  # aborted
    assert isinstance(result_of(closed), ProtocolError)
    w.proto.dataReceived(codec.encode_tcp(Packet(Reply.ACK_OK, SESSION, 0)))  # ignored
    assert not w.clock.getDelayedCalls()


def test_connection_lost_fails_pending() -> None:
    w = Wire()
    d = w.proto.read_time()
    w.proto.connectionLost(Failure(ConnectionResetError("reset")))
    with pytest.raises(SessionClosed):
        result_of(d)
    assert not w.clock.getDelayedCalls()


def test_disconnect_sends_exit_then_closes() -> None:
    w = Wire()
    w.proto.connect(0)
    w.pump()
    d = w.proto.disconnect()
    (p,) = w.take()
    assert p.command == Cmd.EXIT and not w.transport.disconnecting
    w.feed(*w.device.handle(p))
    assert result_of(d) is None and w.transport.disconnecting


# --------------------------------------------------------------------------- UDP


class FakeUDPTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.connected_to: tuple[str, int] | None = None
        self.stopped = False

    def connect(self, host: str, port: int) -> None:
        self.connected_to = (host, port)

    def write(self, data: bytes, addr: Any = None) -> None:
        self.written.append(data)

    def stopListening(self) -> None:  # noqa: N802
        self.stopped = True


def test_udp_session_reads_chunked_attendance_and_events() -> None:
    clock = Clock()
    events: list[AttendanceEvent] = []
    proto = ZKDatagramProtocol(clock, "10.0.0.5", 4370, on_event=events.append)
    transport = FakeUDPTransport()
    proto.transport = transport
    proto.startProtocol()
    assert transport.connected_to == ("10.0.0.5", 4370)
    device = FakeDevice(log=records(2000), udp=True, comm_key=7)

    def pump() -> None:
        while transport.written:
            out, transport.written = transport.written, []
            for raw in out:
                for r in device.handle(codec.decode_packet(raw)):
                    proto.datagramReceived(codec.encode_packet(r), ("10.0.0.5", 4370))

    d = proto.connect(7)
    pump()
    result_of(d)
    d = proto.read_attendance()
    pump()
    assert len(result_of(d)) == 2000
    reads = [p for p in device.received if p.command == Cmd.READ_BUFFER]
    assert all(codec.parse_read_chunk(p.data)[1] <= codec.UDP_MAX_CHUNK for p in reads)
    assert len(reads) == len(codec.chunk_plan(4 + 40 * 2000, codec.UDP_MAX_CHUNK))
    proto.datagramReceived(codec.encode_packet(_event("5")), ("10.0.0.5", 4370))
    assert [e.user_id for e in events] == ["5"]
    assert codec.decode_packet(transport.written[-1]).command == Reply.ACK_OK
    # a datagram that is not a packet closes the session
    d = proto.read_time()
    proto.datagramReceived(b"xx", ("10.0.0.5", 4370))
    with pytest.raises(ProtocolError):
        result_of(d)
    assert transport.stopped and proto.closed


# --------------------------------------------------------------------------- any firmware's sizes


@pytest.mark.parametrize("record_size", [9, 12, 20, 24, 36, 41, 44, 48, 49, 56, 64, 72, 100])
@pytest.mark.parametrize("udp", [False, True])
def test_read_attendance_any_record_size(record_size: int, udp: bool) -> None:
    """docs/protocols.md §B.8: size = length / count; records over several chunks."""
    users = [DeviceUser(str(1000 + i), f"U{i}", uid=i + 1) for i in range(7)]
    log = records(3000 if not udp else 500)
    dev = FakeDevice(log=log, users=users, record_size=record_size, udp=udp)
    w = Wire(dev)
    if udp:
        w.proto.max_chunk = codec.UDP_MAX_CHUNK
    w.proto.connect(0)
    d = w.proto.read_attendance_dataset()
    w.pump()
    got = result_of(d)
    assert got.record_size == record_size and got.unreadable == []
    assert [(r.user_id, r.timestamp, r.state, r.verify_method) for r in got.records] == [
        (r.user_id, r.timestamp, r.state, r.verify_method) for r in log
    ]
    assert w.proto.attendance_record_size == record_size


def test_read_attendance_count_moved_during_the_read() -> None:
    """GET_FREE_SIZES said 2, the dataset holds 3 (a punch in between): the count is read
    again after the dataset and fits."""
    log = records(3)
    dev = FakeDevice(log=log, record_size=49)
    calls: list[int] = []

    def sizes(p: Packet) -> list[Packet]:
        calls.append(1)
        count = len(log) - 1 if len(calls) == 1 else len(log)
        raw = codec.encode_free_sizes(Sizes.of(0, 0, count))
        return [dev.reply(p, Reply.ACK_OK, raw)]

    dev.extra[Cmd.GET_FREE_SIZES] = sizes
    w = Wire(dev)
    w.proto.connect(0)
    d = w.proto.read_attendance()
    w.pump()
    assert [r.user_id for r in result_of(d)] == [r.user_id for r in log]
    assert len(calls) == 2


def test_unreadable_dataset_raises_and_the_session_goes_on() -> None:
    body = bytes(146)  # 3 records announced; 146 bytes fit no record size
    dev = FakeDevice(log=records(3))
    dev.extra[Cmd.PREPARE_BUFFER] = lambda p: [
        dev.reply(p, Cmd.DATA, struct.pack("<I", len(body)) + body)
    ]
    w = Wire(dev)
    w.proto.connect(0)
    d = w.proto.read_attendance()
    w.pump()
    with pytest.raises(DatasetUnreadable) as info:
        result_of(d)
    assert info.value.what == "attendance"
    assert info.value.dataset == struct.pack("<I", 146) + body
    assert "146 bytes is not 3 records" in info.value.reason
    assert failure_detail(info.value).startswith("dataset unreadable: attendance dataset of 146")
    assert not w.proto.closed
    d = w.proto.read_time()
    w.pump()
    assert result_of(d) == dev.time


def test_read_users_any_record_size() -> None:
    users = [DeviceUser("7001", "Ann", uid=1), DeviceUser("7002", "Bo", uid=2)]
    dev = FakeDevice(users=users)
    dev.extra[Cmd.PREPARE_BUFFER] = lambda p: [
        dev.reply(p, Cmd.DATA, codec.encode_users(users, 80))
    ]
    w = Wire(dev)
    w.proto.connect(0)
    d = w.proto.read_users()
    w.pump()
    got = [(u.user_id, u.name, u.uid) for u in result_of(d)]
    assert got == [("7001", "Ann", 1), ("7002", "Bo", 2)]
    assert w.proto.user_record_size == 80


@pytest.mark.parametrize("size", [10, 12, 13, 14, 16, 20, 32, 33, 36, 37, 40, 44, 49, 52, 60])
def test_events_of_any_size(size: int) -> None:
    w = Wire()
    w.proto.connect(0)
    w.pump()
    w.feed(_event("1001", size), _event("1002", size), split=3)
    assert [a.command for a in w.take()] == [Reply.ACK_OK] * 2
    assert [(e.user_id, e.state, e.verify_method) for e in w.events] == [
        ("1001", 1, 15),
        ("1002", 1, 15),
    ]


def test_undecodable_events_go_to_the_unreadable_handler() -> None:
    w = Wire()
    bad: list[tuple[int, bytes, str]] = []
    w.proto.on_unreadable_event = lambda code, data, reason: bad.append((code, data, reason))
    w.proto.connect(0)
    w.pump()
    w.feed(Packet(Cmd.REG_EVENT, codec.EventCode.ATTLOG, 0, b"\x00" * 5), _event("9"))
    assert len(w.take()) == 2
    assert [e.user_id for e in w.events] == ["9"]
    assert bad == [(1, b"\x00" * 5, "attendance event of 5 bytes is shorter than 10 bytes")]


# --------------------------------------------------------------------------- failure details


def test_failure_details() -> None:
    from twisted.internet import error as net_error

    def closed(cause: BaseException, **attrs: Any) -> SessionClosed:
        e = SessionClosed("x")
        e.__cause__ = cause
        for k, v in attrs.items():
            setattr(e, k, v)
        return e

    cases = [
        (CommandFailed(Cmd.CONNECT, 6001), "CONNECT answered 6001"),
        (CommandFailed(Cmd.REG_EVENT, Reply.ACK_ERROR), "REG_EVENT answered 2001 (ACK_ERROR)"),
        (CommandFailed(4321, Reply.ACK_UNKNOWN), "command 4321 answered 65535 (ACK_UNKNOWN)"),
        (AuthenticationFailed("dev refused the comm key"), "wrong comm key"),
        (RequestTimeout("no reply", 10.0), "timed out after 10 s"),
        (RequestTimeout("no reply", 0.5), "timed out after 0.5 s"),
        (closed(net_error.ConnectionRefusedError()), "connection refused"),
        (closed(net_error.TimeoutError(), seconds=10.0), "timed out after 10 s"),
        (closed(net_error.TCPTimedOutError(), seconds=3), "timed out after 3 s"),
        (closed(net_error.NoRouteError()), "host unreachable"),
        (closed(net_error.ConnectError(113, "No route to host")), "host unreachable"),
        (closed(net_error.DNSLookupError("x")), "host name not found"),
        (closed(net_error.ConnectionLost()), "connection reset by the device"),
        (closed(net_error.ConnectionDone()), "connection closed by the device"),
        (SessionClosed("gone"), "connection lost"),
        (ProtocolError("dev:4370: bad TCP magic 50518", "bad TCP magic 50518"),
         "broken frame: bad TCP magic 50518"),
        (DatasetUnreadable("users", b"", "user dataset of 3 bytes fits no known record size"),
         "dataset unreadable: user dataset of 3 bytes fits no known record size"),
        (ValueError("odd"), "odd"),
    ]  # fmt: skip
    for error, detail in cases:
        assert failure_detail(error) == detail, error


def test_session_errors_keep_their_cause_for_the_detail() -> None:
    w = Wire()
    closed = w.proto.notify_closed()
    from twisted.internet import error as net_error

    w.proto.connectionLost(Failure(net_error.ConnectionLost("reset")))
    reason = result_of(closed)
    assert isinstance(reason, SessionClosed)
    assert failure_detail(reason) == "connection reset by the device"


def test_broken_frame_detail() -> None:
    w = Wire()
    closed = w.proto.notify_closed()
    d = w.proto.connect(0)
    w.proto.dataReceived(b"\x50\x51\x82\x7e" + bytes(12))
    with pytest.raises(ProtocolError):
        result_of(d)
    assert failure_detail(result_of(closed)) == "broken frame: bad TCP magic 5051827e"


def test_timeout_detail() -> None:
    w = Wire(timeout=10.0)
    closed = w.proto.notify_closed()
    d = w.proto.connect(0)
    w.clock.advance(10.0)
    with pytest.raises(RequestTimeout):
        result_of(d)
    assert failure_detail(result_of(closed)) == "timed out after 10 s"
