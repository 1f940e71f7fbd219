"""The command lifecycle in the store, on SQLite and PostgreSQL (zkserver.store.commands)."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.store.conftest import Stores
from zkserver.store.commands import NewCommand, stamp

T0 = 1_760_000_000.0


def now(offset: float = 0.0) -> str:
    return stamp(T0 + offset)


async def _device(store, serial: str = "CMD1"):
    return await store.add_device(serial_number=serial, status="online", approved=True)


@pytest_twisted.ensureDeferred
async def test_queue_claim_finish_with_one_event_per_change(stores: Stores) -> None:
    store = await stores.open()
    device = await _device(store)
    items = [
        NewCommand(device.id, "info", {}, "INFO", expires_at=now(100)),
        NewCommand(device.id, "user_delete", {"user_id": "7"}, "DATA DELETE USERINFO PIN=7"),
        NewCommand(device.id, "reboot", {}, "REBOOT", batch_id="b1"),
    ]
    added, events = await store.add_commands(items, now())
    assert [c.status for c in added] == ["queued"] * 3
    assert [int(c.id) for c in added] == sorted(int(c.id) for c in added)
    assert added[1].fields == {"user_id": "7"} and added[2].batch_id == "b1"
    assert added[0].queued_at == now() and added[0].expires_at == now(100)
    assert [(e.type, e.payload["status"], e.payload["command_id"]) for e in events] == [
        ("command_status", "queued", c.id) for c in added
    ]
    assert events[0].payload["serial_number"] == "CMD1"
    assert events[0].payload["command_type"] == "info"

    # push: as many as fit, in queue order
    fits_two = sum(len(f"C:{c.id}:{c.command}\n".encode()) for c in added[:2])
    claimed, events = await store.claim_commands(device.id, now(1), fits_two)
    assert [c.id for c in claimed] == [c.id for c in added[:2]]
    assert all(c.status == "sent" and c.attempts == 1 and c.sent_at == now(1) for c in claimed)
    assert [e.payload["status"] for e in events] == ["sent", "sent"]
    # pull: one at a time
    claimed, _ = await store.claim_commands(device.id, now(2))
    assert [c.id for c in claimed] == [added[2].id]
    assert await store.claim_commands(device.id, now(3)) == ([], [])

    done, events = await store.complete_command(added[0].id, "done", 0, "UserCount=3", now(4))
    assert (done[0].status, done[0].return_code, done[0].finished_at) == ("done", 0, now(4))
    assert [e.type for e in events] == ["command_status", "command_result"]
    assert events[1].payload["status"] == "done" and events[1].payload["command"] == "INFO"
    # a resent result, another device's id, an unknown or junk id: nothing changes
    assert await store.complete_command(added[0].id, "failed", -1, "", now(5)) == ([], [])
    other = await _device(store, "OTHER")
    assert await store.complete_command(added[1].id, "done", 0, "", now(5), other.id) == ([], [])
    assert await store.complete_command("99999999", "done", 0, "", now(5)) == ([], [])
    assert await store.complete_command("abc", "done", 0, "", now(5)) == ([], [])
    failed, _ = await store.complete_command(
        added[1].id, "failed", -10, "user not found", now(6), device.id
    )
    assert failed[0].status == "failed" and failed[0].result == "user not found"

    page, cursor = await store.list_commands(device_id=device.id)
    assert [c.id for c in page] == [c.id for c in reversed(added)] and cursor is None
    assert [c.status for c in page] == ["sent", "failed", "done"]


@pytest_twisted.ensureDeferred
async def test_timeout_requeues_then_expires_and_ttl_expires_queued(stores: Stores) -> None:
    store = await stores.open()
    device = await _device(store)
    (cmd, stale), _ = await store.add_commands(
        [
            NewCommand(device.id, "reboot", {}, "REBOOT"),
            NewCommand(device.id, "check", {}, "CHECK", expires_at=now(1000)),
        ],
        now(),
    )
    for attempt in (1, 2, 3):
        claimed, _ = await store.claim_commands(device.id, now(attempt * 200), 1)
        assert [(c.id, c.attempts) for c in claimed] == [(cmd.id, attempt)]
        # not yet timed out: nothing happens
        assert await store.sweep_commands(now(attempt * 200 + 1), now(attempt * 200 - 120), 3) == (
            [],
            [],
        )
        changed, events = await store.sweep_commands(
            now(attempt * 200 + 121), now(attempt * 200 + 1), 3
        )
        status = "queued" if attempt < 3 else "expired"
        assert [(c.id, c.status) for c in changed] == [(cmd.id, status)]
        assert [e.payload["status"] for e in events] == [status]
    expired = await store.command(cmd.id)
    assert expired is not None and expired.finished_at and expired.attempts == 3
    # a late answer to an expired command is still recorded (the truth wins)
    late, _ = await store.complete_command(cmd.id, "done", 0, "", now(800))
    assert late[0].status == "done"

    changed, _ = await store.sweep_commands(now(1000), now(880), 3)
    assert [(c.id, c.status) for c in changed] == [(stale.id, "expired")]
    assert (await store.command(stale.id)).result == "not run before it expired"


@pytest_twisted.ensureDeferred
async def test_cancel_only_queued(stores: Stores) -> None:
    store = await stores.open()
    device = await _device(store)
    (a, b), _ = await store.add_commands(
        [NewCommand(device.id, "reboot"), NewCommand(device.id, "info")], now()
    )
    cancelled, events = await store.cancel_command(b.id, now(1))
    assert cancelled[0].status == "cancelled" and events[0].payload["status"] == "cancelled"
    await store.claim_commands(device.id, now(2))
    again, events = await store.cancel_command(a.id, now(3))
    assert again[0].status == "sent" and events == []
    assert await store.cancel_command("424242", now(3)) == ([], [])
    assert await store.claim_commands(device.id, now(4)) == ([], [])  # b is not handed out


@pytest_twisted.ensureDeferred
async def test_list_filters_and_cursor_and_restart(stores: Stores) -> None:
    store = await stores.open()
    one, two = await _device(store, "A1"), await _device(store, "A2")
    items = [NewCommand(d.id, "info", batch_id="B") for d in (one, two)]
    items += [NewCommand(one.id, "reboot") for _ in range(3)]
    added, _ = await store.add_commands(items, now())
    page, cursor = await store.list_commands(device_id=one.id, limit=2)
    assert [c.id for c in page] == [added[4].id, added[3].id] and cursor == added[3].id
    page, cursor = await store.list_commands(device_id=one.id, limit=2, cursor=cursor)
    assert [c.id for c in page] == [added[2].id, added[0].id] and cursor is None
    page, _ = await store.list_commands(batch_id="B")
    assert {c.device_id for c in page} == {one.id, two.id}
    await store.claim_commands(two.id, now(1))
    page, _ = await store.list_commands(status="sent")
    assert [c.id for c in page] == [added[1].id]
    with pytest.raises(ValueError):
        await store.list_commands(cursor="x'; --")

    await store.stop()
    store = await stores.open()  # everything survives a restart, ids keep growing
    page, _ = await store.list_commands(limit=1000)
    assert len(page) == 5 and (await store.command(added[1].id)).status == "sent"
    (new,), _ = await store.add_commands([NewCommand(one.id, "check")], now(9))
    assert int(new.id) > int(added[-1].id)
    # the old one-line queue still works and reads back as type raw
    old = await store.queue_command(one.id, "RELOAD OPTIONS")
    read = await store.command(old.id)
    assert read is not None and read.type == "raw" and read.fields == {"command": "RELOAD OPTIONS"}
