"""The OpenAPI document matches the Klein routes, validates, and is served without a token."""

from __future__ import annotations

import json
import re

import pytest_twisted
import treq

from tests.harness import RunningServer
from zkserver.web.app import routes
from zkserver.web.openapi import openapi_document

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
PUBLIC = {
    ("/", "get"),
    ("/healthz", "get"),
    ("/api/session", "post"),
    ("/api/session", "delete"),
    ("/api/openapi.json", "get"),
}


def openapi_path(rule: str) -> str:
    """``/api/photos/<int:photo_id>`` -> ``/api/photos/{photo_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def route_operations() -> dict[tuple[str, str], set[str]]:
    """(path, method) -> path parameter names, for every route of the web app.

    Left out: the static branch below ``/``, OPTIONS preflight, and the HEAD werkzeug adds
    to every GET."""
    found: dict[tuple[str, str], set[str]] = {}
    for rule in routes.url_map.iter_rules():
        if rule.endpoint.endswith("_branch"):
            continue
        for method in rule.methods or ():
            if method in ("OPTIONS", "HEAD"):
                continue
            found[(openapi_path(rule.rule), method.lower())] = set(rule.arguments)
    return found


def documented_operations(doc: dict) -> dict[tuple[str, str], dict]:
    found = {}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                params = [*item.get("parameters", []), *operation.get("parameters", [])]
                found[(path, method)] = {**operation, "parameters": params}
    return found


def test_path_conversion():
    assert openapi_path("/api/devices/<device_id>/approve") == "/api/devices/{device_id}/approve"
    assert openapi_path("/api/photos/<int:photo_id>") == "/api/photos/{photo_id}"
    assert openapi_path("/x/<path:rest>") == "/x/{rest}"


def test_every_route_is_documented_and_every_documented_operation_exists():
    in_routes = route_operations()
    in_doc = documented_operations(openapi_document())
    assert ("/api/openapi.json", "get") in in_routes
    assert sorted(set(in_routes) - set(in_doc)) == [], "routes missing from the document"
    assert sorted(set(in_doc) - set(in_routes)) == [], "documented but not routed"


def test_path_parameters_match_the_routes():
    in_doc = documented_operations(openapi_document())
    for key, arguments in route_operations().items():
        declared = {p["name"] for p in in_doc[key]["parameters"] if p["in"] == "path"}
        assert declared == arguments, key


def test_security_public_and_protected_operations():
    doc = openapi_document()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert (schemes["cookie"]["in"], schemes["cookie"]["name"]) == ("cookie", "zkserver_session")
    assert (schemes["queryToken"]["in"], schemes["queryToken"]["name"]) == ("query", "token")
    assert {"bearer": []} in doc["security"]
    for key, operation in documented_operations(doc).items():
        if key in PUBLIC:
            assert operation.get("security") == [], key
            assert "401" not in operation["responses"] or key == ("/api/session", "post"), key
        else:
            assert "security" not in operation, key
            assert "401" in operation["responses"], key


def test_schemas_describe_the_contract():
    schemas = openapi_document()["components"]["schemas"]
    for name in (
        "Device",
        "Command",
        "AttendanceRow",
        "AttendancePage",
        "Rejected",
        "Event",
        "Error",
    ):
        assert name in schemas
    event = schemas["AttendanceEvent"]
    assert set(event["required"]) == {
        "type",
        "device_id",
        "device_name",
        "serial_number",
        "user_id",
        "timestamp",
        "action",
        "method",
        "raw_data",
    }
    mapping = schemas["Event"]["discriminator"]["mapping"]
    assert {"attendance", "device_status", "user_sync", "command_result", "command_status"} <= set(
        mapping
    )
    assert set(mapping) >= {"door", "alarm", "device_log", "device_alert"}


def test_document_is_valid_openapi_3_1():
    import openapi_spec_validator as validator

    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    validator.validate(doc)


def test_examples_match_their_schemas():
    import jsonschema

    doc = openapi_document()
    event = doc["components"]["schemas"]["AttendanceEvent"]
    for example in event["examples"]:
        jsonschema.validate(example, {**event, "components": doc["components"]})


@pytest_twisted.ensureDeferred
async def test_served_without_a_token(server: RunningServer):
    response = await treq.get(f"{server.web_url}/api/openapi.json", pool=server.pool)
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["application/json"]
    served = json.loads(await response.text("utf-8"))
    assert served == json.loads(json.dumps(openapi_document()))


@pytest_twisted.ensureDeferred
async def test_served_responses_match_the_schemas(server: RunningServer):
    """A device the API returns validates against the documented Device schema."""
    import jsonschema

    doc = openapi_document()
    code, device = await server.api("POST", "/api/devices", {"serial_number": "OAS0001"})
    assert code == 201
    code, page = await server.api("GET", "/api/attendance")
    assert code == 200
    code, error = await server.api("GET", "/api/devices/nope")
    assert code == 404
    for value, name in ((device, "Device"), (page, "AttendancePage"), (error, "Error")):
        schema = {**doc["components"]["schemas"][name], "components": doc["components"]}
        jsonschema.validate(value, schema)
