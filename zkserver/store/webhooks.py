"""Webhook subscriptions, the outbox, device-log reads and open alerts: transaction scripts.

:class:`WebhookStoreMixin` is part of :class:`~zkserver.store.sql.SQLStore` (both
backends). :meth:`WebhookStoreMixin._outbox` is the one call every event-writing script
makes after inserting its events, in the same transaction: a committed event always has
its delivery rows, a rolled-back one never does.

Server times are UTC ISO-8601 text in one format (``utc_now()``), so they compare as text.
Per-subscription exclusion across processes uses the store's pull-device lock on the key
``webhook:<id>`` (a PostgreSQL session advisory lock, gone with a dead process).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed

from zkserver.events import Event, encode_payload
from zkserver.store.dialect import Q, Script, chunks, utc_now
from zkserver.webhooks.model import Delivery, DueDelivery, Webhook, pack_names, unpack_names

__all__ = ["WebhookStoreMixin", "WEBHOOK_FIELDS"]

WEBHOOK_COLS = (
    "id, url, secret, types, devices, batch_max, active, description, created_at, updated_at"
)
DELIVERY_COLS = (
    "id, webhook_id, event_id, status, attempts, last_attempt_at, next_attempt_at,"
    " response_code, error, created_at"
)
WEBHOOK_FIELDS = frozenset(
    {"url", "secret", "types", "devices", "batch_max", "active", "description"}
)
OPERLOG_COLS = "id, device_id, op, operator, timestamp, obj, vals, raw, received_at"


def _webhook(row: Any) -> Webhook:
    return Webhook(
        id=int(row[0]),
        url=row[1],
        secret=row[2],
        types=unpack_names(row[3]),
        devices=unpack_names(row[4]),
        batch_max=int(row[5]),
        active=bool(row[6]),
        description=row[7],
        created_at=row[8],
        updated_at=row[9],
    )


def _delivery(row: Any) -> Delivery:
    return Delivery(
        id=int(row[0]),
        webhook_id=int(row[1]),
        event_id=int(row[2]),
        status=row[3],
        attempts=int(row[4]),
        last_attempt_at=row[5],
        next_attempt_at=row[6],
        response_code=None if row[7] is None else int(row[7]),
        error=row[8],
        created_at=row[9],
    )


def _column(name: str, value: Any) -> Any:
    if name in ("types", "devices"):
        return pack_names(tuple(value))
    if name == "active":
        return int(bool(value))
    if name == "batch_max":
        return int(value)
    return value


#: The outbox rows of events ``e`` (``id``, ``type``, ``serial_number``) and webhooks
#: ``w``, ``pending`` now: followed by a ``FROM`` naming both and a ``WHERE`` with
#: :data:`OUTBOX_MATCH`; its two parameters are the time now (next attempt, created).
OUTBOX_INSERT = (
    "INSERT INTO webhook_deliveries (webhook_id, event_id, status, attempts,"
    " next_attempt_at, error, created_at) SELECT w.id, e.id, 'pending', 0, %s, '', %s"
)
#: Which webhooks want event ``e``: their type and device lists (empty: every one).
OUTBOX_MATCH = (
    "(w.types = '' OR length(replace(w.types, ',' || e.type || ',', '')) < length(w.types))"
    " AND (w.devices = '' OR length(replace(w.devices, ',' || e.serial_number || ',', ''))"
    " < length(w.devices))"
)


class WebhookStoreMixin:
    """Transaction scripts for webhooks; mixed into SQLStore (needs ``_call``)."""

    def _call(self, make: Any, *args: Any, write: bool = True) -> Deferred[Any]:
        raise NotImplementedError

    # --- the outbox (called inside event-writing scripts) ---------------------------
    def _outbox(self, first_id: int, last_id: int, now: str) -> Iterator[Q]:
        """One delivery row per subscription (a paused one too: its events queue until it
        is active again) wanting each event with id in
        [first_id, last_id] (this transaction's events: ids are allocated under the
        events lock, so no other transaction's events lie in between)."""
        yield Q(
            f"{OUTBOX_INSERT} FROM events e, webhooks w"
            f" WHERE e.id >= %s AND e.id <= %s AND {OUTBOX_MATCH}",
            (now, now, int(first_id), int(last_id)),
            fetch=False,
            prepare=True,
        )

    def _append_events(self, items: Sequence[tuple[dict[str, Any], str]]) -> Script[list[Event]]:
        """Insert events (payload, serial number) with their outbox rows; the caller's
        script has taken the events lock. Returns them, ids ascending."""
        now = utc_now()
        events: list[Event] = []
        for chunk in chunks(list(items)):
            texts = [encode_payload(p) for p, _ in chunk]
            for (payload, serial), text in zip(chunk, texts, strict=True):
                rows = yield Q(
                    "INSERT INTO events (type, serial_number, payload, created_at)"
                    " VALUES (%s, %s, %s, %s) RETURNING id",
                    (payload["type"], serial, text, now),
                )
                events.append(
                    Event(int(rows[0][0]), payload["type"], dict(payload), serial, data=text)
                )
        if events:
            yield from self._outbox(events[0].id, events[-1].id, now)
        return events

    # --- subscriptions --------------------------------------------------------------
    def add_webhook(
        self,
        *,
        url: str,
        secret: str,
        types: Sequence[str] = (),
        devices: Sequence[str] = (),
        batch_max: int = 1,
        active: bool = True,
        description: str = "",
    ) -> Deferred[Webhook]:
        def script() -> Script[Webhook]:
            now = utc_now()
            rows = yield Q(
                "INSERT INTO webhooks (url, secret, types, devices, batch_max, active,"
                " description, created_at, updated_at)"
                f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {WEBHOOK_COLS}",
                (
                    url,
                    secret,
                    pack_names(tuple(types)),
                    pack_names(tuple(devices)),
                    int(batch_max),
                    int(bool(active)),
                    description,
                    now,
                    now,
                ),
            )
            return _webhook(rows[0])

        return self._call(script)

    def webhook(self, webhook_id: int) -> Deferred[Webhook | None]:
        def script() -> Script[Webhook | None]:
            rows = yield Q(f"SELECT {WEBHOOK_COLS} FROM webhooks WHERE id = %s", (int(webhook_id),))
            return _webhook(rows[0]) if rows else None

        return self._call(script, write=False)

    def webhooks(self) -> Deferred[list[Webhook]]:
        def script() -> Script[list[Webhook]]:
            rows = yield Q(f"SELECT {WEBHOOK_COLS} FROM webhooks ORDER BY id")
            return [_webhook(row) for row in rows]

        return self._call(script, write=False)

    def update_webhook(self, webhook_id: int, **fields: Any) -> Deferred[Webhook | None]:
        unknown = set(fields) - WEBHOOK_FIELDS
        if unknown:
            raise TypeError(f"update_webhook: unknown fields {sorted(unknown)}")

        def script() -> Script[Webhook | None]:
            names = sorted(fields)
            assignments = "".join(f"{name} = %s, " for name in names)
            rows = yield Q(
                f"UPDATE webhooks SET {assignments}updated_at = %s WHERE id = %s"
                f" RETURNING {WEBHOOK_COLS}",
                (*(_column(n, fields[n]) for n in names), utc_now(), int(webhook_id)),
            )
            return _webhook(rows[0]) if rows else None

        return self._call(script)

    def delete_webhook(self, webhook_id: int) -> Deferred[bool]:
        def script() -> Script[bool]:
            yield Q("DELETE FROM webhook_deliveries WHERE webhook_id = %s", (int(webhook_id),))
            rows = yield Q("DELETE FROM webhooks WHERE id = %s RETURNING id", (int(webhook_id),))
            return bool(rows)

        return self._call(script)

    # --- the delivery log -----------------------------------------------------------
    def webhook_deliveries(
        self,
        webhook_id: int,
        status: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> Deferred[list[Delivery]]:
        """Newest first; ``before`` continues from a delivery id."""

        def script() -> Script[list[Delivery]]:
            where = ["webhook_id = %s"]
            params: list[Any] = [int(webhook_id)]
            if status:
                where.append("status = %s")
                params.append(status)
            if before is not None:
                where.append("id < %s")
                params.append(int(before))
            rows = yield Q(
                f"SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE {' AND '.join(where)}"
                " ORDER BY id DESC LIMIT %s",
                (*params, min(max(int(limit), 1), 1000)),
            )
            return [_delivery(row) for row in rows]

        return self._call(script, write=False)

    def retry_delivery(self, webhook_id: int, delivery_id: int) -> Deferred[Delivery | None]:
        """Make a delivery pending and due now (a new give-up window starts)."""

        def script() -> Script[Delivery | None]:
            rows = yield Q(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = %s,"
                " first_attempt_at = NULL WHERE webhook_id = %s AND id = %s"
                f" RETURNING {DELIVERY_COLS}",
                (utc_now(), int(webhook_id), int(delivery_id)),
            )
            return _delivery(rows[0]) if rows else None

        return self._call(script)

    # --- what the sender uses -------------------------------------------------------
    def due_webhooks(self, now: str, limit: int = 500) -> Deferred[list[int]]:
        """Active subscriptions whose oldest pending delivery is due at ``now``."""

        def script() -> Script[list[int]]:
            # The head (lowest pending event id) decides: a later delivery that is due
            # waits behind a head still backing off.
            rows = yield Q(
                "SELECT d.webhook_id FROM webhook_deliveries d"
                " JOIN webhooks w ON w.id = d.webhook_id"
                " WHERE d.status = 'pending' AND w.active = 1 AND d.next_attempt_at <= %s"
                " AND d.event_id = (SELECT MIN(h.event_id) FROM webhook_deliveries h"
                "  WHERE h.webhook_id = d.webhook_id AND h.status = 'pending')"
                " ORDER BY d.webhook_id LIMIT %s",
                (now, int(limit)),
            )
            return [int(row[0]) for row in rows]

        return self._call(script, write=False)

    def next_deliveries(self, webhook_id: int, now: str, limit: int) -> Deferred[list[DueDelivery]]:
        """The head of a subscription's queue, in event-id order, when its first pending
        delivery is due (else nothing: a failing head holds back the rest)."""

        def script() -> Script[list[DueDelivery]]:
            rows = yield Q(
                "SELECT d.id, d.event_id, e.payload, d.attempts, d.first_attempt_at,"
                " d.next_attempt_at FROM webhook_deliveries d JOIN events e ON e.id = d.event_id"
                " WHERE d.webhook_id = %s AND d.status = 'pending'"
                " ORDER BY d.event_id LIMIT %s",
                (int(webhook_id), max(1, int(limit))),
            )
            if not rows or rows[0][5] > now:
                return []
            return [DueDelivery(int(r[0]), int(r[1]), r[2], int(r[3]), r[4]) for r in rows]

        return self._call(script, write=False)

    def record_attempt(
        self,
        delivery_ids: Sequence[int],
        *,
        at: str,
        status: str,
        response_code: int | None,
        error: str,
        next_attempt_at: str,
    ) -> Deferred[None]:
        """The outcome of one POST for these deliveries (delivered, pending or failed)."""
        if not delivery_ids:
            return succeed(None)

        def script() -> Script[None]:
            marks = ", ".join(["%s"] * len(delivery_ids))
            yield Q(
                "UPDATE webhook_deliveries SET status = %s, attempts = attempts + 1,"
                " first_attempt_at = COALESCE(first_attempt_at, %s), last_attempt_at = %s,"
                " next_attempt_at = %s, response_code = %s, error = %s"
                f" WHERE id IN ({marks})",
                (
                    status,
                    at,
                    at,
                    next_attempt_at,
                    response_code,
                    error[:500],
                    *(int(i) for i in delivery_ids),
                ),
            )

        return self._call(script)

    def command_counts(self) -> Deferred[dict[str, int]]:
        """Commands by status (the ``zkserver_commands`` gauge)."""

        def script() -> Script[dict[str, int]]:
            rows = yield Q("SELECT status, COUNT(*) FROM commands GROUP BY status")
            return {row[0]: int(row[1]) for row in rows}

        return self._call(script, write=False)

    def delivery_counts(self) -> Deferred[dict[str, int]]:
        def script() -> Script[dict[str, int]]:
            rows = yield Q("SELECT status, COUNT(*) FROM webhook_deliveries GROUP BY status")
            return {row[0]: int(row[1]) for row in rows}

        return self._call(script, write=False)

    # --- the operation log (GET /api/device-log) ------------------------------------
    def device_log(
        self,
        *,
        device_id: str | None = None,
        kind: str | None = None,
        since: str | None = None,
        until: str | None = None,
        cursor: int | None = None,
        limit: int = 100,
    ) -> Deferred[tuple[list[dict[str, Any]], int | None]]:
        """Operation-log rows newest first (by id). ``kind``: ``oplog`` (OPLOG lines),
        ``rtlog`` (door/alarm lines), ``biometric`` (templates, pictures)."""

        def script() -> Script[tuple[list[dict[str, Any]], int | None]]:
            where: list[str] = []
            params: list[Any] = []
            if device_id is not None:
                where.append("device_id = %s")
                params.append(device_id)
            if kind == "rtlog":
                where.append("op LIKE 'rtlog:%%'")
            elif kind == "oplog":
                where.append(
                    "op <> '' AND op NOT LIKE 'rtlog:%%' AND op NOT IN"
                    " ('FP', 'FACE', 'USERPIC', 'BIODATA', 'BIOPHOTO')"
                )
            elif kind == "biometric":
                where.append("op IN ('FP', 'FACE', 'USERPIC', 'BIODATA', 'BIOPHOTO')")
            if since:
                where.append("timestamp >= %s")
                params.append(since)
            if until:
                where.append("timestamp <= %s")
                params.append(until + " 23:59:59" if len(until) == 10 else until)
            if cursor is not None:
                where.append("id < %s")
                params.append(int(cursor))
            size = min(max(int(limit), 1), 1000)
            rows = yield Q(
                f"SELECT {OPERLOG_COLS} FROM operlog"
                + (" WHERE " + " AND ".join(where) if where else "")
                + " ORDER BY id DESC LIMIT %s",
                (*params, size + 1),
            )
            page = [
                {
                    "id": int(r[0]),
                    "device_id": r[1],
                    "op": r[2],
                    "operator": r[3],
                    "timestamp": r[4],
                    "object": r[5],
                    "values": json.loads(r[6] or "[]"),
                    "raw": r[7],
                    "received_at": r[8],
                }
                for r in rows[:size]
            ]
            return page, (page[-1]["id"] if len(rows) > size else None)

        return self._call(script, write=False)

    # --- door/alarm/device-log events with the operation log ------------------------
    def _lock_events(self) -> Iterator[Q]:
        raise NotImplementedError

    def _notify_events(self, max_id: int) -> Iterator[Q]:
        raise NotImplementedError

    def save_device_events(
        self,
        device_id: str,
        serial_number: str,
        items: Sequence[tuple[dict[str, Any] | None, dict[str, Any] | None]],
    ) -> Deferred[list[Event]]:
        """In ONE transaction: keep each operation-log entry once (a resent one is
        skipped with its event) and append the event payloads of the new ones (an item
        without an entry always appends its event). Returns the new events."""

        def script() -> Script[list[Event]]:
            now = utc_now()
            payloads: list[tuple[dict[str, Any], str]] = []
            for entry, payload in items:
                if entry is not None:
                    rows = yield Q(
                        "INSERT INTO operlog (device_id, op, operator, timestamp, obj, vals,"
                        " raw, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (device_id, timestamp, op, operator, obj, vals)"
                        " DO NOTHING RETURNING id",
                        (
                            device_id,
                            str(entry.get("op", "")),
                            str(entry.get("operator", "")),
                            str(entry.get("timestamp", "")),
                            str(entry.get("obj", "")),
                            encode_payload(entry.get("values", [])),
                            str(entry.get("raw", "")),
                            now,
                        ),
                    )
                    if not rows:
                        continue
                if payload is not None:
                    payloads.append((payload, serial_number))
            if not payloads:
                return []
            yield from self._lock_events()
            events = yield from self._append_events(payloads)
            yield from self._notify_events(events[-1].id)
            return events

        return self._call(script)

    # --- device alerts --------------------------------------------------------------
    def open_alerts(self, device_id: str | None = None) -> Deferred[list[dict[str, Any]]]:
        def script() -> Script[list[dict[str, Any]]]:
            sql = "SELECT device_id, alert, detail, opened_at, last_sent_at FROM device_alerts"
            if device_id is None:
                rows = yield Q(sql + " ORDER BY device_id, alert")
            else:
                rows = yield Q(sql + " WHERE device_id = %s ORDER BY alert", (device_id,))
            names = ("device_id", "alert", "detail", "opened_at", "last_sent_at")
            return [dict(zip(names, row, strict=True)) for row in rows]

        return self._call(script, write=False)

    def drop_alerts(self, device_id: str) -> Deferred[None]:
        def script() -> Script[None]:
            yield Q("DELETE FROM device_alerts WHERE device_id = %s", (device_id,))

        return self._call(script)

    def apply_alert(
        self,
        device_id: str,
        alert: str,
        state: str,
        *,
        detail: str,
        at: str,
        last_sent_at: str | None,
        payload: dict[str, Any],
        serial_number: str,
    ) -> Deferred[Event | None]:
        """Open, repeat or close an alert and append its ``device_alert`` event, once:
        with several processes only the one whose change applies gets an event.
        ``last_sent_at`` is the value the caller saw (a repeat applies only if unchanged)."""

        def script() -> Script[Event | None]:
            if state == "recovered":
                rows = yield Q(
                    "DELETE FROM device_alerts WHERE device_id = %s AND alert = %s RETURNING alert",
                    (device_id, alert),
                )
            elif last_sent_at is None:
                rows = yield Q(
                    "INSERT INTO device_alerts (device_id, alert, detail, opened_at,"
                    " last_sent_at) VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (device_id, alert) DO NOTHING RETURNING alert",
                    (device_id, alert, detail, at, at),
                )
            else:
                rows = yield Q(
                    "UPDATE device_alerts SET last_sent_at = %s, detail = %s"
                    " WHERE device_id = %s AND alert = %s AND last_sent_at = %s"
                    " RETURNING alert",
                    (at, detail, device_id, alert, last_sent_at),
                )
            if not rows:
                return None
            yield from self._lock_events()
            events = yield from self._append_events([(payload, serial_number)])
            yield from self._notify_events(events[-1].id)
            return events[0]

        return self._call(script)
