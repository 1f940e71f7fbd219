"""Row mapping: database rows to records (Device, Command, Event) and page cursors."""

from __future__ import annotations

import base64
import binascii
import json

from zkserver.events import Event
from zkserver.records import Command, Device, DeviceUser
from zkserver.store.dialect import Row

__all__ = [
    "COMMAND_COLS",
    "DEVICE_COLS",
    "DEVICE_FIELDS",
    "EVENT_COLS",
    "command_from_row",
    "decode_cursor",
    "device_from_row",
    "display_name",
    "encode_cursor",
    "event_from_row",
    "user_sort_key",
]

DEVICE_COLS = (
    "id, serial_number, name, kind, status, approved, timezone, host, port, comm_key,"
    " transport, last_seen, info, created_at, clock_offset_s, suspect_punches, status_detail,"
    " encoding"
)
COMMAND_COLS = (
    "id, device_id, command, status, return_code, result, created_at, sent_at, finished_at"
)
EVENT_COLS = "id, type, payload, serial_number"
DEVICE_FIELDS = frozenset(
    {
        "name",
        "timezone",
        "status",
        "approved",
        "host",
        "port",
        "comm_key",
        "transport",
        "serial_number",
        "last_seen",
        "info",
        "clock_offset_s",
        "status_detail",
        "encoding",
    }
)


def device_from_row(row: Row) -> Device:
    return Device(
        id=row[0],
        serial_number=row[1],
        name=row[2],
        kind=row[3],
        status=row[4],
        approved=bool(row[5]),
        timezone=row[6],
        host=row[7],
        port=int(row[8]),
        comm_key=int(row[9]),
        transport=row[10],
        last_seen=row[11],
        info=json.loads(row[12] or "{}"),
        created_at=row[13],
        clock_offset_s=None if row[14] is None else int(row[14]),
        suspect_punches=int(row[15] or 0),
        status_detail=row[16],
        encoding=row[17] or "",
    )


def command_from_row(row: Row) -> Command:
    return Command(
        id=str(row[0]),
        device_id=row[1],
        command=row[2],
        status=row[3],
        return_code=row[4],
        result=row[5],
        created_at=row[6],
        sent_at=row[7],
        finished_at=row[8],
    )


def event_from_row(row: Row) -> Event:
    return Event(int(row[0]), row[1], json.loads(row[2]), row[3], data=row[2])


def display_name(name: str | None, kind: str | None, serial_number: str) -> str:
    if name:
        return name
    if kind is None:  # the device was deleted; its punches stay
        return serial_number
    label = "Push Device" if kind == "push" else "Pull Device"
    return f"{label} {serial_number}" if serial_number else label


def encode_cursor(timestamp: str, punch_id: int) -> str:
    raw = json.dumps([timestamp, punch_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    """Raise ValueError for anything :func:`encode_cursor` did not produce."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        timestamp, punch_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as e:
        raise ValueError(f"invalid cursor: {cursor[:60]!r}") from e
    if (
        not isinstance(timestamp, str)
        or not isinstance(punch_id, int)
        or isinstance(punch_id, bool)
        or not 0 <= punch_id < 1 << 63  # no punch has another id (a database bigint)
    ):
        raise ValueError(f"invalid cursor: {cursor[:60]!r}")
    return timestamp, punch_id


def user_sort_key(user: DeviceUser) -> tuple[int, int, str]:
    uid = user.user_id
    return (0, int(uid), uid) if uid.isdigit() else (1, 0, uid)
