"""GET /devices/events over real sockets: format, replay, filters, slow clients, tokens."""

from __future__ import annotations

import gc
import inspect
import re
import socket

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.web import http

from tests.harness import (
    RunningServer,
    SSEClient,
    drain,
    raw_request,
    sleep,
    start_server,
    wait_until,
)

SN = "SSE0001"


def attlog(*rows: tuple[str, str]) -> bytes:
    return "\n".join(f"{pin}\t{ts}\t0\t15\t0\t0\t0" for pin, ts in rows).encode()


async def upload(server: RunningServer, body: bytes, sn: str = SN) -> tuple[int, bytes]:
    response = await treq.post(
        f"{server.push_url}/iclock/cdata?SN={sn}&table=ATTLOG", data=body, pool=server.pool
    )
    return response.code, await response.content()


def stream_url(server: RunningServer, query: str = "") -> str:
    return f"{server.web_url}/devices/events?token={server.token}{query}"


@pytest_twisted.ensureDeferred
async def test_event_has_exactly_the_contract_fields(server: RunningServer):
    client = await SSEClient(stream_url(server)).connect()
    try:
        assert client.status == 200
        assert client.response_headers.getRawHeaders("content-type")[0].startswith(
            "text/event-stream"
        )
        assert client.response_headers.getRawHeaders("cache-control") == ["no-cache"]
        await upload(server, attlog(("1001", "2025-10-09 18:30:45")))
        await client.wait_for(1)
        event = client.of_type("attendance")[0]
        _, devices = await server.api("GET", "/api/devices")
        device = next(d for d in devices if d["serial_number"] == SN)
        assert event == {
            "type": "attendance",
            "device_id": device["id"],
            "device_name": f"Push Device {SN}",
            "serial_number": SN,
            "user_id": "1001",
            "timestamp": "2025-10-09 18:30:45",
            "action": 0,
            "method": 15,
            "raw_data": event["raw_data"],
            "timestamp_utc": event["timestamp_utc"],
            "time_ambiguous": False,
            "suspect_time": event["suspect_time"],
        }
        assert event["raw_data"]["user_id"] == "1001"
        assert event["raw_data"]["timestamp"] == "2025-10-09 18:30:45"
        assert event["raw_data"]["status"] == 0
        assert event["raw_data"]["verify_method"] == 15
        assert client.retry and client.retry > 0
        assert client.ids == sorted(client.ids) and len(set(client.ids)) == len(client.ids)
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_every_client_gets_every_event(server: RunningServer):
    clients = [await SSEClient(stream_url(server, "&type=attendance")).connect() for _ in range(5)]
    try:
        for i in range(10):
            await upload(server, attlog((str(100 + i), f"2025-10-09 10:00:{i:02d}")))
        for client in clients:
            await client.wait_for(10)
            assert [e["user_id"] for e in client.events] == [str(100 + i) for i in range(10)]
    finally:
        for client in clients:
            await client.close()


@pytest_twisted.ensureDeferred
async def test_last_event_id_replays_everything_missed_in_order(server: RunningServer):
    first = await SSEClient(stream_url(server, "&type=attendance")).connect()
    await upload(server, attlog(("1", "2025-10-09 10:00:00"), ("2", "2025-10-09 10:00:01")))
    await first.wait_for(2)
    seen = first.ids[-1]
    await first.close()
    await upload(server, attlog(("3", "2025-10-09 10:00:02"), ("4", "2025-10-09 10:00:03")))
    header = await SSEClient(
        stream_url(server, "&type=attendance"), headers={"Last-Event-ID": str(seen)}
    ).connect()
    query = await SSEClient(stream_url(server, f"&type=attendance&last_event_id={seen}")).connect()
    try:
        for client in (header, query):
            await client.wait_for(2)
        await upload(server, attlog(("5", "2025-10-09 10:00:04")))
        for client in (header, query):
            await client.wait_for(3)
            assert [e["user_id"] for e in client.events] == ["3", "4", "5"]
            assert all(i > seen for i in client.ids)
    finally:
        await header.close()
        await query.close()


@pytest_twisted.ensureDeferred
async def test_replay_and_live_events_meet_without_gap_or_duplicate(server: RunningServer):
    for batch in range(5):
        await upload(
            server,
            attlog(*[(f"{batch}{i:03d}", f"2025-10-09 11:{batch:02d}:{i:02d}") for i in range(50)]),
        )
    client = await SSEClient(
        stream_url(server, "&type=attendance"), headers={"Last-Event-ID": "0"}
    ).connect()
    try:
        # Live uploads while the replay is running.
        for batch in range(5, 8):
            await upload(
                server,
                attlog(
                    *[(f"{batch}{i:03d}", f"2025-10-09 11:{batch:02d}:{i:02d}") for i in range(50)]
                ),
            )
        await client.wait_for(400)
        await deferLater(reactor, 0.2, lambda: None)
        users = [e["user_id"] for e in client.events]
        assert len(users) == 400 == len(set(users))
        assert client.ids == sorted(client.ids)
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_filters_by_device_and_type(server: RunningServer):
    only_a = await SSEClient(stream_url(server, "&device=DEVA&type=attendance")).connect()
    try:
        await upload(server, attlog(("1", "2025-10-09 12:00:00")), sn="DEVB")
        await upload(server, attlog(("2", "2025-10-09 12:00:01")), sn="DEVA")
        await only_a.wait_for(1)
        await deferLater(reactor, 0.2, lambda: None)
        assert [e["serial_number"] for e in only_a.events] == ["DEVA"]
    finally:
        await only_a.close()


@pytest_twisted.ensureDeferred
async def test_heartbeat_comments(db_url, tmp_path):
    running = await start_server(db_url, str(tmp_path / "d"), "--heartbeat", "0.1")
    client = await SSEClient(stream_url(running)).connect()
    try:
        await wait_until(lambda: client.comments.count("ping") >= 2, 5)
    finally:
        await client.close()
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_stalled_client_is_dropped_and_others_keep_receiving(db_url, tmp_path):
    running = await start_server(
        db_url, str(tmp_path / "d"), "--auto-approve", "--sse-buffer", "65536"
    )
    healthy = await SSEClient(stream_url(running, "&type=attendance")).connect()
    port = running.service.web_listeners[0].port.getHost().port
    stalled = await raw_request(
        port,
        f"GET /devices/events?token={running.token} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        rcvbuf=4096,
    )
    try:
        await wait_until(lambda: running.service.broadcaster.stats()["clients"] == 2)
        # Loopback send buffers grow to megabytes; shrink the server side of the stalled
        # connection so that a bounded test reaches the per-client cap.
        local_port = stalled.getsockname()[1]
        for subscriber in running.service.broadcaster.subscribers:
            if subscriber.target.getClientAddress().port == local_port:
                handle = subscriber.target.channel.transport.getHandle()
                handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        total = 0
        for batch in range(30):
            rows = [(f"{batch}-{i}", f"2025-10-09 13:{batch:02d}:{i:02d}") for i in range(50)]
            await upload(running, attlog(*rows))
            total += 50
        await healthy.wait_for(total, timeout=30)
        await wait_until(lambda: running.service.broadcaster.stats()["clients"] == 1)
        assert len(healthy.events) == total
    finally:
        stalled.close()
        await healthy.close()
        await running.stop()


def _sse_ids(raw: bytes) -> list[int]:
    """Event ids in a raw chunked HTTP response read so far (complete chunks only)."""
    body = raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""
    data = b""
    while b"\r\n" in body:
        size_line, rest = body.split(b"\r\n", 1)
        size = int(size_line, 16)
        if len(rest) < size + 2:
            break
        data += rest[:size]
        body = rest[size + 2 :]
    return [int(m) for m in re.findall(rb"^id: (\d+)$", data, re.MULTILINE)]


@pytest_twisted.ensureDeferred
async def test_dropped_slow_client_resumes_from_its_last_event_id(db_url, tmp_path):
    """A client reads a little, stops reading, is dropped at the cap, reconnects with the
    last id it saw, and gets every later event exactly once, in order."""
    running = await start_server(
        db_url, str(tmp_path / "d"), "--auto-approve", "--sse-buffer", "32768"
    )
    resumed: SSEClient | None = None
    port = running.service.web_listeners[0].port.getHost().port
    slow = await raw_request(
        port,
        f"GET /devices/events?token={running.token}&type=attendance HTTP/1.1\r\n"
        f"Host: x\r\n\r\n".encode(),
        rcvbuf=4096,
    )
    try:
        await wait_until(lambda: running.service.broadcaster.stats()["clients"] == 1)
        await upload(running, attlog(*[(f"a{i}", f"2025-10-09 15:00:{i:02d}") for i in range(5)]))
        received = b""

        def read_some() -> bool:
            nonlocal received
            try:
                received += slow.recv(65536)
            except BlockingIOError:
                pass
            return len(_sse_ids(received)) >= 5

        await wait_until(read_some)
        seen = _sse_ids(received)
        # Now it stops reading; the server side is shrunk as in the test above.
        for subscriber in running.service.broadcaster.subscribers:
            handle = subscriber.target.channel.transport.getHandle()
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        for batch in range(20):
            rows = [(f"{batch}-{i}", f"2025-10-09 16:{batch:02d}:{i:02d}") for i in range(50)]
            await upload(running, attlog(*rows))
        await wait_until(lambda: running.service.broadcaster.stats()["clients"] == 0)
        resumed = await SSEClient(
            stream_url(running, "&type=attendance"), headers={"Last-Event-ID": str(seen[-1])}
        ).connect()
        await resumed.wait_for(1000, timeout=30)
        await sleep(0.2)
        assert len(resumed.events) == 1000
        assert resumed.ids == sorted(resumed.ids) and resumed.ids[0] > seen[-1]
        users = [e["user_id"] for e in resumed.events]
        assert len(set(users)) == 1000 and not any(u.startswith("a") for u in users)
    finally:
        slow.close()
        if resumed is not None:
            await resumed.close()
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_token_is_required(server: RunningServer):
    for url, headers in [
        (f"{server.web_url}/devices/events", {}),
        (f"{server.web_url}/devices/events?token=wrong", {}),
        (f"{server.web_url}/api/devices", {"Authorization": "Bearer wrong"}),
        (f"{server.web_url}/api/attendance", {}),
    ]:
        response = await treq.get(url, headers=headers, pool=server.pool)
        assert response.code == 401, url
        body = await response.json()
        assert body["error"] == "unauthorized"
    response = await treq.get(
        f"{server.web_url}/api/devices", headers=server.auth, pool=server.pool
    )
    assert response.code == 200
    await response.content()


@pytest_twisted.ensureDeferred
async def test_generated_token_is_kept_in_the_data_dir(db_url, tmp_path):
    data = tmp_path / "gen"
    running = await start_server(db_url, str(data))
    token = running.token
    await running.stop()
    assert (data / "token").read_text().strip() == token
    running = await start_server(db_url, str(data))
    try:
        assert running.token == token
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_pending_device_gets_no_data_exchange_until_approved(db_url, tmp_path):
    running = await start_server(db_url, str(tmp_path / "d"))  # no --auto-approve
    client = await SSEClient(stream_url(running)).connect()
    try:
        code, reply = await upload(running, attlog(("7", "2025-10-09 14:00:00")), sn="NEWDEV")
        assert code == 403
        await client.wait_for(1, kind="device_status")
        assert client.of_type("device_status")[0]["status"] == "pending"
        _, page = await running.api("GET", "/api/attendance")
        assert page["items"] == []
        _, devices = await running.api("GET", "/api/devices")
        device = next(d for d in devices if d["serial_number"] == "NEWDEV")
        assert device["status"] == "pending"
        code, approved = await running.api("POST", f"/api/devices/{device['id']}/approve")
        assert code == 200 and approved["approved"]
        code, reply = await upload(running, attlog(("7", "2025-10-09 14:00:00")), sn="NEWDEV")
        assert (code, reply) == (200, b"OK: 1")
        await client.wait_for(1)
        statuses = [e["status"] for e in client.of_type("device_status")]
        assert statuses[0] == "pending" and "online" in statuses
    finally:
        await client.close()
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_an_open_stream_keeps_only_what_it_still_needs(server: RunningServer):
    """Thousands of idle streams: each keeps its request, lightened once the headers are
    out, and no Klein routing state, coroutine or Deferred chain waiting on it."""
    client = await SSEClient(
        stream_url(server, "&type=attendance"),
        headers={
            "User-Agent": "wall-screen/1",
            "Referer": "http://example.test/monitor",
            "Accept": "text/event-stream",
            "Accept-Language": "en",
        },
    ).connect()
    try:
        await wait_until(lambda: client.retry is not None)
        (subscriber,) = server.service.broadcaster.subscribers
        request = subscriber.target
        gc.collect()
        holders = [r for r in gc.get_referrers(request) if not inspect.isframe(r)]
        # The subscriber, and the channel's list of its requests: no closure cell, bound
        # method or Deferred callback (as Klein's chain and a never-firing Deferred kept).
        assert sorted(type(r).__name__ for r in holders) == ["Subscriber", "list"], holders
        assert holders[[type(r) for r in holders].index(list)] is request.channel.requests
        assert len(request.notifications) == 1  # ours; none of Klein's
        assert sorted(dict(request.requestHeaders.getAllRawHeaders())) == [
            b"Referer",
            b"User-Agent",
        ]
        assert list(request.responseHeaders.getAllRawHeaders()) == []
        assert request.args == {} and request.received_cookies == {}
        assert request.content is None
        assert getattr(request, "_adapterCache", {}) == {}  # no Klein request adapter
        # The access log line (written if the response is finished) is unchanged.
        line = http.combinedLogFormatter("[t]", request)
        assert '"GET /devices/events?token=' in line
        assert '"http://example.test/monitor" "wall-screen/1"' in line
        code, _ = await upload(server, attlog(("1", "2025-10-09 13:00:00")))
        assert code == 200
        await client.wait_for(1)
    finally:
        await client.close()
    await wait_until(lambda: not server.service.broadcaster.subscribers)


@pytest_twisted.ensureDeferred
async def test_the_stream_opens_the_same_through_klein_routing(server: RunningServer):
    """``GET /devices/events`` is opened before Klein routing; another spelling of the path
    goes through the Klein route and gets the same stream (and the same 401)."""
    code, _ = await upload(server, attlog(("1", "2025-10-09 13:00:00")))
    assert code == 200
    for path in ("/devices/events", "/devices/%65vents"):
        url = f"{server.web_url}{path}?token={server.token}&type=attendance&last_event_id=0"
        client = await SSEClient(url).connect()
        try:
            assert client.status == 200, path
            assert client.response_headers.getRawHeaders("content-type") == [
                "text/event-stream; charset=utf-8"
            ]
            await client.wait_for(1)
            assert client.retry == 3000
        finally:
            await client.close()
        response = await treq.get(f"{server.web_url}{path}?token=wrong", pool=server.pool)
        assert response.code == 401, path
        assert (await response.json())["error"] == "unauthorized"
    await wait_until(lambda: not server.service.broadcaster.subscribers)


@pytest_twisted.ensureDeferred
async def test_head_gets_the_stream_headers_only_and_the_connection_goes_on(
    server: RunningServer,
):
    """``HEAD /devices/events`` (curl -I, a load balancer's health check) is answered with
    the stream's headers and ends there: no event bytes follow on the connection (they
    would be read as the next response) and the next request on it is answered."""
    port = server.service.web_listeners[0].port.getHost().port
    received = b""
    raw = await raw_request(
        port,
        f"HEAD /devices/events?token={server.token} HTTP/1.1\r\nHost: x\r\n\r\n"
        f"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    )
    try:

        def read() -> bool:
            nonlocal received
            received += drain(raw)
            return received.count(b"HTTP/1.1 200") == 2 and received.endswith(b"}\r\n0\r\n\r\n")

        await wait_until(read)
        code, _ = await upload(server, attlog(("1", "2025-10-09 13:00:00")))
        assert code == 200
        await sleep(0.3)
        read()
        head, rest = received.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
        assert b"chunked" not in head.lower()
        assert rest.startswith(b"HTTP/1.1 200") and b'"status": "ok"' in rest
        assert rest.endswith(b"}\r\n0\r\n\r\n") and b"data:" not in received
        assert not server.service.broadcaster.subscribers
    finally:
        raw.close()
