"""Webhook records: a subscription and one delivery of the outbox."""

from __future__ import annotations

from typing import Any

from attrs import frozen

__all__ = ["Webhook", "Delivery", "DueDelivery", "DELIVERY_STATUSES", "pack_names", "unpack_names"]

DELIVERY_STATUSES = ("pending", "delivered", "failed")


def pack_names(names: tuple[str, ...] | list[str]) -> str:
    """``("attendance", "door")`` -> ``",attendance,door,"`` (``""`` = every name)."""
    return "," + ",".join(names) + "," if names else ""


def unpack_names(text: str) -> tuple[str, ...]:
    return tuple(n for n in (text or "").split(",") if n)


@frozen
class Webhook:
    id: int
    url: str
    secret: str
    types: tuple[str, ...]
    devices: tuple[str, ...]
    batch_max: int
    active: bool
    description: str = ""
    created_at: str = ""
    updated_at: str = ""

    def public(self, with_secret: bool = False) -> dict[str, Any]:
        """The API shape; the secret only when it was just created (shown once)."""
        body: dict[str, Any] = {
            "id": self.id,
            "url": self.url,
            "types": list(self.types),
            "devices": list(self.devices),
            "batch_max": self.batch_max,
            "active": self.active,
            "description": self.description,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if with_secret:
            body["secret"] = self.secret
        return body

    def wants(self, event_type: str, serial_number: str) -> bool:
        """The stream's ``?type=`` / ``?device=`` meaning (for tests and the ping)."""
        return (not self.types or event_type in self.types) and (
            not self.devices or serial_number in self.devices
        )


@frozen
class Delivery:
    id: int
    webhook_id: int
    event_id: int
    status: str
    attempts: int
    last_attempt_at: str | None
    next_attempt_at: str | None
    response_code: int | None
    error: str
    created_at: str

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "webhook_id": self.webhook_id,
            "event_id": self.event_id,
            "status": self.status,
            "attempts": self.attempts,
            "last_attempt_at": self.last_attempt_at,
            "next_attempt_at": self.next_attempt_at if self.status == "pending" else None,
            "response_code": self.response_code,
            "error": self.error,
            "created_at": self.created_at,
        }


@frozen
class DueDelivery:
    """A pending delivery handed to the sender: the event's stored JSON text as is."""

    id: int
    event_id: int
    data: str
    attempts: int
    first_attempt_at: str | None
