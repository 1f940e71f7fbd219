"""``--logger=zkserver.logs.json_observer``: one JSON object per line for log shippers."""

from __future__ import annotations

import io
import json
from datetime import datetime

from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from zkserver.logs import JSONLineObserver, json_observer


def emit(observer: JSONLineObserver, namespace: str = "zkserver.test") -> Logger:
    return Logger(namespace=namespace, observer=observer)


def lines(out: io.StringIO) -> list[dict]:
    text = out.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_one_line_per_event_with_time_level_namespace_message_and_fields():
    out = io.StringIO()
    log = emit(JSONLineObserver(out))
    log.info("Punch from {serial} at {when}", serial="SN1", when="08:00", count=3)
    log.warn("Database unavailable: {error}", error="locked\nreally")
    first, second = lines(out)
    assert first["level"] == "info" and second["level"] == "warn"
    assert first["namespace"] == "zkserver.test"
    assert first["message"] == "Punch from SN1 at 08:00"
    assert second["message"] == "Database unavailable: locked\nreally"
    assert first["serial"] == "SN1" and first["when"] == "08:00" and first["count"] == 3
    time = datetime.fromisoformat(first["time"])
    assert time.utcoffset() is not None and time.utcoffset().total_seconds() == 0
    assert first["time"].endswith("Z") or first["time"].endswith("+00:00")
    for record in (first, second):
        assert not [key for key in record if key.startswith("log_")], record


def test_failures_keep_the_traceback_and_odd_values_are_text():
    out = io.StringIO()
    log = emit(JSONLineObserver(out))
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        log.failure("Periodic job {what} failed", what="presence")
    log.info("Odd {value}", value=object(), data=b"\xff", nested={"a": {1, 2}})
    failed, odd = lines(out)
    assert failed["level"] == "critical"
    assert failed["message"] == "Periodic job presence failed"
    assert "ZeroDivisionError" in failed["traceback"]
    assert odd["message"].startswith("Odd <object object")
    assert isinstance(odd["value"], str) and isinstance(odd["data"], str)


def test_legacy_and_broken_format_events_still_give_one_line():
    out = io.StringIO()
    observer = JSONLineObserver(out)
    observer(
        {
            "log_format": "missing {key}",
            "log_level": LogLevel.info,
            "log_time": 0.0,
            "log_namespace": "x",
        }
    )
    observer({"message": ("old", "style"), "isError": 0, "log_time": 1.5, "system": "-"})
    observer(
        {
            "log_failure": Failure(ValueError("boom")),
            "log_time": 2.0,
            "log_level": LogLevel.error,
            "log_format": "{log_failure}",
        }
    )
    records = lines(out)
    assert len(records) == 3
    assert records[1]["message"] == "old style"
    assert records[1]["time"].startswith("1970-01-01T00:00:01.5")
    assert "boom" in records[2]["traceback"]


def test_json_observer_writes_to_stdout(capsys):
    observer = json_observer()
    globalLogPublisher.addObserver(observer)
    try:
        Logger(namespace="zkserver.test").info("hello {name}", name="world")
    finally:
        globalLogPublisher.removeObserver(observer)
    out = capsys.readouterr().out
    record = json.loads([line for line in out.splitlines() if "hello" in line][0])
    assert record["message"] == "hello world" and record["name"] == "world"
