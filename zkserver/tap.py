"""``twistd zkserver``: command-line options and the service tree.

Every option can also come from the environment (``ZKSERVER_<OPTION>``, e.g.
``ZKSERVER_TOKEN``, ``ZKSERVER_PUSH="tcp:8081 tcp:8082"``) or a TOML config file
(``--config``); the command line wins over the environment, which wins over the file.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python import usage

from zkserver import __version__
from zkserver.broadcaster import Broadcaster
from zkserver.devices import DeviceRegistry
from zkserver.http import make_site
from zkserver.ingest import Ingest
from zkserver.listener import Listener
from zkserver.push.resource import PushApp
from zkserver.store import open_store
from zkserver.store.base import Store
from zkserver.systemd import notify
from zkserver.web.app import WebApp
from zkserver.web.auth import TokenAuth, load_or_create_token
from zkserver.web.sse import EventStream

__all__ = ["Options", "makeService", "ZKServer"]

log = Logger()

LIST_OPTIONS = ("push", "web", "cors-origin")


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "zkserver: real-time attendance from ZKTeco push (ADMS/iclock HTTP) terminals "
        "and pull (binary protocol, TCP/UDP 4370) terminals, saved once and streamed to "
        "dashboards as Server-Sent Events. Pull terminals are added through the API "
        "(POST /api/devices with kind=pull) or `zkserver devices add`. Listeners take "
        "Twisted endpoint strings (tcp:8081, ssl:8443:privateKey=..., "
        "systemd:domain=INET:index=0). Every option may also be given as an environment "
        "variable ZKSERVER_<OPTION> (dashes become underscores) or in a TOML --config file."
    )
    optFlags = [
        ["auto-approve", None, "Accept push devices with unknown serial numbers at once "
         "(default: record them as pending until an operator approves them)."],
        ["no-pull", None, "Do not connect to pull (port 4370) devices from this process."],
        ["secure-cookie", None, "Mark the session cookie Secure (when served over HTTPS)."],
    ]
    optParameters = [
        ["config", "c", None, "TOML file with options (keys as the long option names)."],
        ["data-dir", "d", "./zkserver-data", "Directory for the SQLite database and token."],
        ["db", None, None, "Database: sqlite:PATH (default: DATA_DIR/zkserver.sqlite3) or "
         "postgresql://user@host:port/dbname (through txpostgres)."],
        ["token", None, None, "Access token for the web listener (default: generated once "
         "and kept in DATA_DIR/token)."],
        ["timezone", None, "", "Default time zone handed to terminals (IANA name such as "
         "Asia/Kolkata or an offset like +05:30; default: this server's zone)."],
        ["poll-delay", None, 10, "Seconds between a push terminal's getrequest polls "
         "(Delay=); a device silent for 3x this is marked offline.", int],
        ["error-delay", None, 30, "Seconds a terminal waits after a failure (ErrorDelay=).",
         int],
        ["heartbeat", None, 15.0, "Seconds between ': ping' comments on idle event streams.",
         float],
        ["sse-buffer", None, 1 << 20, "Bytes queued for a slow SSE client before it is "
         "dropped (it replays what it missed on reconnect).", int],
        ["max-body", None, 16 << 20, "Largest request body accepted, in bytes (413 above).",
         int],
    ]

    def __init__(self) -> None:
        super().__init__()
        for name in LIST_OPTIONS:
            self[name] = []

    def opt_push(self, endpoint: str) -> None:
        """Endpoint for push terminals (/iclock/* only); repeatable. Default: tcp:8081."""
        self["push"].append(endpoint)

    def opt_web(self, endpoint: str) -> None:
        """Endpoint for the API, event stream and page; repeatable. Default: tcp:5000."""
        self["web"].append(endpoint)

    def opt_cors_origin(self, origin: str) -> None:
        """An origin allowed to call the API from a browser (CORS); repeatable."""
        self["cors-origin"].append(origin)

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"zkserver {__version__}")
        raise SystemExit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        super().parseOptions(options)
        given = _given_names(options)
        defaults: dict[str, Any] = {}
        if self["config"]:
            defaults.update(_read_config(Path(self["config"])))
        defaults.update(_read_environment(self))
        for name, value in defaults.items():
            if name in given:
                continue
            if name in LIST_OPTIONS:
                self[name] = value if isinstance(value, list) else str(value).split()
            elif name in dict((f[0], f) for f in self.optFlags):
                self[name] = _truthy(value)
            else:
                self[name] = _coerce(self, name, value)
        self["push"] = self["push"] or ["tcp:8081"]
        self["web"] = self["web"] or ["tcp:5000"]


def _given_names(argv: list[str] | None) -> set[str]:
    names = set()
    for arg in argv or []:
        if arg.startswith("--"):
            names.add(arg[2:].split("=", 1)[0])
    return names


def _option_names(options: Options) -> list[str]:
    return [p[0] for p in options.optParameters] + [f[0] for f in options.optFlags] + list(
        LIST_OPTIONS
    )


def _read_environment(options: Options) -> dict[str, Any]:
    found = {}
    for name in _option_names(options):
        key = "ZKSERVER_" + name.upper().replace("-", "_")
        if key in os.environ and name != "config":
            found[name] = os.environ[key]
    return found


def _read_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise usage.UsageError(f"cannot read config file {path}: {e}") from None
    return {str(k).replace("_", "-"): v for k, v in data.items()}


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _coerce(options: Options, name: str, value: Any) -> Any:
    for param in options.optParameters:
        if param[0] == name and len(param) > 4 and param[4] is not None:
            try:
                return param[4](value)
            except (TypeError, ValueError):
                raise usage.UsageError(f"invalid value for {name}: {value!r}") from None
    return value


class ZKServer(MultiService):
    """The whole server: store, broadcaster, listeners and periodic jobs.

    The store connects (and migrates) when the service starts; until it is ready,
    terminals get 503 and resend, so a slow or absent database at start-up loses nothing.
    """

    def __init__(self, store: Store, broadcaster: Broadcaster, clock: IReactorTime) -> None:
        super().__init__()
        self.store = store
        self.broadcaster = broadcaster
        self.clock = clock
        self.ready: Deferred[None] = Deferred()
        self.push_listeners: list[Listener] = []
        self.web_listeners: list[Listener] = []
        self.pull: Any = None
        self.token = ""
        self._stopping = False

    def startService(self) -> None:
        super().startService()
        self._connect()

    def _connect(self) -> None:
        d = Deferred.fromCoroutine(self._start_store())
        d.addErrback(self._retry)

    async def _start_store(self) -> None:
        await self.store.start()
        self.broadcaster.last_published = await self.store.last_event_id()
        self.store.watch(self._on_remote_commit)
        log.info("Database ready (last event id {last})", last=self.broadcaster.last_published)
        if not self.ready.called:
            notify("READY=1\nSTATUS=serving")
            self.ready.callback(None)

    def _retry(self, failure: Any) -> None:
        if self._stopping:
            return
        log.failure("Database not ready; retrying in 5 s", failure)
        self.clock.callLater(5, self._connect)

    def _on_remote_commit(self, max_id: int) -> None:
        self.broadcaster.catch_up(max_id).addErrback(
            lambda f: log.failure("Catching up events from other processes failed", f)
        )

    def stopService(self) -> Deferred[None]:
        self._stopping = True
        notify("STOPPING=1")
        d = super().stopService() or succeed(None)
        d.addBoth(lambda _: self.store.stop())
        return d


def _log_job(what: str, job: Any, server: ZKServer) -> Any:
    """Run a periodic job once the store is ready, logging (never raising) its failures
    so the timer keeps going."""

    def run() -> Any:
        if not server.ready.called:
            return None
        try:
            d = Deferred.fromCoroutine(job()) if callable(job) else job
        except Exception:
            log.failure("Periodic job {what} failed", what=what)
            return None
        d.addErrback(lambda f: log.failure("Periodic job {what} failed", f, what=what))
        return d

    return run


def makeService(config: Options, reactor: Any = None) -> ZKServer:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    data_dir = Path(config["data-dir"]).absolute()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # holds keys
    store = open_store(config["db"] or "", str(data_dir), reactor)
    broadcaster = Broadcaster(source=store)
    ingest = Ingest(store=store, broadcaster=broadcaster)
    registry = DeviceRegistry(
        store=store,
        ingest=ingest,
        clock=reactor,
        auto_approve=bool(config["auto-approve"]),
        poll_delay=config["poll-delay"],
    )
    server = ZKServer(store, broadcaster, reactor)

    token = config["token"]
    if not token:
        token, created = load_or_create_token(data_dir)
        if created:
            log.info("Generated an access token in {path}", path=str(data_dir / "token"))
    server.token = token

    push_app = PushApp(
        store=store,
        registry=registry,
        ingest=ingest,
        clock=reactor,
        server_timezone=config["timezone"],
        delay=config["poll-delay"],
        error_delay=config["error-delay"],
        ready=lambda: server.ready.called,
    )
    push_site = make_site(push_app.resource(), max_body=config["max-body"])
    for endpoint in config["push"]:
        listener = Listener(endpoint, push_site, reactor)
        listener.setServiceParent(server)
        server.push_listeners.append(listener)

    pull = None
    if not config["no-pull"]:
        try:
            from zkserver.pull.manager import PullManager
        except ImportError:
            PullManager = None  # noqa: N806
        if PullManager is not None:
            pull = PullManager(store=store, ingest=ingest, registry=registry, clock=reactor)
            pull.setServiceParent(server)
            server.pull = pull

    web_app = WebApp(
        store=store,
        registry=registry,
        events=EventStream(broadcaster=broadcaster, store=store, max_buffer=config["sse-buffer"]),
        auth=TokenAuth(token),
        pull=pull,
        cors_origins=frozenset(config["cors-origin"]),
        secure_cookie=bool(config["secure-cookie"]),
        ready=lambda: server.ready.called,
    )
    web_site = make_site(web_app.resource(), max_body=config["max-body"], timeout=None)
    for endpoint in config["web"]:
        listener = Listener(endpoint, web_site, reactor)
        listener.setServiceParent(server)
        server.web_listeners.append(listener)
        log.info("Dashboard: {url}", url=_page_url(endpoint, token))

    TimerService(config["heartbeat"], broadcaster.heartbeat).setServiceParent(server)
    TimerService(
        max(1, config["poll-delay"] // 2),
        _log_job("presence", registry.mark_silent_offline, server),
    ).setServiceParent(server)
    return server


def _page_url(endpoint: str, token: str) -> str:
    parts = endpoint.split(":")
    if parts[0] in ("tcp", "ssl") and len(parts) > 1 and parts[1].isdigit():
        scheme = "https" if parts[0] == "ssl" else "http"
        host = "127.0.0.1"
        for part in parts[2:]:
            if part.startswith("interface="):
                host = part.split("=", 1)[1] or host
        return f"{scheme}://{host}:{parts[1]}/?token={token}"
    return f"{endpoint} (open / with ?token={token})"
