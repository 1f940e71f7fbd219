"""Access-control and device events: the code tables and pure decoders.

Three stream event types come from here, alike for push and pull terminals
(docs/protocols.md §A.6):

- ``door``: ``door`` (number), ``event`` (opened, closed, forced_open, held_open,
  remote_open, exit_button, ...), ``user_id`` when known, ``code`` (the terminal's code);
- ``alarm``: ``alarm`` (tamper, duress, forced_open, ...), ``state``, ``code``, ``raw``
  (the payload in hex when it was not decoded);
- ``device_log``: ``operation`` (enrol, delete user, menu entered, ...), ``code``,
  ``operator``.

Sources: push 3.x ``rtlog`` lines and ``rtstate`` changes, push ``OPLOG`` lines, and the
pull real-time events EF_ALARM, EF_UNLOCK, EF_BUTTON, EF_ENROLLUSER, EF_ENROLLFINGER.
Nothing here imports a reactor; a decoder never raises on device input.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from typing import Any

from attrs import field, frozen

from zkserver.records import Device

__all__ = [
    "DeviceEvent",
    "RTLOG_DOOR_EVENTS",
    "RTLOG_ALARMS",
    "OPLOG_OPERATIONS",
    "RTSTATE_ALARM_BITS",
    "rtlog_event",
    "rtlog_is_punch",
    "rtstate_events",
    "oplog_event",
    "pull_event",
    "device_event_payload",
    "ACCESS_EVENT_TYPES",
    "PULL_EVENT_FLAGS",
]

ACCESS_EVENT_TYPES = ("door", "alarm", "device_log")


@frozen
class DeviceEvent:
    """One decoded door/alarm/device-log event, before it is tied to a device."""

    type: str  # "door" | "alarm" | "device_log"
    timestamp: str  # device local time, "YYYY-MM-DD HH:MM:SS" ("" when not sent)
    fields: dict[str, Any] = field(factory=dict, eq=False, hash=False)

    def payload(self, device: Device) -> dict[str, Any]:
        return device_event_payload(device, self)


def device_event_payload(device: Device, event: DeviceEvent) -> dict[str, Any]:
    """The stream payload: the common device fields, then the event's own."""
    return {
        "type": event.type,
        "device_id": device.id,
        "device_name": device.display_name,
        "serial_number": device.serial_number,
        "timestamp": event.timestamp,
        **event.fields,
    }


# --------------------------------------------------------------------------- push rtlog

#: rtlog ``event=`` codes that are door events -> ``event`` name (docs/protocols.md §A.5b).
RTLOG_DOOR_EVENTS: dict[int, str] = {
    0: "verified_open",
    1: "verified_open",  # during passage mode
    2: "first_person_open",
    3: "multi_person_open",
    4: "emergency_password_open",
    5: "passage_mode_open",
    8: "remote_open",
    9: "remote_close",
    20: "denied",  # interval too short
    21: "denied",  # door inactive time zone
    22: "denied",  # illegal time zone
    23: "denied",  # access denied
    24: "denied",  # anti-passback
    25: "denied",  # interlock
    27: "denied",  # unregistered person
    28: "held_open",
    29: "denied",  # person expired
    38: "denied",  # card reported lost
    39: "denied",  # blacklisted
    41: "denied",  # verify mode error
    102: "forced_open",
    200: "opened",
    201: "closed",
    202: "exit_button",
    204: "passage_mode_over",
    205: "remote_normal_open",
    208: "superuser_open",
    209: "exit_button",  # pressed, no unlock
}

#: Why a "denied" door event was denied.
RTLOG_DENIED_REASONS: dict[int, str] = {
    20: "interval_too_short",
    21: "door_inactive_time_zone",
    22: "illegal_time_zone",
    23: "access_denied",
    24: "anti_passback",
    25: "interlock",
    27: "unregistered_person",
    29: "person_expired",
    38: "card_reported_lost",
    39: "blacklisted",
    41: "verify_mode_error",
}

#: rtlog codes that are alarms -> (``alarm``, ``state``).
RTLOG_ALARMS: dict[int, tuple[str, str]] = {
    7: ("alarm", "cancelled"),
    100: ("tamper", "active"),
    101: ("duress", "active"),
    220: ("auxiliary_input", "disconnected"),
    221: ("auxiliary_input", "shorted"),
}

#: rtlog codes that are device events (-> ``device_log``).
RTLOG_DEVICE: dict[int, str] = {206: "device started"}


_INTEGER = re.compile(r"-?[0-9]+")


def _int(value: Any) -> int | None:
    """An ASCII integer (``str.isdigit`` also accepts "²" and "٣", which ``int`` refuses
    or reads as a code the terminal never sent)."""
    text = str(value if value is not None else "").strip()
    if _INTEGER.fullmatch(text):
        return int(text)
    return None


def rtlog_event(fields: Mapping[str, str]) -> DeviceEvent | None:
    """The door/alarm/device event of one parsed ``rtlog`` line, or None (a plain punch
    without an ``event=`` code)."""
    code = _int(fields.get("event"))
    if code is None:
        return None
    timestamp = str(fields.get("time", "")).strip()
    pin = str(fields.get("pin", "")).strip()
    user_id = pin if pin not in ("", "0") else None
    door = _int(fields.get("eventaddr"))
    if code in RTLOG_ALARMS:
        alarm, state = RTLOG_ALARMS[code]
        values: dict[str, Any] = {"alarm": alarm, "state": state, "code": code}
        if door is not None:
            values["door"] = door
        if user_id is not None:
            values["user_id"] = user_id
        return DeviceEvent("alarm", timestamp, values)
    if code in RTLOG_DEVICE:
        return DeviceEvent(
            "device_log",
            timestamp,
            {"operation": RTLOG_DEVICE[code], "code": code, "operator": user_id or ""},
        )
    if code in RTLOG_DOOR_EVENTS:
        values = {"door": door, "event": RTLOG_DOOR_EVENTS[code], "code": code}
        if code in RTLOG_DENIED_REASONS:
            values["reason"] = RTLOG_DENIED_REASONS[code]
        if user_id is not None:
            values["user_id"] = user_id
        for key in ("verifytype", "cardno", "inoutstatus"):
            if fields.get(key) not in (None, ""):
                values[key] = fields[key]
        return DeviceEvent("door", timestamp, values)
    # An unknown code: kept as a door event with its code (and the user, when there is one).
    values = {"door": door, "event": "other", "code": code}
    if user_id is not None:
        values["user_id"] = user_id
    return DeviceEvent("door", timestamp, values)


#: rtlog codes below 100 that let no person through (denials, held open, alarm cancelled,
#: remote open/close): a line with a user and one of these is no punch.
RTLOG_NO_PASSAGE = frozenset({*RTLOG_DENIED_REASONS, *RTLOG_ALARMS, 8, 9, 28})


def rtlog_is_punch(fields: Mapping[str, str]) -> bool:
    """Whether an rtlog line with a user is also a punch: no ``event=`` code (a plain
    attendance line), or a verification that let the person through (a code below 100,
    docs/protocols.md §A.5b). Alarms, forced opens, door states and denials are not."""
    code = _int(fields.get("event"))
    if code is None:
        return True
    return 0 <= code < 100 and code not in RTLOG_NO_PASSAGE


# --------------------------------------------------------------------------- push rtstate

#: ``alarm`` bits of an rtstate line (docs/protocols.md §A.5b).
RTSTATE_ALARM_BITS: dict[int, str] = {
    1: "forced_open",
    2: "tamper",
    4: "duress_password",
    8: "duress_fingerprint",
    16: "door_sensor",
}
_SENSOR = {1: "closed", 2: "opened"}


def _per_door(value: str | None) -> list[int] | None:
    """``sensor=0102`` -> [1, 2]: two hex digits per door, door 1 first."""
    text = (value or "").strip()
    if not text or len(text) % 2:
        return None
    try:
        return [int(text[i : i + 2], 16) for i in range(0, len(text), 2)]
    except ValueError:
        return None


def rtstate_events(
    previous: Mapping[str, str] | None, current: Mapping[str, str]
) -> list[DeviceEvent]:
    """Door and alarm events for what changed between two ``rtstate`` lines.

    The first state a device reports (``previous`` None or empty) is a baseline and makes
    no events, so a restart does not replay every door as "opened"."""
    if not previous:
        return []
    timestamp = str(current.get("time", "")).strip()
    events: list[DeviceEvent] = []
    before, after = _per_door(previous.get("sensor")), _per_door(current.get("sensor"))
    if before is not None and after is not None:
        for index, (old, new) in enumerate(zip(before, after, strict=False)):
            if old != new and new in _SENSOR:
                events.append(
                    DeviceEvent(
                        "door",
                        timestamp,
                        {"door": index + 1, "event": _SENSOR[new], "code": f"sensor={new}"},
                    )
                )
    before, after = _per_door(previous.get("alarm")), _per_door(current.get("alarm"))
    if before is not None and after is not None:
        for index, (old, new) in enumerate(zip(before, after, strict=False)):
            for bit, name in RTSTATE_ALARM_BITS.items():
                if (old ^ new) & bit:
                    events.append(
                        DeviceEvent(
                            "alarm",
                            timestamp,
                            {
                                "alarm": name,
                                "state": "active" if new & bit else "cleared",
                                "door": index + 1,
                                "code": f"alarm={bit}",
                            },
                        )
                    )
    return events


# --------------------------------------------------------------------------- push OPLOG

#: OPLOG operation codes -> ``operation`` (docs/protocols.md §A.9).
OPLOG_OPERATIONS: dict[int, str] = {
    0: "power on",
    1: "power off",
    2: "verification failed",
    3: "alarm",
    4: "menu entered",
    5: "settings changed",
    6: "fingerprint enrolled",
    7: "password enrolled",
    8: "card enrolled",
    9: "user deleted",
    10: "fingerprint deleted",
    11: "password deleted",
    12: "card deleted",
    13: "data cleared",
    21: "time set",
    23: "attendance log cleared",
    29: "door unlocked",
    30: "user enrolled",
    32: "duress alarm",
}


def oplog_event(entry: Mapping[str, Any]) -> DeviceEvent | None:
    """The ``device_log`` event of one parsed OPLOG line (``op`` an int); None for the
    other operation-log records (templates, pictures)."""
    code = entry.get("op")
    if not isinstance(code, int) or isinstance(code, bool):
        return None
    values: dict[str, Any] = {
        "operation": OPLOG_OPERATIONS.get(code, f"operation {code}"),
        "code": code,
        "operator": str(entry.get("operator", "")),
    }
    if entry.get("obj"):
        values["object"] = str(entry["obj"])
    extra = [str(v) for v in entry.get("values", []) if str(v) not in ("", "0")]
    if extra:
        values["values"] = extra
    return DeviceEvent("device_log", str(entry.get("timestamp", "")), values)


# --------------------------------------------------------------------------- pull events

EF_ENROLLUSER = 4
EF_ENROLLFINGER = 8
EF_BUTTON = 16
EF_UNLOCK = 32
EF_ALARM = 512

#: What the server registers for besides attendance (REG_EVENT flags).
PULL_EVENT_FLAGS = EF_ENROLLUSER | EF_ENROLLFINGER | EF_BUTTON | EF_UNLOCK | EF_ALARM

#: EF_ALARM 4-byte payloads: the first byte (docs/protocols.md §B.5).
PULL_ALARM_TYPES: dict[int, tuple[str, str, str]] = {
    0x3A: ("alarm", "misoperation", "active"),
    0x37: ("alarm", "tamper", "active"),
    0x35: ("door", "exit_button", ""),
}
#: EF_ALARM 12-byte payloads: the uint16 at offset 4.
PULL_DURESS_TYPES: dict[int, str] = {0x20: "duress", 0x22: "anti_passback"}
PULL_DOOR_CLOSED = 0x54


def pull_event(code: int, data: bytes, timestamp: str) -> DeviceEvent | None:
    """Decode a pull real-time event (command 500, ``code`` = the session field).

    ``timestamp`` is the device's local time when it was received (these payloads carry
    none). Returns None for codes that are not door/alarm/device events (attendance,
    finger, verify)."""
    raw = bytes(data).hex()
    if code == EF_ALARM:
        return _pull_alarm(bytes(data), raw, timestamp)
    if code == EF_UNLOCK:
        return DeviceEvent(
            "door", timestamp, {"door": 1, "event": "unlocked", "code": code, "raw": raw}
        )
    if code == EF_BUTTON:
        return DeviceEvent(
            "door", timestamp, {"door": 1, "event": "exit_button", "code": code, "raw": raw}
        )
    if code == EF_ENROLLFINGER:
        return _pull_enroll_finger(bytes(data), raw, timestamp)
    if code == EF_ENROLLUSER:
        values: dict[str, Any] = {"operation": "user enrolled", "code": code, "operator": ""}
        if len(data) >= 4:
            values["uid"] = struct.unpack_from("<I", data)[0]
        values["raw"] = raw
        return DeviceEvent("device_log", timestamp, values)
    return None


def _pull_alarm(data: bytes, raw: str, timestamp: str) -> DeviceEvent:
    if len(data) == 12 and data[:4] == b"\xff\xff\xff\xff":
        kind, user_sn, match = struct.unpack_from("<HHI", data, 4)
        name = PULL_DURESS_TYPES.get(kind)
        if name is not None:
            return DeviceEvent(
                "alarm",
                timestamp,
                {
                    "alarm": name,
                    "state": "active",
                    "code": EF_ALARM,
                    "alarm_type": kind,
                    "uid": user_sn,
                    "verify_method": match,
                },
            )
    if len(data) == 8 and data[0] == PULL_DOOR_CLOSED:
        return DeviceEvent(
            "door", timestamp, {"door": 1, "event": "closed", "code": EF_ALARM, "raw": raw}
        )
    if len(data) == 4 and data[0] in PULL_ALARM_TYPES:
        kind, name, state = PULL_ALARM_TYPES[data[0]]
        if kind == "door":
            return DeviceEvent(
                "door", timestamp, {"door": 1, "event": name, "code": EF_ALARM, "raw": raw}
            )
        return DeviceEvent(
            "alarm",
            timestamp,
            {"alarm": name, "state": state, "code": EF_ALARM, "alarm_type": data[0]},
        )
    return DeviceEvent(
        "alarm", timestamp, {"alarm": "unknown", "state": "active", "code": EF_ALARM, "raw": raw}
    )


def _pull_enroll_finger(data: bytes, raw: str, timestamp: str) -> DeviceEvent:
    values: dict[str, Any] = {
        "operation": "fingerprint enrolled",
        "code": EF_ENROLLFINGER,
        "operator": "",
    }
    if len(data) >= 2:
        result = struct.unpack_from("<H", data)[0]
        values["result"] = result
        if result != 0:
            values["operation"] = "fingerprint enrolment failed"
        elif len(data) >= 14:
            values["user_id"] = data[4:13].split(b"\0", 1)[0].decode("ascii", "replace")
            values["finger"] = data[13]
            values["size"] = struct.unpack_from("<H", data, 2)[0]
    values["raw"] = raw
    return DeviceEvent("device_log", timestamp, values)


def encode_pull_alarm(alarm_type: int) -> bytes:
    """A 4-byte EF_ALARM payload (the emulator's)."""
    return bytes([alarm_type & 0xFF, 0, 0, 0])
