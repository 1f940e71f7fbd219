"""``python -m zkserver.emulator pull``: serve one emulated terminal until interrupted."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorUDP
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from zkserver.emulator.pull.device import PullDevice, PunchGenerator, build_device
from zkserver.emulator.pull.transport import PullTCPFactory, PullUDPProtocol
from zkserver.pull.codec import (
    EventFlag,
)

__all__ = ["PunchCommands", "main"]

log = Logger(namespace="zkserver.emulator.pull")

# --------------------------------------------------------------------------- CLI


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse


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
    p.add_argument(
        "--record-size",
        type=_at_least(8),
        default=40,
        metavar="N",
        help="bytes per attendance record: 8, 16, 40 or any size >= 8 (e.g. 49) (default 40)",
    )
    p.add_argument(
        "--user-size",
        type=_at_least(28),
        default=72,
        metavar="N",
        help="bytes per user record: 28, 72 or any size >= 28 (default 72)",
    )
    p.add_argument(
        "--event-size",
        type=_at_least(10),
        default=36,
        metavar="N",
        help="bytes per real-time event: 10, 12, 14, 32, 36, 37, 52 or any size >= 10 (default 36)",
    )
    p.add_argument(
        "--restart-delay",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="after RESTART, refuse connections this long (default 5)",
    )
    p.add_argument(
        "--stdin",
        action="store_true",
        help="punch on command: each line 'USER [STATE [VERIFY]]' read from standard input "
        "makes the device punch now ('punched USER TIMESTAMP' is printed for each); "
        "'sessions' prints how many sessions receive real-time punches; 'alarm' raises a "
        "tamper alarm (EF_ALARM)",
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
        if fields == ["alarm"]:  # an EF_ALARM event (tamper) for the registered sessions
            self.device.alarm()
            self.sendLine(b"alarm")
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
        state = numbers[0] if numbers else 0
        verify = numbers[1] if len(numbers) > 1 else 1
        record = self.device.punch(fields[0], state, verify)
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
        restart_delay=args.restart_delay,
        clock=reactor,
    )
    status = [0]

    def failed(f: Failure) -> None:
        log.failure("cannot listen", f)
        status[0] = 1
        reactor.stop()

    endpoint = serverFromString(reactor, args.listen)
    d = endpoint.listen(PullTCPFactory(device, reactor))
    d.addCallback(
        lambda port: log.info("pull emulator {sn} on {addr}", sn=args.serial, addr=port.getHost())
    )
    d.addErrback(failed)
    if args.udp is not None:
        try:
            IReactorUDP(reactor).listenUDP(args.udp, PullUDPProtocol(device), "", 8192)
        except CannotListenError as e:
            log.error("cannot listen on UDP {port}: {e}", port=args.udp, e=e)
            return 1
        log.info("pull emulator UDP on port {port}", port=args.udp)
    generator = PunchGenerator(device, args.rate, reactor)
    generator.start()
    if args.stdin:
        from twisted.internet.stdio import StandardIO

        StandardIO(PunchCommands(device), reactor=reactor)
    reactor.run()
    return status[0]
