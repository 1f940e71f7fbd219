"""Retry-After from a real twisted.web receiver on loopback (RFC 9110 section 10.2.3).

The sender runs on a :class:`Clock`, so each wait is checked to the second without being
waited: the next attempt comes when the receiver asked, never earlier, and within
``--webhook-retry-max`` and ``--webhook-give-up``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import formatdate

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from tests.harness import sleep, wait_until
from tests.webhooks.receiver import Receiver
from zkserver.clock import parse_iso
from zkserver.webhooks.backoff import RetryPolicy
from zkserver.webhooks.service import WebhookSender, treq_poster

SECRET = "a-test-secret-of-enough-length"
POLICY = RetryPolicy(retry_min=5.0, retry_max=600.0, give_up=3600.0, jitter=0.0)


def http_date(at: float) -> str:
    return formatdate(at, usegmt=True)  # IMF-fixdate


def rfc850_date(at: float) -> str:
    return time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(at))


def asctime_date(at: float) -> str:
    return time.asctime(time.gmtime(at))


async def resolve(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


async def first_attempt(
    store, code: int, value: Callable[[float], str], policy: RetryPolicy = POLICY
) -> tuple[Clock, Receiver, WebhookSender, float, int]:
    """One event, one failed attempt answered ``code`` with Retry-After ``value(now)``."""
    clock = Clock()
    receiver = await Receiver(
        secret=SECRET, fail_first=1, fail_code=code, retry_after=lambda: value(clock.seconds())
    ).start()
    hook = await store.add_webhook(url=receiver.url, secret=SECRET)
    await store.append_event({"type": "door", "door": 1}, "SN1")
    # Whole seconds (HTTP-dates have no fraction), after the delivery row's creation time
    # (real time: set only now, so a slow machine cannot leave the row in the clock's
    # future, never due), near enough to real time for the receiver's signature check.
    clock.advance(float(int(time.time()) + 1))
    sender = WebhookSender(
        store, clock, treq_poster(reactor), resolve, policy=policy, allow_private=True, poll=1e6
    )
    sender.startService()
    sender.wake()
    clock.advance(0)
    await wait_until(lambda: len(receiver.requests) == 1 and not sender._working)
    assert receiver.requests[0].status == code and receiver.requests[0].signature_ok
    return clock, receiver, sender, clock.seconds(), hook.id


@pytest.mark.parametrize(
    ("code", "value", "wait"),
    [
        pytest.param(429, lambda now: "120", 120.0, id="429-seconds"),
        pytest.param(429, lambda now: http_date(now + 300), 300.0, id="429-http-date"),
        pytest.param(503, lambda now: rfc850_date(now + 240), 240.0, id="503-rfc850-date"),
        pytest.param(503, lambda now: asctime_date(now + 60), 60.0, id="503-asctime-date"),
        pytest.param(429, lambda now: "7200", 600.0, id="capped-at-retry-max"),
        # More digits than int() converts (4300): it raised out of the attempt, which
        # was never recorded, and the delivery was sent again and again.
        pytest.param(503, lambda now: "9" * 5000, 600.0, id="too-many-digits-capped"),
        pytest.param(429, lambda now: "2", 5.0, id="shorter-than-the-backoff"),
        pytest.param(429, lambda now: http_date(now - 300), 5.0, id="a-date-past"),
        pytest.param(429, lambda now: "-120", 5.0, id="negative-ignored"),
        pytest.param(429, lambda now: "in a while", 5.0, id="malformed-ignored"),
        pytest.param(500, lambda now: "120", 5.0, id="not-429-or-503"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_the_next_attempt_waits_as_the_receiver_asked(
    store, code: int, value: Callable[[float], str], wait: float
):
    clock, receiver, sender, failed_at, hook_id = await first_attempt(store, code, value)
    try:
        (row,) = await store.webhook_deliveries(hook_id)
        assert row.status == "pending" and row.attempts == 1 and row.response_code == code
        next_at = parse_iso(row.next_attempt_at)
        assert next_at is not None and next_at.timestamp() == failed_at + wait
        if code in (429, 503):  # the operator sees what the receiver asked
            # (its first 100 characters: the row keeps no more of what a receiver sent)
            assert "Retry-After: " + value(failed_at)[:100] in row.error, row.error
        clock.advance(wait - 0.5)
        await sleep(0.2)
        assert len(receiver.requests) == 1  # not one moment early
        clock.advance(0.5)
        await wait_until(lambda: len(receiver.delivered_ids()) == 1)
        # The receiver has answered; the sender records it in its own time.
        for _ in range(200):
            (row,) = await store.webhook_deliveries(hook_id)
            if row.status != "pending":
                break
            await sleep(0.05)
        assert row.status == "delivered" and row.attempts == 2
    finally:
        await sender.stopService()
        await receiver.stop()


@pytest_twisted.ensureDeferred
async def test_a_wait_past_give_up_fails_the_delivery_at_once(store):
    # The receiver asks for 50 min; the delivery gives up 30 min after its first attempt:
    # it is failed now (as at the end of its window), not retried before the receiver asked.
    policy = RetryPolicy(retry_min=5.0, retry_max=3600.0, give_up=1800.0, jitter=0.0)
    clock, receiver, sender, _, hook_id = await first_attempt(
        store, 429, lambda now: "3000", policy
    )
    try:
        (row,) = await store.webhook_deliveries(hook_id)
        assert row.status == "failed" and row.attempts == 1 and row.response_code == 429
        assert "Retry-After: 3000" in row.error and "give-up" in row.error, row.error
        clock.advance(3600)
        await sleep(0.2)
        assert len(receiver.requests) == 1
    finally:
        await sender.stopService()
        await receiver.stop()
