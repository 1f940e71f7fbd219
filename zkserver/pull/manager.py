"""All pull devices of this process: one :class:`PullDeviceService` each, and the
operations the API asks for (:class:`zkserver.web.app.PullControl`).

Once the store is ready (``ready()``, given by the server: the database is migrated) the
manager loads every approved pull device from the store and starts its service; a load
that fails after that (the database went away) is retried. Operations run on the device's
live session (through its one-request-at-a-time queue) or, when it is not connected, on a
short session.

Several processes: each service connects only while it holds the device's lock
(``Store.try_lock_device``, see :mod:`zkserver.store.base`; PostgreSQL advisory locks,
always held with SQLite), so exactly one process talks to each device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from zkserver.devices import DeviceRegistry
from zkserver.events import user_sync_payload
from zkserver.ingest import Ingest
from zkserver.pull.protocol import DatasetUnreadable, ZKSession
from zkserver.pull.service import PullDeviceService, same_link
from zkserver.records import Device
from zkserver.store.base import Store

__all__ = ["PullManager"]

log = Logger()


class PullManager(MultiService):
    """Starts, restarts and stops pull-device services; implements ``PullControl``.

    ``service_options`` go to every :class:`PullDeviceService` (request_timeout,
    idle_probe, initial_delay, max_delay, auth_failed_delay, batch_size, connector...).
    """

    def __init__(
        self,
        store: Store,
        ingest: Ingest,
        registry: DeviceRegistry,
        clock: Any,
        *,
        load_retry: float = 5.0,
        ready: Callable[[], Deferred[None]] | None = None,
        commands: Any = None,
        **service_options: Any,
    ) -> None:
        super().__init__()
        #: zkserver.commands.Commands: each device's service runs its queued commands.
        self.commands = commands
        if commands is not None:
            service_options["commands"] = commands
            commands.watch(self._command_queued)
        self.store = store
        self.ingest = ingest
        self.registry = registry
        self.clock = clock
        self.load_retry = load_retry
        self.ready = ready
        self._waiting: Deferred[None] | None = None
        self.service_options = service_options
        #: Running services by device id.
        self.devices: dict[str, PullDeviceService] = {}
        self._stopping: dict[str, Deferred[Any]] = {}
        self._load_call: Any = None
        self.loaded: Deferred[None] = Deferred()
        #: ``enrolled(device, fields)``: a person enrolled at a terminal's keypad (set by
        #: zkserver.tap to the person registry's hook).
        self.enrolled: Any = None

    # ------------------------------------------------------------------ life cycle

    def startService(self) -> None:  # noqa: N802
        super().startService()
        if self.ready is None:
            self._load()
            return
        self._waiting = waiting = self.ready()

        def load(_: Any) -> None:
            if self._waiting is waiting and self.running:
                self._waiting = None
                self._load()

        waiting.addCallback(load)

    def stopService(self) -> Deferred[None]:  # noqa: N802
        self._waiting = None
        if self._load_call is not None and self._load_call.active():
            self._load_call.cancel()
        d = super().stopService()
        return d if d is not None else succeed(None)

    def _load(self) -> None:
        self._load_call = None
        d = Deferred.fromCoroutine(self._load_devices())
        d.addErrback(self._load_failed)

    async def _load_devices(self) -> None:
        devices = await self.store.devices(kind="pull")
        if not self.running:
            return
        for device in devices:
            if device.approved and device.id not in self.devices:
                self._start(device)
        log.info("Pull devices: {count} started", count=len(self.devices))
        if not self.loaded.called:
            self.loaded.callback(None)

    def _load_failed(self, failure: Any) -> None:
        if not self.running:
            return
        log.warn(
            "Pull devices not loaded ({error}); retrying in {delay} s",
            error=str(failure.value) or type(failure.value).__name__,
            delay=self.load_retry,
        )
        self._load_call = self.clock.callLater(self.load_retry, self._load)

    def make_service(self, device: Device) -> PullDeviceService:
        """A (not started) service for ``device`` with this manager's options."""
        service = PullDeviceService(
            device,
            store=self.store,
            ingest=self.ingest,
            registry=self.registry,
            clock=self.clock,
            **self.service_options,
        )
        service.enrolled = self.enrolled
        return service

    def _start(self, device: Device) -> None:
        service = self.make_service(device)
        self.devices[device.id] = service
        previous = self._stopping.get(device.id)
        if previous is None:
            service.setServiceParent(self)
            return

        # wait until the old service has let go of the device (and its lock)
        def start(_: Any) -> None:
            if self.devices.get(device.id) is service and self.running:
                service.setServiceParent(self)

        previous.addBoth(start)

    def _stop(self, device_id: str, mark_offline: bool = True) -> Deferred[Any]:
        service = self.devices.pop(device_id, None)
        if service is None:
            return self._stopping.get(device_id) or succeed(None)
        service.mark_offline_on_stop = mark_offline
        d = self.removeService(service) if service.parent is self else None
        d = d if isinstance(d, Deferred) else succeed(None)
        self._stopping[device_id] = d

        def done(result: Any) -> Any:
            if self._stopping.get(device_id) is d:
                del self._stopping[device_id]
            return None

        d.addBoth(done)
        return d

    # ------------------------------------------------------------------ PullControl

    def device_changed(self, device: Device) -> None:
        """Start, restart (new host/port/key/transport) or update the device's service."""
        if device.kind != "pull" or not device.approved:
            self.device_removed(device.id)
            return
        if not self.running:
            return  # loaded from the store on start
        current = self.devices.get(device.id)
        if current is not None and same_link(current.device, device):
            current.device = device  # name, time zone...: no reconnect needed
            if current.session is not None:
                current.session.encoding = device.encoding  # names from now on (§B.4)
            return
        if current is not None:
            log.info("Pull device {name} changed; reconnecting", name=device.display_name)
            self._stop(device.id)
        self._start(device)

    def device_removed(self, device_id: str) -> None:
        """Stop the device's service (no status change: the device may be gone)."""
        self._stop(device_id, mark_offline=False)

    def _command_queued(self, command: Any) -> None:
        """A command was queued in this process: run it now if its device is connected."""
        service = self.devices.get(command.device_id)
        if service is not None and service.runner is not None:
            service.runner.kick()

    def _service_for(self, device: Device) -> PullDeviceService:
        service = self.devices.get(device.id)
        return service if service is not None else self.make_service(device)

    async def sync_time(self, device: Device) -> dict[str, Any]:
        """Set the device clock to its zone's current time."""
        return await self._service_for(device).sync_time()

    async def read_users(self, device: Device) -> dict[str, Any]:
        """Read the users from the device and replace the stored list."""

        async def read(session: ZKSession) -> list[Any]:
            return await session.read_users()

        service = self._service_for(device)
        try:
            users = await service.run_operation(read)
        except DatasetUnreadable as e:  # kept raw for an operator, then the API says why
            await service.keep_unreadable(f"pull:{e.what}", e.dataset, e.reason)
            raise
        await self.store.save_users(device.id, users, replace=True)
        current = await self.store.device(device.id) or device  # the serial may be new
        await self.ingest.record_event(
            user_sync_payload(current, [u.user_id for u in users]), current.serial_number
        )
        return {"users": len(users)}

    async def read_log(self, device: Device) -> dict[str, Any]:
        """Catch up now: {"records": read, "new": inserted}."""
        return await self._service_for(device).read_log()
