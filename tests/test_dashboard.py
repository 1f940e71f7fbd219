"""The logged dashboard URL names the host and port really bound, for every endpoint form,
and the token is logged only by the start that generates it (``zkserver token`` shows it)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.logger import formatEvent, globalLogPublisher

import twisted
from tests.harness import start_server
from zkserver.tap import dashboard_url

REPO = Path(__file__).resolve().parents[1]
PEM = Path(twisted.__file__).parent / "test" / "server.pem"


@pytest.mark.parametrize(
    "endpoint, address, url",
    [
        ("tcp:0", IPv4Address("TCP", "0.0.0.0", 41234), "http://127.0.0.1:41234/"),
        ("tcp:5000", IPv4Address("TCP", "0.0.0.0", 5000), "http://127.0.0.1:5000/"),
        (
            "tcp:port=5000:interface=192.0.2.7",
            IPv4Address("TCP", "192.0.2.7", 5000),
            "http://192.0.2.7:5000/",
        ),
        ("tcp6:port=0:interface=\\:\\:1", IPv6Address("TCP", "::1", 5001), "http://[::1]:5001/"),
        ("tcp6:5002", IPv6Address("TCP", "::", 5002), "http://[::1]:5002/"),
        (
            "ssl:8443:privateKey=k.pem:certKey=c.pem",
            IPv4Address("TCP", "0.0.0.0", 8443),
            "https://127.0.0.1:8443/",
        ),
        (
            "ssl:port=0:interface=10.0.0.2:privateKey=k.pem",
            IPv4Address("TCP", "10.0.0.2", 443),
            "https://10.0.0.2:443/",
        ),
        (
            "systemd:domain=INET:index=0",
            IPv4Address("TCP", "192.0.2.9", 80),
            "http://192.0.2.9:80/",
        ),
    ],
)
def test_url_names_the_bound_address(endpoint, address, url):
    assert dashboard_url(endpoint, address) == url
    assert dashboard_url(endpoint, address, "tok") == url + "?token=tok"


def test_a_unix_socket_has_no_url():
    assert dashboard_url("unix:/run/zk.sock", UNIXAddress(b"/run/zk.sock")) is None


@pytest.fixture
def log_text() -> Iterator[list[str]]:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event) + " " + repr(sorted(event.items(), key=str)))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def dashboard_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("Dashboard")]


@pytest_twisted.ensureDeferred
async def test_logged_urls_name_every_listener_and_the_token_only_once(tmp_path, log_text):
    db = f"sqlite:{tmp_path}/db.sqlite3"
    web = [
        "tcp:0:interface=127.0.0.1",
        "tcp:port=0:interface=127.0.0.1",
        f"ssl:0:interface=127.0.0.1:privateKey={PEM}:certKey={PEM}",
    ]
    extra = [arg for endpoint in web[1:] for arg in ("--web", endpoint)]
    running = await start_server(db, str(tmp_path / "data"), *extra)
    token = running.token
    try:
        ports = [listener.port.getHost().port for listener in running.service.web_listeners]
        lines = dashboard_lines(log_text)
        for port, scheme in zip(ports, ["http", "http", "https"], strict=True):
            url = f"{scheme}://127.0.0.1:{port}/?token={token}"
            assert [line for line in lines if url in line], (url, lines)
        assert not [line for line in log_text if ":0/" in line]
    finally:
        await running.stop()

    log_text.clear()
    running = await start_server(db, str(tmp_path / "data"), *extra)
    try:
        assert running.token == token
        assert len(dashboard_lines(log_text)) == 3
        assert not [line for line in log_text if token in line], log_text
        assert [line for line in dashboard_lines(log_text) if "zkserver token" in line]
    finally:
        await running.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_systemd_socket_activation_logs_the_inherited_address(tmp_path):
    if not Path("/usr/bin/systemd-socket-activate").exists():
        pytest.skip("systemd-socket-activate not installed")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKSERVER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    log_path = tmp_path / "twistd.log"
    command = [
        "systemd-socket-activate",
        "--fdname=web",
        "-l",
        f"127.0.0.1:{port}",
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        "zkserver",
        "-d",
        str(tmp_path / "data"),
        "--db",
        f"sqlite:{tmp_path}/db.sqlite3",
        "--no-pull",
        "--web",
        "systemd:domain=INET:index=0",
        "--push",
        "tcp:0:interface=127.0.0.1",
    ]
    with open(log_path, "wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        found: list[str] = []
        while not found and time.monotonic() < deadline:
            try:  # the first connection makes systemd-socket-activate start the server
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                    s.recv(100)
            except OSError:
                pass
            found = re.findall(r"Dashboard: (\S+)", log_path.read_text(errors="replace"))
            time.sleep(0.05)
        assert found, log_path.read_text(errors="replace")
        assert found[0].startswith(f"http://127.0.0.1:{port}/?token="), found
    finally:
        process.terminate()
        process.wait(10)


def test_an_ipv6_zone_is_percent_encoded_in_the_url():
    address = IPv6Address("TCP", "fe80::1%eth0", 5000)
    assert dashboard_url("tcp6:port=5000:interface=fe80\\:\\:1%eth0", address) == (
        "http://[fe80::1%25eth0]:5000/"
    )


@pytest_twisted.ensureDeferred
async def test_a_unix_socket_listener_logs_its_path_and_the_first_token(tmp_path, log_text):
    """Behind a reverse proxy the only web listener may be a UNIX socket: its first start
    still shows the token it generated, and later starts say how to get it."""
    db = f"sqlite:{tmp_path}/db.sqlite3"
    sock = tmp_path / "web.sock"
    running = await start_server(db, str(tmp_path / "data"), "--web", f"unix:{sock}")
    token = running.token
    try:
        lines = [line for line in dashboard_lines(log_text) if str(sock) in line]
        assert len(lines) == 1, dashboard_lines(log_text)
        assert f"/?token={token}" in lines[0]
    finally:
        await running.stop()
    log_text.clear()
    running = await start_server(db, str(tmp_path / "data"), "--web", f"unix:{sock}")
    try:
        lines = [line for line in dashboard_lines(log_text) if str(sock) in line]
        assert len(lines) == 1 and "zkserver token" in lines[0], lines
        assert not [line for line in log_text if token in line]
    finally:
        await running.stop()
