"""Pull terminal emulator: a ZKTeco time clock speaking the binary ZK protocol (port 4370).

A thin Twisted layer over :mod:`zkserver.pull.codec`.  One :class:`PullDevice` (the data and
the fault switches) is served by any number of TCP connections (:class:`PullTCPFactory`) and
UDP peers (:class:`PullUDPProtocol`); each connection or peer gets a :class:`Session`, the
shared request/reply state machine.  Unmodified pyzk 0.9 works against it (protocols.md B.6).

Real time: :meth:`PullDevice.punch` appends to the log and sends an attendance event to every
session registered for ``EF_ATTLOG``, one event per frame, the next only after the client's
ACK.  :class:`PunchGenerator` punches at a fixed rate on an injected clock.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any
from typing import Protocol as _Interface

from attrs import Factory, define, field
from attrs.validators import in_
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.internet.protocol import Factory as TwistedFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from zkserver.pull.codec import (
    ATTENDANCE_EVENT_SIZES,
    ATTENDANCE_RECORD_SIZES,
    TCP_HEADER_SIZE,
    UDP_DATA_SIZE,
    USER_RECORD_SIZES,
    Cmd,
    CodecError,
    EventCode,
    EventFlag,
    Fct,
    FrameError,
    Packet,
    PullRecord,
    Reply,
    Sizes,
    TcpDeframer,
    check_commkey,
    decode_packet,
    encode_attendance,
    encode_attendance_event,
    encode_free_sizes,
    encode_option_reply,
    encode_packet,
    encode_prepare_buffer_ack,
    encode_prepare_data,
    encode_tcp,
    encode_users,
    encode_version,
    pack_time,
    parse_option_request,
    parse_prepare_buffer,
    parse_read_chunk,
    parse_reg_event,
    unpack_time,
)
from zkserver.records import DeviceUser

__all__ = [
    "Faults",
    "PullDevice",
    "Session",
    "PullTCPProtocol",
    "PullTCPFactory",
    "PullUDPProtocol",
    "PunchGenerator",
    "make_users",
    "make_records",
    "build_device",
    "main",
]

log = Logger(namespace="zkserver.emulator.pull")

#: Datasets up to this size are answered inline (CMD_DATA) to the prepare-buffer command;
#: 1016 bytes + 8 of header fit pyzk's 1024-byte UDP receive.
INLINE_MAX = 1016


# --------------------------------------------------------------------------- device


@define
class Faults:
    """Misbehaviour switches, read on every packet (change them at any time).

    TCP only: ``bad_magic``, ``absurd_length``, ``split_frames``, ``coalesce``.
    """

    #: Answer this many chunk reads (1504), then send PREPARE_DATA and half of the next
    #: chunk's DATA and close the connection (UDP: forget the session).  None = off.
    #: Not for pyzk 0.9 over TCP: it spins forever on EOF inside a chunk.
    close_after_chunks: int | None = None
    #: Swallow every request: no reply, no event ACK handling.
    mute: bool = False
    #: Replace every outgoing frame with random bytes of the same length.
    garbage: bool = False
    #: Outgoing TCP frames carry a wrong magic.
    bad_magic: bool = False
    #: Outgoing TCP frames declare a length of 0x7FFFFFF0.
    absurd_length: bool = False
    #: Attendance events carry this event code (session field) instead of 1.  None = off.
    event_code: int | None = None
    #: Write every TCP frame in pieces of this many bytes, ``split_delay`` s apart.  0 = off.
    split_frames: int = 0
    split_delay: float = 0.01
    #: Gather the TCP frames of one reactor turn into one write, and send queued events
    #: without waiting for each ACK.
    coalesce: bool = False


@define(eq=False)
class PullDevice:
    """The emulated terminal: identity, data, clock and fault switches."""

    serial_number: str = "EMU0000001"
    firmware_version: str = "Ver 6.60 Apr 28 2017"
    platform: str = "ZMM220_TFT"
    device_name: str = "ZK Emulator"
    comm_key: int = 0
    user_size: int = field(default=72, validator=in_(USER_RECORD_SIZES))
    record_size: int = field(default=40, validator=in_(ATTENDANCE_RECORD_SIZES))
    event_size: int = field(default=36, validator=in_(ATTENDANCE_EVENT_SIZES))
    users: list[DeviceUser] = Factory(list)
    records: list[PullRecord] = Factory(list)
    #: Device clock minus host clock, in seconds (SET_TIME changes it).
    clock_offset: float = 0.0
    fingers: int = 0
    users_cap: int = 10_000
    records_cap: int = 100_000
    inline_max: int = INLINE_MAX
    #: Extra or overriding OPTIONS_RRQ answers (key -> value); see :meth:`option`.
    options: dict[str, str] = Factory(dict)
    faults: Faults = Factory(Faults)
    enabled: bool = True
    host_now: Callable[[], datetime] = datetime.now
    sessions: set[Session] = field(init=False, factory=set)
    _next_session: int = field(init=False, factory=lambda: random.randint(1, 0xFF00))
    _cache: dict[str, tuple[Any, bytes]] = field(init=False, factory=dict)
    _uid_index: tuple[int, dict[str, int | None]] = field(init=False, default=(-1, {}))

    # ----------------------------------------------------------------- clock and data

    def now(self) -> datetime:
        """The device clock (host clock + offset), to the second."""
        return (self.host_now() + timedelta(seconds=self.clock_offset)).replace(microsecond=0)

    def set_time(self, when: datetime) -> None:
        """Set the device clock (keeps an offset from the host clock)."""
        self.clock_offset = (when - self.host_now()).total_seconds()

    def sizes(self) -> Sizes:
        """GET_FREE_SIZES counts, consistent with the data."""
        users, records = len(self.users), len(self.records)
        return Sizes.of(
            users,
            self.fingers,
            records,
            users_cap=max(self.users_cap, users),
            fingers_cap=max(10_000, self.fingers),
            records_cap=max(self.records_cap, records),
        )

    def option(self, key: str) -> str | None:
        """OPTIONS_RRQ value for ``key``, None when unknown (answered ACK_ERROR)."""
        if key in self.options:
            return self.options[key]
        return {
            "~SerialNumber": self.serial_number,
            "~Platform": self.platform,
            "~DeviceName": self.device_name,
            "~ZKFPVersion": "10",
            "~OS": "1",
            "~ExtendFmt": "0",
            "~UserExtFmt": "0",
            "~PIN2Width": "9",
            "FaceFunOn": "0",
            "ZKFaceVersion": "0",
            "CompatOldFirmware": "0",
            "MAC": "00:17:61:" + ":".join(f"{b:02x}" for b in self.serial_number.encode()[-3:]),
        }.get(key)

    def users_dataset(self) -> bytes:
        """The users dataset (``<I length>`` + records), cached until the list changes."""
        key = (self.user_size, len(self.users), id(self.users[-1]) if self.users else None)
        return self._cached("users", key, lambda: encode_users(self.users, self.user_size))

    def attendance_dataset(self) -> bytes:
        """The attendance dataset, cached until the log changes."""
        key = (self.record_size, len(self.records), id(self.records[-1]) if self.records else None)
        return self._cached(
            "attendance",
            key,
            lambda: encode_attendance(self.records, self.record_size, self.users),
        )

    def _cached(self, name: str, key: Any, build: Callable[[], bytes]) -> bytes:
        hit = self._cache.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        data = build()
        self._cache[name] = (key, data)
        return data

    def uid_of(self, user_id: str) -> int | None:
        """The device slot (uid) of an enrolled user, None when not enrolled."""
        if self._uid_index[0] != len(self.users):
            self._uid_index = (len(self.users), {u.user_id: u.uid for u in self.users})
        return self._uid_index[1].get(user_id)

    def new_session_id(self) -> int:
        sid = self._next_session
        self._next_session = sid % 0xFFFE + 1
        return sid

    # ----------------------------------------------------------------- real time

    @property
    def event_flags(self) -> dict[int, EventFlag]:
        """REG_EVENT flags of every live session, by session id."""
        return {s.session_id: s.flags for s in self.sessions}

    def punch(
        self, user_id: str, state: int = 0, verify: int = 1, when: datetime | None = None
    ) -> PullRecord:
        """Record a punch and send it to every session registered for EF_ATTLOG."""
        user_id = str(user_id)
        when = when if when is not None else self.now()
        record = PullRecord(user_id, when, state, verify, self.uid_of(user_id))
        self.records.append(record)
        data = encode_attendance_event(user_id, state, verify, when, self.event_size)
        code = self.faults.event_code
        self.emit_event(EventCode.ATTLOG if code is None else code, data, EventFlag.ATTLOG)
        return record

    def emit_event(self, code: int, data: bytes, flags: int | None = None) -> None:
        """Queue a raw event (command 500, session field ``code``) for registered sessions.

        Sessions get it when their flags include any of ``flags`` (default ``code``).
        """
        want = code if flags is None else flags
        for s in list(self.sessions):
            if s.flags & want:
                s.queue_event(code, data)

    # ----------------------------------------------------------------- fault helpers

    def send_garbage(self, data: bytes | None = None) -> None:
        """Write raw bytes (random by default) to every session now."""
        for s in list(self.sessions):
            s.link.send_raw(data if data is not None else os.urandom(64))

    def disconnect_all(self) -> None:
        """Close every session's connection (UDP: forget the peers)."""
        for s in list(self.sessions):
            s.link.close()


# --------------------------------------------------------------------------- sessions


class Link(_Interface):
    """What a :class:`Session` needs from its transport."""

    def send(self, packet: Packet) -> None: ...

    def send_raw(self, data: bytes) -> None: ...

    def close(self) -> None: ...


_ALWAYS_OK = {Cmd.REFRESHDATA, Cmd.CANCELCAPTURE, Cmd.STARTVERIFY, Cmd.REFRESHOPTION}
_NO_AUTH = {Cmd.CONNECT, Cmd.AUTH, Cmd.EXIT}


class Session:
    """One client session: the request/reply state machine, independent of the transport."""

    def __init__(self, device: PullDevice, link: Link, transport: str = "tcp") -> None:
        self.device = device
        self.link = link
        self.transport = transport
        self.session_id = 0
        self.connected = False
        self.authed = False
        self.flags = EventFlag(0)
        self.buffer: bytes | None = None
        self.chunks_sent = 0
        self.closed = False
        self._events: deque[Packet] = deque()
        self._awaiting_ack = False

    # ----------------------------------------------------------------- input

    def handle(self, p: Packet) -> None:
        """Answer one client packet."""
        if self.closed or self.device.faults.mute:
            return
        cmd = p.command
        if cmd == Reply.ACK_OK:  # the client's event ACK: never answered
            self._event_acked()
            return
        if cmd == Cmd.CONNECT:
            self._connect(p)
            return
        if not self.connected or (not self.authed and cmd not in _NO_AUTH):
            self._reply(p, Reply.ACK_UNAUTH)
            return
        handler = self._handlers.get(cmd)
        if handler is None:
            if cmd in _ALWAYS_OK:
                self._reply(p, Reply.ACK_OK)
            else:
                log.debug("unknown command {cmd} from {sid}", cmd=cmd, sid=self.session_id)
                self._reply(p, Reply.ACK_UNKNOWN)
            return
        try:
            handler(self, p)
        except CodecError as e:
            log.debug("bad command {cmd}: {e}", cmd=cmd, e=e)
            self._reply(p, Reply.ACK_ERROR)

    def lost(self) -> None:
        """The transport is gone: forget the session."""
        self.closed = True
        self._events.clear()
        self.device.sessions.discard(self)

    # ----------------------------------------------------------------- output

    def _reply(self, p: Packet, code: int, data: bytes = b"") -> None:
        self.link.send(Packet(code, self.session_id, p.reply_id, data))

    def _close(self) -> None:
        self.lost()
        self.link.close()

    def queue_event(self, code: int, data: bytes) -> None:
        """Send an event now, or after the client has ACKed the previous one."""
        self._events.append(Packet(Cmd.REG_EVENT, code, 0, data))
        self._pump()

    def _pump(self) -> None:
        coalesce = self.device.faults.coalesce
        while self._events and not self.closed and (coalesce or not self._awaiting_ack):
            self._awaiting_ack = True
            self.link.send(self._events.popleft())

    def _event_acked(self) -> None:
        if self._awaiting_ack:
            self._awaiting_ack = False
            self._pump()

    # ----------------------------------------------------------------- commands

    def _connect(self, p: Packet) -> None:
        dev = self.device
        self.session_id = dev.new_session_id()
        self.connected = True
        self.authed = not dev.comm_key
        self.flags = EventFlag(0)
        self.buffer = None
        dev.sessions.add(self)
        log.info(
            "{transport} session {sid} connected{auth}",
            transport=self.transport,
            sid=self.session_id,
            auth="" if self.authed else " (auth required)",
        )
        self._reply(p, Reply.ACK_OK if self.authed else Reply.ACK_UNAUTH)

    def _auth(self, p: Packet) -> None:
        key = self.device.comm_key
        if not key or check_commkey(p.data, key, self.session_id):
            self.authed = True
            self._reply(p, Reply.ACK_OK)
        else:
            log.info("session {sid}: wrong comm key", sid=self.session_id)
            self._reply(p, Reply.ACK_UNAUTH)

    def _exit(self, p: Packet) -> None:
        self._reply(p, Reply.ACK_OK)
        log.info("session {sid} exit", sid=self.session_id)
        self._close()

    def _restart(self, p: Packet) -> None:
        self._reply(p, Reply.ACK_OK)
        log.info("session {sid}: restart", sid=self.session_id)
        self._close()

    def _enable(self, p: Packet) -> None:
        self.device.enabled = p.command == Cmd.ENABLEDEVICE
        self._reply(p, Reply.ACK_OK)

    def _version(self, p: Packet) -> None:
        self._reply(p, Reply.ACK_OK, encode_version(self.device.firmware_version))

    def _options(self, p: Packet) -> None:
        key = parse_option_request(p.data)
        value = self.device.option(key)
        if value is None:
            self._reply(p, Reply.ACK_ERROR)
        else:
            self._reply(p, Reply.ACK_OK, encode_option_reply(key, value))

    def _get_time(self, p: Packet) -> None:
        self._reply(p, Reply.ACK_OK, pack_time(self.device.now()))

    def _set_time(self, p: Packet) -> None:
        self.device.set_time(unpack_time(p.data))
        self._reply(p, Reply.ACK_OK)

    def _free_sizes(self, p: Packet) -> None:
        self._reply(p, Reply.ACK_OK, encode_free_sizes(self.device.sizes()))

    def _reg_event(self, p: Packet) -> None:
        self.flags = parse_reg_event(p.data)
        log.info("session {sid}: events {flags!r}", sid=self.session_id, flags=self.flags)
        self._reply(p, Reply.ACK_OK)

    def _clear_attlog(self, p: Packet) -> None:
        self.device.records.clear()
        self._reply(p, Reply.ACK_OK)

    def _prepare_buffer(self, p: Packet) -> None:
        dev = self.device
        command, fct, _ext = parse_prepare_buffer(p.data)
        if command == Cmd.USERTEMP_RRQ and fct == Fct.USER:
            dataset = dev.users_dataset()
        elif command == Cmd.ATTLOG_RRQ:
            dataset = dev.attendance_dataset()
        elif command == Cmd.USERTEMP_RRQ and fct == Fct.FINGERTMP:
            dataset = struct.pack("<I", 0)
        else:
            self._reply(p, Reply.ACK_ERROR)
            return
        if len(dataset) <= dev.inline_max:
            self.buffer = None
            self._reply(p, Cmd.DATA, dataset)
        else:
            self.buffer = dataset
            self.chunks_sent = 0
            self._reply(p, Reply.ACK_OK, encode_prepare_buffer_ack(len(dataset)))

    def _read_buffer(self, p: Packet) -> None:
        start, size = parse_read_chunk(p.data)
        buf = self.buffer
        if buf is None or start < 0 or size <= 0 or start >= len(buf):
            self._reply(p, Reply.ACK_ERROR)
            return
        chunk = buf[start : start + size]
        self._reply(p, Cmd.PREPARE_DATA, encode_prepare_data(len(chunk)))
        limit = self.device.faults.close_after_chunks
        if limit is not None and self.chunks_sent >= limit:
            log.info("session {sid}: fault, closing mid-transfer", sid=self.session_id)
            if self.transport == "tcp":
                self.link.send_raw(
                    encode_tcp(Packet(Cmd.DATA, self.session_id, p.reply_id, chunk))[
                        : 16 + len(chunk) // 2
                    ]
                )
            else:
                self._reply(p, Cmd.DATA, chunk[:UDP_DATA_SIZE])
            self._close()
            return
        if self.transport == "tcp":
            self._reply(p, Cmd.DATA, chunk)
        else:
            for i in range(0, len(chunk), UDP_DATA_SIZE):
                self._reply(p, Cmd.DATA, chunk[i : i + UDP_DATA_SIZE])
        self._reply(p, Reply.ACK_OK)
        self.chunks_sent += 1

    def _free_data(self, p: Packet) -> None:
        self.buffer = None
        self._reply(p, Reply.ACK_OK)

    _handlers: dict[int, Callable[[Session, Packet], None]] = {
        Cmd.AUTH: _auth,
        Cmd.EXIT: _exit,
        Cmd.RESTART: _restart,
        Cmd.ENABLEDEVICE: _enable,
        Cmd.DISABLEDEVICE: _enable,
        Cmd.GET_VERSION: _version,
        Cmd.OPTIONS_RRQ: _options,
        Cmd.GET_TIME: _get_time,
        Cmd.SET_TIME: _set_time,
        Cmd.GET_FREE_SIZES: _free_sizes,
        Cmd.REG_EVENT: _reg_event,
        Cmd.CLEAR_ATTLOG: _clear_attlog,
        Cmd.PREPARE_BUFFER: _prepare_buffer,
        Cmd.READ_BUFFER: _read_buffer,
        Cmd.FREE_DATA: _free_data,
    }


# --------------------------------------------------------------------------- TCP


def _faulty(frame: bytes, faults: Faults) -> bytes:
    if faults.garbage:
        return os.urandom(len(frame))
    if faults.bad_magic:
        frame = b"\x50\x51\x82\x7e" + frame[4:]
    if faults.absurd_length:
        frame = frame[:4] + struct.pack("<I", 0x7FFFFFF0) + frame[TCP_HEADER_SIZE:]
    return frame


class PullTCPProtocol(Protocol):
    """One TCP connection = one session; each frame is written in one ``transport.write``."""

    def __init__(self, device: PullDevice, clock: IReactorTime) -> None:
        self.device = device
        self.clock = clock
        self.session = Session(device, self, "tcp")
        self._deframer = TcpDeframer()
        self._queue: deque[bytes] = deque()
        self._flush_call: IDelayedCall | None = None
        self._close_after_flush = False
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        log.debug("TCP connection from {peer}", peer=self.transport.getPeer())
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)  # small frames (events, split pieces) leave at once

    def dataReceived(self, data: bytes) -> None:
        try:
            packets = self._deframer.feed(data)
        except FrameError as e:
            log.warn("bad frame from client, dropping: {e}", e=e)
            self.transport.abortConnection()
            return
        for p in packets:
            if self.session.closed:
                break
            self.session.handle(p)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self.session.lost()
        self.lost.callback(None)

    # Link
    def send(self, packet: Packet) -> None:
        self.send_raw(_faulty(encode_tcp(packet), self.device.faults))

    def send_raw(self, data: bytes) -> None:
        faults = self.device.faults
        n = faults.split_frames
        pieces = [data[i : i + n] for i in range(0, len(data), n)] if n > 0 else [data]
        if not (faults.coalesce or n > 0 or self._queue):
            self.transport.write(data)
            return
        self._queue.extend(pieces)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        faults = self.device.faults
        if faults.split_frames > 0:
            self.transport.write(self._queue.popleft())
        else:
            self.transport.write(b"".join(self._queue))
            self._queue.clear()
        if self._queue:
            delay = faults.split_delay if faults.split_frames > 0 else 0
            self._flush_call = self.clock.callLater(delay, self._flush)
        elif self._close_after_flush:
            self.transport.loseConnection()

    def close(self) -> None:
        if self._queue:
            self._close_after_flush = True
        else:
            self.transport.loseConnection()


class PullTCPFactory(TwistedFactory):
    """Serves one :class:`PullDevice` over TCP; tracks its connections."""

    def __init__(self, device: PullDevice, clock: IReactorTime | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        self.device = device
        self.clock = clock
        self.connections: set[PullTCPProtocol] = set()

    def buildProtocol(self, addr: Any) -> PullTCPProtocol:
        proto = PullTCPProtocol(self.device, self.clock)
        proto.factory = self
        self.connections.add(proto)
        proto.lost.addCallback(lambda _: self.connections.discard(proto))
        return proto

    def close_connections(self) -> defer.Deferred[list[Any]]:
        """Abort every connection; fires when all are gone."""
        waits = [p.lost for p in list(self.connections)]
        for p in list(self.connections):
            if p.transport is not None:
                p.transport.abortConnection()
        return defer.gatherResults(waits)


# --------------------------------------------------------------------------- UDP


@define(eq=False)
class _UdpLink:
    proto: PullUDPProtocol
    addr: tuple[str, int]

    def send(self, packet: Packet) -> None:
        data = encode_packet(packet)
        if self.proto.device.faults.garbage:
            data = os.urandom(len(data))
        self.send_raw(data)

    def send_raw(self, data: bytes) -> None:
        if self.proto.transport is not None:
            self.proto.transport.write(data, self.addr)

    def close(self) -> None:
        session = self.proto.sessions.pop(self.addr, None)
        if session is not None:
            session.lost()


class PullUDPProtocol(DatagramProtocol):
    """UDP server: one :class:`Session` per peer address."""

    def __init__(self, device: PullDevice) -> None:
        self.device = device
        self.sessions: dict[tuple[str, int], Session] = {}

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        try:
            packet = decode_packet(datagram)
        except CodecError as e:
            log.debug("bad datagram from {addr}: {e}", addr=addr, e=e)
            return
        addr = tuple(addr)
        session = self.sessions.get(addr)
        if session is None:
            session = Session(self.device, _UdpLink(self, addr), "udp")
            self.sessions[addr] = session
        session.handle(packet)
        if not session.connected and addr in self.sessions:
            del self.sessions[addr]  # don't keep state for strangers

    def stopProtocol(self) -> None:
        for session in self.sessions.values():
            session.lost()
        self.sessions.clear()


# --------------------------------------------------------------------------- generator


@define(eq=False)
class PunchGenerator:
    """Punches for random enrolled users at ``rate`` per second on ``clock``."""

    device: PullDevice
    rate: float
    clock: IReactorTime
    rng: random.Random = Factory(random.Random)
    _loop: LoopingCall | None = field(init=False, default=None)

    def start(self) -> None:
        if self._loop is not None or self.rate <= 0:
            return
        self._loop = LoopingCall.withCount(self._tick)
        self._loop.clock = self.clock
        self._loop.start(1.0 / self.rate, now=False).addErrback(
            lambda f: log.failure("punch generator stopped", f)
        )

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _tick(self, count: int) -> None:
        users = self.device.users
        if not users:
            return
        for _ in range(count):
            user = self.rng.choice(users)
            self.device.punch(user.user_id, state=self.rng.choice((0, 1)), verify=1)


# --------------------------------------------------------------------------- builders


def make_users(n: int, user_size: int = 72) -> list[DeviceUser]:
    """``n`` users with uid and numeric user id 1..n (names fit the 28-byte format)."""
    width = 8 if user_size == 28 else 24
    return [
        DeviceUser(
            user_id=str(i), name=f"User {i}"[:width], uid=i, group="1" if user_size == 28 else ""
        )
        for i in range(1, n + 1)
    ]


def make_records(
    users: Sequence[DeviceUser],
    m: int,
    start: datetime | None = None,
    step: timedelta = timedelta(minutes=1),
) -> list[PullRecord]:
    """``m`` records cycling through ``users``, ``step`` apart, ending before now."""
    if m <= 0:
        return []
    if not users:
        raise ValueError("records need at least one user")
    if start is None:
        start = (datetime.now() - step * (m + 1)).replace(microsecond=0)
    ids = [(u.user_id, u.uid) for u in users]
    k = len(ids)
    step_s = int(step.total_seconds())
    base = start
    out = []
    for i in range(m):
        user_id, uid = ids[i % k]
        out.append(PullRecord(user_id, base + timedelta(seconds=i * step_s), i % 2, 1, uid))
    return out


def build_device(users: int = 0, records: int = 0, **kwargs: Any) -> PullDevice:
    """A :class:`PullDevice` with ``users`` users and ``records`` attendance records."""
    device = PullDevice(**kwargs)
    if users:
        device.users = make_users(users, device.user_size)
    if records:
        device.records = make_records(device.users or make_users(1, device.user_size), records)
    return device


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zkserver.emulator pull", description="Emulate a ZK pull terminal."
    )
    p.add_argument("--listen", default="tcp:4370", help="Twisted endpoint (default tcp:4370)")
    p.add_argument("--udp", type=int, default=None, metavar="PORT", help="also serve UDP")
    p.add_argument("--comm-key", type=int, default=0)
    p.add_argument("--serial", default="EMU0000001")
    p.add_argument("--users", type=int, default=10)
    p.add_argument("--records", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.0, help="punches per second")
    p.add_argument("--record-size", type=int, choices=(40, 16, 8), default=40)
    p.add_argument("--user-size", type=int, choices=(72, 28), default=72)
    p.add_argument("--event-size", type=int, choices=(36, 32, 52, 12), default=36)
    p.add_argument(
        "--stdin",
        action="store_true",
        help="punch on command: each line 'USER [STATE [VERIFY]]' read from standard input "
        "makes the device punch now ('punched USER TIMESTAMP' is printed for each); "
        "'sessions' prints how many sessions receive real-time punches",
    )
    return p


class PunchCommands(LineReceiver):
    """``--stdin``: one punch per line typed (or written by a test) on standard input."""

    delimiter = b"\n"

    def __init__(self, device: PullDevice) -> None:
        self.device = device

    def lineReceived(self, line: bytes) -> None:
        fields = line.decode("utf-8", "replace").split()
        if not fields:
            return
        if fields == ["sessions"]:  # how many sessions take real-time punches now
            live = sum(1 for s in self.device.sessions if s.flags & EventFlag.ATTLOG)
            self.sendLine(f"sessions {live}".encode())
            return
        try:
            numbers = [int(f) for f in fields[1:3]]
        except ValueError:
            self.sendLine(b"error: expected 'USER [STATE [VERIFY]]'")
            return
        record = self.device.punch(fields[0], *numbers)
        stamp = record.timestamp.strftime("%Y-%m-%d %H:%M:%S")
        self.sendLine(f"punched {record.user_id} {stamp}".encode())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until interrupted; returns the exit status."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString
    from twisted.logger import globalLogBeginner, textFileLogObserver

    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    device = build_device(
        args.users,
        args.records,
        serial_number=args.serial,
        comm_key=args.comm_key,
        user_size=args.user_size,
        record_size=args.record_size,
        event_size=args.event_size,
    )
    status = [0]

    def failed(f: Failure) -> None:
        log.failure("cannot listen", f)
        status[0] = 1
        reactor.stop()  # type: ignore[attr-defined]

    endpoint = serverFromString(reactor, args.listen)
    d = endpoint.listen(PullTCPFactory(device, reactor))  # type: ignore[arg-type]
    d.addCallback(
        lambda port: log.info("pull emulator {sn} on {addr}", sn=args.serial, addr=port.getHost())
    )
    d.addErrback(failed)
    if args.udp is not None:
        try:
            reactor.listenUDP(args.udp, PullUDPProtocol(device))  # type: ignore[attr-defined]
        except CannotListenError as e:
            log.error("cannot listen on UDP {port}: {e}", port=args.udp, e=e)
            return 1
        log.info("pull emulator UDP on port {port}", port=args.udp)
    generator = PunchGenerator(device, args.rate, reactor)  # type: ignore[arg-type]
    generator.start()
    if args.stdin:
        from twisted.internet.stdio import StandardIO

        StandardIO(PunchCommands(device), reactor=reactor)
    reactor.run()  # type: ignore[attr-defined]
    return status[0]
