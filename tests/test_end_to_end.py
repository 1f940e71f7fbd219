"""The whole path: emulated push terminal -> zkserver -> database -> SSE dashboard."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from tests.harness import RunningServer, SSEClient
from zkserver.emulator.push import PushTerminal


@pytest_twisted.ensureDeferred
async def test_emulated_terminal_punches_reach_every_dashboard_once(server: RunningServer):
    dashboards = [
        await SSEClient(f"{server.web_url}/devices/events?token={server.token}").connect()
        for _ in range(3)
    ]
    terminal = PushTerminal(server.push_url, "EMU0001", reactor, users=5, rate=50)
    try:
        summary = await terminal.run(count=40)
        assert summary is not None
        for dashboard in dashboards:
            await dashboard.wait_for(40)
        punches = [(p.user_id, p.timestamp) for p in terminal.attlog]
        for dashboard in dashboards:
            seen = [(e["user_id"], e["timestamp"]) for e in dashboard.of_type("attendance")]
            assert seen == punches
            assert {e["serial_number"] for e in dashboard.of_type("attendance")} == {"EMU0001"}
        _, page = await server.api("GET", "/api/attendance?limit=1000")
        assert len(page["items"]) == 40
        # The users it uploaded through OPERLOG are known by name.
        device_id = dashboards[0].of_type("attendance")[0]["device_id"]
        _, users = await server.api("GET", f"/api/devices/{device_id}/users")
        assert {u["name"] for u in users} >= {"Emulated User 1", "Emulated User 5"}
    finally:
        for dashboard in dashboards:
            await dashboard.close()


@pytest_twisted.ensureDeferred
async def test_queued_command_is_executed_and_its_result_recorded(server: RunningServer):
    terminal = PushTerminal(server.push_url, "EMU0002", reactor, users=2)
    await terminal.handshake()
    _, devices = await server.api("GET", "/api/devices")
    device_id = next(d["id"] for d in devices if d["serial_number"] == "EMU0002")
    code, command = await server.api(
        "POST",
        f"/api/devices/{device_id}/commands",
        {"command": "DATA UPDATE USERINFO PIN=77\tName=Zoe\tPri=0\tPasswd=\tCard=\tGrp=1\tTZ=0"},
    )
    assert code == 201
    dashboard = await SSEClient(
        f"{server.web_url}/devices/events?token={server.token}&type=command_result"
    ).connect()
    try:
        await terminal.poll()
        assert "77" in terminal.user_list
        await dashboard.wait_for(1, kind="command_result")
        _, commands = await server.api("GET", f"/api/devices/{device_id}/commands")
        assert commands[0]["id"] == command["id"]
        assert commands[0]["status"] == "done" and commands[0]["return_code"] == 0
    finally:
        await dashboard.close()


@pytest_twisted.ensureDeferred
async def test_terminal_resends_a_batch_the_server_refused(server: RunningServer):
    """While the device is pending (403) the terminal keeps its punches; after approval
    it resends and every punch arrives exactly once."""
    code, device = await server.api("POST", "/api/devices", {"serial_number": "EMU0003"})
    assert code == 201
    code, rejected = await server.api("POST", f"/api/devices/{device['id']}/reject")
    assert code == 200 and rejected["status"] == "rejected"
    terminal = PushTerminal(server.push_url, "EMU0003", reactor, users=3)
    punches = [terminal.make_punch() for _ in range(3)]
    try:
        await terminal.upload_attlog(punches)
    except Exception:
        pass
    else:
        raise AssertionError("a rejected device's upload must not be answered OK")
    await server.api("POST", f"/api/devices/{device['id']}/approve")
    assert await terminal.upload_attlog(punches) == 3
    assert await terminal.upload_attlog(punches) == 3  # resent again: still once
    _, page = await server.api("GET", f"/api/attendance?device_id={device['id']}")
    assert len(page["items"]) == 3
