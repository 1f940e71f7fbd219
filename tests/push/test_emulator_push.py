"""The push terminal emulator against a small fake iclock server on a loopback port."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from zkserver.emulator import __main__ as emulator_main
from zkserver.emulator.push import PushTerminal, ServerRefused
from zkserver.push import iclock
from zkserver.records import DeviceUser, Punch

reactor: Any = global_reactor


@attrs.define
class FakeIclock(Resource):
    """Answers like docs/protocols.md §A says, and records what terminals sent."""

    isLeaf = True

    fail_attlog: int = 0  # answer this many ATTLOG uploads with 503
    refuse_all: bool = False
    commands: list[tuple[str, str]] = attrs.field(factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = attrs.field(factory=list)
    punches: list[Punch] = attrs.field(factory=list)
    attlog_posts: int = 0
    users: list[DeviceUser] = attrs.field(factory=list)
    results: list[iclock.CommandResult] = attrs.field(factory=list)
    content_types: set[bytes] = attrs.field(factory=set)

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)

    def render(self, request: Any) -> bytes:
        method = request.method.decode()
        path = request.path.decode()
        query = iclock.parse_query(request.uri)
        body = request.content.read()
        self.requests.append((method, path, query))
        if method == "POST":
            self.content_types.add(request.getHeader(b"content-type") or b"")
        request.setHeader(b"Content-Type", b"text/plain")
        status, text = self.answer(method, path, query, body)
        request.setResponseCode(status)
        data = text.encode()
        request.setHeader(b"Content-Length", str(len(data)).encode())
        return data

    def answer(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, str]:
        if self.refuse_all:
            return 503, "ERROR: down"
        if "SN" not in query:
            return 400, "ERROR: no SN"
        if path == "/iclock/cdata" and method == "GET":
            return 200, iclock.format_handshake(
                query["SN"],
                timezone_offset_minutes=330,
                delay=1,
                error_delay=1,
                push_version=query.get("pushver"),
            )
        if path == "/iclock/cdata" and method == "POST":
            if query.get("table") == "ATTLOG":
                self.attlog_posts += 1
                if self.fail_attlog > 0:
                    self.fail_attlog -= 1
                    return 503, "ERROR: database unavailable"
                punches, rejected = iclock.parse_attlog(body)
                assert rejected == []
                self.punches.extend(punches)
                return 200, iclock.format_ok(len(punches))
            if query.get("table") == "OPERLOG":
                batch = iclock.parse_operlog(body)
                self.users.extend(batch.users)
                return 200, iclock.format_ok(batch.accepted)
        if path == "/iclock/getrequest":
            reply = iclock.format_commands(self.commands)
            self.commands = []
            return 200, reply
        if path == "/iclock/devicecmd":
            self.results.extend(iclock.parse_devicecmd(body))
            return 200, "OK"
        if path == "/iclock/ping":
            return 200, "OK"
        return 404, "ERROR"


class TrackingSite(Site):
    """A Site that can wait until every connection to it has closed."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self.open: set[Any] = set()
        self.waiters: list[Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        lost = protocol.connectionLost

        def connection_lost(reason: Any) -> None:
            self.open.discard(protocol)
            lost(reason)
            if not self.open:
                waiters, self.waiters = self.waiters, []
                for d in waiters:
                    d.callback(None)

        protocol.connectionLost = connection_lost
        self.open.add(protocol)
        return protocol

    def all_closed(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.open:
            self.waiters.append(d)
        else:
            d.callback(None)
        return d


@attrs.define
class Harness:
    server: FakeIclock
    url: str
    client: HTTPClient

    def terminal(self, serial: str = "EMU0001", **kwargs: Any) -> PushTerminal:
        return PushTerminal(
            server=self.url, serial_number=serial, reactor=reactor, client=self.client, **kwargs
        )


@pytest_twisted.async_yield_fixture
async def harness() -> AsyncIterator[Harness]:
    server = FakeIclock()
    site = TrackingSite(server)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    pool = HTTPConnectionPool(reactor, persistent=False)
    client = HTTPClient(Agent(reactor, pool=pool))
    try:
        yield Harness(server, f"http://127.0.0.1:{port.getHost().port}", client)
    finally:
        await pool.closeCachedConnections()
        await port.stopListening()
        await site.all_closed()


@pytest_twisted.ensureDeferred
async def test_handshake_adopts_server_options(harness: Harness) -> None:
    terminal = harness.terminal()
    options = await terminal.handshake()
    assert options["serial"] == "EMU0001"
    assert (terminal.delay, terminal.error_delay, terminal.timezone_minutes) == (1, 1, 330)
    method, path, query = harness.server.requests[0]
    assert (method, path) == ("GET", "/iclock/cdata")
    assert query == {
        "SN": "EMU0001",
        "options": "all",
        "pushver": "2.4.1",
        "language": "69",
        "DeviceType": "att",
        "PushOptionsFlag": "1",
    }


@pytest_twisted.ensureDeferred
async def test_handshake_refused(harness: Harness) -> None:
    harness.server.refuse_all = True
    with pytest.raises(ServerRefused) as e:
        await harness.terminal().handshake()
    assert e.value.code == 503


@pytest_twisted.ensureDeferred
async def test_upload_attlog_round_trip(harness: Harness) -> None:
    terminal = harness.terminal(users=3)
    await terminal.handshake()
    punches = [terminal.make_punch() for _ in range(7)]
    assert await terminal.upload_attlog(punches) == 7
    assert harness.server.punches == punches
    assert harness.server.requests[-1][2] == {"SN": "EMU0001", "table": "ATTLOG", "Stamp": "9999"}
    assert len({(p.user_id, p.timestamp) for p in punches}) == 7
    assert harness.server.content_types == {b"application/x-www-form-urlencoded"}


@pytest_twisted.ensureDeferred
async def test_upload_attlog_raises_unless_ok(harness: Harness) -> None:
    harness.server.fail_attlog = 1
    terminal = harness.terminal()
    punch = terminal.make_punch()
    with pytest.raises(ServerRefused) as e:
        await terminal.upload_attlog([punch])
    assert e.value.code == 503
    assert harness.server.punches == []
    assert await terminal.upload_attlog([punch]) == 1
    assert harness.server.punches == [punch]


@pytest_twisted.ensureDeferred
async def test_upload_users(harness: Harness) -> None:
    terminal = harness.terminal(users=2)
    terminal.user_list["3"] = DeviceUser("3", "张三 & Zoë", 14, "123456789", "", "1")
    assert await terminal.upload_users() == 3
    assert [u.user_id for u in harness.server.users] == ["1", "2", "3"]
    assert harness.server.users[2] == terminal.user_list["3"]
    assert harness.server.requests[-1][2]["table"] == "OPERLOG"


@pytest_twisted.ensureDeferred
async def test_ping(harness: Harness) -> None:
    assert await harness.terminal().ping() is True
    harness.server.refuse_all = True
    assert await harness.terminal().ping() is False


@pytest_twisted.ensureDeferred
async def test_poll_runs_commands_and_posts_results(harness: Harness) -> None:
    terminal = harness.terminal(users=2)
    old = terminal.make_punch()
    new_user = DeviceUser("77", "Ann Lee", 0, "", "", "1")
    harness.server.commands = [
        ("1", iclock.format_userinfo_command(new_user)),
        ("2", "DATA DELETE USERINFO PIN=1"),
        ("3", "DATA DELETE USERINFO PIN=999"),
        ("4", "INFO"),
        ("5", "CHECK"),
        ("6", "DATA QUERY ATTLOG StartTime=2000-01-01 00:00:00\tEndTime=2099-12-31 23:59:59"),
        ("7", "USER ADD PIN=5"),
        ("8", "REBOOT"),
    ]
    done = await terminal.poll()
    assert [(i, code) for i, _, code in done] == [
        ("1", 0),
        ("2", 0),
        ("3", -10),
        ("4", 0),
        ("5", 0),
        ("6", 0),
        ("7", -1002),
        ("8", 0),
    ]
    assert sorted(terminal.user_list) == ["2", "77"]
    assert terminal.user_list["77"] == new_user
    results = {r.id: r for r in harness.server.results}
    assert [r.return_code for r in harness.server.results] == [code for _, _, code in done]
    assert results["1"].cmd == "DATA"
    assert results["4"].cmd == "INFO"
    assert "UserCount=2" in results["4"].result.splitlines()
    assert results["5"].cmd == "CHECK"
    assert harness.server.punches == [old]  # DATA QUERY ATTLOG re-uploaded the log
    getrequest = [q for m, p, q in harness.server.requests if p == "/iclock/getrequest"][0]
    info = iclock.parse_info(getrequest["INFO"])
    assert info["user_count"] == 2 and info["attlog_count"] == 1
    # Nothing queued: plain OK, no devicecmd post.
    posts = len(harness.server.requests)
    assert await terminal.poll() == []
    assert len(harness.server.requests) == posts + 1


@pytest_twisted.ensureDeferred
async def test_run_resends_after_503_and_loses_nothing(harness: Harness) -> None:
    harness.server.fail_attlog = 2
    harness.server.commands = [("9", "CHECK")]
    terminal = harness.terminal(users=3, rate=20)
    summary = await terminal.run(count=8, duration=20)
    assert summary.generated == 8
    assert summary.pending == 0
    assert summary.uploaded == 8
    assert harness.server.punches == terminal.attlog
    assert len({(p.user_id, p.timestamp) for p in harness.server.punches}) == 8
    assert harness.server.attlog_posts >= 3  # two refused, then the kept batch again
    assert [u.user_id for u in harness.server.users] == ["1", "2", "3"]
    assert [r.id for r in harness.server.results] == ["9"]
    assert summary.commands == 1


@pytest_twisted.ensureDeferred
async def test_run_stops_cleanly_when_server_is_down(harness: Harness) -> None:
    terminal = harness.terminal(rate=10)
    await terminal.handshake()  # learn ErrorDelay=1 first
    harness.server.refuse_all = True
    summary = await terminal.run(duration=0.5)
    assert summary.generated == 0  # still waiting for a successful handshake
    harness.server.refuse_all = False


@pytest_twisted.ensureDeferred
async def test_run_keeps_punches_when_uploads_fail(harness: Harness) -> None:
    harness.server.fail_attlog = 10**6
    terminal = harness.terminal(rate=10)
    d = terminal.run(duration=0.6)
    summary = await d
    assert summary.generated >= 3
    assert summary.uploaded == 0
    assert summary.pending == summary.generated == len(terminal.pending)
    assert harness.server.punches == []


@pytest_twisted.ensureDeferred
async def test_stop_ends_run(harness: Harness) -> None:
    terminal = harness.terminal(rate=50)
    d = terminal.run()
    reactor.callLater(0.3, terminal.stop)
    summary = await d
    assert summary.generated > 0
    assert summary.pending == 0
    assert harness.server.punches == terminal.attlog


@pytest_twisted.ensureDeferred
async def test_cli_push(harness: Harness) -> None:
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        [
            "-m",
            "zkserver.emulator",
            "push",
            "--server",
            harness.url,
            "--sn",
            "CLI0001",
            "--count",
            "3",
            "--rate",
            "10",
            "--users",
            "2",
        ],
        env=dict(os.environ),
        path=os.getcwd(),
    )
    assert code == 0, err
    assert b"uploaded 3 punches" in out or out.count(b"uploaded") >= 2
    assert len(harness.server.punches) == 3
    assert {p.user_id for p in harness.server.punches} == {"1", "2"}


def test_main_dispatch_missing_module(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "zkserver.emulator.pull", None)
    assert emulator_main.main(["pull", "--help"]) == 2
    assert "pull emulator is not available" in capsys.readouterr().err


def test_main_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert emulator_main.main([]) == 2
    assert "push" in capsys.readouterr().out
    assert emulator_main.main(["bogus"]) == 2
