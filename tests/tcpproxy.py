"""A loopback TCP proxy for outage tests: put it between a client and a server, then
``cut()`` every connection (and refuse new ones) and ``restore()`` service.

    proxy = TCPProxy("127.0.0.1", 5432)
    port = await proxy.start()       # listens on 127.0.0.1:<port>
    proxy.cut()                      # the database "goes away"
    proxy.restore()                  # ... and comes back
    proxy.freeze()                   # or: connections stay open but nothing flows
    await proxy.stop()               # in teardown: waits until every socket is closed
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

__all__ = ["TCPProxy"]


class _Side(Protocol):
    """One end of a proxied connection; ``peer`` is the other end."""

    def __init__(self, proxy: TCPProxy) -> None:
        self.proxy = proxy
        self.peer: _Side | None = None
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.proxy._sides.discard(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()
        self.closed.callback(None)


class _Inbound(_Side):
    def connectionMade(self) -> None:
        self.proxy._sides.add(self)
        self.proxy._closing.append(self.closed)
        if self.proxy.is_cut:
            self.transport.abortConnection()
            return
        self.transport.pauseProducing()  # until the outbound side is connected
        endpoint = TCP4ClientEndpoint(self.proxy.reactor, self.proxy.host, self.proxy.port)
        outbound = _Side(self.proxy)
        outbound.peer = self
        d = endpoint.connect(_OneProtocol(outbound))
        d.addCallbacks(self._linked, self._failed)

    def _linked(self, outbound: _Side) -> None:
        self.proxy._sides.add(outbound)
        self.proxy._closing.append(outbound.closed)
        self.peer = outbound
        if self.proxy.is_cut or self.transport is None or not self.transport.connected:
            outbound.transport.abortConnection()
            self.transport.abortConnection()
            return
        if self.proxy.is_frozen:
            outbound.transport.pauseProducing()
        else:
            self.transport.resumeProducing()

    def _failed(self, failure: Failure) -> None:
        self.transport.abortConnection()


class _OneProtocol(Factory):
    def __init__(self, protocol: Protocol) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol_instance


class _InboundFactory(Factory):
    def __init__(self, proxy: TCPProxy) -> None:
        self.proxy = proxy

    def buildProtocol(self, addr: Any) -> Protocol:
        return _Inbound(self.proxy)


class TCPProxy:
    """Forward 127.0.0.1:<ephemeral port> to ``host:port``."""

    def __init__(self, host: str, port: int, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.host = host
        self.port = port
        self.is_cut = False
        self.is_frozen = False
        self._sides: set[_Side] = set()
        self._closing: list[Deferred[None]] = []
        self._listening: IListeningPort | None = None

    async def start(self) -> int:
        """Listen; return the local port."""
        endpoint = TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1")
        self._listening = await endpoint.listen(_InboundFactory(self))
        return self._listening.getHost().port

    @property
    def connections(self) -> int:
        """Open proxied sockets (both sides counted)."""
        return len(self._sides)

    def cut(self) -> None:
        """Drop every connection now and refuse new ones until :meth:`restore`."""
        self.is_cut = True
        for side in list(self._sides):
            if side.transport is not None:
                side.transport.abortConnection()

    def freeze(self) -> None:
        """Keep every connection open but forward nothing (a silent network); new
        connections are accepted and stall too."""
        self.is_frozen = True
        for side in list(self._sides):
            if side.transport is not None:
                side.transport.pauseProducing()

    def restore(self) -> None:
        """Accept and forward connections again (after :meth:`cut` or :meth:`freeze`)."""
        self.is_cut = False
        if self.is_frozen:
            self.is_frozen = False
            for side in list(self._sides):
                if side.transport is not None and side.transport.connected:
                    side.transport.resumeProducing()

    async def stop(self) -> None:
        """Stop listening, drop every connection and wait until all are closed."""
        self.cut()
        if self._listening is not None:
            await self._listening.stopListening()
            self._listening = None
        await DeferredList(self._closing)
