"""The push 3.x dialect ("Security PUSH", pushver 3.x).

Access-control / newer face terminals ("Security PUSH", pushver 3.x) register first
(``POST /iclock/registry``), fetch their settings (``POST /iclock/push``) and upload
``table=rtlog`` lines of ``key=value`` pairs instead of ATTLOG.
"""

from __future__ import annotations

import hashlib
from typing import Any

from zkserver.access import rtlog_is_punch
from zkserver.push.iclock import (
    _BLANK,
    _INT,
    DEFAULT_STATUS,
    DEFAULT_VERIFY,
    MAX_ATTLOG_LINE,
    _clip,
    _junk,
    _lines,
    _pin_problem,
    _trim,
    _valid_timestamp,
    lower_keys,
    normal_timestamp,
    parse_key_values,
)
from zkserver.push.timezones import timezone_value
from zkserver.records import Punch, Rejected

__all__ = ["RTLOG_NO_USER", "format_push_config", "parse_rtlog", "registry_code"]

#: rtlog events with no user (door opened by button, alarms, ...) have pin 0 or empty.
RTLOG_NO_USER = frozenset({"", "0"})


def parse_rtlog(
    body: str | bytes, encoding: str = ""
) -> tuple[list[Punch], list[Rejected], list[dict[str, str]]]:
    """``table=rtlog``: punches (lines with a user), rejected lines, and other events
    (door, alarm: kept as parsed fields). Never raises."""
    punches: list[Punch] = []
    rejected: list[Rejected] = []
    other: list[dict[str, str]] = []
    for line, too_long in _lines(body, MAX_ATTLOG_LINE, encoding):
        if not line.strip(_BLANK):
            continue
        if too_long:
            rejected.append(Rejected(source="rtlog", raw=line, reason=too_long))
            continue
        problem = _junk(_trim(line))
        # keys in any letter case (docs/protocols.md §A.10)
        fields = lower_keys(parse_key_values(_trim(line).strip(_BLANK)))
        if "time" in fields:
            fields["time"] = normal_timestamp(fields["time"])
        pin = fields.get("pin", "").strip()
        if problem is None and "time" in fields:
            if pin in RTLOG_NO_USER or not rtlog_is_punch(fields):
                other.append(fields)  # a door/alarm event: no punch (§A.5b)
                continue
        problem = problem or _pin_problem(pin) or _valid_timestamp(fields.get("time", ""))
        numbers: dict[str, int] = {}
        for key, default in (("inoutstatus", DEFAULT_STATUS), ("verifytype", DEFAULT_VERIFY)):
            value = fields.get(key, "").strip()
            if problem is None and value and not _INT.fullmatch(value):
                problem = f"non-numeric {key} {value[:20]!r}"
            numbers[key] = int(value) if problem is None and value else default
        if problem is not None:
            rejected.append(Rejected(source="rtlog", raw=_clip(line), reason=problem))
            continue
        raw: dict[str, Any] = {
            "user_id": pin,
            "timestamp": fields["time"],
            "status": numbers["inoutstatus"],
            "verify_method": numbers["verifytype"],
        }
        raw.update({k: v for k, v in fields.items() if k not in ("pin", "time")})
        punches.append(
            Punch(pin, fields["time"], numbers["inoutstatus"], numbers["verifytype"], raw=raw)
        )
    return punches, rejected, other


def registry_code(serial: str) -> str:
    """A stable registry code for a device (the terminal echoes it back later)."""
    return hashlib.sha256(f"zkserver:{serial}".encode()).hexdigest()[:16]


def format_push_config(
    serial: str, *, delay: int = 10, error_delay: int = 30, timezone_offset_minutes: int = 0
) -> str:
    """The reply to ``POST /iclock/push``: the 3.x terminal's communication settings."""
    lines = [
        "ServerVersion=3.1.2",
        "ServerName=zkserver",
        "PushVersion=3.1.2",
        f"ErrorDelay={error_delay}",
        f"RequestDelay={delay}",
        "TransTimes=00:00\t14:00",
        "TransInterval=1",
        "TransTables=User\tTransaction",
        "Realtime=1",
        f"SessionID={registry_code(serial)}",
        "TimeoutSec=10",
        f"TimeZone={timezone_value(timezone_offset_minutes)}",
    ]
    return "\n".join(lines) + "\n"
