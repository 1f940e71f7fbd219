"""Requests as other firmware sends them (docs/protocols.md §A.11): the same conversation
under another path, query-key spelling, method or body encoding reaches the same handler."""

from __future__ import annotations

import gzip
import zlib
from io import BytesIO

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http_headers import Headers

from tests.harness import RunningServer, SSEClient, drain, raw_request, wait_until
from zkserver.http import origin_form
from zkserver.push import iclock

SN = "NCD8252500406"
TS = "2025-10-09 18:30:45"


async def call(
    server: RunningServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[bytes, list[bytes]] | None = None,
) -> tuple[int, bytes]:
    """A terminal's request through a plain Agent (headers as given, no decoding)."""
    agent = Agent(reactor, pool=server.pool)
    producer = FileBodyProducer(BytesIO(body)) if body is not None else None
    response = await agent.request(
        method.encode(),
        (server.push_url + path).encode(),
        Headers({b"User-Agent": [b"iClock Proxy/1.09"], **(headers or {})}),
        producer,
    )
    return response.code, await treq.content(response)


async def users(server: RunningServer) -> list[str]:
    _, page = await server.api("GET", "/api/attendance")
    return sorted(row["user_id"] for row in page["items"])


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        ([b"iclock", b"cdata"], [b"iclock", b"cdata"]),
        ([b"iclock", b"cdata.aspx"], [b"iclock", b"cdata"]),
        ([b"iclock", b"getrequest.aspx"], [b"iclock", b"getrequest"]),
        ([b"iclock", b"cdata", b""], [b"iclock", b"cdata"]),
        ([b"iclock", b"devicecmd.aspx", b""], [b"iclock", b"devicecmd"]),
        ([b"iclock", b"", b"fdata.ASPX"], [b"iclock", b"fdata"]),
        ([b"other.aspx"], [b"other.aspx"]),
        ([b""], [b""]),
        ([], []),
    ],
)
def test_terminal_path(segments: list[bytes], expected: list[bytes]) -> None:
    assert iclock.terminal_path(segments) == expected


@pytest_twisted.ensureDeferred
async def test_aspx_paths_and_trailing_slashes_reach_the_handlers(server: RunningServer):
    """eTimeTrack-era firmware calls every endpoint with an ``.aspx`` suffix; others add a
    trailing slash. Both got 404, so the terminal stayed offline."""
    code, body = await call(server, "GET", f"/iclock/cdata.aspx?SN={SN}&options=all")
    assert code == 200 and body.startswith(f"GET OPTION FROM: {SN}".encode())
    code, body = await call(server, "GET", f"/iclock/cdata/?SN={SN}&options=all")
    assert code == 200 and body.startswith(b"GET OPTION FROM")
    code, body = await call(
        server, "POST", f"/iclock/cdata.aspx?SN={SN}&table=ATTLOG&Stamp=9999",
        f"9001\t{TS}\t1\t15\t0\t0\t0\t0\t0\t0".encode(),
    )  # fmt: skip
    assert (code, body) == (200, b"OK: 1")
    assert await users(server) == ["9001"]
    code, body = await call(server, "GET", f"/iclock/getrequest.aspx?SN={SN}")
    assert (code, body) == (200, b"OK")
    code, body = await call(server, "GET", f"/iclock/getrequest/?SN={SN}")
    assert (code, body) == (200, b"OK")
    code, body = await call(
        server, "POST", f"/iclock/devicecmd.aspx?SN={SN}", b"ID=1&Return=0&CMD=DATA"
    )
    assert (code, body) == (200, b"OK")
    code, body = await call(server, "GET", f"/iclock/ping.aspx?SN={SN}")
    assert (code, body) == (200, b"OK")
    # still only /iclock/*
    code, _ = await call(server, "GET", f"/other.aspx?SN={SN}")
    assert code == 404


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/iclock/cdata?sn=X&options=all", {"SN": "X", "options": "all"}),
        ("/iclock/cdata?Sn=X&Table=ATTLOG&stamp=1", {"SN": "X", "table": "ATTLOG", "Stamp": "1"}),
        (
            "/iclock/cdata?SN=X&PushVer=2.4.1&devicetype=acc&Language=69&Options=all",
            {
                "SN": "X",
                "pushver": "2.4.1",
                "DeviceType": "acc",
                "language": "69",
                "options": "all",
            },
        ),
        ("/iclock/getrequest?SN=X&info=Ver%208,1", {"SN": "X", "INFO": "Ver 8,1"}),
        # the documented spelling wins over another one, wherever it stands
        ("/iclock/cdata?sn=A&SN=B", {"SN": "B"}),
        ("/iclock/cdata?SN=B&sn=A", {"SN": "B"}),
        # keys the protocol does not name stay as sent
        ("/iclock/cdata?SN=X&Foo=1&foo=2", {"SN": "X", "Foo": "1", "foo": "2"}),
    ],
)
def test_query_keys_in_any_case(uri: str, expected: dict[str, str]) -> None:
    assert iclock.parse_query(uri) == expected


@pytest_twisted.ensureDeferred
async def test_query_keys_in_another_case_are_read(server: RunningServer):
    """``sn=`` got 400 (the terminal retried forever) and ``Table=ATTLOG`` was taken for an
    unknown table: its punches went to /api/rejected instead of the attendance log."""
    code, body = await call(server, "GET", f"/iclock/cdata?sn={SN}&options=all&PushVer=2.4.1")
    assert code == 200 and body.startswith(f"GET OPTION FROM: {SN}".encode())
    assert b"TransFlag=TransData AttLog" in body  # PushVer read: the 2.x TransFlag
    code, body = await call(
        server, "POST", f"/iclock/cdata?Sn={SN}&Table=ATTLOG", f"9002\t{TS}\t0\t1".encode()
    )
    assert (code, body) == (200, b"OK: 1")
    assert await users(server) == ["9002"]
    _, rejected = await server.api("GET", "/api/rejected")
    assert rejected == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("CMD=DATA&ID=17&Return=0", [("17", 0, "DATA")]),
        ("Return=-1002&ID=18&CMD=DATA", [("18", -1002, "DATA")]),
        ("id=19&return=-10&cmd=DATA", [("19", -10, "DATA")]),
        ("SN=X&ID=20&Return=0&CMD=DATA", [("20", 0, "DATA")]),
        (
            "ID=21&Return=0&CMD=DATA&ID=22&Return=-1&CMD=DATA",
            [("21", 0, "DATA"), ("22", -1, "DATA")],
        ),
        (
            "CMD=INFO&ID=23&Return=0\n~DeviceName=K40\nReturn=0&CMD=REBOOT&ID=24",
            [("23", 0, "INFO"), ("24", 0, "REBOOT")],
        ),
    ],
)
def test_devicecmd_results_in_any_key_order(body: str, expected: list[tuple]) -> None:
    results = iclock.parse_devicecmd(body)
    assert [(r.id, r.return_code, r.cmd) for r in results] == expected


def test_devicecmd_info_lines_stay_with_their_result() -> None:
    (result,) = iclock.parse_devicecmd("CMD=INFO&Return=0&ID=5\n~DeviceName=K40\nIPAddress=1.2")
    assert result.result == "~DeviceName=K40\nIPAddress=1.2"
    assert iclock.parse_devicecmd("Return=0&CMD=DATA\n") == []  # no id: nothing to finish


@pytest_twisted.ensureDeferred
async def test_devicecmd_results_in_another_key_order_finish_their_commands(
    server: RunningServer,
):
    """Results written ``Return=..&ID=..&CMD=..`` or in lower case were skipped: the
    commands stayed ``sent`` and were sent again until they expired."""
    await call(server, "GET", f"/iclock/cdata?SN={SN}&options=all")
    _, devices = await server.api("GET", "/api/devices")
    device_id = next(d["id"] for d in devices if d["serial_number"] == SN)
    ids = []
    for _ in range(3):
        code, command = await server.api(
            "POST", f"/api/devices/{device_id}/commands", {"type": "check"}
        )
        assert code in (200, 201, 202), command
        ids.append(command["id"])
    code, body = await call(server, "GET", f"/iclock/getrequest?SN={SN}")
    sent = [line.split(":")[1] for line in body.decode().splitlines()]
    assert len(sent) == 3
    reply = (
        f"Return=0&ID={sent[0]}&CMD=CHECK\r\n"
        f"cmd=CHECK&id={sent[1]}&return=-1002&ID={sent[2]}&Return=0&CMD=CHECK\r\n"
    )
    assert await call(server, "POST", f"/iclock/devicecmd?SN={SN}", reply.encode()) == (
        200,
        b"OK",
    )
    statuses = []
    for command_id in ids:
        _, command = await server.api("GET", f"/api/commands/{command_id}")
        statuses.append(command["status"])
    assert statuses == ["done", "failed", "done"]


@pytest_twisted.ensureDeferred
async def test_polls_by_post_are_answered_like_gets(server: RunningServer):
    """Some firmware polls ``getrequest`` and ``ping`` with POST (an empty body, or its
    INFO there): it got 404 and never received a command."""
    await call(server, "GET", f"/iclock/cdata?SN={SN}&options=all")
    _, devices = await server.api("GET", "/api/devices")
    device_id = next(d["id"] for d in devices if d["serial_number"] == SN)
    await server.api("POST", f"/api/devices/{device_id}/commands", {"type": "check"})
    code, body = await call(server, "POST", f"/iclock/getrequest.aspx?SN={SN}", b"")
    assert code == 200 and body.startswith(b"C:") and body.endswith(b":CHECK")
    code, body = await call(server, "POST", f"/iclock/getrequest?SN={SN}&INFO=Ver%208.0,5", b"")
    assert (code, body) == (200, b"OK")
    _, device = await server.api("GET", f"/api/devices/{device_id}")
    assert device["info"]["firmware"] == "Ver 8.0"
    assert await call(server, "POST", f"/iclock/ping?SN={SN}", b"") == (200, b"OK")


@pytest_twisted.ensureDeferred
async def test_compressed_bodies_are_read(server: RunningServer):
    """A body sent with ``Content-Encoding: gzip`` (or deflate) was parsed as its
    compressed bytes: every punch became a rejected binary line."""
    lines = [f"{9100 + i}\t{TS}\t0\t1\t0\t0\t0\n" for i in range(3)]
    gz = gzip.compress(lines[0].encode())
    code, body = await call(
        server, "POST", f"/iclock/cdata?SN={SN}&table=ATTLOG", gz,
        {b"Content-Encoding": [b"gzip"]},
    )  # fmt: skip
    assert (code, body) == (200, b"OK: 1")
    code, body = await call(
        server, "POST", f"/iclock/cdata?SN={SN}&table=ATTLOG", zlib.compress(lines[1].encode()),
        {b"Content-Encoding": [b"deflate"]},
    )  # fmt: skip
    assert (code, body) == (200, b"OK: 1")
    assert await users(server) == ["9100", "9101"]
    # not really compressed: read as sent, the bad bytes kept for the operator
    code, body = await call(
        server, "POST", f"/iclock/cdata?SN={SN}&table=ATTLOG", lines[2].encode(),
        {b"Content-Encoding": [b"gzip"]},
    )  # fmt: skip
    assert (code, body) == (200, b"OK: 1")
    assert await users(server) == ["9100", "9101", "9102"]


@pytest_twisted.ensureDeferred
async def test_every_gzip_member_and_every_listed_coding_is_read(server: RunningServer):
    """A gzip body of two members (``cat a.gz b.gz``, valid gzip, RFC 1952 §2.2) was read
    to the end of its first member: ``OK: 1`` for two punches, and the terminal dropped
    the second. ``Content-Encoding: gzip, identity`` was read as sent (every punch a
    rejected binary line, ``OK: 0``), and codings applied one after the other were too."""
    lines = [f"{9400 + i}\t{TS}\t0\t1\t0\t0\t0\n".encode() for i in range(5)]
    members = gzip.compress(lines[0]) + gzip.compress(lines[1])
    code, body = await call(
        server, "POST", f"/iclock/cdata?SN={SN}&table=ATTLOG", members,
        {b"Content-Encoding": [b"gzip"]},
    )  # fmt: skip
    assert (code, body) == (200, b"OK: 2")
    code, body = await call(
        server, "POST", f"/iclock/cdata?SN={SN}&table=ATTLOG", gzip.compress(lines[2]),
        {b"Content-Encoding": [b"gzip, identity"]},
    )  # fmt: skip
    assert (code, body) == (200, b"OK: 1")
    code, body = await call(
        server, "POST", f"/iclock/cdata?SN={SN}&table=ATTLOG",
        gzip.compress(zlib.compress(lines[3])),  # deflate first, then gzip
        {b"Content-Encoding": [b"deflate, GZIP"]},
    )  # fmt: skip
    assert (code, body) == (200, b"OK: 1")
    assert await users(server) == ["9400", "9401", "9402", "9403"]
    _, rejected = await server.api("GET", "/api/rejected")
    assert rejected == []


@pytest_twisted.ensureDeferred
async def test_a_compressed_body_is_capped_at_the_body_limit(db_url, tmp_path):
    from tests.harness import start_server

    running = await start_server(
        db_url, str(tmp_path / "d"), "--auto-approve", "--max-body", "10000"
    )
    try:
        line = f"9200\t{TS}\t0\t1\t0\t0\t0\n".encode()
        bomb = gzip.compress(line + b"9" * 1_000_000)  # ~1 KB sent, 1 MB inflated
        code, body = await call(
            running, "POST", f"/iclock/cdata?SN={SN}&table=ATTLOG", bomb,
            {b"Content-Encoding": [b"gzip"]},
        )  # fmt: skip
        assert code == 413
        _, page = await running.api("GET", "/api/attendance")
        assert page["items"] == []
    finally:
        await running.stop()


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"http://10.0.0.5:8081/iclock/cdata?SN=X", b"/iclock/cdata?SN=X"),
        (b"HTTP://host/iclock/ping", b"/iclock/ping"),
        (b"http://host?SN=X", b"/?SN=X"),
        (b"http://host", b"/"),
        (b"/iclock/cdata?next=http://x/y", b"/iclock/cdata?next=http://x/y"),
        (b"*", b"*"),
    ],
)
def test_origin_form(target: bytes, expected: bytes) -> None:
    assert origin_form(target) == expected


@pytest_twisted.ensureDeferred
async def test_an_absolute_request_target_is_routed(server: RunningServer):
    """A terminal with its proxy setting on writes the whole URL in the request line
    (``GET http://host:port/iclock/cdata?... HTTP/1.1``, RFC 9112 §3.2.2): it got 404."""
    port = server.service.push_listeners[0].port.getHost().port
    body = f"9300\t{TS}"
    request = (
        f"POST http://127.0.0.1:{port}/iclock/cdata?SN={SN}&table=ATTLOG HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n{body}"
    ).encode()
    sock = await raw_request(port, request)
    reply = bytearray()
    try:
        await wait_until(lambda: reply.extend(drain(sock)) or reply.endswith(b"\r\n\r\nOK: 1"))
    finally:
        sock.close()
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert await users(server) == ["9300"]


@pytest_twisted.ensureDeferred
async def test_rtstate_keys_in_any_case_make_door_events(server: RunningServer):
    """rtstate lines written ``Time=..<TAB>Sensor=..<TAB>Alarm=..`` (or with a ``T`` in the
    time) were stored but never compared: no door or alarm event came of them."""
    stream = await SSEClient(
        f"{server.web_url}/devices/events?token={server.token}&type=door,alarm"
    ).connect()
    try:
        bodies = [
            "Time=2026-11-29 10:00:00\tSensor=01\tRelay=00\tAlarm=00\n",
            "TIME=2026-11-29T10:00:01\tSENSOR=02\tRELAY=01\tALARM=02\n",
        ]
        path = f"/iclock/cdata?SN={SN}&table=rtstate"
        for body in bodies:
            assert await call(server, "POST", path, body.encode()) == (200, b"OK")
        await wait_until(lambda: len(stream.events) >= 2)
        got = [
            (e["timestamp"], e["door"], e.get("event") or e["alarm"], e.get("state"))
            for e in stream.events
        ]
        assert got == [
            ("2026-11-29 10:00:01", 1, "opened", None),
            ("2026-11-29 10:00:01", 1, "tamper", "active"),
        ]
    finally:
        await stream.close()
