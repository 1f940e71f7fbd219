"""Pull commands end to end on loopback sockets: Commands (the lifecycle, a real store on
SQLite and PostgreSQL) -> PullManager -> the device's session -> the pull emulator."""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
import pytest_twisted
from attrs import define
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from zk import ZK

from tests.harness import wait_until
from tests.pull.test_service import World, open_world
from zkserver.commands import Commands, parse_command
from zkserver.commands.spec import FINAL_STATUSES, Unsupported
from zkserver.emulator.pull import PullDevice, Session, build_device
from zkserver.pull import codec
from zkserver.pull.codec import Cmd, Reply, Template
from zkserver.pull.drift import DriftFixer
from zkserver.pull.manager import PullManager
from zkserver.pull.service import device_now
from zkserver.records import Command, Device
from zkserver.store.base import StoreUnavailable


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
    w = await open_world(db_url, tmp_path)
    commands = Commands(store=w.real_store, ingest=w.ingest, clock=reactor, timeout=30, ttl=3600)
    try:
        yield Ctl(w, commands)
    finally:
        await w.close()
        await w.real_store.stop()


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


# --------------------------------------------------------------------------- users, templates


@pytest.mark.parametrize("user_size", [28, 72])
@pytest_twisted.ensureDeferred
async def test_user_upsert_then_pyzk_reads_the_user_back(ctl: Ctl, user_size: int) -> None:
    emu = build_device(users=3, user_size=user_size)
    device, _ = await online(ctl, emu)
    assert device.info["user_layout"] == user_size
    new = await ctl.final(
        await ctl.queue(
            device,
            type="user_upsert",
            user_id="900",
            name="Ann",
            privilege=14,
            password="123",
            card="4242",
            group="2",
        )
    )
    assert (new.status, new.result) == ("done", "user 900 added (uid 4)")
    again = await ctl.final(
        await ctl.queue(device, type="user_upsert", user_id="2", name="Renamed")
    )
    assert (again.status, again.result) == ("done", "user 2 updated (uid 2)")
    seq = list(emu.commands)
    i = seq.index(Cmd.USER_WRQ)
    assert seq[i - 1 : i + 3] == [
        Cmd.DISABLEDEVICE,
        Cmd.USER_WRQ,
        Cmd.REFRESHDATA,
        Cmd.ENABLEDEVICE,
    ]
    assert Cmd.REG_EVENT in seq[i + 3 :]
    port = ctl.world.listeners[0].getHost().port

    def read() -> list[tuple[int, str, str, int, str, str]]:
        conn = ZK("127.0.0.1", port, timeout=5, ommit_ping=True).connect()
        try:
            return [
                (u.uid, u.user_id, u.name, u.privilege, str(u.card), str(u.group_id))
                for u in conn.get_users()
            ]
        finally:
            conn.disconnect()

    users = await deferToThread(read)
    assert (4, "900", "Ann", 14, "4242", "2") in users
    assert next(u for u in users if u[1] == "2")[:3] == (2, "2", "Renamed")
    stored = {u.user_id: u for u in await ctl.world.real_store.users(device.id)}
    assert stored["900"].name == "Ann"


@pytest_twisted.ensureDeferred
async def test_user_delete_and_user_not_found(ctl: Ctl) -> None:
    emu = build_device(users=3)
    device, _ = await online(ctl, emu)
    done = await ctl.final(await ctl.queue(device, type="user_delete", user_id="2"))
    assert done.status == "done" and [u.user_id for u in emu.users] == ["1", "3"]
    missing = await ctl.final(await ctl.queue(device, type="user_delete", user_id="77"))
    assert (missing.status, missing.result, missing.return_code) == (
        "failed",
        "user not found",
        None,
    )


@pytest.mark.parametrize("user_size", [28, 72])
@pytest_twisted.ensureDeferred
async def test_a_numeric_pin_terminal_matches_pins_as_numbers(ctl: Ctl, user_size: int) -> None:
    # Queued before the terminal's layout was known (the API refuses 0002 for a 28-byte
    # terminal only once it knows it is one). The 28-byte layout keeps the PIN as a
    # number: 0002 is user 2 there, and the upsert wrote a second slot with PIN 2 (two
    # users 2), the delete of 03 found no user 3. A 72-byte terminal keeps text: 0002 is
    # another user than 2.
    emu = build_device(users=3, user_size=user_size)
    device = await ctl.world.add(await ctl.world.emulator(emu))
    upsert = await ctl.queue(device, type="user_upsert", user_id="0002", name="Renamed")
    delete = await ctl.queue(device, type="user_delete", user_id="03")
    ctl.manager()
    upserted, deleted = await ctl.final(upsert), await ctl.final(delete)
    pins = sorted((u.uid, u.user_id, u.name) for u in emu.users)
    if user_size == 28:
        assert (upserted.status, upserted.result) == ("done", "user 2 updated (uid 2)")
        assert (deleted.status, deleted.result) == ("done", "user 3 deleted (uid 3)")
        assert pins == [(1, "1", "User 1"), (2, "2", "Renamed")]
        stored = sorted(u.user_id for u in await ctl.world.real_store.users(device.id))
        assert stored == ["2"]  # as the terminal keeps it
    else:
        assert (upserted.status, upserted.result) == ("done", "user 0002 added (uid 4)")
        assert (deleted.status, deleted.result) == ("failed", "user not found")
        assert [p[1] for p in pins] == ["1", "2", "3", "0002"]


@pytest_twisted.ensureDeferred
async def test_template_upsert_one_buffered_write_read_back_by_pyzk(ctl: Ctl) -> None:
    emu = build_device(users=2)
    device, _ = await online(ctl, emu)
    template = bytes(range(256)) * 5
    body = {
        "type": "template_upsert",
        "user_id": "2",
        "kind": "finger",
        "index": 6,
        "format": "10",
        "valid": 1,
        "data": base64.b64encode(template).decode(),
    }
    done = await ctl.final(await ctl.queue(device, **body))
    assert done.status == "done", done.result
    assert codec.SAVE_USER_TEMPLATES in emu.commands
    port = ctl.world.listeners[0].getHost().port

    def read() -> list[tuple[int, int, bytes]]:
        conn = ZK("127.0.0.1", port, timeout=5, ommit_ping=True).connect()
        try:
            return [(f.uid, f.fid, f.template) for f in conn.get_templates()]
        finally:
            conn.disconnect()

    assert await deferToThread(read) == [(2, 6, template)]
    wrong = await ctl.final(await ctl.queue(device, **{**body, "format": "12"}))
    assert (wrong.status, wrong.result) == (
        "failed",
        "template format 12 does not match the terminal's fingerprint algorithm 10",
    )
    with pytest.raises(Unsupported, match="finger templates only"):  # 422, nothing queued
        await ctl.queue(device, **{**body, "kind": "face", "index": 0})
    nobody = await ctl.final(await ctl.queue(device, **{**body, "user_id": "55"}))
    assert (nobody.status, nobody.result) == ("failed", "user not found")


@pytest_twisted.ensureDeferred
async def test_open_door_enroll_clear_data_and_refused_words(ctl: Ctl) -> None:
    emu = build_device(users=2, records=5)
    emu.templates.append(Template(1, 0, 1, b"t" * 30))
    device, _ = await online(ctl, emu)
    door = await ctl.final(await ctl.queue(device, type="open_door", seconds=7))
    assert (door.status, emu.unlocks) == ("done", [7.0])
    enroll = await ctl.final(await ctl.queue(device, type="enroll_finger", user_id="1", finger=3))
    assert (enroll.status, emu.enrollments) == ("done", [("1", 3)])
    cleared = await ctl.final(await ctl.queue(device, type="clear_data", confirm=True))
    assert cleared.status == "done"
    assert (emu.users, emu.records, emu.templates) == ([], [], [])
    assert await ctl.world.real_store.users(device.id) == []
    # a terminal that does not know a command answers ACK_UNKNOWN: failed, in words
    emu.options["~ZKFPVersion"] = "10"
    del Session._handlers[Cmd.UNLOCK]
    try:
        refused = await ctl.final(await ctl.queue(device, type="open_door"))
    finally:
        Session._handlers[Cmd.UNLOCK] = Session._unlock
    assert (refused.status, refused.return_code, refused.result) == (
        "failed",
        Reply.ACK_UNKNOWN,
        "not supported by this terminal",
    )


@pytest_twisted.ensureDeferred
async def test_no_event_lost_when_disable_drops_the_registration(ctl: Ctl) -> None:
    emu = build_device(users=3)
    emu.faults.disable_drops_events = True
    device, _ = await online(ctl, emu)
    done = await ctl.final(await ctl.queue(device, type="user_upsert", user_id="50", name="X"))
    assert done.status == "done"
    await wait_until(lambda: any(s.flags for s in emu.sessions))  # registered again
    emu.punch("50", when=datetime(2026, 2, 3, 4, 5, 6))
    await wait_until(lambda: len(ctl.world.recorder.of_type("attendance")) == 1)
    assert ctl.world.recorder.of_type("attendance")[0]["user_id"] == "50"


@pytest_twisted.ensureDeferred
async def test_punches_during_a_write_are_caught_up(ctl: Ctl) -> None:
    emu = build_device(users=3)
    emu.faults.disable_drops_events = True
    device, _ = await online(ctl, emu)
    original = Session._handlers[Cmd.ENABLEDEVICE]

    def enable_then_punch(session: Session, p: Any) -> None:
        original(session, p)
        # a punch after ENABLEDEVICE, before the server registers again: no event
        emu.punch("1", when=datetime(2026, 2, 3, 4, 5, 7))

    Session._handlers[Cmd.ENABLEDEVICE] = enable_then_punch
    try:
        done = await ctl.final(await ctl.queue(device, type="user_delete", user_id="3"))
    finally:
        Session._handlers[Cmd.ENABLEDEVICE] = original
    assert done.status == "done"
    await wait_until(lambda: len(ctl.world.recorder.of_type("attendance")) == 1)


@pytest_twisted.ensureDeferred
async def test_fix_drift_sets_a_drifting_terminal_right_once(ctl: Ctl) -> None:
    emu = build_device(users=1)
    emu.clock_offset = -600.0
    device = await ctl.world.add(await ctl.world.emulator(emu))
    manager = ctl.manager(fix_drift=DriftFixer(threshold=30))
    await wait_until(lambda: abs(emu.clock_offset) < 5)  # the idle probe found it, set it
    service = manager.devices[device.id]
    assert Cmd.SET_TIME in emu.commands
    emu.clock_offset = -900.0  # drifts again within the hour: measured, left alone
    probes = emu.commands.count(Cmd.GET_TIME)
    await wait_until(lambda: emu.commands.count(Cmd.GET_TIME) >= probes + 2)
    assert service.clock_offset_s is not None and abs(service.clock_offset_s + 900) <= 2
    assert list(emu.commands).count(Cmd.SET_TIME) == 1


@pytest_twisted.ensureDeferred
async def test_a_command_cut_off_by_a_dropped_link_is_run_again(ctl: Ctl) -> None:
    emu = build_device(users=1)
    device, manager = await online(ctl, emu)
    original = Session._handlers[Cmd.UNLOCK]
    drops = [1]

    def drop_once(session: Session, p: Any) -> None:
        if drops:
            drops.pop()
            session._close()  # the link drops before the terminal answers
            return
        original(session, p)

    Session._handlers[Cmd.UNLOCK] = drop_once
    try:
        command = await ctl.queue(device, type="open_door", seconds=2)
        await wait_until(
            lambda: (command.id, "interrupted") in manager.devices[device.id].runner.ran
        )
        await ctl.commands.sweep()  # no --command-timeout for pull commands: no change
        done = await ctl.final(command)  # the next session runs it again
    finally:
        Session._handlers[Cmd.UNLOCK] = original
    assert (done.status, done.attempts, emu.unlocks) == ("done", 2, [2.0])
    assert ctl.statuses(command.id) == ["queued", "sent", "queued", "sent", "done"]


@pytest_twisted.ensureDeferred
async def test_a_command_still_running_past_the_timeout_is_not_sent_again(ctl: Ctl) -> None:
    """--command-timeout is for unanswered push commands: a pull command that takes longer
    is neither queued again nor expired while it runs, and runs once."""
    emu = build_device(users=1)
    device = await ctl.world.add(await ctl.world.emulator(emu))
    ctl.manager(request_timeout=5.0)  # the terminal's slow answer is no dead link
    await wait_until(lambda: any(s.flags for s in emu.sessions))
    ctl.commands.timeout = 0.1
    ctl.commands.retries = 1
    original = Session._handlers[Cmd.UNLOCK]
    answered: list[bool] = []

    def slow(session: Session, p: Any) -> None:
        def answer() -> None:
            answered.append(True)
            original(session, p)

        reactor.callLater(0.6, answer)

    Session._handlers[Cmd.UNLOCK] = slow
    try:
        command = await ctl.queue(device, type="open_door", seconds=2)
        await wait_until(
            lambda: (
                (command.id, "sent")
                in [
                    (e["command_id"], e["status"])
                    for e in ctl.world.recorder.of_type("command_status")
                ]
            )
        )
        while not answered:  # the sweep runs while the terminal is still busy
            await deferLater(reactor, 0.15, lambda: None)
            await ctl.commands.sweep()
        done = await ctl.final(command)
    finally:
        Session._handlers[Cmd.UNLOCK] = original
    assert (done.status, done.attempts, emu.unlocks) == ("done", 1, [2.0]), done.result
    assert ctl.statuses(command.id) == ["queued", "sent", "done"]


@pytest_twisted.ensureDeferred
async def test_a_command_sent_when_the_server_died_runs_again_once(ctl: Ctl) -> None:
    """kill -9 mid-command: the next process's first session runs it again (same id)."""
    emu = build_device(users=1)
    device = await ctl.world.add(await ctl.world.emulator(emu))
    command = await ctl.queue(device, type="open_door", seconds=5)
    taken = await ctl.commands.next_for(device.id)  # the dead process had taken it
    assert taken is not None and taken.id == command.id and taken.status == "sent"
    ctl.commands = Commands(
        store=ctl.world.real_store, ingest=ctl.world.ingest, clock=reactor, timeout=30, ttl=3600
    )
    ctl.manager()
    done = await ctl.final(command)
    assert (done.status, done.attempts, emu.unlocks) == ("done", 2, [5.0])
    await wait_until(
        lambda: ctl.statuses(command.id) == ["queued", "sent", "queued", "sent", "done"]
    )


@pytest_twisted.ensureDeferred
async def test_an_outcome_the_database_could_not_save_is_not_left_sent(ctl: Ctl) -> None:
    """The database fails as the outcome is saved: the command is run again and finished,
    and the commands queued after it still run after it."""
    emu = build_device(users=1)
    device, _ = await online(ctl, emu)
    store = ctl.commands.store
    real = store.complete_command
    failures = [1]

    def failing(*args: Any, **kw: Any) -> Any:
        if failures:
            failures.pop()
            raise StoreUnavailable("database down")
        return real(*args, **kw)

    store.complete_command = failing  # type: ignore[method-assign]
    try:
        first = await ctl.queue(device, type="open_door", seconds=2)
        second = await ctl.queue(device, type="open_door", seconds=3)
        done = await ctl.final(first)
        later = await ctl.final(second)
    finally:
        del store.complete_command
    assert (done.status, done.attempts, later.status) == ("done", 2, "done")
    assert emu.unlocks == [2.0, 2.0, 3.0]


@pytest_twisted.ensureDeferred
async def test_a_queued_command_survives_a_server_restart(ctl: Ctl) -> None:
    port = free_port()
    device = await ctl.world.add(port)
    first = ctl.manager()
    command = await ctl.queue(device, type="open_door", seconds=4)
    await first.stopService()
    # a new process: a new command service and manager on the same database
    ctl.commands = Commands(
        store=ctl.world.real_store, ingest=ctl.world.ingest, clock=reactor, timeout=30, ttl=3600
    )
    ctl.manager()
    emu = build_device(users=1)
    from zkserver.emulator.pull import PullTCPFactory

    factory = PullTCPFactory(emu, reactor)
    ctl.world.factories.append(factory)
    ctl.world.listeners.append(reactor.listenTCP(port, factory, interface="127.0.0.1"))
    done = await ctl.final(command)
    assert (done.status, done.attempts, emu.unlocks) == ("done", 1, [4.0])
