"""--retain-events: old events pruned in small batches; a client whose Last-Event-ID was
pruned gets one 'reset' event, then live events (both databases)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from tests.harness import RunningServer, SSEClient, sleep, wait_until
from zkserver.retention import EventRetention
from zkserver.store.dialect import utc_now
from zkserver.web import sse


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


# --- the retention edge: prunes that run while a replay reads --------------------------


class PruneBetweenReads:
    """The stream's store: the server's own, except that before the replay's read number
    ``n`` (1, 2, ... whatever it reads) for which ``due(n)`` holds, ``prune()`` runs to
    its end first. A deterministic interleaving of retention with a replay's reads."""

    def __init__(self, store: Any, prune: Callable[[], Any], due: Callable[[int], bool]):
        self._store = store
        self._prune = prune
        self._due = due
        self.reads = 0
        self.pruned_before: list[int] = []  # the read numbers a prune ran before

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)

        def call(*args: Any, **kwargs: Any) -> Deferred[Any]:
            self.reads += 1
            return Deferred.fromCoroutine(self._read(self.reads, method, args, kwargs))

        return call

    async def _read(self, n: int, method: Any, args: Any, kwargs: Any) -> Any:
        if self._due(n):
            await self._prune()
            self.pruned_before.append(n)
        return await method(*args, **kwargs)


async def committed_ids(server: RunningServer, after: int = 0) -> list[int]:
    return [e.id for e in await server.store.events_after(after, 100_000)]


def frames_of(client: SSEClient) -> list[tuple[int, dict[str, Any]]]:
    return list(zip(client.ids, client.events, strict=True))


def assert_never_silently_missed(client: SSEClient, last_id: int, committed: list[int]) -> int:
    """The stream after Last-Event-ID ``last_id``, against every event id ever committed:
    ids ascend; either every committed id after ``last_id``, or at most ONE reset: before
    it a gap-free run of those ids, after it every committed id after the reset's id.
    Returns how many resets there were (0 or 1)."""
    ids = client.ids
    assert ids == sorted(set(ids)), ids
    resets = [i for i, e in enumerate(client.events) if e.get("type") == "reset"]
    assert len(resets) <= 1, frames_of(client)
    wanted = [i for i in committed if i > last_id]
    if not resets:
        assert ids == wanted, (ids, wanted)
        return 0
    (r,) = resets
    assert ids[:r] == wanted[:r], (ids, wanted)  # nothing skipped before the reset
    reset_id, reset = ids[r], client.events[r]
    assert reset_id >= reset["pruned_through"] > (ids[r - 1] if r else last_id)
    assert ids[r + 1 :] == [i for i in committed if i > reset_id], (ids, committed)
    return 1


async def old_and_new(server: RunningServer) -> tuple[list[int], str]:
    """Ten old punches (before the returned cutoff), then two new ones; the ids of the
    old attendance events."""
    await upload(server, *[f"old{i}" for i in range(10)])
    old = await attendance_ids(server)
    cutoff = utc_now()
    await sleep(0.01)  # the new events' created_at is after the cutoff
    await upload(server, "new1", "new2")
    return old, cutoff


async def stream_until_live(
    server: RunningServer, last_id: int | None, pin: str = "live"
) -> SSEClient:
    """Open a stream (with ``last_id`` as Last-Event-ID unless None); once its replay is
    over (it got a reset, or the newest event), commit one live punch by ``pin`` and
    return when that has arrived too. (A punch committed during the replay may be
    covered by a reset: the client reloads it.)"""
    newest = (await server.store.replay_page(0, 1)).newest
    url = f"{server.web_url}/devices/events?token={server.token}"
    headers = {} if last_id is None else {"Last-Event-ID": str(last_id)}
    client = await SSEClient(url, headers=headers).connect()

    def replayed() -> bool:
        if client.retry is None:  # the stream is not open yet
            return False
        return (
            last_id is None
            or last_id >= newest
            or newest in client.ids
            or bool(client.of_type("reset"))
        )

    await wait_until(replayed)
    await upload(server, pin)
    await wait_until(lambda: any(e.get("user_id") == pin for e in client.events))
    return client


@pytest.mark.parametrize("before_read", [1, 2, 3, 4])
@pytest_twisted.ensureDeferred
async def test_a_prune_between_the_replays_reads_never_loses_events_silently(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, before_read: int
):
    """Retention deletes every old event just before the replay's n-th store read: the
    client, whose Last-Event-ID is the first old punch, gets some old events, then one
    reset, then live events (the new ones are in the state it reloads); never a gap
    without a reset."""
    monkeypatch.setattr(sse, "REPLAY_PAGE", 2)  # several pages, several reads
    old, cutoff = await old_and_new(server)
    committed = await committed_ids(server)

    async def prune_old() -> None:
        while await server.store.prune_events(cutoff, 3) == 3:
            pass

    hook = PruneBetweenReads(server.store, prune_old, lambda n: n == before_read)
    assert server.service.events is not None
    server.service.events.store = hook
    client = await stream_until_live(server, old[0])
    try:
        assert hook.pruned_before == [before_read]  # the prune did run during the replay
        committed += await committed_ids(server, committed[-1])
        assert assert_never_silently_missed(client, old[0], committed) == 1
        (reset,) = client.of_type("reset")
        assert reset["pruned_through"] == await server.store.events_pruned_through()
        after_reset = client.events[client.events.index(reset) + 1 :]
        assert [e.get("user_id") for e in after_reset] == ["live"]  # new ones: reloaded
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_retention_batches_chasing_a_replay_page_by_page_cost_one_reset(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
):
    """A batch of three deleted before every read of the replay but its first (retention
    overtaking a client at the edge, pages of two): exactly one reset, nothing missed
    silently, and no second reset for the batches that run after it."""
    monkeypatch.setattr(sse, "REPLAY_PAGE", 2)
    old, cutoff = await old_and_new(server)
    committed = await committed_ids(server)
    first = committed[0]

    async def one_batch() -> None:
        await server.store.prune_events(cutoff, 3)

    hook = PruneBetweenReads(server.store, one_batch, lambda n: n >= 2)
    assert server.service.events is not None
    server.service.events.store = hook
    client = await stream_until_live(server, first)  # the oldest event
    try:
        assert len(hook.pruned_before) >= 2
        committed += await committed_ids(server, committed[-1])
        assert assert_never_silently_missed(client, first, committed) == 1
    finally:
        await client.close()


@pytest.mark.parametrize("offset", [-1, 0, 1])
@pytest_twisted.ensureDeferred
async def test_the_reset_boundary_is_the_pruned_through_id(server: RunningServer, offset: int):
    """Last-Event-ID one below the pruned-through id: one reset; equal or one above:
    a plain replay of what follows it (nothing it missed was pruned)."""
    old, cutoff = await old_and_new(server)
    committed = await committed_ids(server)
    while await server.store.prune_events(cutoff, 3):
        pass
    pruned = await server.store.events_pruned_through()
    assert pruned >= old[-1]
    client = await stream_until_live(server, pruned + offset)
    try:
        committed += await committed_ids(server, committed[-1])
        resets = assert_never_silently_missed(client, pruned + offset, committed)
        assert resets == (1 if offset < 0 else 0)
    finally:
        await client.close()


@pytest.mark.parametrize("last_id", [0, None])
@pytest_twisted.ensureDeferred
async def test_last_event_id_zero_replays_from_the_start_and_none_starts_live(
    server: RunningServer, last_id: int | None
):
    """Last-Event-ID 0 asks for everything: the oldest events were pruned, so one reset.
    No Last-Event-ID: live events only, no reset."""
    old, cutoff = await old_and_new(server)
    committed = await committed_ids(server)
    while await server.store.prune_events(cutoff, 3):
        pass
    client = await stream_until_live(server, last_id)
    try:
        if last_id is None:
            assert [e.get("user_id") for e in client.events] == ["live"]
        else:
            committed += await committed_ids(server, committed[-1])
            assert assert_never_silently_missed(client, last_id, committed) == 1
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_a_client_behind_gets_a_reset_when_every_event_was_pruned(server: RunningServer):
    """The events table empty (every event older than the cutoff): a Last-Event-ID below
    the pruned-through id is no id "from another database", it missed events: one reset.
    At the pruned-through id itself: nothing missed, no reset."""
    await upload(server, "1", "2", "3")
    committed = await committed_ids(server)
    await sleep(0.01)
    while await server.store.prune_events(utc_now(), 3):
        pass
    assert await server.store.events_after(0, 10) == []
    pruned = await server.store.events_pruned_through()
    assert pruned == committed[-1]
    behind = await stream_until_live(server, pruned - 1, "live1")
    level = await stream_until_live(server, pruned, "live2")
    try:
        committed += await committed_ids(server, committed[-1])
        assert assert_never_silently_missed(behind, pruned - 1, committed) == 1
        assert assert_never_silently_missed(level, pruned, committed) == 0
    finally:
        await behind.close()
        await level.close()
