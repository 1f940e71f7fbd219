"""Time zones of push terminals: a device's configured zone as a UTC offset, and the
handshake's ``TimeZone`` value (hours or minutes east of UTC)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["device_offset_minutes", "timezone_minutes", "timezone_value", "utc_offset_minutes"]


def timezone_value(offset_minutes: int) -> int:
    """The handshake ``TimeZone``: whole hours within -12..12, else minutes."""
    hours, rest = divmod(offset_minutes, 60)
    if rest == 0 and -12 <= hours <= 12:
        return hours
    return offset_minutes


def timezone_minutes(value: int) -> int:
    """The inverse of :func:`timezone_value`: a ``TimeZone`` value as minutes east of UTC."""
    return value if abs(value) > 60 else value * 60


_OFFSET = re.compile(
    r"(?:UTC|GMT)?\s*(?P<sign>[+-]?)\s*(?P<h>[0-9]{1,4})(?::(?P<m>[0-9]{2}))?", re.IGNORECASE
)
_MAX_OFFSET = 14 * 60


def utc_offset_minutes(tz_name: str, now: datetime) -> int:
    """The UTC offset of a zone at ``now``, in minutes.

    ``tz_name`` is an IANA name (``Asia/Kolkata``), ``""`` for the server's local zone, or
    a fixed offset: ``+05:30``, ``+0530`` (four digits are HHMM), ``UTC-3``, ``-3``
    (hours when |n| <= 14) or ``330`` (minutes). A naive ``now`` is taken as UTC.
    Raises ValueError for an unknown zone.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    name = tz_name.strip()
    if not name:
        offset = now.astimezone().utcoffset()
    elif match := _OFFSET.fullmatch(name):
        sign = -1 if match["sign"] == "-" else 1
        digits, extra = match["h"], match["m"]
        if extra is None and len(digits) == 4:  # +0530
            digits, extra = digits[:2], digits[2:]
        hours = int(digits)
        if extra is not None:
            minutes = hours * 60 + int(extra)
        else:
            minutes = hours * 60 if hours <= 14 else hours
        if minutes > _MAX_OFFSET or (extra is not None and int(extra) >= 60):
            raise ValueError(f"UTC offset out of range: {tz_name!r}")
        return sign * minutes
    else:
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError) as e:
            raise ValueError(f"unknown time zone {tz_name!r}") from e
        offset = now.astimezone(zone).utcoffset()
    return int((offset or timedelta()) / timedelta(minutes=1))


def device_offset_minutes(device_zone: str, default_zone: str, now: datetime) -> int:
    """A device's UTC offset at ``now``, in minutes, from the zone its punches are read in
    (:meth:`zkserver.localtime.TimePolicy.zone`): its own zone, else ``default_zone``
    (``--timezone``), else the server's; a setting that names no zone (a row from an older
    version, a name this machine's tzdata no longer has) is passed over, not an error."""
    for name in (device_zone, default_zone):
        if name.strip():
            try:
                return utc_offset_minutes(name, now)
            except ValueError:
                continue
    return utc_offset_minutes("", now)
