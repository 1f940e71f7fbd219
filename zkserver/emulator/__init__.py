"""Device emulators: a push (iclock HTTP) terminal and a pull (ZK binary) terminal.

Used by tests, benchmarks and demos: ``python -m zkserver.emulator push|pull --help``.
"""
