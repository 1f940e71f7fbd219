"""Typed commands end to end on real sockets: API -> store -> getrequest -> emulated push
terminal -> devicecmd -> store -> command_status events (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor

from tests.harness import RunningServer, SSEClient, start_server, wait_until
from zkserver.emulator.push import PushTerminal


async def _start(db_url: str, data_dir: str, timeout: str) -> RunningServer:
    return await start_server(
        db_url, data_dir, "--auto-approve", "--no-pull",
        "--command-timeout", timeout, "--command-retries", "2", "--command-ttl", "30",
    )  # fmt: skip


@pytest_twisted.async_yield_fixture
async def fast(db_url: str, tmp_path) -> AsyncIterator[RunningServer]:
    """A server whose commands time out after 0.5 s, sent twice at most, kept 30 s."""
    running = await _start(db_url, str(tmp_path / "data"), "0.5")
    yield running
    await running.stop()


@pytest_twisted.async_yield_fixture
async def steady(db_url: str, tmp_path) -> AsyncIterator[RunningServer]:
    """The same with a 60 s timeout: nothing is sent again while a loaded machine is slow."""
    running = await _start(db_url, str(tmp_path / "data"), "60")
    yield running
    await running.stop()


async def _terminal(server: RunningServer, serial: str, **kw: Any) -> tuple[PushTerminal, str]:
    terminal = PushTerminal(server.push_url, serial, reactor, users=2, **kw)
    await terminal.handshake()
    _, devices = await server.api("GET", "/api/devices")
    return terminal, next(d["id"] for d in devices if d["serial_number"] == serial)


async def _dashboard(server: RunningServer) -> SSEClient:
    return await SSEClient(
        f"{server.web_url}/devices/events?token={server.token}&type=command_status"
    ).connect()


def _statuses(dashboard: SSEClient, command_id: str) -> list[str]:
    return [
        e["status"] for e in dashboard.of_type("command_status") if e["command_id"] == command_id
    ]


B64 = base64.b64encode(bytes(range(200))).decode()


@pytest_twisted.ensureDeferred
async def test_every_push_type_end_to_end(steady: RunningServer) -> None:
    terminal, device_id = await _terminal(steady, "CMDE2E1")
    terminal.clock_offset = 3600.0  # an hour steady: sync_time must set it right
    dashboard = await _dashboard(steady)
    commands = [
        {"type": "sync_time"},
        {"type": "info"},
        {"type": "check"},
        {"type": "set_option", "key": "Delay", "value": "7"},
        {"type": "open_door", "seconds": 5},
        {"type": "user_upsert", "user_id": "77", "name": "Zoe Quinn", "privilege": 14,
         "password": "1234", "card": "12345678", "group": "2"},
        {"type": "template_upsert", "user_id": "77", "kind": "finger", "index": 6,
         "format": "10", "data": B64},
        {"type": "template_upsert", "user_id": "77", "kind": "face", "index": 0,
         "format": "7", "data": B64},
        {"type": "template_upsert", "user_id": "77", "kind": "biodata", "index": 0,
         "format": "39", "data": B64},
        {"type": "template_upsert", "user_id": "77", "kind": "userpic", "data": B64},
        {"type": "enroll_finger", "user_id": "77", "finger": 3},
        {"type": "query_users"},
        {"type": "query_attlog", "since": "2000-01-01 00:00:00", "until": "2099-01-01 00:00:00"},
        {"type": "user_delete", "user_id": "404"},
        {"type": "raw", "command": "RELOAD OPTIONS"},
    ]  # fmt: skip
    later = [
        {"type": "clear_log", "confirm": True},
        {"type": "clear_data", "confirm": True},
        {"type": "reboot"},
    ]
    try:
        queued = []

        async def send(bodies: list[dict[str, Any]]) -> None:
            for body in bodies:
                code, command = await steady.api("POST", f"/api/devices/{device_id}/commands", body)
                assert code == 201, command
                assert command["status"] == "queued" and command["attempts"] == 0
                assert command["type"] == body["type"]
                queued.append(command)

        await send(commands)
        punch = terminal.make_punch()  # a punch for query_attlog to upload again
        await terminal.poll()  # all of them fit one reply, run in order, one devicecmd
        assert [c[0] for c in terminal.commands_done] == [c["id"] for c in queued]
        assert set(terminal.templates) == {
            ("FINGERTMP", "77", "6"),
            ("FACE", "77", "0"),
            ("BIODATA", "77", "0"),
            ("USERPIC", "77", ""),
        }
        assert terminal.templates[("FINGERTMP", "77", "6")]["Size"] == str(len(B64))
        await send(later)
        await terminal.poll()
        await wait_until(
            lambda: all(
                _statuses(dashboard, c["id"])[-1:] in (["done"], ["failed"]) for c in queued
            )
        )
        for command in queued:  # one event per status change, in order
            final = "failed" if command["type"] == "user_delete" else "done"
            assert _statuses(dashboard, command["id"]) == ["queued", "sent", final]

        by_type = {c["type"]: c for c in queued}
        code, missing = await steady.api("GET", f"/api/commands/{by_type['user_delete']['id']}")
        assert (missing["status"], missing["return_code"], missing["result"]) == (
            "failed",
            -10,
            "user not found",
        )
        # what the terminal now holds
        assert abs(terminal.clock_offset) < 5
        assert terminal.options_set["Delay"] == "7" and terminal.doors_opened == 1
        assert terminal.enrolling == ("77", "3") and terminal.reboots == 1
        assert terminal.user_list == {} and terminal.attlog == [] and terminal.templates == {}
        # the server learnt from the answers
        _, device = await steady.api("GET", f"/api/devices/{device_id}")
        assert device["info"]["FirmVer"] == terminal.firmware
        _, users = await steady.api("GET", f"/api/devices/{device_id}/users")
        zoe = next(u for u in users if u["user_id"] == "77")
        assert (zoe["name"], zoe["privilege"], zoe["card"]) == ("Zoe Quinn", 14, "12345678")
        _, page = await steady.api("GET", f"/api/attendance?device_id={device_id}")
        assert [(p["user_id"], p["timestamp"]) for p in page["items"]] == [
            (punch.user_id, punch.timestamp)
        ]
        # the sent line of a sync_time carries the device's time now
        _, sync = await steady.api("GET", f"/api/commands/{by_type['sync_time']['id']}")
        assert sync["command"].startswith("SET OPTION DateTime=")
        # the legacy alias is still published for results
        legacy = await SSEClient(
            f"{steady.web_url}/devices/events?token={steady.token}&type=command_result&last_event_id=0"
        ).connect()
        await legacy.wait_for(len(queued), kind="command_result")
        await legacy.close()
    finally:
        await dashboard.close()
        await terminal.close()


@pytest_twisted.ensureDeferred
async def test_unanswered_command_is_sent_again_then_expires(fast: RunningServer) -> None:
    terminal, device_id = await _terminal(fast, "CMDEXP1")
    dashboard = await _dashboard(fast)
    try:
        _, lost = await fast.api("POST", f"/api/devices/{device_id}/commands", {"type": "check"})
        terminal.silent.add(lost["id"])
        await terminal.poll()
        await wait_until(lambda: _statuses(dashboard, lost["id"]) == ["queued", "sent", "queued"])
        _, again = await fast.api("GET", f"/api/commands/{lost['id']}")
        assert again["status"] == "queued" and again["attempts"] == 1
        await terminal.poll()  # the same id is sent again
        await wait_until(lambda: _statuses(dashboard, lost["id"])[-1:] == ["expired"])
        assert _statuses(dashboard, lost["id"]) == ["queued", "sent", "queued", "sent", "expired"]
        _, expired = await fast.api("GET", f"/api/commands/{lost['id']}")
        assert expired["attempts"] == 2 and expired["finished_at"]
        assert expired["result"] == "no answer from the terminal"
        assert await terminal.poll() == []  # never sent a third time
    finally:
        await dashboard.close()
        await terminal.close()


@pytest_twisted.ensureDeferred
async def test_a_resent_command_is_never_overtaken(fast: RunningServer) -> None:
    """While a command is sent but unanswered, later ones wait: after its resend the
    terminal still runs them in queue order (docs/protocols.md §A.7)."""
    terminal, device_id = await _terminal(fast, "CMDOVT1")
    dashboard = await _dashboard(fast)
    try:
        _, first = await fast.api(
            "POST",
            f"/api/devices/{device_id}/commands",
            {"type": "user_upsert", "user_id": "9", "name": "Old"},
        )
        terminal.silent.add(first["id"])
        assert await terminal.poll() == []  # sent, never reported
        _, second = await fast.api(
            "POST",
            f"/api/devices/{device_id}/commands",
            {"type": "user_upsert", "user_id": "9", "name": "New"},
        )
        assert await terminal.poll() == []  # waits behind the unanswered one
        _, waiting = await fast.api("GET", f"/api/commands/{second['id']}")
        assert waiting["status"] == "queued" and waiting["attempts"] == 0
        await wait_until(lambda: _statuses(dashboard, first["id"])[-1:] == ["queued"])
        terminal.silent.clear()
        await terminal.poll()  # one reply: the resent first, then the second
        assert [c[0] for c in terminal.commands_done] == [first["id"], second["id"]]
        assert terminal.user_list["9"].name == "New"
    finally:
        await dashboard.close()
        await terminal.close()


@pytest_twisted.ensureDeferred
async def test_odd_devicecmd_bodies(steady: RunningServer) -> None:
    """CRLF, several results in one body, unknown and repeated ids, a missing or
    non-numeric Return, results for cancelled commands and a huge result: each command
    gets one outcome, nothing crashes, and a result is kept to 64 KiB."""
    terminal, device_id = await _terminal(steady, "CMDODD1")
    try:
        ids = []
        for body in ({"type": "info"}, {"type": "check"}, {"type": "check"}, {"type": "check"}):
            _, command = await steady.api("POST", f"/api/devices/{device_id}/commands", body)
            ids.append(command["id"])
        _, cancelled = await steady.api(
            "POST", f"/api/devices/{device_id}/commands", {"type": "check"}
        )
        await steady.api("DELETE", f"/api/commands/{cancelled['id']}")
        terminal.silent.add("")  # take them all, answer none
        await terminal.poll()
        info, check, bad, huge = ids
        body = (
            f"ID={info}&Return=0&CMD=INFO\r\n~SerialNumber=CMDODD1\r\nFirmVer=Ver 6.60\r\n"
            f"ID={check}&Return=0&CMD=CHECK\r\nID=987654&Return=0&CMD=CHECK\r\n"
            f"ID={cancelled['id']}&Return=0&CMD=CHECK\r\nID={bad}&Return=x&CMD=CHECK\r\n"
            f"ID={check}&Return=-1002&CMD=CHECK\r\nID=&Return=0\r\n"
            f"ID={huge}&Return=0&CMD=CHECK\r\n" + "y" * (1 << 20) + "\r\n"
        )
        code, text = await terminal._request("POST", "devicecmd", {}, body)
        assert (code, text.strip()) == (200, "OK")
        got = {i: (await steady.api("GET", f"/api/commands/{i}"))[1] for i in ids}
        assert [got[i]["status"] for i in ids] == ["done", "done", "failed", "done"]
        assert got[check]["return_code"] == 0  # the repeated result changed nothing
        assert (got[bad]["return_code"], got[bad]["result"]) == (None, "no return code")
        assert len(got[huge]["result"]) == 64 * 1024
        _, still = await steady.api("GET", f"/api/commands/{cancelled['id']}")
        assert still["status"] == "cancelled"
        _, device = await steady.api("GET", f"/api/devices/{device_id}")
        assert device["info"]["FirmVer"] == "Ver 6.60"
    finally:
        await terminal.close()


@pytest_twisted.ensureDeferred
async def test_cancel_only_while_queued(steady: RunningServer) -> None:
    terminal, device_id = await _terminal(steady, "CMDCAN1")
    try:
        _, first = await steady.api("POST", f"/api/devices/{device_id}/commands", {"type": "info"})
        _, second = await steady.api(
            "POST", f"/api/devices/{device_id}/commands", {"type": "reboot"}
        )
        code, cancelled = await steady.api("DELETE", f"/api/commands/{second['id']}")
        assert code == 200 and cancelled["status"] == "cancelled" and cancelled["finished_at"]
        code, error = await steady.api("DELETE", f"/api/commands/{second['id']}")
        assert code == 409 and "cancelled" in error["detail"]
        assert (await steady.api("DELETE", "/api/commands/987654321"))[0] == 404
        assert (await steady.api("DELETE", "/api/commands/nope"))[0] == 404
        done = await terminal.poll()
        assert [d[0] for d in done] == [first["id"]] and terminal.reboots == 0
        code, error = await steady.api("DELETE", f"/api/commands/{first['id']}")
        assert code == 409
    finally:
        await terminal.close()


@pytest_twisted.ensureDeferred
async def test_commands_run_in_queue_order_per_device(steady: RunningServer) -> None:
    terminal, device_id = await _terminal(steady, "CMDORD1")
    other, other_id = await _terminal(steady, "CMDORD2")
    try:
        ids = []
        for n in range(6):
            for target in (device_id, other_id):
                code, command = await steady.api(
                    "POST",
                    f"/api/devices/{target}/commands",
                    {"type": "user_upsert", "user_id": "5", "name": f"Name {n}"},
                )
                assert code == 201
                if target == device_id:
                    ids.append(command["id"])
            if n == 2:
                await terminal.poll()  # a first reply carries the first three
        await terminal.poll()
        await other.poll()
        assert [c[0] for c in terminal.commands_done] == ids
        assert terminal.user_list["5"].name == "Name 5" and other.user_list["5"].name == "Name 5"
        assert [int(i) for i in ids] == sorted(int(i) for i in ids)
    finally:
        await terminal.close()
        await other.close()


@pytest_twisted.ensureDeferred
async def test_batch_to_several_devices_with_one_offline(steady: RunningServer) -> None:
    one, one_id = await _terminal(steady, "CMDBAT1")
    two, two_id = await _terminal(steady, "CMDBAT2")
    code, offline = await steady.api("POST", "/api/devices", {"serial_number": "CMDBAT3"})
    assert code == 201
    code, pull = await steady.api(
        "POST", "/api/devices", {"kind": "pull", "host": "127.0.0.1", "port": 9}
    )
    assert code == 201
    code, pending = await steady.api("POST", "/api/devices", {"serial_number": "CMDBAT4"})
    await steady.api("POST", f"/api/devices/{pending['id']}/reject")
    try:
        code, batch = await steady.api(
            "POST", "/api/commands", {"command": {"type": "check"}, "all": True}
        )
        assert code == 201, batch
        assert {c["device_id"] for c in batch["commands"]} == {one_id, two_id, offline["id"]}
        assert batch["skipped"] == [
            {"device_id": pull["id"], "reason": "a pull terminal cannot do 'check'"}
        ]
        assert {c["batch_id"] for c in batch["commands"]} == {batch["batch_id"]}
        await one.poll()
        await two.poll()
        code, page = await steady.api("GET", f"/api/commands?batch_id={batch['batch_id']}")
        status = {c["device_id"]: c["status"] for c in page["items"]}
        assert status == {one_id: "done", two_id: "done", offline["id"]: "queued"}
        code, page = await steady.api(
            "GET", f"/api/commands?batch_id={batch['batch_id']}&status=queued"
        )
        assert [c["device_id"] for c in page["items"]] == [offline["id"]]

        # by ids; only pull devices cannot do it: 422, nothing queued
        code, error = await steady.api(
            "POST",
            "/api/commands",
            {"command": {"type": "raw", "command": "INFO"}, "device_ids": [pull["id"]]},
        )
        assert code == 422 and "pull" in error["detail"]
        code, error = await steady.api(
            "POST",
            "/api/commands",
            {"command": {"type": "info"}, "device_ids": [one_id, pending["id"]]},
        )
        assert code == 409
        code, error = await steady.api(
            "POST", "/api/commands", {"command": {"type": "info"}, "all": True, "kind": "pull"}
        )
        assert code == 201 and [c["device_id"] for c in error["commands"]] == [pull["id"]]
        code, error = await steady.api("POST", "/api/commands", {"command": {"type": "info"}})
        assert code == 400 and error["field"] == "device_ids"
        code, page = await steady.api("GET", "/api/commands?limit=1000")
        assert len(page["items"]) == 4  # 3 checks + 1 info on the pull device
    finally:
        await one.close()
        await two.close()


@pytest_twisted.ensureDeferred
async def test_bad_commands_are_refused_and_nothing_is_queued(steady: RunningServer) -> None:
    _, push = await steady.api("POST", "/api/devices", {"serial_number": "CMDBAD1"})
    _, pull = await steady.api(
        "POST", "/api/devices", {"kind": "pull", "host": "127.0.0.1", "port": 9}
    )
    _, pending = await steady.api("POST", "/api/devices", {"serial_number": "CMDBAD2"})
    await steady.api("POST", f"/api/devices/{pending['id']}/reject")
    url = f"/api/devices/{push['id']}/commands"
    cases = [
        ({"type": "nope"}, 400, "type"),
        ({"type": "user_upsert", "user_id": "a b"}, 400, "user_id"),
        ({"type": "user_upsert", "user_id": "1", "name": "A\tB"}, 400, "name"),
        ({"type": "user_upsert", "user_id": "1", "privilege": 1}, 400, "privilege"),
        ({"type": "open_door", "seconds": 300}, 400, "seconds"),
        ({"type": "clear_log"}, 400, "confirm"),
        ({"type": "reboot", "extra": 1}, 400, "extra"),
    ]
    for body, code, field in cases:
        got, error = await steady.api("POST", url, body)
        assert (got, error.get("field")) == (code, field), (body, error)
        assert field in error["detail"]
    huge = {
        "type": "template_upsert",
        "user_id": "1",
        "kind": "userpic",
        "data": "A" * (900 * 1024),
    }
    got, error = await steady.api("POST", url, huge)
    assert got == 413, error
    got, error = await steady.api(
        "POST",
        f"/api/devices/{pull['id']}/commands",
        {"type": "set_option", "key": "A", "value": "1"},
    )
    assert got == 422 and "pull" in error["detail"]
    got, error = await steady.api(
        "POST",
        f"/api/devices/{pull['id']}/commands",
        {"type": "user_upsert", "user_id": "1", "name": "x" * 30},
    )
    assert got == 400 and error["field"] == "name"
    got, error = await steady.api(
        "POST", f"/api/devices/{pending['id']}/commands", {"type": "reboot"}
    )
    assert got == 409
    assert (await steady.api("POST", "/api/devices/nope/commands", {"type": "reboot"}))[0] == 404
    _, page = await steady.api("GET", "/api/commands")
    assert page == {"items": [], "next_cursor": None}
    assert (await steady.api("GET", "/api/commands?status=bogus"))[0] == 400
    assert (await steady.api("GET", "/api/commands?cursor=zz"))[0] == 400
    assert (await steady.api("GET", "/api/commands/12345"))[0] == 404
    # the one-line form still queues a raw command
    got, raw = await steady.api("POST", url, {"command": "INFO"})
    assert got == 201 and (raw["type"], raw["command"]) == ("raw", "INFO")


@pytest_twisted.ensureDeferred
async def test_a_command_waiting_past_its_ttl_expires(db_url: str, tmp_path) -> None:
    server = await start_server(
        db_url,
        str(tmp_path / "ttl"),
        "--no-pull",
        "--command-ttl",
        "0.3",
        "--command-timeout",
        "0.4",
    )
    try:
        _, device = await server.api("POST", "/api/devices", {"serial_number": "CMDTTL1"})
        code, command = await server.api(
            "POST", f"/api/devices/{device['id']}/commands", {"type": "reboot"}
        )
        assert code == 201 and command["expires_at"] > command["queued_at"]

        dashboard = await SSEClient(
            f"{server.web_url}/devices/events?token={server.token}&type=command_status"
            "&last_event_id=0"
        ).connect()
        try:
            await wait_until(lambda: _statuses(dashboard, command["id"]) == ["queued", "expired"])
        finally:
            await dashboard.close()
        _, final = await server.api("GET", f"/api/commands/{command['id']}")
        assert final["attempts"] == 0 and final["result"] == "not run before it expired"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_large_commands_share_replies_up_to_the_cap(steady: RunningServer) -> None:
    terminal, device_id = await _terminal(steady, "CMDBIG1")
    big = base64.b64encode(bytes(360 * 1024)).decode()  # 480 KiB of base64: two do not fit
    try:
        ids = []
        for pin in ("1", "2"):
            code, command = await steady.api(
                "POST",
                f"/api/devices/{device_id}/commands",
                {"type": "template_upsert", "user_id": pin, "kind": "userpic", "data": big},
            )
            assert code == 201, command
            assert command["command"].endswith("...") and len(command["command"]) == 203
            assert command["data"] == big
            ids.append(command["id"])
        _, small = await steady.api("POST", f"/api/devices/{device_id}/commands", {"type": "info"})
        first = await terminal.poll()
        assert [c[0] for c in first] == ids[:1] and first[0][2] == 0
        second = await terminal.poll()  # the second picture and the small one after it
        assert [c[0] for c in second] == [ids[1], small["id"]]
        assert terminal.templates[("USERPIC", "2", "")]["Content"] == big
    finally:
        await terminal.close()


@pytest_twisted.ensureDeferred
async def test_a_result_for_a_command_never_sent_changes_nothing(steady: RunningServer) -> None:
    """A terminal reporting the id of a command the server never sent it (ids of a former
    installation, a replayed body) must not finish that command: it is still run later.
    A late result for a command sent and queued again after its timeout still counts."""
    terminal, device_id = await _terminal(steady, "CMDNEV1")
    try:
        _, first = await steady.api("POST", f"/api/devices/{device_id}/commands", {"type": "check"})
        terminal.silent.add(first["id"])
        assert await terminal.poll() == []  # sent, not answered: the queue waits behind it
        _, second = await steady.api(
            "POST",
            f"/api/devices/{device_id}/commands",
            {"type": "user_upsert", "user_id": "77", "name": "Never Sent"},
        )
        _, third = await steady.api("POST", f"/api/devices/{device_id}/commands", {"type": "info"})
        body = f"ID={second['id']}&Return=0&CMD=DATA\r\nID={third['id']}&Return=-1002&CMD=INFO\r\n"
        code, text = await terminal._request("POST", "devicecmd", {}, body)
        assert (code, text.strip()) == (200, "OK")
        for command in (second, third):
            _, now = await steady.api("GET", f"/api/commands/{command['id']}")
            assert (now["status"], now["attempts"], now["return_code"]) == ("queued", 0, None)
        # the in-flight one is answered: the others are sent and run for real
        code, text = await terminal._request(
            "POST", "devicecmd", {}, f"ID={first['id']}&Return=0&CMD=CHECK\n"
        )
        terminal.silent.clear()
        done = await terminal.poll()
        assert [c[0] for c in done] == [second["id"], third["id"]]
        assert terminal.user_list["77"].name == "Never Sent"
        _, ran = await steady.api("GET", f"/api/commands/{second['id']}")
        assert (ran["status"], ran["attempts"]) == ("done", 1)
    finally:
        await terminal.close()


@pytest_twisted.ensureDeferred
async def test_a_head_getrequest_hands_out_no_command(steady: RunningServer) -> None:
    """HEAD gets the headers only: a command claimed by it would be marked sent and never
    reach the terminal (held until its timeout, then sent again)."""
    terminal, device_id = await _terminal(steady, "CMDHEAD1")
    try:
        _, command = await steady.api(
            "POST", f"/api/devices/{device_id}/commands", {"type": "check"}
        )
        response = await treq.head(
            f"{steady.push_url}/iclock/getrequest?SN=CMDHEAD1", persistent=False
        )
        await response.content()
        assert response.code == 200
        _, now = await steady.api("GET", f"/api/commands/{command['id']}")
        assert (now["status"], now["attempts"]) == ("queued", 0)
        assert [c[0] for c in await terminal.poll()] == [command["id"]]
    finally:
        await terminal.close()
