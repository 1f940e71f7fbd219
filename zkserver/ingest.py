"""The one path every punch and event takes: commit first, then publish.

Push uploads and pull sessions both call :meth:`Ingest.save_punches`. Each punch is first
given its instant (``timestamp_utc``), ambiguity flag and suspect-time reason
(:mod:`zkserver.localtime`), with the server's clock at receipt. The store writes the
punches and their events in one transaction; only when that has committed are the new
events handed to the broadcaster. A publish failure is logged and never fails the save;
a store failure propagates so the caller can answer 503 and the terminal resends.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from zkserver import metrics
from zkserver.broadcaster import Broadcaster
from zkserver.events import Event
from zkserver.localtime import OffsetSamples, TimePolicy, parse_utc, reading_offset
from zkserver.records import Device, Punch
from zkserver.store.base import Store

__all__ = ["Ingest"]

log = Logger()


#: A push upload of at most this many punches is a real-time one: its newest punch is a
#: clock-offset sample (a backlog sent after an outage is not).
REALTIME_UPLOAD = 3


@define(eq=False)
class Ingest:
    store: Store
    broadcaster: Broadcaster
    clock: IReactorTime | None = None  # None: the global reactor
    time_policy: TimePolicy = field(factory=TimePolicy)
    _offsets: dict[str, OffsetSamples] = field(factory=dict)
    _offset_saved: dict[str, int] = field(factory=dict)

    def now(self) -> datetime:
        """The server's clock (UTC)."""
        clock: Any = self.clock
        if clock is None:
            from twisted.internet import reactor as clock
        return datetime.fromtimestamp(clock.seconds(), UTC)

    def stamp(
        self, device: Device, punches: Sequence[Punch], received: datetime | None = None
    ) -> list[Punch]:
        """The punches with their instant, ambiguity and suspect reason filled in (from the
        stated ``time_offset``, else the device's zone, else the default zone)."""
        received = received or self.now()
        policy, zone = self.time_policy, device.timezone
        stamped = []
        for p in punches:
            got = policy.stamp(p.timestamp, zone, received, p.raw.get("time_offset"))
            stamped.append(  # not attrs.evolve: this runs per punch, positional is 4x faster
                Punch(
                    p.user_id,
                    p.timestamp,
                    p.status,
                    p.verify,
                    p.workcode,
                    p.raw,
                    got.timestamp_utc,
                    got.time_ambiguous,
                    got.suspect_time,
                )
            )
        return stamped

    async def save_punches(self, device: Device, punches: Sequence[Punch]) -> list[Event]:
        """Save punches once; publish the new ones after the commit. Returns the new events."""
        if not punches:
            return []
        received = self.now()
        started = metrics.now()
        events = await self.store.save_punches(device, self.stamp(device, punches, received))
        metrics.INGEST_COMMIT_SECONDS.observe(metrics.now() - started)
        metrics.PUNCHES_SAVED.labels(device.kind).inc(len(events))
        self.publish(events)
        if device.kind == "push" and events and len(punches) <= REALTIME_UPLOAD:
            # In the background: the terminal's reply must not wait for it.
            Deferred.fromCoroutine(self._push_clock_sample(device, events, received))
        return events

    async def _push_clock_sample(
        self, device: Device, events: Sequence[Event], received: datetime
    ) -> None:
        """A push terminal's clock offset: the median, over its recent real-time uploads,
        of (newest punch instant - receipt time); saved on the device when it changes."""
        instants = [parse_utc(e.payload.get("timestamp_utc")) for e in events]
        newest = max((i for i in instants if i is not None), default=None)
        if newest is None:
            return
        samples = self._offsets.setdefault(device.id, OffsetSamples())
        offset = samples.add(reading_offset(newest, received))
        if self._offset_saved.get(device.id, device.clock_offset_s) == offset:
            return
        self._offset_saved[device.id] = offset
        try:
            await self.store.update_device(device.id, clock_offset_s=offset)
        except Exception:
            self._offset_saved.pop(device.id, None)
            log.failure("Saving the clock offset of {serial} failed", serial=device.serial_number)

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
