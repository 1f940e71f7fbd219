"""--retain-events: old events pruned in small batches; a client whose Last-Event-ID was
pruned gets one 'reset' event, then live events (both databases)."""

from __future__ import annotations

import time

import pytest_twisted
import treq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from tests.harness import RunningServer, SSEClient, sleep
from zkserver.retention import EventRetention
from zkserver.store.dialect import utc_now


async def upload(server: RunningServer, *pins: str) -> None:
    body = "\n".join(f"{pin}\t2025-10-09 08:00:00\t0\t1\t0\t0\t0" for pin in pins).encode()
    response = await treq.post(
        f"{server.push_url}/iclock/cdata?SN=RETAIN1&table=ATTLOG", data=body, pool=server.pool
    )
    assert await response.content() == f"OK: {len(pins)}".encode()


async def attendance_ids(server: RunningServer) -> list[int]:
    events = await server.store.events_after(0, 1000)
    return [e.id for e in events if e.type == "attendance"]


@pytest_twisted.ensureDeferred
async def test_pruned_last_event_id_gets_one_reset_then_live_events(server: RunningServer):
    store = server.store
    await upload(server, "1", "2", "3")
    old = await attendance_ids(server)
    cutoff = utc_now()
    await sleep(0.01)
    await upload(server, "4", "5")
    assert await store.events_pruned_through() == 0
    deleted = 0
    while (n := await store.prune_events(cutoff, 2)) > 0:  # batches of two
        deleted += n
    assert deleted >= 3 and await store.events_pruned_through() >= old[-1]
    kept = await attendance_ids(server)
    assert kept and kept[0] > old[-1]
    stream = f"{server.web_url}/devices/events?token={server.token}&type=attendance,reset"
    pruned = await SSEClient(stream, headers={"Last-Event-ID": str(old[0])}).connect()
    boundary = await SSEClient(
        stream, headers={"Last-Event-ID": str(await store.events_pruned_through())}
    ).connect()
    try:
        await boundary.wait_for(2)  # nothing it missed was pruned: plain replay
        await pruned.wait_for(1, kind="reset")
        await upload(server, "6")
        await pruned.wait_for(1)
        await boundary.wait_for(3)
        assert [e["type"] for e in pruned.events] == ["reset", "attendance"]
        assert pruned.events[0]["pruned_through"] == await store.events_pruned_through()
        assert pruned.ids[0] < pruned.ids[1]  # the reset's id moves the client forward
        assert [e["user_id"] for e in pruned.events[1:]] == ["6"]
        assert [e["user_id"] for e in boundary.events] == ["4", "5", "6"]
        assert boundary.of_type("reset") == []
    finally:
        await pruned.close()
        await boundary.close()


@pytest_twisted.ensureDeferred
async def test_retention_prunes_what_is_due_in_batches_and_ids_keep_growing(
    server: RunningServer,
):
    await upload(server, *[str(i) for i in range(7)])
    last = (await server.store.events_after(0, 1000))[-1].id
    clock = Clock()
    clock.advance(time.time())
    retention = EventRetention(store=server.store, clock=clock, days=30, batch=3, pause=0)
    assert await retention.run() == 0  # nothing is 30 days old
    clock.advance(31 * 86400)
    pruned: list[int] = []
    Deferred.fromCoroutine(retention.run()).addCallback(pruned.append)
    while not pruned:  # run() pauses between batches on its clock: drive it
        clock.advance(1)
        await sleep(0.01)
    assert pruned[0] >= 7
    assert await server.store.events_after(0, 1000) == []
    assert await server.store.events_pruned_through() == last
    await upload(server, "new")
    (event,) = await server.store.events_after(0, 1000)
    assert event.id > last
