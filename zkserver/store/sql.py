"""The store both backends share: every Store operation as a transaction script.

A transaction script is a generator that yields :class:`~zkserver.store.dialect.Q`
statements (``%s`` placeholders) and receives each statement's rows. A backend runs the
script inside one transaction: SQLite synchronously in its single adbapi thread,
PostgreSQL asynchronously on a txpostgres cursor. The SQL text is therefore written
once; the only dialect differences are the ``{{token}}`` substitutions of
:data:`~zkserver.store.dialect.DIALECTS` and the two PostgreSQL-only hooks
(:meth:`SQLStore._lock_events`, :meth:`SQLStore._notify_events`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from zkserver import metrics
from zkserver.events import Event, attendance_encoder, encode_payload
from zkserver.localtime import TimePolicy
from zkserver.records import Command, Device, DeviceUser, Punch, Rejected
from zkserver.store.base import AttendancePage, DuplicateDevice, ReplayPage, row_id
from zkserver.store.days import day_rows
from zkserver.store.dialect import Q, Script, chunks, row_source, utc_now, values
from zkserver.store.persons import PersonScripts
from zkserver.store.rows import (
    COMMAND_COLS,
    DEVICE_COLS,
    DEVICE_FIELDS,
    EVENT_COLS,
    command_from_row,
    decode_cursor,
    device_from_row,
    display_name,
    encode_cursor,
    event_from_row,
    user_sort_key,
)
from zkserver.store.schema import MigrationContext, migrate
from zkserver.store.webhooks import WebhookStoreMixin

__all__ = ["InFlight", "SQLStore"]

T = TypeVar("T")

log = Logger()

#: The per-punch columns of a punch insert, and the event insert's (row_source).
PUNCH_COLUMNS = (
    ("user_id", "text"),
    ("timestamp", "text"),
    ("status", "int"),
    ("verify", "int"),
    ("workcode", "text"),
    ("raw", "text"),
    ("timestamp_utc", "text"),
    ("time_ambiguous", "int"),
    ("suspect_time", "text"),
)
EVENT_COLUMNS = (("n", "int"), ("payload", "text"))


class InFlight:
    """Counts running operations so ``stop()`` can wait for them to finish, and keeps a
    caller's cancellation away from them.

    Cancelling the Deferred :meth:`track` returns fails it at once with CancelledError
    (Klein cancels a request's Deferred when its client goes away; a stopping service
    cancels its workers). The operation is not interrupted: it runs to its end,
    :meth:`wait` still waits for it, and what it gives then is dropped (a failure is
    logged). A driver is never cancelled mid-query: txpostgres cannot take it (its
    cancelled transaction gave the connection back while a query still ran on it, was
    sometimes retried on another, and left the transaction's coroutine to fail later
    with nobody to tell: "Unhandled error in Deferred" from the garbage collector), and
    adbapi's thread runs the query anyway."""

    def __init__(self) -> None:
        self._count = 0
        self._waiters: list[Deferred[None]] = []

    def track(self, d: Deferred[T]) -> Deferred[T]:
        """The caller's Deferred for the operation ``d``."""
        self._count += 1
        caller: Deferred[T] = Deferred()  # no canceller: cancel() fails it, nothing else
        d.addBoth(self._finished, caller)
        return caller

    def _finished(self, result: T | Failure, caller: Deferred[T]) -> None:
        self._count -= 1
        if not self._count:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)
        if not caller.called:
            if isinstance(result, Failure):
                caller.errback(result)
            else:
                caller.callback(result)
        elif isinstance(result, Failure):  # its caller cancelled it before it ended
            log.info(
                "A database operation whose caller gave up failed: {error}",
                error=result.getErrorMessage(),
            )

    def wait(self) -> Deferred[None]:
        if not self._count:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter


# --- the store ----------------------------------------------------------------------


class SQLStore(PersonScripts, WebhookStoreMixin):
    """Every :class:`~zkserver.store.base.Store` operation as a transaction script.

    Subclasses provide :meth:`_run` (run a script in one transaction and map
    "cannot reach the database" failures to StoreUnavailable), the life cycle, and
    optionally the PostgreSQL event hooks.
    """

    dialect: str = ""
    _integrity_errors: tuple[type[BaseException], ...] = ()
    #: How punches saved without a time reading, and those filled by migration 0004, are
    #: read (the server sets its --timezone, --max-future, --max-past here).
    time_policy: TimePolicy = TimePolicy()

    def _run(self, script: Script[T], write: bool = True) -> Deferred[T]:
        raise NotImplementedError

    def _lock_events(self) -> Iterator[Q]:
        """Statements that serialise event-id allocation up to COMMIT (none for SQLite)."""
        return iter(())

    def _notify_events(self, max_id: int) -> Iterator[Q]:
        """Statements that tell other processes about new events (none for SQLite)."""
        return iter(())

    def _call(self, make: Callable[..., Script[T]], *args: Any, write: bool = True) -> Deferred[T]:
        """Build a script (argument errors fail the Deferred) and run it."""
        try:
            script = make(*args)
        except Exception:
            return fail()
        return self._run(script, write).addErrback(metrics.count_db_error)

    # --- migrations -----------------------------------------------------------------
    def _migrate(self) -> Script[list[int]]:
        return migrate(self.dialect, MigrationContext(self.dialect, self.time_policy))

    def schema_versions(self) -> Deferred[list[int]]:
        """Applied migration versions, ascending (for tests and diagnostics)."""

        def script() -> Script[list[int]]:
            rows = yield Q("SELECT version FROM schema_version ORDER BY version")
            return [row[0] for row in rows]

        return self._call(script, write=False)

    def ping(self) -> Deferred[None]:
        def script() -> Script[None]:
            yield Q("SELECT 1")

        return self._call(script, write=False)

    # --- devices --------------------------------------------------------------------
    def _one_device(self, where: str, param: Any) -> Script[Device | None]:
        rows = yield Q(f"SELECT {DEVICE_COLS} FROM devices WHERE {where} = %s", (param,))
        return device_from_row(rows[0]) if rows else None

    def device(self, device_id: str) -> Deferred[Device | None]:
        return self._call(self._one_device, "id", device_id, write=False)

    def device_by_serial(self, serial_number: str) -> Deferred[Device | None]:
        if not serial_number:
            return succeed(None)
        return self._call(self._one_device, "serial_number", serial_number, write=False)

    def devices(self, kind: str | None = None) -> Deferred[list[Device]]:
        def script() -> Script[list[Device]]:
            if kind is None:
                rows = yield Q(f"SELECT {DEVICE_COLS} FROM devices ORDER BY created_at, id")
            else:
                rows = yield Q(
                    f"SELECT {DEVICE_COLS} FROM devices WHERE kind = %s ORDER BY created_at, id",
                    (kind,),
                )
            return [device_from_row(row) for row in rows]

        return self._call(script, write=False)

    def _duplicate(self, failure: Any) -> Any:
        if self._integrity_errors and failure.check(*self._integrity_errors):
            raise DuplicateDevice(str(failure.value).strip()) from failure.value
        return failure

    def add_device(
        self,
        *,
        serial_number: str,
        kind: str = "push",
        name: str = "",
        status: str = "pending",
        approved: bool = False,
        timezone: str = "",
        host: str = "",
        port: int = 4370,
        comm_key: int = 0,
        transport: str = "tcp",
        encoding: str = "",
    ) -> Deferred[Device]:
        def script() -> Script[Device]:
            if kind not in ("push", "pull"):
                raise ValueError(f"unknown device kind {kind!r}")
            if transport not in ("tcp", "udp"):
                raise ValueError(f"unknown transport {transport!r}")
            params = (
                str(uuid.uuid4()),
                serial_number,
                name,
                kind,
                status,
                int(bool(approved)),
                timezone,
                host,
                int(port),
                int(comm_key),
                transport,
                "{}",
                utc_now(),
                encoding,
            )
            rows = yield Q(
                "INSERT INTO devices (id, serial_number, name, kind, status, approved,"
                " timezone, host, port, comm_key, transport, info, created_at, encoding)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                f" RETURNING {DEVICE_COLS}",
                params,
            )
            return device_from_row(rows[0])

        return self._call(script).addErrback(self._duplicate)

    def update_device(self, device_id: str, **fields: Any) -> Deferred[Device | None]:
        unknown = set(fields) - DEVICE_FIELDS
        if unknown:
            return fail(TypeError(f"update_device: unknown fields {sorted(unknown)}"))

        def script() -> Script[Device | None]:
            rows = yield Q(
                f"SELECT {DEVICE_COLS} FROM devices WHERE id = %s{{{{for_update}}}}",
                (device_id,),
            )
            if not rows:
                return None
            if not fields:
                return device_from_row(rows[0])
            changes = dict(fields)
            if "info" in changes:
                merged = json.loads(rows[0][12] or "{}")
                merged.update(changes["info"] or {})
                changes["info"] = encode_payload(merged)
            if "approved" in changes:
                changes["approved"] = int(bool(changes["approved"]))
            for key in ("port", "comm_key"):
                if key in changes:
                    changes[key] = int(changes[key])
            names = sorted(changes)
            assignments = ", ".join(f"{name} = %s" for name in names)
            rows = yield Q(
                f"UPDATE devices SET {assignments} WHERE id = %s RETURNING {DEVICE_COLS}",
                (*(changes[name] for name in names), device_id),
            )
            return device_from_row(rows[0]) if rows else None

        return self._call(script).addErrback(self._duplicate)

    def delete_device(self, device_id: str) -> Deferred[bool]:
        """Delete the device, its users, its commands and its open health alerts (closed
        without an event: there is no device to announce); its punches and photos stay."""

        def script() -> Script[bool]:
            yield Q("DELETE FROM users WHERE device_id = %s", (device_id,))
            yield Q("DELETE FROM commands WHERE device_id = %s", (device_id,))
            yield Q("DELETE FROM device_alerts WHERE device_id = %s", (device_id,))
            rows = yield Q("DELETE FROM devices WHERE id = %s RETURNING id", (device_id,))
            return bool(rows)

        return self._call(script)

    # --- punches and events ---------------------------------------------------------
    def save_punches(self, device: Device, punches: Sequence[Punch]) -> Deferred[list[Event]]:
        if not punches:
            return succeed([])
        return self._call(self._save_punches, device, punches)

    def _save_punches(self, device: Device, punches: Sequence[Punch]) -> Script[list[Event]]:
        """Two round trips on PostgreSQL: the punches (with BEGIN); then the suspect
        count, the events lock, the events with their outbox rows, NOTIFY, COMMIT and
        the new ids (see ``PostgresStore._insert_attendance``)."""
        now = utc_now()
        # The dedup key is the serial number; a device without one yet uses its id.
        key = device.serial_number or device.id
        batch: dict[tuple[str, str], Punch] = {}
        for punch in punches:
            batch.setdefault((punch.user_id, punch.timestamp), punch)
        if any(not p.timestamp_utc and p.suspect_time is None for p in batch.values()):
            batch = self._stamped(device, batch, now)
        inserted: set[tuple[str, str]] = set()
        raw_texts = {k: encode_payload(p.raw) for k, p in batch.items()}
        for keys in chunks(list(batch)):
            source, params = row_source(
                self.dialect,
                PUNCH_COLUMNS,
                [
                    (
                        p.user_id,
                        p.timestamp,
                        int(p.status),
                        int(p.verify),
                        p.workcode,
                        raw_texts[k],
                        p.timestamp_utc,
                        int(p.time_ambiguous),
                        p.suspect_time,
                    )
                    for k in keys
                    for p in (batch[k],)
                ],
            )
            rows = yield Q(
                "INSERT INTO punches (device_id, serial_number, received_at, user_id,"
                " timestamp, status, verify, workcode, raw, timestamp_utc, time_ambiguous,"
                " suspect_time) SELECT %s, %s, %s, v.user_id, v.timestamp, v.status,"
                " v.verify, v.workcode, v.raw, v.timestamp_utc, v.time_ambiguous,"
                f" v.suspect_time FROM {source} WHERE true"  # WHERE: SQLite's upsert syntax
                " ON CONFLICT (serial_number, user_id, timestamp) DO NOTHING"
                " RETURNING user_id, timestamp",
                (device.id, key, now, *params),
                prepare=True,
            )
            inserted.update((row[0], row[1]) for row in rows)
        if not inserted:
            return []
        suspect = sum(1 for k in inserted if batch[k].suspect_time is not None)
        if suspect:
            yield Q(
                "UPDATE devices SET suspect_punches = suspect_punches + %s WHERE id = %s",
                (suspect, device.id),
                fetch=False,
            )
        encode = attendance_encoder(device)
        new = [encode(p, raw_texts[k]) for k, p in batch.items() if k in inserted]
        # Only now serialise on the events lock (held until COMMIT): punch inserts of
        # concurrent transactions proceed in parallel, event ids still follow commit order.
        # Nothing taken after this lock can wait on another transaction's punch rows, so
        # there is no lock cycle.
        yield from self._lock_events()
        return (yield from self._insert_attendance(new, device.serial_number, now))

    def _insert_attendance(
        self, new: list[tuple[dict[str, Any], str]], serial_number: str, now: str
    ) -> Script[list[Event]]:
        """Insert the attendance events (payload, JSON text) of a punch batch, in order,
        with their webhook outbox rows and the NOTIFY; the caller holds the events lock.
        The last statements of the transaction (PostgreSQL overrides this with fewer
        round trips)."""
        events: list[Event] = []
        for chunk in chunks(new):
            source, params = row_source(
                self.dialect, EVENT_COLUMNS, [(n, text) for n, (_, text) in enumerate(chunk)]
            )
            # Rows are inserted in ``n`` order, so ids (allocated one by one as rows are
            # inserted, under the events lock) ascend with ``n``: the ids alone come back,
            # not each payload again.
            rows = yield Q(
                "INSERT INTO events (type, serial_number, payload, created_at)"
                f" SELECT 'attendance', %s, v.payload, %s FROM {source} ORDER BY v.n"
                " RETURNING id",
                (serial_number, now, *params),
            )
            ids = sorted(int(row[0]) for row in rows)
            if len(ids) != len(chunk):
                raise RuntimeError(f"{len(chunk)} events inserted, {len(ids)} ids returned")
            events.extend(
                Event(i, "attendance", payload, serial_number, data=text)
                for i, (payload, text) in zip(ids, chunk, strict=True)
            )
        yield from self._outbox(events[0].id, events[-1].id, now)
        yield from self._notify_events(events[-1].id)
        return events

    def _stamped(
        self, device: Device, batch: dict[tuple[str, str], Punch], now: str
    ) -> dict[tuple[str, str], Punch]:
        """Punches that came without their time reading (not through Ingest), read with
        this store's time policy and the receipt time."""
        received = datetime.fromisoformat(now)
        stamped = {}
        for k, p in batch.items():
            if not p.timestamp_utc and p.suspect_time is None:
                got = self.time_policy.stamp(
                    p.timestamp, device.timezone, received, p.raw.get("time_offset")
                )
                p = attrs.evolve(
                    p,
                    timestamp_utc=got.timestamp_utc,
                    time_ambiguous=got.time_ambiguous,
                    suspect_time=got.suspect_time,
                )
            stamped[k] = p
        return stamped

    def append_event(self, payload: dict[str, Any], serial_number: str = "") -> Deferred[Event]:
        def script() -> Script[Event]:
            kind = payload.get("type")
            if not isinstance(kind, str) or not kind:
                raise ValueError("an event payload needs a 'type'")
            text = encode_payload(payload)
            yield from self._lock_events()
            rows = yield Q(
                "INSERT INTO events (type, serial_number, payload, created_at)"
                " VALUES (%s, %s, %s, %s) RETURNING id",
                (kind, serial_number, text, utc_now()),
            )
            event = Event(int(rows[0][0]), kind, dict(payload), serial_number, data=text)
            yield from self._outbox(event.id, event.id, utc_now())
            yield from self._notify_events(event.id)
            return event

        return self._call(script)

    def events_after(self, last_id: int, limit: int = 1000) -> Deferred[list[Event]]:
        def script() -> Script[list[Event]]:
            rows = yield Q(
                f"SELECT {EVENT_COLS} FROM events WHERE id > %s ORDER BY id LIMIT %s",
                (int(last_id), max(1, int(limit))),
            )
            return [event_from_row(row) for row in rows]

        return self._call(script, write=False)

    def last_event_id(self) -> Deferred[int]:
        def script() -> Script[int]:
            rows = yield Q("SELECT COALESCE(MAX(id), 0) FROM events")
            return int(rows[0][0])

        return self._call(script, write=False)

    def prune_events(self, before: str, limit: int = 500) -> Deferred[int]:
        """Delete up to ``limit`` of the oldest events created before ``before`` (stored
        time format); return how many. Only the ``limit`` oldest rows are looked at (by
        id, the primary key), so a batch stays small whatever the table holds; the event
        lock is not taken, so ingest does not wait for it (beyond SQLite's one writer)."""

        def script() -> Script[int]:
            rows = yield Q(
                "SELECT id FROM (SELECT id, created_at FROM events ORDER BY id LIMIT %s)"
                " AS oldest WHERE created_at < %s ORDER BY id",
                (max(1, int(limit)), before),
            )
            if not rows:
                return 0
            top = int(rows[-1][0])
            yield Q("DELETE FROM events WHERE id <= %s AND created_at < %s", (top, before))
            yield Q(
                "UPDATE event_retention SET pruned_through = %s"
                " WHERE id = 1 AND pruned_through < %s",
                (top, top),
            )
            return len(rows)

        return self._call(script)

    def events_pruned_through(self) -> Deferred[int]:
        """The highest event id retention has deleted (0 when none)."""

        def script() -> Script[int]:
            rows = yield Q("SELECT COALESCE(MAX(pruned_through), 0) FROM event_retention")
            return int(rows[0][0])

        return self._call(script, write=False)

    def replay_page(self, last_id: int, limit: int = 500) -> Deferred[ReplayPage]:
        """Events after ``last_id`` with the pruned-through mark and the newest id, all
        from ONE statement: one snapshot on PostgreSQL (READ COMMITTED takes one per
        statement, not per transaction) and on SQLite. A prune deletes its rows and raises
        the mark in one transaction, so either the page was read before it (and holds
        those rows) or the mark counts it. ``newest`` is at least the mark: the highest
        id given out, even when every event was pruned."""

        def script() -> Script[ReplayPage]:
            rows = yield Q(
                "SELECT r.pruned, r.newest, e.id, e.type, e.payload, e.serial_number FROM"
                " (SELECT (SELECT COALESCE(MAX(pruned_through), 0) FROM event_retention)"
                " AS pruned, (SELECT COALESCE(MAX(id), 0) FROM events) AS newest) AS r"
                f" LEFT JOIN (SELECT {EVENT_COLS} FROM events WHERE id > %s"
                " ORDER BY id LIMIT %s) AS e ON 1 = 1 ORDER BY e.id",
                (int(last_id), max(1, int(limit))),
            )
            pruned, newest = int(rows[0][0]), int(rows[0][1])
            events = [event_from_row(row[2:]) for row in rows if row[2] is not None]
            return ReplayPage(events, pruned, max(newest, pruned))

        return self._call(script, write=False)

    def attendance(
        self,
        *,
        device_id: str | None = None,
        user_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Deferred[AttendancePage]:
        """Newest first by instant. ``since`` and ``until`` are inclusive: instants when
        they end in ``Z`` (``YYYY-MM-DDTHH:MM:SSZ``), else device-local times (a bare date
        ``until``, ``YYYY-MM-DD``, means the end of that day). ValueError for a bad
        cursor."""

        def script() -> Script[AttendancePage]:
            where: list[str] = []
            params: list[Any] = []
            if device_id is not None:
                where.append("p.device_id = %s")
                params.append(device_id)
            if user_id is not None:
                where.append("p.user_id = %s")
                params.append(user_id)
            if since:
                where.append(
                    "p.timestamp_utc >= %s" if since.endswith("Z") else "p.timestamp >= %s"
                )
                params.append(since)
            if until:
                if until.endswith("Z"):
                    where.append("p.timestamp_utc <= %s AND p.timestamp_utc <> ''")
                    params.append(until)
                else:
                    where.append("p.timestamp <= %s")
                    params.append(until + " 23:59:59" if len(until) == 10 else until)
            if cursor:
                instant, punch_id = decode_cursor(cursor)
                where.append("(p.timestamp_utc < %s OR (p.timestamp_utc = %s AND p.id < %s))")
                params.extend([instant, instant, punch_id])
            size = min(max(int(limit), 1), 1000)
            rows = yield Q(
                "SELECT p.id, p.device_id, d.name, d.kind,"
                " CASE WHEN d.id IS NULL THEN p.serial_number ELSE d.serial_number END,"
                " p.user_id,"
                " COALESCE("
                "  (SELECT NULLIF(u.name, '') FROM users u"
                "   WHERE u.device_id = p.device_id AND u.user_id = p.user_id),"
                "  (SELECT NULLIF(pe.name, '') FROM persons pe WHERE pe.user_id = p.user_id),"
                "  (SELECT u.name FROM users u WHERE u.user_id = p.user_id AND u.name <> ''"
                "   ORDER BY u.device_id LIMIT 1)),"
                " p.timestamp, p.status, p.verify, p.workcode,"
                " (SELECT MAX(ph.id) FROM photos ph WHERE ph.device_id = p.device_id"
                "   AND ph.user_id = p.user_id AND ph.timestamp = p.timestamp),"
                " p.received_at, p.timestamp_utc, p.time_ambiguous, p.suspect_time"
                " FROM punches p LEFT JOIN devices d ON d.id = p.device_id"
                + (" WHERE " + " AND ".join(where) if where else "")
                + " ORDER BY p.timestamp_utc DESC, p.id DESC LIMIT %s",
                (*params, size + 1),
            )
            page = [
                {
                    "id": int(row[0]),
                    "device_id": row[1],
                    "device_name": display_name(row[2], row[3], row[4]),
                    "serial_number": row[4],
                    "user_id": row[5],
                    "user_name": row[6],
                    "timestamp": row[7],
                    "action": row[8],
                    "method": row[9],
                    "workcode": row[10],
                    "photo_id": None if row[11] is None else int(row[11]),
                    "received_at": row[12],
                    "timestamp_utc": row[13] or None,
                    "time_ambiguous": bool(row[14]),
                    "suspect_time": row[15],
                }
                for row in rows[:size]
            ]
            more = len(rows) > size
            last = page[-1] if page else None
            next_cursor = (
                encode_cursor(last["timestamp_utc"] or "", last["id"]) if more and last else None
            )
            return page, next_cursor

        return self._call(script, write=False)

    def days(
        self,
        *,
        first: date,
        last: date,
        day_starts_at: int = 0,
        user_id: str | None = None,
        device_id: str | None = None,
    ) -> Deferred[list[dict[str, Any]]]:
        def run(script: Script[Any]) -> Deferred[Any]:
            return self._run(script, write=False)

        return Deferred.fromCoroutine(
            day_rows(
                run,
                first=first,
                last=last,
                day_starts_at=day_starts_at,
                user_id=user_id,
                device_id=device_id,
                dialect=self.dialect,
            )
        )

    # --- users, operation log, photos -----------------------------------------------
    def save_users(
        self, device_id: str, users: Sequence[DeviceUser], replace: bool = False
    ) -> Deferred[int]:
        def script() -> Script[int]:
            latest = {user.user_id: user for user in users}  # the last one wins
            if replace:
                yield Q("DELETE FROM users WHERE device_id = %s", (device_id,))
            now = utc_now()
            for chunk in chunks(list(latest.values())):
                sql, params = values(
                    [
                        (
                            device_id,
                            u.user_id,
                            u.name,
                            int(u.privilege),
                            u.card,
                            u.password,
                            u.group,
                            u.uid,
                            now,
                        )
                        for u in chunk
                    ]
                )
                yield Q(
                    "INSERT INTO users (device_id, user_id, name, privilege, card, password,"
                    f" grp, uid, updated_at) VALUES {sql}"
                    " ON CONFLICT (device_id, user_id) DO UPDATE SET name = excluded.name,"
                    " privilege = excluded.privilege, card = excluded.card,"
                    " password = excluded.password, grp = excluded.grp, uid = excluded.uid,"
                    " updated_at = excluded.updated_at",
                    params,
                )
            return len(latest)

        return self._call(script)

    def delete_user(self, device_id: str, user_id: str) -> Deferred[bool]:
        def script() -> Script[bool]:
            rows = yield Q(
                "DELETE FROM users WHERE device_id = %s AND user_id = %s RETURNING user_id",
                (device_id, user_id),
            )
            return bool(rows)

        return self._call(script)

    def users(self, device_id: str) -> Deferred[list[DeviceUser]]:
        def script() -> Script[list[DeviceUser]]:
            rows = yield Q(
                "SELECT user_id, name, privilege, card, password, grp, uid FROM users"
                " WHERE device_id = %s",
                (device_id,),
            )
            found = [
                DeviceUser(
                    user_id=r[0],
                    name=r[1],
                    privilege=r[2],
                    card=r[3],
                    password=r[4],
                    group=r[5],
                    uid=r[6],
                )
                for r in rows
            ]
            return sorted(found, key=user_sort_key)

        return self._call(script, write=False)

    def save_operlog(self, device_id: str, entries: Sequence[dict[str, Any]]) -> Deferred[int]:
        """Returns how many entries were new (a resent batch stores nothing twice)."""

        def script() -> Script[int]:
            now = utc_now()
            count = 0
            rows_in = [
                (
                    device_id,
                    str(e.get("op", "")),
                    str(e.get("operator", "")),
                    str(e.get("timestamp", "")),
                    str(e.get("obj", "")),
                    encode_payload(e.get("values", [])),
                    str(e.get("raw", "")),
                    now,
                )
                for e in entries
            ]
            for chunk in chunks(rows_in):
                sql, params = values(chunk)
                rows = yield Q(
                    "INSERT INTO operlog (device_id, op, operator, timestamp, obj, vals, raw,"
                    f" received_at) VALUES {sql} ON CONFLICT"
                    " (device_id, timestamp, op, operator, obj, vals) DO NOTHING RETURNING id",
                    params,
                )
                count += len(rows)
            return count

        if not entries:
            return succeed(0)
        return self._call(script)

    def save_photo(
        self, device_id: str, user_id: str, timestamp: str, filename: str, content: bytes
    ) -> Deferred[int]:
        """A photo resent under the same file name replaces the stored one."""

        def script() -> Script[int]:
            rows = yield Q(
                "INSERT INTO photos (device_id, user_id, timestamp, filename, content,"
                " received_at) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (device_id, filename) DO UPDATE SET user_id = excluded.user_id,"
                " timestamp = excluded.timestamp, content = excluded.content,"
                " received_at = excluded.received_at RETURNING id",
                (device_id, user_id, timestamp, filename, bytes(content), utc_now()),
            )
            return int(rows[0][0])

        return self._call(script)

    def photo(self, photo_id: int) -> Deferred[tuple[str, bytes] | None]:
        def script() -> Script[tuple[str, bytes] | None]:
            rows = yield Q("SELECT filename, content FROM photos WHERE id = %s", (int(photo_id),))
            return (rows[0][0], bytes(rows[0][1])) if rows else None

        return self._call(script, write=False)

    # --- rejected input -------------------------------------------------------------
    def save_rejected(self, serial_number: str, items: Sequence[Rejected]) -> Deferred[int]:
        def script() -> Script[int]:
            now = utc_now()
            for chunk in chunks(list(items)):
                sql, params = values(
                    [(serial_number, i.source, i.raw, i.reason, now) for i in chunk]
                )
                yield Q(
                    "INSERT INTO rejected (serial_number, source, raw, reason, received_at)"
                    f" VALUES {sql}",
                    params,
                )
            return len(items)

        if not items:
            return succeed(0)
        return self._call(script)

    def rejected(
        self, serial_number: str | None = None, limit: int = 100
    ) -> Deferred[list[dict[str, Any]]]:
        def script() -> Script[list[dict[str, Any]]]:
            cols = "id, serial_number, source, raw, reason, received_at"
            size = max(1, int(limit))
            if serial_number is None:
                rows = yield Q(f"SELECT {cols} FROM rejected ORDER BY id DESC LIMIT %s", (size,))
            else:
                rows = yield Q(
                    f"SELECT {cols} FROM rejected WHERE serial_number = %s"
                    " ORDER BY id DESC LIMIT %s",
                    (serial_number, size),
                )
            names = cols.split(", ")
            return [dict(zip(names, row, strict=True)) for row in rows]

        return self._call(script, write=False)

    # --- command queue --------------------------------------------------------------
    def queue_command(self, device_id: str, command: str) -> Deferred[Command]:
        def script() -> Script[Command]:
            if not command or "\n" in command or "\r" in command:
                raise ValueError("a command is one non-empty line")
            rows = yield Q(
                "INSERT INTO commands (device_id, command, status, created_at)"
                f" VALUES (%s, %s, 'queued', %s) RETURNING {COMMAND_COLS}",
                (device_id, command, utc_now()),
            )
            return command_from_row(rows[0])

        return self._call(script)

    def take_commands(self, device_id: str, max_bytes: int = 900_000) -> Deferred[list[Command]]:
        """The oldest queued commands whose ``C:<id>:<cmd>`` lines fit ``max_bytes``
        (always at least one, so an oversized command cannot block the queue).
        Safe with several processes: a command is handed out once."""

        def script() -> Script[list[Command]]:
            rows = yield Q(
                "SELECT id, command FROM commands WHERE device_id = %s AND status = 'queued'"
                " ORDER BY id LIMIT 1000",
                (device_id,),
            )
            chosen: list[int] = []
            size = 0
            for command_id, command in rows:
                line = len(f"C:{command_id}:{command}\n".encode())
                if chosen and size + line > max_bytes:
                    break
                chosen.append(int(command_id))
                size += line
            if not chosen:
                return []
            marks = ", ".join(["%s"] * len(chosen))
            rows = yield Q(
                "UPDATE commands SET status = 'sent', sent_at = %s"
                f" WHERE status = 'queued' AND id IN ({marks}) RETURNING {COMMAND_COLS}",
                (utc_now(), *chosen),
            )
            return sorted((command_from_row(row) for row in rows), key=lambda c: int(c.id))

        return self._call(script)

    def finish_command(
        self, device_id: str, command_id: str, return_code: int, result: str = ""
    ) -> Deferred[Command | None]:
        if row_id(command_id) is None:
            return succeed(None)

        def script() -> Script[Command | None]:
            rows = yield Q(
                "UPDATE commands SET status = %s, return_code = %s, result = %s,"
                f" finished_at = %s WHERE device_id = %s AND id = %s RETURNING {COMMAND_COLS}",
                (
                    "done" if int(return_code) == 0 else "failed",
                    int(return_code),
                    result,
                    utc_now(),
                    device_id,
                    int(command_id),
                ),
            )
            return command_from_row(rows[0]) if rows else None

        return self._call(script)

    def commands(self, device_id: str, limit: int = 100) -> Deferred[list[Command]]:
        def script() -> Script[list[Command]]:
            rows = yield Q(
                f"SELECT {COMMAND_COLS} FROM commands WHERE device_id = %s"
                " ORDER BY id DESC LIMIT %s",
                (device_id, max(1, int(limit))),
            )
            return [command_from_row(row) for row in rows]

        return self._call(script, write=False)
