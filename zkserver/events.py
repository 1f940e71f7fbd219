"""The event contract dashboards depend on, and its SSE encoding.

An :class:`Event` is what the broadcaster sends: an id (monotonic, assigned by the
database at commit), a type, and its JSON payload (README.md, "The event stream"). The SSE
frame is encoded once per event and shared by every client.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

from attrs import field, frozen

from zkserver.records import Device, Punch

__all__ = [
    "Event",
    "attendance_payload",
    "attendance_encoder",
    "device_status_payload",
    "user_sync_payload",
    "encode_payload",
    "encode_comment",
    "one_line",
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
        # The stored text of events saved before separators were escaped may hold them.
        text = one_line(self.data) if self.data is not None else encode_payload(self.payload)
        object.__setattr__(self, "frame", f"id: {self.id}\ndata: {text}\n\n".encode())


#: One encoder for every payload (``json.dumps`` with options builds a new one per call).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)

#: Characters JSON leaves raw (with ``ensure_ascii=False``) that line-splitting clients
#: read as a line end (Python's ``str.splitlines``; NEL in ECMA-48) or that JavaScript
#: before ES2019 refuses in a string literal: escaped, the ``data:`` line stays one line.
_SEPARATORS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def one_line(text: str) -> str:
    """JSON text with U+0085, U+2028 and U+2029 escaped (the same JSON value: raw, they can
    only be inside strings). ASCII text, nearly every event, is returned at once."""
    if text.isascii():
        return text
    return text.translate(_SEPARATORS)


def encode_payload(payload: dict[str, Any]) -> str:
    """The one JSON form of a payload: compact, UTF-8 as is (line separators escaped),
    one line."""
    return one_line(_ENCODER.encode(payload))


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


def attendance_encoder(device: Device) -> Callable[[Punch, str], tuple[dict[str, Any], str]]:
    """For a batch of one device's punches: ``encode(punch, raw_text)`` gives the punch's
    :func:`attendance_payload` and its JSON text, exactly ``encode_payload(payload)``,
    where ``raw_text`` is ``encode_payload(punch.raw)`` (the store has it already: it is
    the punch's ``raw`` column).

    About three times faster than encoding the payload (ingest does it for every punch):
    the device's fields are encoded once per batch, the raw fields are not encoded
    again, and the punch's own fields are joined by hand. A punch whose fields are not
    of the plain types (or without raw fields) takes the general path."""
    head = encode_payload(attendance_payload(device, Punch("", "", 0, 0)))
    head = head[: head.index('"user_id":')]  # '{"type":...,"serial_number":"...",'

    def encode(punch: Punch, raw_text: str) -> tuple[dict[str, Any], str]:
        payload = attendance_payload(device, punch)
        status, verify = punch.status, punch.verify
        utc, ambiguous, suspect = punch.timestamp_utc, punch.time_ambiguous, punch.suspect_time
        if not (
            punch.raw
            and type(punch.user_id) is str
            and type(punch.timestamp) is str
            and type(status) is int
            and type(verify) is int
            and type(utc) is str
            and type(ambiguous) is bool
            and (suspect is None or type(suspect) is str)
        ):
            return payload, encode_payload(payload)
        text = (
            f"{head}"
            f'"user_id":{encode_basestring(punch.user_id)},'
            f'"timestamp":{encode_basestring(punch.timestamp)},'
            f'"action":{status},"method":{verify},"raw_data":{raw_text},'
            f'"timestamp_utc":{encode_basestring(utc) if utc else "null"},'
            f'"time_ambiguous":{"true" if ambiguous else "false"},'
            f'"suspect_time":{"null" if suspect is None else encode_basestring(suspect)}}}'
        )
        return payload, one_line(text)

    return encode


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
