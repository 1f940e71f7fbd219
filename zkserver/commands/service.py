"""The command lifecycle service: queue, hand out, finish, cancel, time out.

One :class:`Commands` instance per process (built in ``zkserver.tap``) is shared by the
API, the push listener and the pull sessions. Every status change is stored together with
its ``command_status`` event in one transaction and the event is published after the
commit.

Interface for the pull side (``zkserver.pull``)::

    commands: Commands                      # zkserver.tap passes it to the pull manager
    commands.watch(callback)                # callback(command) when this process queues a
                                            # command (any device: check command.device_id);
                                            # other processes' commands are only found by
                                            # asking, so also ask now and then (idle probe)
    command = await commands.next_for(device.id)
        # the device's oldest queued command, now 'sent' (attempts + 1), or None.
        # command.type / command.fields: a zkserver.commands.spec type and its validated
        # fields (e.g. {"user_id": "7", "name": "Ann", "privilege": 0, "password": "",
        # "card": "", "group": "1"}); command.expires_at: ISO UTC, expire it if past.
        # Run one at a time, in this order; ask again after finishing for the next.
    await commands.finish(command.id, "done", 0, "")                  # success
    await commands.finish(command.id, "failed", reply, pull_result(reply))  # refused
    await commands.finish(command.id, "expired", None, "not run before it expired")
        # status: done | failed | expired; return_code: the pull reply code (or None);
        # result: words (zkserver.commands.spec.pull_result) or the data read, as text.
        # Returns the updated Command, or None if it was already final (done/failed/
        # cancelled) or unknown: then nothing changed and no event was published.

A push command handed out (``sent``) and not answered within ``timeout`` seconds goes
back to ``queued`` (same id) up to ``retries`` attempts in all, then ``expired``; a queued
command not handed out within ``ttl`` seconds is ``expired``: :meth:`Commands.sweep`,
run by a timer in ``zkserver.tap``, does both. A pull command is ``sent`` while its
session runs it, however long that takes (never sent again meanwhile); when a device's
session starts, :meth:`Commands.recover` queues again the commands a dead session (or a
``kill -9``) left ``sent``, up to ``retries`` runs in all. One already ``done`` is never
run again.

Errors of :meth:`Commands.queue`: :class:`~zkserver.commands.spec.CommandError` (400),
:class:`DeviceNotReady` (409, pending or rejected device),
:class:`~zkserver.commands.spec.Unsupported` (422), :class:`TooLarge` (413).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from inspect import isawaitable
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from zkserver.commands.spec import (
    CommandError,
    CommandSpec,
    Unsupported,
    check_for_device,
)
from zkserver.ingest import Ingest
from zkserver.push.commands import MAX_COMMAND_REPLY, fits_reply, format_push_command
from zkserver.push.timezones import device_offset_minutes
from zkserver.records import Command, Device
from zkserver.store.base import Store
from zkserver.store.commands import CommandPage, NewCommand, stamp

__all__ = ["Commands", "Batch", "DeviceNotReady", "TooLarge", "NotCancellable"]

log = Logger()

#: The longest ``result`` kept on a command (characters).
RESULT_MAX = 64 * 1024


class DeviceNotReady(Exception):
    """The device is pending or rejected: it gets no commands (HTTP 409)."""


class TooLarge(ValueError):
    """The push command line would not fit one getrequest reply (HTTP 413)."""


class NotCancellable(Exception):
    """Only a queued command can be cancelled (HTTP 409); ``command`` is as it is now."""

    def __init__(self, command: Command) -> None:
        super().__init__(f"command {command.id} is {command.status}, not queued")
        self.command = command


@frozen
class Batch:
    batch_id: str
    commands: list[Command]
    skipped: list[dict[str, str]]


@define(eq=False)
class Commands:
    store: Store
    ingest: Ingest
    clock: IReactorTime
    timeout: float = 120.0
    retries: int = 3
    ttl: float = 86400.0
    server_timezone: str = ""
    _watchers: list[Callable[[Command], None]] = field(factory=list)
    #: Pull commands handed out by :meth:`next_for` and still running in this process.
    _running: set[str] = field(factory=set)
    _status_watchers: list[Callable[[Command], Any]] = field(factory=list)

    # --- time -------------------------------------------------------------------------
    def now(self) -> str:
        return stamp(self.clock.seconds())

    def device_local_now(self, device: Device) -> datetime:
        """The device's wall-clock time now (its zone, else the server's --timezone)."""
        now = datetime.fromtimestamp(self.clock.seconds(), UTC)
        offset = device_offset_minutes(device.timezone, self.server_timezone, now)
        return (now + timedelta(minutes=offset)).replace(tzinfo=None, microsecond=0)

    # --- queueing ---------------------------------------------------------------------
    def watch(self, callback: Callable[[Command], None]) -> None:
        """Call ``callback(command)`` for each command this process queues."""
        self._watchers.append(callback)

    def watch_status(self, callback: Callable[[Command], Any]) -> None:
        """Call ``callback(command)`` (it may return an awaitable) for each status change
        this process makes after queueing (sent, done, failed, expired, cancelled)."""
        self._status_watchers.append(callback)

    def notify_queued(self, commands: Sequence[Command]) -> None:
        """Commands queued by another writer in this process (the person sync stores
        its commands with its own state): tell the queue watchers, as :meth:`queue` does."""
        for command in commands:
            for callback in list(self._watchers):
                try:
                    callback(command)
                except Exception:
                    log.failure("A command watcher failed")

    def _status_changed(self, commands: Sequence[Command]) -> None:
        for command in commands:
            for callback in list(self._status_watchers):
                try:
                    result = callback(command)
                    if isawaitable(result):
                        Deferred.fromCoroutine(_awaiting(result)).addErrback(
                            lambda f: log.failure("A command status watcher failed", f)
                        )
                except Exception:
                    log.failure("A command status watcher failed")

    def prepare(self, device: Device, spec: CommandSpec, batch_id: str | None = None) -> NewCommand:
        """Check ``spec`` for ``device`` and build the row to queue (raises the errors of
        :meth:`queue`)."""
        if not device.approved or device.status in ("pending", "rejected"):
            raise DeviceNotReady(f"device is {device.status}: approve it first")
        check_for_device(spec, device.kind, device.info, device.encoding)
        line = ""
        if device.kind == "push":
            line = format_push_command(spec, self.device_local_now(device))
            if not fits_reply(line):
                raise TooLarge(
                    f"the command is {len(line.encode())} bytes; a terminal takes at most"
                    f" {MAX_COMMAND_REPLY - 19} in one reply"
                )
        expires = stamp(self.clock.seconds() + self.ttl) if self.ttl > 0 else None
        return NewCommand(
            device_id=device.id,
            type=spec.type,
            fields=dict(spec.fields),
            command=line,
            batch_id=batch_id,
            expires_at=expires,
        )

    async def queue(self, device: Device, spec: CommandSpec) -> Command:
        """Queue one command for ``device``; nothing is queued on any error."""
        added = await self._add([self.prepare(device, spec)])
        return added[0]

    async def queue_batch(self, devices: Sequence[Device], spec: CommandSpec) -> Batch:
        """One command per device in one transaction, under a new ``batch_id``. Devices
        that cannot do it are skipped with the reason; Unsupported if none can.
        DeviceNotReady for a pending or rejected device among ``devices``."""
        batch_id = uuid.uuid4().hex[:16]
        items: list[NewCommand] = []
        skipped: list[dict[str, str]] = []
        for device in devices:
            try:
                items.append(self.prepare(device, spec, batch_id))
            except Unsupported as e:
                skipped.append({"device_id": device.id, "reason": e.reason})
            except (CommandError, TooLarge) as e:
                skipped.append({"device_id": device.id, "reason": str(e)})
        if not items:
            kinds = sorted({d.kind for d in devices}) or ["push"]
            raise Unsupported(
                spec.type,
                "/".join(kinds),
                f"no device can do {spec.type!r}"
                + (": " + "; ".join(s["reason"] for s in skipped[:3]) if skipped else ""),
            )
        return Batch(batch_id, await self._add(items), skipped)

    async def _add(self, items: list[NewCommand]) -> list[Command]:
        added, events = await self.store.add_commands(items, self.now())
        self.ingest.publish(events)
        for command in added:
            for callback in list(self._watchers):
                try:
                    callback(command)
                except Exception:
                    log.failure("A command watcher failed")
        return added

    # --- handing out --------------------------------------------------------------------
    async def next_for(self, device_id: str) -> Command | None:
        """The device's oldest queued command, now ``sent``; None when there is none."""
        claimed = await self._publish(self.store.claim_commands(device_id, self.now()))
        if not claimed:
            return None
        self._running.add(claimed[0].id)
        return claimed[0]

    async def recover(self, device_id: str) -> int:
        """A pull session starts: the device's commands left ``sent`` by a session that
        is gone (or by a server that was stopped) are queued again, or ``expired`` after
        ``retries`` runs; those still running in this process are left alone."""
        changed = await self._publish(
            self.store.recover_commands(device_id, self.now(), self.retries, sorted(self._running))
        )
        return len(changed)

    def release(self, command_id: str) -> None:
        """The command handed out by :meth:`next_for` is no longer running here (its
        session was cut off); the next session's :meth:`recover` runs it again."""
        self._running.discard(command_id)

    async def claim_push(
        self, device: Device, max_bytes: int = MAX_COMMAND_REPLY - 1024
    ) -> list[tuple[Command, str]]:
        """The commands for one getrequest reply, now ``sent``, with the line to send
        for each (``sync_time`` gets the device's time as it is now)."""
        claimed = await self._publish(self.store.claim_commands(device.id, self.now(), max_bytes))
        lines = []
        for command in claimed:
            line = command.command
            if command.type == "sync_time":
                line = format_push_command(
                    CommandSpec("sync_time", {}), self.device_local_now(device)
                )
            lines.append((command, line))
        return lines

    async def finish(
        self,
        command_id: str,
        status: str,
        return_code: int | None = None,
        result: str = "",
        device_id: str | None = None,
    ) -> Command | None:
        """Record the outcome; None (and no event) if it was final already or unknown.
        ``result`` is kept to :data:`RESULT_MAX` characters (a terminal's answer may be
        anything up to the request body limit)."""
        self._running.discard(command_id)
        result = result[:RESULT_MAX]
        changed = await self._publish(
            self.store.complete_command(
                command_id, status, return_code, result, self.now(), device_id
            )
        )
        return changed[0] if changed else None

    async def cancel(self, command_id: str) -> Command:
        """Cancel a queued command. LookupError if unknown, NotCancellable otherwise."""
        changed, events = await self.store.cancel_command(command_id, self.now())
        self.ingest.publish(events)
        if events:
            self._status_changed(changed)
        if not changed:
            raise LookupError(command_id)
        if not events:
            raise NotCancellable(changed[0])
        return changed[0]

    async def sweep(self) -> int:
        """Requeue or expire unanswered commands and expire stale queued ones."""
        sent_before = stamp(self.clock.seconds() - self.timeout)
        changed = await self._publish(
            self.store.sweep_commands(self.now(), sent_before, self.retries)
        )
        for command in changed:
            log.info(
                "Command {id} ({type}) for device {device} is {status} (attempt {attempts})",
                id=command.id,
                type=command.type,
                device=command.device_id,
                status=command.status,
                attempts=command.attempts,
            )
        return len(changed)

    async def _publish(self, change: Any) -> list[Command]:
        commands, events = await change
        self.ingest.publish(events)
        self._status_changed(commands)
        return list(commands)

    # --- reading ------------------------------------------------------------------------
    async def get(self, command_id: str) -> Command | None:
        return await self.store.command(command_id)

    async def list(self, **filters: Any) -> CommandPage:
        return await self.store.list_commands(**filters)


async def _awaiting(awaitable: Any) -> Any:
    return await awaitable
