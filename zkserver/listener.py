"""A listening endpoint as a service, exposing the port it bound (tests listen on port 0);
the accept queue and the open-files limit that thousands of connections need."""

from __future__ import annotations

import re
import resource
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger

__all__ = [
    "CannotStart",
    "Listener",
    "open_files_target",
    "raise_open_files_limit",
    "system_backlog",
    "with_backlog",
]

log = Logger()

#: The kernel's own ceiling for one process's descriptors when it cannot be read.
NR_OPEN_DEFAULT = 1 << 20


def open_files_target(soft: int, hard: int, nr_open: int) -> int:
    """The soft RLIMIT_NOFILE to run with: the hard limit (an unlimited hard limit is
    capped at the kernel's ``fs.nr_open``, above which setrlimit fails); never lower."""
    ceiling = nr_open if hard == resource.RLIM_INFINITY else min(hard, nr_open)
    return max(soft, ceiling) if soft != resource.RLIM_INFINITY else soft


def raise_open_files_limit(
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
    nr_open_path: str = "/proc/sys/fs/nr_open",
) -> int:
    """Raise this process's soft open-files limit to its hard limit and return the limit
    in force. Each dashboard stream holds a descriptor, and shells and service managers
    often start processes with a soft limit of 1,024 under a much higher hard one (as
    the Go runtime and nginx's ``worker_rlimit_nofile`` do, the server raises it itself;
    ``LimitNOFILE=`` or ``ulimit -Hn`` sets the hard one). ``--workers`` processes start
    with the raised limit and raise their own too."""
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    try:
        nr_open = int(Path(nr_open_path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        nr_open = NR_OPEN_DEFAULT
    target = open_files_target(soft, hard, nr_open)
    if target == soft:
        return soft
    try:
        setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as e:
        log.warn(
            "Cannot raise the open-files limit from {soft} to {target}: {error}",
            soft=soft,
            target=target,
            error=str(e),
        )
        return soft
    log.info("Open-files limit raised from {soft} to {target}", soft=soft, target=target)
    return target


#: Endpoint types whose description takes ``backlog=``.
_BACKLOG_KINDS = frozenset({"tcp", "tcp6", "ssl", "unix"})


def system_backlog() -> int:
    """The deepest accept queue the system gives a listening socket: Linux's
    ``net.core.somaxconn`` (read now), else ``socket.SOMAXCONN``."""
    try:
        return max(1, int(Path("/proc/sys/net/core/somaxconn").read_text()))
    except (OSError, ValueError):
        return socket.SOMAXCONN


def with_backlog(description: str, backlog: int | None = None) -> str:
    """``description`` with ``:backlog=N`` added (default :func:`system_backlog`) when its
    endpoint type takes one and it names none; an explicit ``backlog=`` is kept.

    Twisted listens with a backlog of 50. When thousands of dashboards reconnect at once
    (a restart, a network blip) the accept queue overflows within milliseconds and the
    kernel drops the SYNs; clients retry after 1 s, 3 s, 7 s, ... Measured
    (2026-11-29, 10,000 event streams opened at once over loopback): with 50, 3,248
    connections failed and the last stream opened after 58 s; with this machine's
    somaxconn (4,096) none failed and all were open in 2.2-2.5 s (load 2-3). The kernel
    caps the queue at ``net.core.somaxconn`` whatever is asked, so the default asks for
    exactly that (raise it for bursts larger than that; see README, *The event stream*).
    """
    parts = re.split(r"(?<!\\):", description)
    if parts[0].strip().lower() not in _BACKLOG_KINDS:
        return description
    if any(part.strip().lower().startswith("backlog=") for part in parts[1:]):
        return description
    return f"{description}:backlog={backlog if backlog is not None else system_backlog()}"


class CannotStart(SystemExit):
    """A start-up failure the operator must fix (a port in use, a data directory that
    cannot be written): ``twistd`` ends with this one line on standard error and exit
    status 1, not a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(f"zkserver: {message}")
        self.message = message


def _reason(error: BaseException) -> str:
    if isinstance(error, CannotListenError):
        error = error.socketError
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(error, IndexError):  # systemd: fewer sockets passed than the index
        return "no such inherited socket (LISTEN_FDS)"
    return str(error).strip() or type(error).__name__


def check_endpoint(reactor: Any, description: str) -> str | None:
    """Why ``description`` is no server endpoint string (None if it is one); nothing is
    bound."""
    try:
        serverFromString(reactor, with_backlog(description))
    except Exception as e:
        return _reason(e)
    return None


class Listener(Service):
    """Listen on a Twisted endpoint string (``tcp:8081``, ``systemd:domain=INET:index=0``).

    ``on_bound(port)`` is called once the port is bound (e.g. to log the page's URL).
    Binding happens in ``privilegedStartService`` (before twistd drops privileges); a
    failure to bind raises :class:`CannotStart` there, so ``twistd`` exits with that one
    line instead of running deaf. An endpoint that takes a listen backlog and names
    none gets the system's deepest (see :func:`with_backlog`).
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
        #: ``description`` as listened on (with the default backlog, see with_backlog).
        self.effective = description

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self.effective = with_backlog(self.description)
        failures: list[Any] = []
        try:
            endpoint = serverFromString(self.reactor, self.effective)
            self.listening = endpoint.listen(self.factory)
        except Exception as e:
            raise CannotStart(f"cannot listen on {self.description}: {_reason(e)}") from None
        self.listening.addCallbacks(self._bound, failures.append)
        if failures:
            error = failures[0].value
            raise CannotStart(f"cannot listen on {self.description}: {_reason(error)}")

    def startService(self) -> None:
        if self.listening is None:
            self.privilegedStartService()
        super().startService()

    def _bound(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        log.info(
            "Listening on {description} ({address})",
            description=self.effective,
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
