"""Pull devices end to end on loopback sockets: emulator <-> PullManager/PullDeviceService
<-> a real store (SQLite file, PostgreSQL schema) with the real Ingest and Broadcaster."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_twisted
from attrs import define, field
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed

from tests.harness import sleep, wait_until
from zkserver.broadcaster import Broadcaster, Subscriber
from zkserver.devices import DeviceRegistry
from zkserver.emulator.pull import (
    PullDevice,
    PullTCPFactory,
    PullUDPProtocol,
    build_device,
)
from zkserver.eventsource import EventStreamParser, ServerSentEvent
from zkserver.ingest import Ingest
from zkserver.pull.manager import PullManager
from zkserver.records import Device
from zkserver.store import open_store
from zkserver.store.base import Store, StoreUnavailable

FAST = {
    "request_timeout": 0.5,
    "idle_probe": 0.3,
    "initial_delay": 0.05,
    "max_delay": 0.2,
    "retry_save_delay": 0.05,
    "auth_failed_delay": 300.0,
}


class Recorder:
    """An SSE target: parses the frames the broadcaster writes."""

    def __init__(self, parse: bool = True) -> None:
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.parse = parse
        self.frames = 0
        self._parser = EventStreamParser()

    def write(self, data: bytes) -> None:
        self.frames += data.count(b"\n\n")
        if not self.parse:
            return
        for item in self._parser.feed(data):
            if isinstance(item, ServerSentEvent):
                self.events.append((int(item.id), json.loads(item.data)))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e["type"] == kind]


class FlakyStore:
    """The real store, whose save_punches fails while ``down`` is set (database outage)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.down = False
        self.failed = 0

    def save_punches(self, device: Device, punches: Any) -> Any:
        if self.down:
            self.failed += 1
            raise StoreUnavailable("database is down (test)")
        return self._store.save_punches(device, punches)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class LockingStore(FlakyStore):
    """A store offering the optional device lock; ``table`` is shared by the "processes"."""

    def __init__(self, store: Store, table: dict[str, object]) -> None:
        super().__init__(store)
        self.table = table

    def try_lock_device(self, device_id: str) -> Deferred[bool]:
        return succeed(self.table.setdefault(device_id, self) is self)

    def unlock_device(self, device_id: str) -> Deferred[None]:
        if self.table.get(device_id) is self:
            del self.table[device_id]
        return succeed(None)


@define(eq=False)
class World:
    store: Any
    real_store: Store
    ingest: Ingest
    registry: DeviceRegistry
    recorder: Recorder
    managers: list[PullManager] = field(factory=list)
    listeners: list[Any] = field(factory=list)
    factories: list[PullTCPFactory] = field(factory=list)

    async def emulator(self, device: PullDevice, transport: str = "tcp") -> int:
        if transport == "udp":
            port = reactor.listenUDP(0, PullUDPProtocol(device), interface="127.0.0.1")
        else:
            factory = PullTCPFactory(device, reactor)
            self.factories.append(factory)
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.listeners.append(port)
        return port.getHost().port

    async def add(self, port: int, comm_key: int = 0, transport: str = "tcp", **kw: Any) -> Device:
        return await self.real_store.add_device(
            serial_number=kw.pop("serial_number", ""),
            kind="pull",
            name=kw.pop("name", "Front door"),
            status="offline",
            approved=True,
            host="127.0.0.1",
            port=port,
            comm_key=comm_key,
            transport=transport,
            **kw,
        )

    def manager(self, store: Any = None, **options: Any) -> PullManager:
        if store is not None:  # another "process" on the same database
            ingest = Ingest(store=store, broadcaster=self.ingest.broadcaster)
            registry = DeviceRegistry(store=store, ingest=ingest, clock=reactor)
        else:
            store, ingest, registry = self.store, self.ingest, self.registry
        manager = PullManager(
            store=store,
            ingest=ingest,
            registry=registry,
            clock=reactor,
            **{**FAST, **options},
        )
        self.managers.append(manager)
        manager.startService()
        return manager

    async def device(self, device_id: str) -> Device:
        found = await self.real_store.device(device_id)
        assert found is not None
        return found

    async def punch_count(self, device_id: str) -> int:
        rows, cursor = await self.real_store.attendance(device_id=device_id, limit=1000)
        count = len(rows)
        while cursor:
            rows, cursor = await self.real_store.attendance(
                device_id=device_id, cursor=cursor, limit=1000
            )
            count += len(rows)
        return count

    async def close(self) -> None:
        for manager in self.managers:
            if manager.running:
                await manager.stopService()
        for factory in self.factories:
            await factory.close_connections()
        for port in self.listeners:
            await port.stopListening()


async def open_world(db_url: str, tmp_path: Any) -> World:
    """A started store (behind a FlakyStore), its broadcaster with a Recorder, the ingest
    and the device registry; ``close()`` then ``real_store.stop()`` when done."""
    store = open_store(db_url, str(tmp_path), reactor)
    await store.start()
    flaky = FlakyStore(store)
    broadcaster = Broadcaster(source=store)
    broadcaster.last_published = await store.last_event_id()
    recorder = Recorder()
    broadcaster.subscribe(Subscriber(target=recorder, on_overflow=lambda s: None))
    ingest = Ingest(store=flaky, broadcaster=broadcaster)  # type: ignore[arg-type]
    registry = DeviceRegistry(store=flaky, ingest=ingest, clock=reactor)  # type: ignore[arg-type]
    return World(flaky, store, ingest, registry, recorder)


@pytest_twisted.async_yield_fixture
async def world(db_url: str, tmp_path: Any) -> AsyncIterator[World]:
    w = await open_world(db_url, tmp_path)
    try:
        yield w
    finally:
        await w.close()
        await w.real_store.stop()


def attendance_keys(w: World) -> list[tuple[str, str]]:
    return [(e["user_id"], e["timestamp"]) for e in w.recorder.of_type("attendance")]


# --------------------------------------------------------------------------- tests


@pytest_twisted.ensureDeferred
async def test_catch_up_once_then_realtime_event_like_a_push_punch(world: World) -> None:
    emu = build_device(users=5, records=50, serial_number="EMU0000042")
    device = await world.add(await world.emulator(emu))
    manager = world.manager()
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 50)
    await wait_until(lambda: any(s.flags for s in emu.sessions))  # registered for events
    stored = await world.device(device.id)
    assert stored.serial_number == "EMU0000042" and stored.status == "online"
    assert stored.info["firmware"] == emu.firmware_version
    assert stored.info["attlog_count"] == 50 and stored.info["user_count"] == 5
    statuses = [e["status"] for e in world.recorder.of_type("device_status")]
    assert statuses == ["online"]

    emu.punch("3", state=1, verify=15, when=datetime(2025, 10, 9, 18, 30, 45))
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 51)
    event = world.recorder.of_type("attendance")[-1]
    assert event == {
        "type": "attendance",
        "device_id": device.id,
        "device_name": "Front door",
        "serial_number": "EMU0000042",
        "user_id": "3",
        "timestamp": "2025-10-09 18:30:45",
        "action": 1,
        "method": 15,
        "raw_data": {
            "user_id": "3",
            "timestamp": "2025-10-09 18:30:45",
            "status": 1,
            "verify_method": 15,
        },
        "timestamp_utc": event["timestamp_utc"],
        "time_ambiguous": False,
        "suspect_time": event["suspect_time"],
    }
    # a second process start (restart) re-reads the log and inserts nothing
    await manager.stopService()
    assert (await world.device(device.id)).status == "offline"
    world.manager()
    await wait_until(lambda: world.recorder.of_type("device_status")[-1]["status"] == "online")
    await wait_until(lambda: any(s.flags for s in emu.sessions))
    await sleep(0.2)
    assert len(world.recorder.of_type("attendance")) == 51
    assert await world.punch_count(device.id) == 51


@pytest.mark.parametrize(
    "fault", ["drop", "garbage", "stall", "mid_transfer", "bad_magic", "absurd_length"]
)
@pytest_twisted.ensureDeferred
async def test_reconnect_catches_up_without_loss_or_duplicates(world: World, fault: str) -> None:
    emu = build_device(users=3, records=2000, serial_number="EMUFAULT")  # > 1 TCP chunk
    device = await world.add(await world.emulator(emu))
    manager = world.manager()
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 2000)
    await wait_until(lambda: any(s.flags for s in emu.sessions))
    service = manager.devices[device.id]
    first_attempts = service.attempts
    extra = 0  # punches the fault itself makes (caught up after the reset)

    if fault == "drop":
        emu.disconnect_all()
    elif fault == "garbage":
        emu.send_garbage()
    elif fault == "stall":
        emu.faults.mute = True  # the idle probe times out
    elif fault in ("bad_magic", "absurd_length"):
        setattr(emu.faults, fault, True)  # the next frame the device sends is broken
        emu.punch("1", when=datetime(2026, 1, 1, 8, 59, 0))
        extra = 1
    else:
        emu.faults.close_after_chunks = 1
        emu.disconnect_all()
    await wait_until(lambda: service.session is None)
    emu.faults.bad_magic = emu.faults.absurd_length = False
    # punches while the link is down only reach the device's log
    for i in range(5):
        emu.punch(str(i % 3 + 1), when=datetime(2026, 1, 1, 9, 0, i))
    await sleep(0.3)
    emu.faults.mute = False
    emu.faults.close_after_chunks = None
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 2005 + extra)
    await wait_until(lambda: service.session is not None and any(s.flags for s in emu.sessions))
    emu.punch("1", when=datetime(2026, 1, 1, 10, 0, 0))  # and live again
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 2006 + extra)
    await sleep(0.1)
    keys = attendance_keys(world)
    assert len(keys) == len(set(keys)) == 2006 + extra
    assert await world.punch_count(device.id) == 2006 + extra
    assert service.attempts > first_attempts
    assert "offline" in [e["status"] for e in world.recorder.of_type("device_status")]
    assert (await world.device(device.id)).status == "online"


@pytest_twisted.ensureDeferred
async def test_wrong_comm_key_is_auth_failed_without_reconnect_storm(world: World) -> None:
    emu = build_device(users=1, records=2, comm_key=1234)
    device = await world.add(await world.emulator(emu), comm_key=4321)
    manager = world.manager()
    await wait_until(
        lambda: any(e["status"] == "auth_failed" for e in world.recorder.of_type("device_status"))
    )
    service = manager.devices[device.id]
    await sleep(1.0)
    assert service.attempts == 1
    assert (await world.device(device.id)).status == "auth_failed"
    assert world.recorder.of_type("attendance") == []
    # the operator fixes the key: the service restarts at once with it
    manager.device_changed(await world.real_store.update_device(device.id, comm_key=1234))
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 2)
    assert (await world.device(device.id)).status == "online"


@pytest_twisted.ensureDeferred
async def test_punches_survive_a_database_outage(world: World) -> None:
    emu = build_device(users=2, records=10)
    device = await world.add(await world.emulator(emu))
    manager = world.manager()
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 10)
    await wait_until(lambda: any(s.flags for s in emu.sessions))
    service = manager.devices[device.id]
    world.store.down = True
    for i in range(3):
        emu.punch("1", when=datetime(2026, 2, 1, 8, 0, i))
    await wait_until(lambda: world.store.failed >= 2)
    assert service.pending == 3  # ACKed by us, kept in memory
    world.store.down = False
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 13)
    assert service.pending == 0
    assert await world.punch_count(device.id) == 13


@pytest_twisted.ensureDeferred
async def test_operations_on_live_and_short_sessions(world: World) -> None:
    emu = build_device(users=4, records=7, serial_number="EMUOPS")
    port = await world.emulator(emu)
    live = await world.add(port, name="Live")
    manager = world.manager()
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 7)
    await wait_until(lambda: manager.devices[live.id].session is not None)
    live = await world.device(live.id)
    assert await manager.read_log(live) == {"records": 7, "new": 0}
    assert await manager.read_users(live) == {"users": 4}
    assert [u.user_id for u in await world.real_store.users(live.id)] == ["1", "2", "3", "4"]
    emu.clock_offset = -3600.0
    result = await manager.sync_time(live)
    assert (
        abs((emu.now() - datetime.strptime(result["time"], "%Y-%m-%d %H:%M:%S")).total_seconds())
        < 5
    )
    # an unapproved (not running) device: a short session of its own
    emu2 = build_device(users=2, records=3, serial_number="EMUSHORT")
    other = await world.add(await world.emulator(emu2, "udp"), transport="udp")
    assert other.id not in manager.devices
    assert await manager.read_log(other) == {"records": 3, "new": 3}
    assert not emu2.sessions  # closed again
    assert (await world.device(other.id)).serial_number == "EMUSHORT"
    # removal stops the live service
    manager.device_removed(live.id)
    await wait_until(lambda: not emu.sessions)
    assert live.id not in manager.devices


@pytest_twisted.ensureDeferred
async def test_udp_device_catches_up_and_streams(world: World) -> None:
    emu = build_device(users=3, records=600, serial_number="EMUUDP")  # > 1 UDP chunk
    device = await world.add(await world.emulator(emu, "udp"), transport="udp")
    world.manager()
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 600)
    await wait_until(lambda: any(s.flags for s in emu.sessions))
    emu.punch("2", when=datetime(2026, 3, 1, 12, 0, 0))
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 601)
    assert await world.punch_count(device.id) == 601


@pytest_twisted.ensureDeferred
async def test_one_process_connects_each_device(world: World) -> None:
    emu = build_device(users=2, records=4)
    device = await world.add(await world.emulator(emu))
    table: dict[str, object] = {}
    first = world.manager(LockingStore(world.real_store, table), busy_delay=0.1)
    await wait_until(lambda: any(s.flags for s in emu.sessions))
    second = world.manager(LockingStore(world.real_store, table), busy_delay=0.1)
    await sleep(0.5)
    assert len(emu.sessions) == 1 and second.devices[device.id].attempts == 0
    await first.stopService()  # the first process goes away: the second takes over
    await wait_until(lambda: second.devices[device.id].session is not None)
    await wait_until(lambda: any(s.flags for s in emu.sessions))
    assert len(emu.sessions) == 1
    assert len(world.recorder.of_type("attendance")) == 4


@pytest_twisted.ensureDeferred
async def test_large_log_catches_up_in_seconds(world: World, backend: str) -> None:
    """20,000 records here (the store's insert rate dominates; 100,000 took ~10 s on
    SQLite and ~20 s on PostgreSQL when measured, of which ~2 s is read, parse, convert)."""
    n = 20_000
    emu = build_device(users=50, records=n)
    device = await world.add(await world.emulator(emu))
    world.recorder.parse = False
    started = time.monotonic()
    manager = world.manager(request_timeout=10.0, idle_probe=30.0)
    await wait_until(lambda: world.recorder.frames >= n + 1, timeout=30, interval=0.1)
    took = time.monotonic() - started
    print(f"\n{backend}: {n} records caught up in {took:.1f} s")  # figures: bench/
    assert await world.punch_count(device.id) == n
    assert manager.devices[device.id].pending == 0


def test_loaded_devices_wait_for_the_store() -> None:
    """A store that is not ready yet: the manager retries loading a few seconds later."""
    from twisted.internet.task import Clock

    class NotReady:
        calls = 0

        def devices(self, kind: str | None = None) -> Deferred[list[Device]]:
            self.calls += 1
            d: Deferred[list[Device]] = Deferred()
            if self.calls < 3:
                d.errback(StoreUnavailable("not started"))
            else:
                d.callback([])
            return d

    clock = Clock()
    store = NotReady()
    manager = PullManager(store=store, ingest=None, registry=None, clock=clock)  # type: ignore
    manager.startService()
    assert store.calls == 1 and not manager.loaded.called
    clock.advance(5)
    clock.advance(5)
    assert store.calls == 3 and manager.loaded.called
    manager.stopService()


@pytest_twisted.ensureDeferred
async def test_api_adds_operates_and_deletes_a_pull_device(server: Any) -> None:
    """Through the real twistd service tree: the API drives the PullManager."""
    emu = build_device(users=2, records=6, serial_number="EMUAPI")
    factory = PullTCPFactory(emu, reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        code, body = await server.api(
            "POST",
            "/api/devices",
            {"kind": "pull", "host": "127.0.0.1", "port": port.getHost().port, "name": "Gate"},
        )
        assert code == 201, body
        await wait_until(lambda: any(s.flags for s in emu.sessions))
        code, result = await server.api("POST", f"/api/devices/{body['id']}/read-log")
        assert (code, result) == (200, {"records": 6, "new": 0})
        code, result = await server.api("POST", f"/api/devices/{body['id']}/read-users")
        assert (code, result) == (200, {"users": 2})
        code, users = await server.api("GET", f"/api/devices/{body['id']}/users")
        assert sorted(u["user_id"] for u in users) == [u.user_id for u in emu.users]
        events = await server.store.events_after(0)
        sync = [e.payload for e in events if e.type == "user_sync"]
        assert sync and sync[-1]["count"] == 2 and sync[-1]["serial_number"] == "EMUAPI"
        code, device = await server.api("GET", f"/api/devices/{body['id']}")
        assert device["serial_number"] == "EMUAPI" and device["status"] == "online"
        code, _ = await server.api("DELETE", f"/api/devices/{body['id']}")
        assert code in (200, 204)
        await wait_until(lambda: not emu.sessions)
    finally:
        await factory.close_connections()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_unknown_event_code_is_skipped_and_the_session_kept(world: World) -> None:
    emu = build_device(users=2, records=1)
    device = await world.add(await world.emulator(emu))
    manager = world.manager()
    await wait_until(lambda: any(s.flags for s in emu.sessions))
    service = manager.devices[device.id]
    session = service.session
    emu.faults.event_code = 77  # a code this server does not know
    emu.punch("1", when=datetime(2026, 2, 1, 9, 0, 0))
    await sleep(0.3)
    emu.faults.event_code = None
    assert service.session is session  # skipped, not a reset
    emu.punch("2", when=datetime(2026, 2, 1, 9, 0, 1))
    await wait_until(lambda: len(world.recorder.of_type("attendance")) >= 2)
    assert service.session is session
    # The skipped punch is still in the device's log: a catch-up saves it (unless the
    # service's own post-registration log check already did).
    result = await manager.read_log(await world.device(device.id))
    assert result["records"] == 3 and result["new"] in (0, 1)
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 3)
    assert await world.punch_count(device.id) == 3
    assert service.session is session


@pytest_twisted.ensureDeferred
async def test_reconnect_saves_only_the_records_added_since_the_last_catch_up(
    world: World,
) -> None:
    emu = build_device(users=3, records=300, serial_number="EMUMARK")
    device = await world.add(await world.emulator(emu))
    manager = world.manager()
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 300)
    await wait_until(lambda: any(s.flags for s in emu.sessions))
    service = manager.devices[device.id]
    await wait_until(lambda: service.last_catch_up is not None)
    assert service.last_catch_up == (300, 300, 300)

    emu.disconnect_all()
    await wait_until(lambda: service.session is None)
    for i in range(4):  # made while the link is down: only in the device's log
        emu.punch(str(i % 3 + 1), when=datetime(2026, 4, 1, 9, 0, i))
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 304)
    await wait_until(lambda: service.last_catch_up[0] == 304)
    assert service.last_catch_up == (304, 4, 4)  # the 300 saved before were skipped

    # The log was rewritten (its oldest record dropped): the record at the mark differs,
    # so everything is submitted again and only the really new punches are inserted.
    await wait_until(lambda: any(s.flags for s in emu.sessions))
    emu.disconnect_all()
    await wait_until(lambda: service.session is None)
    del emu.records[0]
    for i in range(3):
        emu.punch("2", when=datetime(2026, 4, 2, 9, 0, i))
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 307)
    await wait_until(lambda: service.last_catch_up[0] == 306)
    assert service.last_catch_up == (306, 306, 3)
    assert await world.punch_count(device.id) == 307


@pytest_twisted.ensureDeferred
async def test_clock_offset_of_a_terminal_an_hour_fast_in_kolkata(world: World) -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    emu = build_device(
        users=3,
        serial_number="EMU0000077",
        host_now=lambda: datetime.now(kolkata).replace(tzinfo=None),
        clock_offset=3600.0,
    )
    device = await world.add(await world.emulator(emu), timezone="Asia/Kolkata")
    world.manager()
    # Measured at connect and by every idle probe, kept on the device record.
    await wait_until(lambda: any(s.flags for s in emu.sessions))
    stored = await world.device(device.id)
    assert stored.clock_offset_s is not None and abs(stored.clock_offset_s - 3600) <= 2
    # Its punches carry its clock's time: an hour ahead of the server, so suspect.
    emu.punch("2", state=0)
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 1)
    event = world.recorder.of_type("attendance")[0]
    assert event["suspect_time"].startswith("future: ")
    stored = await world.device(device.id)
    assert stored.suspect_punches == 1
    emu.clock_offset = -30.0  # someone set it nearly right: the next probe shows it
    await wait_until(lambda: world.managers[0].devices[device.id].clock_offset_s == -30)


@pytest_twisted.ensureDeferred
async def test_a_connected_idle_terminal_keeps_its_last_seen_fresh(world: World) -> None:
    """The silent alert reads ``last_seen``: a pull terminal that is connected but has
    nothing to send must not look silent (the idle probe refreshes it, throttled)."""
    emu = build_device(users=1, records=0, serial_number="IDLE000001")
    device = await world.add(await world.emulator(emu))
    world.manager(seen_every=0.2)
    await wait_until(lambda: any(s.flags for s in emu.sessions))
    first = (await world.device(device.id)).last_seen
    assert first is not None
    fresher: list[str | None] = [first]

    async def look() -> None:
        fresher.append((await world.device(device.id)).last_seen)

    for _ in range(150):
        await look()
        if fresher[-1] != first:
            break
        await sleep(0.05)
    assert fresher[-1] is not None and fresher[-1] > first
