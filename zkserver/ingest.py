"""The one path every punch and event takes: commit first, then publish.

Push uploads and pull sessions both call :meth:`Ingest.save_punches`. The store writes the
punches and their events in one transaction; only when that has committed are the new
events handed to the broadcaster. A publish failure is logged and never fails the save;
a store failure propagates so the caller can answer 503 and the terminal resends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attrs import define
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from zkserver import metrics
from zkserver.broadcaster import Broadcaster
from zkserver.events import Event
from zkserver.records import Device, Punch
from zkserver.store.base import Store

__all__ = ["Ingest"]

log = Logger()


@define(eq=False)
class Ingest:
    store: Store
    broadcaster: Broadcaster

    async def save_punches(self, device: Device, punches: Sequence[Punch]) -> list[Event]:
        """Save punches once; publish the new ones after the commit. Returns the new events."""
        if not punches:
            return []
        started = metrics.now()
        events = await self.store.save_punches(device, punches)
        metrics.INGEST_COMMIT_SECONDS.observe(metrics.now() - started)
        metrics.PUNCHES_SAVED.labels(device.kind).inc(len(events))
        self.publish(events)
        return events

    async def record_event(self, payload: dict[str, Any], serial_number: str = "") -> Event:
        """Store a non-punch event (device_status, ...) and publish it after the commit."""
        event = await self.store.append_event(payload, serial_number)
        self.publish([event])
        return event

    def publish(self, events: Sequence[Event]) -> None:
        """Hand committed events to the broadcaster; never raises."""
        if not events:
            return
        try:
            d: Deferred[None] = self.broadcaster.publish(events)
        except Exception:
            log.failure("Publishing {count} committed events failed", count=len(events))
            return
        d.addErrback(
            lambda f: log.failure("Publishing {count} events failed", f, count=len(events))
        )
