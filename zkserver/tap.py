"""``twistd zkserver``: command-line options and the service tree.

Every option can also come from the environment (``ZKSERVER_<OPTION>``, e.g.
``ZKSERVER_TOKEN``, ``ZKSERVER_PUSH="tcp:8081 tcp:8082"``) or a TOML config file
(``--config``); the command line wins over the environment, which wins over the file.
"""

from __future__ import annotations

import fcntl
import os
import tomllib
from functools import partial
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python import usage

from zkserver import __version__
from zkserver.broadcaster import Broadcaster
from zkserver.commands.service import Commands
from zkserver.devices import DeviceRegistry
from zkserver.gcpolicy import GCGovernor
from zkserver.hooks_setup import HOOK_FLAG_NAMES, HOOK_NUMBERS, setup_hooks
from zkserver.hooks_setup import OPT_FLAGS as HOOK_FLAGS
from zkserver.hooks_setup import OPT_PARAMETERS as HOOK_PARAMETERS
from zkserver.http import Gate, make_site, push_refusal, web_refusal
from zkserver.ingest import Ingest
from zkserver.listener import CannotStart, Listener, check_endpoint, raise_open_files_limit
from zkserver.localtime import TimePolicy, UnknownZone, parse_day_start, resolve_zone
from zkserver.periodic import PeriodicJob
from zkserver.persons.service import Persons
from zkserver.pull.drift import DriftFixer
from zkserver.pull.manager import PullManager
from zkserver.push.resource import PushApp
from zkserver.retention import EventRetention
from zkserver.sendpool import SendPool
from zkserver.store import SqliteStore, check_db, open_store, redact_db
from zkserver.store.base import Store
from zkserver.systemd import notify
from zkserver.web.app import WebApp
from zkserver.web.auth import TokenAuth, load_or_create_token
from zkserver.web.sse import EventStream
from zkserver.workers import AdoptedListener, WorkerPool, parse_worker_spec, worker_argv

__all__ = ["Options", "makeService", "ZKServer", "dashboard_url"]

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
        "variable ZKSERVER_<OPTION> (dashes become underscores; lists space-separated) or "
        "in a TOML --config file (ZKSERVER_CONFIG); the command line wins over the "
        "environment, which wins over the file."
    )
    optFlags: list[list[Any]] = [
        [
            "auto-approve",
            None,
            "Accept push devices with unknown serial numbers at once "
            "(default: record them as pending until an operator approves them).",
        ],
        ["no-pull", None, "Do not connect to pull (port 4370) devices from this process."],
        ["secure-cookie", None, "Mark the session cookie Secure (when served over HTTPS)."],
        *HOOK_FLAGS,
    ]
    optParameters: list[list[Any]] = [
        ["config", "c", None, "TOML file with options (keys as the long option names)."],
        ["data-dir", "d", "./zkserver-data", "Directory for the SQLite database and token."],
        [
            "db",
            None,
            None,
            "Database: sqlite:PATH (default: DATA_DIR/zkserver.sqlite3) or "
            "postgresql://user@host:port/dbname (through txpostgres).",
        ],
        [
            "token",
            None,
            None,
            "Access token for the web listener (default: generated once "
            "and kept in DATA_DIR/token).",
        ],
        [
            "timezone",
            None,
            "",
            "Default time zone handed to terminals (IANA name such as "
            "Asia/Kolkata or an offset like +05:30; default: this server's zone).",
        ],
        [
            "poll-delay",
            None,
            10,
            "Seconds between a push terminal's getrequest polls "
            "(Delay=); a device silent for 3x this is marked offline.",
        ],
        ["error-delay", None, 30, "Seconds a terminal waits after a failure (ErrorDelay=)."],
        ["heartbeat", None, 15.0, "Seconds between ': ping' comments on idle event streams."],
        [
            "sse-buffer",
            None,
            1 << 20,
            "Bytes queued for a slow SSE client before it is "
            "dropped (it replays what it missed on reconnect).",
        ],
        ["max-body", None, 16 << 20, "Largest request body accepted, in bytes (413 above)."],
        [
            "command-timeout",
            None,
            120.0,
            "Seconds a push terminal has to answer a command before it is sent again.",
        ],
        [
            "command-retries",
            None,
            3,
            "Times a command is sent in all before it expires unanswered.",
        ],
        [
            "command-ttl",
            None,
            86400.0,
            "Seconds a queued command waits for its device "
            "(offline, say) before it expires; 0 = forever.",
        ],
        [
            "fix-drift",
            None,
            0.0,
            "Set a pull terminal's clock right when the idle probe finds "
            "it off by more than this many seconds (at most once an hour per device); 0 = off.",
        ],
        [
            "enrolled-persons",
            None,
            "all",
            "Devices of a person first seen at a terminal (enrolled at its keypad): "
            "all (every terminal) or origin (that terminal only).",
        ],
        [
            "person-sync-interval",
            None,
            2.0,
            "Seconds between checks of the person sync "
            "(outcomes finished elsewhere, devices back online or new).",
        ],
        *HOOK_PARAMETERS,
        [
            "max-future",
            None,
            600,
            "A punch more than this many seconds ahead of the server's "
            "clock at receipt is flagged suspect_time.",
        ],
        [
            "max-past",
            None,
            400,
            "A punch more than this many days before its receipt is flagged suspect_time.",
        ],
        [
            "day-starts-at",
            None,
            "00:00",
            "Local time (HH:MM) at which a person's day begins "
            "in /api/days (e.g. 04:00 so that an evening shift ending at 02:00 is one day).",
        ],
        [
            "retain-events",
            None,
            30.0,
            "Days of events kept for stream replay "
            "(Last-Event-ID); older ones are pruned in small background batches; 0 = forever. "
            "Punches are kept regardless.",
        ],
        [
            "gc-thaw",
            None,
            3600.0,
            "Seconds between thaws of the objects frozen after full garbage collections "
            "(short collections with thousands of open streams; see zkserver/gcpolicy.py); "
            "0 = plain CPython collection.",
        ],
        [
            "send-threads",
            None,
            -1,
            "Helper threads that send the stream's bytes beside the reactor thread "
            "(the kernel's TCP work runs outside the GIL; see zkserver/sendpool.py); "
            "-1 = one fewer than the cores each process has (at most 3), 0 = none.",
        ],
        [
            "workers",
            None,
            1,
            "Processes serving the same listeners (PostgreSQL only): "
            "the first binds them and starts N-1 more; see zkserver/workers.py.",
        ],
        [
            "worker",
            None,
            None,
            "(internal) listening sockets inherited by a --workers process: push=FD,web=FD,...",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        for name in LIST_OPTIONS:
            self[name] = []
        self.given: set[str] = set()
        #: Where each option not left at its default came from (for error messages).
        self.sources: dict[str, str] = {}

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

    def parseOptions(self, options: list[str] | None = None) -> None:  # noqa: N802
        import sys

        self.argv = list(options) if options is not None else sys.argv[1:]
        # Record every option the command line sets, whatever its spelling (-d, -dX,
        # --data-dir X, --data-dir=X): those win over the environment and the file.
        self.given = set()
        for name, handler in list(self._dispatch.items()):
            self._dispatch[name] = _Recorded(handler, self.given)
        super().parseOptions(options)

    def postOptions(self) -> None:  # noqa: N802
        """Merge the sources (command line > environment > file > default) and check
        every value, naming its source when it is wrong."""
        if "config" not in self.given and os.environ.get("ZKSERVER_CONFIG"):
            self["config"] = os.environ["ZKSERVER_CONFIG"]
        from_file: dict[str, Any] = {}
        if self["config"]:
            from_file = _read_config(Path(self["config"]), set(_option_names(self)))
        for name in _option_names(self):
            if name == "config":
                continue
            key = "ZKSERVER_" + name.upper().replace("-", "_")
            if name in self.given:
                value, source = self[name], f"--{name} on the command line"
            elif os.environ.get(key, "").strip():  # empty: as if unset (as for the CLI)
                value, source = os.environ[key], f"environment variable {key}"
            elif name in from_file:
                value, source = from_file[name], f"{name} in {self['config']}"
            else:
                continue  # the default
            self[name] = _check(name, value, source)
            self.sources[name] = source
        self["push"] = self["push"] or ["tcp:8081"]
        self["web"] = self["web"] or ["tcp:5000"]
        self["time-policy"] = _time_policy(self)
        try:
            check_db(self["db"] or "")
        except ValueError as e:
            raise usage.UsageError(
                f"invalid value for db ({self.sources.get('db', 'default')}): {e}"
            ) from None
        _check_workers(self)
        if self["webhook-retry-min"] > self["webhook-retry-max"]:
            raise usage.UsageError(
                f"--webhook-retry-min ({self['webhook-retry-min']:g} s) must not be above"
                f" --webhook-retry-max ({self['webhook-retry-max']:g} s)"
            )
        if self["enrolled-persons"] not in ("all", "origin"):
            raise usage.UsageError(
                f"invalid value for enrolled-persons: {self['enrolled-persons']!r};"
                " expected all or origin"
            )
        if not self["worker"]:  # a --workers process binds nothing: it inherits sockets
            _check_endpoints(self)


def _check_endpoints(options: Options) -> None:
    """Each --push/--web endpoint string parses (its type is known, its port a number,
    a systemd: index names a socket passed in); binding comes later."""
    from twisted.internet import reactor

    for name in ("push", "web"):
        for endpoint in options[name]:
            problem = check_endpoint(reactor, endpoint)
            if problem is not None:
                source = options.sources.get(name, "default")
                raise usage.UsageError(
                    f"invalid value for {name} ({source}): {endpoint!r}; {problem}"
                )


def _time_policy(options: Options) -> TimePolicy:
    try:
        day_start = parse_day_start(str(options["day-starts-at"]))
    except ValueError as e:
        raise usage.UsageError(f"--day-starts-at: {e}") from None
    zone = str(options["timezone"] or "")
    if zone.strip():
        try:
            resolve_zone(zone)
        except UnknownZone as e:
            raise usage.UsageError(f"--timezone: {e}") from None
    return TimePolicy(
        default_zone=zone,
        max_future_s=int(options["max-future"]),
        max_past_days=int(options["max-past"]),
        day_starts_at=day_start,
    )


def _send_threads(options: Options) -> int:
    """``--send-threads``, with -1 resolved: the cores this process may use, shared by
    ``--workers`` processes, less the reactor thread's, at most 3."""
    wanted = int(options["send-threads"])
    if wanted >= 0:
        return wanted
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(0, min(3, cores // max(1, int(options["workers"])) - 1))


def _check_workers(options: Options) -> None:
    workers = int(options["workers"])
    options["workers"] = workers
    db = str(options["db"] or "")
    if workers > 1 and not db.startswith(("postgresql:", "postgres:")):
        raise usage.UsageError(
            f"--workers {workers} needs PostgreSQL (--db postgresql://...): SQLite has one "
            "writer per database file, so run one process with SQLite"
        )
    if workers > 1 and any(
        not e.startswith(("tcp:", "tcp6:", "unix:", "systemd:"))
        for e in options["push"] + options["web"]
    ):
        raise usage.UsageError(
            "--workers hands plain listening sockets (tcp:, tcp6:, unix:, systemd:) to its "
            "processes; put TLS in a proxy in front"
        )


class _Recorded:
    """An option handler that notes the option's name before running."""

    def __init__(self, handler: Any, given: set[str]) -> None:
        self.handler = handler
        self.given = given

    def __call__(self, name: str, value: Any = None) -> None:
        self.given.add(name)
        if isinstance(self.handler, usage.CoerceParameter):
            self.handler.dispatch(name, value)
        else:
            self.handler(name, value)


FLAG_OPTIONS = ("auto-approve", "no-pull", "secure-cookie", *HOOK_FLAG_NAMES)
#: Numeric options: (type, smallest value allowed).
NUMBER_OPTIONS: dict[str, tuple[type, float]] = {
    "poll-delay": (int, 1),
    "error-delay": (int, 0),
    "heartbeat": (float, 0.1),
    "sse-buffer": (int, 1),
    "max-body": (int, 1),
    "command-timeout": (float, 0.1),
    "command-retries": (int, 1),
    "command-ttl": (float, 0),
    "fix-drift": (float, 0),
    "person-sync-interval": (float, 0.1),
    **HOOK_NUMBERS,
    "max-future": (int, 0),
    "max-past": (int, 0),
    "workers": (int, 1),
    "send-threads": (int, -1),
    "gc-thaw": (float, 0),
    "retain-events": (float, 0),
}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _option_names(options: Options) -> list[str]:
    return (
        [p[0] for p in options.optParameters]
        + [f[0] for f in options.optFlags]
        + list(LIST_OPTIONS)
    )


def _read_config(path: Path, known: set[str]) -> dict[str, Any]:
    try:
        # utf-8-sig: a file saved by Windows Notepad starts with a byte order mark.
        data = tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise usage.UsageError(
            f"cannot read config file {path}: not UTF-8 (byte {e.start + 1} is "
            f"{e.object[e.start : e.start + 1]!r})"
        ) from None
    except OSError as e:
        raise usage.UsageError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise usage.UsageError(f"cannot read config file {path}: {e}") from None
    found = {}
    for key, value in data.items():
        name = str(key).replace("_", "-")
        if name not in known or name == "config":
            raise usage.UsageError(
                f"unknown option {key!r} in config file {path} (keys are the long option "
                "names, e.g. data-dir, poll-delay, push)"
            )
        found[name] = value
    return found


def _check(name: str, value: Any, source: str) -> Any:
    """``value`` for option ``name`` as the server uses it, or a UsageError naming the
    option, the source and the value."""

    def bad(expected: str) -> usage.UsageError:
        shown = "(not shown)" if name == "token" else repr(value)
        if name == "db" and isinstance(value, str):
            shown = repr(redact_db(value))
        return usage.UsageError(
            f"invalid value for {name} ({source}): {shown}; expected {expected}"
        )

    if name in LIST_OPTIONS:
        if isinstance(value, str):
            return value.split()
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise bad("a list of strings")
    if name in FLAG_OPTIONS:
        if isinstance(value, bool | int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise bad("true or false")
    if name in NUMBER_OPTIONS:
        kind, least = NUMBER_OPTIONS[name]
        what = f"{'an integer' if kind is int else 'a number'} >= {least:g}"
        if isinstance(value, bool) or (kind is int and isinstance(value, float)):
            raise bad(what)
        try:
            number = kind(value)
        except (TypeError, ValueError, OverflowError):
            raise bad(what) from None
        if number < least or number != number:  # NaN
            raise bad(what)
        return number
    if not isinstance(value, str):
        raise bad("a string")
    if name == "data-dir" and not value.strip():
        raise bad("a directory")  # "" would be the working directory
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
        self._ready_waiters: list[Deferred[None]] = []
        self.push_listeners: list[Any] = []  # Listener or AdoptedListener
        self.web_listeners: list[Any] = []
        self.retention: Any = None
        self.events: EventStream | None = None  # the web listener's stream (makeService)
        self.alerts: Any = None  # zkserver.alerts_service.AlertService (hooks_setup)
        self.webhooks: Any = None  # zkserver.webhooks.service.WebhookSender (hooks_setup)
        self.pull: Any = None
        self.commands: Any = None  # zkserver.commands.Commands, set by makeService
        self.token = ""
        self._stopping = False
        #: A SQLite database's file: no second server may use it at the same time.
        self.lock_path: Path | None = None
        self._lock_fd: int | None = None

    def privilegedStartService(self) -> None:
        self._claim_database()  # before binding: a refused second start binds nothing
        super().privilegedStartService()

    def startService(self) -> None:
        self._claim_database()
        # Before the workers (if any) are started: they inherit the raised limit.
        raise_open_files_limit()
        super().startService()
        self._connect()

    def _claim_database(self) -> None:
        """Hold an exclusive lock on ``lock_path`` while running (flock: released when
        the process ends, however it ends). A second server on the same SQLite file
        would connect the same pull terminals and prune the same events; it is refused
        with the first one's process id."""
        if self.lock_path is None or self._lock_fd is not None:
            return
        path = self.lock_path
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise CannotStart(
                f"cannot create {path}: {e.strerror} (its directory must be writable by this user)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise CannotStart(
                f"another zkserver (pid {holder}) is using {str(path)[: -len('.lock')]}; "
                "stop it first, or give this one its own --data-dir or --db"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release_database(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

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
            waiters, self._ready_waiters = self._ready_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def when_ready(self) -> Deferred[None]:
        """A new Deferred that fires once the store is started and migrated."""
        if self.ready.called:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._ready_waiters.append(waiter)
        return waiter

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
        d.addBoth(lambda _: self.broadcaster.sender.stop())
        d.addBoth(lambda _: self.store.stop())
        d.addBoth(lambda _: self._release_database())
        return d


def _when_ready(server: ZKServer, job: Any) -> Any:
    """``job`` as a periodic job that does nothing until the store is ready."""

    def run() -> Any:
        if not server.ready.called:
            return None
        return job()

    return run


def makeService(config: Options, reactor: Any = None) -> ZKServer:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    data_dir = Path(config["data-dir"]).absolute()
    if data_dir.exists() and not data_dir.is_dir():
        raise CannotStart(f"the data directory {data_dir} is not a directory")
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # holds keys
    except OSError as e:
        raise CannotStart(f"cannot create the data directory {data_dir}: {e.strerror}") from None
    policy = config.get("time-policy") or _time_policy(config)
    store = open_store(config["db"] or "", str(data_dir), reactor, time_policy=policy)
    send_threads = _send_threads(config)
    broadcaster = Broadcaster(source=store, clock=reactor, sender=SendPool(send_threads))
    ingest = Ingest(store=store, broadcaster=broadcaster, clock=reactor, time_policy=policy)
    registry = DeviceRegistry(
        store=store,
        ingest=ingest,
        clock=reactor,
        auto_approve=bool(config["auto-approve"]),
        poll_delay=config["poll-delay"],
    )
    server = ZKServer(store, broadcaster, reactor)
    if isinstance(store, SqliteStore):
        server.lock_path = Path(store.path + ".lock")
        if not server.lock_path.parent.is_dir():
            try:
                server.lock_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CannotStart(
                    f"cannot create {server.lock_path.parent}: {e.strerror}"
                ) from None
    commands = Commands(
        store=store,
        ingest=ingest,
        clock=reactor,
        timeout=max(0.1, config["command-timeout"]),
        retries=max(1, config["command-retries"]),
        ttl=max(0.0, config["command-ttl"]),
        server_timezone=config["timezone"],
    )
    server.commands = commands

    token = config["token"]
    shown_token = None  # the token is logged only by the start that generates it
    if not token:
        try:
            token, created = load_or_create_token(data_dir)
        except OSError as e:
            raise CannotStart(
                f"cannot keep the access token in {data_dir / 'token'}: {e.strerror} "
                "(make the data directory writable by this user, or pass --token)"
            ) from None
        if created:
            log.info("Generated an access token in {path}", path=str(data_dir / "token"))
            shown_token = token
    server.token = token

    push_app = PushApp(
        store=store,
        registry=registry,
        ingest=ingest,
        clock=reactor,
        commands=commands,
        server_timezone=config["timezone"],
        delay=config["poll-delay"],
        error_delay=config["error-delay"],
        ready=lambda: server.ready.called,
    )
    server_ready = lambda: server.ready.called  # noqa: E731
    push_site = make_site(
        Gate(push_app.resource(), server_ready, push_refusal), max_body=config["max-body"]
    )
    inherited = parse_worker_spec(config["worker"]) if config["worker"] else None
    for endpoint in [] if inherited else config["push"]:
        listener = Listener(endpoint, push_site, reactor)
        listener.setServiceParent(server)
        server.push_listeners.append(listener)

    pull: PullManager | None = None
    if not config["no-pull"]:
        pull = PullManager(
            store=store,
            ingest=ingest,
            registry=registry,
            clock=reactor,
            ready=server.when_ready,  # load the devices once the database is migrated
            commands=commands,
            fix_drift=DriftFixer(threshold=config["fix-drift"] or None),
        )
        pull.setServiceParent(server)
        server.pull = pull

    hooks = setup_hooks(server, config, store, ingest, pull, reactor)
    persons = Persons(
        store=store,
        commands=commands,
        ingest=ingest,
        clock=reactor,
        enrolled_persons=config["enrolled-persons"],
        pull=pull,
    )
    push_app.persons = persons
    if pull is not None:
        pull.enrolled = persons.pull_enrolled
    events = EventStream(broadcaster=broadcaster, store=store, max_buffer=config["sse-buffer"])
    server.events = events
    web_app = WebApp(
        store=store,
        registry=registry,
        events=events,
        auth=TokenAuth(token),
        pull=pull,
        commands=commands,
        cors_origins=frozenset(config["cors-origin"]),
        secure_cookie=bool(config["secure-cookie"]),
        ready=lambda: server.ready.called,
        hooks=hooks,
        time_policy=policy,
        persons=persons,
    )
    web_site = make_site(
        Gate(web_app.resource(), server_ready, web_refusal),
        max_body=config["max-body"],
        timeout=None,
    )
    for endpoint in [] if inherited else config["web"]:
        listener = Listener(
            endpoint,
            web_site,
            reactor,
            on_bound=partial(_log_dashboard, endpoint, token=shown_token, data_dir=data_dir),
        )
        listener.setServiceParent(server)
        server.web_listeners.append(listener)
    if inherited:  # a --workers process: serve the sockets the first one bound
        for kind, fd in inherited:
            site = push_site if kind == "push" else web_site
            adopted = AdoptedListener(f"{kind} fd {fd}", fd, site, reactor, ready=server.when_ready)
            adopted.setServiceParent(server)
            (server.push_listeners if kind == "push" else server.web_listeners).append(adopted)
    elif config["workers"] > 1:
        WorkerPool(
            config["workers"],
            # The helper threads resolved here (cores per process): a worker's own
            # options have no --workers, so it would count every core as its own.
            [*worker_argv(getattr(config, "argv", [])), "--send-threads", str(send_threads)],
            [("push", x) for x in server.push_listeners]
            + [("web", x) for x in server.web_listeners],
            reactor,
        ).setServiceParent(server)

    # Every periodic job logs its own failures and runs again next time (PeriodicJob).
    PeriodicJob("heartbeat", config["heartbeat"], broadcaster.heartbeat, reactor).setServiceParent(
        server
    )
    if config["gc-thaw"] > 0:
        GCGovernor(
            reactor, config["gc-thaw"], getattr(reactor, "callFromThread", None)
        ).setServiceParent(server)
    if config["retain-events"] > 0 and not inherited:  # the first process prunes
        retention = EventRetention(store=store, clock=reactor, days=config["retain-events"])
        server.retention = retention
        PeriodicJob("retention", 600, _when_ready(server, retention.run), reactor).setServiceParent(
            server
        )
    PeriodicJob(
        "presence",
        max(1, config["poll-delay"] // 2),
        _when_ready(server, registry.mark_silent_offline),
        reactor,
    ).setServiceParent(server)
    PeriodicJob(
        "persons",
        config["person-sync-interval"],
        _when_ready(server, persons.tick),
        reactor,
    ).setServiceParent(server)
    PeriodicJob(
        "commands",
        max(0.1, min(5.0, commands.timeout / 4)),
        _when_ready(server, commands.sweep),
        reactor,
    ).setServiceParent(server)
    return server


#: Endpoint types whose connections are TLS (the page is https).
TLS_ENDPOINTS = ("ssl", "tls", "le", "lets")


def dashboard_url(endpoint: str, address: Any, token: str | None = None) -> str | None:
    """The page's URL on a listener that bound ``address`` (its ``getHost()``), or None
    when that is no TCP address (a UNIX socket). A wildcard bind (``0.0.0.0``, ``::``)
    is named by the loopback address of its family; ``token`` is appended when given."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    ip = host.split("%", 1)[0]
    if ip in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif ip == "::":
        host = "::1"
    if ":" in host:  # IPv6: in brackets, a zone (fe80::1%eth0) as %25 (RFC 6874)
        host = "[" + host.replace("%", "%25", 1) + "]"
    kind = endpoint.split(":", 1)[0].strip().lower()
    scheme = "https" if kind in TLS_ENDPOINTS else "http"
    url = f"{scheme}://{host}:{port}/"
    return f"{url}?token={token}" if token else url


def _log_dashboard(endpoint: str, port: Any, token: str | None, data_dir: Path) -> None:
    address = port.getHost()
    url = dashboard_url(endpoint, address, token)
    if url is None:
        # A UNIX socket has no URL of its own (a reverse proxy serves it); the page is at
        # / on it, and the first start still shows the token it generated.
        path = getattr(address, "name", None)
        if isinstance(path, bytes):
            path = path.decode("utf-8", "replace")
        log.info(
            "Dashboard: UNIX socket {path} (behind a reverse proxy), page {page}",
            path=str(path or address),
            page=f"/?token={token}"
            if token
            else f"/ (the token: `zkserver token --data-dir {data_dir}`)",
        )
    elif token:
        log.info("Dashboard: {url}", url=url)
    else:
        log.info(
            "Dashboard: {url} (the token: `zkserver token --data-dir {data_dir}`)",
            url=url,
            data_dir=str(data_dir),
        )
