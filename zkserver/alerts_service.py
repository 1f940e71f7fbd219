"""Checks device health on a timer (injected clock) and announces ``device_alert`` events.

Each round reads the devices and the open alerts, works out the transitions
(:func:`zkserver.alerts.transitions`) and applies each through the store, which writes
the alert row, the event and its webhook outbox rows in one transaction and lets only
one process announce a given transition. Events are published after their commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from zkserver.alerts import AlertPolicy, OpenAlert, device_alert_payload, failing_conditions
from zkserver.alerts import transitions as alert_transitions
from zkserver.clock import parse_iso, utc_now
from zkserver.events import Event
from zkserver.localtime import TimePolicy
from zkserver.webhooks.service import iso_at

__all__ = ["AlertService"]

log = Logger()


@define(eq=False)
class AlertService(Service):
    store: Any
    clock: IReactorTime
    publish: Callable[[Sequence[Event]], None]
    policy: AlertPolicy = field(factory=AlertPolicy)
    #: The zones of devices (an event's ``timestamp`` is device-local time).
    time_policy: TimePolicy = field(factory=TimePolicy)
    interval: float = 30.0
    ready: Callable[[], bool] = lambda: True
    #: What sessions measured, by device id, merged into ``info`` (pull clock offsets).
    measured: Callable[[], dict[str, dict[str, Any]]] = lambda: {}
    _call: IDelayedCall | None = None
    _checking: Deferred[None] | None = None
    #: When this service started (silence is counted from then at the earliest).
    _started: float | None = None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._started = self.clock.seconds()
        self._call = self.clock.callLater(self.interval, self._tick)

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _tick(self) -> None:
        self._call = None
        d = self.check()
        d.addErrback(lambda f: log.failure("Device health check failed", f))
        d.addBoth(self._again)

    def _again(self, _: Any) -> None:
        if self.running:
            self._call = self.clock.callLater(self.interval, self._tick)

    def check(self) -> Deferred[None]:
        """One round now (tests call this after advancing their Clock)."""
        if self._checking is not None:
            return self._checking
        if not self.ready():
            return Deferred.fromCoroutine(_nothing())
        d = Deferred.fromCoroutine(self._check())

        def done(result: Any) -> Any:
            self._checking = None
            return result

        self._checking = d
        d.addBoth(done)
        return d

    async def _check(self) -> None:
        now = self.clock.seconds()
        moment = utc_now(self.clock)
        devices = await self.store.devices()
        held: dict[str, dict[str, OpenAlert]] = {}
        sent_text: dict[tuple[str, str], str] = {}
        for row in await self.store.open_alerts():
            sent_text[(row["device_id"], row["alert"])] = row["last_sent_at"]
            opened, sent = parse_iso(row["opened_at"]), parse_iso(row["last_sent_at"])
            held.setdefault(row["device_id"], {})[row["alert"]] = OpenAlert(
                row["alert"],
                row["detail"],
                opened.timestamp() if opened else now,
                sent.timestamp() if sent else now,
            )
        known = {device.id for device in devices}
        watching = None if self._started is None else datetime.fromtimestamp(self._started, UTC)
        measured = self.measured()
        for device in devices:
            if device.id in measured:
                device = attrs.evolve(device, info={**device.info, **measured[device.id]})
            current = held.get(device.id, {})
            failing = failing_conditions(device, moment, self.policy, watching)
            for change in alert_transitions(current, failing, now, self.policy):
                at = iso_at(now)
                last_sent = None
                if change.state == "open" and change.repeat:
                    last_sent = sent_text.get((device.id, change.alert))
                event = await self.store.apply_alert(
                    device.id,
                    change.alert,
                    change.state,
                    detail=change.detail,
                    at=at,
                    last_sent_at=last_sent,
                    payload=device_alert_payload(
                        device,
                        change.alert,
                        change.state,
                        change.detail,
                        datetime.fromtimestamp(now, UTC),
                        self.time_policy.zone(device.timezone),
                    ),
                    serial_number=device.serial_number,
                )
                if event is not None:
                    log.info(
                        "Device {name}: alert {alert} {state} ({detail})",
                        name=device.display_name,
                        alert=change.alert,
                        state=change.state,
                        detail=change.detail,
                    )
                    self.publish([event])
        for device_id in set(held) - known:  # a deleted device: its alerts close silently
            await self.store.drop_alerts(device_id)


async def _nothing() -> None:
    return None
