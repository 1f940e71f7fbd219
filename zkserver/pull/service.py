"""One supervised client service per pull device.

The loop (cf. ClientService's backoff): connect -> authenticate -> identify (serial number,
firmware, sizes into the device row) -> status online -> catch up (read the whole log,
save it through :meth:`Ingest.save_punches` in batches; duplicates insert nothing) ->
register for real-time events (a quick size check re-reads the log if a punch slipped in
before the registration) -> every event is saved the same way -> probe with GET_TIME when
the link has been idle -> on any failure: status offline, reconnect after an exponential,
jittered backoff and catch up again.  A wrong comm key sets ``auth_failed`` and waits long.

Nothing is lost when the database is down: live punches stay in memory and are retried,
and a catch-up that could not be saved is repeated on the live session once it can be
(the device keeps its log; duplicates insert nothing).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    DeferredLock,
    DeferredSemaphore,
    FirstError,
)
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.logger import Logger

from zkserver.clock import iso, utc_now
from zkserver.devices import DeviceRegistry
from zkserver.ingest import Ingest
from zkserver.localtime import TimePolicy, clock_offset
from zkserver.pull import codec
from zkserver.pull.codec import AttendanceEvent
from zkserver.pull.control import CommandRunner, CommandSource
from zkserver.pull.device_events import register_device_events, save_device_event
from zkserver.pull.drift import DriftFixer
from zkserver.pull.protocol import (
    DEFAULT_TIMEOUT,
    AuthenticationFailed,
    CommandFailed,
    DatasetUnreadable,
    EventCallback,
    ZKError,
    ZKSession,
    failure_detail,
    open_session,
)
from zkserver.records import TIMESTAMP_FORMAT, Device, Punch, Rejected
from zkserver.store.base import DuplicateDevice, Store

__all__ = ["PullDeviceService", "Connector", "DeviceBusy", "device_now", "same_link"]

log = Logger()

T = TypeVar("T")

Connector = Callable[[Device, EventCallback | None], Awaitable[ZKSession]]
"""Opens a (not yet CONNECTed) session to a device; events go to the callback."""


class DeviceBusy(ZKError):
    """Another zkserver process holds this device's lock."""


class SaveFailed(Exception):
    """Punches read from the device could not be saved (database down)."""


RAW_KEEP = 1024 * 1024
"""Bytes of an unreadable dataset kept (as hex) in the rejected table."""


def _hex(data: bytes) -> str:
    if len(data) <= RAW_KEEP:
        return data.hex()
    return data[:RAW_KEEP].hex() + f" [... {len(data) - RAW_KEEP} more bytes not kept]"


def same_link(a: Device, b: Device) -> bool:
    """Whether two versions of a device need the same connection."""
    return (a.host, a.port, a.comm_key, a.transport) == (b.host, b.port, b.comm_key, b.transport)


def _zone(name: str) -> tzinfo | None:
    name = name.strip()
    if not name:
        return None
    if name[0] in "+-" and len(name) >= 3:
        sign = -1 if name[0] == "-" else 1
        hours, _, minutes = name[1:].partition(":")
        try:
            return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes or 0)))
        except ValueError:
            return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def device_now(device: Device, clock: Any, zone: tzinfo | None = None) -> datetime:
    """Wall-clock time for the device: ``zone``, else its time zone, else this server's."""
    now = datetime.fromtimestamp(clock.seconds(), UTC)
    zone = zone or _zone(device.timezone)
    local = now.astimezone(zone) if zone is not None else now.astimezone()
    return local.replace(tzinfo=None, microsecond=0)


def _not_authorised(error: Exception) -> bool:
    """Whether a new session was refused for its comm key (docs/protocols.md §B.9):
    ACK_UNAUTH to AUTH, any refusal of AUTH, or ACK_UNAUTH to any other command before
    the session is up.  Reconnecting soon cannot help; the operator has to fix the key."""
    if isinstance(error, AuthenticationFailed):
        return True
    return isinstance(error, CommandFailed) and (
        error.command == codec.Cmd.AUTH or error.reply == codec.Reply.ACK_UNAUTH
    )


def _record_key(record: codec.PullRecord) -> str:
    return f"{record.user_id}|{record.timestamp:%Y-%m-%d %H:%M:%S}"


class PullDeviceService(Service):
    """Keeps one pull device connected, caught up and streaming."""

    #: Called ``enrolled(device, event fields)`` after a person was enrolled at the keypad
    #: (EF_ENROLLUSER/EF_ENROLLFINGER); set by the manager (the person registry reads them).
    enrolled: Any = None

    def __init__(
        self,
        device: Device,
        *,
        store: Store,
        ingest: Ingest,
        registry: DeviceRegistry,
        clock: Any,
        connector: Connector | None = None,
        request_timeout: float = DEFAULT_TIMEOUT,
        idle_probe: float = 30.0,
        initial_delay: float = 1.0,
        max_delay: float = 300.0,
        jitter: float = 0.2,
        auth_failed_delay: float = 300.0,
        busy_delay: float = 30.0,
        retry_save_delay: float = 5.0,
        batch_size: int = 1000,
        rng: random.Random | None = None,
        commands: CommandSource | None = None,
        fix_drift: DriftFixer | None = None,
        restart_grace: float = 300.0,
        seen_every: float = 60.0,
    ) -> None:
        self.device = device
        self.name = f"pull:{device.id}"
        self.store = store
        self.ingest = ingest
        self.registry = registry
        self.clock = clock
        self.connector = connector or self._open
        self.request_timeout = request_timeout
        self.idle_probe = idle_probe
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.jitter = jitter
        self.auth_failed_delay = auth_failed_delay
        self.busy_delay = busy_delay
        self.retry_save_delay = retry_save_delay
        self.batch_size = batch_size
        #: (records read, records submitted to the store, new punches) of the last catch-up
        self.last_catch_up: tuple[int, int, int] | None = None
        self.rng = rng or random.Random()
        self.mark_offline_on_stop = True
        #: The live, authenticated session (None while disconnected).
        self.session: ZKSession | None = None
        #: Connection attempts made (for tests and logs).
        self.attempts = 0
        self._opening: ZKSession | None = None
        self._connecting: Deferred[ZKSession] | None = None
        self._established = False
        self._loop: Deferred[None] | None = None
        self._sleep: Deferred[None] | None = None
        self._probe_call: IDelayedCall | None = None
        self._retry_call: IDelayedCall | None = None
        self._save_lock = DeferredLock()
        self._pending: list[Punch] = []
        self._flushing = False
        self._catch_up_needed = False
        self._save_failures = 0
        #: Real-time attendance events received (the command runner compares counts).
        self.events_seen = 0
        self.fix_drift = fix_drift
        #: The clock offset the last idle probe measured (device minus true time, s).
        self.clock_offset_s: int | None = None
        self.restart_grace = restart_grace
        self._restart_until: float | None = None
        #: While connected, ``last_seen`` is refreshed at most this often (the silent
        #: device alert reads it; a quiet but connected terminal is not silent).
        self.seen_every = seen_every
        self._seen_at = clock.seconds()
        #: Runs the device's queued commands (zkserver.pull.control); None without commands.
        self.runner: CommandRunner | None = (
            CommandRunner(self, commands) if commands is not None else None
        )
        #: Digests of the unreadable input already kept in the rejected table.
        self._kept: set[bytes] = set()

    # ------------------------------------------------------------------ life cycle

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._loop = Deferred.fromCoroutine(self._run())
        self._loop.addErrback(
            lambda f: log.failure("Pull loop for {name} crashed", f, name=self._label)
        )

    def stopService(self) -> Deferred[None]:  # noqa: N802
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        for call in (self._probe_call, self._retry_call):
            if call is not None and call.active():
                call.cancel()
        if self._sleep is not None:
            self._sleep.cancel()
        if self._connecting is not None:
            self._connecting.cancel()
        session = self.session or self._opening
        if session is not None and not session.closed:
            d = session.disconnect()
            d.addTimeout(2.0, self.clock, onTimeoutCancel=lambda *_: session.abort())
            try:
                await d
            except Exception:
                pass
        if self._loop is not None:
            await self._loop
        try:
            await self.store.unlock_device(self.device.id)
        except Exception:
            log.failure("Releasing the lock of {name} failed", name=self._label)
        if self.mark_offline_on_stop and self.device.status == "online":
            await self._set_status("offline")

    @property
    def _label(self) -> str:
        d = self.device
        return f"{d.display_name} ({d.host}:{d.port})"

    def _open(self, device: Device, on_event: EventCallback | None) -> Deferred[ZKSession]:
        return open_session(
            self.clock,
            device.host,
            device.port,
            transport=device.transport,
            timeout=self.request_timeout,
            on_event=on_event,
        )

    def backoff(self, attempt: int) -> float:
        """Seconds before reconnect attempt ``attempt`` (0-based): doubling, capped, jittered."""
        delay = min(self.max_delay, self.initial_delay * 2 ** min(attempt, 32))
        return delay * (1 - self.jitter / 2 + self.jitter * self.rng.random())

    async def _pause(self, seconds: float) -> bool:
        """Sleep on the clock; False when the service stopped meanwhile."""
        if not self.running:
            return False
        self._sleep = deferLater(self.clock, seconds, lambda: None)
        try:
            await self._sleep
        except CancelledError:
            return False
        finally:
            self._sleep = None
        return bool(self.running)

    async def _run(self) -> None:
        failures = 0
        while self.running:
            if not await self._try_lock():
                log.info(
                    "{name} is connected by another process; checking again in {delay} s",
                    name=self._label,
                    delay=self.busy_delay,
                )
                if not await self._pause(self.busy_delay):
                    return
                continue
            self.attempts += 1
            self._established = False
            try:
                await self._session_cycle()
                delay = self.backoff(0)
                failures = 0
            except Exception as e:
                if not self.running:
                    return
                if _not_authorised(e) and not self._established:
                    log.warn(
                        "{name}: {error}; next attempt in {delay} s",
                        name=self._label,
                        error=str(e),
                        delay=self.auth_failed_delay,
                    )
                    await self._set_status("auth_failed", failure_detail(e))
                    delay = self.auth_failed_delay
                else:
                    delay, failures = await self._session_failed(e, failures)
            if not await self._pause(delay):
                return

    async def _session_failed(self, e: Exception, failures: int) -> tuple[float, int]:
        """Status offline (or rebooting) after a failed session: (delay, failures)."""
        if self._established:
            failures = 0
        delay = self.backoff(failures)
        failures += 1
        if self._rebooting():
            delay = min(delay, self.initial_delay)
            log.info(
                "{name}: restarting; reconnecting in {delay:.1f} s",
                name=self._label,
                delay=delay,
            )
            await self._set_status("rebooting")
        else:
            log.warn(
                "{name}: session failed ({error}); reconnecting in {delay:.1f} s",
                name=self._label,
                error=str(e) or type(e).__name__,
                delay=delay,
            )
            await self._set_status("offline", failure_detail(e))
        return delay, failures

    async def _session_cycle(self) -> None:
        """One session from connect to its end; raises why it ended."""
        self._connecting = Deferred.fromCoroutine(
            _awaited(self.connector(self.device, self._on_event))
        )
        try:
            session = self._opening = await self._connecting
        finally:
            self._connecting = None
        session.on_other_event = self._on_device_event  # door, alarm, enrol: zkserver.access
        session.on_unreadable_event = self._on_unreadable_event
        session.encoding = self.device.encoding  # names read and written (§B.4)
        size = self.device.info.get("attlog_record_size")
        if isinstance(size, int) and session.attendance_record_size is None:
            session.attendance_record_size = size  # the size this device used before
        try:
            if not self.running:
                raise CancelledError()
            await session.connect(self.device.comm_key)
            await self._identify(session)
            await self._learn_layout(session)
            await self._measure_clock_quietly(session)
            self.session = session
            self._restart_until = None
            await self._set_status("online")
            records = await self._catch_up_logged(session)
            await register_device_events(session, self._label)
            sizes = await session.read_sizes()
            if records is not None and sizes.records != records:
                await self._catch_up_logged(session)  # punches between the read and REG_EVENT
            self._established = True
            log.info("{name}: online, caught up, receiving events", name=self._label)
            self._schedule_probe()
            if self.runner is not None:
                self.runner.kick()
            reason = await session.notify_closed()
            raise reason
        finally:
            self.session = self._opening = None
            if self._probe_call is not None and self._probe_call.active():
                self._probe_call.cancel()
            if not session.closed:
                session.abort()

    # ------------------------------------------------------------------ identity, status

    async def _identify(self, session: ZKSession) -> None:
        """Read serial number, firmware and sizes; store them with the device."""
        try:
            serial = await session.read_serial_number()
        except (CommandFailed, codec.CodecError):
            serial = ""
        firmware = await session.read_firmware()
        sizes = await session.read_sizes()
        info: dict[str, Any] = {
            "firmware": firmware,
            "user_count": sizes.users,
            "fp_count": sizes.fingers,
            "attlog_count": sizes.records,
            "users_cap": sizes.users_cap,
            "fingers_cap": sizes.fingers_cap,
            "records_cap": sizes.records_cap,
        }
        if sizes.faces is not None:
            info["face_count"] = sizes.faces
        fields: dict[str, Any] = {"info": info}
        if serial and serial != self.device.serial_number:
            if self.device.serial_number:
                log.warn("{name} reports serial number {serial}", name=self._label, serial=serial)
            fields["serial_number"] = serial
        try:
            updated = await self.store.update_device(self.device.id, **fields)
        except DuplicateDevice:
            log.error(
                "{name}: serial number {serial} belongs to another device",
                name=self._label,
                serial=serial,
            )
            updated = await self.store.update_device(self.device.id, info=info)
        except Exception:
            log.failure("{name}: could not store the device identity", name=self._label)
            updated = attrs.evolve(self.device, **fields)
        if updated is not None:
            self.device = updated

    async def _set_status(self, status: str, detail: str | None = None) -> None:
        """Record the status and why (``status_detail``; None clears it)."""
        try:
            self.device = await self.registry.set_status(self.device, status, detail)
        except Exception:
            log.failure("{name}: could not record status {status}", name=self._label, status=status)
            self.device = attrs.evolve(self.device, status=status, status_detail=detail)

    async def _try_lock(self) -> bool:
        try:
            return bool(await self.store.try_lock_device(self.device.id))
        except Exception:
            log.failure("{name}: could not take the device lock", name=self._label)
            return False

    # ------------------------------------------------------------------ punches

    async def catch_up(self, session: ZKSession) -> tuple[int, int]:
        """Read the whole log and save what is not saved yet; (records read, new punches).
        Raises SaveFailed.

        The device's log only grows (until it is cleared), so a mark kept with the device
        (how many records the last complete catch-up saved, and the last of them) lets a
        reconnect skip the records already saved; if the record at the mark differs, the
        log was cleared or rewritten and all of it is saved (duplicates insert nothing).
        """
        started = self.clock.seconds()
        try:
            read = await session.read_attendance_dataset()
        except DatasetUnreadable as e:
            await self.keep_unreadable(f"pull:{e.what}", e.dataset, e.reason)
            raise
        records = read.records
        if read.unreadable:
            log.warn(
                "{name}: {count} attendance records do not decode; kept as rejected",
                name=self._label,
                count=len(read.unreadable),
            )
            for raw, reason in read.unreadable:
                await self.keep_unreadable("pull:attendance", raw, reason)
        skip = await self._saved_prefix(records)
        # Two batches in flight: this process prepares (and publishes) one while the
        # database writes the other. Converted per batch, so each reactor turn stays short.
        window = DeferredSemaphore(2)

        async def save(start: int) -> int:
            batch = [codec.to_punch(r) for r in records[start : start + self.batch_size]]
            try:
                return len(await self.ingest.save_punches(self.device, batch))
            except Exception as e:
                raise SaveFailed(str(e)) from e

        def saving(start: int) -> Callable[[], Deferred[int]]:
            return lambda: Deferred.fromCoroutine(save(start))

        saves = [window.run(saving(start)) for start in range(skip, len(records), self.batch_size)]
        try:
            results = await DeferredList(saves, fireOnOneErrback=True, consumeErrors=True)
        except FirstError as e:
            e.subFailure.raiseException()
        new = sum(count for _ok, count in results)
        if records:
            mark = {"count": len(records), "last": _record_key(records[-1])}
            await self._save_mark(mark, read.record_size)
        self.last_catch_up = (len(records), len(records) - skip, new)
        if self.device.status_detail and self.device.status == "online":
            await self._set_status("online")  # the log reads again: nothing to explain
        log.info(
            "{name}: caught up {count} records ({skipped} saved before, {new} new) in {secs:.2f} s",
            name=self._label,
            count=len(records),
            skipped=skip,
            new=new,
            secs=self.clock.seconds() - started,
        )
        return len(records) + len(read.unreadable), new

    async def _saved_prefix(self, records: list[codec.PullRecord]) -> int:
        """How many leading records the last complete catch-up saved (0 if unsure)."""
        try:
            current = await self.store.device(self.device.id)
        except Exception:
            return 0
        mark = (current.info if current else {}).get("log_mark") or {}
        count = mark.get("count")
        if not isinstance(count, int) or not 0 < count <= len(records):
            return 0
        return count if _record_key(records[count - 1]) == mark.get("last") else 0

    async def _save_mark(self, mark: dict[str, Any], record_size: int | None = None) -> None:
        info: dict[str, Any] = {"log_mark": mark}
        if record_size is not None:
            info["attlog_record_size"] = record_size
        try:
            await self.store.update_device(self.device.id, info=info)
        except Exception as e:  # only an optimisation: the next catch-up saves everything
            raise SaveFailed(str(e)) from e

    async def _catch_up_logged(self, session: ZKSession) -> int | None:
        """Catch up; a save failure is logged and retried later on the live session."""
        try:
            records, _new = await self.catch_up(session)
        except DatasetUnreadable as e:
            # Kept raw in the rejected table by catch_up; the session goes on (real-time
            # events still arrive) and the device says why its log was not read.
            log.warn("{name}: {error}; the log stays on the device", name=self._label, error=str(e))
            await self._set_status(self.device.status, failure_detail(e))
            return None
        except SaveFailed as e:
            log.warn(
                "{name}: catch-up not saved ({error}); retrying",
                name=self._label,
                error=str(e.__cause__ or e),
            )
            self._catch_up_needed = True
            self._schedule_retry()
            return None
        self._catch_up_needed = False
        return records

    async def _save(self, punches: list[Punch]) -> int:
        await self._save_lock.acquire()
        try:
            events = await self.ingest.save_punches(self.device, punches)
        except Exception as e:
            raise SaveFailed(str(e)) from e
        finally:
            self._save_lock.release()
        return len(events)

    async def keep_unreadable(self, source: str, raw: bytes, reason: str) -> None:
        """Keep input from the device that does not decode in the rejected table (once per
        content and service), hex-encoded; never raises."""
        digest = hashlib.sha256(source.encode() + b"\0" + raw).digest()
        if digest in self._kept:
            return
        try:
            await self.store.save_rejected(
                self.device.serial_number, [Rejected(source=source, raw=_hex(raw), reason=reason)]
            )
        except Exception:
            log.failure(
                "{name}: could not keep unreadable {source}", name=self._label, source=source
            )
            return
        self._kept.add(digest)

    def _on_unreadable_event(self, code: int, data: bytes, reason: str) -> Deferred[None]:
        return Deferred.fromCoroutine(
            self.keep_unreadable("pull:event", data, f"event code {code}: {reason}")
        )

    def _on_event(self, event: AttendanceEvent) -> None:
        self.events_seen += 1
        self._pending.append(codec.to_punch(event))
        if not self._flushing and self._retry_call is None:
            Deferred.fromCoroutine(self._flush())

    async def _flush(self) -> bool:
        """Save the pending live punches; False (and a retry scheduled) on failure."""
        if self._flushing:
            return True
        self._flushing = True
        try:
            while self._pending:
                batch = self._pending[: self.batch_size]
                try:
                    await self._save(batch)
                except SaveFailed as e:
                    log.warn(
                        "{name}: {count} punches kept in memory, saving failed ({error})",
                        name=self._label,
                        count=len(self._pending),
                        error=str(e.__cause__ or e),
                    )
                    self._schedule_retry()
                    return False
                del self._pending[: len(batch)]
            return True
        finally:
            self._flushing = False

    def _schedule_retry(self) -> None:
        if self._retry_call is not None and self._retry_call.active():
            return
        delay = min(60.0, self.retry_save_delay * 2 ** min(self._save_failures, 6))
        self._save_failures += 1
        self._retry_call = self.clock.callLater(delay, self._retry_saves)

    def _retry_saves(self) -> None:
        self._retry_call = None

        async def run() -> None:
            ok = await self._flush()
            session = self.session
            if ok and self._catch_up_needed and session is not None and not session.closed:
                ok = await self._catch_up_logged(session) is not None
            if ok:
                self._save_failures = 0

        d = Deferred.fromCoroutine(run())
        d.addErrback(lambda f: log.failure("{name}: retrying saves failed", f, name=self._label))

    @property
    def pending(self) -> int:
        """Live punches not saved yet."""
        return len(self._pending)

    # ------------------------------------------------------------------ idle probe

    def _schedule_probe(self) -> None:
        session = self.session
        if session is None or session.closed or not self.running:
            return
        due = session.last_activity + self.idle_probe - self.clock.seconds()
        self._probe_call = self.clock.callLater(max(due, 0.5), self._probe)

    def _probe(self) -> None:
        self._probe_call = None
        session = self.session
        if session is None or session.closed:
            return
        self._refresh_seen()
        if self.clock.seconds() - session.last_activity < self.idle_probe:
            self._schedule_probe()
            return

        async def run() -> None:
            if not await self._try_lock():
                log.warn("{name}: device lock lost; disconnecting", name=self._label)
                session.abort(DeviceBusy("device lock lost"))
                return
            asked = self.clock.seconds()
            try:
                device_time = await session.read_time()  # a timeout closes the session
            except CommandFailed as e:  # an answer all the same: the link is alive
                log.debug("{name}: probe answered {error}", name=self._label, error=str(e))
            else:
                await self._check_drift(session, device_time, asked, self.clock.seconds())
            self._schedule_probe()
            if self.runner is not None:
                self.runner.kick()  # commands queued by other processes

        def failed(failure: Any) -> None:
            log.info("{name}: probe failed: {error}", name=self._label, error=str(failure.value))
            # The probe runs again while the session is open (a failure that closed the
            # session ends it; one that did not must not end the idle probing for good),
            # one idle interval later, so a step that keeps failing does not spin.
            if session.closed or not self.running or self.session is not session:
                return
            if self._probe_call is None or not self._probe_call.active():
                self._probe_call = self.clock.callLater(self.idle_probe, self._probe)

        d = Deferred.fromCoroutine(run())
        d.addErrback(failed)

    def _refresh_seen(self) -> None:
        """Record that the connected terminal is still there (``last_seen``), throttled."""
        now = self.clock.seconds()
        if now - self._seen_at < self.seen_every:
            return
        self._seen_at = now
        d = self.store.update_device(self.device.id, last_seen=iso(utc_now(self.clock)))
        d.addErrback(
            lambda f: log.info(
                "{name}: could not record last_seen: {error}", name=self._label, error=f.value
            )
        )

    # ------------------------------------------------------------------ clock offset

    @property
    def zone(self) -> tzinfo:
        """The device's time zone (its own, else the server's default)."""
        policy = getattr(self.ingest, "time_policy", None) or TimePolicy()
        return policy.zone(self.device.timezone)

    async def measure_clock(self, session: ZKSession) -> int | None:
        """Read the terminal's clock (GET_TIME) and measure how far it is ahead of the
        server's (negative: behind): kept in ``self.clock_offset_s`` and on the device
        record (``clock_offset_s``). Returns it (None when the answer was not a time)."""
        asked = self.clock.seconds()
        device_time = await session.read_time()
        return await self._measured(device_time, asked, self.clock.seconds())

    async def _measured(self, device_time: datetime, asked: float, answered: float) -> int | None:
        """The offset of a clock reading, kept here and (when it changed) on the device
        record; a failure to store it is logged."""
        try:
            offset = clock_offset(device_time, self.zone, asked, answered)
        except (OverflowError, ValueError):
            return None
        self.clock_offset_s = offset
        if offset == self.device.clock_offset_s:
            return offset
        try:
            updated = await self.store.update_device(self.device.id, clock_offset_s=offset)
        except Exception as e:
            log.info(
                "{name}: could not store the clock offset: {error}", name=self._label, error=str(e)
            )
        else:
            if updated is not None:
                self.device = updated
        return offset

    async def _measure_clock_quietly(self, session: ZKSession) -> None:
        try:
            await self.measure_clock(session)
        except CommandFailed as e:
            log.info("{name}: clock not readable: {error}", name=self._label, error=str(e))

    # ------------------------------------------------------------------ operations

    async def run_operation(self, fn: Callable[[ZKSession], Awaitable[T]]) -> T:
        """Run ``fn`` on the live session, else on a short session of its own."""
        session = self.session
        if session is not None and not session.closed:
            session.encoding = self.device.encoding  # the setting may have changed
            return await fn(session)
        if not await self._try_lock():
            raise DeviceBusy(f"{self._label} is connected by another process")
        session = await self.connector(self.device, None)
        session.encoding = self.device.encoding
        try:
            await session.connect(self.device.comm_key)
            if not self.device.serial_number:
                await self._identify(session)
            return await fn(session)
        finally:
            await session.disconnect()
            if not self.running:
                try:
                    await self.store.unlock_device(self.device.id)
                except Exception:
                    log.failure("Releasing the lock of {name} failed", name=self._label)

    async def read_log(self) -> dict[str, int]:
        records, new = await self.run_operation(self.catch_up)
        return {"records": records, "new": new}

    async def sync_time(self) -> dict[str, str]:
        now = device_now(self.device, self.clock, self.zone)

        async def set_time(session: ZKSession) -> None:
            await session.set_time(now)

        await self.run_operation(set_time)
        return {"time": now.strftime(TIMESTAMP_FORMAT)}

    # ------------------------------------------------------------------ device control

    @property
    def label(self) -> str:
        """The device as logs name it."""
        return self._label

    def _on_device_event(self, code: int, data: bytes) -> Deferred[None]:
        return Deferred.fromCoroutine(
            save_device_event(self, code, data, self.device_now().strftime(TIMESTAMP_FORMAT))
        )

    def device_now(self) -> datetime:
        """Wall-clock time in the device's zone now (what SET_TIME sends)."""
        return device_now(self.device, self.clock, self.zone)

    def expect_restart(self) -> None:
        """The device was told to restart: show ``rebooting`` (not ``offline``) while it
        is away, for at most ``restart_grace`` seconds."""
        self._restart_until = self.clock.seconds() + self.restart_grace

    def _rebooting(self) -> bool:
        return self._restart_until is not None and self.clock.seconds() < self._restart_until

    async def remember(self, **info: Any) -> None:
        """Merge ``info`` into the device's stored ``info``."""
        try:
            updated = await self.store.update_device(self.device.id, info=info)
        except Exception:
            log.failure("{name}: could not store {keys}", name=self._label, keys=sorted(info))
            updated = None
        if updated is None:
            updated = attrs.evolve(self.device, info={**self.device.info, **info})
        self.device = updated

    async def _learn_layout(self, session: ZKSession) -> None:
        """The device's user record size (by reading its users, once known it is kept in
        ``info.user_layout``) and its algorithm versions (``fp_version``, ``face_version``)."""
        info = self.device.info
        learnt: dict[str, Any] = {}
        if info.get("user_layout") in codec.USER_RECORD_SIZES:
            session.user_size = info["user_layout"]
        else:
            try:
                _users, layout = await session.read_users_layout()
            except DatasetUnreadable as e:
                await self.keep_unreadable(f"pull:{e.what}", e.dataset, e.reason)
                log.warn("{name}: user layout not learnt ({error})", name=self._label, error=str(e))
                layout = None
            except (CommandFailed, codec.CodecError) as e:
                log.warn("{name}: user layout not learnt ({error})", name=self._label, error=str(e))
                layout = None
            if layout is not None:
                learnt["user_layout"] = layout
        if "fp_version" not in info:
            learnt.update(await session.read_algorithm_versions())
        if learnt:
            await self.remember(**learnt)

    async def identify(self, session: ZKSession) -> dict[str, Any]:
        """Read identity, sizes, algorithm versions and the user layout again; the
        device's ``info`` as stored (without the catch-up mark)."""
        await self._identify(session)
        learnt: dict[str, Any] = dict(await session.read_algorithm_versions())
        _users, layout = await session.read_users_layout()
        if layout is not None:
            learnt["user_layout"] = layout
        await self.remember(**learnt)
        return {k: v for k, v in self.device.info.items() if k != "log_mark"}

    async def reset_log_mark(self) -> None:
        """The log was cleared: the next catch-up reads it from the start."""
        await self.remember(log_mark={})

    async def reregister(self, session: ZKSession, records_before: int, events_before: int) -> None:
        """After a write sequence: REG_EVENT again, and catch up if the log grew by more
        records than the real-time events that arrived meanwhile."""
        await register_device_events(session, self._label)
        sizes = await session.read_sizes()
        if sizes.records - records_before > self.events_seen - events_before:
            log.info("{name}: punches made during a command; catching up", name=self._label)
            await self._catch_up_logged(session)

    async def catch_up_range(
        self, session: ZKSession, since: str | None, until: str | None
    ) -> tuple[int, int, int]:
        """A catch-up read; (records read, new punches, records from ``since`` to
        ``until``, device local time ``YYYY-MM-DD HH:MM:SS``)."""
        keep = _KeepRecords(session)
        records, new = await self.catch_up(cast(ZKSession, keep))
        stamps = (r.timestamp.strftime(TIMESTAMP_FORMAT) for r in keep.records)
        in_range = sum(1 for t in stamps if (not since or t >= since) and (not until or t <= until))
        return records, new, in_range

    async def _check_drift(
        self, session: ZKSession, device_time: datetime, asked: float, answered: float
    ) -> None:
        """Measure the clock offset (``self.clock_offset_s``) and, with ``--fix-drift``,
        set the clock right when it is off by more than the threshold (once an hour)."""
        offset = await self._measured(device_time, asked, answered)
        if offset is None:
            return
        fixer = self.fix_drift
        if fixer is None or not fixer.due(self.device.id, offset, self.clock.seconds()):
            return
        now = self.device_now()
        try:
            await session.set_time(now)
        except ZKError as e:
            log.warn(
                "{name}: clock {offset} s off, setting it failed: {error}",
                name=self._label,
                offset=offset,
                error=str(e),
            )
            return
        log.info(
            "{name}: clock was {offset} s off; set to {time}",
            name=self._label,
            offset=offset,
            time=now.strftime(TIMESTAMP_FORMAT),
        )


class _KeepRecords:
    """A session stand-in for catch_up that keeps the records it read."""

    def __init__(self, session: ZKSession) -> None:
        self.session = session
        self.records: list[codec.PullRecord] = []

    async def read_attendance(self) -> list[codec.PullRecord]:
        self.records = await self.session.read_attendance()
        return self.records

    async def read_attendance_dataset(self) -> codec.AttendanceDataset:
        read = await self.session.read_attendance_dataset()
        self.records = read.records
        return read


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable
