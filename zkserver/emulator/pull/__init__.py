"""Pull terminal emulator: a ZKTeco time clock speaking the binary ZK protocol (port 4370).

A thin Twisted layer over :mod:`zkserver.pull.codec`.  One :class:`PullDevice` (the data and
the fault switches) is served by any number of TCP connections (:class:`PullTCPFactory`) and
UDP peers (:class:`PullUDPProtocol`); each connection or peer gets a :class:`Session`, the
shared request/reply state machine.  Unmodified pyzk 0.9 works against it (docs/protocols.md §B.6).

Real time: :meth:`PullDevice.punch` appends to the log and sends an attendance event to every
session registered for ``EF_ATTLOG``, one event per frame, the next only after the client's
ACK.  :class:`PunchGenerator` punches at a fixed rate on an injected clock.
"""

from zkserver.emulator.pull.cli import PunchCommands, main
from zkserver.emulator.pull.device import (
    INLINE_MAX,
    Faults,
    PullDevice,
    PunchGenerator,
    build_device,
    make_records,
    make_users,
)
from zkserver.emulator.pull.session import Link, Session
from zkserver.emulator.pull.transport import PullTCPFactory, PullTCPProtocol, PullUDPProtocol

__all__ = [
    "INLINE_MAX",
    "Faults",
    "Link",
    "PullDevice",
    "PullTCPFactory",
    "PullTCPProtocol",
    "PullUDPProtocol",
    "PunchCommands",
    "PunchGenerator",
    "Session",
    "build_device",
    "main",
    "make_records",
    "make_users",
]
