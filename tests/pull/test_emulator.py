"""The pull terminal emulator against unmodified pyzk 0.9 (and a raw client for the faults).

pyzk blocks, so it runs in a thread (``deferToThread``) while the emulator runs on the reactor;
every server listens on 127.0.0.1 port 0 and is stopped (connections closed) in teardown.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import pytest_twisted
from attrs import define, field
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from zk import ZK
from zk.exception import ZKErrorResponse

from zkserver.emulator.pull import (
    PullDevice,
    PullTCPFactory,
    PullUDPProtocol,
    PunchGenerator,
    build_device,
    make_records,
    make_users,
)
from zkserver.pull import codec
from zkserver.pull.codec import Cmd, EventFlag, FrameError, Packet, Reply, TcpDeframer

HOST = "127.0.0.1"


@define
class Served:
    device: PullDevice
    factory: PullTCPFactory
    tcp: Any
    udp: Any
    clients: list[RawClient] = field(factory=list)

    @property
    def tcp_port(self) -> int:
        return self.tcp.getHost().port

    @property
    def udp_port(self) -> int:
        return self.udp.getHost().port

    def zk(self, udp: bool = False, password: int = 0) -> ZK:
        port = self.udp_port if udp else self.tcp_port
        return ZK(HOST, port, timeout=5, password=password, force_udp=udp, ommit_ping=True)

    async def raw(self) -> RawClient:
        client = RawClient()
        await connectProtocol(TCP4ClientEndpoint(reactor, HOST, self.tcp_port), client)
        self.clients.append(client)
        return client

    async def stop(self) -> None:
        for c in self.clients:
            if not c.closed.called:
                c.transport.abortConnection()
            await c.closed
        await self.tcp.stopListening()
        await self.factory.close_connections()
        await self.udp.stopListening()


@pytest_twisted.async_yield_fixture
async def serve():
    started: list[Served] = []

    def start(device: PullDevice) -> Served:
        factory = PullTCPFactory(device, reactor)
        tcp = reactor.listenTCP(0, factory, interface=HOST)
        udp = reactor.listenUDP(0, PullUDPProtocol(device), interface=HOST)
        started.append(Served(device, factory, tcp, udp))
        return started[-1]

    yield start
    for s in started:
        await s.stop()


async def until(cond: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await deferLater(reactor, 0.01, lambda: None)


def in_thread(fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
    return deferToThread(fn, *args)


TRANSPORTS = pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])


# --------------------------------------------------------------------------- pyzk: session


@TRANSPORTS
@pytest_twisted.ensureDeferred
async def test_identity_without_key(serve, udp: bool) -> None:
    s = serve(PullDevice(serial_number="SN123", firmware_version="Ver 6.60 Test", platform="P1"))

    def session() -> tuple[str, ...]:
        conn = s.zk(udp).connect()
        out = (
            conn.get_firmware_version(),
            conn.get_serialnumber(),
            conn.get_platform(),
            conn.get_device_name(),
            str(conn.get_fp_version()),
            str(conn.get_extend_fmt()),
        )
        conn.enable_device()
        conn.disable_device()
        conn.refresh_data()
        assert conn.cancel_capture()
        conn.disconnect()
        return out

    assert await in_thread(session) == ("Ver 6.60 Test", "SN123", "P1", "ZK Emulator", "10", "0")
    await until(lambda: not s.device.sessions)


@TRANSPORTS
@pytest_twisted.ensureDeferred
async def test_comm_key(serve, udp: bool) -> None:
    s = serve(PullDevice(comm_key=123456))

    def good() -> str:
        conn = s.zk(udp, password=123456).connect()
        sn = conn.get_serialnumber()
        conn.disconnect()
        return sn

    def refused(password: int) -> str:
        with pytest.raises(ZKErrorResponse) as e:
            s.zk(udp, password=password).connect()
        return str(e.value)

    assert await in_thread(good) == "EMU0000001"
    assert await in_thread(refused, 654321) == "Unauthenticated"
    assert await in_thread(refused, 0) == "Unauthenticated"


@TRANSPORTS
@pytest_twisted.ensureDeferred
async def test_time(serve, udp: bool) -> None:
    s = serve(PullDevice())
    target = datetime(2031, 5, 6, 7, 8, 9)

    def session() -> tuple[datetime, datetime]:
        conn = s.zk(udp).connect()
        before = conn.get_time()
        conn.set_time(target)
        after = conn.get_time()
        conn.disconnect()
        return before, after

    before, after = await in_thread(session)
    assert abs(before - datetime.now()) < timedelta(seconds=5)
    assert target <= after <= target + timedelta(seconds=5)
    assert abs(s.device.now() - target) < timedelta(seconds=5)


# --------------------------------------------------------------------------- pyzk: data


@TRANSPORTS
@pytest.mark.parametrize("user_size", [72, 28])
@pytest_twisted.ensureDeferred
async def test_sizes_and_users(serve, udp: bool, user_size: int) -> None:
    # 300 users: over the inline limit, so the read goes through 1504 chunks
    s = serve(build_device(users=300, records=25, user_size=user_size))

    def session() -> tuple[tuple[int, int], list[Any]]:
        conn = s.zk(udp).connect()
        conn.read_sizes()
        counts = (conn.users, conn.records)
        users = conn.get_users()
        conn.disconnect()
        return counts, users

    counts, users = await in_thread(session)
    assert counts == (300, 25)
    assert [(u.uid, u.user_id, u.name) for u in users] == [
        (u.uid, u.user_id, u.name) for u in s.device.users
    ]


@TRANSPORTS
@pytest_twisted.ensureDeferred
async def test_small_dataset_inline(serve, udp: bool) -> None:
    s = serve(build_device(users=3, records=5, user_size=28, record_size=16))

    def session() -> tuple[list[Any], list[Any]]:
        conn = s.zk(udp).connect()
        users, records = conn.get_users(), conn.get_attendance()
        conn.disconnect()
        return users, records

    users, records = await in_thread(session)
    assert [u.user_id for u in users] == ["1", "2", "3"]
    assert [(r.user_id, r.timestamp) for r in records] == [
        (r.user_id, r.timestamp) for r in s.device.records
    ]


def _attendance(s: Served, udp: bool) -> list[Any]:
    conn = s.zk(udp).connect()
    records = conn.get_attendance()
    conn.disconnect()
    return records


@pytest.mark.parametrize("record_size", [40, 16, 8])
@pytest_twisted.ensureDeferred
async def test_attendance_10000_tcp(serve, record_size: int) -> None:
    s = serve(build_device(users=50, records=10_000, record_size=record_size))
    records = await in_thread(_attendance, s, False)
    assert len(records) == 10_000
    want = s.device.records
    got = [(r.user_id, r.timestamp, r.punch, r.status) for r in records]
    assert got == [(r.user_id, r.timestamp, r.state, r.verify_method) for r in want]


@pytest_twisted.ensureDeferred
async def test_attendance_udp(serve) -> None:
    s = serve(build_device(users=20, records=2_000))
    records = await in_thread(_attendance, s, True)
    assert [(r.user_id, r.timestamp) for r in records] == [
        (r.user_id, r.timestamp) for r in s.device.records
    ]


@pytest_twisted.ensureDeferred
async def test_clear_attendance(serve) -> None:
    s = serve(build_device(users=2, records=10))

    def session() -> int:
        conn = s.zk().connect()
        conn.clear_attendance()
        conn.read_sizes()
        conn.disconnect()
        return conn.records

    assert await in_thread(session) == 0
    assert s.device.records == []


# --------------------------------------------------------------------------- pyzk: live


def _live(s: Served, udp: bool, n: int, deadline: float) -> list[Any]:
    conn = s.zk(udp).connect()
    got: list[Any] = []
    for att in conn.live_capture(new_timeout=1):
        if att is None:
            if time.monotonic() > deadline:
                conn.end_live_capture = True
            continue
        got.append(att)
        if len(got) == n:
            conn.end_live_capture = True
    conn.disconnect()
    return got


async def _live_capture(serve: Any, event_size: int, transports: list[bool]) -> None:
    s = serve(build_device(users=5, event_size=event_size))
    n = 4
    deadline = time.monotonic() + 15
    captures = [in_thread(_live, s, udp, n, deadline) for udp in transports]
    await until(
        lambda: (
            sum(bool(f & EventFlag.ATTLOG) for f in s.device.event_flags.values())
            == len(transports)
        )
    )
    when = datetime(2030, 1, 2, 3, 4, 5)
    punches = [
        s.device.punch(str(i % 5 + 1), state=i % 2, verify=15, when=when + timedelta(minutes=i))
        for i in range(n)  # all at once: the emulator sends each after the previous ACK
    ]
    for got in await defer.gatherResults(captures):
        assert [(a.user_id, a.timestamp, a.punch, a.status) for a in got] == [
            (p.user_id, p.timestamp, p.state, p.verify_method) for p in punches
        ]
    assert len(s.device.records) == n


@pytest_twisted.ensureDeferred
async def test_live_capture_tcp_and_udp_concurrently(serve) -> None:
    await _live_capture(serve, 36, [False, True])


@pytest.mark.parametrize("event_size", [32, 52, 12])
@pytest_twisted.ensureDeferred
async def test_live_capture_event_sizes(serve, event_size: int) -> None:
    await _live_capture(serve, event_size, [False])


# --------------------------------------------------------------------------- generator


def test_punch_generator_on_clock() -> None:
    device = build_device(users=3)
    clock = Clock()
    gen = PunchGenerator(device, rate=4, clock=clock)
    gen.start()
    clock.advance(0.25)
    assert len(device.records) == 1
    clock.advance(1.0)  # a late tick catches up
    assert len(device.records) == 5
    gen.stop()
    clock.advance(10)
    assert len(device.records) == 5
    assert {r.user_id for r in device.records} <= {"1", "2", "3"}
    assert all(r.uid == int(r.user_id) for r in device.records)


def test_build_100k_records() -> None:
    device = build_device(users=1000, records=100_000, record_size=40)
    data = device.attendance_dataset()
    assert len(data) == 4 + 40 * 100_000
    assert device.attendance_dataset() is data  # cached until the log changes
    device.punch("7")
    assert len(device.attendance_dataset()) == 4 + 40 * 100_001
    assert device.sizes().records == 100_001


def test_builders() -> None:
    users = make_users(3, 28)
    assert [(u.uid, u.user_id) for u in users] == [(1, "1"), (2, "2"), (3, "3")]
    recs = make_records(users, 4, start=datetime(2030, 1, 1))
    assert [r.user_id for r in recs] == ["1", "2", "3", "1"]
    assert recs[1].timestamp == datetime(2030, 1, 1, 0, 1)


# --------------------------------------------------------------------------- raw client


class RawClient(Protocol):
    """Collects what the emulator writes, keeping each dataReceived chunk."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.reply_id = 0

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)

    @property
    def raw(self) -> bytes:
        return b"".join(self.chunks)

    def packets(self) -> list[Packet]:
        return TcpDeframer().feed(self.raw)

    def send(self, command: int, data: bytes = b"", session_id: int = 0) -> int:
        self.reply_id += 1
        self.transport.write(codec.encode_tcp(Packet(command, session_id, self.reply_id, data)))
        return self.reply_id

    async def ask(self, command: int, data: bytes = b"", session_id: int = 0) -> Packet:
        n = len(self.packets())
        rid = self.send(command, data, session_id)
        await until(lambda: len(self.packets()) > n, 3)
        reply = self.packets()[n]
        assert reply.reply_id == rid
        return reply


async def _connected(s: Served) -> tuple[RawClient, int]:
    c = await s.raw()
    reply = await c.ask(Cmd.CONNECT)
    assert reply.command == Reply.ACK_OK
    return c, reply.session_id


@pytest_twisted.ensureDeferred
async def test_raw_unknown_command_and_client_ack(serve) -> None:
    s = serve(PullDevice())
    c, sid = await _connected(s)
    assert (await c.ask(4321, session_id=sid)).command == Reply.ACK_UNKNOWN
    n = len(c.packets())
    c.send(Reply.ACK_OK, session_id=sid)  # never answered
    reply = await c.ask(Cmd.GET_TIME, session_id=sid)
    assert len(c.packets()) == n + 1 and reply.command == Reply.ACK_OK
    assert (await c.ask(Cmd.OPTIONS_RRQ, b"~NoSuchOption\x00", sid)).command == Reply.ACK_ERROR
    assert (await c.ask(Cmd.EXIT, session_id=sid)).command == Reply.ACK_OK
    await c.closed


@pytest_twisted.ensureDeferred
async def test_raw_auth_required_before_data(serve) -> None:
    s = serve(PullDevice(comm_key=99))
    c = await s.raw()
    reply = await c.ask(Cmd.CONNECT)
    sid = reply.session_id
    assert reply.command == Reply.ACK_UNAUTH and sid
    assert (await c.ask(Cmd.GET_TIME, session_id=sid)).command == Reply.ACK_UNAUTH
    auth = await c.ask(Cmd.AUTH, codec.make_commkey(99, sid), sid)
    assert auth.command == Reply.ACK_OK
    assert (await c.ask(Cmd.GET_TIME, session_id=sid)).command == Reply.ACK_OK


@pytest_twisted.ensureDeferred
async def test_tcp_probe_connection_is_accepted(serve) -> None:
    s = serve(PullDevice())
    probe = await s.raw()
    probe.transport.loseConnection()
    await probe.closed
    c, _sid = await _connected(s)
    assert len(s.factory.connections) == 1


@pytest.mark.parametrize("fault", ["bad_magic", "absurd_length", "garbage"])
@pytest_twisted.ensureDeferred
async def test_fault_corrupt_frames(serve, fault: str) -> None:
    s = serve(PullDevice())
    c, sid = await _connected(s)
    setattr(s.device.faults, fault, True)
    before = len(c.raw)
    c.send(Cmd.GET_TIME, session_id=sid)
    await until(lambda: len(c.raw) >= before + 20)
    with pytest.raises(FrameError):
        TcpDeframer().feed(c.raw[before:])


@pytest_twisted.ensureDeferred
async def test_fault_send_garbage_and_mute(serve) -> None:
    s = serve(PullDevice())
    c, sid = await _connected(s)
    s.device.send_garbage(b"\xde\xad\xbe\xef")
    await until(lambda: c.raw.endswith(b"\xde\xad\xbe\xef"))
    s.device.faults.mute = True
    before = len(c.raw)
    c.send(Cmd.GET_TIME, session_id=sid)
    await deferLater(reactor, 0.3, lambda: None)
    assert len(c.raw) == before


@pytest_twisted.ensureDeferred
async def test_fault_close_mid_transfer(serve) -> None:
    # raw client: pyzk 0.9 spins forever on EOF inside a chunk (recv() == b"" in a loop)
    s = serve(build_device(users=10, records=5_000))  # 200 kB: 4 chunks of 0xFFC0
    s.device.faults.close_after_chunks = 1
    c, sid = await _connected(s)
    ready = await c.ask(Cmd.PREPARE_BUFFER, codec.encode_prepare_buffer(Cmd.ATTLOG_RRQ), sid)
    size = codec.parse_prepare_buffer_reply(ready).size
    assert size == 4 + 40 * 5_000
    n = len(c.packets())
    c.send(Cmd.READ_BUFFER, codec.encode_read_chunk(0, codec.TCP_MAX_CHUNK), sid)
    await until(lambda: len(c.packets()) == n + 3)  # PREPARE_DATA, DATA, ACK_OK
    assert [p.command for p in c.packets()[n:]] == [Cmd.PREPARE_DATA, Cmd.DATA, Reply.ACK_OK]
    c.send(Cmd.READ_BUFFER, codec.encode_read_chunk(codec.TCP_MAX_CHUNK, codec.TCP_MAX_CHUNK), sid)
    await c.closed
    deframer = TcpDeframer()
    assert deframer.feed(c.raw)[-1].command == Cmd.PREPARE_DATA
    assert deframer.buffered > 0  # the DATA frame was cut short
    await until(lambda: not s.device.sessions)


@pytest_twisted.ensureDeferred
async def test_fault_split_frames(serve) -> None:
    s = serve(PullDevice(serial_number="SPLIT"))
    c, sid = await _connected(s)
    s.device.faults.split_frames = 5
    s.device.faults.split_delay = 0.005
    start = len(c.chunks)
    reply = await c.ask(Cmd.OPTIONS_RRQ, b"~SerialNumber\x00", sid)
    assert codec.parse_option_reply(reply.data) == ("~SerialNumber", "SPLIT")
    assert len(c.chunks) - start > 3


async def _registered(s: Served) -> tuple[RawClient, int]:
    c, sid = await _connected(s)
    assert (await c.ask(Cmd.REG_EVENT, codec.encode_reg_event(1), sid)).command == Reply.ACK_OK
    return c, sid


@pytest_twisted.ensureDeferred
async def test_events_wait_for_ack(serve) -> None:
    s = serve(build_device(users=3))
    c, sid = await _registered(s)
    n = len(c.packets())
    s.device.punch("1")
    s.device.punch("2", state=1)
    await until(lambda: len(c.packets()) == n + 1)
    await deferLater(reactor, 0.1, lambda: None)
    assert len(c.packets()) == n + 1  # the second waits for the ACK
    event = c.packets()[n]
    assert (event.command, event.session_id, event.reply_id) == (500, 1, 0)
    assert codec.parse_event(event.session_id, event.data).user_id == "1"
    c.send(Reply.ACK_OK, session_id=sid)
    await until(lambda: len(c.packets()) == n + 2)
    assert codec.parse_event(1, c.packets()[-1].data).user_id == "2"


@pytest_twisted.ensureDeferred
async def test_fault_coalesce_and_event_code(serve) -> None:
    s = serve(build_device(users=3))
    c, _sid = await _registered(s)
    s.device.faults.coalesce = True
    s.device.faults.event_code = 77
    start = len(c.chunks)
    for uid in ("1", "2", "3"):
        s.device.punch(uid)
    await until(lambda: len(c.chunks) > start)
    events = TcpDeframer().feed(c.chunks[start])
    assert len(events) == 3  # three frames in one write, no ACK awaited
    assert {e.session_id for e in events} == {77}
    assert isinstance(codec.parse_event(77, events[0].data), codec.OtherEvent)


# --------------------------------------------------------------------------- CLI


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _cli_session(port: int) -> tuple[str, int]:
    code = "import sys; from zkserver.emulator.pull import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "--listen", f"tcp:{port}:interface={HOST}"]
    argv += ["--serial", "CLI42", "--comm-key", "5", "--users", "7", "--records", "30"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        conn = ZK(HOST, port, timeout=5, password=5, ommit_ping=True).connect()
        sn = conn.get_serialnumber()
        records = len(conn.get_attendance())
        conn.disconnect()
        return sn, records
    finally:
        proc.terminate()
        proc.wait(10)


@pytest_twisted.ensureDeferred
async def test_cli(serve) -> None:
    assert await in_thread(_cli_session, _free_port()) == ("CLI42", 30)


def test_stdin_commands_make_the_device_punch():
    from twisted.internet.testing import StringTransport

    from zkserver.emulator.pull import PunchCommands

    device = build_device(users=2)
    commands = PunchCommands(device)
    transport = StringTransport()
    commands.makeConnection(transport)
    commands.dataReceived(b"1001 1 15\nnot-a-number x\n\nsessions\n")
    record = device.records[-1]
    assert (record.user_id, record.state, record.verify_method) == ("1001", 1, 15)
    lines = transport.value().decode().splitlines()
    assert lines[0] == f"punched 1001 {record.timestamp:%Y-%m-%d %H:%M:%S}"
    assert lines[1].startswith("error:")
    assert lines[2] == "sessions 0"
    assert len(device.records) == 1
