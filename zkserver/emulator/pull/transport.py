"""The emulated terminal's listeners: TCP (framed, with transport faults) and UDP."""

from __future__ import annotations

import os
import struct
from collections import deque
from typing import Any

from attrs import define
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.internet.protocol import Factory as TwistedFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from zkserver.emulator.pull.device import Faults, PullDevice
from zkserver.emulator.pull.session import Session
from zkserver.pull.codec import (
    TCP_HEADER_SIZE,
    CodecError,
    FrameError,
    Packet,
    TcpDeframer,
    decode_packet,
    encode_packet,
    encode_tcp,
)

__all__ = ["PullTCPFactory", "PullTCPProtocol", "PullUDPProtocol"]

log = Logger(namespace="zkserver.emulator.pull")

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

    transport: ITCPTransport  # (set by connectionMade: every method runs after it)

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
            from twisted.internet import reactor

            clock = reactor
        self.device = device
        self.clock = clock
        if device.clock is None:
            device.clock = clock  # for the restart delay
        self.connections: set[PullTCPProtocol] = set()

    def buildProtocol(self, addr: Any) -> PullTCPProtocol | None:
        if self.device.rebooting:
            return None  # restarting: the connection is closed at once
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
        if self.device.rebooting:
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
