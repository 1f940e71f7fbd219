"""The listener setup: the accept queue and the open-files limit thousands of streams need."""

from __future__ import annotations

import resource
import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

from zkserver.listener import (
    Listener,
    open_files_target,
    raise_open_files_limit,
    system_backlog,
    with_backlog,
)

INF = resource.RLIM_INFINITY


def test_the_soft_limit_goes_up_to_the_hard_one() -> None:
    assert open_files_target(1024, 524288, 1 << 20) == 524288
    assert open_files_target(1024, INF, 1 << 20) == 1 << 20  # capped at fs.nr_open
    assert open_files_target(1024, 1 << 21, 1 << 20) == 1 << 20
    assert open_files_target(65536, 65536, 1 << 20) == 65536  # nothing to raise
    assert open_files_target(4096, 2048, 1 << 20) == 4096  # never lowered
    assert open_files_target(INF, INF, 1 << 20) == INF


def test_raise_open_files_limit_sets_the_soft_limit(tmp_path) -> None:
    calls = []
    nr_open = tmp_path / "nr_open"
    nr_open.write_text("1048576\n")
    limit = raise_open_files_limit(
        getrlimit=lambda _: (1024, 65536),
        setrlimit=lambda which, value: calls.append((which, value)),
        nr_open_path=str(nr_open),
    )
    assert limit == 65536
    assert calls == [(resource.RLIMIT_NOFILE, (65536, 65536))]


def test_a_refused_raise_keeps_the_limit(tmp_path) -> None:
    def refuse(which: int, value: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    limit = raise_open_files_limit(
        getrlimit=lambda _: (1024, 65536), setrlimit=refuse, nr_open_path=str(tmp_path / "x")
    )
    assert limit == 1024


@pytest.mark.parametrize(
    "description",
    [
        "tcp:5000",
        "TCP:5000:interface=127.0.0.1",
        "tcp6:5000:interface=\\:\\:1",
        "ssl:8443:privateKey=key.pem:certKey=cert.pem",
        "unix:/run/zkserver/web.sock",
    ],
)
def test_a_listener_without_a_backlog_gets_the_given_default(description: str) -> None:
    assert with_backlog(description, 777) == description + ":backlog=777"


@pytest.mark.parametrize(
    "description",
    [
        "tcp:5000:backlog=10",
        "tcp:5000:backlog=10:interface=127.0.0.1",
        "systemd:domain=INET:index=0",  # the socket unit sets its own (Backlog=)
        "unix:/run/backlog=2.sock:backlog=3",
    ],
)
def test_a_named_backlog_or_an_endpoint_without_one_is_left_alone(description: str) -> None:
    assert with_backlog(description, 777) == description


def test_an_escaped_colon_is_not_a_separator() -> None:
    assert with_backlog("unix:/tmp/a\\:backlog=1", 9) == "unix:/tmp/a\\:backlog=1:backlog=9"


def test_the_default_is_what_the_kernel_allows() -> None:
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            expected = int(f.read())
    except OSError:
        expected = socket.SOMAXCONN
    assert system_backlog() == expected


@pytest_twisted.ensureDeferred
async def test_a_tcp_listener_listens_with_the_system_backlog() -> None:
    """Twisted's own default is 50: a reconnect storm of thousands of dashboards then has
    most of its SYNs dropped and retried seconds later."""
    listener = Listener("tcp:0:interface=127.0.0.1", Factory.forProtocol(Protocol), reactor)
    listener.startService()
    try:
        port = await listener.listening
        assert port.backlog == system_backlog() > 50
        assert listener.effective.endswith(f":backlog={system_backlog()}")
    finally:
        await listener.stopService()
