"""sd_notify over a real AF_UNIX datagram socket, and READY=1 from a real server start."""

from __future__ import annotations

import os
import socket

import pytest_twisted

from tests.harness import start_server
from zkserver.systemd import notify


def test_notify_sends_the_state_to_the_socket(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        assert notify("READY=1", {"NOTIFY_SOCKET": path})
        assert sock.recv(100) == b"READY=1"


def test_notify_is_a_no_op_outside_systemd():
    assert notify("READY=1", {}) is False


def test_notify_reports_an_unreachable_socket_without_raising(tmp_path):
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "missing")}) is False


@pytest_twisted.ensureDeferred
async def test_server_says_ready_once_the_database_is_migrated(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    monkeypatch.setitem(os.environ, "NOTIFY_SOCKET", path)
    running = await start_server(f"sqlite:{tmp_path}/db.sqlite3", str(tmp_path / "d"))
    try:
        assert sock.recv(100).startswith(b"READY=1")
    finally:
        await running.stop()
        assert sock.recv(100) == b"STOPPING=1"
        sock.close()
