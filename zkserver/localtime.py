"""Device local time made trustworthy, pure: UTC instants, suspect clocks, people's days.

Terminals report each punch as local wall-clock text (``YYYY-MM-DD HH:MM:SS``). This
module turns that text into an instant and judges it; nothing here does I/O or touches the
reactor, so the ingest path, the migration that fills old rows, the API and the pull
sessions all share these functions.

The rules (documented in the README):

- A punch's zone is the offset the terminal states with it (the extended ATTLOG
  ``time_offset`` field, seconds east of UTC such as ``+28800``), else the device's zone
  (an IANA name such as ``Europe/Berlin``, a fixed offset such as ``+05:30``, or ``""``
  for the server's default zone).
- A local time in a daylight-saving *overlap* (it happens twice) takes the earlier instant
  (Python's ``fold=0``); one in a *gap* (it never happens) is read with the offset in force
  before the gap, so Europe/Berlin ``2026-03-29 02:30:00`` is ``2026-03-29T01:30:00Z``.
  Both are marked ambiguous.
- A punch more than ``max_future_s`` seconds ahead of the server clock at receipt, or more
  than ``max_past_days`` days before it, is *suspect* (kept, with a reason).
- A person's day is a device-local date; with ``day_starts_at`` (minutes after midnight)
  a punch before that time of day belongs to the previous day (night shifts).
"""

from __future__ import annotations

import functools
import io
import os
import re
import statistics
import struct
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from attrs import define, field, frozen

__all__ = [
    "IN_STATES",
    "OUT_STATES",
    "PRESENT_STATES",
    "UTC_FORMAT",
    "DayPunch",
    "Days",
    "OffsetSamples",
    "reading_offset",
    "PunchTime",
    "TimePolicy",
    "UnknownZone",
    "clock_offset",
    "day_of",
    "format_day_start",
    "local_to_utc",
    "parse_day_start",
    "parse_local",
    "parse_query_time",
    "parse_time_offset",
    "parse_utc",
    "resolve_zone",
    "posix_zone",
    "server_zone",
    "zone_name",
    "suspect_reason",
    "utc_text",
]

#: How instants are stored and shown: ISO 8601, whole seconds, ``Z``. Fixed width, so the
#: text sorts in time order.
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

#: Punch states (the event's ``action``) that begin and end a stretch of work.
IN_STATES = frozenset({0, 4})  # check-in, overtime-in
OUT_STATES = frozenset({1, 5})  # check-out, overtime-out
#: States after which a person counts as present ("who is in now").
PRESENT_STATES = frozenset({0, 3, 4})  # check-in, break-in (back), overtime-in

#: Largest UTC offset any zone has used (Kiribati is +14:00).
MAX_OFFSET_S = 14 * 3600


class UnknownZone(ValueError):
    """A time-zone name that is neither an IANA zone nor a fixed offset."""


# --------------------------------------------------------------------------- zones

_OFFSET = re.compile(
    r"(?:UTC|GMT)?\s*(?P<sign>[+-]?)\s*(?P<h>[0-9]{1,4})(?::(?P<m>[0-9]{2}))?", re.IGNORECASE
)


@functools.lru_cache(maxsize=1)
def server_zone() -> tzinfo:
    """This machine's zone, with its daylight-saving rules when they can be found, read as
    libc reads it: ``$TZ`` (an IANA name, a TZif file's absolute path or a POSIX rule such
    as ``CET-1CEST,M3.5.0,M10.5.0/3``), else the zone ``/etc/localtime`` points to, else
    that file's rules, else the current fixed offset."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        if name.startswith("/") and "/zoneinfo/" in name:
            # a tzdata file's path: its IANA name, which a browser reads too (zone_name)
            try:
                return ZoneInfo(name.split("/zoneinfo/", 1)[1])
            except (ZoneInfoNotFoundError, ValueError, OSError):
                pass
        try:
            if name.startswith("/"):
                with open(name, "rb") as rules:
                    return ZoneInfo.from_file(rules, key=name)
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
        try:
            return posix_zone(name)
        except ValueError:
            pass
    candidates = []
    try:
        target = os.path.realpath("/etc/localtime")
        if "/zoneinfo/" in target:
            candidates.append(target.split("/zoneinfo/", 1)[1])
    except OSError:
        pass
    for candidate in candidates:
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            continue
    try:
        with open("/etc/localtime", "rb") as rules:
            return ZoneInfo.from_file(rules, key="localtime")
    except (OSError, ValueError):
        pass
    return datetime.now().astimezone().tzinfo or UTC


def posix_zone(spec: str) -> ZoneInfo:
    """The zone a POSIX ``TZ`` rule string names (``CET-1CEST,M3.5.0,M10.5.0/3``,
    ``EST5EDT,M3.2.0,M11.1.0``, ``<+0530>-5:30``): what libc follows when ``$TZ`` holds a rule
    instead of an IANA name, as containers and embedded images often set it.

    The rule is wrapped in a TZif file with no transitions (RFC 8536 section 3.3: its footer
    string then governs every instant), so zoneinfo reads it, folds and gaps included. POSIX
    offsets are west of UTC: ``EST5`` is UTC-5. Raises ValueError for a malformed rule.
    """
    try:
        rule = spec.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"not a POSIX TZ rule: {spec!r}") from None
    if not rule or b"\n" in rule:
        raise ValueError(f"not a POSIX TZ rule: {spec!r}")
    # One header and data block per version-1 (32-bit) and version-2 (64-bit) section: no
    # transitions or leap seconds, one local time type (UTC, unused) and its "\0" name.
    counts = struct.pack(">6l", 0, 0, 0, 0, 1, 1)  # isut, isstd, leap, time, type, char
    section = b"TZif2" + bytes(15) + counts + struct.pack(">lBB", 0, 0, 0) + b"\0"
    try:
        return ZoneInfo.from_file(io.BytesIO(section * 2 + b"\n" + rule + b"\n"), key=spec)
    except ValueError:
        if b"," in rule:
            raise
    # A daylight-saving name without the dates of the change (``CET-1CEST``): glibc and
    # musl then change on the dates their built-in default names, M3.2.0,M11.1.0.
    rule += _DEFAULT_DST_DATES
    return ZoneInfo.from_file(io.BytesIO(section * 2 + b"\n" + rule + b"\n"), key=spec)


#: The dates of the daylight-saving change libc takes when a POSIX rule names none.
_DEFAULT_DST_DATES = b",M3.2.0,M11.1.0"


def zone_name(zone: tzinfo) -> str:
    """A name for ``zone`` that :func:`resolve_zone` and a browser's ``Intl`` both read: its
    IANA key, ``+HH:MM`` for a fixed offset, ``""`` when it has neither (a zone read from
    ``/etc/localtime``'s rules alone, or a POSIX rule from ``$TZ``)."""
    key = getattr(zone, "key", None)
    if isinstance(key, str):
        try:
            ZoneInfo(key)
            return key
        except (ZoneInfoNotFoundError, ValueError, OSError):
            return ""
    if isinstance(zone, timezone):
        offset = zone.utcoffset(None)
        minutes = int(offset.total_seconds()) // 60
        sign = "-" if minutes < 0 else "+"
        return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return ""


@functools.lru_cache(maxsize=512)
def resolve_zone(name: str) -> tzinfo:
    """The ``tzinfo`` of a device's zone setting (cached: ingest calls this per punch).

    ``name`` is an IANA name (``Asia/Kolkata``), ``""`` for :func:`server_zone`, or a fixed
    offset: ``+05:30``, ``+0530`` (four digits are HHMM), ``UTC-3``, ``-3`` (hours when
    |n| <= 14) or ``330`` (minutes). Raises :class:`UnknownZone`.
    """
    text = name.strip()
    if not text:
        return server_zone()
    if match := _OFFSET.fullmatch(text):
        sign = -1 if match["sign"] == "-" else 1
        digits, extra = match["h"], match["m"]
        if extra is None and len(digits) == 4:  # +0530
            digits, extra = digits[:2], digits[2:]
        if extra is not None:
            if int(extra) >= 60:
                raise UnknownZone(f"UTC offset out of range: {name!r}")
            minutes = int(digits) * 60 + int(extra)
        else:
            minutes = int(digits) * 60 if int(digits) <= 14 else int(digits)
        if minutes * 60 > MAX_OFFSET_S:
            raise UnknownZone(f"UTC offset out of range: {name!r}")
        return UTC if minutes == 0 else timezone(timedelta(minutes=sign * minutes))
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError) as e:
        raise UnknownZone(f"unknown time zone {name!r}") from e


def parse_time_offset(value: Any) -> int | None:
    """The extended ATTLOG ``time_offset`` (seconds east of UTC, ``+28800``), or None when
    it is absent or not a plausible offset: every zone's offset since the 1970s is a
    whole quarter hour within +-14 h and, unless zero, at least an hour, so ``+1200``
    (20 minutes; more likely an HHMM +12:00) or ``+0530`` is not trusted over the zone."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,6}", text):
        return None
    seconds = int(text)
    if abs(seconds) > MAX_OFFSET_S or seconds % 900 or 0 < abs(seconds) < 3600:
        return None
    return seconds


@functools.lru_cache(maxsize=128)
def _fixed(seconds: int) -> tzinfo:
    return UTC if seconds == 0 else timezone(timedelta(seconds=seconds))


# --------------------------------------------------------------------------- instants


def parse_local(text: str) -> datetime | None:
    """Local wall-clock text (``YYYY-MM-DD HH:MM:SS``) as a naive datetime; None if it is
    not a real date and time."""
    if len(text) != 19 or text[10] not in " T":
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is None else None


def local_to_utc(local: datetime, zone: tzinfo) -> tuple[datetime, bool]:
    """The instant of a naive local time in ``zone``, and whether it was ambiguous.

    Overlap: the earlier instant (``fold=0``). Gap: the offset before the gap (also what
    ``fold=0`` means for zoneinfo). Ambiguous means either: the two folds disagree.
    """
    offset = local.replace(tzinfo=zone).utcoffset() or timedelta()
    other = local.replace(tzinfo=zone, fold=1).utcoffset() or timedelta()
    return (local - offset).replace(tzinfo=UTC), offset != other


def utc_text(moment: datetime) -> str:
    """An aware time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return moment.astimezone(UTC).strftime(UTC_FORMAT)


def parse_utc(text: str | None) -> datetime | None:
    """Stored ``...Z`` text (or any ISO 8601 with an offset) as an aware UTC datetime."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(UTC)


def suspect_reason(
    instant: datetime, received: datetime, max_future_s: float, max_past_days: float
) -> str | None:
    """Why a punch's time is not to be trusted, or None when it is fine."""
    ahead = (instant - received).total_seconds()
    if ahead > max_future_s:
        return f"future: {round(ahead)} s ahead of the server clock"
    if -ahead > max_past_days * 86400:
        return f"past: {int(-ahead // 86400)} days before receipt"
    return None


@frozen
class PunchTime:
    """What the server knows about when a punch happened."""

    timestamp_utc: str  # "" when the local text is not a real time
    time_ambiguous: bool = False
    suspect_time: str | None = None


@frozen
class TimePolicy:
    """The server's time settings (``--timezone``, ``--max-future``, ``--max-past``,
    ``--day-starts-at``), applied to every punch."""

    default_zone: str = ""
    max_future_s: int = 600
    max_past_days: int = 400
    day_starts_at: int = 0  # minutes after midnight

    def zone(self, device_zone: str) -> tzinfo:
        """The zone of a device: its own, else the default, else the server's."""
        return _zone_for(device_zone, self.default_zone)

    def stamp(
        self,
        timestamp: str,
        device_zone: str,
        received: datetime,
        time_offset: Any = None,
    ) -> PunchTime:
        """The instant of one punch (a stated ``time_offset`` wins over the zone), whether
        it was ambiguous, and why it is suspect (None when it is not).

        Cheap (ingest calls it per punch): zones are cached, and so is each zone's offset
        for a whole day without a change; only a change day takes the exact fold test."""
        local = parse_local(timestamp)
        if local is None:
            return PunchTime("", False, "invalid time")
        ambiguous = False
        stated = parse_time_offset(time_offset) if time_offset is not None else None
        if stated is not None:
            offset = timedelta(seconds=stated)
        else:
            zone = self.zone(device_zone)
            found = _day_offset(zone, timestamp[:10])
            if found is None:
                offset = local.replace(tzinfo=zone).utcoffset() or timedelta()
                other = local.replace(tzinfo=zone, fold=1).utcoffset() or timedelta()
                ambiguous = offset != other
            else:
                offset = found
        try:
            instant = local - offset
        except OverflowError:  # year 1 in an eastern zone
            return PunchTime("", False, "invalid time")
        if received.tzinfo is not UTC:
            received = received.astimezone(UTC)
        ahead = (instant - received.replace(tzinfo=None)).total_seconds()
        reason = None
        if ahead > self.max_future_s or -ahead > self.max_past_days * 86400:
            reason = suspect_reason(
                instant.replace(tzinfo=UTC), received, self.max_future_s, self.max_past_days
            )
        return PunchTime(instant.isoformat() + "Z", ambiguous, reason)


@functools.lru_cache(maxsize=1024)
def _zone_for(device_zone: str, default_zone: str) -> tzinfo:
    for name in (device_zone, default_zone):
        if name.strip():
            try:
                return resolve_zone(name)
            except UnknownZone:
                continue
    return server_zone()


_DAY_OFFSETS: dict[tuple[tzinfo, str], timedelta | None] = {}


def _day_offset(zone: tzinfo, day: str) -> timedelta | None:
    """The UTC offset of ``zone`` all through the local day ``day`` (``YYYY-MM-DD``), or
    None on a day when it changes (then each time is read exactly)."""
    key = (zone, day)
    try:
        return _DAY_OFFSETS[key]
    except KeyError:
        pass
    try:
        d = date.fromisoformat(day)
        found = {
            datetime(d.year, d.month, d.day, h, m, sec, tzinfo=zone, fold=fold).utcoffset()
            for h, m, sec in ((0, 0, 0), (12, 0, 0), (23, 59, 59))
            for fold in (0, 1)
        }
    except (ValueError, OverflowError):
        return None
    value = found.pop() if len(found) == 1 else None
    if len(_DAY_OFFSETS) >= 16384:
        _DAY_OFFSETS.clear()
    _DAY_OFFSETS[key] = value
    return value


# --------------------------------------------------------------------------- clock offsets


def clock_offset(device_local: datetime, zone: tzinfo, asked_at: float, answered_at: float) -> int:
    """How far a terminal's clock is ahead of the server's (negative: behind), in seconds.

    ``device_local`` is the time the terminal answered (whole seconds, so on average half
    a second behind its true clock); ``asked_at``/``answered_at`` are the server's clock
    (POSIX seconds) around the question. Used by the pull idle probe.

    A reading in a repeated hour (clocks going back; or in a skipped one) is the pass
    nearer the server's clock: a right clock read in the second pass is not an hour behind.
    """
    local = device_local.replace(tzinfo=None, microsecond=0)
    midpoint = (asked_at + answered_at) / 2
    instant, ambiguous = local_to_utc(local, zone)
    offsets: list[float] = [instant.timestamp() + 0.5 - midpoint]
    if ambiguous:
        later = local.replace(tzinfo=zone, fold=1).utcoffset() or timedelta()
        offsets.append((local - later).replace(tzinfo=UTC).timestamp() + 0.5 - midpoint)
    nearest: float = min(offsets, key=abs)
    return round(nearest)


def reading_offset(reading: datetime, received: datetime) -> float:
    """One clock sample of a push terminal, in seconds: ``reading`` (the instant of its
    newest real-time punch, read from its clock in whole seconds) minus ``received`` (the
    server's time at the upload), plus half a second: a whole-second reading is on
    average half a second behind the clock that made it (as in :func:`clock_offset`).
    Without that half second a terminal whose clock is right gives samples spread over
    (-1, 0], whose rounded median flips between 0 and -1 from one upload to the next."""
    return (reading - received).total_seconds() + 0.5


@define
class OffsetSamples:
    """The recent (punch instant - receipt time) of a push terminal's real-time punches;
    their median is its clock offset (a few resent old punches do not move it)."""

    size: int = 15
    _samples: deque[float] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._samples = deque(maxlen=self.size)

    def add(self, seconds: float) -> int:
        """Add a sample; return the median offset so far, in whole seconds."""
        self._samples.append(seconds)
        return round(statistics.median(self._samples))

    def __len__(self) -> int:
        return len(self._samples)


# --------------------------------------------------------------------------- days


def parse_day_start(text: str) -> int:
    """``HH:MM`` as minutes after midnight (``04:00`` -> 240). ValueError otherwise."""
    match = re.fullmatch(r"([0-9]{1,2}):([0-9]{2})", text.strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(f"expected HH:MM (00:00 to 23:59), got {text!r}")
    return int(match[1]) * 60 + int(match[2])


def format_day_start(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def day_of(local: datetime, day_starts_at: int = 0) -> date:
    """The day a local time belongs to when days begin ``day_starts_at`` minutes after
    midnight."""
    return (local - timedelta(minutes=day_starts_at)).date()


def parse_query_time(text: str, round_up: bool = False) -> tuple[str, str]:
    """An API ``since``/``until`` value: ``("utc", "YYYY-MM-DDTHH:MM:SSZ")`` for ISO 8601
    with an offset or ``Z``, ``("local", "YYYY-MM-DD HH:MM:SS")`` for a device-local time,
    ``("date", "YYYY-MM-DD")`` for a bare date. ValueError for anything else.

    Punch times are whole seconds: a fraction (up to 9 digits: .NET writes 7, Go 9) is
    dropped, or with ``round_up`` (a ``since``) the time goes to the next whole second, so
    a punch before the asked time is never included. A ``+`` that arrived as a space (an
    unencoded ``+`` in a query string) is read as ``+``; ``t`` and ``z`` may be lower case
    (RFC 3339 section 5.6). An offset's minutes are below 60, and a time that falls before
    year 1 or after 9999 is a ValueError too.
    """
    text = text.strip()
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        date.fromisoformat(text)
        return "date", text
    match = re.fullmatch(
        r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}(?::[0-9]{2})?)(?:[.,]([0-9]{1,9}))?"
        r"(Z|z|[+\- ][0-9]{2}(?::?([0-9]{2}))?)?",
        text,
    )
    if not match or (match[3] is not None and len(match[2]) != 8):
        raise ValueError(f"expected YYYY-MM-DD HH:MM:SS or ISO 8601, got {text[:40]!r}")
    day, clock, fraction, offset, offset_minutes = match.groups()
    if offset_minutes is not None and int(offset_minutes) >= 60:
        raise ValueError(f"UTC offset out of range in {text[:40]!r}")
    later = timedelta(seconds=1) if round_up and fraction and int(fraction) else timedelta()
    try:
        if offset is None:
            local = datetime.fromisoformat(f"{day} {clock}") + later
            return "local", local.strftime("%Y-%m-%d %H:%M:%S")
        if offset[0] == " ":
            offset = "+" + offset[1:]
        moment = datetime.fromisoformat(f"{day}T{clock}{'+00:00' if offset in 'Zz' else offset}")
        if abs(moment.utcoffset() or timedelta()) > timedelta(hours=14):
            raise ValueError(f"UTC offset out of range in {text[:40]!r}")
        return "utc", utc_text(moment + later)
    except OverflowError:  # an instant before year 1 or after 9999
        raise ValueError(f"time out of range: {text[:40]!r}") from None


@frozen
class DayPunch:
    """What grouping days needs of one punch."""

    user_id: str
    device_id: str
    timestamp: str  # device local
    timestamp_utc: str  # "" when unknown
    status: int


def _user_key(user_id: str) -> tuple[int, int, str]:
    return (0, int(user_id), user_id) if user_id.isdigit() else (1, 0, user_id)


@define
class _Day:
    user_id: str
    date: str
    first: DayPunch
    last: DayPunch
    punches: int = 1
    devices: list[str] = field(factory=list)


def _order(punch: DayPunch) -> tuple[str, str]:
    # By instant; the local text breaks ties (and orders punches of unknown instant).
    return (punch.timestamp_utc or punch.timestamp.replace(" ", "T"), punch.timestamp)


@define
class Days:
    """Groups punches into one row per person per day, streaming (memory grows with the
    number of rows, not of punches). Feed :meth:`add`, then read :meth:`rows`."""

    day_starts_at: int = 0
    _days: dict[tuple[str, str], _Day] = field(factory=dict)

    def add(self, punch: DayPunch) -> None:
        local = parse_local(punch.timestamp)
        if local is None:
            return
        key = (punch.user_id, day_of(local, self.day_starts_at).isoformat())
        day = self._days.get(key)
        if day is None:
            self._days[key] = _Day(punch.user_id, key[1], punch, punch, 1, [punch.device_id])
            return
        day.punches += 1
        if punch.device_id not in day.devices:
            day.devices.append(punch.device_id)
        if _order(punch) < _order(day.first):
            day.first = punch
        if _order(punch) >= _order(day.last):
            day.last = punch

    def extend(self, punches: Iterable[DayPunch]) -> None:
        for punch in punches:
            self.add(punch)

    def keys(self) -> list[tuple[str, str]]:
        """(user id, date) of every row so far."""
        return list(self._days)

    def rows(self, names: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Rows ordered by date, then user id (numeric ids numerically)."""
        names = names or {}
        ordered = sorted(self._days.values(), key=lambda d: (d.date, _user_key(d.user_id)))
        return [self._row(day, names.get(day.user_id)) for day in ordered]

    @staticmethod
    def _row(day: _Day, name: str | None) -> dict[str, Any]:
        first_at, last_at = parse_utc(day.first.timestamp_utc), parse_utc(day.last.timestamp_utc)
        if first_at is None or last_at is None:
            first_local, last_local = (
                parse_local(day.first.timestamp),
                parse_local(day.last.timestamp),
            )
            assert first_local is not None and last_local is not None
            span = last_local - first_local
        else:
            span = last_at - first_at
        consistent: bool | None = None
        if day.punches > 1:
            consistent = day.first.status in IN_STATES and day.last.status in OUT_STATES
        return {
            "user_id": day.user_id,
            "name": name,
            "date": day.date,
            "first": day.first.timestamp,
            "last": day.last.timestamp,
            "first_utc": day.first.timestamp_utc or None,
            "last_utc": day.last.timestamp_utc or None,
            "first_action": day.first.status,
            "last_action": day.last.status,
            "punches": day.punches,
            "devices": sorted(day.devices),
            "span_minutes": max(0, int(span.total_seconds() // 60)),
            "states_consistent": consistent,
        }
