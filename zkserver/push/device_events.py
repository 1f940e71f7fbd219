"""Door, alarm and device-log events of push terminals (zkserver.access decodes them):
``table=rtlog`` door/alarm lines (with or without a user), ``table=rtstate`` changes and
OPLOG lines. Each comes with its operation-log entry so a resent upload makes no second
event (the store keeps an entry once and makes the events of new entries only)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from zkserver.access import oplog_event, rtlog_event, rtstate_events
from zkserver.records import Device, Punch

__all__ = ["oplog_items", "rtlog_items", "rtstate_items"]

Item = tuple[dict[str, Any] | None, dict[str, Any] | None]
_PUNCH_KEYS = ("user_id", "timestamp", "status", "verify_method")


def oplog_items(device: Device, oplogs: Sequence[dict[str, Any]]) -> list[Item]:
    """OPLOG entries with their ``device_log`` events."""
    items: list[Item] = []
    for entry in oplogs:
        event = oplog_event(entry)
        items.append((entry, event.payload(device) if event is not None else None))
    return items


def rtlog_items(
    device: Device,
    punches: Sequence[Punch],
    other: Sequence[Mapping[str, str]],
    entry_of: Callable[[dict[str, str]], dict[str, Any]],
) -> list[Item]:
    """rtlog lines that are no punch (no user, or a code that let no one through: kept in
    the operation log with their door/alarm event) and the door events of punches with
    an ``event=`` code (a verified opening, an unknown code: the punch stays a punch)."""
    items: list[Item] = []
    for fields in other:
        event = rtlog_event(fields)
        items.append((entry_of(dict(fields)), event.payload(device) if event else None))
    for punch in punches:
        fields = {k: str(v) for k, v in punch.raw.items() if k not in _PUNCH_KEYS}
        if "event" not in fields:
            continue
        fields = {"time": punch.timestamp, "pin": punch.user_id, **fields}
        event = rtlog_event(fields)
        if event is not None:
            items.append((entry_of(fields), event.payload(device)))
    return items


def rtstate_items(
    device: Device, previous: Mapping[str, str] | None, current: Mapping[str, str]
) -> list[Item]:
    """Door and alarm events for what changed since the state the device sent before."""
    return [(None, event.payload(device)) for event in rtstate_events(previous, current)]
