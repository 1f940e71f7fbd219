"""Routes for webhooks, the device log, device alerts and ``GET /metrics``.

Registered on the web app's Klein routes (imported at the end of
:mod:`zkserver.web.app`). Bad input answers 400 with ``field`` (the JSON name) and
``detail``; a webhook URL pointing into the internal network is refused (400 naming
``url``) unless the server runs with ``--webhook-allow-private``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from attrs import define, field
from twisted.web.iweb import IRequest

from zkserver import metrics
from zkserver.access import ACCESS_EVENT_TYPES
from zkserver.store.base import row_id
from zkserver.web.app import (
    ApiError,
    WebApp,
    _int,
    _time_filter,
    api,
    json_response,
    read_json,
    routes,
)
from zkserver.web.auth import query_params
from zkserver.webhooks.model import DELIVERY_STATUSES, Webhook
from zkserver.webhooks.signing import new_secret
from zkserver.webhooks.urls import BadWebhookURL, Resolver, check_webhook_url

__all__ = ["HooksConfig", "EVENT_TYPES", "FieldError"]

#: Event types a subscription may filter on (the stream's types).
EVENT_TYPES = (
    "attendance",
    "device_status",
    "user_sync",
    "command_result",
    "command_status",
    *ACCESS_EVENT_TYPES,
    "device_alert",
)
SERIAL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SECRET_RE = re.compile(r"^[\x21-\x7e]{16,200}$")
DEVICE_LOG_TYPES = ("oplog", "rtlog", "biometric")
_DIGITS = re.compile(r"[0-9]{1,19}")


@define(eq=False)
class HooksConfig:
    """What these routes need besides the store (set up by zkserver.tap)."""

    sender: Any  # zkserver.webhooks.service.WebhookSender
    resolve: Resolver
    allow_private: bool = False
    metrics_public: bool = False
    extra_types: tuple[str, ...] = ()
    pull_sessions: Callable[[], Mapping[str, int]] = field(default=lambda: {})

    def types(self) -> tuple[str, ...]:
        return EVENT_TYPES + self.extra_types


class FieldError(ApiError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(400, f"{name}: {message}")
        self.field = name
        self.detail = f"{name}: {message}"


def _field_errors(handler: Any) -> Any:
    """Answer a FieldError as ``{"error", "field", "detail"}`` (inside :func:`api`)."""

    async def wrapper(self: WebApp, request: IRequest, *args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(self, request, *args, **kwargs)
        except FieldError as e:
            return json_response(
                request, {"error": f"invalid {e.field}", "field": e.field, "detail": e.detail}, 400
            )

    wrapper.__name__ = handler.__name__
    return wrapper


def _hooks(self: WebApp) -> HooksConfig:
    hooks = getattr(self, "hooks", None)
    if hooks is None:
        raise ApiError(503, "webhooks are not configured in this process")
    return hooks


def _names(body: Mapping[str, Any], name: str, allowed: tuple[str, ...] | None) -> list[str]:
    value = body.get(name, [])
    if value is None:
        return []
    if isinstance(value, str):
        value = [v for v in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FieldError(name, "must be a list of strings")
    names = list(dict.fromkeys(v.strip() for v in value if v.strip()))
    if len(names) > 200:
        raise FieldError(name, "has more than 200 entries")
    for item in names:
        if allowed is not None and item not in allowed:
            raise FieldError(
                name, f"unknown event type {item[:40]!r} (known: {', '.join(allowed)})"
            )
        if allowed is None and not SERIAL_RE.match(item):
            raise FieldError(name, f"{item[:40]!r} is not a serial number")
    return names


async def _fields(self: WebApp, body: Mapping[str, Any], creating: bool) -> dict[str, Any]:
    hooks = _hooks(self)
    known = {"url", "secret", "types", "devices", "batch_max", "active", "description"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise FieldError(unknown[0], "unknown field")
    fields: dict[str, Any] = {}
    if "secret" in body and body["secret"] is not None:
        secret = body["secret"]
        if not isinstance(secret, str) or not SECRET_RE.match(secret):
            raise FieldError("secret", "must be 16 to 200 printable ASCII characters")
        fields["secret"] = secret
    elif creating:
        fields["secret"] = new_secret()
    if "types" in body:
        fields["types"] = _names(body, "types", hooks.types())
    if "devices" in body:
        fields["devices"] = _names(body, "devices", None)
    if "batch_max" in body:
        try:
            fields["batch_max"] = _int(body["batch_max"], "batch_max", 1, 1000)
        except ApiError:
            raise FieldError("batch_max", "must be an integer from 1 to 1000") from None
    if "active" in body:
        if not isinstance(body["active"], bool):
            raise FieldError("active", "must be true or false")
        fields["active"] = body["active"]
    if "description" in body:
        text = body["description"]
        if not isinstance(text, str) or len(text) > 500:
            raise FieldError("description", "must be a string of at most 500 characters")
        fields["description"] = text
    if "url" in body or creating:
        if "url" not in body:
            raise FieldError("url", "is required")
        try:
            parsed = await check_webhook_url(body["url"], hooks.resolve, hooks.allow_private)
        except BadWebhookURL as e:
            raise FieldError("url", str(e)) from None
        fields["url"] = parsed.url
    return fields


async def _webhook_or_404(self: WebApp, webhook_id: str) -> Webhook:
    number = row_id(webhook_id)
    if number is None:
        raise ApiError(404, "no such webhook")
    hook = await self.store.webhook(number)
    if hook is None:
        raise ApiError(404, "no such webhook")
    return hook


# --- subscriptions -----------------------------------------------------------------------
@routes.route("/api/webhooks", methods=["POST"])
@api()
@_field_errors
async def add_webhook(self: WebApp, request: IRequest) -> bytes:
    fields = await _fields(self, read_json(request), creating=True)
    hook = await self.store.add_webhook(**fields)
    _hooks(self).sender.wake()
    request.setHeader(b"location", f"/api/webhooks/{hook.id}".encode())
    return json_response(request, hook.public(with_secret=True), 201)


@routes.route("/api/webhooks", methods=["GET"])
@api()
async def list_webhooks(self: WebApp, request: IRequest) -> bytes:
    hooks = await self.store.webhooks()
    return json_response(request, [h.public() for h in hooks])


@routes.route("/api/webhooks/<webhook_id>", methods=["GET"])
@api()
async def get_webhook(self: WebApp, request: IRequest, webhook_id: str) -> bytes:
    return json_response(request, (await _webhook_or_404(self, webhook_id)).public())


@routes.route("/api/webhooks/<webhook_id>", methods=["PATCH"])
@api()
@_field_errors
async def update_webhook(self: WebApp, request: IRequest, webhook_id: str) -> bytes:
    hook = await _webhook_or_404(self, webhook_id)
    body = read_json(request)
    fields = await _fields(self, body, creating=False)
    updated = await self.store.update_webhook(hook.id, **fields)
    if updated is None:
        raise ApiError(404, "no such webhook")
    if updated.active:
        _hooks(self).sender.wake()
    # A secret is shown only when this request set a new one (null keeps the old one).
    return json_response(request, updated.public(with_secret="secret" in fields))


@routes.route("/api/webhooks/<webhook_id>", methods=["DELETE"])
@api()
async def delete_webhook(self: WebApp, request: IRequest, webhook_id: str) -> bytes:
    hook = await _webhook_or_404(self, webhook_id)
    await self.store.delete_webhook(hook.id)
    return json_response(request, {"deleted": True, "id": hook.id})


def _page(params: dict[str, str], cursor_rule: str) -> tuple[int, str | None]:
    """``limit`` (1-1000, default 100) and a numeric ``cursor`` from the query; FieldError
    naming the field otherwise."""
    try:
        limit = _int(params.get("limit", 100), "limit", 1, 1000)
    except ApiError:
        raise FieldError("limit", "must be an integer from 1 to 1000") from None
    cursor = params.get("cursor") or None
    # ASCII digits of an id a database column can hold ("²" is a digit to isdigit, and
    # int() refuses it; 10**22 overflows SQLite's INTEGER): anything else was a 500.
    if cursor is not None and not (_DIGITS.fullmatch(cursor) and int(cursor) < 1 << 63):
        raise FieldError("cursor", cursor_rule)
    return limit, cursor


# --- the delivery log ----------------------------------------------------------------------
@routes.route("/api/webhooks/<webhook_id>/deliveries", methods=["GET"])
@api()
@_field_errors
async def webhook_deliveries(self: WebApp, request: IRequest, webhook_id: str) -> bytes:
    hook = await _webhook_or_404(self, webhook_id)
    params = query_params(request)
    status = params.get("status") or None
    if status is not None and status not in DELIVERY_STATUSES:
        raise FieldError("status", f"must be one of {', '.join(DELIVERY_STATUSES)}")
    limit, cursor = _page(params, "must be a delivery id")
    rows = await self.store.webhook_deliveries(
        hook.id, status, limit + 1, int(cursor) if cursor else None
    )
    items = [r.public() for r in rows[:limit]]
    next_cursor = str(items[-1]["id"]) if len(rows) > limit else None
    return json_response(request, {"items": items, "next_cursor": next_cursor})


@routes.route("/api/webhooks/<webhook_id>/deliveries/<delivery_id>/retry", methods=["POST"])
@api()
async def retry_delivery(
    self: WebApp, request: IRequest, webhook_id: str, delivery_id: str
) -> bytes:
    hook = await _webhook_or_404(self, webhook_id)
    number = row_id(delivery_id)
    if number is None:
        raise ApiError(404, "no such delivery")
    delivery = await self.store.retry_delivery(hook.id, number)
    if delivery is None:
        raise ApiError(404, "no such delivery")
    _hooks(self).sender.wake()
    return json_response(request, delivery.public())


@routes.route("/api/webhooks/<webhook_id>/test", methods=["POST"])
@api()
async def test_webhook(self: WebApp, request: IRequest, webhook_id: str) -> bytes:
    hook = await _webhook_or_404(self, webhook_id)
    result = await _hooks(self).sender.ping(hook)
    return json_response(request, result)


# --- device log and alerts ---------------------------------------------------------------
@routes.route("/api/device-log", methods=["GET"])
@api()
@_field_errors
async def device_log(self: WebApp, request: IRequest) -> bytes:
    params = query_params(request)
    kind = params.get("type") or None
    if kind is not None and kind not in DEVICE_LOG_TYPES:
        raise FieldError("type", f"must be one of {', '.join(DEVICE_LOG_TYPES)}")
    limit, cursor = _page(params, "must be a cursor returned by this route")
    try:
        since = _time_filter(params, "since")
        until = _time_filter(params, "until")
    except ApiError as e:
        name = "since" if e.message.startswith("since") else "until"
        raise FieldError(name, "must be YYYY-MM-DD or YYYY-MM-DD HH:MM[:SS]") from None
    rows, next_cursor = await self.store.device_log(
        device_id=params.get("device_id") or None,
        kind=kind,
        since=since,
        until=until,
        cursor=int(cursor) if cursor else None,
        limit=limit,
    )
    return json_response(
        request,
        {"items": rows, "next_cursor": None if next_cursor is None else str(next_cursor)},
    )


@routes.route("/api/alerts", methods=["GET"])
@api()
async def open_alerts(self: WebApp, request: IRequest) -> bytes:
    params = query_params(request)
    rows = await self.store.open_alerts(params.get("device_id") or None)
    return json_response(request, rows)


# --- metrics -------------------------------------------------------------------------------
@routes.route("/metrics", methods=["GET"])
@api(authenticated=False)
async def prometheus_metrics(self: WebApp, request: IRequest) -> bytes:
    hooks = getattr(self, "hooks", None)
    public = hooks is not None and hooks.metrics_public
    if not public and not self.auth.check(request):
        return json_response(
            request, {"error": "unauthorized", "detail": "missing or wrong token"}, 401
        )
    store: Any = self.store

    async def commands() -> dict[str, int]:
        return dict(await store.command_counts())

    async def alerts() -> int:
        return len(await store.open_alerts())

    text = await metrics.scrape(
        sse_clients=lambda: len(self.events.broadcaster.subscribers),
        pull_sessions=hooks.pull_sessions if hooks is not None else (lambda: {}),
        commands=commands,
        alerts_open=alerts,
    )
    request.setHeader(b"content-type", metrics.CONTENT_TYPE.encode())
    request.setHeader(b"cache-control", b"no-store")
    return text
