"""The web listener's Klein application: JSON API, event stream, monitoring page.

Every route except ``/``, static files, ``/healthz`` and the login endpoint requires
the operator token (see :mod:`zkserver.web.auth`).
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from functools import cache, wraps
from importlib.resources import files
from typing import Any, Protocol

from attrs import define
from klein import Klein
from klein.interfaces import IKleinRequest
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.static import File
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, RequestRedirect
from zope.interface import implementer

from zkserver import device_text
from zkserver.commands.service import Commands, DeviceNotReady, NotCancellable, TooLarge
from zkserver.commands.spec import CommandError, CommandSpec, Unsupported, parse_command
from zkserver.devices import DeviceRegistry
from zkserver.http import web_request
from zkserver.ingest import Ingest
from zkserver.localtime import TimePolicy, format_day_start, parse_query_time, zone_name
from zkserver.persons.csvio import safe_cell
from zkserver.push.timezones import utc_offset_minutes
from zkserver.records import Device
from zkserver.store.base import DuplicateDevice, Store, StoreUnavailable
from zkserver.web.auth import COOKIE_NAME, TokenAuth, query_params
from zkserver.web.sse import EventStream

__all__ = ["WebApp", "PullControl", "ApiError"]

log = Logger()

SERIAL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_INTEGER = re.compile(r"[+-]?[0-9]+")
MAX_JSON_BODY = 1 << 20


def reactor_clock() -> Any:
    from twisted.internet import reactor

    return reactor


class PullControl(Protocol):
    """What the API needs from the pull-device manager (zkserver.pull.service)."""

    def device_changed(self, device: Device) -> None: ...

    def device_removed(self, device_id: str) -> None: ...

    def sync_time(self, device: Device) -> Awaitable[dict[str, Any]]: ...

    def read_users(self, device: Device) -> Awaitable[dict[str, Any]]: ...

    def read_log(self, device: Device) -> Awaitable[dict[str, Any]]: ...


class ApiError(Exception):
    """An error answer: ``{"error": message, "detail": message}`` (and ``field``, the
    JSON name of the field at fault, when there is one)."""

    def __init__(self, code: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "detail": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


def json_response(request: IRequest, body: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, ensure_ascii=False).encode()


Handler = Callable[..., Awaitable[Any]]


def api(authenticated: bool = True) -> Callable[[Handler], Handler]:
    """Wrap a route: token check, JSON errors, 503 when the database is down."""

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def wrapper(self: WebApp, request: IRequest, *args: Any, **kwargs: Any) -> Any:
            self.apply_cors(request)
            if authenticated and not self.auth.check(request):
                return json_response(
                    request, {"error": "unauthorized", "detail": "missing or wrong token"}, 401
                )
            try:
                return await handler(self, request, *args, **kwargs)
            except ApiError as e:
                return json_response(request, e.body(), e.code)
            except StoreUnavailable as e:
                log.warn("Database unavailable: {error}", error=str(e))
                return json_response(request, {"error": "database unavailable"}, 503)
            except CancelledError:
                raise  # the client went away (e.g. an event stream closed)
            except Exception:
                log.failure("{method} {uri} failed", method=request.method, uri=request.uri)
                return json_response(request, {"error": "internal server error"}, 500)

        return wrapper

    return decorate


def read_json(request: IRequest) -> dict[str, Any]:
    raw = request.content.read(MAX_JSON_BODY + 1) if request.content else b""
    if len(raw) > MAX_JSON_BODY:
        raise ApiError(413, "request body too large")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except DuplicateKey as e:
        raise ApiError(400, f"invalid JSON: the key {e.key[:60]!r} is given twice", e.key) from None
    except RecursionError:
        raise ApiError(400, "invalid JSON: nested too deeply") from None
    except ValueError as e:
        raise ApiError(400, f"invalid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "expected a JSON object")
    return body


class DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a key given twice is refused (parsers differ on which one counts)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity``, which Python reads and JSON has not."""
    raise ValueError(f"{name} is not JSON")


def _int(value: Any, name: str, lo: int, hi: int) -> int:
    """An integer from ``lo`` to ``hi``; else a 400 naming ``name`` (the JSON field or the
    query parameter)."""
    if (
        isinstance(value, bool)
        or isinstance(value, float)
        and not value.is_integer()
        or isinstance(value, str)
        and not _INTEGER.fullmatch(value.strip())  # "٣" and "1_000" are ints to int()
    ):
        raise ApiError(400, f"{name} must be an integer", name)
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ApiError(400, f"{name} must be an integer", name) from None
    if not lo <= number <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}", name)
    return number


def _str(body: dict[str, Any], name: str, default: str = "", limit: int = 200) -> str:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str | int):
        raise ApiError(400, f"{name} must be a string", name)
    text = str(value).strip()
    if len(text) > limit:
        raise ApiError(400, f"{name} is longer than {limit} characters", name)
    return text


HOST_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def _host(value: str) -> str:
    """A pull device's address: an IPv4/IPv6 address or a DNS name."""
    if not value:
        raise ApiError(400, "host is required for a pull device", "host")
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not HOST_RE.match(value):
        raise ApiError(400, f"host {value[:60]!r} is not an IP address or a host name", "host")
    return value


def _timezone(value: str) -> str:
    if not value:
        return ""
    try:
        utc_offset_minutes(value, datetime.now(UTC))
    except Exception:
        raise ApiError(
            400,
            f"unknown timezone {value[:60]!r}: not an IANA zone (Europe/Berlin) or a UTC"
            " offset (+05:30)",
            "timezone",
        ) from None
    return value


def _encoding(body: dict[str, Any]) -> str:
    """A device's text encoding: ``""`` (automatic) or a codec terminals can use
    (zkserver.device_text; docs/protocols.md §A.2)."""
    try:
        return device_text.check_encoding(_str(body, "encoding", limit=40))
    except ValueError as e:
        raise ApiError(400, str(e), "encoding") from None


@define(eq=False)
class WebApp:
    store: Store
    registry: DeviceRegistry
    events: EventStream
    auth: TokenAuth
    pull: PullControl | None = None
    commands: Commands | None = None
    cors_origins: frozenset[str] = frozenset()
    secure_cookie: bool = False
    ready: Callable[[], bool] = lambda: True
    hooks: Any = None  # zkserver.web.hooks_api.HooksConfig: webhooks, device log, metrics
    time_policy: TimePolicy = TimePolicy()
    persons: Any = None  # zkserver.persons.service.Persons: the person registry

    def resource(self) -> Any:
        """The twisted.web resource serving every route below, bound to this app."""
        return StreamFirst(routes.__get__(self, WebApp).resource(), self)

    def stream(self, request: IRequest) -> bytes | int:
        """``GET /devices/events``: the token check and CORS as for every route (not
        wrapped in :func:`api`: a stream lives for hours, and no coroutine or Deferred
        should stay waiting per client), then :meth:`EventStream.serve`."""
        self.apply_cors(request)
        if not self.auth.check(request):
            return json_response(
                request, {"error": "unauthorized", "detail": "missing or wrong token"}, 401
            )
        self.events.serve(web_request(request))
        return NOT_DONE_YET

    def apply_cors(self, request: IRequest) -> None:
        origin = request.getHeader(b"origin")
        if origin and origin.decode("latin-1") in self.cors_origins:
            request.setHeader(b"access-control-allow-origin", origin)
            request.setHeader(b"vary", b"Origin")
            request.setHeader(b"access-control-allow-credentials", b"true")
            request.setHeader(
                b"access-control-allow-headers", b"Authorization, Content-Type, Last-Event-ID"
            )
            request.setHeader(b"access-control-allow-methods", b"GET, POST, PATCH, DELETE, OPTIONS")

    def command_service(self) -> Commands:
        if self.commands is None:  # built without one (tests): a default service
            self.commands = Commands(
                self.store, Ingest(self.store, self.events.broadcaster), reactor_clock()
            )
        return self.commands

    async def device_or_404(self, device_id: str) -> Device:
        device = await self.store.device(device_id)
        if device is None:
            raise ApiError(404, "no such device")
        return device


#: The event stream's path, as sent (served before Klein routing, see StreamFirst).
STREAM_PATH = b"/devices/events"


class StreamFirst(Resource):
    """The web listener's resource: the Klein routes, except that ``GET /devices/events``
    (that exact path) is opened without Klein.

    Klein keeps, for as long as a request is open, its request adapter (with the URL map
    bound to the request) and two ``notifyFinish`` Deferreds with their closures: for a
    stream, which lives for hours, that is ~1.7 KB of Python objects more than this path
    (tracemalloc over 2,000 idle streams: 6.9 KB each through the Klein route, 5.2 KB
    here). Routing is one comparison here; the route stays declared in Klein (HEAD,
    other spellings of the path, the route list) and opens a stream the same way.
    """

    isLeaf = True

    def __init__(self, routes: Resource, app: WebApp) -> None:
        super().__init__()
        self.routes = routes
        self.app = app

    def render(self, request: IRequest) -> Any:
        if request.method == b"GET" and request.path == STREAM_PATH:
            return self.app.stream(request)
        return self.routes.render(request)


class _StreamResource(Resource):
    """What the Klein route returns: renders the stream (see StreamFirst)."""

    isLeaf = True

    def __init__(self, app: WebApp) -> None:
        super().__init__()
        self.app = app

    def render(self, request: IRequest) -> Any:
        return self.app.stream(request)


# The routes, written as functions of the WebApp they are bound to (see WebApp.resource).
routes = Klein()


@routes.route("/api/<path:_rest>", methods=["OPTIONS"])
@api(authenticated=False)
async def preflight(self: WebApp, request: IRequest, _rest: str) -> bytes:
    request.setResponseCode(204)
    return b""


@routes.route("/devices/events", methods=["OPTIONS"])
@api(authenticated=False)
async def stream_preflight(self: WebApp, request: IRequest) -> bytes:
    """A cross-origin stream opened with a header (``Authorization``, or ``Last-Event-ID``
    from a polyfill) is preflighted like any API call."""
    request.setResponseCode(204)
    return b""


@routes.route("/healthz", methods=["GET"])
@api(authenticated=False)
async def healthz(self: WebApp, request: IRequest) -> bytes:
    if not self.ready():
        return json_response(request, {"status": "starting", "database": "not ready"}, 503)
    try:
        await self.store.ping()
    except Exception as e:
        return json_response(request, {"status": "error", "database": str(e)[:200]}, 503)
    return json_response(
        request, {"status": "ok", "database": "ok", **self.events.broadcaster.stats()}
    )


@routes.route("/devices/events", methods=["GET"])
def device_events(self: WebApp, request: IRequest) -> Any:
    # Reached for HEAD and other spellings of the path; a plain GET /devices/events is
    # opened before Klein routing (see StreamFirst). Klein renders the returned resource
    # and does not finish the request while it is NOT_DONE_YET.
    return _StreamResource(self)


# --- login ----------------------------------------------------------------------------
@routes.route("/api/session", methods=["POST"])
@api(authenticated=False)
async def login(self: WebApp, request: IRequest) -> bytes:
    body = read_json(request)
    token = str(body.get("token", ""))
    if not TokenAuth._same(token, self.auth.token):
        return json_response(request, {"error": "unauthorized", "detail": "wrong token"}, 401)
    web_request(request).addCookie(
        COOKIE_NAME,
        self.auth.session_value().encode(),
        path=b"/",
        httpOnly=True,
        sameSite="strict",
        secure=self.secure_cookie,
    )
    return json_response(request, {"status": "ok"})


@routes.route("/api/session", methods=["DELETE"])
@api(authenticated=False)
async def logout(self: WebApp, request: IRequest) -> bytes:
    web_request(request).addCookie(
        COOKIE_NAME, b"", path=b"/", httpOnly=True, sameSite="strict", max_age=b"0"
    )
    return json_response(request, {"status": "ok"})


@routes.route("/api/session", methods=["GET"])
@api()
async def session(self: WebApp, request: IRequest) -> bytes:
    return json_response(request, {"status": "ok"})


# --- devices ----------------------------------------------------------------------------
@routes.route("/api/devices", methods=["GET"])
@api()
async def list_devices(self: WebApp, request: IRequest) -> bytes:
    kind = query_params(request).get("kind") or None
    devices = await self.store.devices(kind=kind)
    return json_response(request, [d.public() for d in devices])


@routes.route("/api/devices", methods=["POST"])
@api()
async def add_device(self: WebApp, request: IRequest) -> bytes:
    body = read_json(request)
    kind = _str(body, "kind", "push")
    name = _str(body, "name")
    timezone = _timezone(_str(body, "timezone"))
    encoding = _encoding(body)
    if kind == "push":
        serial = _str(body, "serial_number")
        if not SERIAL_RE.match(serial):
            raise ApiError(
                400, "serial_number is required (letters, digits, '-', '_', '.')", "serial_number"
            )
        fields: dict[str, Any] = {"serial_number": serial}
        status = "offline"
    elif kind == "pull":
        host = _host(_str(body, "host"))
        serial = _str(body, "serial_number")
        if serial and not SERIAL_RE.match(serial):
            raise ApiError(
                400, "serial_number may hold letters, digits, '-', '_', '.'", "serial_number"
            )
        transport = _str(body, "transport", "tcp").lower()
        if transport not in ("tcp", "udp"):
            raise ApiError(400, "transport must be tcp or udp", "transport")
        fields = {
            "serial_number": serial,
            "host": host,
            "port": _int(body.get("port", 4370), "port", 1, 65535),
            "comm_key": _int(body.get("comm_key", 0) or 0, "comm_key", 0, 999_999_999),
            "transport": transport,
        }
        status = "offline"
    else:
        raise ApiError(400, "kind must be push or pull", "kind")
    try:
        device = await self.store.add_device(
            kind=kind,
            name=name,
            timezone=timezone,
            status=status,
            approved=True,
            encoding=encoding,
            **fields,
        )
    except DuplicateDevice:
        what = "serial number" if kind == "push" or fields.get("serial_number") else ""
        raise ApiError(
            409, f"a device with that {what or 'host and port'} already exists"
        ) from None
    if kind == "pull" and self.pull is not None:
        self.pull.device_changed(device)
    return json_response(request, device.public(), 201)


@routes.route("/api/devices/<device_id>", methods=["GET"])
@api()
async def get_device(self: WebApp, request: IRequest, device_id: str) -> bytes:
    return json_response(request, (await self.device_or_404(device_id)).public())


@routes.route("/api/devices/<device_id>", methods=["PATCH", "PUT"])
@api()
async def update_device(self: WebApp, request: IRequest, device_id: str) -> bytes:
    device = await self.device_or_404(device_id)
    body = read_json(request)
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = _str(body, "name")
    if "timezone" in body:
        changes["timezone"] = _timezone(_str(body, "timezone"))
    if "encoding" in body:
        changes["encoding"] = _encoding(body)
    if device.kind == "pull":
        if "host" in body:
            changes["host"] = _host(_str(body, "host"))
        if "port" in body:
            changes["port"] = _int(body["port"], "port", 1, 65535)
        if "comm_key" in body:
            changes["comm_key"] = _int(body["comm_key"] or 0, "comm_key", 0, 999_999_999)
        if "transport" in body:
            transport = _str(body, "transport").lower()
            if transport not in ("tcp", "udp"):
                raise ApiError(400, "transport must be tcp or udp", "transport")
            changes["transport"] = transport
    allowed = {"name", "timezone", "encoding"} | (
        {"host", "port", "comm_key", "transport"} if device.kind == "pull" else set()
    )
    unknown = set(body) - allowed
    if unknown:
        raise ApiError(
            400, f"cannot change on a {device.kind} device: {', '.join(sorted(unknown))}"
        )
    try:
        updated = await self.store.update_device(device.id, **changes) if changes else device
    except DuplicateDevice:
        raise ApiError(409, "another device already has that host and port") from None
    if updated is None:
        raise ApiError(404, "no such device")
    self.registry.forget(device)
    if updated.kind == "pull" and self.pull is not None:
        self.pull.device_changed(updated)
    return json_response(request, updated.public())


@routes.route("/api/devices/<device_id>", methods=["DELETE"])
@api()
async def delete_device(self: WebApp, request: IRequest, device_id: str) -> bytes:
    device = await self.device_or_404(device_id)
    if device.kind == "pull" and self.pull is not None:
        self.pull.device_removed(device.id)
    await self.store.delete_device(device.id)
    self.registry.forget(device)
    return json_response(request, {"deleted": device.id})


@routes.route("/api/devices/<device_id>/approve", methods=["POST"])
@api()
async def approve_device(self: WebApp, request: IRequest, device_id: str) -> bytes:
    device = await self.registry.approve(await self.device_or_404(device_id))
    if device.kind == "pull" and self.pull is not None:
        self.pull.device_changed(device)
    return json_response(request, device.public())


@routes.route("/api/devices/<device_id>/reject", methods=["POST"])
@api()
async def reject_device(self: WebApp, request: IRequest, device_id: str) -> bytes:
    device = await self.registry.reject(await self.device_or_404(device_id))
    if device.kind == "pull" and self.pull is not None:
        self.pull.device_removed(device.id)
    return json_response(request, device.public())


# --- commands (push) and operations (pull) ------------------------------------------------
@routes.route("/api/devices/<device_id>/commands", methods=["POST"])
@api()
async def queue_command(self: WebApp, request: IRequest, device_id: str) -> bytes:
    """A typed command (``{"type": ...}``, or ``{"command": {...}}``); the one-line form
    ``{"command": "INFO"}`` is a ``raw`` command."""
    device = await self.device_or_404(device_id)
    body = read_json(request)
    if isinstance(body.get("command"), dict) and "type" not in body:
        body = body["command"]
    spec = _command_spec(body)
    try:
        queued = await self.command_service().queue(device, spec)
    except Exception as e:
        raise _command_error(e) from None
    return json_response(request, queued.public(), 201)


@routes.route("/api/devices/<device_id>/commands", methods=["GET"])
@api()
async def list_commands(self: WebApp, request: IRequest, device_id: str) -> bytes:
    device = await self.device_or_404(device_id)
    params = query_params(request)
    limit = _int(params.get("limit", 100), "limit", 1, 1000)
    commands, _ = await self.store.list_commands(device_id=device.id, limit=limit)
    return json_response(request, [c.public() for c in commands])


def _command_spec(body: Any) -> CommandSpec:
    try:
        return parse_command(body)
    except CommandError as e:
        raise ApiError(400, e.message, field=e.field) from None


def _command_error(e: Exception) -> Exception:
    """The API error for a failure of Commands.queue / queue_batch."""
    if isinstance(e, CommandError):
        return ApiError(400, e.message, field=e.field)
    if isinstance(e, DeviceNotReady):
        return ApiError(409, str(e))
    if isinstance(e, Unsupported):
        return ApiError(422, e.reason)
    if isinstance(e, TooLarge):
        return ApiError(413, str(e))
    return e


@routes.route("/api/commands", methods=["POST"])
@api()
async def queue_batch(self: WebApp, request: IRequest) -> bytes:
    """``{"command": {...}, "device_ids": [...]}`` or ``{"command": {...}, "all": true,
    "kind": "push"|"pull"|null}``: one command per device under one batch id."""
    body = read_json(request)
    spec = _command_spec(body.get("command"))
    unknown = sorted(set(body) - {"command", "device_ids", "all", "kind"})
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0][:40]!r}", field=unknown[0])
    if body.get("all") is True:
        if "device_ids" in body:
            raise ApiError(400, "give device_ids or all, not both", field="device_ids")
        kind = body.get("kind")
        if kind not in (None, "push", "pull"):
            raise ApiError(400, "kind must be push, pull or null", field="kind")
        devices = [
            d
            for d in await self.store.devices(kind=kind)
            if d.approved and d.status not in ("pending", "rejected")
        ]
        if not devices:
            raise ApiError(422, "no approved device" + (f" of kind {kind}" if kind else ""))
    else:
        if "all" in body and body["all"] is not False:
            raise ApiError(400, "all must be true or false", field="all")
        ids = body.get("device_ids")
        if (
            not isinstance(ids, list)
            or not ids
            or len(ids) > 10_000
            or not all(isinstance(i, str) and i for i in ids)
        ):
            raise ApiError(
                400,
                "device_ids must be a non-empty list of device ids (or give all: true)",
                field="device_ids",
            )
        devices = []
        for device_id in dict.fromkeys(ids):
            device = await self.store.device(device_id)
            if device is None:
                raise ApiError(404, f"no such device: {device_id[:60]}", field="device_ids")
            devices.append(device)
    try:
        batch = await self.command_service().queue_batch(devices, spec)
    except Exception as e:
        raise _command_error(e) from None
    return json_response(
        request,
        {
            "batch_id": batch.batch_id,
            "commands": [c.public() for c in batch.commands],
            "skipped": batch.skipped,
        },
        201,
    )


COMMAND_STATUSES = ("queued", "sent", "done", "failed", "expired", "cancelled")


@routes.route("/api/commands", methods=["GET"])
@api()
async def all_commands(self: WebApp, request: IRequest) -> bytes:
    params = query_params(request)
    status = params.get("status") or None
    if status is not None and status not in COMMAND_STATUSES:
        raise ApiError(400, "status must be one of " + ", ".join(COMMAND_STATUSES), field="status")
    limit = _int(params.get("limit", 100), "limit", 1, 1000)
    try:
        commands, cursor = await self.store.list_commands(
            device_id=params.get("device_id") or None,
            batch_id=params.get("batch_id") or None,
            status=status,
            cursor=params.get("cursor") or None,
            limit=limit,
        )
    except ValueError as e:
        raise ApiError(400, str(e), field="cursor") from None
    return json_response(request, {"items": [c.public() for c in commands], "next_cursor": cursor})


@routes.route("/api/commands/<command_id>", methods=["GET"])
@api()
async def get_command(self: WebApp, request: IRequest, command_id: str) -> bytes:
    command = await self.store.command(command_id)
    if command is None:
        raise ApiError(404, "no such command")
    return json_response(request, command.public())


@routes.route("/api/commands/<command_id>", methods=["DELETE"])
@api()
async def cancel_command(self: WebApp, request: IRequest, command_id: str) -> bytes:
    try:
        command = await self.command_service().cancel(command_id)
    except LookupError:
        raise ApiError(404, "no such command") from None
    except NotCancellable as e:
        raise ApiError(
            409, f"only a queued command can be cancelled; this one is {e.command.status}"
        ) from None
    return json_response(request, command.public())


async def _pull_operation(self: WebApp, device_id: str, name: str) -> dict[str, Any]:
    device = await self.device_or_404(device_id)
    if device.kind != "pull":
        raise ApiError(409, f"{name} is a pull-device operation")
    if self.pull is None:
        raise ApiError(503, "pull devices are disabled on this server")
    try:
        return await getattr(self.pull, name.replace("-", "_"))(device)
    except ApiError:
        raise
    except Exception as e:
        raise ApiError(502, f"{name} failed: {e}") from None


@routes.route("/api/devices/<device_id>/sync-time", methods=["POST"])
@api()
async def sync_time(self: WebApp, request: IRequest, device_id: str) -> bytes:
    return json_response(request, await _pull_operation(self, device_id, "sync-time"))


@routes.route("/api/devices/<device_id>/read-users", methods=["POST"])
@api()
async def read_users(self: WebApp, request: IRequest, device_id: str) -> bytes:
    return json_response(request, await _pull_operation(self, device_id, "read-users"))


@routes.route("/api/devices/<device_id>/read-log", methods=["POST"])
@api()
async def read_log(self: WebApp, request: IRequest, device_id: str) -> bytes:
    return json_response(request, await _pull_operation(self, device_id, "read-log"))


@routes.route("/api/devices/<device_id>/users", methods=["GET"])
@api()
async def device_users(self: WebApp, request: IRequest, device_id: str) -> bytes:
    device = await self.device_or_404(device_id)
    return json_response(request, [u.public() for u in await self.store.users(device.id)])


# --- attendance, rejected input, photos -----------------------------------------------------
def _time_filter(params: dict[str, str], name: str) -> str | None:
    """``since``/``until``: ISO 8601 with an offset or ``Z`` (an instant, normalised to
    ``YYYY-MM-DDTHH:MM:SSZ``), or device-local ``YYYY-MM-DD[ HH:MM[:SS]]``."""
    value = params.get(name, "").strip()
    if not value:
        return None
    try:
        _kind, text = parse_query_time(value, round_up=name == "since")
    except ValueError:
        raise ApiError(
            400,
            f"{name} must be ISO 8601 with an offset (2026-03-29T03:30:00+02:00, ...Z) or a "
            "device-local YYYY-MM-DD[ HH:MM:SS]",
            name,
        ) from None
    return text


def _attendance_filters(request: IRequest) -> dict[str, Any]:
    params = query_params(request)
    return {
        "device_id": params.get("device_id") or None,
        "user_id": params.get("user_id") or None,
        "since": _time_filter(params, "since"),
        "until": _time_filter(params, "until"),
    }


@routes.route("/api/attendance", methods=["GET"])
@api()
async def attendance(self: WebApp, request: IRequest) -> bytes:
    params = query_params(request)
    limit = _int(params.get("limit", 100), "limit", 1, 1000)
    try:
        rows, cursor = await self.store.attendance(
            **_attendance_filters(request), cursor=params.get("cursor") or None, limit=limit
        )
    except ValueError as e:
        raise ApiError(400, f"invalid query: {e}", "cursor") from None
    return json_response(request, {"items": rows, "next_cursor": cursor})


@routes.route("/api/attendance.csv", methods=["GET"])
@api()
async def attendance_csv(self: WebApp, request: IRequest) -> bytes:
    """The attendance query as CSV, written a page (1000 rows) at a time."""
    filters = _attendance_filters(request)
    columns = [
        "timestamp",
        "user_id",
        "user_name",
        "action",
        "method",
        "device_name",
        "serial_number",
        "device_id",
        "workcode",
        "received_at",
        "timestamp_utc",
        "time_ambiguous",
        "suspect_time",
    ]

    def page_text(rows: list[dict[str, Any]], header: bool) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out)
        if header:
            writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(row.get(c)) for c in columns])
        return out.getvalue().encode()

    rows, cursor = await self.store.attendance(**filters, cursor=None, limit=1000)
    request.setHeader(b"content-type", b"text/csv; charset=utf-8")
    request.setHeader(b"content-disposition", b'attachment; filename="attendance.csv"')
    # The next page is read only when the client's socket has taken the previous ones:
    # a slow client never makes the server hold the whole export in memory.
    pacer = Pacer()
    web = web_request(request)
    web.registerProducer(pacer, True)
    try:
        request.write(page_text(rows, header=True))
        while cursor is not None and not getattr(request, "_disconnected", False):
            await pacer.ready()
            if pacer.stopped:
                break
            rows, cursor = await self.store.attendance(**filters, cursor=cursor, limit=1000)
            request.write(page_text(rows, header=False))
    except CancelledError:
        raise  # the client went away
    except Exception:
        if pacer.stopped or getattr(request, "_disconnected", False):
            return b""  # the client went away (a query cancelled with it)
        # Part of the file is out: cut the connection so the download shows as failed.
        log.failure("CSV export interrupted")
        web.loseConnection()
    finally:
        pacer.stopProducing()
        if not getattr(request, "_disconnected", False):
            web.unregisterProducer()
    return b""


def _csv_cell(value: Any) -> Any:
    """One exported cell: text that starts like a formula is quoted with ``'`` (as in
    ``/api/persons.csv``: a name never runs in a spreadsheet), nothing for null."""
    if value is None:
        return ""
    if isinstance(value, str):
        return safe_cell(value)
    return value


@implementer(IPushProducer)
class Pacer:
    """A streaming producer a response loop waits on: the transport pauses it when its
    buffer is full and resumes it once the client has read."""

    def __init__(self) -> None:
        self.paused = False
        self.stopped = False
        self._waiters: list[Deferred[None]] = []

    def ready(self) -> Deferred[None]:
        """Fires when more may be written (at once unless paused)."""
        if not self.paused or self.stopped:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        return d

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def pauseProducing(self) -> None:  # noqa: N802
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False
        self._wake()

    def stopProducing(self) -> None:  # noqa: N802
        self.stopped = True
        self._wake()


# --- each person's day ----------------------------------------------------------------------
MAX_DAYS = 366
DAYS_CSV_CHUNK = 500  # rows of /api/days.csv written at a time
DAY_COLUMNS = [
    "date",
    "user_id",
    "name",
    "first",
    "last",
    "punches",
    "devices",
    "span_minutes",
    "states_consistent",
    "first_utc",
    "last_utc",
    "first_action",
    "last_action",
]


def _date(params: dict[str, str], name: str) -> date | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"{name} must be a date YYYY-MM-DD", name) from None


async def _days(self: WebApp, request: IRequest) -> dict[str, Any]:
    params = query_params(request)
    first = _date(params, "from")
    if first is None:
        raise ApiError(400, "from is required (YYYY-MM-DD)", "from")
    last = _date(params, "to") or first
    if last < first:
        raise ApiError(400, "to must not be before from", "to")
    if (last - first).days >= MAX_DAYS:
        raise ApiError(400, f"from..to spans at most {MAX_DAYS} days", "to")
    if last == date.max:  # its day ends on a date that does not exist
        raise ApiError(400, f"to must be before {date.max.isoformat()}", "to")
    day_starts_at = self.time_policy.day_starts_at
    rows = await self.store.days(
        first=first,
        last=last,
        day_starts_at=day_starts_at,
        user_id=params.get("user_id") or None,
        device_id=params.get("device_id") or None,
    )
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "day_starts_at": format_day_start(day_starts_at),
        "default_timezone": zone_name(self.time_policy.zone("")),
        "items": rows,
    }


@routes.route("/api/days", methods=["GET"])
@api()
async def days(self: WebApp, request: IRequest) -> bytes:
    """One row per person per device-local day (``--day-starts-at``)."""
    return json_response(request, await _days(self, request))


@routes.route("/api/days.csv", methods=["GET"])
@api()
async def days_csv(self: WebApp, request: IRequest) -> bytes:
    """The same rows as CSV (``devices`` space-separated)."""
    result = await _days(self, request)

    def rows_text(rows: list[dict[str, Any]], header: bool) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out)
        if header:
            writer.writerow(DAY_COLUMNS)
        for row in rows:
            cells = []
            for column in DAY_COLUMNS:
                value = row.get(column)
                if column == "devices":
                    value = " ".join(value or [])
                elif isinstance(value, bool):
                    value = "true" if value else "false"
                cells.append(_csv_cell(value))
            writer.writerow(cells)
        return out.getvalue().encode()

    headers = request.responseHeaders
    headers.setRawHeaders(b"content-type", [b"text/csv; charset=utf-8"])
    headers.setRawHeaders(
        b"content-disposition",
        [f'attachment; filename="days-{result["from"]}-{result["to"]}.csv"'.encode()],
    )
    # Written DAYS_CSV_CHUNK rows at a time as the client's socket takes them (like
    # attendance.csv): a slow client never makes the transport hold the whole file.
    items = result["items"]
    pacer = Pacer()
    web = web_request(request)
    web.registerProducer(pacer, True)
    try:
        for start in range(0, max(len(items), 1), DAYS_CSV_CHUNK):
            if start:
                await pacer.ready()
                if pacer.stopped or getattr(request, "_disconnected", False):
                    break
            request.write(rows_text(items[start : start + DAYS_CSV_CHUNK], header=not start))
    finally:
        pacer.stopProducing()
        if not getattr(request, "_disconnected", False):
            web.unregisterProducer()
    return b""


@routes.route("/api/rejected", methods=["GET"])
@api()
async def rejected(self: WebApp, request: IRequest) -> bytes:
    params = query_params(request)
    limit = _int(params.get("limit", 100), "limit", 1, 1000)
    rows = await self.store.rejected(params.get("serial_number") or None, limit=limit)
    return json_response(request, rows)


@routes.route("/api/photos/<int:photo_id>", methods=["GET"])
@api()
async def photo(self: WebApp, request: IRequest, photo_id: int) -> bytes:
    if photo_id >= 2**63:
        raise ApiError(404, "no such photo")
    found = await self.store.photo(photo_id)
    if found is None:
        raise ApiError(404, "no such photo")
    filename, content = found
    request.setHeader(b"content-type", b"image/jpeg")
    request.setHeader(b"content-disposition", f'inline; filename="{filename}"'.encode())
    return content


@routes.route("/api/stats", methods=["GET"])
@api()
async def stats(self: WebApp, request: IRequest) -> bytes:
    return json_response(request, self.events.broadcaster.stats())


# --- monitoring page -------------------------------------------------------------------------
class StaticFiles(File):
    """The page's files. Module scripts need a JavaScript type whatever the host's
    mime.types says (browsers refuse ``<script type="module">`` served otherwise)."""

    contentTypes = {
        **File.contentTypes,
        ".js": "text/javascript; charset=utf-8",
        ".mjs": "text/javascript; charset=utf-8",
    }


@routes.route("/", branch=True, methods=["GET", "HEAD"])
def static(self: WebApp, request: IRequest) -> Any:
    if request.path.startswith(b"/api/"):  # no API route has it: not a page file either
        self.apply_cors(request)
        return json_response(request, {"error": "not found", "detail": "no such API path"}, 404)
    return StaticFiles(str(files("zkserver.web") / "static"))


#: Endpoints that match paths no API route has: the page's files and CORS preflights.
_CATCH_ALL = frozenset({"static", "static_branch", "preflight", "stream_preflight"})


@cache
def _route_map() -> Map:
    """The routes without :data:`_CATCH_ALL` (built once every module has added its own)."""
    return Map(
        [rule.empty() for rule in routes.url_map.iter_rules() if rule.endpoint not in _CATCH_ALL]
    )


@routes.handle_errors(NotFound, MethodNotAllowed)
def routing_error(self: WebApp, request: IRequest, failure: Failure) -> bytes:
    """A path no route has, or a method its routes do not take, answered in JSON (the
    default is werkzeug's HTML page): 404, or 405 with ``Allow`` naming the methods the
    path's own routes take (the page's GET and the preflight's OPTIONS, which match every
    path, do not make an unknown path a 405)."""
    self.apply_cors(request)
    method = request.method.decode("latin-1")
    try:
        _route_map().bind("localhost", path_info=IKleinRequest(request).mapper.path_info).match(
            method="--"
        )
    except MethodNotAllowed as e:
        allowed = sorted(set(e.valid_methods or ()) | {"OPTIONS"} - {"--"})
        request.setHeader(b"allow", ", ".join(allowed).encode())
        return json_response(
            request,
            {"error": "method not allowed", "detail": f"{method[:20]} is not one of {allowed}"},
            405,
        )
    except (NotFound, RequestRedirect):
        pass
    return json_response(request, {"error": "not found", "detail": "no such path"}, 404)


@routes.route("/api/openapi.json", methods=["GET"])
@api(authenticated=False)
async def openapi(self: WebApp, request: IRequest) -> bytes:
    from zkserver.web.openapi import openapi_document

    return json_response(request, openapi_document())


# Webhooks, device log, alerts and /metrics register on ``routes`` too.
from zkserver.web import hooks_api, persons_api  # noqa: E402,F401
