"""``--workers N``: N processes serving the same listening sockets (PostgreSQL only).

The process started by ``twistd zkserver --workers N`` binds every ``--push`` and ``--web``
endpoint itself, then starts N-1 more ``twistd -n zkserver`` processes with the same
options, each inheriting the bound listening sockets (``--worker push=FD,web=FD``) and
adopting them (``IReactorSocket.adoptStreamPort``) once its own database is ready: a
worker that is starting accepts nothing (it would answer 503), the others take the
connections meanwhile. The kernel hands each new connection to whichever process accepts
it first, so terminals and dashboards spread over all of them. Nothing else is shared in
memory; the database does the rest, exactly as for several independent servers on one
PostgreSQL (see zkserver/store/postgres.py):

- events committed by any process reach the SSE clients of every process (LISTEN/NOTIFY),
  and ids reach clients in commit order everywhere (the events advisory lock);
- each pull device is connected by exactly one process (an advisory lock per device).

A worker that exits is started again after a second; stopping the first process stops
them all (SIGTERM, then SIGKILL after 10 s). Their log lines are logged by the first
process, prefixed with the worker number. SQLite has one writer per database file:
``--workers`` above 1 with SQLite is refused at start-up.

Endpoints that are not plain stream sockets (``ssl:``) cannot be handed over like this:
with ``--workers``, put TLS in a proxy in front (refused at start-up otherwise).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

__all__ = ["AdoptedListener", "WorkerPool", "parse_worker_spec", "worker_argv"]

log = Logger()

TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
RESTART_DELAY = 1.0
STOP_TIMEOUT = 10.0


def parse_worker_spec(spec: str) -> list[tuple[str, int]]:
    """``push=5,web=6`` -> [("push", 5), ("web", 6)]."""
    found = []
    for part in spec.split(","):
        kind, _, fd = part.strip().partition("=")
        if kind not in ("push", "web") or not fd.isdigit():
            raise ValueError(f"bad --worker item {part!r} (expected push=FD or web=FD)")
        found.append((kind, int(fd)))
    return found


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The zkserver options for a worker: the first process's, without ``--workers`` and
    the listener endpoints (the worker inherits the bound sockets instead)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--workers", "--push", "--web", "--worker"):
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


class AdoptedListener(Service):
    """A listening socket inherited from the first process, served by this one once
    ``ready()`` has fired (the store is started and migrated).

    Until then this process accepts nothing: new connections wait in the shared accept
    queue and the processes already serving take them. A worker that accepted at once
    would answer every request it took during its start-up 503 (its database gate), so
    a burst of dashboards connecting while a worker starts (or restarts) would get 503s
    although other processes could serve them.
    """

    def __init__(
        self,
        description: str,
        fd: int,
        factory: Any,
        reactor: Any,
        ready: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        self.description = description
        self.fd = fd
        self.factory = factory
        self.reactor = reactor
        self.ready = ready
        self.port: Any = None
        self.listening: Deferred[Any] | None = None
        self._waiting: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self.listening = Deferred()
        if self.ready is None:
            self._adopt(None)
            return
        self._waiting = self.ready()
        self._waiting.addCallback(self._adopt)
        self._waiting.addErrback(self._not_adopted)

    def _adopt(self, _: object) -> None:
        self._waiting = None
        if not self.running or self.fd < 0:
            return
        sock = socket.socket(fileno=self.fd)
        family = sock.family
        sock.detach()
        # adoptStreamPort duplicates the descriptor; the inherited one is closed after.
        self.port = self.reactor.adoptStreamPort(self.fd, family, self.factory)
        os.close(self.fd)
        self.fd = -1
        log.info(
            "Serving inherited {description} listener ({address})",
            description=self.description,
            address=str(self.port.getHost()),
        )
        assert self.listening is not None
        self.listening.callback(self.port)

    def _not_adopted(self, failure: Any) -> None:
        if not failure.check(CancelledError):
            log.failure("Cannot serve the inherited {d} listener", failure, d=self.description)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.cancel()
        if self.fd >= 0:  # never adopted: nothing accepted on it here
            fd, self.fd = self.fd, -1
            os.close(fd)
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


class _Worker(ProcessProtocol):
    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.ended: Deferred[None] = Deferred()
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                log.info(
                    "worker {index}: {line}",
                    index=self.index,
                    line=line.decode("utf-8", "replace").rstrip(),
                )

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)
        self.pool._ended(self, reason)


class WorkerPool(Service):
    """Starts and supervises the N-1 other worker processes."""

    def __init__(
        self,
        count: int,
        argv: Sequence[str],
        listeners: Sequence[tuple[str, Any]],
        reactor: Any,
    ) -> None:
        self.count = count
        self.argv = list(argv)
        self.listeners = list(listeners)
        self.reactor = reactor
        self.workers: dict[int, _Worker] = {}
        self.transports: dict[int, Any] = {}
        self._stopping = False

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        waits = [listener.listening for _, listener in self.listeners]
        d = DeferredList([w for w in waits if w is not None], fireOnOneErrback=True)
        d.addCallback(self._spawn_all)
        d.addErrback(lambda f: log.failure("Cannot start the workers", f))

    def _spawn_all(self, _: object) -> None:
        for index in range(1, self.count):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        if self._stopping:
            return
        fds = {kind: listener.port.fileno() for kind, listener in self.listeners}
        spec = ",".join(f"{kind}={listener.port.fileno()}" for kind, listener in self.listeners)
        args = [
            sys.executable,
            "-c",
            TWISTD,
            "-n",
            "--pidfile=",
            "--logfile=-",
            "zkserver",
            *self.argv,
            "--worker",
            spec,
        ]
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        source = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = source + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        env["ZKSERVER_WORKER_INDEX"] = str(index)
        child_fds: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        for fd in fds.values():
            child_fds[fd] = fd
        worker = _Worker(self, index)
        self.workers[index] = worker
        self.transports[index] = self.reactor.spawnProcess(
            worker, sys.executable, args, env=env, childFDs=child_fds
        )
        log.info("Started worker {index} (pid {pid})", index=index, pid=self.transports[index].pid)

    def _ended(self, worker: _Worker, reason: Any) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
            self.transports.pop(worker.index, None)
        if not self._stopping:
            log.warn(
                "Worker {index} exited ({reason}); starting it again",
                index=worker.index,
                reason=str(reason.value),
            )
            self.reactor.callLater(RESTART_DELAY, self._spawn, worker.index)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self._stopping = True
        ended = []
        for index, transport in list(self.transports.items()):
            worker = self.workers[index]
            ended.append(worker.ended)
            try:
                transport.signalProcess("TERM")
            except Exception:  # already gone
                continue
            kill = self.reactor.callLater(STOP_TIMEOUT, _kill, transport)
            worker.ended.addBoth(_cancel_kill, kill)
        return DeferredList(ended)


def _cancel_kill(result: object, kill: Any) -> object:
    if kill.active():
        kill.cancel()
    return result


def _kill(transport: Any) -> None:
    try:
        transport.signalProcess("KILL")
    except Exception:
        pass
