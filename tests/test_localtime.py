"""The pure time core: local text -> UTC instant, DST rules, suspect clocks, days."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zkserver.localtime import (
    DayPunch,
    Days,
    OffsetSamples,
    PunchTime,
    TimePolicy,
    UnknownZone,
    clock_offset,
    day_of,
    format_day_start,
    local_to_utc,
    parse_day_start,
    parse_local,
    parse_query_time,
    parse_time_offset,
    parse_utc,
    posix_zone,
    reading_offset,
    resolve_zone,
    server_zone,
    suspect_reason,
    utc_text,
    zone_name,
)

RECEIVED = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ZONES = ["Asia/Kolkata", "Europe/Berlin", "America/New_York"]


def stamp(timestamp: str, zone: str, offset: object = None) -> PunchTime:
    policy = TimePolicy(max_future_s=10**9, max_past_days=10_000)
    return policy.stamp(timestamp, zone, RECEIVED, offset)


# --------------------------------------------------------------------------- instants


@pytest.mark.parametrize(
    ("zone", "local", "utc", "ambiguous"),
    [
        # Asia/Kolkata: +05:30 all year, no daylight saving.
        ("Asia/Kolkata", "2026-01-15 09:00:00", "2026-01-15T03:30:00Z", False),
        ("Asia/Kolkata", "2026-07-15 00:10:00", "2026-07-14T18:40:00Z", False),
        # Europe/Berlin, last Sunday of March: 02:00 -> 03:00 (the hour 02:xx never happens).
        ("Europe/Berlin", "2026-03-29 01:59:59", "2026-03-29T00:59:59Z", False),
        ("Europe/Berlin", "2026-03-29 02:00:00", "2026-03-29T01:00:00Z", True),
        ("Europe/Berlin", "2026-03-29 02:30:00", "2026-03-29T01:30:00Z", True),
        ("Europe/Berlin", "2026-03-29 02:59:59", "2026-03-29T01:59:59Z", True),
        ("Europe/Berlin", "2026-03-29 03:00:00", "2026-03-29T01:00:00Z", False),
        ("Europe/Berlin", "2026-03-29 12:00:00", "2026-03-29T10:00:00Z", False),
        # Europe/Berlin, last Sunday of October: 03:00 -> 02:00 (02:xx happens twice).
        ("Europe/Berlin", "2026-10-25 01:59:59", "2026-10-24T23:59:59Z", False),
        ("Europe/Berlin", "2026-10-25 02:00:00", "2026-10-25T00:00:00Z", True),
        ("Europe/Berlin", "2026-10-25 02:30:00", "2026-10-25T00:30:00Z", True),
        ("Europe/Berlin", "2026-10-25 02:59:59", "2026-10-25T00:59:59Z", True),
        ("Europe/Berlin", "2026-10-25 03:00:00", "2026-10-25T02:00:00Z", False),
        # 2025's changes too (30 March, 26 October).
        ("Europe/Berlin", "2025-03-30 02:15:00", "2025-03-30T01:15:00Z", True),
        ("Europe/Berlin", "2025-10-26 02:15:00", "2025-10-26T00:15:00Z", True),
        # America/New_York: second Sunday of March (gap), first Sunday of November (overlap).
        ("America/New_York", "2026-03-08 02:30:00", "2026-03-08T07:30:00Z", True),
        ("America/New_York", "2026-03-08 03:30:00", "2026-03-08T07:30:00Z", False),
        ("America/New_York", "2026-11-01 01:30:00", "2026-11-01T05:30:00Z", True),
        ("America/New_York", "2026-11-01 02:30:00", "2026-11-01T07:30:00Z", False),
        ("America/New_York", "2026-01-10 23:00:00", "2026-01-11T04:00:00Z", False),
        # Fixed offsets.
        ("+05:30", "2026-03-29 02:30:00", "2026-03-28T21:00:00Z", False),
        ("UTC-3", "2026-03-29 23:00:00", "2026-03-30T02:00:00Z", False),
        ("330", "2026-01-01 05:30:00", "2026-01-01T00:00:00Z", False),
        ("+0000", "2026-01-01 05:30:00", "2026-01-01T05:30:00Z", False),
    ],
)
def test_instant_of_local_time(zone: str, local: str, utc: str, ambiguous: bool) -> None:
    assert stamp(local, zone) == PunchTime(utc, ambiguous, None)


@pytest.mark.parametrize(
    ("offset", "utc"),
    [
        ("+28800", "2026-03-28T18:30:00Z"),  # UTC+8 stated: it wins over Europe/Berlin
        ("28800", "2026-03-28T18:30:00Z"),
        ("-18000", "2026-03-29T07:30:00Z"),
        ("+0", "2026-03-29T02:30:00Z"),
        (19800, "2026-03-28T21:00:00Z"),
    ],
)
def test_stated_offset_wins_over_the_zone(offset: object, utc: str) -> None:
    assert stamp("2026-03-29 02:30:00", "Europe/Berlin", offset) == PunchTime(utc, False, None)


@pytest.mark.parametrize("offset", [None, "", "abc", "+0800", "+99999", "+50460", "1.5", True])
def test_implausible_stated_offsets_are_ignored(offset: object) -> None:
    assert parse_time_offset(offset) is None
    assert stamp("2026-03-29 02:30:00", "Europe/Berlin", offset).timestamp_utc == (
        "2026-03-29T01:30:00Z"
    )


@pytest.mark.parametrize("text", ["2026-02-30 10:00:00", "garbage", "2026-03-29", ""])
def test_an_unreal_local_time_has_no_instant(text: str) -> None:
    assert parse_local(text) is None
    assert stamp(text, "Europe/Berlin") == PunchTime("", False, "invalid time")


@pytest.mark.parametrize("name", ["Mars/Olympus", "+15:00", "+05:75", "UTC+9999", "Europe/"])
def test_unknown_zones(name: str) -> None:
    with pytest.raises(UnknownZone):
        resolve_zone(name)


def test_unknown_device_zone_falls_back_to_the_default() -> None:
    policy = TimePolicy(default_zone="Asia/Kolkata")
    assert policy.zone("Mars/Olympus") is resolve_zone("Asia/Kolkata")
    assert policy.zone("") is resolve_zone("Asia/Kolkata")
    assert policy.zone("Europe/Berlin") is resolve_zone("Europe/Berlin")


def test_zones_are_cached() -> None:
    assert resolve_zone("Europe/Berlin") is resolve_zone("Europe/Berlin")
    assert resolve_zone("+05:30") is resolve_zone("+05:30")


DATETIMES = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2037, 12, 31))


@given(local=DATETIMES, name=st.sampled_from(ZONES + ["Australia/Lord_Howe", "+05:45"]))
def test_instant_round_trips_unless_ambiguous(local: datetime, name: str) -> None:
    zone = resolve_zone(name)
    instant, ambiguous = local_to_utc(local, zone)
    back = instant.astimezone(zone).replace(tzinfo=None)
    if not ambiguous:
        assert back == local
    elif back == local:  # an overlap: the earlier of the two instants
        later = (local - local.replace(tzinfo=zone, fold=1).utcoffset()).replace(tzinfo=UTC)
        assert instant < later
    else:  # a gap: read with the offset in force just before it
        before = instant - timedelta(hours=3)
        assert local - instant.replace(tzinfo=None) == before.astimezone(zone).utcoffset()


@given(local=DATETIMES.map(lambda d: d.replace(microsecond=0)), name=st.sampled_from(ZONES))
def test_stamp_text_is_the_instant(local: datetime, name: str) -> None:
    text = local.strftime("%Y-%m-%d %H:%M:%S")
    got = stamp(text, name)
    instant, ambiguous = local_to_utc(local, resolve_zone(name))
    assert got.timestamp_utc == utc_text(instant)
    assert got.time_ambiguous is ambiguous
    assert parse_utc(got.timestamp_utc) == instant


# --------------------------------------------------------------------------- suspect


@pytest.mark.parametrize(
    ("instant", "reason"),
    [
        (RECEIVED, None),
        (RECEIVED + timedelta(seconds=600), None),
        (RECEIVED + timedelta(seconds=601), "future: 601 s ahead of the server clock"),
        (RECEIVED + timedelta(hours=1), "future: 3600 s ahead of the server clock"),
        (RECEIVED - timedelta(days=400), None),
        (RECEIVED - timedelta(days=400, seconds=1), "past: 400 days before receipt"),
        (RECEIVED - timedelta(days=3000), "past: 3000 days before receipt"),
    ],
)
def test_suspect_reason(instant: datetime, reason: str | None) -> None:
    assert suspect_reason(instant, RECEIVED, 600, 400) == reason


def test_a_device_an_hour_in_the_future_is_suspect() -> None:
    # Berlin summer time is UTC+2: 15:00 local is 13:00Z, an hour after receipt.
    got = TimePolicy().stamp("2026-06-01 15:00:00", "Europe/Berlin", RECEIVED)
    assert got == PunchTime(
        "2026-06-01T13:00:00Z", False, "future: 3600 s ahead of the server clock"
    )
    assert TimePolicy().stamp("2026-06-01 14:00:00", "Europe/Berlin", RECEIVED).suspect_time is None
    old = TimePolicy(max_past_days=30).stamp("2026-04-01 14:00:00", "Europe/Berlin", RECEIVED)
    assert old.suspect_time == "past: 61 days before receipt"


# --------------------------------------------------------------------------- clock offsets


def test_clock_offset_of_a_probe() -> None:
    zone = resolve_zone("Europe/Berlin")
    asked = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()
    # The terminal says 14:00:10 local (12:00:10Z) while the server's midpoint is 12:00:00.2.
    assert clock_offset(datetime(2026, 6, 1, 14, 0, 10), zone, asked, asked + 0.4) == 10
    assert clock_offset(datetime(2026, 6, 1, 13, 0, 0), zone, asked, asked + 0.4) == -3600
    assert clock_offset(datetime(2026, 6, 1, 14, 0, 0), zone, asked, asked + 0.4) == 0


def test_offset_samples_take_the_median() -> None:
    samples = OffsetSamples(size=5)
    assert samples.add(2) == 2
    assert samples.add(3) == 2  # median of 2, 3 is 2.5: rounds to even
    assert samples.add(-7200) == 2  # one resent old punch does not move it
    for _ in range(5):
        last = samples.add(3600.4)
    assert last == 3600
    assert len(samples) == 5


@given(
    true_offset=st.integers(min_value=-3600, max_value=3600),
    latency=st.floats(min_value=0.0, max_value=0.3),
    order=st.permutations(range(15)),
)
def test_a_push_terminals_offset_is_its_clocks_whatever_second_it_punched_in(
    true_offset: int, latency: float, order: list[int]
) -> None:
    """Each upload carries a whole-second reading of the terminal's clock: the fraction
    of a second it punched in (``phase``) is lost. Over punches spread across the second,
    in any order, the median sample is the clock's true offset (without the half second
    a terminal with a right clock read as -1 s, and flipped between 0 and -1)."""
    samples = OffsetSamples(size=15)
    for k, i in enumerate(order):
        clock = RECEIVED + timedelta(seconds=10 * k + (i + 0.5) / 15)  # the terminal's
        reading = clock.replace(microsecond=0) + timedelta(seconds=true_offset)
        offset = samples.add(reading_offset(reading, clock + timedelta(seconds=latency)))
    assert offset == true_offset


# --------------------------------------------------------------------------- API times


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("2026-03-29", ("date", "2026-03-29")),
        ("2026-03-29 02:30:00", ("local", "2026-03-29 02:30:00")),
        ("2026-03-29T02:30:00", ("local", "2026-03-29 02:30:00")),
        ("2026-03-29 02:30", ("local", "2026-03-29 02:30:00")),
        ("2026-03-29T01:30:00Z", ("utc", "2026-03-29T01:30:00Z")),
        ("2026-03-29T03:30:00+02:00", ("utc", "2026-03-29T01:30:00Z")),
        ("2026-03-29T03:30:00 02:00", ("utc", "2026-03-29T01:30:00Z")),  # '+' sent raw
        ("2026-03-28T20:30:00-05:00", ("utc", "2026-03-29T01:30:00Z")),
        ("2026-03-29T07:00:00+0530", ("utc", "2026-03-29T01:30:00Z")),
        ("2026-03-29T01:30:00.250Z", ("utc", "2026-03-29T01:30:00Z")),
    ],
)
def test_parse_query_time(text: str, parsed: tuple[str, str]) -> None:
    assert parse_query_time(text) == parsed


@pytest.mark.parametrize(
    "text", ["yesterday", "2026-13-01", "2026-03-29T25:00:00Z", "2026-03-29T01:00:00+15:00", ""]
)
def test_parse_query_time_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_query_time(text)


# --------------------------------------------------------------------------- days


def test_day_start() -> None:
    assert parse_day_start("04:00") == 240
    assert parse_day_start("0:30") == 30
    assert format_day_start(240) == "04:00"
    for bad in ("24:00", "4", "04:60", "ab:cd"):
        with pytest.raises(ValueError):
            parse_day_start(bad)
    assert day_of(datetime(2026, 3, 3, 3, 59), 240).isoformat() == "2026-03-02"
    assert day_of(datetime(2026, 3, 3, 4, 0), 240).isoformat() == "2026-03-03"


def punch(user: str, local: str, status: int, device: str = "dev-a", zone: str = "Europe/Berlin"):
    return DayPunch(user, device, local, stamp(local, zone).timestamp_utc, status)


def test_night_shift_across_midnight_is_one_day_with_day_starts_at() -> None:
    shift = [punch("7", "2026-03-02 22:00:00", 0), punch("7", "2026-03-03 03:30:00", 1)]
    days = Days(day_starts_at=240)
    days.extend(shift)
    assert days.rows({"7": "Nina"}) == [
        {
            "user_id": "7",
            "name": "Nina",
            "date": "2026-03-02",
            "first": "2026-03-02 22:00:00",
            "last": "2026-03-03 03:30:00",
            "first_utc": "2026-03-02T21:00:00Z",
            "last_utc": "2026-03-03T02:30:00Z",
            "first_action": 0,
            "last_action": 1,
            "punches": 2,
            "devices": ["dev-a"],
            "span_minutes": 330,
            "states_consistent": True,
        }
    ]
    midnight = Days()
    midnight.extend(shift)
    rows = midnight.rows()
    assert [(r["date"], r["punches"], r["states_consistent"]) for r in rows] == [
        ("2026-03-02", 1, None),
        ("2026-03-03", 1, None),
    ]


def test_a_22_to_06_night_shift_over_the_spring_change_lasts_an_hour_less() -> None:
    # A 22:00-06:00 shift needs a boundary between shifts, e.g. noon.
    days = Days(day_starts_at=12 * 60)
    days.extend([punch("7", "2026-03-28 22:00:00", 0), punch("7", "2026-03-29 06:00:00", 1)])
    (row,) = days.rows()
    assert (row["date"], row["span_minutes"]) == ("2026-03-28", 7 * 60)


def test_first_and_last_by_instant_across_devices_and_states() -> None:
    days = Days()
    days.extend(
        [
            punch("2", "2026-05-04 17:00:00", 255, "dev-b"),
            punch("2", "2026-05-04 08:00:00", 255, "dev-a"),
            # A New York device: 12:00 there is 18:00 in Berlin, after the others.
            punch("2", "2026-05-04 12:00:00", 1, "dev-ny", "America/New_York"),
            punch("10", "2026-05-04 09:00:00", 1),
            punch("10", "2026-05-04 18:00:00", 0),
            punch("1", "2026-05-05 09:00:00", 0),
        ]
    )
    rows = days.rows()
    assert [(r["date"], r["user_id"]) for r in rows] == [
        ("2026-05-04", "2"),
        ("2026-05-04", "10"),
        ("2026-05-05", "1"),
    ]
    two = rows[0]
    assert (two["first"], two["last"], two["punches"]) == (
        "2026-05-04 08:00:00",
        "2026-05-04 12:00:00",
        3,
    )
    assert two["devices"] == ["dev-a", "dev-b", "dev-ny"]
    assert two["span_minutes"] == 10 * 60
    assert two["states_consistent"] is False  # first is 255, not "in"
    assert rows[1]["states_consistent"] is False  # in/out reversed
    assert rows[2]["states_consistent"] is None
    assert rows[2]["name"] is None


PUNCHES = st.lists(
    st.builds(
        lambda user, local, status, device: punch(user, local, status, device),
        st.sampled_from(["1", "2", "10", "a"]),
        st.datetimes(min_value=datetime(2026, 3, 27), max_value=datetime(2026, 3, 31)).map(
            lambda d: d.strftime("%Y-%m-%d %H:%M:%S")
        ),
        st.sampled_from([0, 1, 4, 5, 255]),
        st.sampled_from(["x", "y"]),
    ),
    max_size=40,
)


@given(punches=PUNCHES, start=st.integers(0, 23 * 60 + 59))
def test_days_account_for_every_punch(punches: list[DayPunch], start: int) -> None:
    days = Days(day_starts_at=start)
    days.extend(punches)
    rows = days.rows()
    assert sum(r["punches"] for r in rows) == len(punches)
    keys = [(r["date"], r["user_id"]) for r in rows]
    assert len(set(keys)) == len(keys)
    for row in rows:
        mine = [
            p
            for p in punches
            if p.user_id == row["user_id"]
            and day_of(parse_local(p.timestamp), start).isoformat() == row["date"]  # type: ignore[arg-type]
        ]
        assert len(mine) == row["punches"]
        assert row["first_utc"] == min(p.timestamp_utc for p in mine)
        assert row["last_utc"] == max(p.timestamp_utc for p in mine)
        assert row["span_minutes"] >= 0
        assert (row["states_consistent"] is None) == (row["punches"] == 1)
    assert [r["date"] for r in rows] == sorted(r["date"] for r in rows)


def test_fixed_zone_is_utc_for_zero() -> None:
    assert resolve_zone("+00:00") is UTC
    assert resolve_zone("-05:00") == timezone(timedelta(hours=-5))


# --------------------------------------------------------------------------- review (issue 12)


@pytest.mark.parametrize("offset", ["+1200", "+0900", "+1800", "-0600", "+0045", "2700", 1200])
def test_stated_offsets_no_zone_has_are_ignored(offset: object) -> None:
    # Seconds east of UTC: "+1200" would be 20 minutes (no zone is +00:20 since 1940; it
    # is more likely an HHMM +12:00 misread), so it is not trusted over the device's zone.
    assert parse_time_offset(offset) is None
    assert stamp("2026-06-01 12:00:00", "Europe/Berlin", offset).timestamp_utc == (
        "2026-06-01T10:00:00Z"
    )


@pytest.mark.parametrize(
    ("offset", "seconds"),
    [("+20700", 20700), ("45900", 45900), ("-34200", -34200), ("+50400", 50400), ("-0", 0)],
)
def test_stated_quarter_hour_offsets_are_kept(offset: str, seconds: int) -> None:
    # Kathmandu +05:45, Chatham +12:45, Marquesas -09:30, Kiribati +14:00.
    assert parse_time_offset(offset) == seconds


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("2026-06-01T12:00:00.0000000Z", ("utc", "2026-06-01T12:00:00Z")),  # .NET "o"
        ("2026-06-01T12:00:00.123456789+05:30", ("utc", "2026-06-01T06:30:00Z")),  # Go
    ],
)
def test_parse_query_time_long_fractions(text: str, parsed: tuple[str, str]) -> None:
    assert parse_query_time(text) == parsed


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("2026-03-29T01:30:00.250Z", ("utc", "2026-03-29T01:30:01Z")),
        ("2026-03-29T01:30:00.000Z", ("utc", "2026-03-29T01:30:00Z")),
        ("2026-03-29T23:59:59.5+00:00", ("utc", "2026-03-30T00:00:00Z")),
        ("2026-03-29 02:30:00.1", ("local", "2026-03-29 02:30:01")),
        ("2026-03-29", ("date", "2026-03-29")),
    ],
)
def test_a_since_with_a_fraction_starts_at_the_next_whole_second(
    text: str, parsed: tuple[str, str]
) -> None:
    # Punch times are whole seconds: a punch at 01:30:00 is before since=01:30:00.250Z.
    assert parse_query_time(text, round_up=True) == parsed


# $TZ as libc reads it: a POSIX rule string is a zone with daylight saving, not "unknown".
POSIX_RULES = [
    # (rule, an IANA zone that has followed it since 1996)
    ("CET-1CEST,M3.5.0,M10.5.0/3", "Europe/Berlin"),
    ("EST5EDT,M3.2.0,M11.1.0", "America/New_York"),
    ("<+0530>-5:30", "Asia/Kolkata"),
    ("AEST-10AEDT,M10.1.0,M4.1.0/3", "Australia/Sydney"),
]


@given(
    local=st.datetimes(min_value=datetime(2008, 1, 1), max_value=datetime(2037, 12, 31)),
    rule=st.sampled_from(POSIX_RULES),
    fold=st.sampled_from([0, 1]),
)
def test_a_posix_rule_is_the_zone_that_follows_it(
    local: datetime, rule: tuple[str, str], fold: int
) -> None:
    spec, name = rule
    mine = local.replace(tzinfo=posix_zone(spec), fold=fold)
    theirs = local.replace(tzinfo=ZoneInfo(name), fold=fold)
    assert mine.utcoffset() == theirs.utcoffset()
    assert local_to_utc(local, posix_zone(spec)) == local_to_utc(local, ZoneInfo(name))


@pytest.mark.parametrize("spec", ["", "garbage!!", "CET-1CEST,M3.5.0", "EST5\nEDT", "Zürich-1"])
def test_a_malformed_posix_rule_is_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        posix_zone(spec)


@pytest.mark.parametrize(
    ("tz", "january", "july"),
    [
        ("CET-1CEST,M3.5.0,M10.5.0/3", 3600, 7200),  # a rule (containers, embedded images)
        ("CET-1CEST", 3600, 7200),  # no dates: libc's default ones (M3.2.0,M11.1.0)
        ("EST5EDT4", -18000, -14400),
        (":Asia/Kolkata", 19800, 19800),  # an IANA name, with glibc's optional colon
        ("America/New_York", -18000, -14400),
        ("/usr/share/zoneinfo/Australia/Sydney", 39600, 36000),  # a TZif file's path
    ],
)
def test_server_zone_reads_tz_as_libc_does(
    monkeypatch: pytest.MonkeyPatch, tz: str, january: int, july: int
) -> None:
    monkeypatch.setenv("TZ", tz)
    server_zone.cache_clear()
    try:
        zone = server_zone()
        offsets = [datetime(2026, month, 15, 12, tzinfo=zone).utcoffset() for month in (1, 7)]
        assert offsets == [timedelta(seconds=january), timedelta(seconds=july)]
        if tz.startswith("/"):  # a tzdata path is known by its IANA name (for the page)
            assert zone_name(zone) == "Australia/Sydney"
        # libc agrees (it is what time.localtime and every other program on the machine use)
        time.tzset()
        for month, seconds in ((1, january), (7, july)):
            instant = datetime(2026, month, 15, 12, tzinfo=UTC).timestamp()
            assert time.localtime(instant).tm_gmtoff == seconds
    finally:
        monkeypatch.undo()
        time.tzset()
        server_zone.cache_clear()


# --------------------------------------------------------------------------- query edges


@pytest.mark.parametrize(
    ("text", "round_up"),
    [
        ("9999-12-31T23:59:59.5Z", True),  # the next whole second is past year 9999
        ("9999-12-31 23:59:59.5", True),  # a device-local one too
        ("0001-01-01T00:00:00+01:00", False),  # an instant before year 1
        ("9999-12-31T23:00:00-05:00", False),  # one after year 9999
        ("2026-03-29T03:30:00+05:60", False),  # no offset has 60 minutes
        ("2026-03-29T03:30:00+0560", False),
    ],
)
def test_parse_query_time_out_of_range_is_a_value_error(text: str, round_up: bool) -> None:
    # The API turns a ValueError into a 400 naming the field; anything else was a 500.
    with pytest.raises(ValueError):
        parse_query_time(text, round_up=round_up)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("2026-03-29t01:30:00z", ("utc", "2026-03-29T01:30:00Z")),  # RFC 3339 5.6: any case
        ("2026-03-29t03:30:00+02:00", ("utc", "2026-03-29T01:30:00Z")),
        ("2026-03-29t02:30:00", ("local", "2026-03-29 02:30:00")),
    ],
)
def test_parse_query_time_lower_case_t(text: str, parsed: tuple[str, str]) -> None:
    assert parse_query_time(text) == parsed


@pytest.mark.parametrize(
    ("zone", "asked_utc", "device_local", "offset"),
    [
        # Berlin, 2026-10-25: 03:00 CEST -> 02:00 CET, so 02:00-02:59 happens twice.
        ("Europe/Berlin", "2026-10-25T00:30:00", "2026-10-25 02:30:00", 0),  # first pass
        ("Europe/Berlin", "2026-10-25T01:30:00", "2026-10-25 02:30:00", 0),  # second pass
        ("Europe/Berlin", "2026-10-25T01:30:00", "2026-10-25 02:30:05", 5),
        ("Europe/Berlin", "2026-10-25T00:59:50", "2026-10-25 02:00:10", 20),
        # Lord Howe, 2026-04-05: 02:00 +11 -> 01:30 +10:30 (a half-hour overlap).
        ("Australia/Lord_Howe", "2026-04-04T15:15:00", "2026-04-05 01:45:00", 0),
        # Chatham, 2026-04-05: 03:45 +13:45 -> 02:45 +12:45.
        ("Pacific/Chatham", "2026-04-04T14:15:00", "2026-04-05 03:00:00", 0),
        # An ambiguous reading far from now: the earlier instant, as for punches.
        # (00:30Z is 145 days and 12.5 hours after 2026-06-01T12:00Z.)
        ("Europe/Berlin", "2026-06-01T12:00:00", "2026-10-25 02:30:00", 12573000),
    ],
)
def test_clock_offset_in_a_repeated_hour_takes_the_pass_nearest_the_probe(
    zone: str, asked_utc: str, device_local: str, offset: int
) -> None:
    # A right clock read in the second pass of a repeated hour is not an hour behind
    # (with --fix-drift that set the clock, and clock_offset_s showed -3600 for an hour).
    asked = datetime.fromisoformat(asked_utc).replace(tzinfo=UTC).timestamp()
    local = datetime.fromisoformat(device_local)
    assert clock_offset(local, resolve_zone(zone), asked, asked + 0.2) == offset


@pytest.mark.parametrize(
    ("zone", "name"),
    [
        (ZoneInfo("Europe/Berlin"), "Europe/Berlin"),
        (timezone(timedelta(hours=5, minutes=30)), "+05:30"),
        (timezone(timedelta(hours=-3, minutes=-30)), "-03:30"),
        (UTC, "+00:00"),
        (posix_zone("CET-1CEST,M3.5.0,M10.5.0/3"), ""),  # no name a browser reads
    ],
)
def test_zone_name_is_what_resolve_zone_and_a_browser_read(zone: Any, name: str) -> None:
    assert zone_name(zone) == name
    if name:
        assert resolve_zone(name).utcoffset(datetime(2026, 7, 1)) == zone.utcoffset(
            datetime(2026, 7, 1)
        )
