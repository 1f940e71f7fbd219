"""The OpenAPI description of webhooks, the device log, alerts, ``/metrics`` and the
door/alarm/device_log/device_alert events (merged by :mod:`zkserver.web.openapi`)."""

from __future__ import annotations

from typing import Any

from zkserver.web.openapi import _error, _json, _nullable, _obj, _op, _query, _ref

__all__ = ["HOOK_SCHEMAS", "HOOK_EVENTS", "hook_paths"]

Schema = dict[str, Any]
_STR = {"type": "string"}
_INT = {"type": "integer"}
_DEVICE_FIELDS: dict[str, Schema] = {
    "device_id": _STR,
    "device_name": _STR,
    "serial_number": _STR,
    "timestamp": {"type": "string", "description": "Device local time as sent."},
}
_CODE = {"type": ["integer", "string"], "description": "The terminal's code."}

HOOK_EVENTS: dict[str, str] = {
    "door": "DoorEvent",
    "alarm": "AlarmEvent",
    "device_log": "DeviceLogEvent",
    "device_alert": "DeviceAlertEvent",
}

_WEBHOOK_FIELDS: dict[str, Schema] = {
    "url": {
        "type": "string",
        "format": "uri",
        "description": "http or https, without user:password@; not internal "
        "(loopback/private/link-local/metadata) unless --webhook-allow-private.",
    },
    "secret": {
        "type": "string",
        "minLength": 16,
        "maxLength": 200,
        "description": "HMAC key; generated when not given and shown once.",
    },
    "types": {"type": "array", "items": _STR, "description": "Event types; [] = all."},
    "devices": {"type": "array", "items": _STR, "description": "Serial numbers; [] = all."},
    "batch_max": {
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "default": 1,
        "description": "1: one event per POST; above 1: a JSON array of up to this many.",
    },
    "active": {"type": "boolean", "default": True},
    "description": {"type": "string", "maxLength": 500},
}

HOOK_SCHEMAS: dict[str, Schema] = {
    "FieldError": _obj(
        {
            "error": _STR,
            "field": {"type": "string", "description": "The JSON name."},
            "detail": _STR,
        },
    ),
    "Webhook": _obj(
        {
            "id": _INT,
            **{k: v for k, v in _WEBHOOK_FIELDS.items() if k != "secret"},
            "secret": {
                "type": "string",
                "description": "Only in the answer that created it (or that set it).",
            },
            "created_at": _STR,
            "updated_at": _STR,
        },
        required=["id", "url", "types", "devices", "batch_max", "active"],
    ),
    "WebhookCreate": {
        "type": "object",
        "properties": _WEBHOOK_FIELDS,
        "required": ["url"],
        "additionalProperties": False,
    },
    "WebhookUpdate": {
        "type": "object",
        "properties": _WEBHOOK_FIELDS,
        "additionalProperties": False,
    },
    "Delivery": _obj(
        {
            "id": _INT,
            "webhook_id": _INT,
            "event_id": _INT,
            "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
            "attempts": _INT,
            "last_attempt_at": _nullable("string"),
            "next_attempt_at": _nullable("string"),
            "response_code": _nullable("integer"),
            "error": _STR,
            "created_at": _STR,
        }
    ),
    "DeliveryPage": _obj(
        {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}},
            "next_cursor": _nullable("string"),
        }
    ),
    "PingResult": _obj(
        {
            "delivered": {"type": "boolean"},
            "response_code": _nullable("integer"),
            "error": _STR,
            "event_id": _STR,
        }
    ),
    "DeviceLogRow": _obj(
        {
            "id": _INT,
            "device_id": _STR,
            "op": {
                "type": "string",
                "description": "OPLOG code, rtlog:<event>, pull:<code>, "
                "or FP/FACE/USERPIC/BIODATA.",
            },
            "operator": _STR,
            "timestamp": _STR,
            "object": _STR,
            "values": {"type": "array", "items": _STR},
            "raw": _STR,
            "received_at": _STR,
        }
    ),
    "DeviceLogPage": _obj(
        {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/DeviceLogRow"}},
            "next_cursor": _nullable("string"),
        }
    ),
    "OpenAlert": _obj(
        {"device_id": _STR, "alert": _STR, "detail": _STR, "opened_at": _STR, "last_sent_at": _STR}
    ),
    "DoorEvent": _obj(
        {
            "type": {"type": "string", "const": "door"},
            **_DEVICE_FIELDS,
            "door": _nullable("integer"),
            "event": {
                "type": "string",
                "description": "opened, closed, forced_open, "
                "held_open, remote_open, exit_button, verified_open, denied, ...",
            },
            "user_id": _STR,
            "code": _CODE,
        },
        required=["type", "device_id", "serial_number", "timestamp", "event", "code"],
        additionalProperties=True,
    ),
    "AlarmEvent": _obj(
        {
            "type": {"type": "string", "const": "alarm"},
            **_DEVICE_FIELDS,
            "alarm": {"type": "string", "description": "tamper, duress, forced_open, ..."},
            "state": {"type": "string", "description": "active, cleared, cancelled, ..."},
            "code": _CODE,
            "raw": {"type": "string", "description": "The payload in hex when undecoded."},
        },
        required=["type", "device_id", "serial_number", "timestamp", "alarm", "state", "code"],
        additionalProperties=True,
    ),
    "DeviceLogEvent": _obj(
        {
            "type": {"type": "string", "const": "device_log"},
            **_DEVICE_FIELDS,
            "operation": {"type": "string", "description": "menu entered, user deleted, ..."},
            "code": _CODE,
            "operator": _STR,
        },
        required=[
            "type",
            "device_id",
            "serial_number",
            "timestamp",
            "operation",
            "code",
            "operator",
        ],
        additionalProperties=True,
    ),
    "DeviceAlertEvent": _obj(
        {
            "type": {"type": "string", "const": "device_alert"},
            **_DEVICE_FIELDS,
            "timestamp": {
                "type": "string",
                "description": "When the server saw the change, in the device's local time"
                " (its zone, else --timezone, else the server's): YYYY-MM-DD HH:MM:SS.",
            },
            "timestamp_utc": {
                "type": "string",
                "description": "The same instant in UTC: YYYY-MM-DDTHH:MM:SSZ.",
            },
            "alert": {"type": "string", "enum": ["silent", "storage", "users", "clock"]},
            "state": {"type": "string", "enum": ["open", "recovered"]},
            "detail": _STR,
        },
        required=["type", "device_id", "serial_number", "timestamp", "alert", "state", "detail"],
    ),
}

_WEBHOOK_ID = {
    "name": "webhook_id",
    "in": "path",
    "required": True,
    "schema": _STR,
    "description": "The subscription's id.",
}
_DELIVERY_ID = {"name": "delivery_id", "in": "path", "required": True, "schema": _STR}


def _bad(description: str = "Invalid field (named in field and detail).") -> Schema:
    return _json(description, _ref("FieldError"))


def hook_paths() -> dict[str, Any]:
    body = lambda name: {"required": True, "content": {"application/json": {"schema": _ref(name)}}}  # noqa: E731
    missing = {"404": _error("No such webhook.")}
    return {
        "/api/webhooks": {
            "post": _op(
                "add_webhook",
                "Subscribe a URL to events (secret shown once).",
                "webhooks",
                {"201": _json("Created.", _ref("Webhook")), "400": _bad()},
                body=body("WebhookCreate"),
            ),
            "get": _op(
                "list_webhooks",
                "Every subscription (without secrets).",
                "webhooks",
                {"200": _json("Subscriptions.", {"type": "array", "items": _ref("Webhook")})},
            ),
        },
        "/api/webhooks/{webhook_id}": {
            "parameters": [_WEBHOOK_ID],
            "get": _op(
                "get_webhook",
                "One subscription.",
                "webhooks",
                {"200": _json("The subscription.", _ref("Webhook")), **missing},
            ),
            "patch": _op(
                "update_webhook",
                "Change a subscription.",
                "webhooks",
                {"200": _json("Updated.", _ref("Webhook")), "400": _bad(), **missing},
                body=body("WebhookUpdate"),
            ),
            "delete": _op(
                "delete_webhook",
                "Remove a subscription and its deliveries.",
                "webhooks",
                {"200": _json("Removed.", {"type": "object"}), **missing},
            ),
        },
        "/api/webhooks/{webhook_id}/deliveries": {
            "parameters": [_WEBHOOK_ID],
            "get": _op(
                "webhook_deliveries",
                "The delivery log, newest first.",
                "webhooks",
                {"200": _json("Deliveries.", _ref("DeliveryPage")), "400": _bad(), **missing},
                parameters=[
                    _query(
                        "status",
                        "pending, delivered or failed.",
                        {"type": "string", "enum": ["pending", "delivered", "failed"]},
                    ),
                    _query("limit", "Page size (1-1000, default 100).", _INT),
                    _query("cursor", "next_cursor of the previous page."),
                ],
            ),
        },
        "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/retry": {
            "parameters": [_WEBHOOK_ID, _DELIVERY_ID],
            "post": _op(
                "retry_delivery",
                "Send a delivery again now (pending, new give-up window).",
                "webhooks",
                {"200": _json("Pending again.", _ref("Delivery")), **missing},
            ),
        },
        "/api/webhooks/{webhook_id}/test": {
            "parameters": [_WEBHOOK_ID],
            "post": _op(
                "test_webhook",
                'POST one signed {"type": "ping"} event now.',
                "webhooks",
                {"200": _json("What the endpoint answered.", _ref("PingResult")), **missing},
            ),
        },
        "/api/device-log": {
            "get": _op(
                "device_log",
                "The operation log the devices reported, newest first.",
                "devices",
                {"200": _json("Rows.", _ref("DeviceLogPage")), "400": _bad()},
                parameters=[
                    _query("device_id", "One device."),
                    _query(
                        "type",
                        "oplog (OPLOG lines), rtlog (door/alarm lines), biometric.",
                        {"type": "string", "enum": ["oplog", "rtlog", "biometric"]},
                    ),
                    _query("since", "Device local time, inclusive."),
                    _query("until", "Device local time, inclusive (a date: that whole day)."),
                    _query("limit", "Page size (1-1000, default 100).", _INT),
                    _query("cursor", "next_cursor of the previous page."),
                ],
            ),
        },
        "/api/alerts": {
            "get": _op(
                "open_alerts",
                "Device health alerts open now.",
                "devices",
                {"200": _json("Open alerts.", {"type": "array", "items": _ref("OpenAlert")})},
                parameters=[_query("device_id", "One device.")],
            ),
        },
        "/metrics": {
            "get": _op(
                "metrics",
                "Prometheus metrics (text format; no token with --metrics-public).",
                "operation",
                {
                    "200": {
                        "description": "Prometheus text exposition.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            ),
        },
    }
