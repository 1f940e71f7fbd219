"""Device life cycle: first sight, approval, presence (online/offline) and its events."""

from __future__ import annotations

from typing import Any

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from zkserver.clock import iso, parse_iso, utc_now
from zkserver.events import device_status_payload
from zkserver.ingest import Ingest
from zkserver.records import Device
from zkserver.store.base import DuplicateDevice, Store

__all__ = ["DeviceRegistry", "ACCEPTED_STATUSES"]

log = Logger()

ACCEPTED_STATUSES = frozenset({"online", "offline"})


@define(eq=False)
class DeviceRegistry:
    """Knows push devices by serial number and keeps their status true.

    ``poll_delay`` is the getrequest interval we hand terminals; a push device that
    sends nothing for ``silence_factor`` times that is marked offline.
    """

    store: Store
    ingest: Ingest
    clock: IReactorTime
    auto_approve: bool = False
    poll_delay: int = 10
    silence_factor: int = 3
    cache_seconds: float = 2.0
    _seen_written: dict[str, float] = field(factory=dict)
    _cache: dict[str, tuple[float, Device]] = field(factory=dict)

    async def push_device_seen(self, serial_number: str) -> Device:
        """The device behind a push request: registered (pending) on first sight,
        marked online when it was offline, ``last_seen`` refreshed (throttled)."""
        cached = self._cache.get(serial_number)
        if cached is not None and self.clock.seconds() - cached[0] < self.cache_seconds:
            if self.clock.seconds() - self._seen_written.get(cached[1].id, 0.0) < self.poll_delay:
                return cached[1]
        device = await self._seen(serial_number)
        if device.approved and device.status == "online":
            # Approved devices are cached briefly: at hundreds of uploads a second the
            # lookup is the costliest part of a request. Changes made through this process
            # forget the entry at once; other processes' changes show within cache_seconds.
            self._cache[serial_number] = (self.clock.seconds(), device)
        else:
            self._cache.pop(serial_number, None)
        return device

    def forget(self, device: Device) -> None:
        """Drop a cached device (after it was changed, approved, rejected or deleted)."""
        self._cache.pop(device.serial_number, None)

    async def _seen(self, serial_number: str) -> Device:
        device = await self.store.device_by_serial(serial_number)
        now = utc_now(self.clock)
        if device is None:
            device = await self._register(serial_number, now_text=iso(now))
            self._seen_written[device.id] = self.clock.seconds()
            return device
        if device.approved and device.status != "online":
            return await self.set_status(device, "online")
        if self.clock.seconds() - self._seen_written.get(device.id, 0.0) >= self.poll_delay:
            self._seen_written[device.id] = self.clock.seconds()
            updated = await self.store.update_device(device.id, last_seen=iso(now))
            return updated or device
        return device

    async def _register(self, serial_number: str, now_text: str) -> Device:
        status = "online" if self.auto_approve else "pending"
        try:
            device = await self.store.add_device(
                serial_number=serial_number,
                kind="push",
                status=status,
                approved=self.auto_approve,
            )
        except DuplicateDevice:  # another request (or process) registered it first
            existing = await self.store.device_by_serial(serial_number)
            assert existing is not None
            return existing
        device = await self.store.update_device(device.id, last_seen=now_text) or device
        log.info(
            "New push device {serial} registered as {status}", serial=serial_number, status=status
        )
        await self._announce(device, status)
        return device

    async def approve(self, device: Device) -> Device:
        """Let a pending (or rejected) device exchange data from now on."""
        recent = self._is_recent(device.last_seen) or device.kind == "pull"
        status = "online" if recent and device.kind == "push" else "offline"
        self.forget(device)
        updated = await self.store.update_device(device.id, approved=True, status=status)
        assert updated is not None
        log.info("Device {serial} approved", serial=device.serial_number)
        await self._announce(updated, status)
        return updated

    async def reject(self, device: Device) -> Device:
        self.forget(device)
        updated = await self.store.update_device(device.id, approved=False, status="rejected")
        assert updated is not None
        await self._announce(updated, "rejected")
        return updated

    async def set_status(
        self, device: Device, status: str, detail: str | None = None, **extra: Any
    ) -> Device:
        """Change a device's status and why (``status_detail``; None clears it), and publish
        a ``device_status`` event if either changed."""
        self.forget(device)
        now_text = iso(utc_now(self.clock))
        detail = detail or None
        fields: dict[str, Any] = {"status": status, "status_detail": detail}
        if status == "online":
            fields["last_seen"] = now_text
            self._seen_written[device.id] = self.clock.seconds()
        updated = await self.store.update_device(device.id, **fields, **extra) or device
        if device.status != status or device.status_detail != detail:
            log.info(
                "Device {serial} is {status}{why}",
                serial=device.serial_number or device.host,
                status=status,
                why=f" ({detail})" if detail else "",
            )
            await self._announce(updated, status)
        return updated

    async def mark_silent_offline(self) -> int:
        """Mark push devices offline that have been silent too long; returns how many."""
        count = 0
        for device in await self.store.devices(kind="push"):
            if device.status == "online" and not self._is_recent(device.last_seen):
                await self.set_status(device, "offline")
                count += 1
        return count

    def _is_recent(self, last_seen: str | None) -> bool:
        seen = parse_iso(last_seen)
        if seen is None:
            return False
        age = (utc_now(self.clock) - seen).total_seconds()
        # last_seen writes are throttled to one per poll_delay: allow for that.
        return age <= self.poll_delay * (self.silence_factor + 1)

    async def _announce(self, device: Device, status: str) -> None:
        try:
            await self.ingest.record_event(
                device_status_payload(device, status, device.last_seen), device.serial_number
            )
        except Exception:
            log.failure(
                "Could not record a device_status event for {serial}", serial=device.serial_number
            )
