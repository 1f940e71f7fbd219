"""The event contract dashboards depend on, and its SSE encoding.

An :class:`Event` is what the broadcaster sends: an id (monotonic, assigned by the
database at commit), a type, and the JSON payload of ``shared/design.md``. The SSE
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
    "encode_frame",
    "encode_comment",
]


@frozen
class Event:
    """One committed event: ``id`` is its position in the stream."""

    id: int
    type: str
    payload: dict[str, Any]
    serial_number: str = ""
    frame: bytes = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "frame", encode_frame(self.id, self.payload))


def encode_frame(event_id: int, payload: dict[str, Any]) -> bytes:
    """One SSE message: ``id:`` and a single-line JSON ``data:``."""
    data = json.dumps(payload, ensure_ascii=False, separators=(", ", ": "))
    return f"id: {event_id}\ndata: {data}\n\n".encode()


def encode_comment(text: str) -> bytes:
    """An SSE comment line (ignored by clients, keeps proxies open)."""
    return f": {text}\n\n".encode()


def attendance_payload(device: Device, punch: Punch) -> dict[str, Any]:
    """The ``attendance`` event for one punch, identical for push and pull devices."""
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
    }


def device_status_payload(device: Device, status: str, last_seen: str | None) -> dict[str, Any]:
    """A ``device_status`` event: online, offline, pending, auth_failed, ..."""
    return {
        "type": "device_status",
        "device_id": device.id,
        "device_name": device.display_name,
        "serial_number": device.serial_number,
        "kind": device.kind,
        "status": status,
        "last_seen": last_seen,
    }
