"""Device emulators: a push (iclock HTTP) terminal and a pull (ZK binary) terminal.

Used by tests, benchmarks and demos: ``python -m zkserver.emulator push|pull --help``.
"""

from zkserver.emulator.pull import PullDevice, PullTCPFactory, PullUDPProtocol, build_device
from zkserver.emulator.push import PushTerminal

__all__ = ["PullDevice", "PullTCPFactory", "PullUDPProtocol", "PushTerminal", "build_device"]
