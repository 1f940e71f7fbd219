"""Time you can trust, end to end over real sockets on SQLite and PostgreSQL: instants of
punches from devices in three zones and on Berlin's daylight-saving days, a stated
time_offset, instant filters and order, suspect clocks, clock offsets and people's days."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
import pytest_twisted
import treq

from tests.harness import RunningServer, SSEClient, sleep, start_server

ZONES = {"BER0001": "Europe/Berlin", "KOL0001": "Asia/Kolkata", "NYC0001": "America/New_York"}


def line(pin: str, ts: str, state: int = 0, *extended: str) -> str:
    return "\t".join([pin, ts, str(state), "1", "0", "0", "0", *extended])


async def upload(server: RunningServer, sn: str, *lines: str, table: str = "ATTLOG") -> bytes:
    response = await treq.post(
        f"{server.push_url}/iclock/cdata?SN={sn}&table={table}",
        data="\n".join(lines).encode(),
        pool=server.pool,
    )
    return await response.content()


async def add_devices(server: RunningServer, zones: dict[str, str]) -> dict[str, str]:
    ids = {}
    for sn, zone in zones.items():
        code, device = await server.api(
            "POST", "/api/devices", {"serial_number": sn, "name": sn, "timezone": zone}
        )
        assert code == 201, device
        ids[sn] = device["id"]
    return ids


async def punches(server: RunningServer, query: str = "") -> list[dict[str, Any]]:
    code, page = await server.api("GET", f"/api/attendance?limit=1000{query}")
    assert code == 200, page
    return page["items"]


def by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["serial_number"], r["timestamp"]): r for r in rows}


@pytest_twisted.ensureDeferred
async def test_instants_across_zones_and_berlin_dst_days(server: RunningServer):
    await add_devices(server, ZONES)
    client = await SSEClient(
        f"{server.web_url}/devices/events?token={server.token}&type=attendance"
    ).connect()
    try:
        ber = [
            line("1", "2026-03-29 01:59:59"),
            line("1", "2026-03-29 02:30:00"),  # skipped hour: offset before the change
            line("1", "2026-03-29 03:00:00"),
            line("2", "2026-10-25 02:30:00"),  # repeated hour: the earlier instant
            line("2", "2026-10-25 03:30:00"),
            # The terminal states UTC+8: that wins over Europe/Berlin.
            line("3", "2026-03-29 09:00:00", 0, "0", "36.5", "36.5", "+28800"),
        ]
        assert await upload(server, "BER0001", *ber) == b"OK: 6"
        assert await upload(server, "KOL0001", line("1", "2026-03-29 09:00:00")) == b"OK: 1"
        assert await upload(server, "NYC0001", line("1", "2026-03-29 09:00:00")) == b"OK: 1"
        await client.wait_for(8)
    finally:
        await client.close()

    expected = {
        ("BER0001", "2026-03-29 01:59:59"): ("2026-03-29T00:59:59Z", False),
        ("BER0001", "2026-03-29 02:30:00"): ("2026-03-29T01:30:00Z", True),
        ("BER0001", "2026-03-29 03:00:00"): ("2026-03-29T01:00:00Z", False),
        ("BER0001", "2026-10-25 02:30:00"): ("2026-10-25T00:30:00Z", True),
        ("BER0001", "2026-10-25 03:30:00"): ("2026-10-25T02:30:00Z", False),
        ("BER0001", "2026-03-29 09:00:00"): ("2026-03-29T01:00:00Z", False),
        ("KOL0001", "2026-03-29 09:00:00"): ("2026-03-29T03:30:00Z", False),
        ("NYC0001", "2026-03-29 09:00:00"): ("2026-03-29T13:00:00Z", False),
    }
    streamed = {
        (e["serial_number"], e["timestamp"]): (e["timestamp_utc"], e["time_ambiguous"])
        for e in client.of_type("attendance")
    }
    assert streamed == expected
    rows = await punches(server)
    assert {k: (r["timestamp_utc"], r["time_ambiguous"]) for k, r in by_key(rows).items()} == (
        expected
    )
    assert all(r["suspect_time"] is None for r in rows)
    # Newest first by instant (not by local text: NYC 09:00 is after KOL 09:00).
    instants = [(r["timestamp_utc"], r["id"]) for r in rows]
    assert instants == sorted(instants, reverse=True)
    assert [r["serial_number"] for r in rows[2:4]] == ["NYC0001", "KOL0001"]

    # Instant filters, with an offset or Z, inclusive; a raw '+' (read as a space) works too.
    since, until = quote("2026-03-29T03:00:00+02:00"), "2026-03-29T03:30:00Z"
    window = await punches(server, f"&since={since}&until={until}")
    assert sorted((r["serial_number"], r["timestamp"]) for r in window) == [
        ("BER0001", "2026-03-29 02:30:00"),
        ("BER0001", "2026-03-29 03:00:00"),
        ("BER0001", "2026-03-29 09:00:00"),
        ("KOL0001", "2026-03-29 09:00:00"),
    ]
    raw_plus = await punches(server, "&since=2026-03-29T03:00:00+02:00&until=" + until)
    assert len(raw_plus) == 4
    # Device-local filters compare with each device's own local time.
    local = await punches(server, f"&since={quote('2026-03-29 09:00:00')}&until=2026-03-29")
    assert sorted(r["serial_number"] for r in local) == ["BER0001", "KOL0001", "NYC0001"]
    # Pages by instant cover everything once.
    seen, cursor = [], ""
    while True:
        code, page = await server.api("GET", f"/api/attendance?limit=3&cursor={cursor}")
        seen += [(r["timestamp_utc"], r["id"]) for r in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == instants

    code, body = await server.api("GET", "/api/attendance?since=yesterday")
    assert code == 400 and body["field"] == "since"
    code, body = await server.api("GET", "/api/attendance?until=2026-03-29T01:00:00%2B15:00")
    assert code == 400 and body["field"] == "until"

    code, text = await server.api("GET", "/api/attendance.csv")
    table = list(csv.DictReader(io.StringIO(text)))
    gap = next(r for r in table if r["timestamp"] == "2026-03-29 02:30:00")
    assert (gap["timestamp_utc"], gap["time_ambiguous"]) == ("2026-03-29T01:30:00Z", "True")


def berlin(moment: datetime) -> str:
    return moment.astimezone(ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%d %H:%M:%S")


@pytest_twisted.ensureDeferred
async def test_a_device_an_hour_in_the_future_is_suspect_and_its_offset_shown(
    server: RunningServer,
):
    ids = await add_devices(server, {"FUT0001": "Europe/Berlin", "OK0001": "Europe/Berlin"})
    client = await SSEClient(
        f"{server.web_url}/devices/events?token={server.token}&type=attendance"
    ).connect()
    try:
        now = datetime.now(UTC)
        ahead = berlin(now + timedelta(hours=1))
        assert await upload(server, "FUT0001", line("5", ahead)) == b"OK: 1"
        assert await upload(server, "OK0001", line("5", berlin(now))) == b"OK: 1"
        # A backlog resent after an outage (more than 3 punches): old, and no clock sample.
        backlog = [line("6", f"2020-01-06 09:00:0{i}") for i in range(4)]
        assert await upload(server, "OK0001", *backlog) == b"OK: 4"
        await client.wait_for(6)
    finally:
        await client.close()
    events = {(e["serial_number"], e["user_id"]): e for e in client.of_type("attendance")}
    assert events[("FUT0001", "5")]["suspect_time"].startswith("future: ")
    assert events[("OK0001", "5")]["suspect_time"] is None
    assert events[("OK0001", "6")]["suspect_time"].startswith("past: ")
    rows = {(r["serial_number"], r["user_id"]): r for r in await punches(server)}
    assert rows[("FUT0001", "5")]["suspect_time"].startswith("future: ")
    assert rows[("OK0001", "5")]["suspect_time"] is None

    # One real-time punch an hour ahead: the terminal's clock is about an hour fast (the
    # offset is saved after the reply, so wait for it).
    devices: dict[str, Any] = {}

    async def read() -> None:
        for sn, device_id in ids.items():
            devices[sn] = (await server.api("GET", f"/api/devices/{device_id}"))[1]

    for _ in range(100):
        await read()
        if all(d["clock_offset_s"] is not None for d in devices.values()):
            break
        await sleep(0.05)
    future = devices["FUT0001"]
    assert future["suspect_punches"] == 1
    assert 3600 - 5 <= future["clock_offset_s"] <= 3600 + 5
    fine = devices["OK0001"]
    assert fine["suspect_punches"] == 4  # the 2020 punches
    assert -5 <= fine["clock_offset_s"] <= 5  # the backlog was no clock sample


OPERLOG_USERS = "\n".join(
    f"USER PIN={pin}\tName={name}\tPri=0\tPasswd=\tCard=\tGrp=1\tTZ=0"
    for pin, name in (("7", "Nina Night"), ("8", "Dan Day"))
)


@pytest_twisted.ensureDeferred
async def test_days_with_a_night_shift_and_day_starts_at(db_url: str, tmp_path: Any):
    server = await start_server(
        db_url, str(tmp_path / "data"), "--auto-approve", "--day-starts-at", "04:00"
    )
    try:
        ids = await add_devices(server, {"DAY0001": "Europe/Berlin", "DAY0002": "Asia/Kolkata"})
        assert await upload(server, "DAY0001", OPERLOG_USERS, table="OPERLOG")
        assert (
            await upload(
                server,
                "DAY0001",
                line("7", "2026-03-02 22:00:00", 0),  # night shift across midnight
                line("7", "2026-03-03 03:30:00", 1),
                line("8", "2026-03-03 09:00:00", 0),
                line("8", "2026-03-03 12:00:00", 255),
                line("9", "2026-03-03 04:00:00", 255),
                line("7", "2026-03-04 03:59:59", 1),  # still the 3rd's night
            )
            == b"OK: 6"
        )
        assert await upload(server, "DAY0002", line("8", "2026-03-03 21:00:00", 1)) == b"OK: 1"

        code, result = await server.api("GET", "/api/days?from=2026-03-02&to=2026-03-03")
        assert code == 200, result
        assert (result["from"], result["to"], result["day_starts_at"]) == (
            "2026-03-02",
            "2026-03-03",
            "04:00",
        )
        rows = result["items"]
        assert [(r["date"], r["user_id"]) for r in rows] == [
            ("2026-03-02", "7"),
            ("2026-03-03", "7"),
            ("2026-03-03", "8"),
            ("2026-03-03", "9"),
        ]
        night, late, dan, single = rows
        assert night["name"] == "Nina Night" and dan["name"] == "Dan Day"
        assert (night["first"], night["last"], night["punches"]) == (
            "2026-03-02 22:00:00",
            "2026-03-03 03:30:00",
            2,
        )
        assert night["span_minutes"] == 330 and night["states_consistent"] is True
        assert night["devices"] == [ids["DAY0001"]]
        assert (late["first"], late["punches"], late["states_consistent"]) == (
            "2026-03-04 03:59:59",
            1,
            None,
        )
        # Dan: Berlin 09:00 (08:00Z) to Kolkata 21:00 (15:30Z): first in, last out.
        assert (dan["first"], dan["last"], dan["punches"]) == (
            "2026-03-03 09:00:00",
            "2026-03-03 21:00:00",
            3,
        )
        assert dan["span_minutes"] == 450 and dan["states_consistent"] is True
        assert sorted(dan["devices"]) == sorted(ids.values())
        assert single["name"] is None and single["states_consistent"] is None

        code, only = await server.api(
            "GET", f"/api/days?from=2026-03-03&device_id={ids['DAY0001']}&user_id=8"
        )
        assert [(r["user_id"], r["punches"], r["states_consistent"]) for r in only["items"]] == [
            ("8", 2, False)
        ]

        code, text = await server.api("GET", "/api/days.csv?from=2026-03-02&to=2026-03-03")
        assert code == 200
        table = list(csv.DictReader(io.StringIO(text)))
        assert [(r["date"], r["user_id"], r["punches"]) for r in table] == [
            ("2026-03-02", "7", "2"),
            ("2026-03-03", "7", "1"),
            ("2026-03-03", "8", "3"),
            ("2026-03-03", "9", "1"),
        ]
        assert table[0]["states_consistent"] == "true" and table[3]["states_consistent"] == ""
        assert table[2]["devices"].split() == sorted(ids.values())
        assert set(table[0]) == set(rows[0])  # every field of the JSON rows
        assert (table[0]["first_action"], table[0]["last_action"]) == ("0", "1")

        for query, field in (
            ("", "from"),
            ("?from=03/03/2026", "from"),
            ("?from=2026-03-03&to=2026-03-01", "to"),
            ("?from=2025-01-01&to=2026-03-03", "to"),
        ):
            code, body = await server.api("GET", f"/api/days{query}")
            assert code == 400 and body["field"] == field, (query, body)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_quarter_hour_zones_bad_zone_names_and_fractional_since(server: RunningServer):
    ids = await add_devices(
        server,
        {
            "KTM0001": "Asia/Kathmandu",
            "LHI0001": "Australia/Lord_Howe",
            "CHA0001": "Pacific/Chatham",
        },
    )
    # Lord Howe's DST ends 2026-04-05 02:00 -> 01:30 (a 30-minute overlap); Chatham's at
    # 03:45 -> 02:45.
    assert await upload(server, "KTM0001", line("1", "2026-06-01 12:00:00")) == b"OK: 1"
    assert await upload(server, "LHI0001", line("1", "2026-04-05 01:45:00")) == b"OK: 1"
    assert await upload(server, "CHA0001", line("1", "2026-04-05 03:30:00")) == b"OK: 1"
    rows = by_key(await punches(server))
    assert rows[("KTM0001", "2026-06-01 12:00:00")]["timestamp_utc"] == "2026-06-01T06:15:00Z"
    lord_howe = rows[("LHI0001", "2026-04-05 01:45:00")]
    assert (lord_howe["timestamp_utc"], lord_howe["time_ambiguous"]) == (
        "2026-04-04T14:45:00Z",
        True,
    )
    chatham = rows[("CHA0001", "2026-04-05 03:30:00")]
    assert (chatham["timestamp_utc"], chatham["time_ambiguous"]) == ("2026-04-04T13:45:00Z", True)

    # A since with a fraction: the punch at 06:15:00Z is before 06:15:00.5Z.
    assert await punches(server, "&since=" + quote("2026-06-01T06:15:00.5Z")) == []
    found = await punches(server, "&since=" + quote("2026-06-01T06:15:00.0000000Z"))
    assert [r["serial_number"] for r in found] == ["KTM0001"]

    # An unknown zone is a 400 naming the field, on create and on change.
    code, body = await server.api(
        "POST", "/api/devices", {"serial_number": "BAD0001", "timezone": "Mars/Olympus"}
    )
    assert code == 400 and body["field"] == "timezone", body
    code, body = await server.api(
        "PATCH", f"/api/devices/{ids['KTM0001']}", {"timezone": "Asia/Katmandoo"}
    )
    assert code == 400 and body["field"] == "timezone", body
    code, body = await server.api("PATCH", f"/api/devices/{ids['KTM0001']}", {"timezone": [1]})
    assert code == 400 and body["field"] == "timezone", body


@pytest_twisted.ensureDeferred
async def test_times_and_days_at_the_ends_of_the_calendar_are_400_not_500(server: RunningServer):
    # The next whole second after 9999-12-31T23:59:59.5Z, an instant before year 1, a
    # 60-minute offset and the day after 9999-12-31 do not exist: each is a 400 naming the
    # field (they were 500s, or silently read as +06:00).
    for name, value in (
        ("since", "9999-12-31T23:59:59.5Z"),
        ("since", "9999-12-31 23:59:59.5"),
        ("until", "0001-01-01T00:00:00+01:00"),
        ("since", "2026-03-29T03:30:00+05:60"),
    ):
        code, body = await server.api("GET", f"/api/attendance?{name}={quote(value)}")
        assert code == 400 and body["field"] == name, (value, code, body)
        code, _text = await server.api("GET", f"/api/attendance.csv?{name}={quote(value)}")
        assert code == 400, value
    for query in ("from=9999-12-31", "from=9999-12-01&to=9999-12-31"):
        code, body = await server.api("GET", f"/api/days?{query}")
        assert code == 400 and body["field"] == "to", (query, code, body)
    code, body = await server.api("GET", "/api/days?from=9999-12-30")
    assert code == 200 and body["items"] == [], body
    # RFC 3339 allows a lower-case t and z.
    await add_devices(server, {"BER0001": "Europe/Berlin"})
    assert await upload(server, "BER0001", line("1", "2026-03-29 03:00:00")) == b"OK: 1"
    found = await punches(server, "&since=2026-03-29t01:00:00z&until=2026-03-29t01:00:00z")
    assert [r["timestamp"] for r in found] == ["2026-03-29 03:00:00"]


@pytest.mark.parametrize(
    ("option", "expected"), [("Asia/Kathmandu", "Asia/Kathmandu"), ("+05:30", "+05:30")]
)
async def test_days_names_the_zone_of_devices_without_their_own(
    db_url: str, tmp_path: Any, option: str, expected: str
):
    # The page's Today view reads a zone-less device's "today" in it (not the viewer's date).
    server = await start_server(db_url, str(tmp_path / "data"), "--timezone", option)
    try:
        code, result = await server.api("GET", "/api/days?from=2026-03-02")
        assert code == 200, result
        assert result["default_timezone"] == expected
    finally:
        await server.stop()
