"""The webhook outbox in the store, on both backends."""

from __future__ import annotations

import pytest_twisted

from zkserver.records import Punch
from zkserver.webhooks.service import iso_at

NOW = 1_800_000_000.0


@pytest_twisted.ensureDeferred
async def test_outbox_rows_follow_the_filters_in_the_same_transaction(store):
    every = await store.add_webhook(url="https://a.example/", secret="s" * 20)
    doors = await store.add_webhook(url="https://b.example/", secret="s" * 20, types=["door"])
    one = await store.add_webhook(url="https://c.example/", secret="s" * 20, devices=["SN_1"])
    paused = await store.add_webhook(url="https://d.example/", secret="s" * 20, active=False)
    device = await store.add_device(serial_number="SN_1", status="online", approved=True)
    other = await store.add_device(serial_number="SNX1", status="online", approved=True)
    punches = await store.save_punches(device, [Punch("1", "2026-11-29 08:00:00", 0, 1)])
    await store.save_punches(other, [Punch("2", "2026-11-29 08:00:00", 0, 1)])
    door = await store.append_event({"type": "door", "door": 1}, "SNX1")

    async def event_ids(hook) -> list[int]:
        return sorted(d.event_id for d in await store.webhook_deliveries(hook.id))

    everything = [e.id for e in await store.events_after(0)]
    assert await event_ids(every) == everything
    assert await event_ids(doors) == [door.id]
    # "SN_1" must not match "SNX1" (no LIKE wildcards in the device filter).
    assert await event_ids(one) == [punches[0].id]
    # A paused subscription's events queue (README: "its events still queue"), unsent.
    assert await event_ids(paused) == everything
    assert paused.id not in await store.due_webhooks(iso_at(NOW + 10**9))
    await store.update_webhook(paused.id, active=True)
    assert paused.id in await store.due_webhooks(iso_at(NOW + 10**9))


@pytest_twisted.ensureDeferred
async def test_a_head_backing_off_holds_its_subscription(store):
    hook = await store.add_webhook(url="https://a.example/", secret="s" * 20)
    first = await store.append_event({"type": "door", "door": 1}, "SN1")
    second = await store.append_event({"type": "door", "door": 2}, "SN1")
    later = iso_at(NOW + 10**6)
    assert await store.due_webhooks(later) == [hook.id]
    head = await store.next_deliveries(hook.id, later, 10)
    assert [d.event_id for d in head] == [first.id, second.id]
    await store.record_attempt(
        [head[0].id],
        at=later,
        status="pending",
        response_code=500,
        error="HTTP 500",
        next_attempt_at=iso_at(NOW + 2 * 10**6),
    )
    # The second delivery is due, the head is not: nothing is sent out of order.
    assert await store.due_webhooks(later) == []
    assert await store.next_deliveries(hook.id, later, 10) == []
    rows = {d.event_id: d for d in await store.webhook_deliveries(hook.id)}
    assert rows[first.id].attempts == 1 and rows[first.id].response_code == 500
    retried = await store.retry_delivery(hook.id, head[0].id)
    assert retried is not None and retried.status == "pending"
    assert await store.due_webhooks(later) == [hook.id]


@pytest_twisted.ensureDeferred
async def test_sender_retries_when_the_backoff_ends_not_at_the_next_poll(store):
    """A failed delivery is tried again when its delay is over (a timer of its own), not
    up to a poll interval later: the wait between attempts stays within retry_max."""
    from twisted.internet.task import Clock

    from tests.harness import wait_until
    from zkserver.webhooks.backoff import RetryPolicy
    from zkserver.webhooks.service import Answer, WebhookSender

    clock = Clock()
    clock.advance(NOW)
    posts: list[float] = []

    async def post(url: str, body: bytes, headers: dict[str, str]) -> Answer:
        posts.append(clock.seconds())
        return Answer(500)

    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    hook = await store.add_webhook(url="https://a.example/", secret="s" * 20)
    await store.append_event({"type": "door", "door": 1}, "SN1")
    policy = RetryPolicy(retry_min=3.0, retry_max=3.0, jitter=0.0)
    sender = WebhookSender(store, clock, post, resolve, policy=policy, poll=1000.0)
    sender.startService()
    try:
        sender.wake()
        clock.advance(0)
        await wait_until(lambda: len(posts) == 1 and not sender._working)
        clock.advance(3.0)
        await wait_until(lambda: len(posts) == 2 and not sender._working)
        assert posts[1] - posts[0] == 3.0
        (delivery,) = await store.webhook_deliveries(hook.id)
        assert delivery.attempts == 2 and delivery.status == "pending"
    finally:
        await sender.stopService()


@pytest_twisted.ensureDeferred
async def test_the_address_checked_is_the_address_connected_to(store):
    """DNS rebinding: the host's first answer is public (the URL check passes), the next
    one is loopback. The connection goes to an answer that was checked, so nothing
    reaches the loopback receiver and the delivery says why."""
    from twisted.internet import reactor

    from tests.harness import sleep, wait_until
    from tests.webhooks.receiver import Receiver
    from zkserver.webhooks.service import WebhookSender, treq_poster

    receiver = await Receiver(secret="s" * 20).start()
    answers = [["93.184.216.34"]]

    async def resolve(host: str, port: int) -> list[str]:
        return answers.pop(0) if answers else ["127.0.0.1"]

    port = receiver.port.getHost().port
    hook = await store.add_webhook(url=f"http://localhost:{port}/hook", secret="s" * 20)
    await store.append_event({"type": "door", "door": 1}, "SN1")
    sender = WebhookSender(
        store, reactor, treq_poster(reactor, resolve, allow_private=False), resolve, poll=0.05
    )
    sender.startService()
    try:
        await wait_until(lambda: not answers)
        rows: list = []

        async def attempted() -> None:
            rows[:] = await store.webhook_deliveries(hook.id)

        for _ in range(200):
            await attempted()
            if rows and rows[0].attempts:
                break
            await sleep(0.02)
        assert rows and rows[0].attempts >= 1, rows
        assert receiver.requests == []
        assert "127.0.0.1" in rows[0].error and "loopback" in rows[0].error, rows[0].error
    finally:
        await sender.stopService()
        await receiver.stop()
