"""The command lifecycle as transaction scripts, shared by both backends.

A mixin of :class:`~zkserver.store.sql.SQLStore` (both backends list it first). Every
status change of a command and its ``command_status`` event (plus the legacy
``command_result`` alias for results) are written in ONE transaction; the methods return
the changed commands and the new events, which the caller publishes after the commit
(:class:`zkserver.commands.service.Commands` does that).

Times are passed in by the caller (UTC ISO-8601 text from :func:`stamp`), so the
service's injected clock decides what "now" is; text of that one format sorts in time
order on both databases.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from attrs import field, frozen
from twisted.internet.defer import Deferred, succeed

from zkserver.events import Event, encode_payload
from zkserver.records import Command, redact_command
from zkserver.store.base import row_id
from zkserver.store.dialect import Q, Rows, Script, chunks, values

__all__ = [
    "CommandScripts",
    "CommandChange",
    "CommandPage",
    "NewCommand",
    "command_status_payload",
    "command_result_payload",
    "stamp",
]

COLS = (
    "id, device_id, command, status, return_code, result, created_at, sent_at,"
    " finished_at, batch_id, type, fields, attempts, expires_at"
)

CommandChange = tuple[list[Command], list[Event]]
"""Commands whose status changed and the events recorded with the change."""

CommandPage = tuple[list[Command], "str | None"]
"""A page of commands (newest first) and the cursor of the next page."""


def stamp(seconds: float) -> str:
    """A server time as commands store it: UTC ISO-8601 with microseconds."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")


@frozen
class NewCommand:
    """A command to queue: for ``device_id``, of ``type`` with validated ``fields``;
    ``command`` is the push line ('' for pull devices)."""

    device_id: str
    type: str
    fields: dict[str, Any] = field(factory=dict)
    command: str = ""
    batch_id: str | None = None
    expires_at: str | None = None


def _row(row: Sequence[Any]) -> Command:
    return Command(
        id=str(row[0]),
        device_id=row[1],
        command=row[2],
        status=row[3],
        return_code=row[4],
        result=row[5],
        created_at=row[6],
        sent_at=row[7],
        finished_at=row[8],
        batch_id=row[9],
        type=row[10] or "raw",
        fields=_fields(row[10], row[11], row[2]),
        attempts=int(row[12] or 0),
        expires_at=row[13],
    )


def _fields(kind: str | None, text: str | None, command: str) -> dict[str, Any]:
    found = json.loads(text or "{}")
    if (kind or "raw") == "raw" and "command" not in found:
        found["command"] = command  # queued through the old one-line interface
    return found


def command_status_payload(command: Command, serial_number: str) -> dict[str, Any]:
    """The ``command_status`` event: one per status change, push and pull alike."""
    return {
        "type": "command_status",
        "command_id": command.id,
        "batch_id": command.batch_id,
        "device_id": command.device_id,
        "serial_number": serial_number,
        "command_type": command.type,
        "status": command.status,
        "attempts": command.attempts,
        "return_code": command.return_code,
        "result": command.result[:1000],
    }


def command_result_payload(command: Command, serial_number: str) -> dict[str, Any]:
    """The legacy ``command_result`` event (an alias of a final ``command_status``)."""
    return {
        "type": "command_result",
        "device_id": command.device_id,
        "serial_number": serial_number,
        "command_id": command.id,
        "command": redact_command(command.command)[:200],
        "status": command.status,
        "return_code": command.return_code,
    }


def _fit(sizes: Sequence[tuple[int, int]], max_bytes: int) -> list[int]:
    """The leading ids whose ``C:<id>:<command>\\n`` lines fit ``max_bytes`` (at least one,
    so an oversized command cannot block the queue); ``sizes``: (id, command size)."""
    chosen: list[int] = []
    total = 0
    for command_id, size in sizes:
        line = len(f"C:{command_id}:\n") + size
        if chosen and total + line > max_bytes:
            break
        chosen.append(command_id)
        total += line
    return chosen


#: The commands the sent-timeout applies to: all but those of pull devices.
_NOT_PULL = "device_id NOT IN (SELECT id FROM devices WHERE kind = 'pull')"


class CommandScripts:
    """The command methods of the Store (see zkserver.store.base)."""

    if TYPE_CHECKING:  # provided by SQLStore (never define them here: the MRO would win)

        def _lock_events(self) -> Iterator[Q]: ...

        def _notify_events(self, max_id: int) -> Iterator[Q]: ...

        def _call(self, make: Any, *args: Any, write: bool = True) -> Deferred[Any]: ...

        def _outbox(self, first_id: int, last_id: int, now: str) -> Iterator[Q]: ...

    # --- helpers ------------------------------------------------------------------
    def _command_events(
        self, commands: Sequence[Command], now: str, results: bool = False
    ) -> Script[list[Event]]:
        """Insert one ``command_status`` event per command (and with ``results`` a
        ``command_result`` alias for each done/failed one); last in the transaction."""
        if not commands:
            return []
        device_ids = sorted({c.device_id for c in commands})
        serials: dict[str, str] = {}
        for ids in chunks(device_ids):
            marks = ", ".join(["%s"] * len(ids))
            rows: Rows = yield Q(
                f"SELECT id, serial_number FROM devices WHERE id IN ({marks})", tuple(ids)
            )
            serials.update({row[0]: row[1] for row in rows})
        payloads: list[tuple[dict[str, Any], str]] = []
        for c in commands:
            serial = serials.get(c.device_id, "")
            payloads.append((command_status_payload(c, serial), serial))
            if results and c.status in ("done", "failed"):
                payloads.append((command_result_payload(c, serial), serial))
        yield from self._lock_events()
        events: list[Event] = []
        for chunk in chunks(payloads):
            texts = [encode_payload(p) for p, _ in chunk]
            sql, params = values(
                [(p["type"], s, t, now) for (p, s), t in zip(chunk, texts, strict=True)]
            )
            rows = yield Q(
                f"INSERT INTO events (type, serial_number, payload, created_at) VALUES {sql}"
                " RETURNING id, payload",
                params,
            )
            by_text = {t: (p, s) for (p, s), t in zip(chunk, texts, strict=True)}
            for row in rows:
                payload, serial = by_text[row[1]]
                events.append(Event(int(row[0]), payload["type"], payload, serial, data=row[1]))
        events.sort(key=lambda e: e.id)
        yield from self._outbox(events[0].id, events[-1].id, now)  # webhooks, same transaction
        yield from self._notify_events(events[-1].id)
        return events

    # --- queue --------------------------------------------------------------------
    def add_commands(self, items: Sequence[NewCommand], now: str) -> Deferred[CommandChange]:
        """Queue commands (in the given order) with one ``queued`` event each."""

        def script() -> Script[CommandChange]:
            added: list[Command] = []
            for item in items:
                rows = yield Q(
                    "INSERT INTO commands (device_id, command, status, created_at, batch_id,"
                    " type, fields, attempts, expires_at)"
                    " VALUES (%s, %s, 'queued', %s, %s, %s, %s, 0, %s)"
                    f" RETURNING {COLS}",
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
            events = yield from self._command_events(added, now)
            return added, events

        if not items:
            return succeed(([], []))
        return self._call(script)

    def claim_commands(
        self, device_id: str, now: str, max_bytes: int | None = None
    ) -> Deferred[CommandChange]:
        """Mark the device's oldest queued command(s) ``sent`` (attempts + 1) and return
        them in queue order. ``max_bytes`` None: just the oldest one (a pull session runs
        one at a time); else as many as fit ``C:<id>:<command>`` lines in ``max_bytes``
        (at least one), and none while one of the device's commands is still ``sent``
        (unanswered): a push terminal runs a reply's commands in order, so a command sent
        again after its timeout can never be overtaken by a later one. A command is
        handed out once, even to several processes."""

        def script() -> Script[CommandChange]:
            if max_bytes is not None:
                rows = yield Q(
                    "SELECT id FROM commands WHERE device_id = %s AND status = 'sent' LIMIT 1",
                    (device_id,),
                )
                if rows:
                    return [], []
            if max_bytes is None:
                rows = yield Q(
                    "SELECT id FROM commands WHERE device_id = %s AND status = 'queued'"
                    " ORDER BY id LIMIT 1",
                    (device_id,),
                )
                chosen = [int(row[0]) for row in rows]
            else:
                # Sizes first (characters, never more than bytes), then the text of just
                # the candidates, to fit them in bytes: a long queue of large template
                # commands is never read whole.
                rows = yield Q(
                    "SELECT id, length(command) FROM commands WHERE device_id = %s"
                    " AND status = 'queued' ORDER BY id LIMIT 1000",
                    (device_id,),
                )
                candidates = _fit([(int(r[0]), int(r[1] or 0)) for r in rows], max_bytes)
                if not candidates:
                    return [], []
                marks = ", ".join(["%s"] * len(candidates))
                rows = yield Q(
                    f"SELECT id, command FROM commands WHERE id IN ({marks}) ORDER BY id",
                    tuple(candidates),
                )
                chosen = _fit([(int(r[0]), len(r[1].encode())) for r in rows], max_bytes)
            if not chosen:
                return [], []
            marks = ", ".join(["%s"] * len(chosen))
            rows = yield Q(
                "UPDATE commands SET status = 'sent', sent_at = %s, attempts = attempts + 1"
                f" WHERE status = 'queued' AND id IN ({marks}) RETURNING {COLS}",
                (now, *chosen),
            )
            claimed = sorted((_row(row) for row in rows), key=lambda c: int(c.id))
            events = yield from self._command_events(claimed, now)
            return claimed, events

        return self._call(script)

    def complete_command(
        self,
        command_id: str,
        status: str,
        return_code: int | None,
        result: str,
        now: str,
        device_id: str | None = None,
    ) -> Deferred[CommandChange]:
        """Record a command's outcome (``done``, ``failed`` or ``expired``). A command
        already ``done``/``failed``/``cancelled``, an unknown id, a command never handed
        out (``attempts`` 0: a terminal cannot have run it, so a result naming it is a
        replay or another installation's id), or (with ``device_id``) another device's
        command changes nothing: ``([], [])``. A command sent, then queued again or
        expired after its timeout, still takes its late result."""
        number = row_id(command_id)
        if number is None or status not in ("done", "failed", "expired"):
            return succeed(([], []))

        def script() -> Script[CommandChange]:
            where = (
                "id = %s AND (status = 'sent' OR (status IN ('queued', 'expired')"
                " AND attempts > 0))"
            )
            params: tuple[Any, ...] = (number,)
            if device_id is not None:
                where += " AND device_id = %s"
                params += (device_id,)
            rows = yield Q(
                "UPDATE commands SET status = %s, return_code = %s, result = %s,"
                f" finished_at = %s WHERE {where} RETURNING {COLS}",
                (status, return_code, result, now, *params),
            )
            changed = [_row(row) for row in rows]
            events = yield from self._command_events(changed, now, results=True)
            return changed, events

        return self._call(script)

    def cancel_command(self, command_id: str, now: str) -> Deferred[CommandChange]:
        """Cancel a ``queued`` command: ``([cancelled], [event])``; otherwise nothing
        changes and the command as it is comes back without events (``([], [])`` when
        there is no such command)."""
        number = row_id(command_id)
        if number is None:
            return succeed(([], []))

        def script() -> Script[CommandChange]:
            rows = yield Q(
                "UPDATE commands SET status = 'cancelled', finished_at = %s"
                f" WHERE id = %s AND status = 'queued' RETURNING {COLS}",
                (now, number),
            )
            if not rows:
                rows = yield Q(f"SELECT {COLS} FROM commands WHERE id = %s", (number,))
                return [_row(row) for row in rows], []
            changed = [_row(row) for row in rows]
            events = yield from self._command_events(changed, now)
            return changed, events

        return self._call(script)

    def sweep_commands(
        self, now: str, sent_before: str, max_attempts: int
    ) -> Deferred[CommandChange]:
        """The timers of the lifecycle, for every device:

        - ``sent`` before ``sent_before`` with fewer than ``max_attempts`` attempts: back
          to ``queued`` (sent again, same id);
        - ``sent`` before ``sent_before`` after ``max_attempts`` attempts: ``expired``;
        - ``queued`` with ``expires_at`` <= ``now``: ``expired``.

        The first two are for push terminals only: a pull command is ``sent`` while its
        session runs it, however long that takes (see :meth:`recover_commands`).
        """

        def script() -> Script[CommandChange]:
            requeued = yield Q(
                "UPDATE commands SET status = 'queued' WHERE status = 'sent'"
                f" AND sent_at < %s AND attempts < %s AND {_NOT_PULL} RETURNING {COLS}",
                (sent_before, int(max_attempts)),
            )
            unanswered = yield Q(
                "UPDATE commands SET status = 'expired', finished_at = %s,"
                " result = 'no answer from the terminal' WHERE status = 'sent'"
                f" AND sent_at < %s AND attempts >= %s AND {_NOT_PULL} RETURNING {COLS}",
                (now, sent_before, int(max_attempts)),
            )
            stale = yield Q(
                "UPDATE commands SET status = 'expired', finished_at = %s,"
                " result = 'not run before it expired' WHERE status = 'queued'"
                f" AND expires_at IS NOT NULL AND expires_at <= %s RETURNING {COLS}",
                (now, now),
            )
            changed = sorted(
                (_row(row) for row in [*requeued, *unanswered, *stale]), key=lambda c: int(c.id)
            )
            events = yield from self._command_events(changed, now)
            return changed, events

        return self._call(script)

    def recover_commands(
        self, device_id: str, now: str, max_attempts: int, keep: Sequence[str] = ()
    ) -> Deferred[CommandChange]:
        """A pull device's ``sent`` commands that no session runs any more (the link
        dropped mid-command, or the server was restarted): back to ``queued`` (run again,
        same id) while fewer than ``max_attempts`` runs were started, else ``expired``.
        ``keep``: ids still running in this process, left alone."""
        kept = [n for n in (row_id(c) for c in keep) if n is not None]

        def script() -> Script[CommandChange]:
            where = "device_id = %s AND status = 'sent'"
            params: tuple[Any, ...] = (device_id,)
            if kept:
                where += f" AND id NOT IN ({', '.join(['%s'] * len(kept))})"
                params += tuple(kept)
            requeued = yield Q(
                f"UPDATE commands SET status = 'queued' WHERE {where} AND attempts < %s"
                f" RETURNING {COLS}",
                (*params, int(max_attempts)),
            )
            lost = yield Q(
                "UPDATE commands SET status = 'expired', finished_at = %s,"
                " result = 'cut off on the terminal too often'"
                f" WHERE {where} AND attempts >= %s RETURNING {COLS}",
                (now, *params, int(max_attempts)),
            )
            changed = sorted((_row(row) for row in [*requeued, *lost]), key=lambda c: int(c.id))
            events = yield from self._command_events(changed, now)
            return changed, events

        return self._call(script)

    # --- reading ------------------------------------------------------------------
    def command(self, command_id: str) -> Deferred[Command | None]:
        number = row_id(command_id)
        if number is None:
            return succeed(None)

        def script() -> Script[Command | None]:
            rows = yield Q(f"SELECT {COLS} FROM commands WHERE id = %s", (number,))
            return _row(rows[0]) if rows else None

        return self._call(script, write=False)

    def list_commands(
        self,
        *,
        device_id: str | None = None,
        batch_id: str | None = None,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Deferred[CommandPage]:
        """Commands newest first, filtered; ``cursor`` (from the previous page)
        continues. ValueError for a bad cursor."""

        def script() -> Script[CommandPage]:
            where: list[str] = []
            params: list[Any] = []
            for column, value in (
                ("device_id", device_id),
                ("batch_id", batch_id),
                ("status", status),
            ):
                if value is not None:
                    where.append(f"{column} = %s")
                    params.append(value)
            if cursor:
                number = row_id(cursor)
                if number is None:
                    raise ValueError(f"invalid cursor: {cursor[:40]!r}")
                where.append("id < %s")
                params.append(number)
            size = min(max(int(limit), 1), 1000)
            rows = yield Q(
                f"SELECT {COLS} FROM commands"
                + (" WHERE " + " AND ".join(where) if where else "")
                + " ORDER BY id DESC LIMIT %s",
                (*params, size + 1),
            )
            page = [_row(row) for row in rows[:size]]
            return page, (page[-1].id if len(rows) > size else None)

        return self._call(script, write=False)
