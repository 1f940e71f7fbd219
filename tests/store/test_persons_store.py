"""The person registry's store methods on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from zkserver.persons.model import NewTemplate, SyncEntry
from zkserver.store.commands import NewCommand
from zkserver.store.persons import DuplicatePerson

NOW = "2026-01-01T00:00:00.000000+00:00"
LATER = "2026-01-01T00:00:05.000000+00:00"


@pytest_twisted.ensureDeferred
async def test_persons_add_find_page_change_remove(store: Any) -> None:
    for pin, name, devices in (
        ("3", "Ann_Lee", "all"),
        ("1", "Bob 100%", ["d1"]),
        ("2", "Cy", ["d2", "d1"]),
    ):
        await store.add_person({"user_id": pin, "name": name, "devices": devices}, "api", NOW)
    with pytest.raises(DuplicatePerson):
        await store.add_person({"user_id": "1", "name": "Other"}, "api", NOW)
    page, cursor = await store.persons(limit=2)
    assert [p.user_id for p in page] == ["1", "2"] and cursor == "2"
    page, cursor = await store.persons(limit=2, cursor=cursor)
    assert [p.user_id for p in page] == ["3"] and cursor is None
    assert [p.user_id for p in (await store.persons(q="ann"))[0]] == ["3"]
    assert [p.user_id for p in (await store.persons(q="100%"))[0]] == ["1"]
    assert [p.user_id for p in (await store.persons(q="n_l"))[0]] == ["3"]
    assert [p.user_id for p in (await store.persons(q="%"))[0]] == ["1"]
    assert [p.user_id for p in (await store.persons(device_id="d1"))[0]] == ["1", "2", "3"]
    assert [p.user_id for p in (await store.persons(device_id="d2"))[0]] == ["2", "3"]
    changed = await store.update_person(
        "2", {"name": "Cyd", "active": False, "devices": "all"}, "dev-9", LATER
    )
    assert (changed.name, changed.active, changed.devices) == ("Cyd", False, "all")
    assert (changed.origin, changed.origin_at, changed.created_at) == ("dev-9", LATER, NOW)
    assert await store.update_person("9", {"name": "x"}, "api", NOW) is None
    removed = await store.delete_person("2")
    assert removed.user_id == "2" and await store.person("2") is None
    assert await store.delete_person("2") is None


@pytest_twisted.ensureDeferred
async def test_templates_newest_wins_older_kept(store: Any) -> None:
    first = NewTemplate("7", "finger", 1, "10", b"one", source_table="FP")
    added = await store.save_person_templates([first], NOW)
    assert len(added) == 1 and added[0].size == 3
    assert await store.save_person_templates([first], LATER) == []  # the same again
    second = NewTemplate("7", "finger", 1, "10", b"two!", source_table="api")
    other = NewTemplate("7", "face", 0, "7", b"face")
    assert len(await store.save_person_templates([second, other], LATER)) == 2
    current = await store.person_templates("7")
    assert sorted((t.kind, t.index, t.size) for t in current) == [("face", 0, 4), ("finger", 1, 4)]
    every = await store.person_templates("7", all_versions=True)
    assert sorted((t.kind, t.size, t.current) for t in every) == [
        ("face", 4, True),
        ("finger", 3, False),
        ("finger", 4, True),
    ]
    data = await store.person_template_data("7")
    assert sorted(d for _, d in data) == [b"face", b"two!"]
    old = next(t for t in every if not t.current)
    assert (await store.person_template_data("7", old.id))[0][1] == b"one"
    assert await store.person_template_data("8", old.id) == []


@pytest_twisted.ensureDeferred
async def test_write_sync_queues_and_records_in_one_go(store: Any) -> None:
    device = await store.add_device(serial_number="SYNC1", approved=True, status="online")
    entry = SyncEntry("7", device.id, "upsert", "pending", "w1", (), "")
    items = [
        NewCommand(device.id, "user_upsert", {"user_id": "7"}, "DATA UPDATE USERINFO"),
        NewCommand(device.id, "template_upsert", {"user_id": "7"}, "DATA UPDATE FP"),
    ]
    stored, added, events = await store.write_sync(entry, items, NOW, expect=("", ()))
    assert stored.command_ids == tuple(c.id for c in added) and len(added) == 2
    assert [e.type for e in events] == ["command_status", "command_status", "user_sync"]
    sync = events[-1].payload
    assert (sync["operation"], sync["state"], sync["user_id"], sync["serial_number"]) == (
        "upsert",
        "pending",
        "7",
        "SYNC1",
    )
    # another writer moved on: nothing is written
    stale, none, no_events = await store.write_sync(entry, items, LATER, expect=("", ()))
    assert (stale, none, no_events) == (None, [], [])
    done = SyncEntry("7", device.id, "upsert", "in_step", "w1", stored.command_ids, "")
    stored2, _, events2 = await store.write_sync(
        done, [], LATER, expect=("pending", stored.command_ids)
    )
    assert stored2.state == "in_step" and [e.type for e in events2] == ["user_sync"]
    assert [e.state for e in await store.sync_entries(user_id="7")] == ["in_step"]
    assert await store.sync_entries(state="pending") == []
    found = await store.commands_by_id([*stored.command_ids, "999", "x"])
    assert [c.id for c in found] == list(stored.command_ids)


@pytest_twisted.ensureDeferred
async def test_attendance_names_from_the_registry_when_the_terminal_has_none(store: Any) -> None:
    from zkserver.records import DeviceUser, Punch

    device = await store.add_device(serial_number="NAMES1", approved=True, status="online")
    other = await store.add_device(serial_number="NAMES2", approved=True, status="online")
    await store.save_users(device.id, [DeviceUser("1", name="Terminal Ann")])
    await store.save_users(other.id, [DeviceUser("2", name="Other Bob")])
    for pin, name in (("1", "Registry Ann"), ("2", "Registry Bob"), ("3", "Registry Cy")):
        await store.add_person({"user_id": pin, "name": name}, "api", NOW)
    await store.save_punches(
        device,
        [
            Punch(user_id=pin, timestamp=f"2025-01-01 08:0{pin}:00", status=0, verify=1)
            for pin in ("1", "2", "3", "4")
        ],
    )
    rows, _ = await store.attendance()
    assert {r["user_id"]: r["user_name"] for r in rows} == {
        "1": "Terminal Ann",  # the terminal's own name first
        "2": "Registry Bob",  # then the registry's, before another terminal's
        "3": "Registry Cy",
        "4": None,
    }
