"""Routes for the person registry: persons, their templates, their sync state, CSV.

Registered on the web app's Klein routes (imported at the end of :mod:`zkserver.web.app`).
Bad input answers 400 with ``field`` (the JSON name) and ``detail`` (and ``device_id``
when a value does not fit that device's user layout); a PIN that exists answers 409.
The password is never returned, only ``has_password``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from zkserver.commands.service import DeviceNotReady
from zkserver.http import web_request
from zkserver.persons.biometric import KINDS
from zkserver.persons.csvio import format_csv, parse_csv
from zkserver.persons.model import NewTemplate
from zkserver.persons.service import NoSuchPerson, Persons, TerminalUnavailable
from zkserver.persons.validate import PersonError, valid_pin
from zkserver.store.base import row_id
from zkserver.store.persons import DuplicatePerson
from zkserver.web.app import (
    ApiError,
    Pacer,
    WebApp,
    _int,
    api,
    json_response,
    read_json,
    routes,
)
from zkserver.web.auth import query_params

__all__: list[str] = []

log = Logger()

MAX_CSV = 16 << 20
CSV_PAGE = 1000  # persons read and written at a time by GET /api/persons.csv


def _persons(self: WebApp) -> Persons:
    persons = getattr(self, "persons", None)
    if persons is None:
        raise ApiError(503, "the person registry is not configured in this process")
    return persons


def _person_error(request: IRequest, e: PersonError) -> bytes:
    return json_response(request, {"error": f"invalid {e.field}", **e.public()}, 400)


def _pin(user_id: str) -> str:
    try:
        return valid_pin(user_id)
    except PersonError:
        raise ApiError(404, "no such person") from None


@routes.route("/api/persons", methods=["GET"])
@api()
async def list_persons(self: WebApp, request: IRequest) -> bytes:
    params = query_params(request)
    limit = _int(params.get("limit", 100), "limit", 1, 1000)
    page, cursor = await _persons(self).store.persons(
        q=params.get("q", "").strip()[:100] or None,
        device_id=params.get("device_id") or None,
        cursor=params.get("cursor") or None,
        limit=limit,
    )
    return json_response(request, {"items": [p.public() for p in page], "next_cursor": cursor})


@routes.route("/api/persons", methods=["POST"])
@api()
async def add_person(self: WebApp, request: IRequest) -> bytes:
    body = read_json(request)
    try:
        person = await _persons(self).create(body)
    except PersonError as e:
        return _person_error(request, e)
    except DuplicatePerson:
        raise ApiError(
            409, f"a person with user_id {body.get('user_id')} exists", "user_id"
        ) from None
    return json_response(request, person.public(), 201)


@routes.route("/api/persons/<user_id>", methods=["GET"])
@api()
async def get_person(self: WebApp, request: IRequest, user_id: str) -> bytes:
    person = await _persons(self).store.person(_pin(user_id))
    if person is None:
        raise ApiError(404, "no such person")
    return json_response(request, person.public())


@routes.route("/api/persons/<user_id>", methods=["PATCH"])
@api()
async def update_person(self: WebApp, request: IRequest, user_id: str) -> bytes:
    try:
        person = await _persons(self).update(_pin(user_id), read_json(request))
    except PersonError as e:
        return _person_error(request, e)
    except NoSuchPerson:
        raise ApiError(404, "no such person") from None
    return json_response(request, person.public())


@routes.route("/api/persons/<user_id>", methods=["DELETE"])
@api()
async def delete_person(self: WebApp, request: IRequest, user_id: str) -> bytes:
    try:
        person = await _persons(self).remove(_pin(user_id))
    except NoSuchPerson:
        raise ApiError(404, "no such person") from None
    state = await _persons(self).sync_state(person.user_id)
    return json_response(request, {"deleted": person.user_id, "sync": state["devices"]})


@routes.route("/api/persons/<user_id>/sync", methods=["GET"])
@api()
async def person_sync(self: WebApp, request: IRequest, user_id: str) -> bytes:
    try:
        state = await _persons(self).sync_state(_pin(user_id))
    except NoSuchPerson:
        raise ApiError(404, "no such person") from None
    return json_response(request, state)


@routes.route("/api/persons/<user_id>/templates", methods=["GET"])
@api()
async def person_templates(self: WebApp, request: IRequest, user_id: str) -> bytes:
    persons = _persons(self)
    pin = _pin(user_id)
    if await persons.store.person(pin) is None:
        raise ApiError(404, "no such person")
    every = query_params(request).get("all") in ("1", "true")
    found = await persons.store.person_templates(pin, all_versions=every)
    return json_response(request, [t.public() for t in found])


@routes.route("/api/persons/<user_id>/templates/<template_id>", methods=["GET"])
@api()
async def person_template(self: WebApp, request: IRequest, user_id: str, template_id: str) -> bytes:
    number = row_id(template_id)
    if number is None:
        raise ApiError(404, "no such template")
    found = await _persons(self).store.person_template_data(_pin(user_id), number)
    if not found:
        raise ApiError(404, "no such template")
    template, data = found[0]
    return json_response(request, {**template.public(), "data": base64.b64encode(data).decode()})


def _template_body(user_id: str, body: dict[str, Any]) -> NewTemplate:
    known = {"kind", "index", "format", "valid", "duress", "data"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise ApiError(400, f"a template has no field {unknown[0][:40]!r}", unknown[0])
    kind = body.get("kind")
    if kind not in KINDS:
        raise ApiError(400, "kind must be one of " + ", ".join(KINDS), "kind")
    index = _field_int(body, "index", 0, 9 if kind == "finger" else 255, 0)
    fmt = body.get("format", "")
    if isinstance(fmt, int) and not isinstance(fmt, bool):
        fmt = str(fmt)
    if not isinstance(fmt, str) or (fmt and not fmt.isdigit()) or len(fmt) > 8:
        raise ApiError(400, "format must be the algorithm version, e.g. '10'", "format")
    if kind in ("finger", "face", "palm") and not fmt:
        raise ApiError(400, f"format (the algorithm version) is required for {kind}", "format")
    data_text = body.get("data")
    if not isinstance(data_text, str) or not data_text:
        raise ApiError(400, "data must be the template as base64 text", "data")
    try:
        data = base64.b64decode(data_text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "data is not valid base64", "data") from None
    if not data or len(data) > 512 * 1024:
        raise ApiError(400, "data must be 1 byte to 512 KiB", "data")
    return NewTemplate(
        user_id=user_id,
        kind=kind,
        index=index,
        format=fmt,
        data=data,
        valid=_field_int(body, "valid", 0, 3, 1),
        duress=_field_int(body, "duress", 0, 1, 0),
        source_table="api",
    )


def _field_int(body: dict[str, Any], name: str, lo: int, hi: int, default: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ApiError(400, f"{name} must be an integer from {lo} to {hi}", name)
    return value


@routes.route("/api/persons/<user_id>/templates", methods=["POST"])
@api()
async def add_template(self: WebApp, request: IRequest, user_id: str) -> bytes:
    pin = _pin(user_id)
    template = _template_body(pin, read_json(request))
    try:
        kept = await _persons(self).add_template(pin, template)
    except NoSuchPerson:
        raise ApiError(404, "no such person") from None
    return json_response(request, kept.public(), 201)


@routes.route("/api/persons/import", methods=["POST"])
@api()
async def import_persons(self: WebApp, request: IRequest) -> bytes:
    body = read_json(request)
    device_id = body.get("from_device")
    if not isinstance(device_id, str) or not device_id:
        raise ApiError(400, "from_device must be a device id", "from_device")
    device = await self.store.device(device_id)
    if device is None:
        raise ApiError(404, "no such device", "from_device")
    try:
        report = await _persons(self).import_device(device)
    except TerminalUnavailable as e:
        raise ApiError(502, str(e)) from None
    return json_response(request, report)


@routes.route("/api/persons.csv", methods=["GET"])
@api()
async def export_csv(self: WebApp, request: IRequest) -> bytes:
    """Every person as CSV, a page (1000) at a time as the client's socket takes them
    (like attendance.csv): a slow client never makes the server hold the whole file."""
    persons = _persons(self)
    page, cursor = await persons.store.persons(cursor=None, limit=CSV_PAGE)
    request.setHeader(b"content-type", b"text/csv; charset=utf-8")
    request.setHeader(b"content-disposition", b'attachment; filename="persons.csv"')
    request.setHeader(b"cache-control", b"no-store")
    pacer = Pacer()
    web = web_request(request)
    web.registerProducer(pacer, True)
    try:
        request.write(format_csv(page).encode("utf-8"))
        while cursor is not None:
            await pacer.ready()
            if pacer.stopped or getattr(request, "_disconnected", False):
                break
            page, cursor = await persons.store.persons(cursor=cursor, limit=CSV_PAGE)
            request.write(format_csv(page, header=False).encode("utf-8"))
    except CancelledError:
        raise  # the client went away
    except Exception:
        if pacer.stopped or getattr(request, "_disconnected", False):
            return b""
        log.failure("Persons CSV export interrupted")  # part is out: show it failed
        web.loseConnection()
    finally:
        pacer.stopProducing()
        if not getattr(request, "_disconnected", False):
            web.unregisterProducer()
    return b""


@routes.route("/api/persons.csv", methods=["POST"])
@api()
async def import_csv(self: WebApp, request: IRequest) -> bytes:
    raw = request.content.read(MAX_CSV + 1) if request.content else b""
    if len(raw) > MAX_CSV:
        raise ApiError(413, "the CSV is larger than 16 MiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiError(400, "the CSV must be UTF-8") from None
    partial = query_params(request).get("partial") in ("1", "true")
    persons = _persons(self)
    good, errors = parse_csv(text)
    checked = await persons.import_rows(good)
    errors = sorted(errors + checked["errors"], key=lambda e: e["row"])
    bad_rows = {e["row"] for e in errors}
    if errors and not partial:
        return json_response(
            request,
            {
                "error": f"{len(bad_rows)} rows are not valid; nothing was applied",
                "detail": "fix the rows listed, or send ?partial=1 to apply the good rows",
                "applied": 0,
                "errors": errors,
            },
            422,
        )
    result = await persons.apply_rows([r for r in good if r.row not in bad_rows])
    return json_response(
        request, {**result, "applied": result["added"] + result["changed"], "errors": errors}
    )


@routes.route("/api/devices/<device_id>/sync-persons", methods=["POST"])
@api()
async def sync_persons(self: WebApp, request: IRequest, device_id: str) -> bytes:
    device = await self.device_or_404(device_id)
    try:
        result = await _persons(self).sync_device(device)
    except DeviceNotReady as e:
        raise ApiError(409, str(e)) from None
    return json_response(request, result)
