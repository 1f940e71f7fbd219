"""The person registry as transaction scripts, shared by both backends (migration 0006).

A mixin of :class:`~zkserver.store.sql.SQLStore`. :meth:`PersonScripts.write_sync`
queues a device's commands and records the person's sync state on that device in ONE
transaction (with the ``command_status`` and ``user_sync`` events), so a crash leaves
either both or neither: the sync service resumes from what is stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed

from zkserver.events import Event, encode_payload
from zkserver.persons.biometric import digest
from zkserver.persons.model import (
    NewTemplate,
    Person,
    PersonTemplate,
    SyncEntry,
    pack_devices,
    unpack_devices,
)
from zkserver.records import Command
from zkserver.store.base import row_id
from zkserver.store.commands import COLS as COMMAND_COLS
from zkserver.store.commands import NewCommand, _row
from zkserver.store.dialect import Q, Rows, Script, chunks

__all__ = ["DuplicatePerson", "PersonScripts", "PERSON_COLUMNS"]

PERSON_COLS = (
    "user_id, name, card, password, privilege, grp, active, devices, notes, origin,"
    " origin_at, created_at, updated_at"
)
#: API field -> column.
PERSON_COLUMNS = {
    "name": "name",
    "card": "card",
    "password": "password",
    "privilege": "privilege",
    "group": "grp",
    "active": "active",
    "devices": "devices",
    "notes": "notes",
}
TEMPLATE_COLS = (
    "id, user_id, kind, idx, format, valid, duress, size, digest, source_table,"
    " source_device, received_at, current"
)
SYNC_COLS = "user_id, device_id, operation, state, want, command_ids, detail, updated_at"


class DuplicatePerson(Exception):
    """A person with that user_id (PIN) exists already (HTTP 409)."""


def _person(row: Sequence[Any]) -> Person:
    return Person(
        user_id=row[0],
        name=row[1],
        card=row[2],
        password=row[3],
        privilege=int(row[4]),
        group=row[5],
        active=bool(row[6]),
        devices=unpack_devices(row[7]),
        notes=row[8],
        origin=row[9],
        origin_at=row[10],
        created_at=row[11],
        updated_at=row[12],
    )


def _template(row: Sequence[Any]) -> PersonTemplate:
    return PersonTemplate(
        id=int(row[0]),
        user_id=row[1],
        kind=row[2],
        index=int(row[3]),
        format=row[4],
        valid=int(row[5]),
        duress=int(row[6]),
        size=int(row[7]),
        digest=row[8],
        source_table=row[9],
        source_device=row[10],
        received_at=row[11],
        current=bool(row[12]),
    )


def _sync(row: Sequence[Any]) -> SyncEntry:
    return SyncEntry(
        user_id=row[0],
        device_id=row[1],
        operation=row[2],
        state=row[3],
        want=row[4],
        command_ids=tuple(str(i) for i in json.loads(row[5] or "[]")),
        detail=row[6],
        updated_at=row[7],
    )


def _column_value(name: str, value: Any) -> Any:
    if name == "active":
        return 1 if value else 0
    if name == "devices":
        return pack_devices(value)
    return value


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


def user_sync_payload(
    entry: SyncEntry, serial_number: str, device_name: str = ""
) -> dict[str, Any]:
    """A ``user_sync`` event: a person's state on a device changed."""
    return {
        "type": "user_sync",
        "operation": entry.operation,
        "device_id": entry.device_id,
        "device_name": device_name,
        "serial_number": serial_number,
        "user_id": entry.user_id,
        "state": entry.state,
        "detail": entry.detail[:1000],
        "command_ids": list(entry.command_ids),
    }


class PersonScripts:
    """The person methods of the Store (see zkserver.store.base)."""

    if TYPE_CHECKING:  # provided by SQLStore and CommandScripts

        def _lock_events(self) -> Iterator[Q]: ...

        def _notify_events(self, max_id: int) -> Iterator[Q]: ...

        def _call(self, make: Any, *args: Any, write: bool = True) -> Deferred[Any]: ...

        def _outbox(self, first_id: int, last_id: int, now: str) -> Iterator[Q]: ...

        def _command_events(
            self, commands: Sequence[Command], now: str, results: bool = False
        ) -> Script[list[Event]]: ...

    # --- persons ------------------------------------------------------------------------
    def person(self, user_id: str) -> Deferred[Person | None]:
        def script() -> Script[Person | None]:
            rows = yield Q(f"SELECT {PERSON_COLS} FROM persons WHERE user_id = %s", (user_id,))
            return _person(rows[0]) if rows else None

        return self._call(script, write=False)

    def persons(
        self,
        *,
        q: str | None = None,
        device_id: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Deferred[tuple[list[Person], str | None]]:
        """Persons by user_id; ``q`` matches the name or PIN (any case); ``device_id``:
        those who must be on that device; ``cursor``: the last user_id of a page."""

        def script() -> Script[tuple[list[Person], str | None]]:
            where: list[str] = []
            params: list[Any] = []
            if q:
                where.append(
                    "(LOWER(name) LIKE %s ESCAPE '\\' OR LOWER(user_id) LIKE %s ESCAPE '\\')"
                )
                params += [_like(q), _like(q)]
            if device_id:
                where.append("(devices = 'all' OR devices LIKE %s)")
                params.append(f"%,{device_id},%")
            if cursor:
                where.append("user_id > %s")
                params.append(cursor)
            size = min(max(int(limit), 1), 10_000)
            rows = yield Q(
                f"SELECT {PERSON_COLS} FROM persons"
                + (" WHERE " + " AND ".join(where) if where else "")
                + " ORDER BY user_id LIMIT %s",
                (*params, size + 1),
            )
            page = [_person(r) for r in rows[:size]]
            return page, (page[-1].user_id if len(rows) > size else None)

        return self._call(script, write=False)

    def add_person(self, fields: dict[str, Any], origin: str, now: str) -> Deferred[Person]:
        """Insert a person (missing fields take their defaults); DuplicatePerson if the
        PIN exists."""

        def script() -> Script[Person]:
            names = ["user_id"] + [PERSON_COLUMNS[k] for k in fields if k in PERSON_COLUMNS]
            vals = [fields["user_id"]] + [
                _column_value(k, v) for k, v in fields.items() if k in PERSON_COLUMNS
            ]
            names += ["origin", "origin_at", "created_at", "updated_at"]
            vals += [origin, now, now, now]
            marks = ", ".join(["%s"] * len(vals))
            rows = yield Q(
                f"INSERT INTO persons ({', '.join(names)}) VALUES ({marks})"
                f" ON CONFLICT (user_id) DO NOTHING RETURNING {PERSON_COLS}",
                tuple(vals),
            )
            if not rows:
                raise DuplicatePerson(fields["user_id"])
            return _person(rows[0])

        return self._call(script)

    def update_person(
        self, user_id: str, fields: dict[str, Any], origin: str, now: str
    ) -> Deferred[Person | None]:
        """Change the given fields; None when there is no such person."""

        def script() -> Script[Person | None]:
            sets = [f"{PERSON_COLUMNS[k]} = %s" for k in fields if k in PERSON_COLUMNS]
            vals = [_column_value(k, v) for k, v in fields.items() if k in PERSON_COLUMNS]
            sets += ["origin = %s", "origin_at = %s", "updated_at = %s"]
            vals += [origin, now, now]
            rows = yield Q(
                f"UPDATE persons SET {', '.join(sets)} WHERE user_id = %s RETURNING {PERSON_COLS}",
                (*vals, user_id),
            )
            return _person(rows[0]) if rows else None

        return self._call(script)

    def delete_person(self, user_id: str) -> Deferred[Person | None]:
        """Remove a person and their templates; the sync rows stay (the deletes on the
        terminals are tracked there). The removed person, or None."""

        def script() -> Script[Person | None]:
            rows = yield Q(
                f"DELETE FROM persons WHERE user_id = %s RETURNING {PERSON_COLS}", (user_id,)
            )
            if rows:
                yield Q("DELETE FROM person_templates WHERE user_id = %s", (user_id,))
            return _person(rows[0]) if rows else None

        return self._call(script)

    # --- templates ----------------------------------------------------------------------
    def save_person_templates(
        self, items: Sequence[NewTemplate], now: str
    ) -> Deferred[list[PersonTemplate]]:
        """Keep templates: one equal (same digest) to the current one of its (person,
        kind, index) stores nothing; a different one becomes current. The new ones."""

        def script() -> Script[list[PersonTemplate]]:
            added: list[PersonTemplate] = []
            for item in items:
                sha = digest(item.data)
                rows = yield Q(
                    "SELECT digest FROM person_templates WHERE user_id = %s AND kind = %s"
                    " AND idx = %s AND current = 1",
                    (item.user_id, item.kind, item.index),
                )
                if rows and rows[0][0] == sha:
                    continue
                yield Q(
                    "UPDATE person_templates SET current = 0 WHERE user_id = %s AND kind = %s"
                    " AND idx = %s AND current = 1",
                    (item.user_id, item.kind, item.index),
                )
                rows = yield Q(
                    "INSERT INTO person_templates (user_id, kind, idx, format, valid, duress,"
                    " size, digest, data, source_table, source_device, received_at, current)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 1)"
                    f" RETURNING {TEMPLATE_COLS}",
                    (
                        item.user_id,
                        item.kind,
                        item.index,
                        item.format,
                        item.valid,
                        item.duress,
                        len(item.data),
                        sha,
                        item.data,
                        item.source_table,
                        item.source_device,
                        now,
                    ),
                )
                added.append(_template(rows[0]))
            return added

        if not items:
            return succeed([])
        return self._call(script)

    def person_templates(
        self, user_id: str, *, all_versions: bool = False
    ) -> Deferred[list[PersonTemplate]]:
        """A person's templates (the current ones, or every kept version), metadata."""

        def script() -> Script[list[PersonTemplate]]:
            rows = yield Q(
                f"SELECT {TEMPLATE_COLS} FROM person_templates WHERE user_id = %s"
                + ("" if all_versions else " AND current = 1")
                + " ORDER BY kind, idx, id DESC",
                (user_id,),
            )
            return [_template(r) for r in rows]

        return self._call(script, write=False)

    def person_template_data(
        self, user_id: str, template_id: int | None = None
    ) -> Deferred[list[tuple[PersonTemplate, bytes]]]:
        """The current templates with their bytes, or the one ``template_id`` (any
        version)."""

        def script() -> Script[list[tuple[PersonTemplate, bytes]]]:
            if template_id is None:
                rows = yield Q(
                    f"SELECT {TEMPLATE_COLS}, data FROM person_templates WHERE user_id = %s"
                    " AND current = 1 ORDER BY kind, idx",
                    (user_id,),
                )
            else:
                rows = yield Q(
                    f"SELECT {TEMPLATE_COLS}, data FROM person_templates WHERE user_id = %s"
                    " AND id = %s",
                    (user_id, template_id),
                )
            return [(_template(r), bytes(r[13])) for r in rows]

        return self._call(script, write=False)

    # --- sync state ---------------------------------------------------------------------
    def sync_entries(
        self,
        *,
        user_id: str | None = None,
        device_id: str | None = None,
        state: str | None = None,
    ) -> Deferred[list[SyncEntry]]:
        def script() -> Script[list[SyncEntry]]:
            where: list[str] = []
            params: list[Any] = []
            for column, value in (("user_id", user_id), ("device_id", device_id), ("state", state)):
                if value is not None:
                    where.append(f"{column} = %s")
                    params.append(value)
            rows = yield Q(
                f"SELECT {SYNC_COLS} FROM person_sync"
                + (" WHERE " + " AND ".join(where) if where else "")
                + " ORDER BY user_id, device_id",
                tuple(params),
            )
            return [_sync(r) for r in rows]

        return self._call(script, write=False)

    def write_sync(
        self,
        entry: SyncEntry,
        commands: Sequence[NewCommand],
        now: str,
        *,
        expect: tuple[str, tuple[str, ...]] | None = None,
    ) -> Deferred[tuple[SyncEntry | None, list[Command], list[Event]]]:
        """Queue ``commands`` and store ``entry`` (its command_ids become the new
        commands' ids when there are any), with a ``user_sync`` event when the state or
        operation changed, in one transaction.

        ``expect``: (state, command_ids) the stored row must still have (another process
        may have moved it on); when it does not, nothing is written and the entry is None.
        """

        def script() -> Script[tuple[SyncEntry | None, list[Command], list[Event]]]:
            rows = yield Q(
                f"SELECT {SYNC_COLS} FROM person_sync WHERE user_id = %s AND device_id = %s"
                "{{for_update}}",
                (entry.user_id, entry.device_id),
            )
            before = _sync(rows[0]) if rows else None
            if expect is not None:
                now_state = (before.state, before.command_ids) if before else ("", ())
                if now_state != expect:
                    return None, [], []
            added: list[Command] = []
            for item in commands:
                rows = yield Q(
                    "INSERT INTO commands (device_id, command, status, created_at, batch_id,"
                    " type, fields, attempts, expires_at)"
                    " VALUES (%s, %s, 'queued', %s, %s, %s, %s, 0, %s)"
                    f" RETURNING {COMMAND_COLS}",
                    (
                        item.device_id,
                        item.command,
                        now,
                        item.batch_id,
                        item.type,
                        encode_payload(item.fields),
                        item.expires_at,
                    ),
                )
                added.append(_row(rows[0]))
            stored = entry
            if added:
                stored = SyncEntry(
                    user_id=entry.user_id,
                    device_id=entry.device_id,
                    operation=entry.operation,
                    state=entry.state,
                    want=entry.want,
                    command_ids=tuple(c.id for c in added),
                    detail=entry.detail,
                    updated_at=now,
                )
            else:
                stored = SyncEntry(
                    user_id=entry.user_id,
                    device_id=entry.device_id,
                    operation=entry.operation,
                    state=entry.state,
                    want=entry.want,
                    command_ids=entry.command_ids,
                    detail=entry.detail,
                    updated_at=now,
                )
            yield Q(
                f"INSERT INTO person_sync ({SYNC_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (user_id, device_id) DO UPDATE SET operation = excluded.operation,"
                " state = excluded.state, want = excluded.want,"
                " command_ids = excluded.command_ids, detail = excluded.detail,"
                " updated_at = excluded.updated_at",
                (
                    stored.user_id,
                    stored.device_id,
                    stored.operation,
                    stored.state,
                    stored.want,
                    json.dumps(list(stored.command_ids)),
                    stored.detail,
                    now,
                ),
            )
            events = yield from self._command_events(added, now) if added else _nothing()
            changed = (
                before is None
                or before.state != stored.state
                or before.operation != stored.operation
                or before.detail != stored.detail
                or bool(added)
            )
            if changed:
                more = yield from self._user_sync_event(stored, now)
                events = [*events, *more]
            return stored, added, events

        return self._call(script)

    def _user_sync_event(self, entry: SyncEntry, now: str) -> Script[list[Event]]:
        rows: Rows = yield Q(
            "SELECT serial_number, name FROM devices WHERE id = %s", (entry.device_id,)
        )
        serial, name = (rows[0][0], rows[0][1]) if rows else ("", "")
        payload = user_sync_payload(
            entry, serial, name or (f"Push Device {serial}" if serial else "")
        )
        text = encode_payload(payload)
        yield from self._lock_events()
        rows = yield Q(
            "INSERT INTO events (type, serial_number, payload, created_at)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            ("user_sync", serial, text, now),
        )
        event = Event(int(rows[0][0]), "user_sync", payload, serial, data=text)
        yield from self._outbox(event.id, event.id, now)
        yield from self._notify_events(event.id)
        return [event]

    def commands_by_id(self, command_ids: Sequence[str]) -> Deferred[list[Command]]:
        """The commands with these ids (unknown ids left out)."""
        numbers = [n for n in map(row_id, command_ids) if n is not None]

        def script() -> Script[list[Command]]:
            found: list[Command] = []
            for chunk in chunks(numbers):
                marks = ", ".join(["%s"] * len(chunk))
                rows = yield Q(
                    f"SELECT {COMMAND_COLS} FROM commands WHERE id IN ({marks})", tuple(chunk)
                )
                found += [_row(r) for r in rows]
            return sorted(found, key=lambda c: int(c.id))

        if not numbers:
            return succeed([])
        return self._call(script, write=False)


def _nothing() -> Script[list[Event]]:
    return []
    yield  # pragma: no cover  (makes this a generator)
