"""The body of a webhook is exactly the stream's ``data:`` JSON (README, "Webhooks"), also
for an event stored before U+2028/U+2029/NEL were escaped when it was written."""

from __future__ import annotations

import json
import time
from unittest import mock

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from tests.harness import wait_until
from tests.webhooks.receiver import Receiver
from zkserver.events import _ENCODER
from zkserver.webhooks.backoff import RetryPolicy
from zkserver.webhooks.service import WebhookSender, treq_poster

SECRET = "a-test-secret-of-enough-length"


async def resolve(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


@pytest_twisted.ensureDeferred
async def test_an_event_stored_with_raw_separators_is_sent_as_the_stream_sends_it(store):
    clock = Clock()
    clock.advance(float(int(time.time()) + 1))
    receiver = await Receiver(secret=SECRET).start()
    await store.add_webhook(url=receiver.url, secret=SECRET)
    payload = {"type": "door", "door": 1, "device_name": "Gate\u2028A\u2029B\x85C"}
    # As a version before the escaping wrote it: the separators raw in the stored text.
    with mock.patch("zkserver.store.sql.encode_payload", _ENCODER.encode):
        await store.append_event(payload, "SN1")
    (event,) = await store.events_after(0, 10)
    assert "\u2028" in (event.data or "")  # stored raw
    frame = event.frame.decode()
    data = frame.split("\ndata: ", 1)[1].removesuffix("\n\n")
    assert "\u2028" not in data  # the stream escapes it
    sender = WebhookSender(
        store,
        clock,
        treq_poster(reactor),
        resolve,
        policy=RetryPolicy(jitter=0.0),
        allow_private=True,
        poll=1e6,
    )
    sender.startService()
    try:
        sender.wake()
        clock.advance(0)
        await wait_until(lambda: len(receiver.requests) == 1 and not sender._working)
        (received,) = receiver.requests
        assert received.signature_ok
        assert received.body == data.encode()  # the stream's bytes, one line
        assert json.loads(received.body) == payload
    finally:
        await sender.stopService()
        await receiver.stop()
