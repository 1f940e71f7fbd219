"""The emulated pull terminal's state: identity, users, records, clock, fault switches,
and a punch generator; builders for test devices."""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from attrs import Factory, define, field
from attrs.validators import ge
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from zkserver.access import encode_pull_alarm
from zkserver.pull.codec import (
    EventCode,
    EventFlag,
    PullRecord,
    Sizes,
    Template,
    encode_attendance,
    encode_attendance_event,
    encode_templates,
    encode_users,
)
from zkserver.records import DeviceUser

if TYPE_CHECKING:
    from zkserver.emulator.pull.session import Session


__all__ = [
    "INLINE_MAX",
    "Faults",
    "PullDevice",
    "PunchGenerator",
    "build_device",
    "make_records",
    "make_users",
]

log = Logger(namespace="zkserver.emulator.pull")

#: Datasets up to this size are answered inline (CMD_DATA) to the prepare-buffer command;
#: 1016 bytes + 8 of header fit pyzk's 1024-byte UDP receive.
INLINE_MAX = 1016


# --------------------------------------------------------------------------- device


@define
class Faults:
    """Misbehaviour switches, read on every packet (change them at any time).

    TCP only: ``bad_magic``, ``absurd_length``, ``split_frames``, ``coalesce``.
    """

    #: Answer this many chunk reads (1504), then send PREPARE_DATA and half of the next
    #: chunk's DATA and close the connection (UDP: forget the session).  None = off.
    #: Not for pyzk 0.9 over TCP: it spins forever on EOF inside a chunk.
    close_after_chunks: int | None = None
    #: Swallow every request: no reply, no event ACK handling.
    mute: bool = False
    #: Replace every outgoing frame with random bytes of the same length.
    garbage: bool = False
    #: Outgoing TCP frames carry a wrong magic.
    bad_magic: bool = False
    #: Outgoing TCP frames declare a length of 0x7FFFFFF0.
    absurd_length: bool = False
    #: Attendance events carry this event code (session field) instead of 1.  None = off.
    event_code: int | None = None
    #: Write every TCP frame in pieces of this many bytes, ``split_delay`` s apart.  0 = off.
    split_frames: int = 0
    split_delay: float = 0.01
    #: Gather the TCP frames of one reactor turn into one write, and send queued events
    #: without waiting for each ACK.
    coalesce: bool = False
    #: DISABLEDEVICE drops the session's real-time registration (some firmware does):
    #: a client must send REG_EVENT again after ENABLEDEVICE.
    disable_drops_events: bool = False
    #: Answer these commands with this reply code instead (e.g. ``{Cmd.CONNECT: 6001}``,
    #: ``{Cmd.REG_EVENT: Reply.ACK_ERROR}``), with no data and no other effect.
    replies: dict[int, int] = Factory(dict)
    #: Serve these bytes as the attendance dataset (``<I length>`` + records) instead of
    #: the log, e.g. a dataset that fits no record size.  None = off.
    attendance_dataset: bytes | None = None


@define(eq=False)
class PullDevice:
    """The emulated terminal: identity, data, clock and fault switches."""

    serial_number: str = "EMU0000001"
    firmware_version: str = "Ver 6.60 Apr 28 2017"
    platform: str = "ZMM220_TFT"
    device_name: str = "ZK Emulator"
    comm_key: int = 0
    #: Bytes per user record: 28, 72 or any other size of 28 or more (the 28-byte layout
    #: up to 71, the 72-byte one from 72, zero-padded; docs/protocols.md §B.8).
    user_size: int = field(default=72, validator=ge(28))
    #: Bytes per attendance record: 8, 16, 40, or any other size of 8 or more (e.g. 49 as
    #: MB560-VL / SpeedFace firmware: the 40-byte layout + each record's ``extra``,
    #: zero-padded).
    record_size: int = field(default=40, validator=ge(8))
    #: Bytes per real-time attendance event payload: any size of 10 or more.
    event_size: int = field(default=36, validator=ge(10))
    #: The code page of its names (``cp1251`` for a Russian-language terminal; ``""``:
    #: UTF-8 out, the automatic reading in; docs/protocols.md §B.4).
    encoding: str = ""
    users: list[DeviceUser] = Factory(list)
    records: list[PullRecord] = Factory(list)
    #: Device clock minus host clock, in seconds (SET_TIME changes it).
    clock_offset: float = 0.0
    #: Fingerprints counted in GET_FREE_SIZES besides :attr:`templates`.
    fingers: int = 0
    #: Fingerprint templates (DB_RRQ fct 2 reads them, command 110 writes them).
    templates: list[Template] = Factory(list)
    #: RESTART: the device is away this long (on ``clock``) before it accepts connections.
    restart_delay: float = 0.0
    clock: IReactorTime | None = None
    users_cap: int = 10_000
    records_cap: int = 100_000
    inline_max: int = INLINE_MAX
    #: Extra or overriding OPTIONS_RRQ answers (key -> value); see :meth:`option`.
    options: dict[str, str] = Factory(dict)
    faults: Faults = Factory(Faults)
    enabled: bool = True
    host_now: Callable[[], datetime] = datetime.now
    sessions: set[Session] = field(init=False, factory=set)
    #: What the device was told, for tests: command codes received (latest 1000),
    #: UNLOCK seconds, STARTENROLL (user id, finger), REFRESHDATA and RESTART counts.
    commands: deque[int] = field(init=False, factory=lambda: deque(maxlen=1000))
    unlocks: list[float] = field(init=False, factory=list)
    enrollments: list[tuple[str, int]] = field(init=False, factory=list)
    refreshes: int = field(init=False, default=0)
    restarts: int = field(init=False, default=0)
    #: True while restarting (no connection is accepted).
    rebooting: bool = field(init=False, default=False)
    _version: int = field(init=False, default=0)
    _next_session: int = field(init=False, factory=lambda: random.randint(1, 0xFF00))
    _cache: dict[str, tuple[Any, bytes]] = field(init=False, factory=dict)
    _uid_index: tuple[int, dict[str, int | None]] = field(init=False, default=(-1, {}))

    # ----------------------------------------------------------------- clock and data

    def now(self) -> datetime:
        """The device clock (host clock + offset), to the second."""
        return (self.host_now() + timedelta(seconds=self.clock_offset)).replace(microsecond=0)

    def set_time(self, when: datetime) -> None:
        """Set the device clock (keeps an offset from the host clock)."""
        self.clock_offset = (when - self.host_now()).total_seconds()

    def sizes(self) -> Sizes:
        """GET_FREE_SIZES counts, consistent with the data."""
        users, records = len(self.users), len(self.records)
        fingers = self.fingers + len(self.templates)
        return Sizes.of(
            users,
            fingers,
            records,
            users_cap=max(self.users_cap, users),
            fingers_cap=max(10_000, fingers),
            records_cap=max(self.records_cap, records),
        )

    def option(self, key: str) -> str | None:
        """OPTIONS_RRQ value for ``key``, None when unknown (answered ACK_ERROR)."""
        if key in self.options:
            return self.options[key]
        return {
            "~SerialNumber": self.serial_number,
            "~Platform": self.platform,
            "~DeviceName": self.device_name,
            "~ZKFPVersion": "10",
            "~OS": "1",
            "~ExtendFmt": "0",
            "~UserExtFmt": "0",
            "~PIN2Width": "9",
            "FaceFunOn": "0",
            "ZKFaceVersion": "0",
            "CompatOldFirmware": "0",
            "MAC": "00:17:61:" + ":".join(f"{b:02x}" for b in self.serial_number.encode()[-3:]),
        }.get(key)

    def users_dataset(self) -> bytes:
        """The users dataset (``<I length>`` + records), cached until the list changes."""
        key = (
            self.user_size,
            self.encoding,
            len(self.users),
            id(self.users[-1]) if self.users else None,
            self._version,
        )
        return self._cached(
            "users", key, lambda: encode_users(self.users, self.user_size, self.encoding)
        )

    def templates_dataset(self) -> bytes:
        """The fingerprint templates dataset (``<i total>`` + ``<HHbb>`` entries)."""
        return encode_templates(self.templates)

    def attendance_dataset(self) -> bytes:
        """The attendance dataset, cached until the log changes."""
        if self.faults.attendance_dataset is not None:
            return self.faults.attendance_dataset
        key = (self.record_size, len(self.records), id(self.records[-1]) if self.records else None)
        return self._cached(
            "attendance",
            key,
            lambda: encode_attendance(self.records, self.record_size, self.users),
        )

    def _cached(self, name: str, key: Any, build: Callable[[], bytes]) -> bytes:
        hit = self._cache.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        data = build()
        self._cache[name] = (key, data)
        return data

    def uid_of(self, user_id: str) -> int | None:
        """The device slot (uid) of an enrolled user, None when not enrolled."""
        if self._uid_index[0] != len(self.users):
            self._uid_index = (len(self.users), {u.user_id: u.uid for u in self.users})
        return self._uid_index[1].get(user_id)

    def changed(self) -> None:
        """The user list changed in place: drop cached datasets and the uid index."""
        self._version += 1
        self._uid_index = (-1, {})
        self._cache.pop("users", None)
        self._cache.pop("attendance", None)

    # ----------------------------------------------------------------- writes

    def upsert_user(self, user: DeviceUser) -> None:
        """USER_WRQ: store ``user`` in its slot (``user.uid``), replacing what was there."""
        for i, old in enumerate(self.users):
            if old.uid == user.uid:
                self.users[i] = user
                break
        else:
            self.users.append(user)
        self.changed()

    def delete_user(self, uid: int) -> bool:
        """DELETE_USER: remove the user in slot ``uid`` and its templates."""
        kept = [u for u in self.users if u.uid != uid]
        if len(kept) == len(self.users):
            return False
        self.users[:] = kept
        self.templates[:] = [t for t in self.templates if t.uid != uid]
        self.changed()
        return True

    def save_templates(self, uid: int, templates: Sequence[Template]) -> None:
        """Command 110: store templates of slot ``uid`` (one per finger, replacing)."""
        fingers = {t.finger for t in templates}
        self.templates[:] = [
            t for t in self.templates if not (t.uid == uid and t.finger in fingers)
        ] + [Template(uid, t.finger, t.valid, t.data) for t in templates]

    def clear_data(self) -> None:
        """CLEAR_DATA: users, templates and the attendance log erased."""
        self.users.clear()
        self.templates.clear()
        self.records.clear()
        self.changed()

    def restart(self) -> None:
        """RESTART: every link drops; with ``restart_delay`` (and ``clock``) no connection
        is accepted until the delay has passed."""
        self.restarts += 1
        self.enabled = True
        self.disconnect_all()
        if self.restart_delay > 0 and self.clock is not None:
            self.rebooting = True
            self.clock.callLater(self.restart_delay, self._back)

    def _back(self) -> None:
        self.rebooting = False
        log.info("emulator {sn} is back after a restart", sn=self.serial_number)

    def new_session_id(self) -> int:
        sid = self._next_session
        self._next_session = sid % 0xFFFE + 1
        return sid

    # ----------------------------------------------------------------- real time

    @property
    def event_flags(self) -> dict[int, EventFlag]:
        """REG_EVENT flags of every live session, by session id."""
        return {s.session_id: s.flags for s in self.sessions}

    def punch(
        self, user_id: str, state: int = 0, verify: int = 1, when: datetime | None = None
    ) -> PullRecord:
        """Record a punch and send it to every session registered for EF_ATTLOG."""
        user_id = str(user_id)
        when = when if when is not None else self.now()
        record = PullRecord(user_id, when, state, verify, self.uid_of(user_id))
        self.records.append(record)
        data = encode_attendance_event(user_id, state, verify, when, self.event_size)
        code = self.faults.event_code
        self.emit_event(EventCode.ATTLOG if code is None else code, data, EventFlag.ATTLOG)
        return record

    def alarm(self, alarm_type: int = 0x37) -> None:
        """Raise an EF_ALARM real-time event (4-byte payload: the first byte is the alarm
        type, 0x37 tamper, 0x3A misoperation, 0x35 exit button; docs/protocols.md §B.5) for
        the sessions registered for EF_ALARM."""
        self.emit_event(int(EventFlag.ALARM), encode_pull_alarm(alarm_type), EventFlag.ALARM)

    def emit_event(self, code: int, data: bytes, flags: int | None = None) -> None:
        """Queue a raw event (command 500, session field ``code``) for registered sessions.

        Sessions get it when their flags include any of ``flags`` (default ``code``).
        """
        want = code if flags is None else flags
        for s in list(self.sessions):
            if s.flags & want:
                s.queue_event(code, data)

    # ----------------------------------------------------------------- fault helpers

    def send_garbage(self, data: bytes | None = None) -> None:
        """Write raw bytes (random by default) to every session now."""
        for s in list(self.sessions):
            s.link.send_raw(data if data is not None else os.urandom(64))

    def disconnect_all(self) -> None:
        """Close every session's connection (UDP: forget the peers)."""
        for s in list(self.sessions):
            s.link.close()


# --------------------------------------------------------------------------- generator


@define(eq=False)
class PunchGenerator:
    """Punches for random enrolled users at ``rate`` per second on ``clock``."""

    device: PullDevice
    rate: float
    clock: IReactorTime
    rng: random.Random = Factory(random.Random)
    _loop: LoopingCall | None = field(init=False, default=None)

    def start(self) -> None:
        if self._loop is not None or self.rate <= 0:
            return
        self._loop = LoopingCall.withCount(self._tick)
        self._loop.clock = self.clock
        self._loop.start(1.0 / self.rate, now=False).addErrback(
            lambda f: log.failure("punch generator stopped", f)
        )

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _tick(self, count: int) -> None:
        users = self.device.users
        if not users or not self.device.enabled:
            return  # a disabled terminal takes no punches
        for _ in range(count):
            user = self.rng.choice(users)
            self.device.punch(user.user_id, state=self.rng.choice((0, 1)), verify=1)


# --------------------------------------------------------------------------- builders


def make_users(n: int, user_size: int = 72) -> list[DeviceUser]:
    """``n`` users with uid and numeric user id 1..n (names fit the 28-byte format)."""
    narrow = user_size < 72  # the 28-byte layout: 8-byte names, numeric groups
    width = 8 if narrow else 24
    return [
        DeviceUser(user_id=str(i), name=f"User {i}"[:width], uid=i, group="1" if narrow else "")
        for i in range(1, n + 1)
    ]


def make_records(
    users: Sequence[DeviceUser],
    m: int,
    start: datetime | None = None,
    step: timedelta = timedelta(minutes=1),
) -> list[PullRecord]:
    """``m`` records cycling through ``users``, ``step`` apart, ending before now."""
    if m <= 0:
        return []
    if not users:
        raise ValueError("records need at least one user")
    if start is None:
        start = (datetime.now() - step * (m + 1)).replace(microsecond=0)
    ids = [(u.user_id, u.uid) for u in users]
    k = len(ids)
    step_s = int(step.total_seconds())
    base = start
    out = []
    for i in range(m):
        user_id, uid = ids[i % k]
        out.append(PullRecord(user_id, base + timedelta(seconds=i * step_s), i % 2, 1, uid))
    return out


def build_device(users: int = 0, records: int = 0, **kwargs: Any) -> PullDevice:
    """A :class:`PullDevice` with ``users`` users and ``records`` attendance records."""
    device = PullDevice(**kwargs)
    if users:
        device.users = make_users(users, device.user_size)
    if records:
        device.records = make_records(device.users or make_users(1, device.user_size), records)
    return device
