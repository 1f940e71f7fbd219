"""The push listener: Klein routes for ``/iclock/*`` (the ADMS protocol).

Thin I/O over :mod:`zkserver.push.iclock`: read the query and the raw body, find the
device, hand parsed records to the store / ingest, answer exactly what terminals expect.
``OK: n`` goes out only after the punches have committed; a database failure answers 503
so the terminal keeps its batch and resends it later.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial, wraps
from typing import Any

from attrs import define
from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from zope.interface import implementer

from zkserver import device_text
from zkserver.clock import utc_now
from zkserver.commands.service import Commands
from zkserver.commands.spec import push_result
from zkserver.devices import DeviceRegistry
from zkserver.events import user_sync_payload
from zkserver.http import text_reply, web_request
from zkserver.ingest import Ingest
from zkserver.persons.biometric import from_push_record
from zkserver.push import iclock, v3
from zkserver.push.commands import parse_info_result
from zkserver.push.device_events import oplog_items, rtlog_items, rtstate_items
from zkserver.push.timezones import device_offset_minutes
from zkserver.records import TIMESTAMP_FORMAT, Device, Rejected
from zkserver.store.base import Store, StoreUnavailable

__all__ = ["PushApp"]

log = Logger()

SERIAL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
RAW_KEEP = 64 * 1024  # bytes of a rejected upload kept for the operator


def _raw_excerpt(data: bytes, encoding: str = "") -> str:
    """The start of a rejected upload, decoded (never the whole of a 16 MiB body)."""
    text = iclock.decode_text(data[:RAW_KEEP], encoding)
    if len(data) <= RAW_KEEP:
        return text
    return text + f"\n[... {len(data) - RAW_KEEP} more bytes not kept]"


Handler = Callable[..., Awaitable[bytes]]


def terminal_route(handler: Handler, refuse: int = 403) -> Handler:
    """Common steps for every terminal request: SN check, device lookup, approval gate
    (``refuse`` for a device not approved), and a 503 (never a traceback) when the
    database or a handler fails."""

    @wraps(handler)
    async def wrapper(self: PushApp, request: IRequest) -> bytes:
        params = iclock.parse_query(request.uri)
        serial = params.get("SN", "").strip()
        if not serial:
            return text_reply(request, "ERROR: missing SN\n", 400)
        if not SERIAL_RE.match(serial):
            return text_reply(request, "ERROR: invalid SN\n", 400)
        if not self.ready():
            return text_reply(request, "ERROR: server starting, retry later\n", 503)
        try:
            device = await self.registry.push_device_seen(serial)
            if not device.approved:
                return text_reply(request, "UNAUTHORIZED: device not approved\n", refuse)
            return await handler(self, request, device, params)
        except StoreUnavailable as e:
            log.warn(
                "Database unavailable, {serial} will resend: {error}", serial=serial, error=str(e)
            )
            return text_reply(request, "ERROR: database unavailable, retry later\n", 503)
        except Exception:
            log.failure("Failed to handle {method} {uri}", method=request.method, uri=request.uri)
            return text_reply(request, "ERROR: server error, retry later\n", 503)

    return wrapper


@define(eq=False)
class PushApp:
    store: Store
    registry: DeviceRegistry
    ingest: Ingest
    clock: IReactorTime
    commands: Commands | None = None
    server_timezone: str = ""
    delay: int = 10
    error_delay: int = 30
    ready: Callable[[], bool] = lambda: True
    persons: Any = None  # zkserver.persons.service.Persons: terminal changes -> registry

    def __attrs_post_init__(self) -> None:
        if self.commands is None:
            self.commands = Commands(
                self.store, self.ingest, self.clock, server_timezone=self.server_timezone
            )

    def resource(self) -> Any:
        return _TerminalPaths(routes.__get__(self, PushApp).resource())

    def handshake(self, device: Device, params: dict[str, str]) -> str:
        offset = device_offset_minutes(device.timezone, self.server_timezone, utc_now(self.clock))
        return iclock.format_handshake(
            device.serial_number,
            timezone_offset_minutes=offset,
            delay=self.delay,
            error_delay=self.error_delay,
            push_version=params.get("pushver") or None,
        )

    async def save_rejected(self, device: Device, items: list[Rejected]) -> None:
        if items:
            log.warn(
                "Kept {count} rejected lines from {serial}",
                count=len(items),
                serial=device.serial_number,
            )
            await self.store.save_rejected(device.serial_number, items)

    async def save_device_events(self, device: Device, items: list[Any]) -> None:
        """Operation-log entries and their door/alarm/device_log events, in one
        transaction; the new events are published after the commit."""
        if items:
            now = utc_now(self.clock)
            offset = device_offset_minutes(device.timezone, self.server_timezone, now)
            local = (now + timedelta(minutes=offset)).strftime(TIMESTAMP_FORMAT)
            for _, payload in items:
                # Every event's timestamp is device-local YYYY-MM-DD HH:MM:SS: a state line
                # or log entry that sent none (or an unreadable one, kept raw in the
                # operation log) is dated when it arrived.
                if payload is not None and not iclock.TIMESTAMP_RE.fullmatch(
                    str(payload.get("timestamp") or "")
                ):
                    payload["timestamp"] = local
            self.ingest.publish(
                await self.store.save_device_events(device.id, device.serial_number, items)
            )

    async def upload(self, device: Device, table: str, body: bytes) -> str:
        """Store one ``POST /iclock/cdata`` upload and return the reply text."""
        upper = table.upper()
        encoding = device.encoding  # the device's text encoding (docs/protocols.md §A.2)
        # Rejected lines are kept after the good records have committed: if the punches
        # fail (503) nothing was written, and the terminal's resend stores each once.
        if upper == "ATTLOG":
            punches, rejected = iclock.parse_attlog(body, encoding)  # line by line
            await self.ingest.save_punches(device, punches)
            await self.save_rejected(device, rejected)
            return iclock.format_ok(len(punches))
        if upper in ("OPERLOG", "BIODATA"):
            batch = iclock.parse_operlog(body, encoding)
            if batch.users:
                await self.store.save_users(device.id, batch.users)
                await self.ingest.record_event(
                    user_sync_payload(device, [u.user_id for u in batch.users]),
                    device.serial_number,
                )
            entries = batch.oplogs + [_biometric_entry(item) for item in batch.other]
            if entries:  # OPLOG lines become device_log events (zkserver.access)
                items = oplog_items(device, batch.oplogs)
                items += [(_biometric_entry(item), None) for item in batch.other]
                await self.save_device_events(device, items)
            if self.persons is not None and (batch.users or batch.other):
                current = await self.store.device(device.id) or device  # info: versions
                templates = [
                    t
                    for t in (
                        from_push_record(item["kind"], item["raw"], current) for item in batch.other
                    )
                    if t is not None
                ]
                await self.persons.from_terminal(device, batch.users, templates)
            await self.save_rejected(device, batch.rejected)
            return iclock.format_ok(len(batch.users) + len(entries))
        if upper == "RTLOG":
            punches, rejected, other = v3.parse_rtlog(body, encoding)
            await self.ingest.save_punches(device, punches)
            # door and alarm events: kept with the operation log, published on the stream
            await self.save_device_events(device, rtlog_items(device, punches, other, _rtlog_entry))
            await self.save_rejected(device, rejected)
            return iclock.format_ok(len(punches) + len(other))
        if upper == "RTSTATE":  # door/lock/alarm state: sent every few seconds, kept current
            lines = [
                ln
                for ln in iclock.split_lines(iclock.decode_text(body[:OPTIONS_MAX], encoding))
                if ln.strip()
            ]
            stored = await self.store.device(device.id)  # the state it sent last time
            previous = (stored or device).info.get("rtstate")
            changes: list[Any] = []
            state: dict[str, str] = {}
            for line in lines[-100:]:  # each line a state, oldest first: every change counts
                # keys in any case, a loose time read as the documented form (§A.10)
                state = _printable(iclock.lower_keys(iclock.parse_key_values(line)))
                if "time" in state:
                    state["time"] = iclock.normal_timestamp(state["time"])
                changes += rtstate_items(device, previous, state)
                previous = state
            await self.save_device_events(device, changes)
            await self.store.update_device(device.id, info={"rtstate": state})
            return "OK"
        if upper == "ATTPHOTO":
            return await self.photo(device, body)
        if upper == "OPTIONS":
            options = _printable(iclock.parse_options(body[:OPTIONS_MAX], encoding))
            await self.store.update_device(device.id, info={"options": options})
            return "OK"
        log.warn(
            "Unknown table {table} from {serial}; kept raw",
            table=table,
            serial=device.serial_number,
        )
        await self.store.save_rejected(
            device.serial_number,
            [
                Rejected(
                    source=table[:40] or "cdata",
                    raw=_raw_excerpt(body, encoding),
                    reason=f"unknown table {table!r}",
                )
            ],
        )
        return "OK"

    async def photo(self, device: Device, body: bytes) -> str:
        try:
            photo = iclock.parse_attphoto(body, device.encoding)
        except ValueError as e:
            await self.store.save_rejected(
                device.serial_number,
                [
                    Rejected(
                        source="ATTPHOTO",
                        raw=_raw_excerpt(body[:4096], device.encoding),
                        reason=str(e),
                    )
                ],
            )
            return "OK"
        await self.store.save_photo(
            device.id, photo.user_id, photo.timestamp, photo.filename, photo.data
        )
        return "OK"


@implementer(IResource)
class _TerminalPaths:
    """In front of the routes: a path as other firmware writes it (``/iclock/cdata.aspx``,
    ``/iclock/getrequest/``) is routed as the documented one (docs/protocols.md §A.11)."""

    isLeaf = True

    def __init__(self, routes: IResource) -> None:
        self.routes = routes

    def render(self, request: IRequest) -> Any:
        web = web_request(request)
        web.postpath = iclock.terminal_path(web.postpath or [])
        return self.routes.render(request)

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:  # noqa: N802
        return self  # a leaf: never asked

    def putChild(self, path: bytes, child: IResource) -> None:  # noqa: N802
        raise NotImplementedError("wraps the push routes")


OPTIONS_MAX = 64 * 1024  # bytes of a table=options upload that are read
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(options: dict[str, str], limit: int = 200) -> dict[str, str]:
    """Device options as shown in the API: printable, bounded keys and values."""
    kept: dict[str, str] = {}
    for key, value in options.items():
        key = _CONTROL.sub("", key).strip()[:64]
        if key and len(kept) < limit:
            kept[key] = _CONTROL.sub("", value)[:256]
    return kept


def _biometric_entry(item: dict[str, str]) -> dict[str, Any]:
    """An FP/FACE/USERPIC/BIODATA record for the operation log (the template is kept raw;
    the digest tells a changed template from a resent one)."""
    raw = item["raw"]
    digest = hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()[:16]
    return {
        "op": item["kind"],
        "operator": item["pin"],
        "timestamp": "",
        "obj": item.get("index", ""),
        "values": [f"sha256={digest}", f"size={len(raw)}"],
        "raw": raw,
    }


def _rtlog_entry(fields: dict[str, str]) -> dict[str, Any]:
    return {
        "op": f"rtlog:{fields.get('event', '')}",
        "operator": fields.get("pin", ""),
        "timestamp": fields.get("time", ""),
        "obj": fields.get("eventaddr", ""),
        "values": [f"{k}={v}" for k, v in fields.items() if k not in ("time", "event")],
        "raw": "\t".join(f"{k}={v}" for k, v in fields.items()),
    }


routes = Klein()


def _body(request: IRequest) -> bytes:
    return request.content.read() if request.content is not None else b""


@routes.route("/iclock/cdata", methods=["GET", "HEAD"])
@terminal_route
async def cdata_get(
    self: PushApp, request: IRequest, device: Device, params: dict[str, str]
) -> bytes:
    if params.get("pushver") or params.get("DeviceType") or params.get("language"):
        await self.store.update_device(
            device.id,
            info={k: params[k] for k in ("pushver", "DeviceType", "language") if k in params},
        )
    return text_reply(request, self.handshake(device, params))


@routes.route("/iclock/cdata", methods=["POST"])
@terminal_route
async def cdata_post(
    self: PushApp, request: IRequest, device: Device, params: dict[str, str]
) -> bytes:
    table = params.get("table", "")
    return text_reply(request, await self.upload(device, table, _body(request)))


@routes.route("/iclock/fdata", methods=["POST"])
@terminal_route
async def fdata(self: PushApp, request: IRequest, device: Device, params: dict[str, str]) -> bytes:
    return text_reply(request, await self.photo(device, _body(request)))


# getrequest and ping: some firmware polls with POST (docs/protocols.md §A.11)
@routes.route("/iclock/getrequest", methods=["GET", "HEAD", "POST"])
@terminal_route
async def getrequest(
    self: PushApp, request: IRequest, device: Device, params: dict[str, str]
) -> bytes:
    if params.get("INFO"):
        await self.store.update_device(device.id, info=iclock.parse_info(params["INFO"]))
    assert self.commands is not None
    if request.method == b"HEAD":  # no body goes out: hand out no command
        return text_reply(request, "OK")
    claimed = await self.commands.claim_push(device)
    # names in the device's encoding (docs/protocols.md §A.2)
    reply = iclock.format_commands([(c.id, line) for c, line in claimed])
    return text_reply(request, reply, encoding=device_text.write_encoding(device.encoding))


@routes.route("/iclock/devicecmd", methods=["POST"])
@terminal_route
async def devicecmd(
    self: PushApp, request: IRequest, device: Device, params: dict[str, str]
) -> bytes:
    """Results, one ``ID=..&Return=..&CMD=..`` line each (INFO's Key=Value lines follow
    it): each finishes its command (a repeated result changes nothing) and publishes a
    ``command_status`` event (and the ``command_result`` alias)."""
    assert self.commands is not None
    for result in iclock.parse_devicecmd(_body(request), device.encoding):
        code = result.return_code
        status = "done" if code == 0 else "failed"
        command = await self.commands.finish(
            result.id, status, code, push_result(code, result.result), device_id=device.id
        )
        if command is None:
            log.info(
                "Result for unknown or finished command {id} from {serial}",
                id=result.id,
                serial=device.serial_number,
            )
            continue
        if command.type == "info" or result.cmd.upper() == "INFO":
            info = parse_info_result(result.result)
            if info:
                await self.store.update_device(device.id, info=info)
    return text_reply(request, "OK")


@routes.route("/iclock/registry", methods=["POST"])
@partial(terminal_route, refuse=406)
async def registry(
    self: PushApp, request: IRequest, device: Device, params: dict[str, str]
) -> bytes:
    """Push 3.x: a terminal registers; 406 refuses one that is not approved (yet)."""
    options = iclock.parse_options(_body(request), device.encoding)
    if options:
        await self.store.update_device(device.id, info={"registry": options})
    return text_reply(request, f"RegistryCode={v3.registry_code(device.serial_number)}")


@routes.route("/iclock/push", methods=["GET", "POST"])
@terminal_route
async def push_config(
    self: PushApp, request: IRequest, device: Device, params: dict[str, str]
) -> bytes:
    offset = device_offset_minutes(device.timezone, self.server_timezone, utc_now(self.clock))
    return text_reply(
        request,
        v3.format_push_config(
            device.serial_number,
            delay=self.delay,
            error_delay=self.error_delay,
            timezone_offset_minutes=offset,
        ),
    )


@routes.route("/iclock/ping", methods=["GET", "HEAD", "POST"])
@terminal_route
async def ping(self: PushApp, request: IRequest, device: Device, params: dict[str, str]) -> bytes:
    return text_reply(request, "OK")


@routes.route("/iclock/rtdata", methods=["GET"])
@terminal_route
async def rtdata(self: PushApp, request: IRequest, device: Device, params: dict[str, str]) -> bytes:
    now = utc_now(self.clock)
    offset = device_offset_minutes(device.timezone, self.server_timezone, now)
    sign = "+" if offset >= 0 else "-"
    tz = f"{sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"
    return text_reply(request, f"DateTime={int(now.timestamp())},ServerTZ={tz}")


@routes.route("/", branch=True)
def not_found(self: PushApp, request: IRequest) -> bytes:
    return text_reply(request, "Not found: this listener serves /iclock/* only\n", 404)
