"""``zkserver commands ...``, run as a real subprocess against a real server (both
databases), with an emulated push terminal answering."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from tests.harness import RunningServer, sleep
from tests.test_cli import assert_one_line_error, remote, run_cli
from zkserver.cli.client import CLIError
from zkserver.cli.commands import command_fields, command_table
from zkserver.emulator.push import PushTerminal


def test_fields_from_key_value_words() -> None:
    assert command_fields(["user_id=7", "name=Ann Lee", "confirm=true", "x=False", "v="]) == {
        "user_id": "7",
        "name": "Ann Lee",
        "confirm": True,
        "x": False,
        "v": "",
    }
    with pytest.raises(CLIError):
        command_fields(["novalue"])
    with pytest.raises(CLIError):
        command_fields(["=1"])


def test_table() -> None:
    table = command_table(
        [
            {
                "id": "12",
                "device_id": "d1",
                "type": "reboot",
                "status": "done",
                "attempts": 1,
                "return_code": 0,
                "result": "line one\nline two",
                "queued_at": "2026-01-01T00:00:00",
            }
        ],
        {"d1": "SN1"},
    )
    header, row = table.splitlines()
    assert header.split() == [
        "ID",
        "DEVICE",
        "TYPE",
        "STATUS",
        "TRIES",
        "RETURN",
        "RESULT",
        "QUEUED",
    ]
    assert row.split()[:6] == ["12", "SN1", "reboot", "done", "1", "0"]
    assert "line one line two" in row


@pytest_twisted.ensureDeferred
async def test_send_list_cancel(server: RunningServer) -> None:
    terminal = PushTerminal(server.push_url, "CLICMD1", reactor, users=1)
    await terminal.handshake()
    try:
        out, err, code = await run_cli(
            *remote(server),
            "commands",
            "send",
            "CLICMD1",
            "user_upsert",
            "user_id=9",
            "name=Ann Lee",
        )
        assert code == 0, err
        assert "(user_upsert) for CLICMD1 is queued" in out
        out, err, code = await run_cli(
            *remote(server), "--json", "commands", "send", "CLICMD1", "clear_log", "confirm=true"
        )
        assert code == 0, err
        clear = json.loads(out)
        assert (clear["type"], clear["confirm"], clear["status"]) == ("clear_log", True, "queued")
        # a bad field is named, nothing queued
        out, err, code = await run_cli(
            *remote(server), "commands", "send", "CLICMD1", "open_door", "seconds=999"
        )
        assert code == 1
        assert_one_line_error(err, "seconds must be between 1 and 254")
        # cancel the clear_log; then the terminal runs what is left
        out, err, code = await run_cli(*remote(server), "commands", "cancel", clear["id"])
        assert (code, out.strip()) == (0, f"cancelled command {clear['id']} (clear_log)"), err
        out, err, code = await run_cli(*remote(server), "commands", "cancel", clear["id"])
        assert code == 1 and "cannot be cancelled" in err
        await terminal.poll()
        assert terminal.user_list["9"].name == "Ann Lee"
        out, err, code = await run_cli(*remote(server), "commands", "list", "--device", "CLICMD1")
        assert code == 0, err
        lines = out.strip().splitlines()
        assert lines[0].split()[:4] == ["ID", "DEVICE", "TYPE", "STATUS"]
        assert [line.split()[2:4] for line in lines[1:]] == [
            ["clear_log", "cancelled"],
            ["user_upsert", "done"],
        ]
        out, err, code = await run_cli(
            *remote(server), "--json", "commands", "list", "--status", "done"
        )
        assert [c["type"] for c in json.loads(out)] == ["user_upsert"]
    finally:
        await terminal.close()


@pytest_twisted.ensureDeferred
async def test_send_wait_and_send_all(server: RunningServer) -> None:
    terminal = PushTerminal(server.push_url, "CLICMD2", reactor, users=1)
    await terminal.handshake()
    await server.api("POST", "/api/devices", {"kind": "pull", "host": "127.0.0.1", "port": 9})
    try:
        sent = Deferred.fromCoroutine(
            run_cli(*remote(server), "commands", "send", "--wait", "CLICMD2", "info")
        )
        queued: list = []
        for _ in range(200):  # until the console has queued it; then the terminal polls
            queued = (await server.api("GET", "/api/commands?status=queued"))[1]["items"]
            if queued:
                break
            await sleep(0.05)
        await terminal.poll()
        out, err, code = await sent
        assert code == 0, err
        assert "(info) for CLICMD2 is done: ~SerialNumber=CLICMD2" in out
        out, err, code = await run_cli(
            *remote(server), "commands", "send", "--all", "--kind", "push", "check"
        )
        assert code == 0, err
        assert out.startswith("queued check for 1 devices (batch ")
        out, err, code = await run_cli(*remote(server), "commands", "send", "--all", "check")
        assert code == 0 and "skipped" in out and "pull terminal cannot do 'check'" in out
        out, err, code = await run_cli(
            *remote(server), "commands", "send", "--all", "raw", "command=INFO", "--kind", "pull"
        )
        assert code == 1 and "(422)" in err
        out, err, code = await run_cli(*remote(server), "commands", "send", "CLICMD2")
        assert code == 2
        out, err, code = await run_cli(*remote(server), "commands", "send", "NOPE", "info")
        assert code == 1 and "no device" in err
    finally:
        await terminal.close()
