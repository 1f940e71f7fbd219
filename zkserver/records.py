"""Plain records shared by every layer: punches, devices, commands, users."""

from __future__ import annotations

import re
from typing import Any

from attrs import field, frozen

__all__ = ["Punch", "Device", "Command", "DeviceUser", "Rejected", "redact_command"]

# A user's password travels in user_upsert (``Passwd=`` in the push line); the API and the
# stream show that one was set, never its value.
_PASSWD = re.compile(r"(Passwd=)[^\t\r\n]+")
HIDDEN = "***"


def redact_command(text: str) -> str:
    """``text`` with a non-empty ``Passwd=`` value replaced by ``***``."""
    return _PASSWD.sub(r"\g<1>" + HIDDEN, text)


TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


@frozen
class Punch:
    """One attendance record as a terminal reported it.

    ``timestamp`` is device local time as ``YYYY-MM-DD HH:MM:SS``; ``status`` is the
    in/out state (the event's ``action``) and ``verify`` the verify method (``method``).
    ``raw`` holds every field the device sent for this punch, parsed.
    ``timestamp_utc``, ``time_ambiguous`` and ``suspect_time`` are the server's reading of
    the time (:mod:`zkserver.localtime`), filled by the ingest path before the punch is
    saved (``""`` until then).
    """

    user_id: str
    timestamp: str
    status: int
    verify: int
    workcode: str = ""
    raw: dict[str, Any] = field(factory=dict, eq=False, hash=False)
    timestamp_utc: str = field(default="", eq=False)
    time_ambiguous: bool = field(default=False, eq=False)
    suspect_time: str | None = field(default=None, eq=False)


@frozen
class Device:
    """A terminal the server knows, push (it calls us) or pull (we call it)."""

    id: str
    serial_number: str
    name: str
    kind: str  # "push" | "pull"
    status: str  # "pending" | "online" | "offline" | "auth_failed" | "rejected" | "rebooting"
    approved: bool
    timezone: str = ""
    host: str = ""
    port: int = 4370
    comm_key: int = 0
    transport: str = "tcp"
    last_seen: str | None = None
    info: dict[str, Any] = field(factory=dict, eq=False, hash=False)
    created_at: str | None = None
    #: The terminal's clock minus the server's, in seconds (None until measured).
    clock_offset_s: int | None = None
    #: How many of its punches had a suspect time (zkserver.localtime.suspect_reason).
    suspect_punches: int = 0
    #: Why the device is not (fully) working, for an operator: ``CONNECT answered 6001``,
    #: ``wrong comm key``, ``connection refused``, ``dataset unreadable: ...``; None when
    #: all is well (always None for push devices).
    status_detail: str | None = None
    #: The text encoding of its names: ``""`` automatic, else a codec name such as
    #: ``cp1252`` (zkserver.device_text; docs/protocols.md §A.2, §B.4).
    encoding: str = ""

    @property
    def display_name(self) -> str:
        """The name dashboards show: the configured one, else ``Push Device <SN>``."""
        if self.name:
            return self.name
        label = "Push Device" if self.kind == "push" else "Pull Device"
        return f"{label} {self.serial_number}" if self.serial_number else label

    def public(self) -> dict[str, Any]:
        """The JSON shape of the device in the API (no comm key)."""
        return {
            "id": self.id,
            "serial_number": self.serial_number,
            "name": self.display_name,
            "kind": self.kind,
            "status": self.status,
            "approved": self.approved,
            "timezone": self.timezone,
            "host": self.host,
            "port": self.port,
            "transport": self.transport,
            "has_comm_key": bool(self.comm_key),
            "last_seen": self.last_seen,
            "info": dict(self.info),
            "created_at": self.created_at,
            "clock_offset_s": self.clock_offset_s,
            "suspect_punches": self.suspect_punches,
            "status_detail": self.status_detail,
            "encoding": self.encoding,
        }


@frozen
class Command:
    """A command for a device and what became of it (see zkserver.commands).

    ``type`` is a zkserver.commands.spec type (``raw`` for a command given as a line),
    ``fields`` its validated fields, ``command`` the iclock line sent to a push terminal
    (empty for pull terminals). ``created_at`` is when it was queued (``queued_at``).
    """

    id: str
    device_id: str
    command: str
    status: str  # "queued" | "sent" | "done" | "failed" | "expired" | "cancelled"
    return_code: int | None = None
    result: str = ""
    created_at: str | None = None
    sent_at: str | None = None
    finished_at: str | None = None
    batch_id: str | None = None
    type: str = "raw"
    fields: dict[str, Any] = field(factory=dict, eq=False, hash=False)
    attempts: int = 0
    expires_at: str | None = None

    @property
    def queued_at(self) -> str | None:
        return self.created_at

    def public(self) -> dict[str, Any]:
        """The API shape: the type's fields at the top level, as given (a password as ``***``)."""
        command = redact_command(self.command)
        fields = dict(self.fields)
        if fields.get("password"):
            fields["password"] = HIDDEN
        if self.type != "raw" and len(command) > 200:
            command = command[:200] + "..."
        return {
            **fields,
            "id": self.id,
            "device_id": self.device_id,
            "batch_id": self.batch_id,
            "type": self.type,
            "command": command,
            "status": self.status,
            "attempts": self.attempts,
            "return_code": self.return_code,
            "result": self.result,
            "queued_at": self.created_at,
            "sent_at": self.sent_at,
            "finished_at": self.finished_at,
            "expires_at": self.expires_at,
            "created_at": self.created_at,
        }


@frozen
class DeviceUser:
    """A user enrolled on a terminal."""

    user_id: str
    name: str = ""
    privilege: int = 0
    card: str = ""
    password: str = ""
    group: str = ""
    uid: int | None = None  # pull devices' internal slot number

    def public(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "name": self.name,
            "privilege": self.privilege,
            "card": self.card,
            "group": self.group,
            "uid": self.uid,
        }


@frozen
class Rejected:
    """Input the server could not use, kept raw for an operator."""

    source: str  # e.g. "ATTLOG", "OPERLOG", "cdata", "pull"
    raw: str
    reason: str
