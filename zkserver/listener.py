"""A listening endpoint as a service, exposing the port it bound (tests listen on port 0)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger

__all__ = ["Listener"]

log = Logger()


class Listener(Service):
    """Listen on a Twisted endpoint string (``tcp:8081``, ``systemd:domain=INET:index=0``).

    ``on_bound(port)`` is called once the port is bound (e.g. to log the page's URL).
    Binding happens in ``privilegedStartService`` (before twistd drops privileges); a
    failure to bind raises there, so ``twistd`` exits with the error instead of running
    deaf.
    """

    def __init__(
        self,
        description: str,
        factory: IProtocolFactory,
        reactor: Any,
        on_bound: Callable[[IListeningPort], None] | None = None,
    ) -> None:
        self.description = description
        self.on_bound = on_bound
        self.factory = factory
        self.reactor = reactor
        self.port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        endpoint = serverFromString(self.reactor, self.description)
        self.listening = endpoint.listen(self.factory)
        failures: list[Any] = []
        self.listening.addCallbacks(self._bound, failures.append)
        if failures:
            failures[0].raiseException()

    def startService(self) -> None:
        if self.listening is None:
            self.privilegedStartService()
        super().startService()

    def _bound(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        log.info(
            "Listening on {description} ({address})",
            description=self.description,
            address=str(port.getHost()),
        )
        if self.on_bound is not None:
            try:
                self.on_bound(port)
            except Exception:
                log.failure("After binding {description}", description=self.description)
        return port

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self.listening = None
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None
