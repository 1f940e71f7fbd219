"""Bench-only launcher: several emulated pull terminals in one process.

``python -m zkserver.emulator pull`` serves one device per process; for hundreds of devices
this process serves ``--count`` devices (zkserver.emulator.pull.PullDevice over TCP) on
consecutive loopback ports from ``--port-base``.  It is driven over stdin/stdout:

    -> READY <first port> <count>              (once every port listens)
    <- punch <rate per s> <seconds> <tag>      punch at a steady rate, round-robin over
                                               the devices, user ids "<tag><n>" (unique)
    -> DONE <punches> <path>                   send log written: "user_id serial t_send"
    <- sessions                                -> SESSIONS <devices with a live session>
    <- quit

A punch's send time is time.perf_counter() (CLOCK_MONOTONIC, comparable across
processes on Linux) taken when the emulated device records the punch, i.e. before it is
queued to the server's session: punch -> SSE latency includes the device's own
one-event-at-a-time ACK wait, as on a real terminal.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import reactor, stdio  # noqa: E402
from twisted.internet.defer import gatherResults  # noqa: E402
from twisted.internet.endpoints import TCP4ServerEndpoint  # noqa: E402
from twisted.internet.task import LoopingCall  # noqa: E402
from twisted.protocols.basic import LineReceiver  # noqa: E402

from zkserver.emulator.pull import PullTCPFactory, build_device  # noqa: E402


class Control(LineReceiver):
    delimiter = b"\n"

    def __init__(self, farm: Farm) -> None:
        self.farm = farm

    def lineReceived(self, line: bytes) -> None:
        parts = line.decode().split()
        if not parts:
            return
        if parts[0] == "punch":
            self.farm.punch(float(parts[1]), float(parts[2]), parts[3], self)
        elif parts[0] == "sessions":
            self.say(f"SESSIONS {self.farm.live_sessions()}")
        elif parts[0] == "quit":
            reactor.stop()

    def say(self, text: str) -> None:
        self.transport.write(text.encode() + b"\n")

    def connectionLost(self, reason: object = None) -> None:
        if reactor.running:
            reactor.stop()


class Farm:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.devices = [
            build_device(
                args.users,
                args.records,
                serial_number=f"{args.serial_prefix}{i:04d}",
            )
            for i in range(args.count)
        ]
        self.factories = [PullTCPFactory(d, reactor) for d in self.devices]

    def listen(self) -> object:
        return gatherResults(
            [
                TCP4ServerEndpoint(
                    reactor, self.args.port_base + i, backlog=128, interface="127.0.0.1"
                ).listen(f)
                for i, f in enumerate(self.factories)
            ]
        )

    def live_sessions(self) -> int:
        return sum(1 for d in self.devices if any(s.flags for s in d.sessions))

    def punch(self, rate: float, seconds: float, tag: str, control: Control) -> None:
        total = int(rate * seconds)
        log: list[tuple[str, str, float]] = []
        state = {"n": 0}
        devices = self.devices

        def tick(count: int) -> None:
            for _ in range(count):
                n = state["n"]
                if n >= total:
                    if loop.running:
                        loop.stop()
                    return
                state["n"] = n + 1
                device = devices[n % len(devices)]
                user_id = f"{tag}{n}"
                log.append((user_id, device.serial_number, time.perf_counter()))
                device.punch(user_id, state=0, verify=1)

        def done(_: object) -> None:
            fd, path = tempfile.mkstemp(prefix="zkbench-pull-", suffix=".log")
            with open(fd, "w") as f:
                for user_id, serial, t in log:
                    f.write(f"{user_id} {serial} {t!r}\n")
            control.say(f"DONE {len(log)} {path}")

        loop = LoopingCall.withCount(tick)
        loop.start(1.0 / rate, now=True).addCallback(done)


def main() -> None:
    p = argparse.ArgumentParser(description="several emulated pull terminals (bench only)")
    p.add_argument("--port-base", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--serial-prefix", default="BENCHPULL")
    p.add_argument("--users", type=int, default=10)
    p.add_argument("--records", type=int, default=0)
    args = p.parse_args()
    farm = Farm(args)
    control = Control(farm)
    stdio.StandardIO(control)

    def ready(_: object) -> None:
        control.say(f"READY {args.port_base} {args.count}")

    def failed(f: object) -> None:
        control.say(f"FAILED {f}")
        reactor.stop()

    farm.listen().addCallbacks(ready, failed)
    reactor.run()


if __name__ == "__main__":
    main()
