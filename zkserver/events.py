"""The event contract dashboards depend on, and its SSE encoding.

An :class:`Event` is what the broadcaster sends: an id (monotonic, assigned by the
database at commit), a type, and its JSON payload (README.md, "The event stream"). The SSE
frame is encoded once per event and shared by every client.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import field, frozen

from zkserver.records import Device, Punch

__all__ = [
    "Event",
    "attendance_payload",
    "device_status_payload",
    "user_sync_payload",
    "encode_payload",
    "encode_comment",
]


@frozen
class Event:
    """One committed event: ``id`` is its position in the stream.

    ``data`` is the payload's JSON text when the store already has it (as written to or
    read from the database), so the SSE frame is built without encoding it again.
    """

    id: int
    type: str
    payload: dict[str, Any]
    serial_number: str = ""
    data: str | None = field(default=None, eq=False, repr=False)
    frame: bytes = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        text = self.data if self.data is not None else encode_payload(self.payload)
        object.__setattr__(self, "frame", f"id: {self.id}\ndata: {text}\n\n".encode())


def encode_payload(payload: dict[str, Any]) -> str:
    """The one JSON form of a payload: compact, UTF-8 as is, one line."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)


def encode_comment(text: str) -> bytes:
    """An SSE comment line (ignored by clients, keeps proxies open)."""
    return f": {text}\n\n".encode()


def attendance_payload(device: Device, punch: Punch) -> dict[str, Any]:
    """The ``attendance`` event for one punch, identical for push and pull devices.

    ``timestamp_utc``, ``time_ambiguous`` and ``suspect_time`` are added fields (the
    documented ones are unchanged): the instant of the punch (``None`` when unknown),
    whether its local time was ambiguous (a daylight-saving overlap or gap), and why its
    time is suspect (``None`` when fine).
    """
    return {
        "type": "attendance",
        "device_id": device.id,
        "device_name": device.display_name,
        "serial_number": device.serial_number,
        "user_id": punch.user_id,
        "timestamp": punch.timestamp,
        "action": punch.status,
        "method": punch.verify,
        "raw_data": dict(punch.raw)
        or {
            "user_id": punch.user_id,
            "timestamp": punch.timestamp,
            "status": punch.status,
            "verify_method": punch.verify,
        },
        "timestamp_utc": punch.timestamp_utc or None,
        "time_ambiguous": punch.time_ambiguous,
        "suspect_time": punch.suspect_time,
    }


def device_status_payload(device: Device, status: str, last_seen: str | None) -> dict[str, Any]:
    """A ``device_status`` event: online, offline, pending, auth_failed, ...; with
    ``status_detail``, why (the device's, None when all is well)."""
    return {
        "type": "device_status",
        "device_id": device.id,
        "device_name": device.display_name,
        "serial_number": device.serial_number,
        "kind": device.kind,
        "status": status,
        "last_seen": last_seen,
        "status_detail": device.status_detail,
    }


def user_sync_payload(device: Device, user_ids: list[str]) -> dict[str, Any]:
    """A ``user_sync`` event: a device reported its users (push OPERLOG, pull read)."""
    return {
        "type": "user_sync",
        "device_id": device.id,
        "device_name": device.display_name,
        "serial_number": device.serial_number,
        "count": len(user_ids),
        "user_ids": user_ids[:100],
        "operation": "upload",
    }
