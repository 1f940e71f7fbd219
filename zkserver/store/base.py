"""The storage interface every backend (SQLite, PostgreSQL) implements.

Every method returns a Deferred and never blocks the reactor. Both backends share one
schema (``migrations/*.sql``) and pass the same test suite (``tests/store``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol

from attrs import frozen
from twisted.internet.defer import Deferred

from zkserver.events import Event
from zkserver.records import Command, Device, DeviceUser, Punch, Rejected

if TYPE_CHECKING:
    from zkserver.persons.model import NewTemplate, Person, PersonTemplate, SyncEntry
    from zkserver.store.commands import CommandChange, CommandPage, NewCommand

__all__ = [
    "Store",
    "StoreUnavailable",
    "DuplicateDevice",
    "AttendancePage",
    "ReplayPage",
    "row_id",
]


def row_id(text: object) -> int | None:
    """A row id given as text (a URL segment, a command id a terminal reports) as an int,
    or None when it cannot be one: ASCII digits only (``"²".isdigit()`` is true and
    ``int()`` refuses it), at most 18 of them (every such number fits a 64-bit column)."""
    value = str(text)
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        return None
    return int(value)


class StoreUnavailable(Exception):
    """The database cannot be reached right now; the caller should answer 503."""


class DuplicateDevice(Exception):
    """A device with that serial number (or host:port) already exists."""


AttendancePage = tuple[list[dict[str, Any]], "str | None"]
"""Rows of ``GET /api/attendance`` and the cursor of the next page (None at the end)."""


@frozen
class ReplayPage:
    """One page of a Last-Event-ID replay (:meth:`Store.replay_page`), read at one instant.

    - ``events``: committed events with id > the cursor, ascending, at most the limit;
    - ``pruned_through``: the highest event id retention had deleted at that instant (0
      when none). Above the cursor, it means events the page should hold are gone;
    - ``newest``: the highest event id given out by then, kept or pruned (0 when none).
    """

    events: list[Event]
    pruned_through: int
    newest: int


class Store(Protocol):
    # --- life cycle -------------------------------------------------------------------
    def start(self) -> Deferred[None]:
        """Connect and apply pending migrations."""

    def stop(self) -> Deferred[None]:
        """Close every connection."""

    def ping(self) -> Deferred[None]:
        """Fire when the database answers a trivial query; fail otherwise."""

    def watch(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(max_event_id)`` when *another* process commits events.

        PostgreSQL: LISTEN/NOTIFY on a dedicated, self-reconnecting connection.
        SQLite: never called (one process owns the file).
        """

    # --- devices ----------------------------------------------------------------------
    def device(self, device_id: str) -> Deferred[Device | None]: ...

    def device_by_serial(self, serial_number: str) -> Deferred[Device | None]: ...

    def devices(self, kind: str | None = None) -> Deferred[list[Device]]: ...

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
        """Insert a device with a new UUID; DuplicateDevice if the serial number exists."""

    def update_device(self, device_id: str, **fields: Any) -> Deferred[Device | None]:
        """Change any of name, timezone, status, status_detail, approved, host, port,
        comm_key, transport, serial_number, last_seen, clock_offset_s, encoding, info (a
        dict, merged into the stored one)."""

    def delete_device(self, device_id: str) -> Deferred[bool]: ...

    # --- punches and events -----------------------------------------------------------
    def save_punches(self, device: Device, punches: Sequence[Punch]) -> Deferred[list[Event]]:
        """In ONE transaction insert the punches (duplicates on serial number, user id,
        timestamp insert nothing) and one ``attendance`` event per new punch; return the
        new events, ids ascending. Event ids become visible in commit order."""

    def append_event(self, payload: dict[str, Any], serial_number: str = "") -> Deferred[Event]:
        """Store a non-punch event (device_status, user_sync, command_result)."""

    def events_after(self, last_id: int, limit: int = 1000) -> Deferred[list[Event]]:
        """Committed events with id > last_id, ascending."""

    def last_event_id(self) -> Deferred[int]:
        """The highest committed event id (0 when there is none)."""

    def prune_events(self, before: str, limit: int = 500) -> Deferred[int]:
        """Delete up to ``limit`` of the oldest events created before ``before`` (UTC,
        as stored: ISO-8601 with microseconds); return how many were deleted."""

    def events_pruned_through(self) -> Deferred[int]:
        """The highest event id retention has deleted (0 when none)."""

    def replay_page(self, last_id: int, limit: int = 500) -> Deferred[ReplayPage]:
        """Up to ``limit`` committed events with id > ``last_id``, ascending, and, read by
        the same statement (so at one instant), the pruned-through mark and the newest id.
        A prune that commits before the read raises the mark; one that commits after it
        cannot take anything from the page."""

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
        """Punches newest first by instant (timestamp_utc, id), filtered; ``cursor``
        continues a page. ``since``/``until`` (inclusive) ending in ``Z``
        (``YYYY-MM-DDTHH:MM:SSZ``) compare instants; others (``YYYY-MM-DD[ HH:MM:SS]``)
        compare device-local times, a bare ``until`` date meaning the end of that day.

        Each row: id, device_id, device_name, serial_number, user_id, user_name,
        timestamp, action, method, workcode, photo_id, received_at, timestamp_utc (None
        when unknown), time_ambiguous, suspect_time. ``user_name``: the punching device's
        own name for the user, else the person registry's, else another device's."""

    def days(
        self,
        *,
        first: date,
        last: date,
        day_starts_at: int = 0,
        user_id: str | None = None,
        device_id: str | None = None,
    ) -> Deferred[list[dict[str, Any]]]:
        """One row per person per device-local day from ``first`` to ``last`` (days begin
        ``day_starts_at`` minutes after midnight), ordered by date, then user id: the rows
        of :meth:`zkserver.localtime.Days.rows` with names from the device users."""

    # --- users, operation log, photos -------------------------------------------------
    def save_users(
        self, device_id: str, users: Sequence[DeviceUser], replace: bool = False
    ) -> Deferred[int]:
        """Upsert users by (device, user_id); ``replace`` deletes the others first."""

    def delete_user(self, device_id: str, user_id: str) -> Deferred[bool]: ...

    def users(self, device_id: str) -> Deferred[list[DeviceUser]]: ...

    def save_operlog(self, device_id: str, entries: Sequence[dict[str, Any]]) -> Deferred[int]:
        """Keep OPLOG lines: dicts with op, operator, timestamp, obj, values, raw."""

    def save_photo(
        self, device_id: str, user_id: str, timestamp: str, filename: str, content: bytes
    ) -> Deferred[int]:
        """Store an attendance photo; linked to the punch with the same device, user, time."""

    def photo(self, photo_id: int) -> Deferred[tuple[str, bytes] | None]: ...

    # --- rejected input ---------------------------------------------------------------
    def save_rejected(self, serial_number: str, items: Sequence[Rejected]) -> Deferred[int]: ...

    def rejected(
        self, serial_number: str | None = None, limit: int = 100
    ) -> Deferred[list[dict[str, Any]]]:
        """Newest first: id, serial_number, source, raw, reason, received_at."""

    # --- command queue ----------------------------------------------------------------
    def queue_command(self, device_id: str, command: str) -> Deferred[Command]:
        """Append a command; its id is unique (<= 16 letters/digits) and survives restarts."""

    def take_commands(self, device_id: str, max_bytes: int = 900_000) -> Deferred[list[Command]]:
        """Mark the oldest queued commands ``sent`` (fitting max_bytes) and return them."""

    def finish_command(
        self, device_id: str, command_id: str, return_code: int, result: str = ""
    ) -> Deferred[Command | None]:
        """Record a result: status ``done`` (return code 0) or ``failed``."""

    def commands(self, device_id: str, limit: int = 100) -> Deferred[list[Command]]:
        """Newest first."""

    # --- command lifecycle (zkserver.store.commands; zkserver.commands uses these) -------
    # Each returns (changed commands, events recorded in the same transaction); the
    # caller publishes the events after the commit. ``now``: zkserver.store.commands.stamp.
    def add_commands(self, items: Sequence[NewCommand], now: str) -> Deferred[CommandChange]:
        """Queue commands in order, one ``queued`` command_status event each."""

    def claim_commands(
        self, device_id: str, now: str, max_bytes: int | None = None
    ) -> Deferred[CommandChange]:
        """Oldest queued -> ``sent`` (attempts + 1): one, or as many as fit ``max_bytes``."""

    def complete_command(
        self,
        command_id: str,
        status: str,
        return_code: int | None,
        result: str,
        now: str,
        device_id: str | None = None,
    ) -> Deferred[CommandChange]:
        """``done``/``failed``/``expired`` unless already final (then nothing changes)."""

    def cancel_command(self, command_id: str, now: str) -> Deferred[CommandChange]:
        """Cancel a queued command; otherwise return it unchanged with no events."""

    def sweep_commands(
        self, now: str, sent_before: str, max_attempts: int
    ) -> Deferred[CommandChange]:
        """Requeue or expire unanswered sent commands, expire queued ones past expires_at."""

    def recover_commands(
        self, device_id: str, now: str, max_attempts: int, keep: Sequence[str] = ()
    ) -> Deferred[CommandChange]:
        """A pull device's orphaned ``sent`` commands (ids not in ``keep``) -> ``queued``
        while attempts < max_attempts, else ``expired``."""

    def command(self, command_id: str) -> Deferred[Command | None]: ...

    def list_commands(
        self,
        *,
        device_id: str | None = None,
        batch_id: str | None = None,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Deferred[CommandPage]:
        """Newest first; ``cursor`` continues a page (ValueError if invalid)."""

    # --- webhooks, device log, alerts (zkserver.store.webhooks) ------------------------
    # Every event-writing script also writes the webhook outbox rows of its events in the
    # same transaction (``_outbox``). Records: zkserver.webhooks.model.
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
    ) -> Deferred[Any]:
        """A new subscription (a zkserver.webhooks.model.Webhook)."""

    def webhook(self, webhook_id: int) -> Deferred[Any]: ...

    def webhooks(self) -> Deferred[list[Any]]: ...

    def update_webhook(self, webhook_id: int, **fields: Any) -> Deferred[Any]: ...

    def delete_webhook(self, webhook_id: int) -> Deferred[bool]: ...

    def webhook_deliveries(
        self,
        webhook_id: int,
        status: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> Deferred[list[Any]]:
        """The delivery log, newest first."""

    def retry_delivery(self, webhook_id: int, delivery_id: int) -> Deferred[Any]: ...

    def due_webhooks(self, now: str, limit: int = 500) -> Deferred[list[int]]: ...

    def next_deliveries(self, webhook_id: int, now: str, limit: int) -> Deferred[list[Any]]:
        """The head of a subscription's queue when its first pending delivery is due."""

    def record_attempt(
        self,
        delivery_ids: Sequence[int],
        *,
        at: str,
        status: str,
        response_code: int | None,
        error: str,
        next_attempt_at: str,
    ) -> Deferred[None]: ...

    def save_device_events(
        self,
        device_id: str,
        serial_number: str,
        items: Sequence[tuple[dict[str, Any] | None, dict[str, Any] | None]],
    ) -> Deferred[list[Event]]:
        """Operation-log entries (kept once) and the events of the new ones, one
        transaction."""

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
        """GET /api/device-log: operation-log rows newest first, and the next cursor."""

    def open_alerts(self, device_id: str | None = None) -> Deferred[list[dict[str, Any]]]: ...

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
        """Open, repeat or close an alert with its device_alert event, once."""

    def command_counts(self) -> Deferred[dict[str, int]]:
        """Commands by status (metrics)."""

    # --- the person registry (zkserver.store.persons; zkserver.persons uses these) ------
    def person(self, user_id: str) -> Deferred[Person | None]: ...

    def persons(
        self,
        *,
        q: str | None = None,
        device_id: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Deferred[tuple[list[Person], str | None]]:
        """By user_id; ``q`` matches name or PIN; ``device_id``: who must be on it."""

    def add_person(self, fields: dict[str, Any], origin: str, now: str) -> Deferred[Person]:
        """DuplicatePerson (zkserver.store.persons) when the PIN exists."""

    def update_person(
        self, user_id: str, fields: dict[str, Any], origin: str, now: str
    ) -> Deferred[Person | None]: ...

    def delete_person(self, user_id: str) -> Deferred[Person | None]: ...

    def save_person_templates(
        self, items: Sequence[NewTemplate], now: str
    ) -> Deferred[list[PersonTemplate]]:
        """Keep templates; newest per (person, kind, index) is current. The new ones."""

    def person_templates(
        self, user_id: str, *, all_versions: bool = False
    ) -> Deferred[list[PersonTemplate]]: ...

    def person_template_data(
        self, user_id: str, template_id: int | None = None
    ) -> Deferred[list[tuple[PersonTemplate, bytes]]]: ...

    def sync_entries(
        self,
        *,
        user_id: str | None = None,
        device_id: str | None = None,
        state: str | None = None,
    ) -> Deferred[list[SyncEntry]]: ...

    def write_sync(
        self,
        entry: SyncEntry,
        commands: Sequence[NewCommand],
        now: str,
        *,
        expect: tuple[str, tuple[str, ...]] | None = None,
    ) -> Deferred[tuple[SyncEntry | None, list[Command], list[Event]]]:
        """Queue the commands and store the sync state (and its events), one transaction."""

    def commands_by_id(self, command_ids: Sequence[str]) -> Deferred[list[Command]]: ...

    # --- pull-device ownership (every backend) -----------------------------------------
    # With PostgreSQL several processes share the database; each pull device must be
    # connected by exactly one of them. SQLite is single-process: its lock always holds.
    def try_lock_device(self, device_id: str) -> Deferred[bool]:
        """True when this process holds (or has just taken) pull device ``device_id``.

        Idempotent while held (do not stack the lock); every call re-checks it, so after
        the holding connection was lost it tries to take it again. Called before each
        connection attempt and on every idle probe; False makes the caller wait.
        PostgreSQL: ``pg_try_advisory_lock(<key of device_id>)`` on one dedicated
        connection (the lock goes with it if it dies, so another process takes over).
        SQLite: always True.
        """

    def unlock_device(self, device_id: str) -> Deferred[None]:
        """Give the device up (``pg_advisory_unlock``); no-op when not held."""
