"""The operator API over real sockets: devices, paging, CSV, login cookie, CORS, health."""

from __future__ import annotations

import csv
import io
import re
from importlib.resources import files

import pytest_twisted
import treq

from tests.harness import RunningServer, start_server

SN = "API0001"


async def upload(server: RunningServer, lines: list[str], sn: str = SN) -> bytes:
    response = await treq.post(
        f"{server.push_url}/iclock/cdata?SN={sn}&table=ATTLOG",
        data="\n".join(lines).encode(),
        pool=server.pool,
    )
    return await response.content()


@pytest_twisted.ensureDeferred
async def test_device_crud_and_validation(server: RunningServer):
    code, created = await server.api(
        "POST", "/api/devices", {"serial_number": "CRUD1", "name": "Gate", "timezone": "+05:30"}
    )
    assert code == 201 and created["name"] == "Gate" and created["kind"] == "push"
    code, again = await server.api("POST", "/api/devices", {"serial_number": "CRUD1"})
    assert code == 409
    for bad in (
        {"serial_number": ""},
        {"serial_number": "a b"},
        {"kind": "fax"},
        {"serial_number": "X1", "timezone": "Mars/Base"},
        {"kind": "pull"},
        {"kind": "pull", "host": "h", "port": 70000},
    ):
        code, body = await server.api("POST", "/api/devices", bad)
        assert code == 400 and body["error"], bad
    code, body = await server.api(
        "POST", "/api/devices", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert code == 400
    code, updated = await server.api(
        "PATCH", f"/api/devices/{created['id']}", {"name": "Back gate", "timezone": "Europe/Paris"}
    )
    assert code == 200 and updated["name"] == "Back gate" and updated["timezone"] == "Europe/Paris"
    code, _ = await server.api("PATCH", f"/api/devices/{created['id']}", {"approved": True})
    assert code == 400
    code, fetched = await server.api("GET", f"/api/devices/{created['id']}")
    assert fetched["name"] == "Back gate"
    code, _ = await server.api("DELETE", f"/api/devices/{created['id']}")
    assert code == 200
    code, _ = await server.api("GET", f"/api/devices/{created['id']}")
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_attendance_cursor_pages_cover_everything_once(server: RunningServer):
    lines = [
        f"{100 + i}\t2025-10-09 08:{i // 60:02d}:{i % 60:02d}\t{i % 2}\t1\t0\t0\t0"
        for i in range(25)
    ]
    assert await upload(server, lines) == b"OK: 25"
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        code, page = await server.api("GET", f"/api/attendance?limit=10&cursor={cursor}")
        assert code == 200
        seen += [row["user_id"] for row in page["items"]]
        pages += 1
        if not page["next_cursor"]:
            break
        cursor = page["next_cursor"]
    assert pages == 3
    assert seen == [str(100 + i) for i in reversed(range(25))]  # newest first
    code, page = await server.api(
        "GET", "/api/attendance?user_id=103&since=2025-10-09 00:00:00&until=2025-10-10 00:00:00"
    )
    assert [row["user_id"] for row in page["items"]] == ["103"]
    code, _ = await server.api("GET", "/api/attendance?limit=0")
    assert code == 400
    code, body = await server.api("GET", "/api/attendance?cursor=garbage")
    assert code == 400 and "error" in body


@pytest_twisted.ensureDeferred
async def test_attendance_csv_export(server: RunningServer):
    await upload(
        server, ["1\t2025-10-09 08:00:00\t0\t15\t0\t0\t0", "2\t2025-10-09 08:01:00\t1\t1\t0\t0\t0"]
    )
    response = await treq.get(
        f"{server.web_url}/api/attendance.csv", headers=server.auth, pool=server.pool
    )
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(await response.text("utf-8"))))
    assert [(r["user_id"], r["timestamp"], r["action"], r["method"]) for r in rows] == [
        ("2", "2025-10-09 08:01:00", "1", "1"),
        ("1", "2025-10-09 08:00:00", "0", "15"),
    ]


@pytest_twisted.ensureDeferred
async def test_login_cookie_is_httponly_strict_and_authenticates(server: RunningServer):
    response = await treq.post(
        f"{server.web_url}/api/session", json={"token": "wrong"}, pool=server.pool
    )
    assert response.code == 401
    await response.content()
    response = await treq.post(
        f"{server.web_url}/api/session", json={"token": server.token}, pool=server.pool
    )
    assert response.code == 200
    await response.content()
    cookie = response.headers.getRawHeaders("set-cookie")[0]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie.replace("strict", "Strict")
    value = cookie.split(";", 1)[0]
    assert server.token not in value
    response = await treq.get(
        f"{server.web_url}/api/devices", headers={"Cookie": value}, pool=server.pool
    )
    assert response.code == 200
    await response.content()
    tampered = value[:-1] + ("0" if value[-1] != "0" else "1")
    response = await treq.get(
        f"{server.web_url}/api/devices", headers={"Cookie": tampered}, pool=server.pool
    )
    assert response.code == 401
    await response.content()


@pytest_twisted.ensureDeferred
async def test_cors_is_off_by_default_and_never_reflects_other_origins(db_url, tmp_path):
    evil = {"Origin": "https://evil.example"}
    running = await start_server(db_url, str(tmp_path / "a"))
    try:
        response = await treq.get(
            f"{running.web_url}/api/devices", headers={**running.auth, **evil}, pool=running.pool
        )
        assert response.headers.getRawHeaders("access-control-allow-origin") is None
        await response.content()
    finally:
        await running.stop()
    running = await start_server(
        db_url, str(tmp_path / "b"), "--cors-origin", "https://dash.example"
    )
    try:
        response = await treq.get(
            f"{running.web_url}/api/devices",
            headers={**running.auth, "Origin": "https://dash.example"},
            pool=running.pool,
        )
        assert response.headers.getRawHeaders("access-control-allow-origin") == [
            "https://dash.example"
        ]
        await response.content()
        response = await treq.request(
            "OPTIONS",
            f"{running.web_url}/api/devices",
            headers={"Origin": "https://dash.example"},
            pool=running.pool,
        )
        assert response.code == 204
        await response.content()
        response = await treq.get(
            f"{running.web_url}/api/devices", headers={**running.auth, **evil}, pool=running.pool
        )
        assert response.headers.getRawHeaders("access-control-allow-origin") is None
        await response.content()
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_healthz_needs_no_token_and_reports_the_database(server: RunningServer):
    response = await treq.get(f"{server.web_url}/healthz", pool=server.pool)
    assert response.code == 200
    body = await response.json()
    assert body["status"] == "ok" and body["database"] == "ok"


@pytest_twisted.ensureDeferred
async def test_monitor_page_is_served_without_a_token(server: RunningServer):
    response = await treq.get(f"{server.web_url}/", pool=server.pool)
    assert response.code == 200
    assert b"<html" in (await response.content()).lower()


@pytest_twisted.ensureDeferred
async def test_page_modules_are_served_as_javascript(server: RunningServer):
    """Browsers run ``<script type="module">`` only when served with a JavaScript type."""
    page = (await (await treq.get(f"{server.web_url}/", pool=server.pool)).content()).decode()
    assert '<script type="module" src="main.js">' in page
    static = files("zkserver.web") / "static"
    modules = sorted(entry.name for entry in static.iterdir() if entry.name.endswith(".js"))
    assert "main.js" in modules and len(modules) > 1
    for name in modules:
        response = await treq.get(f"{server.web_url}/{name}", pool=server.pool)
        body = await response.content()
        assert response.code == 200, name
        content_type = response.headers.getRawHeaders("content-type")[0]
        assert content_type.startswith("text/javascript"), (name, content_type)
        for imported in re.findall(r"from '\./([\w.]+)'", body.decode()):
            assert imported in modules, (name, imported)


@pytest_twisted.ensureDeferred
async def test_silent_push_device_goes_offline_and_comes_back(db_url, tmp_path):
    from tests.harness import SSEClient, wait_until

    running = await start_server(db_url, str(tmp_path / "d"), "--auto-approve", "--poll-delay", "1")
    client = await SSEClient(
        f"{running.web_url}/devices/events?token={running.token}&type=device_status"
    ).connect()
    try:
        response = await treq.get(
            f"{running.push_url}/iclock/getrequest?SN=QUIET1", pool=running.pool
        )
        await response.content()
        await wait_until(lambda: [e["status"] for e in client.events][-1:] == ["offline"], 15)
        response = await treq.get(
            f"{running.push_url}/iclock/getrequest?SN=QUIET1", pool=running.pool
        )
        await response.content()
        await wait_until(lambda: [e["status"] for e in client.events][-1:] == ["online"], 5)
        assert [e["status"] for e in client.events] == ["online", "offline", "online"]
        _, devices = await running.api("GET", "/api/devices")
        assert devices[0]["status"] == "online"
    finally:
        await client.close()
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_bad_input_gets_a_json_error_never_a_traceback(server: RunningServer):
    cases = [
        ("POST", "/api/devices", {"kind": "pull", "host": "x", "comm_key": 1e300}, 400),
        ("POST", "/api/devices", {"kind": "pull", "host": "a..b"}, 400),
        ("POST", "/api/devices", {"kind": "pull", "host": "127.0.0.9", "port": 1.5}, 400),
        ("POST", "/api/devices", {"kind": "pull", "host": "127.0.0.9", "port": True}, 400),
        ("GET", "/api/attendance?since=garbage", None, 400),
        ("GET", "/api/attendance.csv?until=yesterday", None, 400),
        ("GET", "/api/photos/99999999999999999999999", None, 404),
    ]
    for method, path, body, expected in cases:
        code, reply = await server.api(method, path, body)
        assert code == expected, (path, body, reply)
        assert isinstance(reply, dict) and reply["error"], (path, reply)
    code, pull = await server.api(
        "POST", "/api/devices", {"kind": "pull", "host": "127.0.0.9", "port": 4370}
    )
    assert code == 201
    code, reply = await server.api(
        "POST", "/api/devices", {"kind": "pull", "host": "127.0.0.9", "port": 4370}
    )
    assert code == 409 and "host and port" in reply["error"]
    code, push = await server.api("POST", "/api/devices", {"serial_number": "PUSHX"})
    code, reply = await server.api("PATCH", f"/api/devices/{push['id']}", {"host": "127.0.0.1"})
    assert code == 400 and "push device" in reply["error"]
    code, _ = await server.api("DELETE", f"/api/devices/{pull['id']}")
    assert code == 200


@pytest_twisted.ensureDeferred
async def test_device_encoding_is_set_validated_and_shown(server: RunningServer):
    """A device's text encoding (docs/protocols.md §A.2): "" automatic, else a codec
    terminals can use, stored under its canonical name; anything else is a 400 naming it."""
    code, device = await server.api("POST", "/api/devices", {"serial_number": "ENC1"})
    assert code == 201 and device["encoding"] == ""
    path = f"/api/devices/{device['id']}"
    for value, stored in (("CP1251", "cp1251"), ("windows-1252", "cp1252"), (" gbk ", "gbk")):
        code, updated = await server.api("PATCH", path, {"encoding": value})
        assert (code, updated["encoding"]) == (200, stored), updated
    for bad in ("base64", "rot13", "utf-16", "klingon", 12, ["cp1252"], "x" * 41):
        code, body = await server.api("PATCH", path, {"encoding": bad})
        assert code == 400 and body["field"] == "encoding", (bad, body)
    code, fetched = await server.api("GET", path)
    assert fetched["encoding"] == "gbk"  # a refused change changed nothing
    code, updated = await server.api("PATCH", path, {"encoding": ""})
    assert (code, updated["encoding"]) == (200, "")
    code, body = await server.api(
        "POST", "/api/devices", {"serial_number": "ENC2", "encoding": "utf-16"}
    )
    assert code == 400 and body["field"] == "encoding"
    code, pull = await server.api(
        "POST", "/api/devices", {"kind": "pull", "host": "192.0.2.7", "encoding": "cp1250"}
    )
    assert code == 201 and pull["encoding"] == "cp1250"
