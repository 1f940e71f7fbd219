"""The OpenAPI 3.1 description of the web listener (served at ``GET /api/openapi.json``).

Written by hand next to :mod:`zkserver.web.app`; ``tests/web/test_openapi.py`` checks that
every route there is documented here and that nothing documented here is missing there.
"""

from __future__ import annotations

import copy
from typing import Any

from zkserver import __version__
from zkserver.commands.spec import COMMAND_TYPES, STATUSES

__all__ = ["openapi_document"]

JSON = "application/json"
COMMAND_TYPE_NAMES = list(COMMAND_TYPES)
COMMAND_STATUSES = list(STATUSES)
Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **extra: Any) -> Schema:
    return {"type": [kind, "null"], **extra}


def _obj(properties: dict[str, Schema], required: list[str] | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **extra}
    schema["required"] = list(properties) if required is None else required
    return schema


RAW_PUNCH = _obj(
    {
        "user_id": {"type": "string"},
        "timestamp": {"type": "string"},
        "status": {"type": "integer"},
        "verify_method": {"type": "integer"},
    },
    required=["user_id", "timestamp"],
    additionalProperties=True,
    description="What the device sent for this punch, parsed into its fields.",
)

TIME_FIELDS: dict[str, Schema] = {
    "timestamp_utc": _nullable(
        "string",
        description="The instant of the punch, ISO 8601 with Z: from the terminal's stated "
        "time_offset, else the device's zone (a repeated local hour takes the earlier "
        "instant, a skipped one the offset before the change); null when unknown.",
        examples=["2026-03-29T01:30:00Z"],
    ),
    "time_ambiguous": {
        "type": "boolean",
        "description": "The local time fell in a daylight-saving overlap or gap.",
    },
    "suspect_time": _nullable(
        "string",
        description="Why the time is suspect (beyond --max-future / --max-past), else null.",
        examples=["future: 3600 s ahead of the server clock"],
    ),
}

_ENCODING: Schema = {
    "type": "string",
    "maxLength": 40,
    "description": "The text encoding of the terminal's names: '' automatic (UTF-8, else GBK,"
    " else latin-1; names written as UTF-8), or a codec such as cp1252 (Western Europe),"
    " cp1250, cp1251 (Cyrillic), cp1254, cp1256, cp874, gbk, big5, utf-8. Stored under its"
    " canonical name (windows-1252 is cp1252); a codec that is not ASCII-compatible text"
    " (base64, rot13, utf-16) is refused (400, field encoding). docs/protocols.md §A.2, §B.4.",
    "examples": ["", "cp1252"],
}

_STATUS_DETAIL = _nullable(
    "string",
    description="Why the device is not (fully) working, for an operator; null when all is"
    " well (always for push devices). Pull devices: 'CONNECT answered 6001', 'wrong comm"
    " key', 'connection refused', 'timed out after 10 s', 'host unreachable', 'broken frame:"
    " ...', 'connection reset by the device', 'dataset unreadable: ...' (the device stays"
    " online; the dataset is kept in /api/rejected).",
)


SCHEMAS: dict[str, Schema] = {
    "Error": _obj(
        {
            "error": {"type": "string", "description": "What went wrong, for people."},
            "detail": {"type": "string"},
            "field": {
                "type": "string",
                "description": "The JSON field or query parameter at fault, when there is one.",
            },
        },
        required=["error"],
    ),
    "Status": _obj({"status": {"type": "string", "const": "ok"}}),
    "Health": _obj(
        {
            "status": {
                "type": "string",
                "enum": ["ok", "error", "starting"],
                "description": "'starting' (503) until the database is migrated at start-up.",
            },
            "database": {"type": "string", "description": "'ok' or the error."},
            "clients": {"type": "integer", "description": "Open event streams."},
            "last_event_id": {"type": "integer"},
            "published": {"type": "integer"},
        },
        required=["status", "database"],
    ),
    "Stats": _obj(
        {
            "clients": {"type": "integer", "description": "Open event streams."},
            "last_event_id": {"type": "integer"},
            "published": {"type": "integer", "description": "Events published by this process."},
        },
        additionalProperties=True,
    ),
    "Login": _obj({"token": {"type": "string", "description": "The operator token."}}),
    "Device": _obj(
        {
            "id": {"type": "string", "format": "uuid"},
            "serial_number": {"type": "string"},
            "name": {
                "type": "string",
                "description": "Configured name, else 'Push Device <SN>' / 'Pull Device <SN>'.",
            },
            "kind": {"type": "string", "enum": ["push", "pull"]},
            "status": {
                "type": "string",
                "description": "pending, online, offline, auth_failed, rejected, or rebooting"
                " (a pull terminal told to restart, until it is back).",
                "examples": ["online"],
            },
            "approved": {"type": "boolean"},
            "timezone": {"type": "string", "description": "IANA name or offset; '' = server's."},
            "host": {"type": "string", "description": "Pull devices: address."},
            "port": {"type": "integer"},
            "transport": {"type": "string", "enum": ["tcp", "udp"]},
            "has_comm_key": {"type": "boolean"},
            "last_seen": _nullable("string", description="UTC time of last contact."),
            "info": {
                "type": "object",
                "additionalProperties": True,
                "description": "Firmware, user/record counts, ... as the device reported.",
            },
            "created_at": _nullable("string"),
            "clock_offset_s": _nullable(
                "integer",
                description="How far the terminal's clock is ahead of the server's (negative: "
                "behind), in seconds; null until measured (pull: idle probe; push: median "
                "over recent real-time punches of punch instant minus receipt time).",
            ),
            "suspect_punches": {
                "type": "integer",
                "description": "How many of its punches had a suspect_time.",
            },
            "status_detail": _STATUS_DETAIL,
            "encoding": _ENCODING,
        }
    ),
    "DeviceCreate": {
        "type": "object",
        "properties": {
            "kind": {"type": "string", "enum": ["push", "pull"], "default": "push"},
            "serial_number": {
                "type": "string",
                "pattern": "^[A-Za-z0-9_.-]{1,64}$",
                "description": "Required for push devices, optional for pull devices.",
            },
            "name": {"type": "string", "maxLength": 200},
            "timezone": {"type": "string"},
            "host": {"type": "string", "description": "Required for pull devices."},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 4370},
            "comm_key": {"type": "integer", "minimum": 0, "maximum": 999999999, "default": 0},
            "transport": {"type": "string", "enum": ["tcp", "udp"], "default": "tcp"},
            "encoding": {**_ENCODING, "default": ""},
        },
        "additionalProperties": False,
    },
    "DeviceUpdate": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 200},
            "timezone": {"type": "string"},
            "host": {"type": "string", "description": "Pull devices only."},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "comm_key": {"type": "integer", "minimum": 0, "maximum": 999999999},
            "transport": {"type": "string", "enum": ["tcp", "udp"]},
            "encoding": _ENCODING,
        },
        "additionalProperties": False,
    },
    "Deleted": _obj({"deleted": {"type": "string", "description": "The removed device's id."}}),
    "CommandSpec": {
        "type": "object",
        "description": (
            "A typed command: type and its fields at the top level. reboot, sync_time, info,"
            " query_users: no fields. check, set_option, raw: push terminals only."
            " clear_log, clear_data: confirm (must be true). set_option: key, value."
            " open_door: seconds (1-254, default 3; pull terminals only use it)."
            " user_upsert: user_id (1-24 letters/digits), name, privilege (0, 2, 6, 14),"
            " password, card, group. user_delete: user_id. query_attlog: since, until"
            " (YYYY-MM-DD HH:MM:SS, device local time). enroll_finger: user_id, finger (0-9)."
            " template_upsert: user_id, kind (finger/face/biodata/userpic), index, format"
            " (algorithm version, e.g. '10'), valid, data (base64). raw: command (one line,"
            " sent as given). A body without type but with a command string is raw."
        ),
        "properties": {
            "type": {"type": "string", "enum": COMMAND_TYPE_NAMES},
            "confirm": {"type": "boolean"},
            "key": {"type": "string"},
            "value": {"type": "string"},
            "seconds": {"type": "integer", "minimum": 1, "maximum": 254},
            "user_id": {"type": "string", "pattern": "^[A-Za-z0-9]{1,24}$"},
            "name": {"type": "string", "maxLength": 24},
            "privilege": {"type": "integer", "enum": [0, 2, 6, 14]},
            "password": {"type": "string", "maxLength": 8},
            "card": {"type": "string"},
            "group": {"type": "string"},
            "since": {"type": "string"},
            "until": {"type": "string"},
            "finger": {"type": "integer", "minimum": 0, "maximum": 9},
            "kind": {"type": "string", "enum": ["finger", "face", "biodata", "userpic"]},
            "index": {"type": "integer"},
            "format": {"type": "string"},
            "valid": {"type": "integer"},
            "data": {"type": "string", "contentEncoding": "base64"},
            "command": {"type": "string", "description": "raw: the line, as given."},
        },
        "additionalProperties": False,
    },
    "CommandCreate": {
        "oneOf": [
            _ref("CommandSpec"),
            _obj({"command": _ref("CommandSpec")}),
        ],
    },
    "CommandBatchCreate": _obj(
        {
            "command": _ref("CommandSpec"),
            "device_ids": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "all": {
                "type": "boolean",
                "description": "Every approved device (pending and rejected ones left out).",
            },
            "kind": {"type": ["string", "null"], "enum": ["push", "pull", None]},
        },
        required=["command"],
        additionalProperties=False,
    ),
    "Command": _obj(
        {
            "id": {"type": "string"},
            "device_id": {"type": "string"},
            "batch_id": _nullable("string"),
            "type": {"type": "string"},
            "command": {
                "type": "string",
                "description": "The iclock line sent to a push terminal ('' for pull; long"
                " lines are shortened here).",
            },
            "status": {"type": "string", "enum": COMMAND_STATUSES},
            "attempts": {"type": "integer", "description": "Times sent (0: never)."},
            "return_code": _nullable("integer"),
            "result": {"type": "string", "description": "The device's answer, in words."},
            "queued_at": _nullable("string"),
            "sent_at": _nullable("string"),
            "finished_at": _nullable("string"),
            "expires_at": _nullable("string"),
            "created_at": _nullable("string", description="Same as queued_at."),
        },
        required=["id", "device_id", "type", "status", "attempts", "queued_at"],
        additionalProperties=True,
        description="A command and what became of it; the type's fields are at the top level.",
    ),
    "CommandBatch": _obj(
        {
            "batch_id": {"type": "string"},
            "commands": {"type": "array", "items": _ref("Command")},
            "skipped": {
                "type": "array",
                "items": _obj({"device_id": {"type": "string"}, "reason": {"type": "string"}}),
                "description": "Devices whose kind cannot do the type, and why.",
            },
        }
    ),
    "CommandPage": _obj(
        {
            "items": {"type": "array", "items": _ref("Command")},
            "next_cursor": _nullable("string"),
        }
    ),
    "DeviceUser": _obj(
        {
            "user_id": {"type": "string"},
            "name": {"type": "string"},
            "privilege": {"type": "integer"},
            "card": {"type": "string"},
            "group": {"type": "string"},
            "uid": _nullable("integer", description="Pull devices' internal slot number."),
        }
    ),
    "PullResult": {
        "type": "object",
        "additionalProperties": True,
        "description": "What the pull-device operation reported.",
    },
    "AttendanceRow": _obj(
        {
            "id": {"type": ["integer", "string"]},
            "device_id": {"type": "string"},
            "device_name": {"type": "string"},
            "serial_number": {"type": "string"},
            "user_id": {"type": "string"},
            "user_name": _nullable("string"),
            "timestamp": {"type": "string", "description": "Device local time as sent."},
            "action": {"type": "integer"},
            "method": {"type": "integer"},
            "workcode": _nullable("string"),
            "photo_id": _nullable("integer"),
            "received_at": _nullable("string"),
            **TIME_FIELDS,
        },
        required=["id", "device_id", "serial_number", "user_id", "timestamp", "action", "method"],
        additionalProperties=True,
    ),
    "AttendancePage": _obj(
        {
            "items": {"type": "array", "items": _ref("AttendanceRow")},
            "next_cursor": _nullable("string", description="Pass as ?cursor= for the next page."),
        }
    ),
    "Rejected": _obj(
        {
            "id": {"type": "integer"},
            "serial_number": {"type": "string"},
            "source": {"type": "string", "description": "ATTLOG, OPERLOG, cdata, pull, ..."},
            "raw": {"type": "string"},
            "reason": {"type": "string"},
            "received_at": {"type": "string"},
        }
    ),
    "AttendanceEvent": _obj(
        {
            "type": {"type": "string", "const": "attendance"},
            "device_id": {"type": "string", "format": "uuid"},
            "device_name": {"type": "string"},
            "serial_number": {"type": "string"},
            "user_id": {"type": "string"},
            "timestamp": {"type": "string", "description": "Device local time as sent."},
            "action": {
                "type": "integer",
                "description": "0 in, 1 out, 2 break-start, 3 break-end, 4/5 overtime, "
                "255 undefined (as sent).",
            },
            "method": {
                "type": "integer",
                "description": "Verify method as sent (push: 1 fingerprint, 4 card, 15 face).",
            },
            "raw_data": RAW_PUNCH,
            **TIME_FIELDS,
        },
        required=[
            "type",
            "device_id",
            "device_name",
            "serial_number",
            "user_id",
            "timestamp",
            "action",
            "method",
            "raw_data",
        ],
        examples=[
            {
                "type": "attendance",
                "device_id": "bfa24841-4582-4a28-ae79-5b49f1d3d31f",
                "device_name": "Push Device PYA8252300166",
                "serial_number": "PYA8252300166",
                "user_id": "1001",
                "timestamp": "2025-10-09 18:30:45",
                "action": 0,
                "method": 15,
                "raw_data": {
                    "user_id": "1001",
                    "timestamp": "2025-10-09 18:30:45",
                    "status": 0,
                    "verify_method": 15,
                },
                "timestamp_utc": "2025-10-09T13:00:45Z",
                "time_ambiguous": False,
                "suspect_time": None,
            }
        ],
    ),
    "DayRow": _obj(
        {
            "user_id": {"type": "string"},
            "name": _nullable(
                "string", description="From the people registry, else the device users."
            ),
            "date": {"type": "string", "format": "date", "description": "Device-local day."},
            "first": {"type": "string", "description": "Device-local time of the first punch."},
            "last": {"type": "string", "description": "Device-local time of the last punch."},
            "first_utc": _nullable("string"),
            "last_utc": _nullable("string"),
            "first_action": {"type": "integer"},
            "last_action": {"type": "integer"},
            "punches": {"type": "integer", "description": "How many punches."},
            "devices": {"type": "array", "items": {"type": "string"}},
            "span_minutes": {"type": "integer", "description": "Last minus first, elapsed."},
            "states_consistent": _nullable(
                "boolean",
                description="First punch in (0/4) and last out (1/5); null for one punch.",
            ),
        },
        required=[
            "user_id",
            "name",
            "date",
            "first",
            "last",
            "punches",
            "devices",
            "span_minutes",
            "states_consistent",
        ],
    ),
    "Days": _obj(
        {
            "from": {"type": "string", "format": "date"},
            "to": {"type": "string", "format": "date"},
            "day_starts_at": {"type": "string", "description": "--day-starts-at, HH:MM."},
            "default_timezone": {
                "type": "string",
                "description": "The zone of a device without its own (--timezone, else the"
                " server's): an IANA name or a fixed offset such as +05:30; empty when it"
                " has no name (then a viewer takes its own date for such devices).",
            },
            "items": {"type": "array", "items": _ref("DayRow")},
        }
    ),
    "DeviceStatusEvent": _obj(
        {
            "type": {"type": "string", "const": "device_status"},
            "device_id": {"type": "string"},
            "device_name": {"type": "string"},
            "serial_number": {"type": "string"},
            "kind": {"type": "string", "enum": ["push", "pull"]},
            "status": {"type": "string", "description": "online, offline, pending, ..."},
            "last_seen": _nullable("string"),
            "status_detail": _STATUS_DETAIL,
        },
        required=["type", "device_id", "serial_number", "status", "last_seen"],
    ),
    "UserSyncEvent": _obj(
        {
            "type": {"type": "string", "const": "user_sync"},
            "device_id": {"type": "string"},
            "device_name": {"type": "string"},
            "serial_number": {"type": "string"},
            "count": {"type": "integer"},
            "user_ids": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
            "operation": {
                "type": "string",
                "enum": ["upload", "upsert", "delete"],
                "description": "upload: the terminal reported its users (count, user_ids); "
                "upsert/delete: a registry person's state on the device changed (user_id, "
                "state, detail, command_ids).",
            },
            "user_id": {"type": "string"},
            "state": {"type": "string", "enum": ["in_step", "pending", "failed"]},
            "detail": {"type": "string"},
            "command_ids": {"type": "array", "items": {"type": "string"}},
        },
        required=["type", "device_id", "serial_number"],
    ),
    "CommandResultEvent": _obj(
        {
            "type": {"type": "string", "const": "command_result"},
            "device_id": {"type": "string"},
            "serial_number": {"type": "string"},
            "command_id": {"type": "string"},
            "command": {"type": "string"},
            "status": {"type": "string"},
            "return_code": _nullable("integer"),
        },
        required=["type", "device_id", "serial_number"],
        description=(
            "An alias kept for older dashboards: sent with every done or failed "
            "command_status (prefer command_status)."
        ),
    ),
    "CommandStatusEvent": _obj(
        {
            "type": {"type": "string", "const": "command_status"},
            "command_id": {"type": "string"},
            "batch_id": _nullable("string"),
            "device_id": {"type": "string"},
            "serial_number": {"type": "string"},
            "command_type": {"type": "string"},
            "status": {"type": "string", "enum": COMMAND_STATUSES},
            "attempts": {"type": "integer"},
            "return_code": _nullable("integer"),
            "result": {"type": "string"},
        },
        required=["type", "command_id", "device_id", "serial_number", "command_type", "status"],
        description="One per status change of a command, push and pull alike.",
    ),
    "Event": {
        "description": (
            "The JSON in one SSE message's data: line. Every message also carries an "
            "increasing id: line. Clients must ignore unknown types."
        ),
        "oneOf": [
            _ref("AttendanceEvent"),
            _ref("DeviceStatusEvent"),
            _ref("UserSyncEvent"),
            _ref("CommandResultEvent"),
            _ref("CommandStatusEvent"),
        ],
        "discriminator": {
            "propertyName": "type",
            "mapping": {
                "attendance": "#/components/schemas/AttendanceEvent",
                "device_status": "#/components/schemas/DeviceStatusEvent",
                "user_sync": "#/components/schemas/UserSyncEvent",
                "command_result": "#/components/schemas/CommandResultEvent",
                "command_status": "#/components/schemas/CommandStatusEvent",
            },
        },
    },
}

SECURITY_SCHEMES: dict[str, Schema] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer TOKEN (the token in DATA_DIR/token or --token).",
    },
    "cookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": "zkserver_session",
        "description": "The session cookie set by POST /api/session.",
    },
    "queryToken": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "?token=TOKEN, for EventSource, which cannot set headers.",
    },
}

PUBLIC: list[dict[str, list[str]]] = []  # security override for unauthenticated operations


def _error(description: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": _ref("Error")}}}


def _json(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _query(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _body(name: str, required: bool = True) -> Schema:
    return {"required": required, "content": {JSON: {"schema": _ref(name)}}}


def _op(
    operation_id: str,
    summary: str,
    tag: str,
    responses: dict[str, Schema],
    *,
    public: bool = False,
    parameters: list[Schema] | None = None,
    body: Schema | None = None,
    device: bool = False,
) -> Schema:
    """One operation; authenticated ones get 401 and 503, device ones 404."""
    op: Schema = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    all_responses = dict(responses)
    if device:
        all_responses.setdefault("404", _error("No such device."))
    if public:
        op["security"] = PUBLIC
    else:
        all_responses.setdefault("401", _error("Missing or wrong token."))
    all_responses.setdefault("503", _error("Database unavailable."))
    op["responses"] = all_responses
    return op


COMMAND_ID = {
    "name": "command_id",
    "in": "path",
    "required": True,
    "description": "The command's id.",
    "schema": {"type": "string"},
}
DEVICE_ID = {
    "name": "device_id",
    "in": "path",
    "required": True,
    "description": "The server's id for the device.",
    "schema": {"type": "string"},
}
ATTENDANCE_FILTERS = [
    _query("device_id", "Only this device's punches."),
    _query("user_id", "Only this user's punches."),
    _query(
        "since",
        "Inclusive. ISO 8601 with an offset or Z (an instant, e.g. 2026-03-29T03:30:00+02:00), "
        "or a device-local time or date (YYYY-MM-DD[ HH:MM:SS], each device's own zone).",
    ),
    _query("until", "Inclusive; as since (a local date means its end)."),
]
DATE = {"type": "string", "format": "date"}
DAY_FILTERS = [
    _query("from", "First device-local day, YYYY-MM-DD (required).", DATE),
    _query(
        "to", "Last day, YYYY-MM-DD (default: from; at most 366 days; before 9999-12-31).", DATE
    ),
    _query("user_id", "Only this person."),
    _query("device_id", "Only punches from this device."),
]
LIMIT = _query(
    "limit", "Rows per page.", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
)


def _pull_op(name: str, summary: str) -> Schema:
    return _op(
        name.replace("-", "_"),
        summary,
        "pull devices",
        {
            "200": _json("What the device reported.", _ref("PullResult")),
            "409": _error("Not a pull device."),
            "502": _error("The device did not answer or failed."),
            "503": _error("Database unavailable, or pull devices disabled on this server."),
        },
        device=True,
    )


def _paths() -> dict[str, Schema]:
    device_list = {"type": "array", "items": _ref("Device")}
    return {
        "/": {
            "get": _op(
                "monitor_page",
                "The monitoring page (static files below / as well).",
                "page",
                {"200": {"description": "HTML", "content": {"text/html": {}}}},
                public=True,
            )
        },
        "/healthz": {
            "get": _op(
                "healthz",
                "Liveness and database check (no token).",
                "operation",
                {
                    "200": _json("Healthy.", _ref("Health")),
                    "503": _json(
                        "Database unreachable, or starting (status 'starting', also"
                        " error 'starting') until the database is migrated.",
                        _ref("Health"),
                    ),
                },
                public=True,
            )
        },
        "/api/openapi.json": {
            "get": _op(
                "openapi",
                "This document (no token).",
                "operation",
                {"200": _json("OpenAPI 3.1 document.", {"type": "object"})},
                public=True,
            )
        },
        "/devices/events": {
            "get": {
                **_op(
                    "device_events",
                    "Live events as Server-Sent Events, with replay from Last-Event-ID.",
                    "events",
                    {
                        "200": {
                            "description": (
                                "A text/event-stream. Each message is 'id: N' and one "
                                "'data: <JSON Event>' line; ': ping' comments keep idle "
                                "connections open. Reconnecting with Last-Event-ID replays "
                                "every missed event before live ones."
                            ),
                            "headers": {
                                "Cache-Control": {"schema": {"type": "string", "const": "no-cache"}}
                            },
                            "content": {
                                "text/event-stream": {
                                    "schema": {"type": "string"},
                                    "x-event-schema": _ref("Event"),
                                }
                            },
                        }
                    },
                    parameters=[
                        _query(
                            "type",
                            "Comma-separated event types to receive (default all); the "
                            "parameter may also be repeated.",
                        ),
                        _query(
                            "device",
                            "Comma-separated serial numbers or device ids (default all); "
                            "the parameter may also be repeated.",
                        ),
                        _query(
                            "last_event_id",
                            "Replay events after this id (as the Last-Event-ID header, "
                            "which wins when both are given).",
                            {"type": "integer", "minimum": 0},
                        ),
                        _query(
                            "lastEventId",
                            "The same as last_event_id (the name EventSource polyfills use).",
                            {"type": "integer", "minimum": 0},
                        ),
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "description": "Replay events after this id.",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                    ],
                ),
            }
        },
        "/api/session": {
            "post": _op(
                "login",
                "Exchange the token for a session cookie (HttpOnly, SameSite=Strict).",
                "session",
                {
                    "200": {
                        **_json("Logged in; the cookie is set.", _ref("Status")),
                        "headers": {"Set-Cookie": {"schema": {"type": "string"}}},
                    },
                    "400": _error("Invalid JSON."),
                    "401": _error("Wrong token."),
                },
                public=True,
                body=_body("Login"),
            ),
            "delete": _op(
                "logout",
                "Clear the session cookie.",
                "session",
                {"200": _json("Logged out.", _ref("Status"))},
                public=True,
            ),
            "get": _op(
                "session",
                "Check that the caller is authenticated.",
                "session",
                {"200": _json("Authenticated.", _ref("Status"))},
            ),
        },
        "/api/devices": {
            "get": _op(
                "list_devices",
                "Every device, oldest first.",
                "devices",
                {"200": _json("Devices.", device_list)},
                parameters=[
                    _query("kind", "push or pull.", {"type": "string", "enum": ["push", "pull"]})
                ],
            ),
            "post": _op(
                "add_device",
                "Add an (approved) push or pull device.",
                "devices",
                {
                    "201": _json("Added.", _ref("Device")),
                    "400": _error("Invalid field."),
                    "409": _error("Serial number already known."),
                    "413": _error("Body too large."),
                },
                body=_body("DeviceCreate"),
            ),
        },
        "/api/devices/{device_id}": {
            "parameters": [DEVICE_ID],
            "get": _op(
                "get_device",
                "One device.",
                "devices",
                {"200": _json("The device.", _ref("Device"))},
                device=True,
            ),
            "patch": _op(
                "update_device",
                "Change a device's settings.",
                "devices",
                {"200": _json("Updated.", _ref("Device")), "400": _error("Invalid field.")},
                body=_body("DeviceUpdate"),
                device=True,
            ),
            "put": _op(
                "replace_device",
                "Same as PATCH.",
                "devices",
                {"200": _json("Updated.", _ref("Device")), "400": _error("Invalid field.")},
                body=_body("DeviceUpdate"),
                device=True,
            ),
            "delete": _op(
                "delete_device",
                "Remove a device (its punches stay).",
                "devices",
                {"200": _json("Removed.", _ref("Deleted"))},
                device=True,
            ),
        },
        "/api/devices/{device_id}/approve": {
            "parameters": [DEVICE_ID],
            "post": _op(
                "approve_device",
                "Approve a pending device.",
                "devices",
                {"200": _json("Approved.", _ref("Device"))},
                device=True,
            ),
        },
        "/api/devices/{device_id}/reject": {
            "parameters": [DEVICE_ID],
            "post": _op(
                "reject_device",
                "Reject a device (no data exchange).",
                "devices",
                {"200": _json("Rejected.", _ref("Device"))},
                device=True,
            ),
        },
        "/api/devices/{device_id}/commands": {
            "parameters": [DEVICE_ID],
            "post": _op(
                "queue_command",
                "Queue a typed command for a device.",
                "commands",
                {
                    "201": _json("Queued.", _ref("Command")),
                    "400": _error("Invalid command; field names the JSON field at fault."),
                    "409": _error("The device is pending or rejected."),
                    "413": _error("Larger than a push terminal's 900 KiB reply."),
                    "422": _error("This kind of device cannot do this (pull: finger templates)."),
                },
                body=_body("CommandCreate"),
                device=True,
            ),
            "get": _op(
                "list_commands",
                "A device's commands, newest first.",
                "commands",
                {"200": _json("Commands.", {"type": "array", "items": _ref("Command")})},
                parameters=[LIMIT],
                device=True,
            ),
        },
        "/api/commands": {
            "post": _op(
                "queue_batch",
                "Send one typed command to many devices.",
                "commands",
                {
                    "201": _json("Queued, one command per device.", _ref("CommandBatch")),
                    "400": _error("Invalid command or body."),
                    "404": _error("A device in device_ids does not exist."),
                    "409": _error("A device in device_ids is pending or rejected."),
                    "413": _error("Larger than a push terminal's 900 KiB reply."),
                    "422": _error("No device can do this type."),
                },
                body=_body("CommandBatchCreate"),
            ),
            "get": _op(
                "all_commands",
                "Commands across devices, newest first.",
                "commands",
                {
                    "200": _json("A page of commands.", _ref("CommandPage")),
                    "400": _error("Invalid status or cursor."),
                },
                parameters=[
                    _query("batch_id", "Only this batch."),
                    _query("device_id", "Only this device's commands."),
                    _query(
                        "status",
                        "Only commands in this status.",
                        {"type": "string", "enum": COMMAND_STATUSES},
                    ),
                    LIMIT,
                    _query("cursor", "next_cursor of the previous page."),
                ],
            ),
        },
        "/api/commands/{command_id}": {
            "parameters": [COMMAND_ID],
            "get": _op(
                "get_command",
                "One command.",
                "commands",
                {"200": _json("The command.", _ref("Command")), "404": _error("No such command.")},
            ),
            "delete": _op(
                "cancel_command",
                "Cancel a command that is still queued.",
                "commands",
                {
                    "200": _json("Cancelled.", _ref("Command")),
                    "404": _error("No such command."),
                    "409": _error("Not queued any more."),
                },
            ),
        },
        "/api/devices/{device_id}/sync-time": {
            "parameters": [DEVICE_ID],
            "post": _pull_op("sync-time", "Set a pull device's clock."),
        },
        "/api/devices/{device_id}/read-users": {
            "parameters": [DEVICE_ID],
            "post": _pull_op("read-users", "Read a pull device's users."),
        },
        "/api/devices/{device_id}/read-log": {
            "parameters": [DEVICE_ID],
            "post": _pull_op("read-log", "Read a pull device's attendance log now."),
        },
        "/api/devices/{device_id}/users": {
            "parameters": [DEVICE_ID],
            "get": _op(
                "device_users",
                "Users known on a device.",
                "devices",
                {"200": _json("Users.", {"type": "array", "items": _ref("DeviceUser")})},
                device=True,
            ),
        },
        "/api/attendance": {
            "get": _op(
                "attendance",
                "Punches, newest first, one page at a time.",
                "attendance",
                {
                    "200": _json("A page.", _ref("AttendancePage")),
                    "400": _error("Invalid parameter."),
                },
                parameters=[*ATTENDANCE_FILTERS, _query("cursor", "From next_cursor."), LIMIT],
            )
        },
        "/api/attendance.csv": {
            "get": _op(
                "attendance_csv",
                "Every matching punch as CSV.",
                "attendance",
                {
                    "200": {
                        "description": "CSV with a header row.",
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    }
                },
                parameters=list(ATTENDANCE_FILTERS),
            )
        },
        "/api/days": {
            "get": _op(
                "days",
                "One row per person per device-local day (--day-starts-at), by date, then user id.",
                "attendance",
                {"200": _json("The days.", _ref("Days")), "400": _error("Invalid parameter.")},
                parameters=list(DAY_FILTERS),
            )
        },
        "/api/days.csv": {
            "get": _op(
                "days_csv",
                "The same rows as CSV (devices space-separated).",
                "attendance",
                {
                    "200": {
                        "description": "CSV with a header row.",
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    },
                    "400": _error("Invalid parameter."),
                },
                parameters=list(DAY_FILTERS),
            )
        },
        "/api/rejected": {
            "get": _op(
                "rejected",
                "Input the server could not use, newest first.",
                "attendance",
                {
                    "200": _json("Rejected input.", {"type": "array", "items": _ref("Rejected")}),
                    "400": _error("Invalid parameter."),
                },
                parameters=[_query("serial_number", "Only this device's."), LIMIT],
            )
        },
        "/api/photos/{photo_id}": {
            "get": _op(
                "photo",
                "An attendance photo.",
                "attendance",
                {
                    "200": {
                        "description": "JPEG.",
                        "content": {
                            "image/jpeg": {
                                "schema": {"type": "string", "contentMediaType": "image/jpeg"}
                            }
                        },
                    },
                    "404": _error("No such photo."),
                },
                parameters=[
                    {
                        "name": "photo_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer"},
                    }
                ],
            )
        },
        "/api/stats": {
            "get": _op(
                "stats",
                "Event stream counters.",
                "operation",
                {"200": _json("Counters.", _ref("Stats"))},
            )
        },
    }


def openapi_document() -> dict[str, Any]:
    """A fresh OpenAPI 3.1 document (a new dict each call: callers may change it)."""
    from zkserver.web.openapi_hooks import HOOK_EVENTS, HOOK_SCHEMAS, hook_paths
    from zkserver.web.openapi_persons import PERSON_SCHEMAS, person_paths

    schemas = {**SCHEMAS, **HOOK_SCHEMAS, **PERSON_SCHEMAS}
    event = schemas["Event"] = copy.deepcopy(SCHEMAS["Event"])
    for kind, name in HOOK_EVENTS.items():
        event["oneOf"].append(_ref(name))
        event["discriminator"]["mapping"][kind] = f"#/components/schemas/{name}"
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "zkserver",
                "version": __version__,
                "description": (
                    "Real-time attendance from ZKTeco time clocks. Every operation needs the "
                    "operator token (bearer header, ?token= or the session cookie) unless "
                    'marked otherwise. Errors are JSON: {"error": "..."}.'
                ),
            },
            "security": [{"bearer": []}, {"cookie": []}, {"queryToken": []}],
            "paths": {**_paths(), **hook_paths(), **person_paths()},
            "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
        }
    )
