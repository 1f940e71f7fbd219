"""The person registry and its sync service: keep every person in step on their terminals.

One :class:`Persons` per process (built in ``zkserver.tap``), used by the API, the CLI
(through the API), and the push listener (changes made at a terminal).

How a person is kept in step on a device (:meth:`Persons.reconcile`):

- must be there (active, and ``devices`` is ``all`` or names the device): the plan is a
  ``user_upsert`` and one ``template_upsert`` per template whose algorithm version the
  device reports (:func:`zkserver.persons.biometric.plan_upsert`); its digest (``want``)
  is compared with the one stored for the device: the same digest while ``in_step`` or
  ``pending`` queues nothing (idempotent), a new one queues the plan;
- must not be there and was sent there: ``user_delete``.

The commands and the new state (``pending`` with the command ids) are stored in one
transaction (:meth:`zkserver.store.persons.PersonScripts.write_sync`). The state moves on
when the commands finish: :meth:`Persons.command_changed` (a watcher on the command
service in this process) and :meth:`Persons.tick` (a timer: commands finished by another
process, or before a restart) read the outcome from the database: all ``done`` ->
``in_step``; a ``failed``/``expired``/``cancelled`` one -> ``failed`` with the terminal's
reason. A device that comes back online gets what expired while it was away.

Changes made at a terminal (:meth:`Persons.from_terminal`) flow into the registry (last
change wins; ``origin`` and ``origin_at`` say where from and when) and on to the
person's other terminals; the terminal they came from is recorded in step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from zkserver.commands.service import Commands, DeviceNotReady, TooLarge
from zkserver.commands.spec import CommandError, CommandSpec, Unsupported
from zkserver.ingest import Ingest
from zkserver.persons.biometric import device_versions, plan_upsert
from zkserver.persons.model import ALL, NewTemplate, Person, SyncEntry
from zkserver.persons.validate import PersonError, check_fits, fit_problems, person_fields
from zkserver.records import Command, Device, DeviceUser
from zkserver.store.commands import NewCommand, stamp
from zkserver.store.persons import DuplicatePerson

__all__ = ["Persons", "NoSuchPerson", "DuplicatePerson", "TerminalUnavailable"]

log = Logger()

FINAL = ("done", "failed", "expired", "cancelled")
EXPIRED_MARK = "expired: "


class NoSuchPerson(LookupError):
    pass


class TerminalUnavailable(Exception):
    """A pull terminal could not be read (HTTP 502)."""


def _ready(device: Device) -> bool:
    return device.approved and device.status not in ("pending", "rejected")


@define(eq=False)
class Persons:
    store: Any  # zkserver.store.base.Store
    commands: Commands
    ingest: Ingest
    clock: IReactorTime
    enrolled_persons: str = "all"  # "all" | "origin": devices of a person first seen at a terminal
    pull: Any = None  # zkserver.pull.manager.PullManager (import from a pull terminal)
    _locks: dict[str, DeferredLock] = field(factory=dict)
    _statuses: dict[str, str] = field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self.commands.watch_status(self.command_changed)

    def now(self) -> str:
        return stamp(self.clock.seconds())

    # --- the registry -----------------------------------------------------------------
    async def get(self, user_id: str) -> Person:
        person = await self.store.person(user_id)
        if person is None:
            raise NoSuchPerson(user_id)
        return person

    async def _check_devices(self, fields: dict[str, Any]) -> None:
        devices = await self.store.devices()
        targets = fields.get("devices", ALL)
        if targets != ALL:
            known = {d.id for d in devices}
            for device_id in targets:
                if device_id not in known:
                    raise PersonError("devices", f"no device {device_id[:64]!r}")
        check_fits(fields, devices)

    async def create(self, body: Any, origin: str = "api") -> Person:
        """A new person from a JSON object; PersonError, DuplicatePerson."""
        fields = person_fields(body)
        if await self.store.person(fields["user_id"]) is not None:
            raise DuplicatePerson(fields["user_id"])
        await self._check_devices(fields)
        person = await self.store.add_person(fields, origin, self.now())
        await self.reconcile(person.user_id)
        return person

    async def update(self, user_id: str, body: Any, origin: str = "api") -> Person:
        """Change the fields given; NoSuchPerson, PersonError."""
        fields = person_fields(body, partial=True)
        if "user_id" in fields and fields["user_id"] != user_id:
            raise PersonError("user_id", "user_id cannot be changed (remove and add instead)")
        fields.pop("user_id", None)
        current = await self.get(user_id)
        merged = {**current.user_fields(), "devices": current.devices, **fields}
        await self._check_devices(merged)
        person = await self.store.update_person(user_id, fields, origin, self.now())
        if person is None:
            raise NoSuchPerson(user_id)
        await self.reconcile(user_id)
        return person

    async def remove(self, user_id: str) -> Person:
        """Remove a person everywhere: deleted from the registry, ``user_delete`` queued
        for every device they were sent to."""
        person = await self.store.delete_person(user_id)
        if person is None:
            raise NoSuchPerson(user_id)
        await self.reconcile(user_id)
        return person

    async def add_template(self, user_id: str, template: NewTemplate) -> Any:
        await self.get(user_id)
        added = await self.store.save_person_templates([template], self.now())
        if added:
            await self.reconcile(user_id)
            return added[0]
        current = await self.store.person_templates(user_id)
        return next(t for t in current if (t.kind, t.index) == (template.kind, template.index))

    async def sync_state(self, user_id: str) -> dict[str, Any]:
        """``GET /api/persons/{user_id}/sync``."""
        person = await self.store.person(user_id)
        entries = await self.store.sync_entries(user_id=user_id)
        if person is None and not entries:
            raise NoSuchPerson(user_id)
        devices = {d.id: d for d in await self.store.devices()}
        out = []
        for entry in entries:
            device = devices.get(entry.device_id)
            out.append(
                {
                    **entry.public(),
                    "device_name": device.display_name if device else "",
                    "serial_number": device.serial_number if device else "",
                }
            )
        return {"user_id": user_id, "devices": out}

    # --- sync ---------------------------------------------------------------------------
    def _lock(self, user_id: str) -> DeferredLock:
        lock = self._locks.get(user_id)
        if lock is None:
            lock = self._locks[user_id] = DeferredLock()
        return lock

    async def reconcile(
        self,
        user_id: str,
        *,
        device_ids: Sequence[str] | None = None,
        force: bool = False,
        retry_failed: bool = False,
        present_on: Sequence[str] = (),
    ) -> list[SyncEntry]:
        """Bring one person into step on every device (or ``device_ids``).

        ``force``: send the plan even when the stored digest says in step (a replaced
        terminal). ``retry_failed``: send again where the last attempt failed.
        ``present_on``: devices that already hold this very state (the change came from
        them): recorded in step without commands."""
        lock = self._lock(user_id)
        await lock.acquire()
        try:
            return await self._reconcile(user_id, device_ids, force, retry_failed, present_on)
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(user_id, None)

    async def _reconcile(
        self,
        user_id: str,
        device_ids: Sequence[str] | None,
        force: bool,
        retry_failed: bool,
        present_on: Sequence[str],
    ) -> list[SyncEntry]:
        person = await self.store.person(user_id)
        entries = {e.device_id: e for e in await self.store.sync_entries(user_id=user_id)}
        templates = await self.store.person_template_data(user_id) if person else []
        written: list[SyncEntry] = []
        for device in await self.store.devices():
            if device_ids is not None and device.id not in device_ids:
                continue
            if not _ready(device):
                continue
            entry = entries.get(device.id)
            wanted = person is not None and person.active and person.targets(device.id)
            if wanted:
                assert person is not None
                result = await self._upsert(
                    person,
                    templates,
                    device,
                    entry,
                    force,
                    retry_failed,
                    device.id in present_on,
                )
            else:
                result = await self._delete(user_id, device, entry, force, retry_failed)
            if result is not None:
                written.append(result)
        return written

    async def _upsert(
        self,
        person: Person,
        templates: Sequence[Any],
        device: Device,
        entry: SyncEntry | None,
        force: bool,
        retry_failed: bool,
        present: bool,
    ) -> SyncEntry | None:
        problems = fit_problems(person.user_fields(), device)
        if problems:
            failed = SyncEntry(
                person.user_id, device.id, "upsert", "failed", "", (), problems[0].message
            )
            if entry is not None and (entry.state, entry.detail) == ("failed", failed.detail):
                return None
            return await self._write(failed, [], entry)
        plan = plan_upsert(person, templates, device)
        if entry is not None and entry.operation == "upsert" and entry.want == plan.want:
            if not force and entry.state in ("in_step", "pending"):
                if entry.detail == plan.detail():
                    return None
                # the same commands, other templates skipped: only the reasons change
                return await self._write(
                    SyncEntry(
                        person.user_id,
                        device.id,
                        "upsert",
                        entry.state,
                        plan.want,
                        entry.command_ids,
                        plan.detail(),
                    ),
                    [],
                    entry,
                )
            if not force and entry.state == "failed" and not retry_failed:
                return None
        if present:
            return await self._write(
                SyncEntry(
                    person.user_id, device.id, "upsert", "in_step", plan.want, (), plan.detail()
                ),
                [],
                entry,
            )
        specs = [CommandSpec("user_upsert", plan.user)]
        specs += [CommandSpec("template_upsert", t) for t in plan.templates]
        try:
            items = [self.commands.prepare(device, spec) for spec in specs]
        except (CommandError, Unsupported, TooLarge, DeviceNotReady) as e:
            return await self._write(
                SyncEntry(
                    person.user_id,
                    device.id,
                    "upsert",
                    "failed",
                    plan.want,
                    (),
                    f"{getattr(e, 'field', '')}: {e}".lstrip(": "),
                ),
                [],
                entry,
            )
        return await self._write(
            SyncEntry(person.user_id, device.id, "upsert", "pending", plan.want, (), plan.detail()),
            items,
            entry,
        )

    async def _delete(
        self,
        user_id: str,
        device: Device,
        entry: SyncEntry | None,
        force: bool,
        retry_failed: bool,
    ) -> SyncEntry | None:
        if entry is None:
            return None  # never sent there by the registry
        if entry.operation == "delete":
            if entry.state in ("in_step", "pending") and not force:
                return None
            if entry.state == "failed" and not (retry_failed or force):
                return None
        if entry.operation == "upsert" and entry.state == "failed" and not entry.command_ids:
            # never got there (did not fit, or refused before queueing): nothing to delete
            return await self._write(
                SyncEntry(user_id, device.id, "delete", "in_step", "", (), ""), [], entry
            )
        item = self.commands.prepare(device, CommandSpec("user_delete", {"user_id": user_id}))
        return await self._write(
            SyncEntry(user_id, device.id, "delete", "pending", "", (), ""), [item], entry
        )

    async def _write(
        self, entry: SyncEntry, items: list[NewCommand], before: SyncEntry | None
    ) -> SyncEntry | None:
        expect = (before.state, before.command_ids) if before is not None else ("", ())
        stored, added, events = await self.store.write_sync(entry, items, self.now(), expect=expect)
        self.ingest.publish(events)
        if added:
            self.commands.notify_queued(added)
        return stored

    async def command_changed(self, command: Command) -> None:
        """A command this process changed: move the sync entries waiting on it on."""
        if command.type not in ("user_upsert", "user_delete", "template_upsert"):
            return
        if command.status not in FINAL:
            return
        user_id = str(command.fields.get("user_id", ""))
        if not user_id:
            return
        for entry in await self.store.sync_entries(user_id=user_id, device_id=command.device_id):
            if command.id in entry.command_ids and entry.state == "pending":
                await self.refresh(entry)

    async def refresh(
        self, entry: SyncEntry, commands: list[Command] | None = None
    ) -> SyncEntry | None:
        """Move a pending entry on from the outcome of its ``commands`` (read when not
        given); None while they are still queued or sent."""
        if commands is None:
            commands = await self.store.commands_by_id(list(entry.command_ids))
        if not commands and entry.command_ids:
            state, detail = "failed", "its commands are gone"
        else:
            bad = [c for c in commands if c.status in ("failed", "expired", "cancelled")]
            if bad:
                first = bad[0]
                reason = first.result.split("\n")[0] or first.status
                what = f"{first.type} {first.status}"
                detail = f"{what}: {reason}"
                if first.status == "expired":
                    detail = EXPIRED_MARK + detail
                state = "failed"
            elif all(c.status == "done" for c in commands):
                state, detail = "in_step", ""
            else:
                return None
        if state == "in_step" and entry.detail:
            detail = entry.detail  # the skipped templates
        elif state == "failed" and entry.detail and not entry.detail.startswith(EXPIRED_MARK):
            detail = f"{detail}; {entry.detail}"
        new = SyncEntry(
            entry.user_id,
            entry.device_id,
            entry.operation,
            state,
            entry.want,
            entry.command_ids,
            detail,
        )
        lock = self._lock(entry.user_id)
        await lock.acquire()
        try:
            return await self._write(new, [], entry)
        finally:
            lock.release()

    async def sync_device(self, device: Device) -> dict[str, Any]:
        """``POST /api/devices/{id}/sync-persons``: re-send everyone who must be on
        ``device`` (a replaced or wiped terminal)."""
        if not _ready(device):
            raise DeviceNotReady(f"device is {device.status}: approve it first")
        count = queued = failed = 0
        cursor = None
        while True:
            page, cursor = await self.store.persons(device_id=device.id, cursor=cursor, limit=500)
            for person in page:
                if not person.active:
                    continue
                count += 1
                for entry in await self.reconcile(
                    person.user_id, device_ids=[device.id], force=True
                ):
                    if entry.state == "pending":
                        queued += 1
                    elif entry.state == "failed":
                        failed += 1
            if cursor is None:
                break
        return {"device_id": device.id, "persons": count, "queued": queued, "failed": failed}

    async def reconcile_device(self, device: Device, retry_failed: bool = False) -> int:
        """Everyone who must be on ``device`` (and those sent there who must not):
        queue what is missing. How many entries were written."""
        user_ids: set[str] = set()
        cursor = None
        while True:
            page, cursor = await self.store.persons(device_id=device.id, cursor=cursor, limit=1000)
            user_ids.update(p.user_id for p in page)
            if cursor is None:
                break
        for entry in await self.store.sync_entries(device_id=device.id):
            if entry.operation == "upsert" or entry.state != "in_step":
                user_ids.add(entry.user_id)
        written = 0
        for user_id in sorted(user_ids):
            written += len(
                await self.reconcile(user_id, device_ids=[device.id], retry_failed=retry_failed)
            )
        return written

    async def tick(self) -> None:
        """The timer: resolve pending entries whose commands finished (in any process,
        or before a restart); bring devices that are new, newly approved or back online
        into step (what expired while a device was away is sent again)."""
        pending = await self.store.sync_entries(state="pending")
        ids = [i for entry in pending for i in entry.command_ids]
        found = {c.id: c for c in await self.store.commands_by_id(ids)} if ids else {}
        for entry in pending:
            commands = [found[i] for i in entry.command_ids if i in found]
            if len(commands) == len(entry.command_ids) and not any(
                c.status in FINAL for c in commands
            ):
                continue  # all still queued or sent: nothing to write
            await self.refresh(entry, commands)
        for device in await self.store.devices():
            before = self._statuses.get(device.id)
            self._statuses[device.id] = device.status if _ready(device) else ""
            if not _ready(device):
                continue
            if before is None or (before != device.status and device.status == "online"):
                await self.reconcile_device(device, retry_failed=False)
                for entry in await self.store.sync_entries(device_id=device.id, state="failed"):
                    if entry.detail.startswith(EXPIRED_MARK):
                        await self.reconcile(
                            entry.user_id, device_ids=[device.id], retry_failed=True
                        )

    # --- changes made at a terminal ---------------------------------------------------
    async def from_terminal(
        self,
        device: Device,
        users: Sequence[DeviceUser],
        templates: Sequence[NewTemplate] = (),
    ) -> dict[str, int]:
        """Users and templates a terminal reported as changed there (enrolled, renamed,
        a fingerprint added): into the registry (last change wins) and on to the
        person's other terminals."""
        now = self.now()
        created = changed = 0
        touched: set[str] = set()
        entries = {e.user_id: e for e in await self.store.sync_entries(device_id=device.id)}
        for user in users:
            entry = entries.get(user.user_id)
            if entry is not None and entry.state == "pending":
                continue  # our own change is on its way there; the terminal's view is older
            if entry is not None and entry.operation == "delete" and entry.state != "in_step":
                continue  # being removed there; the terminal's record is a leftover
            person = await self.store.person(user.user_id)
            fields = {
                "name": user.name,
                "card": user.card,
                "password": user.password,
                "privilege": user.privilege if user.privilege in (0, 2, 6, 14) else 0,
                "group": user.group,
            }
            try:
                clean = person_fields({"user_id": user.user_id, **fields}, partial=True)
            except PersonError as e:
                log.warn(
                    "{serial}: user {pin} not taken into the registry: {why}",
                    serial=device.serial_number,
                    pin=user.user_id,
                    why=e.message,
                )
                continue
            if person is None:
                clean["devices"] = ALL if self.enrolled_persons == "all" else [device.id]
                try:
                    await self.store.add_person(clean, device.id, now)
                except DuplicatePerson:
                    continue
                created += 1
                touched.add(user.user_id)
            else:
                diff = {
                    k: v
                    for k, v in clean.items()
                    if k != "user_id" and person.user_fields().get(k) != v
                }
                if diff:
                    await self.store.update_person(user.user_id, diff, device.id, now)
                    changed += 1
                    touched.add(user.user_id)
                elif entry is None:
                    touched.add(user.user_id)
        fresh = await self.store.save_person_templates(list(templates), now)
        for template in fresh:
            entry = entries.get(template.user_id)
            if entry is not None and entry.operation == "delete" and entry.state != "in_step":
                continue
            touched.add(template.user_id)
        for user_id in sorted(touched):
            if await self.store.person(user_id) is not None:
                await self.reconcile(user_id, present_on=[device.id])
        return {"created": created, "changed": changed, "templates": len(fresh)}

    def pull_enrolled(self, device: Device, fields: dict[str, Any]) -> None:
        """A pull terminal reported an enrolment at its keypad (EF_ENROLLUSER with the
        slot, EF_ENROLLFINGER with the PIN): read that person and their fingerprints and
        take them into the registry (:meth:`from_terminal`)."""
        d = Deferred.fromCoroutine(self._pull_enrolled(device, fields))
        d.addErrback(
            lambda f: log.failure(
                "{serial}: reading an enrolled person failed", f, serial=device.serial_number
            )
        )

    async def _pull_enrolled(self, device: Device, fields: dict[str, Any]) -> None:
        if self.pull is None:
            return
        current = await self.store.device(device.id) or device
        users, templates = await self._read_pull(current)
        pin = str(fields.get("user_id") or "")
        uid = fields.get("uid")
        chosen = [u for u in users if (pin and u.user_id == pin) or (uid and u.uid == uid)]
        if not chosen:
            return
        pins = {u.user_id for u in chosen}
        await self.from_terminal(current, chosen, [t for t in templates if t.user_id in pins])

    # --- import -------------------------------------------------------------------------
    async def import_device(self, device: Device) -> dict[str, Any]:
        """``POST /api/persons/import``: a terminal's users (and templates) into the
        registry with ``devices: "all"``; a PIN already there with another name is a
        conflict (reported, that person untouched)."""
        users: list[DeviceUser]
        templates: list[NewTemplate] = []
        if device.kind == "pull" and self.pull is not None:
            users, templates = await self._read_pull(device)
        else:
            users = list(await self.store.users(device.id))
        imported: list[str] = []
        unchanged: list[str] = []
        rows: list[dict[str, Any]] = []
        now = self.now()
        for user in users:
            fields_in = {
                "user_id": user.user_id,
                "name": user.name,
                "card": user.card,
                "password": user.password,
                "privilege": user.privilege,
                "group": user.group,
            }
            try:
                fields = person_fields(fields_in)
            except PersonError as e:
                rows.append(
                    {
                        "user_id": user.user_id,
                        "status": "error",
                        "field": e.field,
                        "detail": e.message,
                    }
                )
                continue
            existing = await self.store.person(user.user_id)
            if existing is not None:
                if existing.name != fields["name"]:
                    rows.append(
                        {
                            "user_id": user.user_id,
                            "status": "conflict",
                            "field": "name",
                            "detail": f"the registry has {existing.name!r}, the terminal"
                            f" {fields['name']!r}; left as it is",
                        }
                    )
                else:
                    unchanged.append(user.user_id)
                    rows.append({"user_id": user.user_id, "status": "unchanged"})
                continue
            fields["devices"] = ALL
            try:
                await self.store.add_person(fields, f"import:{device.id}", now)
            except DuplicatePerson:
                rows.append(
                    {
                        "user_id": user.user_id,
                        "status": "conflict",
                        "field": "user_id",
                        "detail": "added meanwhile",
                    }
                )
                continue
            imported.append(user.user_id)
            rows.append({"user_id": user.user_id, "status": "imported"})
        conflicts = {r["user_id"] for r in rows if r["status"] in ("conflict", "error")}
        kept = [t for t in templates if t.user_id not in conflicts]
        saved = await self.store.save_person_templates(kept, now)
        for user_id in imported:
            await self.reconcile(user_id, present_on=[device.id])
        for user_id in sorted({t.user_id for t in saved} - set(imported)):
            if user_id in unchanged:
                await self.reconcile(user_id, present_on=[device.id])
        return {
            "device_id": device.id,
            "imported": len(imported),
            "unchanged": len(unchanged),
            "conflicts": sum(1 for r in rows if r["status"] == "conflict"),
            "errors": sum(1 for r in rows if r["status"] == "error"),
            "templates": len(saved),
            "rows": rows,
        }

    async def _read_pull(self, device: Device) -> tuple[list[DeviceUser], list[NewTemplate]]:
        """A pull terminal's users and fingerprint templates, read now."""

        async def read(session: Any) -> tuple[list[DeviceUser], list[Any]]:
            users = await session.read_users()
            try:
                found = await session.read_templates()
            except Exception as e:  # a terminal without templates, or refusing the read
                log.info(
                    "{serial}: templates not read ({error})",
                    serial=device.serial_number,
                    error=str(e),
                )
                found = []
            return users, found

        try:
            users, raw = await self.pull._service_for(device).run_operation(read)
        except Exception as e:
            raise TerminalUnavailable(f"reading {device.display_name} failed: {e}") from e
        current = await self.store.device(device.id) or device
        version = device_versions(current).get("finger", "")
        by_uid = {u.uid: u.user_id for u in users if u.uid is not None}
        templates = [
            NewTemplate(
                user_id=by_uid[t.uid],
                kind="finger",
                index=t.finger,
                format=version,
                data=t.data,
                valid=t.valid,
                source_table="pull",
                source_device=device.id,
            )
            for t in raw
            if t.uid in by_uid and t.data
        ]
        return users, templates

    async def import_rows(self, rows: Sequence[Any], origin: str = "csv") -> dict[str, Any]:
        """Apply validated CSV rows (``zkserver.persons.csvio.CsvRow``): new PINs are
        added, known ones changed; every row is checked against the devices first."""
        devices = await self.store.devices()
        known = {d.id for d in devices}
        errors: list[dict[str, Any]] = []
        for row in rows:
            targets = row.fields.get("devices", ALL)
            missing = [] if targets == ALL else [d for d in targets if d not in known]
            if missing:
                errors.append(
                    {
                        "row": row.row,
                        "user_id": row.fields["user_id"],
                        "field": "devices",
                        "detail": f"no device {missing[0][:64]!r}",
                    }
                )
                continue
            try:
                check_fits(row.fields, devices)
            except PersonError as e:
                errors.append(
                    {
                        "row": row.row,
                        "user_id": row.fields["user_id"],
                        "field": e.field,
                        "detail": e.message,
                        "device_id": e.device_id,
                    }
                )
        return {"errors": errors}

    async def apply_rows(self, rows: Sequence[Any], origin: str = "csv") -> dict[str, int]:
        now = self.now()
        added = changed = 0
        for row in rows:
            fields = dict(row.fields)
            user_id = fields.pop("user_id")
            person = await self.store.person(user_id)
            if person is None:
                await self.store.add_person({"user_id": user_id, **fields}, origin, now)
                added += 1
            else:
                await self.store.update_person(user_id, fields, origin, now)
                changed += 1
            await self.reconcile(user_id)
        return {"added": added, "changed": changed}
