"""Log formats for ``twistd --logger``: human text is twistd's default; JSON on request.

    twistd -n --logger=zkserver.logs.json_observer zkserver ...

writes one JSON object per line to standard output (for journald or a log shipper)::

    {"time": "2026-11-29T13:40:12.345Z", "level": "info", "namespace": "zkserver.tap",
     "message": "Database ready (last event id 42)", "last": 42}

``time`` is ISO-8601 UTC, ``level`` one of debug/info/warn/error/critical, ``message`` the
rendered text; then the event's own fields. A failure adds ``traceback``. Twisted's own
keys (``log_*`` and those of its legacy API) are left out.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import ILogObserver, LogEvent, formatEvent
from zope.interface import implementer

__all__ = ["JSONLineObserver", "json_observer"]

#: Keys of Twisted's legacy logging API (twisted.python.log), not the event's own fields.
_LEGACY_KEYS = frozenset({"message", "isError", "system", "format", "why", "failure", "time"})
#: The keys every line starts with; an event field of the same name cannot replace them.
_CORE = ("time", "level", "namespace", "message")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        return str(value)
    except Exception:
        return object.__repr__(value)


def _jsonable(value: Any) -> Any:
    """``value`` if it serialises as JSON, else its text."""
    try:
        json.dumps(value, default=_text)
        return value
    except Exception:
        return _text(value)


def _message(event: LogEvent) -> str:
    if event.get("log_format") is None and "message" in event:
        legacy = event["message"]
        if isinstance(legacy, tuple | list):
            return " ".join(_text(part) for part in legacy)
        return _text(legacy)
    return formatEvent(event)


def _level(event: LogEvent) -> str:
    level = event.get("log_level")
    if level is not None:
        return str(getattr(level, "name", level))
    return "error" if event.get("isError") else "info"


def _timestamp(event: LogEvent) -> str:
    when = event.get("log_time", event.get("time"))
    if not isinstance(when, int | float):
        when = datetime.now(UTC).timestamp()
    stamp = datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def event_record(event: LogEvent) -> dict[str, Any]:
    """The JSON object written for one event."""
    record: dict[str, Any] = {
        "time": _timestamp(event),
        "level": _level(event),
        "namespace": _text(event.get("log_namespace") or event.get("system") or "-"),
        "message": _message(event),
    }
    failure = event.get("log_failure", event.get("failure"))
    if failure is not None and hasattr(failure, "getTraceback"):
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:
            record["traceback"] = _text(failure)
    for key, value in event.items():
        key = _text(key)
        if key.startswith("log_") or key in _LEGACY_KEYS or key in record:
            continue
        record[key] = _jsonable(value)
    return record


@implementer(ILogObserver)
class JSONLineObserver:
    """Writes each event as one line of JSON to ``out``."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, event: LogEvent) -> None:
        try:
            line = json.dumps(event_record(event), default=_text, ensure_ascii=False)
        except Exception as e:  # never lose the line: keep what is certain
            line = json.dumps(
                {
                    "time": _timestamp(event),
                    "level": "error",
                    "namespace": "zkserver.logs",
                    "message": f"unloggable event: {e!r}",
                }
            )
        self.out.write(line + "\n")
        self.out.flush()


def json_observer() -> JSONLineObserver:
    """The ``--logger`` factory: JSON lines on standard output."""
    return JSONLineObserver(sys.stdout)
