"""Webhook delivery end to end: a real server, real loopback receivers (twisted.web)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_twisted
import treq

from tests.databases import postgres_schema
from tests.harness import RunningServer, sleep, start_server, wait_until
from tests.webhooks.receiver import Receiver

SECRET = "a-test-secret-of-enough-length"
FAST = (
    "--auto-approve",
    "--webhook-allow-private",
    "--webhook-retry-min",
    "0.05",
    "--webhook-retry-max",
    "0.2",
    "--webhook-timeout",
    "1",
)


@pytest_twisted.async_yield_fixture
async def hooked(db_url: str, tmp_path) -> AsyncIterator[RunningServer]:
    running = await start_server(db_url, str(tmp_path / "data"), *FAST)
    yield running
    await running.stop()


async def punch(server: RunningServer, serial: str, users: range) -> None:
    lines = "\n".join(f"{u}\t2026-11-29 08:{u % 60:02d}:00\t0\t1\t0\t0\t0" for u in users)
    response = await treq.post(
        f"{server.push_url}/iclock/cdata?SN={serial}&table=ATTLOG",
        data=lines.encode(),
        pool=server.pool,
    )
    assert (await response.content()).startswith(b"OK")


async def subscribe(server: RunningServer, receiver: Receiver, **extra) -> dict:
    code, hook = await server.api(
        "POST", "/api/webhooks", {"url": receiver.url, "secret": SECRET, **extra}
    )
    assert code == 201, hook
    return hook


async def stream_data(server: RunningServer, kind: str = "attendance") -> dict[int, bytes]:
    """Each event's stored ``data:`` text, as the stream sends it."""
    events = await server.store.events_after(0, 1000)
    return {e.id: e.data.encode() for e in events if e.type == kind}


@pytest_twisted.ensureDeferred
async def test_failing_receiver_gets_every_event_signed_in_order(hooked: RunningServer):
    receiver = await Receiver(secret=SECRET, fail_first=2).start()
    try:
        hook = await subscribe(hooked, receiver, types=["attendance"])
        await punch(hooked, "HOOK0001", range(1, 4))
        await wait_until(lambda: len(receiver.delivered_ids()) >= 3)
        data = await stream_data(hooked)
        assert receiver.delivered_ids() == sorted(data)  # each once, in id order
        assert [r.status for r in receiver.requests] == [500, 500, 204, 204, 204]
        first = receiver.requests[0]
        assert all(r.signature_ok for r in receiver.requests)
        assert first.headers["content-type"] == "application/json"
        for r in receiver.requests:
            (event_id,) = r.event_ids
            assert r.body == data[event_id]  # exactly the stream's data: JSON
        code, log = await hooked.api("GET", f"/api/webhooks/{hook['id']}/deliveries")
        assert code == 200
        rows = {row["event_id"]: row for row in log["items"]}
        head = rows[min(rows)]
        assert head["status"] == "delivered" and head["attempts"] == 3
        assert head["response_code"] == 204 and head["last_attempt_at"]
        assert {row["status"] for row in rows.values()} == {"delivered"}
        code, failed = await hooked.api(
            "GET", f"/api/webhooks/{hook['id']}/deliveries?status=failed"
        )
        assert failed["items"] == []
    finally:
        await receiver.stop()


@pytest_twisted.ensureDeferred
async def test_batches_are_json_arrays_of_the_stream_data(hooked: RunningServer):
    receiver = await Receiver(secret=SECRET, dead=True).start()
    try:
        await subscribe(hooked, receiver, batch_max=10, devices=["HOOK0002"])
        await punch(hooked, "HOOK0009", range(1, 3))  # another device: not wanted
        await punch(hooked, "HOOK0002", range(1, 2))
        await wait_until(lambda: len(receiver.requests) == 1)
        receiver.dead = False
        await punch(hooked, "HOOK0002", range(2, 6))
        await wait_until(lambda: len(receiver.delivered_ids()) >= 6)
        events = await hooked.store.events_after(0, 1000)
        data = {e.id: e.data.encode() for e in events}
        mine = sorted(e.id for e in events if e.serial_number == "HOOK0002")
        assert sorted(set(receiver.delivered_ids())) == mine
        last = receiver.requests[-1]
        assert last.body == b"[" + b",".join(data[i] for i in last.event_ids) + b"]"
        assert last.headers["x-zkserver-event-id"] == ",".join(map(str, last.event_ids))
        assert len(last.event_ids) > 1 and last.signature_ok
    finally:
        await receiver.stop()


@pytest_twisted.ensureDeferred
async def test_a_dead_endpoint_holds_back_only_its_own_subscription(hooked: RunningServer):
    dead = await Receiver(secret=SECRET, dead=True).start()
    alive = await Receiver(secret=SECRET).start()
    try:
        await subscribe(hooked, dead)
        await subscribe(hooked, alive)
        await punch(hooked, "HOOK0003", range(1, 6))
        await wait_until(lambda: len(alive.delivered_ids()) >= 5)
        # The dead endpoint has been asked for its first event only: the later ones wait.
        assert {tuple(r.event_ids) for r in dead.requests} == {(alive.delivered_ids()[0],)}
        assert alive.delivered_ids() == sorted(alive.delivered_ids())
    finally:
        await dead.stop()
        await alive.stop()


@pytest_twisted.ensureDeferred
async def test_given_up_delivery_is_failed_then_retried_by_hand(db_url: str, tmp_path):
    server = await start_server(db_url, str(tmp_path / "d"), *FAST, "--webhook-give-up", "0.3")
    receiver = await Receiver(secret=SECRET, fail_first=1000).start()
    try:
        hook = await subscribe(server, receiver, types=["attendance"])
        await punch(server, "HOOK0004", range(1, 3))
        path = f"/api/webhooks/{hook['id']}/deliveries"

        async def statuses() -> list[str]:
            return [row["status"] for row in (await server.api("GET", path))[1]["items"]]

        for _ in range(200):
            if await statuses() == ["failed", "failed"]:
                break
            await sleep(0.05)
        assert await statuses() == ["failed", "failed"]
        _, rows = await server.api("GET", path + "?status=failed")
        target = rows["items"][-1]
        assert target["error"] == "HTTP 500" and target["attempts"] >= 2
        receiver.fail_first = 0
        code, retried = await server.api("POST", f"{path}/{target['id']}/retry")
        assert code == 200 and retried["status"] == "pending"
        await wait_until(lambda: target["event_id"] in receiver.delivered_ids())
        assert await statuses() == ["failed", "delivered"]
    finally:
        await receiver.stop()
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_ping_is_signed_the_same_way(hooked: RunningServer):
    receiver = await Receiver(secret=SECRET).start()
    try:
        hook = await subscribe(hooked, receiver)
        code, result = await hooked.api("POST", f"/api/webhooks/{hook['id']}/test")
        assert code == 200 and result["delivered"] and result["response_code"] == 204
        (ping,) = receiver.requests
        assert ping.signature_ok and ping.json["type"] == "ping"
        assert ping.headers["x-zkserver-event-id"] == result["event_id"]
    finally:
        await receiver.stop()


@pytest_twisted.ensureDeferred
async def test_subscriptions_api(hooked: RunningServer):
    code, hook = await hooked.api("POST", "/api/webhooks", {"url": "https://example.com/in"})
    assert code == 201 and len(hook["secret"]) >= 32  # generated, shown once
    assert hook["batch_max"] == 1 and hook["active"] is True and hook["types"] == []
    code, listed = await hooked.api("GET", "/api/webhooks")
    assert code == 200 and [h["id"] for h in listed] == [hook["id"]]
    assert "secret" not in listed[0]
    code, changed = await hooked.api(
        "PATCH",
        f"/api/webhooks/{hook['id']}",
        {"types": ["door", "alarm"], "active": False, "batch_max": 50},
    )
    assert code == 200 and changed["types"] == ["door", "alarm"] and not changed["active"]
    assert "secret" not in changed
    # A null secret keeps the old one, and does not show it again.
    code, kept = await hooked.api("PATCH", f"/api/webhooks/{hook['id']}", {"secret": None})
    assert code == 200 and "secret" not in kept, kept
    code, one = await hooked.api("GET", f"/api/webhooks/{hook['id']}")
    assert one == kept
    code, _ = await hooked.api("DELETE", f"/api/webhooks/{hook['id']}")
    assert code == 200
    code, _ = await hooked.api("GET", f"/api/webhooks/{hook['id']}")
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_a_url_with_a_password_is_refused_even_for_private_targets(hooked: RunningServer):
    # It was accepted, listed with its password, and every delivery failed ("invalid
    # hostname"): the HTTP client cannot send to it.
    receiver = await Receiver(secret=SECRET).start()
    try:
        url = receiver.url.replace("http://", "http://user:pass@")
        code, answer = await hooked.api("POST", "/api/webhooks", {"url": url})
        assert code == 400 and answer["field"] == "url" and "user:password" in answer["detail"]
        code, hook = await hooked.api("POST", "/api/webhooks", {"url": receiver.url})
        assert code == 201
        code, answer = await hooked.api("PATCH", f"/api/webhooks/{hook['id']}", {"url": url})
        assert code == 400 and answer["field"] == "url"
        assert (await hooked.api("GET", "/api/webhooks"))[1][0]["url"] == receiver.url
    finally:
        await receiver.stop()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/"}, "url"),
        ({}, "url"),
        ({"url": "http://127.0.0.1:9/x"}, "url"),  # loopback: refused (SSRF)
        ({"url": "http://169.254.169.254/latest/meta-data"}, "url"),
        ({"url": "http://10.1.2.3/"}, "url"),
        ({"url": "http://127.1:9/"}, "url"),  # inet_aton's loopback
        ({"url": "https://example.com/", "types": ["attendance", "nope"]}, "types"),
        ({"url": "https://example.com/", "batch_max": 0}, "batch_max"),
        ({"url": "https://example.com/", "batch_max": 1001}, "batch_max"),
        ({"url": "https://example.com/", "batch_max": "x"}, "batch_max"),
        ({"url": "https://example.com/", "devices": ["bad serial!"]}, "devices"),
        ({"url": "https://example.com/", "secret": "short"}, "secret"),
        ({"url": "https://example.com/", "active": "yes"}, "active"),
        ({"url": "https://example.com/", "colour": "red"}, "colour"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_subscriptions_name_the_field(server: RunningServer, body: dict, field: str):
    code, answer = await server.api("POST", "/api/webhooks", body)
    assert code == 400, answer
    assert answer["field"] == field and answer["detail"].startswith(field)


@pytest_twisted.ensureDeferred
async def test_two_processes_on_postgresql_send_each_delivery_once(tmp_path):
    receiver = await Receiver(secret=SECRET).start()
    with postgres_schema() as url:
        first = await start_server(url, str(tmp_path / "a"), *FAST, "--token", "t")
        second = await start_server(url, str(tmp_path / "b"), *FAST, "--token", "t")
        try:
            await subscribe(first, receiver)
            await subscribe(first, receiver, batch_max=3)
            for i in range(10):
                await punch((first, second)[i % 2], "HOOK0005", range(i * 3 + 1, i * 3 + 4))
            await wait_until(lambda: len(receiver.delivered_ids()) >= 62, timeout=30)
            every = sorted(e.id for e in await first.store.events_after(0, 1000))
            ids = receiver.delivered_ids()
            assert len(ids) == 2 * len(every) and sorted(set(ids)) == every
            single = [
                i for r in receiver.requests if not r.body.startswith(b"[") for i in r.event_ids
            ]
            assert sorted(single) == every  # none twice
            batched = [i for r in receiver.requests if r.body.startswith(b"[") for i in r.event_ids]
            assert sorted(batched) == every  # none twice
        finally:
            await first.stop()
            await second.stop()
            await receiver.stop()


@pytest_twisted.ensureDeferred
async def test_a_delivery_cut_short_by_a_stop_is_no_failed_attempt(db_url: str, tmp_path):
    # Stopping the server cancels the POST in flight; it was recorded as a failed attempt
    # with a retry delay, so after a restart the event waited --webhook-retry-min first.
    slow = (
        "--auto-approve",
        "--webhook-allow-private",
        "--webhook-retry-min",
        "60",
        "--webhook-timeout",
        "30",
    )
    data_dir = str(tmp_path / "d")
    receiver = await Receiver(secret=SECRET, dead=True).start()
    first = await start_server(db_url, data_dir, *slow)
    try:
        hook = await subscribe(first, receiver, types=["attendance"])
        await punch(first, "HOOK0007", range(1, 2))
        await wait_until(lambda: len(receiver.requests) == 1)  # in flight, unanswered
    finally:
        await first.stop()
    receiver.dead = False
    second = await start_server(db_url, data_dir, *slow)
    try:
        await wait_until(lambda: len(receiver.delivered_ids()) == 1)
        _, log = await second.api("GET", f"/api/webhooks/{hook['id']}/deliveries")
        (row,) = log["items"]
        assert row["status"] == "delivered" and row["attempts"] == 1, row
    finally:
        await second.stop()
        await receiver.stop()


@pytest_twisted.ensureDeferred
async def test_an_endpoint_that_never_answers_is_logged_as_such(hooked: RunningServer):
    # The error read "ResponseNeverReceived: [<...CancelledError>]": the client's wrapping
    # of the timeout's cancel, which the operator could not read as a timeout.
    receiver = await Receiver(secret=SECRET, dead=True).start()
    try:
        hook = await subscribe(hooked, receiver, types=["attendance"])
        await punch(hooked, "HOOK0008", range(1, 2))
        await wait_until(lambda: len(receiver.requests) >= 2)
        _, log = await hooked.api("GET", f"/api/webhooks/{hook['id']}/deliveries")
        (row,) = log["items"]
        assert row["status"] == "pending" and row["attempts"] >= 1
        assert row["error"] == "no answer within 1 s" and row["response_code"] is None
    finally:
        await receiver.stop()


@pytest_twisted.ensureDeferred
async def test_changing_or_deleting_a_subscription_with_deliveries_pending(
    hooked: RunningServer, log_events
):
    failing = await Receiver(secret=SECRET, fail_first=10_000).start()
    good = await Receiver(secret="another-secret-of-length").start()
    try:
        hook = await subscribe(hooked, failing, types=["attendance"])
        await punch(hooked, "HOOK0010", range(1, 4))
        await wait_until(lambda: len(failing.requests) >= 2)
        path = f"/api/webhooks/{hook['id']}"
        code, _ = await hooked.api("PATCH", path, {"active": False})
        assert code == 200
        seen = len(failing.requests)
        await sleep(0.5)
        assert len(failing.requests) <= seen + 1  # paused (one may have been in flight)
        code, _ = await hooked.api(
            "PATCH",
            path,
            {"url": good.url, "secret": "another-secret-of-length", "active": True},
        )
        assert code == 200
        await wait_until(lambda: len(good.delivered_ids()) >= 3)
        assert good.delivered_ids() == sorted(good.delivered_ids())
        assert all(r.signature_ok for r in good.requests)  # signed with the new secret
        second = await subscribe(hooked, failing, types=["attendance"])
        await punch(hooked, "HOOK0010", range(4, 6))
        await wait_until(lambda: len(failing.requests) >= seen + 2)
        code, _ = await hooked.api("DELETE", f"/api/webhooks/{second['id']}")
        assert code == 200
        after = len(failing.requests)
        await sleep(0.5)
        assert len(failing.requests) <= after + 1
        assert not [e for e in log_events if e.get("log_failure") is not None]
    finally:
        await failing.stop()
        await good.stop()


@pytest_twisted.ensureDeferred
async def test_a_batch_gives_up_only_on_deliveries_past_the_window(db_url: str, tmp_path):
    # A batch carries the failing head and the events queued behind it. When the head's
    # --webhook-give-up passed, every delivery of the batch was marked failed, even one
    # whose first attempt was a moment ago ("still failing this long after its first
    # attempt" was true of the head only).
    server = await start_server(db_url, str(tmp_path / "d"), *FAST, "--webhook-give-up", "1.5")
    receiver = await Receiver(secret=SECRET, fail_first=10_000).start()
    try:
        hook = await subscribe(server, receiver, types=["attendance"], batch_max=10)
        path = f"/api/webhooks/{hook['id']}/deliveries"
        await punch(server, "HOOK0011", range(1, 2))
        await wait_until(lambda: len(receiver.requests) >= 1)
        await sleep(1.0)
        await punch(server, "HOOK0011", range(2, 3))
        await wait_until(lambda: any(len(r.event_ids) == 2 for r in receiver.requests))

        async def rows() -> list[dict]:
            items = (await server.api("GET", path))[1]["items"]
            return sorted(items, key=lambda row: row["event_id"])

        for _ in range(100):
            head, later = await rows()
            if head["status"] == "failed":
                break
            await sleep(0.02)
        assert head["status"] == "failed"
        assert later["status"] == "pending", later  # its own window is not over
        receiver.fail_first = 0
        await wait_until(lambda: later["event_id"] in receiver.delivered_ids())
        assert [row["status"] for row in await rows()] == ["failed", "delivered"]
    finally:
        await receiver.stop()
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_stopping_server_closes_its_kept_alive_connections(db_url: str, tmp_path):
    # The sender keeps connections to receivers open between deliveries; a stop closes
    # them instead of leaving each receiver a half-dead connection to time out.
    server = await start_server(db_url, str(tmp_path / "data"), *FAST)
    receiver = await Receiver(secret=SECRET).start()
    try:
        await subscribe(server, receiver, types=["attendance"])
        await punch(server, "KEEPALIVE1", range(1, 2))
        await wait_until(lambda: len(receiver.delivered_ids()) == 1)
        assert receiver.connections == 1
        await server.stop()
        await wait_until(lambda: receiver.connections == 0, timeout=5)
    finally:
        if server.service.running:
            await server.stop()
        await receiver.stop()
