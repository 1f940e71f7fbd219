"""Device control on a pull terminal: the queued commands of one device, run on its session.

:class:`CommandRunner` belongs to one :class:`~zkserver.pull.service.PullDeviceService`.
While the device's session is live it asks :class:`zkserver.commands.Commands` for the
device's oldest queued command, runs it, reports the outcome, and asks again, so commands
run one at a time in the order they were queued; while the device is offline they wait
(and expire after ``--command-ttl``, which the command service sweeps).  Real-time events
keep arriving during a command (the session ACKs and saves them between and inside
requests), and after every write sequence the runner registers for events again and
re-reads the log if the record count grew by more than the events seen meanwhile.

How each type runs (docs/protocols.md §B.7):

=============== ==========================================================================
reboot          RESTART; the link drops and the device shows ``rebooting`` until it is back
sync_time       SET_TIME with the wall-clock time of the device's zone
info            identity, sizes and algorithm versions read again (kept in ``info``)
clear_log       DISABLEDEVICE, CLEAR_ATTLOG, ENABLEDEVICE; the catch-up mark is reset
clear_data      DISABLEDEVICE, CLEAR_DATA, REFRESHDATA, ENABLEDEVICE; mark reset
open_door       UNLOCK ``seconds``
user_upsert     read users (the layout); DISABLEDEVICE, USER_WRQ (existing uid kept, else a
                free one), REFRESHDATA, ENABLEDEVICE. On a 28-byte terminal the PIN is a
                number: ``0012`` is user ``12`` there (every type naming a user)
user_delete     read users; DISABLEDEVICE, DELETE_USER, REFRESHDATA, ENABLEDEVICE
                (``failed``, "user not found", when the PIN is not on the terminal)
query_users     read users (stored, ``user_sync`` event)
query_attlog    a catch-up read (new punches saved); result counts those in the range
enroll_finger   CANCELCAPTURE, STARTENROLL (the user must exist on the terminal)
template_upsert finger templates only, of the terminal's algorithm version: DISABLEDEVICE,
                the user and the template in one buffered write (command 110),
                REFRESHDATA, ENABLEDEVICE
=============== ==========================================================================

Every write sequence is followed by REG_EVENT again (whether the registration survives
DISABLEDEVICE differs by firmware).  Error replies become ``failed`` with the reply code
and its words; a link lost mid-command leaves the command ``sent``, and the next session
runs it again (``--command-retries`` runs in all). ``--command-timeout`` does not apply:
a command still running is never sent again.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from attrs import define, evolve
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from zkserver.events import user_sync_payload
from zkserver.pull import codec
from zkserver.pull.protocol import CommandFailed, DatasetUnreadable, ZKError, ZKSession
from zkserver.records import TIMESTAMP_FORMAT, Command, DeviceUser

if TYPE_CHECKING:
    from zkserver.pull.service import PullDeviceService

__all__ = ["CommandRunner", "CommandSource", "Outcome", "PULL_TYPES"]

log = Logger()

PULL_TYPES = (
    "reboot",
    "sync_time",
    "info",
    "clear_log",
    "clear_data",
    "open_door",
    "user_upsert",
    "user_delete",
    "query_users",
    "query_attlog",
    "enroll_finger",
    "template_upsert",
)


class CommandSource(Protocol):
    """What the runner needs of :class:`zkserver.commands.Commands` (the manager also
    calls its ``watch`` to kick the device's runner when a command is queued)."""

    def next_for(self, device_id: str) -> Awaitable[Command | None]: ...

    def finish(
        self,
        command_id: str,
        status: str,
        return_code: int | None = None,
        result: str = "",
        device_id: str | None = None,
    ) -> Awaitable[Command | None]: ...

    def recover(self, device_id: str) -> Awaitable[int]: ...

    def release(self, command_id: str) -> None: ...


@define
class Outcome:
    """How a command ended: ``done`` or ``failed``, the reply code and the words."""

    status: str
    return_code: int | None = 0
    result: str = ""


class Failed(Exception):
    """The command cannot be done on this terminal (not a protocol error)."""

    def __init__(self, words: str, return_code: int | None = None) -> None:
        super().__init__(words)
        self.words = words
        self.return_code = return_code


def _expired(command: Command, now: float) -> bool:
    if not command.expires_at:
        return False
    try:
        when = datetime.fromisoformat(command.expires_at.replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp() <= now


class CommandRunner:
    """Runs one pull device's queued commands, one at a time, on its live session."""

    def __init__(self, service: PullDeviceService, commands: CommandSource) -> None:
        self.service = service
        self.commands = commands
        self._running = False
        self._again = False
        #: The session whose start recovered the device's cut-off commands.
        self._recovered: ZKSession | None = None
        #: Commands run by this runner (for tests and logs): (command id, status).
        self.ran: list[tuple[str, str]] = []

    # ------------------------------------------------------------------ triggers

    def kick(self) -> None:
        """Run the queued commands now if the session is live (no-op while running)."""
        if self._running:
            self._again = True
            return
        session = self.service.session
        if session is None or session.closed or not self.service.running:
            return
        d = Deferred.fromCoroutine(self._drain())
        d.addErrback(
            lambda f: log.failure("{name}: running commands failed", f, name=self.service.label)
        )

    async def _drain(self) -> None:
        self._running = True
        try:
            while True:
                self._again = False
                session = self.service.session
                if session is None or session.closed or not self.service.running:
                    return
                if self._recovered is not session:
                    await self.commands.recover(self.service.device.id)
                    self._recovered = session
                command = await self.commands.next_for(self.service.device.id)
                if command is None:
                    if self._again:
                        continue
                    return
                await self._run_one(session, command)
        except BaseException:
            # Most likely the database failed (saving an outcome, say): the next drain
            # recovers what is left 'sent' first, so nothing is stuck or overtaken.
            self._recovered = None
            raise
        finally:
            self._running = False

    async def _run_one(self, session: ZKSession, command: Command) -> None:
        device_id = self.service.device.id
        if _expired(command, self.service.clock.seconds()):
            await self.commands.finish(
                command.id, "expired", None, "not run before it expired", device_id
            )
            self.ran.append((command.id, "expired"))
            return
        log.info(
            "{name}: running command {id} ({type})",
            name=self.service.label,
            id=command.id,
            type=command.type,
        )
        try:
            outcome = await self.execute(session, command)
        except CommandFailed as e:
            outcome = Outcome("failed", e.reply, e.words)
        except codec.FieldError as e:
            outcome = Outcome("failed", None, str(e))
        except Failed as e:
            outcome = Outcome("failed", e.return_code, e.words)
        except DatasetUnreadable as e:
            outcome = Outcome("failed", None, f"the terminal's {e.what} could not be read")
        except ZKError as e:
            # The link went mid-command: leave it 'sent'; the next session runs it again
            # (Commands.recover; a done command is never run twice).
            self.commands.release(command.id)
            log.warn(
                "{name}: command {id} ({type}) interrupted: {error}",
                name=self.service.label,
                id=command.id,
                type=command.type,
                error=str(e),
            )
            self.ran.append((command.id, "interrupted"))
            return
        except Exception as e:
            log.failure("{name}: command {id} crashed", name=self.service.label, id=command.id)
            outcome = Outcome("failed", None, f"server error: {type(e).__name__}")
        await self.commands.finish(
            command.id, outcome.status, outcome.return_code, outcome.result, device_id
        )
        self.ran.append((command.id, outcome.status))

    # ------------------------------------------------------------------ the types

    async def execute(self, session: ZKSession, command: Command) -> Outcome:
        """Run one command on ``session``; raises CommandFailed, FieldError, Failed."""
        handler = getattr(self, f"_do_{command.type}", None)
        if handler is None:
            raise Failed("not supported by this terminal")
        result: Outcome = await handler(session, dict(command.fields))
        return result

    async def _do_reboot(self, session: ZKSession, fields: dict[str, Any]) -> Outcome:
        self.service.expect_restart()
        await session.restart()
        return Outcome("done", 0, "restarting")

    async def _do_sync_time(self, session: ZKSession, fields: dict[str, Any]) -> Outcome:
        now = self.service.device_now()
        await session.set_time(now)
        return Outcome("done", 0, f"time set to {now.strftime(TIMESTAMP_FORMAT)}")

    async def _do_info(self, session: ZKSession, fields: dict[str, Any]) -> Outcome:
        info = await self.service.identify(session)
        return Outcome("done", 0, json.dumps(info, sort_keys=True))

    async def _do_clear_log(self, session: ZKSession, fields: dict[str, Any]) -> Outcome:
        async def clear() -> None:
            await session.clear_attendance()

        await self._write_sequence(session, clear, refresh=False)
        await self.service.reset_log_mark()
        return Outcome("done", 0, "attendance log cleared")

    async def _do_clear_data(self, session: ZKSession, fields: dict[str, Any]) -> Outcome:
        async def clear() -> None:
            await session.clear_data()

        await self._write_sequence(session, clear)
        await self.service.reset_log_mark()
        await self._store(self.service.store.save_users(self.service.device.id, [], True))
        return Outcome("done", 0, "users, templates and attendance log cleared")

    async def _do_open_door(self, session: ZKSession, fields: dict[str, Any]) -> Outcome:
        seconds = int(fields.get("seconds", 3))
        await session.unlock(seconds)
        return Outcome("done", 0, f"door open for {seconds} s")

    async def _users(self, session: ZKSession) -> list[DeviceUser]:
        users, layout = await session.read_users_layout()
        if layout is not None and self.service.device.info.get("user_layout") != layout:
            await self.service.remember(user_layout=layout)
        return users

    @staticmethod
    def _match(users: list[DeviceUser], user_id: str, layout: int | None) -> DeviceUser | None:
        """The terminal's user ``user_id``: the same text, else (28-byte layout: a
        numeric PIN) the same number."""
        found = next((u for u in users if u.user_id == user_id), None)
        if found is None:
            key = codec.pin_key(user_id, layout)
            found = next((u for u in users if codec.pin_key(u.user_id, layout) == key), None)
        return found

    @staticmethod
    def _free_uid(users: list[DeviceUser]) -> int:
        used = {u.uid for u in users if u.uid is not None}
        top = max(used, default=0)
        if top < 0xFFFF:
            return top + 1
        for uid in range(1, 0xFFFF + 1):
            if uid not in used:
                return uid
        raise Failed("capacity full")

    async def _do_user_upsert(self, session: ZKSession, fields: dict[str, Any]) -> Outcome:
        users = await self._users(session)
        user_id = str(fields["user_id"])
        existing = self._match(users, user_id, session.user_size)
        uid = existing.uid if existing is not None and existing.uid else self._free_uid(users)
        guessed = session.user_size is None
        user = DeviceUser(
            user_id=user_id,
            name=str(fields.get("name", "")),
            privilege=int(fields.get("privilege", 0)),
            card=str(fields.get("card", "") or ""),
            password=str(fields.get("password", "") or ""),
            group=str(fields.get("group", "") or ""),
            uid=uid,
        )
        codec.check_user(user, session.user_size or 28, encoding=session.encoding)

        async def write() -> None:
            try:
                await session.write_user(user, uid)
            except CommandFailed:
                if not guessed:
                    raise
                # The layout was not known (no users yet): the other one, once.
                other = 72 if (session.user_size or 28) == 28 else 28
                await session.write_user(user, uid, other)
                session.user_size = other

        await self._write_sequence(session, write)
        # Stored and reported as the terminal keeps it: 0012 is 12 on 28 bytes.
        user = evolve(user, user_id=codec.pin_key(user_id, session.user_size or 28))
        await self._store(self.service.store.save_users(self.service.device.id, [user]))
        verb = "updated" if existing is not None else "added"
        return Outcome("done", 0, f"user {user.user_id} {verb} (uid {uid})")

    async def _find(self, session: ZKSession, user_id: str) -> DeviceUser:
        users = await self._users(session)
        found = self._match(users, user_id, session.user_size)
        if found is None or found.uid is None:
            raise Failed("user not found")
        return found

    async def _do_user_delete(self, session: ZKSession, fields: dict[str, Any]) -> Outcome:
        user = await self._find(session, str(fields["user_id"]))
        uid = user.uid
        assert uid is not None

        async def delete() -> None:
            await session.delete_user(uid)

        await self._write_sequence(session, delete)
        await self._store(self.service.store.delete_user(self.service.device.id, user.user_id))
        return Outcome("done", 0, f"user {user.user_id} deleted (uid {uid})")

    async def _do_query_users(self, session: ZKSession, fields: dict[str, Any]) -> Outcome:
        users = await self._users(session)
        await self.service.store.save_users(self.service.device.id, users, replace=True)
        device = self.service.device
        await self.service.ingest.record_event(
            user_sync_payload(device, [u.user_id for u in users]), device.serial_number
        )
        return Outcome("done", 0, f"{len(users)} users")

    async def _do_query_attlog(self, session: ZKSession, fields: dict[str, Any]) -> Outcome:
        records, new, in_range = await self.service.catch_up_range(
            session, fields.get("since"), fields.get("until")
        )
        return Outcome("done", 0, f"{records} records read, {in_range} in range, {new} new")

    async def _do_enroll_finger(self, session: ZKSession, fields: dict[str, Any]) -> Outcome:
        user = await self._find(session, str(fields["user_id"]))
        finger = int(fields["finger"])
        await session.start_enroll(user.user_id, finger)
        return Outcome("done", 0, f"enrolment of finger {finger} started for {user.user_id}")

    async def _do_template_upsert(self, session: ZKSession, fields: dict[str, Any]) -> Outcome:
        kind = fields.get("kind", "finger")
        if kind != "finger":
            raise Failed(f"not supported by this terminal: {kind} templates (fingers only)")
        versions = await session.read_algorithm_versions()
        have = versions.get("fp_version")
        fmt = str(fields.get("format", "") or "")
        if fmt and have and fmt != str(have):
            raise Failed(
                f"template format {fmt} does not match the terminal's fingerprint algorithm {have}"
            )
        user = await self._find(session, str(fields["user_id"]))
        uid = user.uid
        assert uid is not None
        data = base64.b64decode(fields["data"])
        finger = int(fields.get("index", 0))

        async def write() -> None:
            await session.write_user_templates(user, uid, [(finger, data)])

        await self._write_sequence(session, write)
        return Outcome("done", 0, f"finger {finger} of {user.user_id} stored ({len(data)} bytes)")

    # ------------------------------------------------------------------ helpers

    async def _write_sequence(
        self, session: ZKSession, write: Callable[[], Awaitable[None]], *, refresh: bool = True
    ) -> None:
        """DISABLEDEVICE, ``write``, REFRESHDATA, ENABLEDEVICE (always, even after a
        failed write), then REG_EVENT again and a catch-up if punches slipped past."""
        before = await session.read_sizes()
        seen = self.service.events_seen
        await session.disable_device()
        try:
            await write()
            if refresh:
                await session.refresh_data()
        finally:
            if not session.closed:
                await session.enable_device()
                await self.service.reregister(session, before.records, seen)

    @staticmethod
    async def _store(d: Awaitable[Any]) -> None:
        try:
            await d
        except Exception:
            log.failure("Updating the stored users failed")
