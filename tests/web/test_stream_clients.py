"""GET /devices/events as independent clients open it: EventSource polyfills, Python
clients that split lines their own way, cross-origin dashboards, odd resume ids."""

from __future__ import annotations

import json

import pytest_twisted
import treq

from tests.harness import RunningServer, SSEClient, drain, raw_request, sleep, start_server
from tests.web.test_stream import attlog, stream_url, upload


@pytest_twisted.ensureDeferred
async def test_a_resume_id_beyond_any_the_database_holds_starts_live(
    server: RunningServer, log_events
):
    """``Last-Event-ID: 99999999999999999999999`` (a corrupted client store, another
    server's id) is no id this database gave out: the stream starts live, as for an id
    above the newest. It was bound as a SQLite INTEGER, the replay failed and the stream
    was closed, and the client came back with the same id for ever."""
    await upload(server, attlog(("1", "2025-10-09 08:00:00")))
    for headers, query in [
        ({"Last-Event-ID": "99999999999999999999999"}, ""),
        ({}, "&last_event_id=" + "9" * 40),
    ]:
        client = await SSEClient(stream_url(server, query), headers=headers).connect()
        try:
            assert client.status == 200
            await sleep(0.2)
            assert not client.closed and client.events == []
            code, _ = await upload(server, attlog((str(len(headers)) + "9", "2025-10-09 08:01:00")))
            assert code == 200
            await client.wait_for(1)
            assert not client.closed
        finally:
            await client.close()
    assert not [e for e in log_events if e.get("log_failure") is not None]


@pytest_twisted.ensureDeferred
async def test_the_polyfill_resume_parameter_last_event_id_camel_case_replays(
    server: RunningServer,
):
    """EventSource polyfills that cannot set headers resume with ``?lastEventId=N`` (the
    name of the EventSource attribute): it replays as ``Last-Event-ID`` does."""
    await upload(server, attlog(("1", "2025-10-09 09:00:00"), ("2", "2025-10-09 09:00:01")))
    first = await SSEClient(stream_url(server, "&last_event_id=0")).connect()
    try:
        await first.wait_for(2)
        ids = [i for i, e in zip(first.ids, first.events, strict=True) if e["type"] == "attendance"]
    finally:
        await first.close()
    client = await SSEClient(stream_url(server, f"&lastEventId={ids[0]}")).connect()
    try:
        await client.wait_for(1)
        await sleep(0.2)
        assert [e["user_id"] for e in client.of_type("attendance")] == ["2"]
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_filters_given_as_repeated_parameters_add_up(server: RunningServer):
    """``?type=a&type=b`` (what URLSearchParams.append and most HTTP libraries write for a
    list) means the same as ``?type=a,b``; so does ``?device=X&device=Y``. Only the last
    value was used."""
    client = await SSEClient(
        stream_url(server, "&type=attendance&type=user_sync&device=REPA&device=REPB")
    ).connect()
    try:
        await upload(server, attlog(("1", "2025-10-09 10:00:00")), sn="REPA")
        await upload(server, attlog(("2", "2025-10-09 10:00:01")), sn="REPB")
        await upload(server, attlog(("3", "2025-10-09 10:00:02")), sn="REPC")
        await client.wait_for(2)
        await sleep(0.2)
        assert sorted(e["serial_number"] for e in client.of_type("attendance")) == [
            "REPA",
            "REPB",
        ]
        assert {e["type"] for e in client.events} <= {"attendance", "user_sync"}
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_the_device_filter_takes_the_device_id_too(server: RunningServer):
    """``?device=`` takes a device's id (as ``/api/devices`` gives it, and as the API's
    ``device_id`` filters take it) as well as its serial number: a pull device has no
    serial number until it is first read. A device id matched nothing."""
    await upload(server, attlog(("1", "2025-10-09 11:00:00")), sn="BYID")
    await upload(server, attlog(("1", "2025-10-09 11:00:00")), sn="OTHER")
    _, devices = await server.api("GET", "/api/devices")
    device_id = next(d["id"] for d in devices if d["serial_number"] == "BYID")
    client = await SSEClient(stream_url(server, f"&last_event_id=0&device={device_id}")).connect()
    try:
        await upload(server, attlog(("2", "2025-10-09 11:00:01")), sn="BYID")
        await upload(server, attlog(("2", "2025-10-09 11:00:01")), sn="OTHER")
        await client.wait_for(2)
        await sleep(0.2)
        assert [e["user_id"] for e in client.of_type("attendance")] == ["1", "2"]
        assert {e["device_id"] for e in client.events} == {device_id}
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_line_separators_in_names_are_escaped_in_the_data_line(server: RunningServer):
    """A name holding U+2028, U+2029 or NEL (U+0085) is sent escaped (``\\u2028``): raw,
    the one ``data:`` line became several for clients that split lines as Python's
    ``str.splitlines`` does, and an ``eval``-based one read a broken script."""
    await upload(server, attlog(("1", "2025-10-09 12:00:00")), sn="SEPS")
    _, devices = await server.api("GET", "/api/devices")
    device_id = next(d["id"] for d in devices if d["serial_number"] == "SEPS")
    name = "North\u2028Gate\u2029B\x85C"
    code, _ = await server.api("PATCH", f"/api/devices/{device_id}", {"name": name})
    assert code == 200
    await upload(server, attlog(("2", "2025-10-09 12:00:01")), sn="SEPS")
    port = server.service.web_listeners[0].port.getHost().port
    raw = await raw_request(
        port,
        f"GET /devices/events?token={server.token}&last_event_id=0&type=attendance"
        " HTTP/1.0\r\n\r\n".encode(),
    )
    received = b""
    try:
        for _ in range(100):
            received += drain(raw)
            if received.count(b'"attendance"') >= 2:
                break
            await sleep(0.05)
    finally:
        raw.close()
    body = received.split(b"\r\n\r\n", 1)[1].decode()
    data = [line for line in body.splitlines() if line.startswith("data:")]
    assert len(data) == 2, body
    events = [json.loads(line[5:]) for line in data]
    assert events[1]["device_name"] == name
    for sep in ("\u2028", "\u2029", "\x85"):
        assert sep not in body


@pytest_twisted.ensureDeferred
async def test_a_cross_origin_stream_is_preflighted_and_allowed(db_url, tmp_path):
    """A dashboard on another origin (``--cors-origin``) opening the stream with a header
    (a polyfill sending ``Authorization`` or ``Last-Event-ID``) is preflighted: OPTIONS
    ``/devices/events`` answers 204 with the allowed headers (it was a 405 page, so the
    browser refused the stream); the stream itself allows the origin with credentials."""
    origin = "https://dash.example"
    running = await start_server(db_url, str(tmp_path / "d"), "--cors-origin", origin)
    try:
        response = await treq.request(
            "OPTIONS",
            f"{running.web_url}/devices/events",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization, last-event-id",
            },
            pool=running.pool,
        )
        await response.content()
        assert response.code == 204
        assert response.headers.getRawHeaders("access-control-allow-origin") == [origin]
        assert response.headers.getRawHeaders("access-control-allow-credentials") == ["true"]
        allowed = response.headers.getRawHeaders("access-control-allow-headers")[0].lower()
        assert "authorization" in allowed and "last-event-id" in allowed
        response = await treq.request(
            "OPTIONS",
            f"{running.web_url}/devices/events",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
            pool=running.pool,
        )
        await response.content()
        assert response.headers.getRawHeaders("access-control-allow-origin") is None
        client = await SSEClient(
            f"{running.web_url}/devices/events",
            headers={**running.auth, "Origin": origin, "Last-Event-ID": "0"},
        ).connect()
        try:
            assert client.status == 200
            assert client.response_headers.getRawHeaders("access-control-allow-origin") == [origin]
            assert client.response_headers.getRawHeaders("access-control-allow-credentials") == [
                "true"
            ]
        finally:
            await client.close()
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_a_token_with_surrounding_spaces_is_read_alike_everywhere(server: RunningServer):
    """A token pasted with a space or newline around it is accepted by ``?token=`` as it
    is by ``Authorization: Bearer`` (both were not: the header stripped it, the query did
    not); a token with anything else added stays refused."""
    for token in (f" {server.token}", f"{server.token}%20", f"%0A{server.token}%0A"):
        response = await treq.get(f"{server.web_url}/api/session?token={token}", pool=server.pool)
        await response.content()
        assert response.code == 200, token
    response = await treq.get(
        f"{server.web_url}/api/session",
        headers={"Authorization": f"Bearer  {server.token} "},
        pool=server.pool,
    )
    await response.content()
    assert response.code == 200
    for token in (f"{server.token}x", f"x{server.token}", f"{server.token[:-1]} "):
        response = await treq.get(f"{server.web_url}/api/session?token={token}", pool=server.pool)
        await response.content()
        assert response.code == 401, token
