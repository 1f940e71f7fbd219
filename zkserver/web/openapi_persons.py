"""The OpenAPI description of the person registry (merged by :mod:`zkserver.web.openapi`)."""

from __future__ import annotations

from typing import Any

from zkserver.web.openapi import _error, _json, _obj, _op, _query, _ref

__all__ = ["PERSON_SCHEMAS", "person_paths"]

Schema = dict[str, Any]
_STR = {"type": "string"}
_INT = {"type": "integer"}
JSON = "application/json"

_DEVICES = {
    "oneOf": [
        {"type": "string", "const": "all"},
        {"type": "array", "items": _STR, "maxItems": 1000},
    ],
    "description": 'The devices this person must be on: "all" or device ids.',
}
_PERSON_IN: dict[str, Schema] = {
    "user_id": {
        "type": "string",
        "pattern": "^[A-Za-z0-9]{1,24}$",
        "description": "The PIN, unique across the site.",
    },
    "name": {
        "type": "string",
        "maxLength": 24,
        "description": "No TAB or newline; a 28-byte-layout pull terminal takes 8 bytes.",
    },
    "card": {"type": "string", "pattern": "^[0-9]{0,10}$"},
    "password": {"type": "string", "maxLength": 8, "writeOnly": True},
    "privilege": {
        "type": "integer",
        "enum": [0, 2, 6, 14],
        "description": "0 user, 2 registrar, 6 admin, 14 super admin.",
    },
    "group": {"type": "string", "maxLength": 7},
    "active": {"type": "boolean", "default": True},
    "devices": _DEVICES,
    "notes": {"type": "string", "maxLength": 2000},
}
_SYNC_ENTRY = _obj(
    {
        "device_id": _STR,
        "device_name": _STR,
        "serial_number": _STR,
        "operation": {"type": "string", "enum": ["upsert", "delete"]},
        "state": {"type": "string", "enum": ["in_step", "pending", "failed"]},
        "command_ids": {"type": "array", "items": _STR},
        "detail": {
            "type": "string",
            "description": "Why it failed, and the templates skipped (and why).",
        },
        "updated_at": _STR,
    },
    required=["device_id", "state", "command_ids", "detail"],
)
_TEMPLATE_FIELDS: dict[str, Schema] = {
    "kind": {"type": "string", "enum": ["finger", "face", "palm", "userpic", "biophoto"]},
    "index": {
        "type": "integer",
        "minimum": 0,
        "maximum": 255,
        "description": "Finger 0-9, or the face/palm number.",
    },
    "format": {"type": "string", "description": "The algorithm version (e.g. 10, 12)."},
    "valid": {"type": "integer", "minimum": 0, "maximum": 3, "default": 1},
    "duress": {"type": "integer", "minimum": 0, "maximum": 1, "default": 0},
}

PERSON_SCHEMAS: dict[str, Schema] = {
    "PersonCreate": _obj(_PERSON_IN, required=["user_id"]),
    "PersonChange": _obj({k: v for k, v in _PERSON_IN.items() if k != "user_id"}),
    "Person": _obj(
        {
            **{k: v for k, v in _PERSON_IN.items() if k != "password"},
            "has_password": {"type": "boolean"},
            "origin": {
                "type": "string",
                "description": "Where the last change came from: api, csv, "
                "import:<device id>, or the device id of a terminal.",
            },
            "origin_at": _STR,
            "created_at": _STR,
            "updated_at": _STR,
        },
        required=["user_id", "name", "has_password", "privilege", "active", "devices"],
    ),
    "PersonPage": _obj(
        {
            "items": {"type": "array", "items": _ref("Person")},
            "next_cursor": {"type": ["string", "null"]},
        },
        required=["items", "next_cursor"],
    ),
    "PersonError": _obj(
        {
            "error": _STR,
            "field": {"type": "string", "description": "The JSON name."},
            "detail": _STR,
            "device_id": {"type": "string", "description": "The device the value does not fit."},
        },
        required=["error", "field", "detail"],
    ),
    "PersonSync": _obj(
        {"user_id": _STR, "devices": {"type": "array", "items": _SYNC_ENTRY}},
        required=["user_id", "devices"],
    ),
    "TemplateCreate": _obj(
        {**_TEMPLATE_FIELDS, "data": {"type": "string", "contentEncoding": "base64"}},
        required=["kind", "data"],
    ),
    "PersonTemplate": _obj(
        {
            "template_id": _STR,
            "user_id": _STR,
            **_TEMPLATE_FIELDS,
            "size": _INT,
            "digest": _STR,
            "source": {
                "type": "string",
                "description": "FP, FACE, BIODATA, USERPIC, BIOPHOTO, pull or api.",
            },
            "source_device": _STR,
            "received_at": _STR,
            "current": {
                "type": "boolean",
                "description": "The newest of its (person, kind, index).",
            },
        },
        required=["template_id", "kind", "index", "format", "size", "digest"],
    ),
    "PersonTemplateData": {
        "allOf": [
            _ref("PersonTemplate"),
            _obj({"data": {"type": "string", "contentEncoding": "base64"}}, required=["data"]),
        ]
    },
    "PersonImport": _obj({"from_device": _STR}, required=["from_device"]),
    "PersonImportReport": _obj(
        {
            "device_id": _STR,
            "imported": _INT,
            "unchanged": _INT,
            "conflicts": _INT,
            "errors": _INT,
            "templates": _INT,
            "rows": {
                "type": "array",
                "items": _obj(
                    {
                        "user_id": _STR,
                        "status": {
                            "type": "string",
                            "enum": ["imported", "unchanged", "conflict", "error"],
                        },
                        "field": _STR,
                        "detail": _STR,
                    },
                    required=["user_id", "status"],
                ),
            },
        },
        required=["imported", "conflicts", "rows"],
    ),
    "PersonCsvResult": _obj(
        {
            "error": _STR,
            "detail": _STR,
            "added": _INT,
            "changed": _INT,
            "applied": _INT,
            "errors": {
                "type": "array",
                "items": _obj(
                    {
                        "row": {"type": "integer", "description": "1 is the header."},
                        "user_id": _STR,
                        "field": _STR,
                        "detail": _STR,
                        "device_id": {"type": ["string", "null"]},
                    },
                    required=["row", "field", "detail"],
                ),
            },
        },
        required=["applied", "errors"],
    ),
    "PersonSyncResult": _obj(
        {"device_id": _STR, "persons": _INT, "queued": _INT, "failed": _INT},
        required=["device_id", "persons", "queued", "failed"],
    ),
}


def _path(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": _STR,
    }


USER_ID = _path("user_id", "The person's PIN.")
TEMPLATE_ID = _path("template_id", "The template's id.")
DEVICE_ID = _path("device_id", "The server's id for the device.")


def _body(name: str) -> Schema:
    return {"required": True, "content": {JSON: {"schema": _ref(name)}}}


def _bad() -> Schema:
    return {
        "description": "A field is not right (named in field; device_id when it does "
        "not fit that device).",
        "content": {JSON: {"schema": _ref("PersonError")}},
    }


def person_paths() -> dict[str, Any]:
    tag = "persons"
    missing = {"404": _error("No such person.")}
    csv_body = {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}
    return {
        "/api/persons": {
            "get": _op(
                "list_persons",
                "Persons by PIN, searched and paged.",
                tag,
                {
                    "200": _json("A page of persons.", _ref("PersonPage")),
                    "400": _error("Bad limit."),
                },
                parameters=[
                    _query("q", "Part of the name or PIN (any case)."),
                    _query("device_id", "Only persons who must be on this device."),
                    _query("limit", "Rows per page (1-1000, default 100).", _INT),
                    _query("cursor", "next_cursor of the previous page."),
                ],
            ),
            "post": _op(
                "add_person",
                "Add a person; they are sent to their devices.",
                tag,
                {
                    "201": _json("Added.", _ref("Person")),
                    "400": _bad(),
                    "409": _error("A person with this PIN exists."),
                },
                body=_body("PersonCreate"),
            ),
        },
        "/api/persons/{user_id}": {
            "parameters": [USER_ID],
            "get": _op(
                "get_person",
                "One person (never the password).",
                tag,
                {"200": _json("The person.", _ref("Person")), **missing},
            ),
            "patch": _op(
                "update_person",
                "Change a person; the change is sent to their devices.",
                tag,
                {"200": _json("Changed.", _ref("Person")), "400": _bad(), **missing},
                body=_body("PersonChange"),
            ),
            "delete": _op(
                "delete_person",
                "Remove a person everywhere (user_delete on each device).",
                tag,
                {
                    "200": _json(
                        "Removed; the deletes queued.",
                        _obj({"deleted": _STR, "sync": {"type": "array", "items": _SYNC_ENTRY}}),
                    ),
                    **missing,
                },
            ),
        },
        "/api/persons/{user_id}/sync": {
            "parameters": [USER_ID],
            "get": _op(
                "person_sync",
                "Where the person stands on each device.",
                tag,
                {
                    "200": _json("Per device: in_step, pending or failed.", _ref("PersonSync")),
                    **missing,
                },
            ),
        },
        "/api/persons/{user_id}/templates": {
            "parameters": [USER_ID],
            "get": _op(
                "person_templates",
                "The person's templates (metadata).",
                tag,
                {
                    "200": _json("Templates.", {"type": "array", "items": _ref("PersonTemplate")}),
                    **missing,
                },
                parameters=[_query("all", "1: every kept version, not only the newest.")],
            ),
            "post": _op(
                "add_person_template",
                "Add a template (e.g. from another system).",
                tag,
                {
                    "201": _json("Kept.", _ref("PersonTemplate")),
                    "400": _error("A field is not right."),
                    **missing,
                },
                body=_body("TemplateCreate"),
            ),
        },
        "/api/persons/{user_id}/templates/{template_id}": {
            "parameters": [USER_ID, TEMPLATE_ID],
            "get": _op(
                "person_template",
                "One template with its bytes (base64).",
                tag,
                {
                    "200": _json("The template.", _ref("PersonTemplateData")),
                    "404": _error("No such template."),
                },
            ),
        },
        "/api/persons/import": {
            "post": _op(
                "import_persons",
                'A terminal\'s users (and templates) into the registry with devices "all";'
                " a conflict is reported for its row and leaves that person untouched.",
                tag,
                {
                    "200": _json("What happened to each user.", _ref("PersonImportReport")),
                    "400": _error("from_device missing."),
                    "404": _error("No such device."),
                    "502": _error("The pull terminal could not be read."),
                },
                body=_body("PersonImport"),
            ),
        },
        "/api/persons.csv": {
            "get": _op(
                "export_persons_csv",
                "Every person as CSV (user_id,name,card,privilege,group,devices,active).",
                tag,
                {
                    "200": {
                        "description": "CSV.",
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    }
                },
            ),
            "post": _op(
                "import_persons_csv",
                "Add or change persons from CSV; any bad row: 422 and nothing applied "
                "(unless ?partial=1).",
                tag,
                {
                    "200": _json("Applied.", _ref("PersonCsvResult")),
                    "400": _error("Not UTF-8."),
                    "413": _error("Larger than 16 MiB."),
                    "422": _json("Bad rows, nothing applied.", _ref("PersonCsvResult")),
                },
                parameters=[_query("partial", "1: apply the good rows, list the bad ones.")],
                body=csv_body,
            ),
        },
        "/api/devices/{device_id}/sync-persons": {
            "parameters": [DEVICE_ID],
            "post": _op(
                "sync_persons",
                "Re-send everyone who must be on this device (a replaced or wiped terminal).",
                tag,
                {
                    "200": _json("Queued.", _ref("PersonSyncResult")),
                    "404": _error("No such device."),
                    "409": _error("The device is pending or rejected."),
                },
            ),
        },
    }
