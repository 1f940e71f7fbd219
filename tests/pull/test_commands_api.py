"""Pull commands through the whole server (makeService, the API, the pull manager it
builds) against pull emulators on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from zk import ZK

from tests.harness import RunningServer, sleep, wait_until
from zkserver.emulator.pull import PullDevice, PullTCPFactory, build_device
from zkserver.records import DeviceUser


async def until_final(server: RunningServer, command_id: str, timeout: float = 15) -> dict:
    latest: dict[str, Any] = {}
    waited = 0.0
    while True:
        code, latest = await server.api("GET", f"/api/commands/{command_id}")
        assert code == 200, latest
        if latest["status"] in ("done", "failed", "expired", "cancelled"):
            return latest
        assert waited < timeout, latest
        await sleep(0.05)
        waited += 0.05


class Emulators:
    def __init__(self) -> None:
        self.factories: list[PullTCPFactory] = []
        self.ports: list[Any] = []

    def serve(self, device: PullDevice, port: int = 0) -> int:
        factory = PullTCPFactory(device, reactor)
        self.factories.append(factory)
        listening = reactor.listenTCP(port, factory, interface="127.0.0.1")
        self.ports.append(listening)
        return int(listening.getHost().port)

    async def stop(self) -> None:
        for port in self.ports:
            await port.stopListening()
        for factory in self.factories:
            await factory.close_connections()


@pytest_twisted.ensureDeferred
async def test_user_written_through_the_api_is_read_back_by_pyzk(server: RunningServer) -> None:
    emus = Emulators()
    try:
        emu = build_device(users=2, serial_number="PULLAPI1")
        port = emus.serve(emu)
        code, device = await server.api(
            "POST", "/api/devices", {"kind": "pull", "host": "127.0.0.1", "port": port}
        )
        assert code == 201, device
        await wait_until(lambda: any(s.flags for s in emu.sessions))
        code, command = await server.api(
            "POST",
            f"/api/devices/{device['id']}/commands",
            {"type": "user_upsert", "user_id": "3001", "name": "Ann Lee", "privilege": 14},
        )
        assert code == 201 and command["status"] == "queued", command
        done = await until_final(server, command["id"])
        assert (done["status"], done["attempts"], done["return_code"]) == ("done", 1, 0)
        assert done["result"] == "user 3001 added (uid 3)"

        def read() -> list[tuple[str, str, int]]:
            conn = ZK("127.0.0.1", port, timeout=5, ommit_ping=True).connect()
            try:
                return [(u.user_id, u.name, u.privilege) for u in conn.get_users()]
            finally:
                conn.disconnect()

        assert ("3001", "Ann Lee", 14) in await deferToThread(read)
        code, users = await server.api("GET", f"/api/devices/{device['id']}/users")
        assert "3001" in [u["user_id"] for u in users]
        # the pull terminal's user layout limits the name: 400 naming the field
        code, pulled = await server.api("GET", f"/api/devices/{device['id']}")
        assert pulled["info"]["user_layout"] == 72
        code, bad = await server.api(
            "POST",
            f"/api/devices/{device['id']}/commands",
            {"type": "user_upsert", "user_id": "3002", "name": "x" * 25},
        )
        assert code == 400 and bad["field"] == "name", bad
        # a face template cannot go to a pull terminal: 422, nothing queued
        code, bad = await server.api(
            "POST",
            f"/api/devices/{device['id']}/commands",
            {"type": "template_upsert", "user_id": "3001", "kind": "face", "format": "7",
             "data": "AAAA"},
        )  # fmt: skip
        assert code == 422 and "finger templates only" in bad["detail"], bad
        _, page = await server.api("GET", f"/api/commands?device_id={device['id']}")
        assert [c["type"] for c in page["items"]] == ["user_upsert"]
    finally:
        await emus.stop()


@pytest_twisted.ensureDeferred
async def test_a_28_byte_layout_terminal_refuses_a_pin_with_letters_at_the_api(
    server: RunningServer,
) -> None:
    emus = Emulators()
    try:
        emu = build_device(users=2, serial_number="PULLAPI28", user_size=28)
        port = emus.serve(emu)
        code, device = await server.api(
            "POST", "/api/devices", {"kind": "pull", "host": "127.0.0.1", "port": port}
        )
        await wait_until(lambda: any(s.flags for s in emu.sessions))
        _, pulled = await server.api("GET", f"/api/devices/{device['id']}")
        assert pulled["info"]["user_layout"] == 28
        for body in ({"user_id": "ab12", "name": "x"}, {"user_id": "4294967296", "name": "x"}):
            code, bad = await server.api(
                "POST", f"/api/devices/{device['id']}/commands", {"type": "user_upsert", **body}
            )
            assert code == 400 and bad["field"] == "user_id", bad
        _, page = await server.api("GET", f"/api/commands?device_id={device['id']}")
        assert page["items"] == []
    finally:
        await emus.stop()


@pytest_twisted.ensureDeferred
async def test_batch_to_pull_devices_with_one_offline(server: RunningServer) -> None:
    emus = Emulators()
    try:
        online = build_device(users=1, serial_number="PULLB1")
        online_port = emus.serve(online)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            offline_port = s.getsockname()[1]
        ids = []
        for port in (online_port, offline_port):
            code, device = await server.api(
                "POST", "/api/devices", {"kind": "pull", "host": "127.0.0.1", "port": port}
            )
            ids.append(device["id"])
        await wait_until(lambda: any(s.flags for s in online.sessions))
        code, batch = await server.api(
            "POST",
            "/api/commands",
            {"command": {"type": "open_door", "seconds": 2}, "all": True, "kind": "pull"},
        )
        assert code == 201 and len(batch["commands"]) == 2 and batch["skipped"] == []
        by_device = {c["device_id"]: c for c in batch["commands"]}
        done = await until_final(server, by_device[ids[0]]["id"])
        assert done["status"] == "done" and online.unlocks == [2.0]
        code, waiting = await server.api("GET", f"/api/commands/{by_device[ids[1]]['id']}")
        assert waiting["status"] == "queued" and waiting["attempts"] == 0
        # the offline terminal comes up: its command runs then
        late = build_device(users=1, serial_number="PULLB2")
        emus.serve(late, offline_port)
        done = await until_final(server, by_device[ids[1]]["id"])
        assert done["status"] == "done" and late.unlocks == [2.0]
        code, listed = await server.api("GET", f"/api/commands?batch_id={batch['batch_id']}")
        assert code == 200
        items = listed["items"]
        assert [c["status"] for c in items] == ["done", "done"]
    finally:
        await emus.stop()


@pytest_twisted.ensureDeferred
async def test_a_cp1251_terminal_names_are_read_and_written_in_cp1251(
    server: RunningServer,
) -> None:
    """docs/protocols.md §B.4: a Russian-language terminal keeps names in cp1251; the
    device's encoding reads them (automatic reads those bytes as GBK) and writes them."""
    emus = Emulators()
    try:
        emu = build_device(serial_number="PULLCP1251", encoding="cp1251")
        emu.users = [DeviceUser(user_id="1", name="Иванов", privilege=0, uid=1)]
        port = emus.serve(emu)
        code, device = await server.api(
            "POST",
            "/api/devices",
            {"kind": "pull", "host": "127.0.0.1", "port": port, "encoding": "cp1251"},
        )
        assert code == 201, device
        await wait_until(lambda: any(s.flags for s in emu.sessions))
        code, result = await server.api("POST", f"/api/devices/{device['id']}/read-users")
        assert (code, result) == (200, {"users": 1})
        code, users = await server.api("GET", f"/api/devices/{device['id']}/users")
        assert [u["name"] for u in users] == ["Иванов"]
        code, command = await server.api(
            "POST",
            f"/api/devices/{device['id']}/commands",
            {"type": "user_upsert", "user_id": "2", "name": "Пётр Соколов"},
        )
        assert code == 201, command
        done = await until_final(server, command["id"])
        assert done["status"] == "done", done
        assert {u.user_id: u.name for u in emu.users} == {"1": "Иванов", "2": "Пётр Соколов"}
        code, bad = await server.api(
            "POST",
            f"/api/devices/{device['id']}/commands",
            {"type": "user_upsert", "user_id": "3", "name": "张三"},
        )
        assert code == 400 and bad["field"] == "name" and "cp1251" in bad["detail"], bad
    finally:
        await emus.stop()
