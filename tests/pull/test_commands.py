"""Pull commands end to end on loopback sockets: Commands (the lifecycle, a real store on
SQLite and PostgreSQL) -> PullManager -> the device's session -> the pull emulator."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest_twisted
from attrs import define
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.harness import wait_until
from tests.pull.test_service import FlakyStore, Recorder, World
from zkserver.broadcaster import Broadcaster, Subscriber
from zkserver.commands import Commands, parse_command
from zkserver.commands.spec import FINAL_STATUSES
from zkserver.devices import DeviceRegistry
from zkserver.emulator.pull import PullDevice, build_device
from zkserver.ingest import Ingest
from zkserver.pull.manager import PullManager
from zkserver.pull.service import device_now
from zkserver.records import Command, Device
from zkserver.store import open_store


@define(eq=False)
class Ctl:
    world: World
    commands: Commands

    def manager(self, **options: Any) -> PullManager:
        return self.world.manager(commands=self.commands, **options)

    async def queue(self, device: Device, **body: Any) -> Command:
        current = await self.world.device(device.id)
        return await self.commands.queue(current, parse_command(body))

    async def get(self, command_id: str) -> Command:
        found = await self.commands.get(command_id)
        assert found is not None
        return found

    async def final(self, command: Command, timeout: float = 10.0) -> Command:
        """The command once it is done, failed, expired or cancelled."""
        waited = 0.0
        while True:
            latest = await self.get(command.id)
            if latest.status in FINAL_STATUSES:
                return latest
            if waited >= timeout:
                raise AssertionError(f"command {command.type} still {latest.status}")
            await deferLater(reactor, 0.05, lambda: None)
            waited += 0.05

    def statuses(self, command_id: str) -> list[str]:
        return [
            e["status"]
            for e in self.world.recorder.of_type("command_status")
            if e["command_id"] == command_id
        ]


@pytest_twisted.async_yield_fixture
async def ctl(db_url: str, tmp_path: Any) -> AsyncIterator[Ctl]:
    store = open_store(db_url, str(tmp_path), reactor)
    await store.start()
    flaky = FlakyStore(store)
    broadcaster = Broadcaster(source=store)
    broadcaster.last_published = await store.last_event_id()
    recorder = Recorder()
    broadcaster.subscribe(Subscriber(target=recorder, on_overflow=lambda s: None))
    ingest = Ingest(store=flaky, broadcaster=broadcaster)  # type: ignore[arg-type]
    registry = DeviceRegistry(store=flaky, ingest=ingest, clock=reactor)  # type: ignore[arg-type]
    commands = Commands(store=store, ingest=ingest, clock=reactor, timeout=30, ttl=3600)
    w = World(flaky, store, ingest, registry, recorder)
    try:
        yield Ctl(w, commands)
    finally:
        await w.close()
        await store.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def online(ctl: Ctl, emu: PullDevice, **kw: Any) -> tuple[Device, PullManager]:
    device = await ctl.world.add(await ctl.world.emulator(emu), **kw)
    manager = ctl.manager()
    await wait_until(lambda: any(s.flags for s in emu.sessions))  # registered for events
    return await ctl.world.device(device.id), manager


# --------------------------------------------------------------------------- tests


@pytest_twisted.ensureDeferred
async def test_sync_time_runs_on_the_live_session_and_reports_each_status(ctl: Ctl) -> None:
    emu = build_device(users=2)
    emu.clock_offset = -3600.0
    device, _ = await online(ctl, emu)
    command = await ctl.queue(device, type="sync_time")
    done = await ctl.final(command)
    assert (done.status, done.return_code, done.attempts) == ("done", 0, 1)
    assert done.result.startswith("time set to ")
    assert abs(emu.clock_offset) < 5  # emulator clock and host clock agree again
    await wait_until(lambda: ctl.statuses(command.id) == ["queued", "sent", "done"])
    event = [e for e in ctl.world.recorder.of_type("command_status")][-1]
    assert event["device_id"] == device.id and event["command_type"] == "sync_time"
    assert event["serial_number"] == emu.serial_number


@pytest_twisted.ensureDeferred
async def test_command_queued_while_offline_runs_when_the_device_connects(ctl: Ctl) -> None:
    port = free_port()
    device = await ctl.world.add(port)
    manager = ctl.manager()
    await wait_until(
        lambda: device.id in manager.devices and manager.devices[device.id].attempts >= 2
    )  # refused: offline
    command = await ctl.queue(device, type="query_users")
    assert (await ctl.get(command.id)).status == "queued"
    emu = build_device(users=4)
    from zkserver.emulator.pull import PullTCPFactory

    factory = PullTCPFactory(emu, reactor)
    ctl.world.factories.append(factory)
    ctl.world.listeners.append(reactor.listenTCP(port, factory, interface="127.0.0.1"))
    done = await ctl.final(command)
    assert (done.status, done.result) == ("done", "4 users")
    assert [u.user_id for u in await ctl.world.real_store.users(device.id)] == ["1", "2", "3", "4"]


@pytest_twisted.ensureDeferred
async def test_commands_run_in_the_order_they_were_queued(ctl: Ctl) -> None:
    emu = build_device(users=3, records=10)
    port = free_port()
    device = await ctl.world.add(port)
    ctl.manager()
    types = ["query_attlog", "sync_time", "query_users", "info", "sync_time"]
    queued = []
    for t in types:
        body: dict[str, Any] = {"type": t}
        if t == "query_attlog":
            body |= {"since": "2000-01-01 00:00:00", "until": "2099-01-01 00:00:00"}
        queued.append(await ctl.queue(device, **body))
    from zkserver.emulator.pull import PullTCPFactory

    factory = PullTCPFactory(emu, reactor)
    ctl.world.factories.append(factory)
    ctl.world.listeners.append(reactor.listenTCP(port, factory, interface="127.0.0.1"))
    finished = [await ctl.final(c) for c in queued]
    assert [c.status for c in finished] == ["done"] * len(types)
    order = sorted(finished, key=lambda c: c.finished_at or "")
    assert [c.id for c in order] == [c.id for c in queued]
    assert finished[0].result == "10 records read, 10 in range, 0 new"
    info = finished[3].result
    assert '"user_layout": 72' in info and '"fp_version": 10' in info


@pytest_twisted.ensureDeferred
async def test_a_command_for_an_offline_device_expires_after_the_ttl(ctl: Ctl) -> None:
    device = await ctl.world.add(free_port())
    ctl.commands.ttl = 0.2
    ctl.manager()
    command = await ctl.queue(device, type="reboot")
    await deferLater(reactor, 0.3, lambda: None)
    await ctl.commands.sweep()
    expired = await ctl.get(command.id)
    assert (expired.status, expired.attempts) == ("expired", 0)
    await wait_until(lambda: ctl.statuses(command.id) == ["queued", "expired"])


@pytest_twisted.ensureDeferred
async def test_reboot_shows_rebooting_until_the_device_is_back(ctl: Ctl) -> None:
    emu = build_device(users=1, restart_delay=0.5)
    device, manager = await online(ctl, emu)
    command = await ctl.queue(device, type="reboot")
    done = await ctl.final(command)
    assert (done.status, done.result) == ("done", "restarting")
    await wait_until(lambda: emu.restarts == 1)
    await wait_until(
        lambda: (
            [e["status"] for e in ctl.world.recorder.of_type("device_status")][-2:]
            == ["rebooting", "online"]
        )
    )
    statuses = [e["status"] for e in ctl.world.recorder.of_type("device_status")]
    assert "offline" not in statuses
    assert (await ctl.world.device(device.id)).status == "online"


@pytest_twisted.ensureDeferred
async def test_clear_log_resets_the_catch_up_mark(ctl: Ctl) -> None:
    emu = build_device(users=2, records=20)
    device, manager = await online(ctl, emu)
    await wait_until(lambda: len(ctl.world.recorder.of_type("attendance")) == 20)
    assert (await ctl.world.device(device.id)).info["log_mark"]["count"] == 20
    done = await ctl.final(await ctl.queue(device, type="clear_log", confirm=True))
    assert done.status == "done" and emu.records == []
    assert (await ctl.world.device(device.id)).info["log_mark"] == {}
    seq = list(emu.commands)
    i = seq.index(17 - 2)  # CLEAR_ATTLOG
    assert seq[i - 1] == 1003 and seq[i + 1] == 1002  # DISABLEDEVICE ... ENABLEDEVICE
    assert 500 in seq[i + 1 :]  # REG_EVENT again
    # punches after the clear still arrive in real time, nothing lost
    emu.punch("1", when=datetime(2026, 1, 2, 3, 4, 5))
    await wait_until(lambda: len(ctl.world.recorder.of_type("attendance")) == 21)


def test_device_now_is_what_sync_time_sends() -> None:
    class C:
        def seconds(self) -> float:
            return 1_767_225_600.0  # 2026-01-01 00:00:00 UTC

    d = Device("i", "S", "n", "pull", "online", True, timezone="+05:30")
    assert device_now(d, C()) == datetime(2026, 1, 1, 5, 30)
