"""The API against input no dashboard of ours sends: wrong methods and paths, JSON that is
not what it looks like, tampered cursors, odd limits, names that a spreadsheet runs."""

from __future__ import annotations

import base64
import csv
import io
import json

import pytest_twisted
import treq

from tests.harness import RunningServer
from tests.web.test_stream import attlog, upload


async def call(
    server: RunningServer, method: str, path: str, data: bytes | None = None
) -> tuple[int, object, object]:
    """(status, parsed JSON body or the text, response headers)."""
    response = await treq.request(
        method,
        server.web_url + path,
        headers={**server.auth, "Content-Type": "application/json"},
        data=data,
        pool=server.pool,
    )
    text = await response.text("utf-8")
    kind = (response.headers.getRawHeaders("content-type") or [""])[0]
    assert kind.startswith("application/json"), (method, path, response.code, kind, text[:80])
    return response.code, json.loads(text), response.headers


@pytest_twisted.ensureDeferred
async def test_unknown_api_paths_and_wrong_methods_answer_json(server: RunningServer):
    """Under ``/api/`` a path no route has is a JSON 404 and a method the path does not
    take a JSON 405 with ``Allow`` (both were Twisted's/werkzeug's HTML pages); a device
    id with an encoded slash is a JSON 404 too."""
    for path in ("/api/nosuch", "/api/devices/a%2Fb", "/api/devices/x/y/z", "/api/photos/-1"):
        code, body, _ = await call(server, "GET", path)
        assert code == 404 and body["error"], (path, body)
    for method, path, allowed in [
        ("PUT", "/api/attendance", "GET"),
        ("DELETE", "/api/devices", "POST"),
        ("POST", "/api/stats", "GET"),
        ("POST", "/devices/events", "GET"),
    ]:
        code, body, headers = await call(server, method, path, b"{}")
        assert code == 405 and body["error"], (method, path, body)
        assert allowed in headers.getRawHeaders("allow")[0], (method, path)
    # The page and its files are not API paths: still served (and 404 as pages).
    response = await treq.get(server.web_url + "/", pool=server.pool)
    assert response.code == 200
    await response.content()


@pytest_twisted.ensureDeferred
async def test_json_bodies_that_are_not_plain_objects_are_a_400(server: RunningServer):
    """Nesting deeper than the parser's recursion (it answered 500 and logged a
    traceback), a key given twice (which one counts differs between parsers: refused,
    naming it), NaN/Infinity (not JSON) are refused with a JSON 400."""
    code, device, _ = await call(
        server, "POST", "/api/devices", json.dumps({"serial_number": "EDGE1"}).encode()
    )
    assert code == 201
    deep_list = b"[" * 100_000 + b"]" * 100_000
    deep_object = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    for path, method in [
        ("/api/devices", "POST"),
        (f"/api/devices/{device['id']}", "PATCH"),
        ("/api/commands", "POST"),
        ("/api/webhooks", "POST"),
        ("/api/persons", "POST"),
    ]:
        for body in (deep_list, deep_object):
            code, reply, _ = await call(server, method, path, body)
            assert code == 400 and "JSON" in reply["error"], (path, reply)
    code, reply, _ = await call(
        server, "PATCH", f"/api/devices/{device['id']}", b'{"name": "a", "name": "b"}'
    )
    assert code == 400 and reply["field"] == "name", reply
    code, same, _ = await call(server, "GET", f"/api/devices/{device['id']}")
    assert same["name"] == "Push Device EDGE1"
    for body in (b'{"kind": "pull", "host": "127.0.0.9", "port": NaN}', b'{"x": Infinity}'):
        code, reply, _ = await call(server, "POST", "/api/devices", body)
        assert code == 400 and "JSON" in reply["error"], reply


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest_twisted.ensureDeferred
async def test_tampered_cursors_and_limits_are_a_400_naming_the_field(server: RunningServer):
    """A cursor whose id no database column holds (it was a 500: OverflowError in SQLite),
    a numeric cursor in digits ``int`` refuses (``²``), and a bad limit answer 400 with
    ``field`` naming the parameter, as the other query errors do."""
    await upload(server, attlog(("1", "2025-10-09 08:00:00"), ("2", "2025-10-09 08:00:01")))
    huge = 10**22
    for path in [
        "/api/attendance?cursor=" + _cursor(["2025-10-09T08:00:00Z", huge]),
        "/api/attendance?cursor=" + _cursor(["2025-10-09T08:00:00Z", -huge]),
        "/api/attendance?cursor=garbage",
        f"/api/device-log?cursor={huge}",
        "/api/device-log?cursor=%C2%B2",
        f"/api/commands?cursor={huge}",
    ]:
        code, reply, _ = await call(server, "GET", path)
        assert code == 400 and reply["field"] == "cursor", (path, reply)
    for path in [
        "/api/attendance?limit=0",
        "/api/attendance?limit=-5",
        "/api/attendance?limit=abc",
        f"/api/attendance?limit={huge}",
        "/api/rejected?limit=0",
        "/api/commands?limit=1001",
        "/api/device-log?limit=x",
    ]:
        code, reply, _ = await call(server, "GET", path)
        assert code == 400 and reply["field"] == "limit", (path, reply)
    code, page, _ = await call(server, "GET", "/api/attendance?limit=1")
    code, rest, _ = await call(
        server, "GET", f"/api/attendance?limit=1&cursor={page['next_cursor']}"
    )
    assert code == 200 and [r["user_id"] for r in page["items"] + rest["items"]] == ["2", "1"]


@pytest_twisted.ensureDeferred
async def test_device_fields_at_fault_are_named(server: RunningServer):
    """Every 400 of ``POST``/``PATCH /api/devices`` names its field (README: bad input
    answers 400 with ``field``); port, kind, transport, host and serial_number did not."""
    cases = [
        ({"kind": "pull", "host": "127.0.0.9", "port": "abc"}, "port"),
        ({"kind": "pull", "host": "127.0.0.9", "port": 70000}, "port"),
        ({"kind": "pull", "host": "127.0.0.9", "comm_key": -1}, "comm_key"),
        ({"kind": "pull", "host": "127.0.0.9", "transport": "sctp"}, "transport"),
        ({"kind": "pull", "host": "a..b"}, "host"),
        ({"kind": "pull"}, "host"),
        ({"kind": "serial"}, "kind"),
        ({"kind": "push", "serial_number": "a/b"}, "serial_number"),
        ({"kind": "push"}, "serial_number"),
    ]
    for body, field in cases:
        code, reply, _ = await call(server, "POST", "/api/devices", json.dumps(body).encode())
        assert code == 400 and reply.get("field") == field, (body, reply)


async def _csv(server: RunningServer, path: str) -> list[list[str]]:
    response = await treq.get(server.web_url + path, headers=server.auth, pool=server.pool)
    assert response.code == 200
    return list(csv.reader(io.StringIO(await response.text("utf-8"), newline="")))


@pytest_twisted.ensureDeferred
async def test_csv_exports_never_hand_a_spreadsheet_a_formula(server: RunningServer):
    """A name (a person's, a device's) starting with ``=``, ``+``, ``-``, ``@`` (or TAB or
    CR) is exported with a leading ``'``, as ``/api/persons.csv`` already does: opened in a
    spreadsheet it is text, never a formula (it was written as is). Quoting keeps a name
    with a comma, a quote or a newline in one cell; booleans read ``true``/``false`` as in
    the JSON and ``/api/days.csv``."""
    names = ['=HYPERLINK("x")', "+1+1", "-2+3", "@SUM(A1)"]
    for n, name in enumerate(names):
        pin = str(100 + n)
        code, reply, _ = await call(
            server, "POST", "/api/persons", json.dumps({"user_id": pin, "name": name}).encode()
        )
        assert code in (200, 201), (name, reply)
        await upload(server, attlog((pin, f"2025-10-09 09:00:0{n}")), sn="CSV1")
    _, devices, _ = await call(server, "GET", "/api/devices")
    device = next(d for d in devices if d["serial_number"] == "CSV1")
    code, _, _ = await call(
        server,
        "PATCH",
        f"/api/devices/{device['id']}",
        json.dumps({"name": '-Gate, "A"\nnorth'}).encode(),
    )
    assert code == 200
    rows = await _csv(server, "/api/attendance.csv")
    header, body = rows[0], rows[1:]
    by_pin = {r[header.index("user_id")]: r for r in body}
    for n, name in enumerate(names):
        row = by_pin[str(100 + n)]
        assert row[header.index("user_name")] == "'" + name
        assert row[header.index("device_name")] == '\'-Gate, "A"\nnorth'
    days = await _csv(server, "/api/days.csv?from=2025-10-09")
    header, body = days[0], days[1:]
    assert sorted(r[header.index("name")] for r in body) == sorted("'" + n for n in names)


@pytest_twisted.ensureDeferred
async def test_ids_and_numbers_in_other_digits_are_refused_not_a_500(server: RunningServer):
    """``²`` and ``٣`` are digits to ``str.isdigit`` (``int`` refuses the first and reads
    the second as 3): a command, webhook, delivery or template id made of them was a 500,
    a ``limit`` of ``٣`` was read as 3. Ids are ASCII digits (404 otherwise), numbers in
    the query too (400 naming the parameter)."""
    code, hook, _ = await call(
        server, "POST", "/api/webhooks", json.dumps({"url": "https://93.184.216.34/h"}).encode()
    )
    assert code == 201
    for method, path in [
        ("GET", "/api/commands/%C2%B2"),
        ("DELETE", "/api/commands/%C2%B2"),
        ("GET", "/api/webhooks/%C2%B2"),
        ("DELETE", "/api/webhooks/%C2%B2"),
        ("POST", f"/api/webhooks/{hook['id']}/deliveries/%C2%B2/retry"),
        ("GET", "/api/persons/1/templates/%C2%B2"),
    ]:
        code, reply, _ = await call(server, method, path)
        assert code == 404 and reply["error"], (method, path, reply)
    for path in ("/api/attendance?limit=%D9%A3", "/api/commands?limit=%C2%B2"):
        code, reply, _ = await call(server, "GET", path)
        assert code == 400 and reply["field"] == "limit", (path, reply)
