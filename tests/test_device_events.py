"""Door, alarm and device-log events from both kinds of terminal, end to end: emulated
terminals -> zkserver -> the stream, a webhook and GET /api/device-log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest_twisted
from twisted.internet import reactor

from tests.harness import RunningServer, SSEClient, start_server, wait_until
from tests.webhooks.receiver import Receiver
from zkserver.emulator.pull import PullTCPFactory, build_device
from zkserver.emulator.push import PushTerminal
from zkserver.pull.codec import EventFlag

WHEN = datetime(2026, 11, 29, 10, 0, 0)


@asynccontextmanager
async def pull_terminal_on_stream(
    server: RunningServer, serial: str, users: int = 1, records: int = 0
) -> AsyncIterator[tuple[Any, SSEClient, dict[str, Any]]]:
    """A pull emulator added to ``server`` and registered for its events, with a stream of
    door and alarm events: ``(emulator, stream, device JSON)``; all torn down after."""
    emu = build_device(users=users, records=records, serial_number=serial)
    factory = PullTCPFactory(emu, reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    stream = await SSEClient(
        f"{server.web_url}/devices/events?token={server.token}&type=alarm,door"
    ).connect()
    code, body = await server.api(
        "POST", "/api/devices", {"kind": "pull", "host": "127.0.0.1", "port": port.getHost().port}
    )
    try:
        assert code == 201, body
        await wait_until(lambda: any(s.flags & EventFlag.ALARM for s in emu.sessions))
        yield emu, stream, body
    finally:
        await stream.close()
        if code == 201:
            await server.api("DELETE", f"/api/devices/{body['id']}")
            await wait_until(lambda: not emu.sessions)
        await factory.close_connections()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_push_rtlog_rtstate_and_oplog_events(db_url: str, tmp_path):
    server = await start_server(
        db_url,
        str(tmp_path / "d"),
        "--auto-approve",
        "--webhook-allow-private",
        "--webhook-retry-min",
        "0.05",
    )
    receiver = await Receiver(secret="x" * 20).start()
    stream = await SSEClient(
        f"{server.web_url}/devices/events?token={server.token}&type=door,alarm,device_log"
    ).connect()
    terminal = PushTerminal(server.push_url, "DOOR0001", reactor, users=2)
    try:
        await server.api(
            "POST", "/api/webhooks", {"url": receiver.url, "secret": "x" * 20, "types": ["door"]}
        )
        await terminal.handshake()
        assert await terminal.upload_rtlog(200, door=1, when=WHEN) == 1  # opened
        assert await terminal.upload_rtlog(100, door=1, when=WHEN) == 1  # tamper alarm
        assert await terminal.upload_rtlog(200, door=1, when=WHEN) == 1  # resent: no event
        assert await terminal.upload_rtlog(0, door=2, pin="1", when=WHEN) == 1  # a punch too
        oplog = "OPLOG 4\t0\t2026-11-29 10:00:01\t0\t0\t0\t0\n"
        assert await terminal._upload("OPERLOG", oplog) == 1
        for state in ("sensor=0101\talarm=0000", "sensor=0201\talarm=0000"):
            await terminal._request(
                "POST", "cdata", {"table": "rtstate"}, f"time=2026-11-29 10:00:02\t{state}\n"
            )
        await wait_until(lambda: len(stream.events) >= 5)
        got = [
            (e["type"], e.get("event") or e.get("alarm") or e.get("operation"))
            for e in stream.events
        ]
        assert got == [
            ("door", "opened"),
            ("alarm", "tamper"),
            ("door", "verified_open"),
            ("device_log", "menu entered"),
            ("door", "opened"),
        ]
        door = stream.events[0]
        assert door["serial_number"] == "DOOR0001" and door["door"] == 1
        assert door["timestamp"] == "2026-11-29 10:00:00" and door["code"] == 200
        assert stream.events[2]["user_id"] == "1" and stream.events[4]["door"] == 1
        # The webhook wanted doors only: three of them, in order.
        await wait_until(lambda: len(receiver.delivered_ids()) >= 3)
        assert [r.json["type"] for r in receiver.requests] == ["door"] * 3
        code, page = await server.api("GET", "/api/device-log?type=rtlog")
        assert code == 200 and [r["op"] for r in page["items"]][-2:] == ["rtlog:100", "rtlog:200"]
        code, page = await server.api("GET", "/api/device-log?type=oplog&limit=1")
        assert code == 200 and page["items"][0]["op"] == "4" and page["next_cursor"] is None
        code, bad = await server.api("GET", "/api/device-log?type=nope")
        assert code == 400 and bad["field"] == "type"
    finally:
        await stream.close()
        await terminal.close()
        await receiver.stop()
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_pull_alarm_event(server: RunningServer):
    async with pull_terminal_on_stream(server, "ALARMPULL", users=2, records=1) as (
        emu,
        stream,
        body,
    ):
        emu.alarm(0x37)
        emu.alarm(0x35)
        await wait_until(lambda: len(stream.events) >= 2)
        alarm, button = stream.events
        assert (alarm["type"], alarm["alarm"], alarm["state"], alarm["code"]) == (
            "alarm",
            "tamper",
            "active",
            512,
        )
        assert alarm["serial_number"] == "ALARMPULL" and alarm["device_id"] == body["id"]
        assert (button["type"], button["event"]) == ("door", "exit_button")
        code, page = await server.api("GET", f"/api/device-log?device_id={body['id']}")
        assert [r["op"] for r in page["items"]] == ["pull:512", "pull:512"]


@pytest_twisted.ensureDeferred
async def test_push_rtlog_lines_with_a_user_that_let_no_one_through_are_no_punch(
    db_url: str, tmp_path
):
    """Duress, tamper, a denial, a door state with a user: door/alarm events with the
    user, but no attendance event; a verification that let them through is both."""
    server = await start_server(db_url, str(tmp_path / "d"), "--auto-approve")
    stream = await SSEClient(f"{server.web_url}/devices/events?token={server.token}").connect()
    terminal = PushTerminal(server.push_url, "DOOR0002", reactor, users=2)
    try:
        await terminal.handshake()
        for minute, code in enumerate((101, 100, 23, 200, 15, 0)):
            when = WHEN.replace(minute=minute)
            assert await terminal.upload_rtlog(code, door=1, pin="1", when=when) == 1
        await wait_until(lambda: sum(e["type"] != "device_status" for e in stream.events) >= 8)
        got = [
            (e["type"], e.get("event") or e.get("alarm"), e.get("code"), e.get("user_id"))
            for e in stream.events
            if e["type"] != "device_status"
        ]
        assert got == [
            ("alarm", "duress", 101, "1"),
            ("alarm", "tamper", 100, "1"),
            ("door", "denied", 23, "1"),
            ("door", "opened", 200, "1"),
            ("attendance", None, None, "1"),
            ("door", "other", 15, "1"),
            ("attendance", None, None, "1"),
            ("door", "verified_open", 0, "1"),
        ]
    finally:
        await stream.close()
        await terminal.close()
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_every_rtstate_line_of_an_upload_counts(db_url: str, tmp_path):
    """A terminal that batches its state lines (door opened, then closed, in one POST):
    each change is an event, in order, not only the last line's."""
    server = await start_server(db_url, str(tmp_path / "d"), "--auto-approve")
    stream = await SSEClient(
        f"{server.web_url}/devices/events?token={server.token}&type=door,alarm"
    ).connect()
    terminal = PushTerminal(server.push_url, "DOOR0003", reactor, users=1)
    try:
        await terminal.handshake()
        bodies = [
            "time=2026-11-29 10:00:00\tsensor=0101\trelay=00\talarm=0000\n",
            "time=2026-11-29 10:00:01\tsensor=0201\trelay=01\talarm=0000\n"
            "time=2026-11-29 10:00:02\tsensor=0101\trelay=00\talarm=0200\n",
        ]
        for body in bodies:
            await terminal._request("POST", "cdata", {"table": "rtstate"}, body)
        await wait_until(lambda: len(stream.events) >= 3)
        got = [
            (e["timestamp"], e["door"], e.get("event") or e["alarm"], e.get("state"))
            for e in stream.events
        ]
        assert got == [
            ("2026-11-29 10:00:01", 1, "opened", None),
            ("2026-11-29 10:00:02", 1, "closed", None),
            ("2026-11-29 10:00:02", 1, "tamper", "active"),
        ]
    finally:
        await stream.close()
        await terminal.close()
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_an_event_the_terminal_sent_no_time_for_is_dated_on_arrival(db_url: str, tmp_path):
    """Every event's ``timestamp`` is device-local ``YYYY-MM-DD HH:MM:SS``: state lines
    without a time (or with one that cannot be read) are dated when they arrived, in the
    device's zone."""
    server = await start_server(
        db_url, str(tmp_path / "d"), "--auto-approve", "--timezone", "Asia/Kathmandu"
    )
    stream = await SSEClient(
        f"{server.web_url}/devices/events?token={server.token}&type=door,alarm"
    ).connect()
    terminal = PushTerminal(server.push_url, "DOOR0004", reactor, users=1)
    try:
        await terminal.handshake()
        before = datetime.now(ZoneInfo("Asia/Kathmandu")).replace(tzinfo=None)
        for body in (
            "sensor=0101\trelay=00\talarm=0000\n",
            "sensor=0201\trelay=01\talarm=0000\n",
            "time=yesterday\tsensor=0101\trelay=00\talarm=0000\n",
        ):
            await terminal._request("POST", "cdata", {"table": "rtstate"}, body)
        await wait_until(lambda: len(stream.events) >= 2)
        after = datetime.now(ZoneInfo("Asia/Kathmandu")).replace(tzinfo=None)
        for event in stream.events:
            stamp = datetime.strptime(event["timestamp"], "%Y-%m-%d %H:%M:%S")
            assert before.replace(microsecond=0) <= stamp <= after, event
    finally:
        await stream.close()
        await terminal.close()
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_an_rtlog_line_with_a_non_ascii_code_keeps_the_rest_of_its_upload(server):
    # "event=²" passed str.isdigit() and int() raised: the upload failed, every line with it.
    terminal = PushTerminal(server.push_url, "DOOR0009", reactor, users=1)
    try:
        await terminal.handshake()
        lines = "".join(
            f"time=2026-11-29 10:00:0{i}\tpin={pin}\tcardno=0\teventaddr=1\tevent={code}"
            "\tinoutstatus=0\tverifytype=0\n"
            for i, (pin, code) in enumerate([("0", "²"), ("0", "200"), ("1", "0")])
        )
        code, text = await terminal._request(
            "POST", "cdata", {"table": "rtlog", "Stamp": "9999"}, lines
        )
        assert code == 200 and text.startswith("OK"), text
        code, page = await server.api("GET", "/api/device-log?type=rtlog")
        assert code == 200
        assert {r["op"] for r in page["items"]} >= {"rtlog:200"}
        punches = await server.store.events_after(0, 100)
        assert [e.type for e in punches].count("attendance") == 1
    finally:
        await terminal.close()


@pytest_twisted.ensureDeferred
async def test_the_same_pull_event_twice_in_one_second_is_two_events(server: RunningServer):
    # The exit button pressed twice, a tamper switch that bounces: the same payload in
    # the same second. The operation log's "resent" check (meant for push uploads that
    # a terminal repeats) kept the first and dropped the second: one event, not two.
    async with pull_terminal_on_stream(server, "TWICEPULL") as (emu, stream, body):
        for _ in range(3):
            emu.alarm(0x35)
        emu.emit_event(int(EventFlag.BUTTON), b"")
        emu.emit_event(int(EventFlag.BUTTON), b"")
        await wait_until(lambda: len(stream.events) >= 5)
        assert [e["event"] for e in stream.events] == ["exit_button"] * 5
        code, page = await server.api("GET", f"/api/device-log?device_id={body['id']}")
        assert len(page["items"]) == 5
