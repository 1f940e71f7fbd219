"""Door, alarm and enrolment events of a pull session (EF_ALARM, EF_UNLOCK, EF_BUTTON,
EF_ENROLLUSER, EF_ENROLLFINGER): registered for when the terminal accepts them, decoded
by :mod:`zkserver.access`, kept with the operation log and published as stream events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from zkserver.access import PULL_EVENT_FLAGS, pull_event
from zkserver.pull.codec import EF_ATTLOG, EF_ENROLLFINGER, EF_ENROLLUSER
from zkserver.pull.protocol import CommandFailed

__all__ = ["register_device_events", "save_device_event"]

log = Logger()


async def register_device_events(session: Any, label: str) -> None:
    """REG_EVENT for attendance and the door/alarm/enrol events; a terminal that refuses
    those flags is registered for attendance alone."""
    try:
        await session.register_events(int(EF_ATTLOG) | PULL_EVENT_FLAGS)
    except CommandFailed:
        log.info("{name}: door/alarm events refused; attendance events only", name=label)
        await session.register_events()


async def save_device_event(service: Any, code: int, data: bytes, timestamp: str) -> None:
    """Keep one pull real-time event in the operation log and publish its stream event
    (one transaction: the operlog row, the event and its webhook outbox rows)."""
    event = pull_event(code, data, timestamp)
    if event is None:
        return
    device = service.device
    lock = getattr(service, "_device_event_lock", None)
    if lock is None:  # one save at a time per device: events keep the order they came in
        lock = service._device_event_lock = DeferredLock()
    await lock.acquire()
    try:
        # A terminal never sends a real-time event again, so two alike in one second (a
        # button pressed twice) are two events: the server's instant of receipt (taken
        # under the lock, after the previous save committed) keeps their log entries
        # apart, where the operation log skips an entry it already holds (push resends).
        received = datetime.now(UTC).isoformat(timespec="microseconds")
        entry = {
            "op": f"pull:{code}",
            "operator": str(event.fields.get("user_id", "")),
            "timestamp": timestamp,
            "obj": str(event.fields.get("door", "")),
            "values": [bytes(data).hex(), f"received={received}"],
            "raw": bytes(data).hex(),
        }
        events = await service.store.save_device_events(
            device.id, device.serial_number, [(entry, event.payload(device))]
        )
    except Exception:
        log.failure(
            "{name}: could not save a {type} event", name=device.display_name, type=event.type
        )
        return
    finally:
        lock.release()
    service.ingest.publish(events)
    enrolled = getattr(service, "enrolled", None)
    if enrolled is not None and code in (EF_ENROLLUSER, EF_ENROLLFINGER) and events:
        # a person enrolled at the keypad: the registry reads them (after this event)
        service.clock.callLater(0, enrolled, device, dict(event.fields))
