"""Device health alerts driven by a controllable clock, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest_twisted
from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock

from zkserver.alerts import AlertPolicy
from zkserver.alerts_service import AlertService
from zkserver.events import Event
from zkserver.webhooks.service import iso_at

START = 1_800_000_000.0


def service(store: Any, clock: Clock, published: list[Event]) -> AlertService:
    return AlertService(
        store=store,
        clock=clock,
        publish=published.extend,
        policy=AlertPolicy(silent=900, clock=120, repeat=21600),
    )


def states(events: list[Event]) -> list[tuple[str, str, str]]:
    return [(e.payload["serial_number"], e.payload["alert"], e.payload["state"]) for e in events]


@pytest_twisted.ensureDeferred
async def test_silent_device_opens_repeats_and_recovers(store):
    clock = Clock()
    clock.advance(START)
    device = await store.add_device(serial_number="ALERT01", status="online", approved=True)
    await store.update_device(device.id, last_seen=iso_at(START))
    await store.add_webhook(url="https://example.com/", secret="s" * 20, types=["device_alert"])
    published: list[Event] = []
    alerts = service(store, clock, published)
    await alerts.check()
    assert published == []
    clock.advance(901)
    await alerts.check()
    assert states(published) == [("ALERT01", "silent", "open")]
    first = published[0]
    assert first.type == "device_alert" and "no contact for 901 s" in first.payload["detail"]
    assert (await store.open_alerts())[0]["alert"] == "silent"
    await alerts.check()  # still silent: not announced again before the repeat interval
    clock.advance(21599)
    await alerts.check()
    assert len(published) == 1
    clock.advance(1)
    await alerts.check()
    assert states(published)[-1] == ("ALERT01", "silent", "open")
    assert len(published) == 2
    await store.update_device(device.id, last_seen=iso_at(clock.seconds()))
    await alerts.check()
    assert states(published)[-1] == ("ALERT01", "silent", "recovered")
    assert await store.open_alerts() == []
    # Each announcement has its webhook delivery row, written with it.
    hook = (await store.webhooks())[0]
    rows = await store.webhook_deliveries(hook.id)
    assert sorted(r.event_id for r in rows) == [e.id for e in published]


@pytest_twisted.ensureDeferred
async def test_capacity_and_clock_alerts(store):
    clock = Clock()
    clock.advance(START)
    device = await store.add_device(
        serial_number="ALERT02", kind="pull", status="online", approved=True, host="127.0.0.9"
    )
    await store.update_device(
        device.id,
        last_seen=iso_at(START),
        info={
            "attlog_count": 95,
            "records_cap": 100,
            "user_count": 10,
            "users_cap": 100,
            "clock_offset_s": 300,
        },
    )
    published: list[Event] = []
    await service(store, clock, published).check()
    assert sorted(states(published)) == [
        ("ALERT02", "clock", "open"),
        ("ALERT02", "storage", "open"),
    ]
    await store.update_device(device.id, info={"attlog_count": 10, "clock_offset_s": 2})
    await service(store, clock, published).check()
    assert sorted(states(published)[2:]) == [
        ("ALERT02", "clock", "recovered"),
        ("ALERT02", "storage", "recovered"),
    ]


@pytest_twisted.ensureDeferred
async def test_two_checkers_announce_each_transition_once(stores, store):
    """Two processes (two stores on one database) checking at once: one event each."""
    clock = Clock()
    clock.advance(START)
    other = await stores.open()
    device = await store.add_device(serial_number="ALERT03", status="online", approved=True)
    await store.update_device(device.id, last_seen=iso_at(START - 1000))
    published: list[Event] = []
    a, b = service(store, clock, published), service(other, clock, published)
    await gatherResults([a.check(), b.check()])
    assert states(published) == [("ALERT03", "silent", "open")]


@pytest_twisted.ensureDeferred
async def test_clock_offset_measured_by_a_session(store):
    clock = Clock()
    clock.advance(START)
    device = await store.add_device(
        serial_number="ALERT04", kind="pull", status="online", approved=True, host="127.0.0.8"
    )
    await store.update_device(device.id, last_seen=iso_at(START))
    published: list[Event] = []
    alerts = service(store, clock, published)
    alerts.measured = lambda: {device.id: {"clock_offset_s": -400}}
    await alerts.check()
    assert states(published) == [("ALERT04", "clock", "open")]
    assert "-400 s" in published[0].payload["detail"]


@pytest_twisted.ensureDeferred
async def test_no_silent_storm_after_the_server_was_down(store):
    """Devices last seen before a long server outage are not silent at once when it
    starts again: silence counts from the later of their last contact and the start."""
    clock = Clock()
    clock.advance(START)
    device = await store.add_device(serial_number="ALERT09", status="online", approved=True)
    await store.update_device(device.id, last_seen=iso_at(START))
    clock.advance(7200)  # the server was stopped for two hours
    published: list[Event] = []
    alerts = service(store, clock, published)
    alerts.startService()
    try:
        clock.advance(30)
        await alerts.check()
        assert published == []  # it may not have called in yet: not silent
        clock.advance(900)
        await alerts.check()
        assert states(published) == [("ALERT09", "silent", "open")]
    finally:
        alerts.stopService()


@pytest_twisted.ensureDeferred
async def test_deleting_a_device_closes_its_alerts_at_once(store):
    clock = Clock()
    clock.advance(START)
    device = await store.add_device(serial_number="ALERT09", status="online", approved=True)
    await store.update_device(device.id, last_seen=iso_at(START - 1000))
    published: list[Event] = []
    await service(store, clock, published).check()
    assert states(published) == [("ALERT09", "silent", "open")]
    assert await store.delete_device(device.id)
    # GET /api/alerts and zkserver_device_alerts_open read these rows: the alert of a
    # device that no longer exists was listed until the next health round.
    assert await store.open_alerts() == []
    await service(store, clock, published).check()
    assert len(published) == 1


@pytest_twisted.ensureDeferred
async def test_an_alerts_timestamp_is_device_local_like_every_events(store):
    # The stream's contract: `timestamp` is YYYY-MM-DD HH:MM:SS in the device's local time;
    # the instant itself is `timestamp_utc`.
    clock = Clock()
    clock.advance(START)
    device = await store.add_device(
        serial_number="ALERT05", status="online", approved=True, timezone="Asia/Kolkata"
    )
    await store.update_device(device.id, last_seen=iso_at(START))
    published: list[Event] = []
    alerts = service(store, clock, published)
    await alerts.check()
    clock.advance(901)
    await alerts.check()
    (event,) = published
    moment = datetime.fromtimestamp(START + 901, UTC)
    kolkata = moment.astimezone(ZoneInfo("Asia/Kolkata"))
    assert event.payload["timestamp"] == kolkata.strftime("%Y-%m-%d %H:%M:%S")
    assert event.payload["timestamp_utc"] == moment.strftime("%Y-%m-%dT%H:%M:%SZ")
