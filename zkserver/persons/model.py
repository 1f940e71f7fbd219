"""Records of the person registry: persons, their templates and their sync state. Pure."""

from __future__ import annotations

from typing import Any

from attrs import field, frozen

__all__ = [
    "ALL",
    "NewTemplate",
    "Person",
    "PersonTemplate",
    "SyncEntry",
    "pack_devices",
    "unpack_devices",
]

#: ``devices`` of a person who must be on every terminal.
ALL = "all"


def pack_devices(devices: str | list[str] | tuple[str, ...]) -> str:
    """``"all"`` or ``",id1,id2,"`` (a comma before and after each id) as stored."""
    if devices == ALL:
        return ALL
    ids = list(dict.fromkeys(devices))
    return "," + ",".join(ids) + "," if ids else ""


def unpack_devices(text: str) -> str | list[str]:
    if text == ALL:
        return ALL
    return [part for part in text.split(",") if part]


@frozen
class Person:
    """A person of the registry (``user_id`` is the PIN, unique across the site)."""

    user_id: str
    name: str = ""
    card: str = ""
    password: str = field(default="", repr=False)
    privilege: int = 0
    group: str = ""
    active: bool = True
    devices: str | list[str] = ALL
    notes: str = ""
    origin: str = ""
    origin_at: str = ""
    created_at: str = ""
    updated_at: str = ""

    def targets(self, device_id: str) -> bool:
        """Whether this person must be on ``device_id`` (when active)."""
        return self.devices == ALL or device_id in self.devices

    def user_fields(self) -> dict[str, Any]:
        """The fields of a ``user_upsert`` command for this person."""
        return {
            "user_id": self.user_id,
            "name": self.name,
            "privilege": self.privilege,
            "password": self.password,
            "card": self.card,
            "group": self.group,
        }

    def public(self) -> dict[str, Any]:
        """As the API shows it: never the password, only ``has_password``."""
        return {
            "user_id": self.user_id,
            "name": self.name,
            "card": self.card,
            "has_password": bool(self.password),
            "privilege": self.privilege,
            "group": self.group,
            "active": self.active,
            "devices": self.devices if self.devices == ALL else list(self.devices),
            "notes": self.notes,
            "origin": self.origin,
            "origin_at": self.origin_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@frozen
class NewTemplate:
    """A biometric record to keep for a person."""

    user_id: str
    kind: str  # finger, face, palm, userpic, biophoto
    index: int
    format: str
    data: bytes = field(repr=lambda b: f"<{len(b)} bytes>")
    valid: int = 1
    duress: int = 0
    source_table: str = ""
    source_device: str = ""


@frozen
class PersonTemplate:
    """A kept template (metadata; the bytes are read on their own)."""

    id: int
    user_id: str
    kind: str
    index: int
    format: str
    valid: int
    duress: int
    size: int
    digest: str
    source_table: str
    source_device: str
    received_at: str
    current: bool = True

    def public(self) -> dict[str, Any]:
        return {
            "template_id": str(self.id),
            "user_id": self.user_id,
            "kind": self.kind,
            "index": self.index,
            "format": self.format,
            "valid": self.valid,
            "duress": self.duress,
            "size": self.size,
            "digest": self.digest,
            "source": self.source_table,
            "source_device": self.source_device,
            "received_at": self.received_at,
            "current": self.current,
        }


@frozen
class SyncEntry:
    """Where one person stands on one device."""

    user_id: str
    device_id: str
    operation: str  # upsert | delete
    state: str  # in_step | pending | failed
    want: str = ""
    command_ids: tuple[str, ...] = ()
    detail: str = ""
    updated_at: str = ""

    def public(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "operation": self.operation,
            "state": self.state,
            "command_ids": list(self.command_ids),
            "detail": self.detail,
            "updated_at": self.updated_at,
        }
