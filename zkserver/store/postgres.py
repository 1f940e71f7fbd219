"""The production store: PostgreSQL through txpostgres.

- Queries run on a txpostgres ``ConnectionPool`` whose connections (re)connect lazily:
  a connection that failed in a way that means "dead" is closed and reconnected the next
  time it is used, so the store recovers by itself after the database comes back.
- Every transaction that inserts events first takes ``pg_advisory_xact_lock(EVENTS_LOCK)``,
  so event ids are allocated and committed in the same order by every process, and ends
  with ``pg_notify`` (delivered at COMMIT) on the schema's channel.
- :meth:`PostgresStore.watch` listens on a dedicated connection that reconnects itself
  with backoff and probes the server while idle.
- Cancelling a call's Deferred never reaches txpostgres (it cannot take a cancel in the
  middle of a transaction): the caller gets CancelledError, the transaction runs to its
  end, and ``stop()`` waits for it (see :class:`~zkserver.store.sql.InFlight`).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import psycopg2
from twisted.internet import error as net_error
from twisted.internet import task
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredLock,
    TimeoutError,
    fail,
    maybeDeferred,
    succeed,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import reconnection
from txpostgres import txpostgres as txpg

from zkserver.events import Event
from zkserver.store.base import StoreUnavailable
from zkserver.store.commands import CommandScripts
from zkserver.store.dialect import (
    EVENTS_LOCK,
    SCHEMA_LOCK_SQL,
    Q,
    Rows,
    Script,
    chunks,
    params_for,
    render,
    row_source,
)
from zkserver.store.sql import EVENT_COLUMNS, InFlight, SQLStore
from zkserver.store.webhooks import OUTBOX_INSERT, OUTBOX_MATCH

__all__ = ["PostgresStore", "events_channel", "redact_db"]

_log = Logger()

T = TypeVar("T")

#: The NOTIFY channel of a database whose tables live in the ``public`` schema.
CHANNEL = "zkserver_events"

#: Failures meaning the connection (or the server) is gone: close, reconnect later, 503.
_DEAD = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    txpg.RollbackFailed,
    txpg.AlreadyConnected,
    reconnection.ConnectionDead,
    net_error.ConnectionDone,
    net_error.ConnectionLost,
    CancelledError,
    TimeoutError,
)

#: The deadline of the migration transaction (seconds; others have ``op_timeout``).
MIGRATION_TIMEOUT = 3600.0

#: Extra libpq settings: notice a silently dead peer within about a minute.
_CONNECT_KW = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def events_channel(schema: str) -> str:
    """The NOTIFY channel of one schema: deployments sharing a database stay apart."""
    if not schema or schema == "public":
        return CHANNEL
    name = f"{CHANNEL}_{schema}"
    if len(name.encode()) > 63:  # NAMEDATALEN - 1
        name = f"{CHANNEL}_{hashlib.sha1(schema.encode()).hexdigest()[:16]}"
    return name


def _connection_dead(conn: txpg.Connection, error: BaseException) -> bool:
    """Whether ``error`` means ``conn`` is unusable (rather than, say, a deadlock that the
    server reported on a healthy connection)."""
    if not _is_open(conn):
        return True
    if isinstance(error, txpg.RollbackFailed):
        return True
    if isinstance(error, CancelledError):
        # txpostgres reports the server's query_canceled (57014: pg_cancel_backend, a
        # statement_timeout) so, on a connection that is fine and already rolled back.
        # Running the transaction again would redo what was stopped on purpose (and
        # wait again on whatever it was waiting for).
        return False
    code = getattr(error, "pgcode", None)
    # Class 08: connection exception; 57P: operator intervention (shutdown, restart).
    return not code or code.startswith(("08", "57P"))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_open(conn: txpg.Connection) -> bool:
    raw = conn._connection
    return raw is not None and not raw.closed


def _close(conn: txpg.Connection) -> None:
    if conn._connection is not None:
        try:
            conn.close()
        except Exception:  # it is dead already; closing is best effort
            pass


class _Prepared:
    """The statements prepared on one PostgreSQL session (see ``Q.prepare``).

    A name is recorded once the round trip that carried its ``PREPARE`` was answered
    (:func:`_confirm`), never when it is only queued: a script that fails before sending
    leaves nothing recorded that the server lacks. ``PREPARE`` is not transactional (a
    statement prepared in a transaction that then failed stays), so after a failure
    nobody can tell which ones exist: the rollback also sends ``DEALLOCATE ALL`` and the
    record is cleared (:meth:`forget`). A new session (a reconnect: a new psycopg2
    connection under the same txpostgres one) starts with an empty record."""

    def __init__(self) -> None:
        self.session: object = None
        self.names: set[bytes] = set()

    def for_session(self, session: object) -> set[bytes]:
        if session is not self.session:
            self.session, self.names = session, set()
        return self.names

    def forget(self) -> None:
        self.names = set()


#: ``%s`` (a parameter) or ``%%`` (a literal %) in a statement's psycopg2 template.
_PLACEHOLDER = re.compile(rb"%([s%])")


def _prepare_sql(name: bytes, sql: str) -> bytes:
    """``PREPARE name AS`` the statement, its ``%s`` placeholders numbered ``$1``...."""
    count = 0

    def number(match: re.Match[bytes]) -> bytes:
        nonlocal count
        if match.group(1) == b"%":
            return b"%"
        count += 1
        return b"$%d" % count

    return b"PREPARE " + name + b" AS " + _PLACEHOLDER.sub(number, sql.encode())


class _Connection(txpg.Connection):
    """A txpostgres connection that tells when it has been lost and remembers the
    statements prepared on its current session."""

    def __init__(self, reactor: Any, cooperator: Any = None) -> None:
        super().__init__(reactor, cooperator)
        self.lost: Deferred[None] = Deferred()
        self.prepared = _Prepared()

    def _runInteraction(self, interaction: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """txpostgres' interaction, except that the interaction sends BEGIN and COMMIT
        itself (:func:`_drive` sends them with its first and last statements, saving two
        round trips), and that a transaction on a connection that died is not rolled back
        (txpostgres would log that ROLLBACK's failure). A ROLLBACK after a failed COMMIT,
        or before BEGIN was sent, only makes the server warn."""
        cursor = self.cursor()
        d = maybeDeferred(interaction, cursor, *args, **kwargs)

        def rollback(failure: Failure) -> Any:
            if not _is_open(self):
                return failure
            # Which of this transaction's PREPAREs ran is unknown (those of the round trip
            # that failed are not in the record yet, yet may exist): start over.
            rolled = cursor.execute("rollback; deallocate all")
            self.prepared.forget()
            rolled.addCallbacks(
                lambda _: failure, lambda rf: Failure(txpg.RollbackFailed(self, failure))
            )
            return rolled

        return d.addErrback(rollback)

    def doRead(self) -> None:
        """An idle connection is watched for NOTIFY; when the server goes away txpostgres
        raises here (logged by the reactor as an unhandled error). Close it quietly
        instead: the pool reconnects on next use, the listener at once."""
        try:
            super().doRead()
        except Exception as e:
            _log.info("PostgreSQL connection lost while idle: {error}", error=str(e).strip())
            _close(self)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if not self.lost.called:
            self.lost.callback(None)


async def _connect(
    reactor: Any, conn: txpg.Connection, dsn: str, timeout: float
) -> txpg.Connection:
    """Connect (or reconnect) ``conn``; libpq's connect_timeout is not applied in async
    mode, so a timer closes a connection attempt that hangs."""
    _close(conn)
    timer = reactor.callLater(timeout, _close, conn)
    try:
        await conn.connect(dsn, **_CONNECT_KW)
    finally:
        if timer.active():
            timer.cancel()
    return conn


def _statement(cursor: txpg.Cursor, query: Q, preparing: list[bytes]) -> bytes:
    """One statement with its parameters quoted by psycopg2, ready to send. A
    ``prepare`` statement becomes ``EXECUTE`` of its prepared name, preceded by its
    ``PREPARE`` when this session has not prepared it yet (the name is then appended to
    ``preparing``, for the caller to confirm once the server has answered)."""
    sql = render(query.sql, "postgresql")
    params = params_for(query)
    connection = getattr(cursor, "_connection", None)
    record: _Prepared | None = getattr(connection, "prepared", None)
    if not query.prepare or not params or record is None:
        return bytes(cursor.mogrify(sql, params))
    name = b"zk_" + hashlib.blake2b(sql.encode(), digest_size=8).hexdigest().encode()
    run = (
        b"EXECUTE "
        + name
        + bytes(cursor.mogrify(" (" + ", ".join(["%s"] * len(params)) + ")", params))
    )
    prepared = record.for_session(connection._connection)  # type: ignore[union-attr]
    if name in prepared or name in preparing:
        return run
    preparing.append(name)
    return _prepare_sql(name, sql) + b";\n" + run


class _Transaction(Generic[T]):
    """A transaction script on its way to the server, and how far it got.

    Its first statement is computed once and kept until the server has answered it: a
    connection found dead at the first round trip (a stale socket after a database
    restart) committed nothing unless COMMIT went with it, and the script has only
    computed that statement, so the pool may send it again on a new connection
    (:attr:`retryable`)."""

    def __init__(self, script: Script[T]) -> None:
        self.script = script
        self.first: Q | None = None
        #: Nothing answered and no COMMIT sent yet.
        self.retryable = True


async def _drive(cursor: txpg.Cursor, tx: _Transaction[T]) -> T:
    """Run a transaction script on a txpostgres cursor: BEGIN, its statements, COMMIT.

    Statements travel as one query string per round trip (the simple query protocol runs
    them in order, in this transaction, and stops at the first error; psycopg2 keeps the
    rows of the last). BEGIN goes with the first statement; a statement whose rows the
    script does not read (``Q(..., fetch=False)``) goes with the next one, or with COMMIT.
    So a transaction takes one round trip per statement whose rows it reads, plus one
    for COMMIT. The caller (:meth:`_Connection._runInteraction`) rolls back on failure.
    """
    script = tx.script
    pending = [b"BEGIN"]
    preparing: list[bytes] = []  # PREPAREs in ``pending``
    if tx.first is None:
        try:
            tx.first = next(script)
        except StopIteration as stop:  # nothing to run: nothing to send
            script.close()
            result: T = stop.value
            return result
    query = tx.first
    while True:
        if query.after_commit:
            return await _commit_then(cursor, tx, pending, query, preparing)
        pending.append(_statement(cursor, query, preparing))
        rows: Rows = []
        if query.fetch:
            await cursor.execute(b";\n".join(pending))
            tx.retryable = False
            pending = []
            _confirm(cursor, preparing)
            if cursor.description is not None:
                rows = cursor.fetchall()
        try:
            query = script.send(rows)
        except StopIteration as stop:
            result = stop.value
            break
    pending.append(b"COMMIT")
    tx.retryable = False
    await cursor.execute(b";\n".join(pending))
    _confirm(cursor, preparing)
    return result


async def _commit_then(
    cursor: txpg.Cursor, tx: _Transaction[T], pending: list[bytes], query: Q, preparing: list[bytes]
) -> T:
    """COMMIT, then the script's ``after_commit`` statement, in one round trip; the script
    gets its rows and must end."""
    pending.append(b"COMMIT")
    tx.retryable = False
    pending.append(_statement(cursor, query, preparing))
    await cursor.execute(b";\n".join(pending))
    _confirm(cursor, preparing)
    rows: Rows = cursor.fetchall() if cursor.description is not None else []
    try:
        tx.script.send(rows)
    except StopIteration as stop:
        result: T = stop.value
        return result
    tx.script.close()
    raise RuntimeError("a transaction script went on after its after-commit statement")


def _confirm(cursor: txpg.Cursor, preparing: list[bytes]) -> None:
    """The server answered the round trip that carried these PREPAREs."""
    connection = getattr(cursor, "_connection", None)
    record: _Prepared | None = getattr(connection, "prepared", None)
    if preparing and record is not None:
        record.for_session(connection._connection).update(preparing)  # type: ignore[union-attr]
    preparing.clear()


class _Pool(txpg.ConnectionPool):
    """txpostgres' pool with lazy (re)connection and a per-transaction deadline."""

    log = Logger()

    def __init__(
        self, reactor: Any, dsn: str, size: int, connect_timeout: float, op_timeout: float
    ) -> None:
        self.reactor = reactor
        self.connectionFactory = _Connection
        super().__init__(None, dsn, min=size)
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.op_timeout = op_timeout

    def _runInteraction(self, interaction: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        conn = self.connections.pop()
        d = Deferred.fromCoroutine(self._use(conn, interaction, *args, **kwargs))
        return d.addBoth(self._putBackAndPassthrough, conn)

    async def _use(
        self,
        conn: txpg.Connection,
        interaction: Any,
        *args: Any,
        op_timeout: float | None = None,
        retry: Callable[[], bool] = lambda: False,
        **kw: Any,
    ) -> Any:
        """Run ``interaction`` on ``conn``, connecting it first if needed.

        A connection found dead (a stale socket after a database restart) is replaced
        once at once when ``retry()`` says the transaction may run again: nothing of it
        can have committed and the script can take it from the start."""

        def run(cursor: txpg.Cursor) -> Any:
            return interaction(cursor, *args, **kw)

        for attempt in (1, 2):
            if not _is_open(conn):
                try:
                    await _connect(self.reactor, conn, self.dsn, self.connect_timeout)
                except Exception:
                    _close(conn)
                    raise
            timer = self.reactor.callLater(op_timeout or self.op_timeout, self._expire, conn)
            try:
                return await conn.runInteraction(run)
            except _DEAD as e:
                if not _connection_dead(conn, e):
                    raise  # e.g. a deadlock: the connection is fine
                _close(conn)
                # The server probably went away for every connection: reconnect them too.
                for idle in list(self.connections):
                    _close(idle)
                if attempt == 2 or not retry():
                    raise
            finally:
                if timer.active():
                    timer.cancel()
        raise AssertionError("unreachable")

    def _expire(self, conn: txpg.Connection) -> None:
        self.log.warn(
            "PostgreSQL transaction took longer than {timeout}s; closing its connection",
            timeout=self.op_timeout,
        )
        _close(conn)

    def close(self) -> None:
        for conn in self.connections:
            _close(conn)


class _Listener:
    """LISTEN on a dedicated connection; reconnect with backoff; probe while idle."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        dsn: str,
        channel: str,
        notified: Callable[[int, str], None],
        reconnected: Callable[[], Any],
        connect_timeout: float,
        probe_interval: float,
    ) -> None:
        self.reactor = reactor
        self.dsn = dsn
        self.channel = channel
        self.notified = notified
        self.reconnected = reconnected
        self.connect_timeout = connect_timeout
        self.probe_interval = probe_interval
        self.connected = False
        self._running = False
        self._conn: _Connection | None = None
        self._sleep: Deferred[None] | None = None
        self._done: Deferred[None] | None = None

    def start(self) -> None:
        if not self._running:
            self._running = True
            self._done = Deferred.fromCoroutine(self._loop())
            self._done.addErrback(lambda f: self.log.failure("LISTEN loop crashed", f))

    def stop(self) -> Deferred[None]:
        self._running = False
        if self._sleep is not None:
            self._sleep.cancel()
        if self._conn is not None:
            _close(self._conn)
        return self._done if self._done is not None else succeed(None)

    async def _loop(self) -> None:
        delay, first = 0.25, True
        while self._running:
            conn = _Connection(self.reactor)
            self._conn = conn
            try:
                await _connect(self.reactor, conn, self.dsn, self.connect_timeout)
                conn.addNotifyObserver(self._on_notify)
                await conn.runOperation("LISTEN " + _quote_ident(self.channel))
            except Exception as e:
                _close(conn)
                if not self._running:
                    break
                self.log.warn(
                    "LISTEN {channel}: cannot connect ({error}); retrying in {delay}s",
                    channel=self.channel,
                    error=str(e).strip(),
                    delay=delay,
                )
                await self._pause(delay)
                delay = min(delay * 2, 10.0)
                continue
            self.connected = True
            delay = 0.25
            if not first:
                self.log.info("LISTEN {channel}: reconnected", channel=self.channel)
                self.reconnected()
            first = False
            probe = task.LoopingCall(self._probe, conn)
            probe.clock = self.reactor
            probe.start(self.probe_interval, now=False).addErrback(lambda f: None)
            await conn.lost
            self.connected = False
            if probe.running:
                probe.stop()
            _close(conn)
            if self._running:
                self.log.warn("LISTEN {channel}: connection lost", channel=self.channel)
        self._conn = None

    async def _pause(self, seconds: float) -> None:
        self._sleep = task.deferLater(self.reactor, seconds, lambda: None)
        try:
            await self._sleep
        except CancelledError:
            pass
        finally:
            self._sleep = None

    def _probe(self, conn: _Connection) -> Deferred[None]:
        """A silent peer is only noticed by asking: close the connection if no answer."""
        timer = self.reactor.callLater(self.connect_timeout, _close, conn)

        def answered(result: Any) -> None:
            if timer.active():
                timer.cancel()
            if isinstance(result, Failure):
                _close(conn)

        return conn.runOperation("SELECT 1").addBoth(answered)

    def _on_notify(self, notify: Any) -> None:
        if notify.channel != self.channel:
            return
        origin, _, number = str(notify.payload).rpartition(":")
        try:
            max_id = int(number)
        except ValueError:
            self.log.warn("Ignoring NOTIFY {payload!r}", payload=notify.payload)
            return
        self.notified(max_id, origin)


#: The first key of pull-device advisory locks: this schema's device-lock namespace.
DEVICE_LOCK_SPACE = "hashtext('zkdevice:' || current_schema())"


def device_lock_key(device_id: str) -> int:
    """The second (int4) advisory-lock key for a pull device."""
    digest = hashlib.sha256(device_id.encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


class _DeviceLocks:
    """Session-level advisory locks, one per pull device, on one dedicated connection.

    Whoever holds a device's lock connects it; if this connection dies, PostgreSQL
    releases its locks and another process takes the devices over.
    """

    log = Logger()

    def __init__(self, reactor: Any, dsn: str, connect_timeout: float) -> None:
        self.reactor = reactor
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.conn: _Connection | None = None
        self.held: set[str] = set()
        self.lock = DeferredLock()
        #: Set by :meth:`close` (the store stops): a call still queued must not connect.
        self.closed = False

    async def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if self.closed:
            raise StoreUnavailable("device lock: the store is not running")
        conn = self.conn
        try:
            if conn is None or not _is_open(conn):
                self.held.clear()  # a dead session released everything it held
                conn = self.conn = _Connection(self.reactor)
                await _connect(self.reactor, conn, self.dsn, self.connect_timeout)
            return await conn.runQuery(sql, params)
        except Exception as e:
            if conn is not None and _connection_dead(conn, e):
                _close(conn)
                self.held.clear()
            raise StoreUnavailable(f"device lock: {e}") from e

    async def try_lock(self, device_id: str) -> bool:
        key = (device_lock_key(device_id),)
        if device_id in self.held:
            await self._query("SELECT 1")  # still the same session, so still held?
            if device_id in self.held:
                return True
        rows = await self._query(f"SELECT pg_try_advisory_lock({DEVICE_LOCK_SPACE}, %s)", key)
        if rows and rows[0][0]:
            self.held.add(device_id)
            return True
        return False

    async def unlock(self, device_id: str) -> None:
        if device_id not in self.held:
            return
        self.held.discard(device_id)
        await self._query(
            f"SELECT pg_advisory_unlock({DEVICE_LOCK_SPACE}, %s)", (device_lock_key(device_id),)
        )

    def close(self) -> None:
        self.closed = True
        self.held.clear()
        if self.conn is not None:
            _close(self.conn)
            self.conn = None


def redact_db(db: str) -> str:
    """``db`` with the password of a URL replaced by ``***`` (for logs and errors)."""
    head, sep, rest = db.partition("://")
    if not sep:
        return db
    authority, slash, tail = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at:  # a / in the password: the user information ends at the last @ before ?
        userinfo, at, host = rest.partition("?")[0].rpartition("@")
        slash, tail = "", rest[len(userinfo) + len(at) + len(host) :]
    if not at or ":" not in userinfo:
        return db
    return f"{head}://{userinfo.split(':', 1)[0]}:***@{host}{slash}{tail}"


class PostgresStore(CommandScripts, SQLStore):
    """:class:`~zkserver.store.base.Store` on PostgreSQL (txpostgres)."""

    dialect = "postgresql"
    _integrity_errors = (psycopg2.IntegrityError,)
    log = Logger()

    def __init__(
        self,
        dsn: str,
        reactor: Any = None,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
        op_timeout: float = 30.0,
        probe_interval: float = 15.0,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.dsn = dsn
        self._reactor = reactor
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._op_timeout = op_timeout
        self._probe_interval = probe_interval
        self._pool: _Pool | None = None
        self._in_flight = InFlight()
        self._watchers: list[Callable[[int], None]] = []
        self._listener: _Listener | None = None
        self.channel = CHANNEL
        self._device_locks = _DeviceLocks(reactor, dsn, connect_timeout)
        #: The events' id sequence (schema-qualified; read at start).
        self._events_sequence = "events_id_seq"
        #: Whether one transaction's ids are consecutive (the sequence steps by 1 and
        #: caches none, so no session holds ids ahead): read at start with the name.
        self._consecutive_ids = False
        #: Tags this store's NOTIFYs so that its own watcher can ignore them.
        self.origin = uuid.uuid4().hex[:12]

    def __repr__(self) -> str:
        return f"<PostgresStore {redact_db(self.dsn)}>"

    # --- PostgreSQL-only statements in the shared scripts ---------------------------
    def _lock_events(self) -> Iterator[Q]:
        yield Q(SCHEMA_LOCK_SQL, (EVENTS_LOCK,), fetch=False)

    def _notify_events(self, max_id: int) -> Iterator[Q]:
        # "<origin>:<id>": the committing process already publishes its own events, so its
        # watcher skips its own notifications instead of reading them back.
        yield Q("SELECT pg_notify(%s, %s)", (self.channel, f"{self.origin}:{max_id}"), fetch=False)

    def _insert_attendance(
        self, new: list[tuple[dict[str, Any], str]], serial_number: str, now: str
    ) -> Script[list[Event]]:
        """The end of a punch transaction in one round trip: each chunk's events and
        their outbox rows in one statement, NOTIFY, COMMIT, and after it ``currval`` of
        the events' id sequence, which this session's last insert set: the ids are the
        ``len(new)`` up to it, in ``n`` order, since every event insert takes the events
        lock first (so no other session allocates ids in between) and inserts its rows
        in order. The lock is released by that COMMIT, within the same round trip."""
        if not self._consecutive_ids:  # ids ahead in other sessions' caches: read them
            return (yield from super()._insert_attendance(new, serial_number, now))
        for chunk in chunks(new):
            source, params = row_source(
                self.dialect, EVENT_COLUMNS, [(n, text) for n, (_, text) in enumerate(chunk)]
            )
            yield Q(
                "WITH e AS (INSERT INTO events (type, serial_number, payload, created_at)"
                f" SELECT 'attendance', %s, v.payload, %s FROM {source} ORDER BY v.n"
                f" RETURNING id, type, serial_number) {OUTBOX_INSERT} FROM e, webhooks w"
                f" WHERE {OUTBOX_MATCH}",
                (serial_number, now, *params, now, now),
                fetch=False,
                prepare=True,
            )
        sequence = self._events_sequence
        yield Q(
            "SELECT pg_notify(%s, %s || ':' || currval(%s))",
            (self.channel, self.origin, sequence),
            fetch=False,
        )
        rows = yield Q("SELECT currval(%s)", (sequence,), after_commit=True)
        last = int(rows[0][0])
        first = last - len(new) + 1
        return [
            Event(first + n, "attendance", payload, serial_number, data=text)
            for n, (payload, text) in enumerate(new)
        ]

    # --- life cycle -----------------------------------------------------------------
    def start(self) -> Deferred[None]:
        if self._pool is not None:
            return succeed(None)
        self._device_locks.closed = False
        self._pool = _Pool(
            self._reactor, self.dsn, self._pool_size, self._connect_timeout, self._op_timeout
        )
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        try:
            # Migrations may fill existing rows (0004 reads every punch): no 30 s deadline.
            applied = await self._run(self._migrate(), op_timeout=MIGRATION_TIMEOUT)

            def schema() -> Script[tuple[str, str, bool]]:
                rows = yield Q(
                    "SELECT current_schema(), s.seqrelid::regclass::text,"
                    " s.seqincrement = 1 AND s.seqcache = 1 FROM pg_sequence s"
                    " WHERE s.seqrelid = pg_get_serial_sequence('events', 'id')::regclass"
                )
                return rows[0][0] or "", rows[0][1], bool(rows[0][2])

            schema_name, self._events_sequence, self._consecutive_ids = await self._run(
                schema(), write=False
            )
            self.channel = events_channel(schema_name)
        except BaseException:
            self._close_pool()
            raise
        self.log.info(
            "PostgreSQL store ready (applied migrations: {applied}; channel {channel})",
            applied=applied or "none",
            channel=self.channel,
        )
        if self._watchers:
            self._start_listener()

    def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    async def _stop(self) -> None:
        # A device-lock query under way fails at once (its connection closes; it has no
        # deadline of its own); stop waits for its caller to be told, like for the rest.
        self._device_locks.close()
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await listener.stop()
        await self._in_flight.wait()
        self._close_pool()

    def stop(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    # --- one process per pull device ------------------------------------------------
    def try_lock_device(self, device_id: str) -> Deferred[bool]:
        locks = self._device_locks
        return self._in_flight.track(
            locks.lock.run(lambda: Deferred.fromCoroutine(locks.try_lock(device_id)))
        )

    def unlock_device(self, device_id: str) -> Deferred[None]:
        locks = self._device_locks
        return self._in_flight.track(
            locks.lock.run(lambda: Deferred.fromCoroutine(locks.unlock(device_id)))
        )

    # --- notifications --------------------------------------------------------------
    def watch(self, callback: Callable[[int], None]) -> None:
        self._watchers.append(callback)
        if self._pool is not None:
            self._start_listener()

    @property
    def listening(self) -> bool:
        """True while the LISTEN connection is up (for tests and health checks)."""
        return self._listener is not None and self._listener.connected

    def _start_listener(self) -> None:
        if self._listener is None:
            self._listener = _Listener(
                self._reactor,
                self.dsn,
                self.channel,
                self._notify_watchers,
                self._caught_up,
                self._connect_timeout,
                self._probe_interval,
            )
            self._listener.start()

    def _notify_watchers(self, max_id: int, origin: str = "") -> None:
        if origin == self.origin:
            return
        for callback in list(self._watchers):
            try:
                callback(max_id)
            except Exception:
                self.log.failure("Event watcher {callback!r} failed", callback=callback)

    def _caught_up(self) -> None:
        """After a LISTEN outage, NOTIFYs may have been missed: report the latest id."""
        d = self.last_event_id()
        d.addCallback(self._notify_watchers)
        d.addErrback(
            lambda f: self.log.warn("Cannot read the last event id: {error}", error=str(f.value))
        )

    # --- running scripts ------------------------------------------------------------
    def _run(
        self, script: Script[T], write: bool = True, op_timeout: float | None = None
    ) -> Deferred[T]:
        pool = self._pool
        if pool is None:
            script.close()
            return fail(StoreUnavailable("the store is not running"))

        tx = _Transaction(script)

        def interaction(cursor: txpg.Cursor) -> Deferred[T]:
            return Deferred.fromCoroutine(_drive(cursor, tx))

        def retry() -> bool:
            return tx.retryable

        d = pool.runInteraction(interaction, op_timeout=op_timeout, retry=retry)

        def closed(result: Any) -> Any:
            script.close()  # after the last attempt (a retry takes the script on)
            return result

        d.addBoth(closed)

        def failed(failure: Failure) -> Failure:
            if failure.check(*_DEAD):
                error = failure.value
                if isinstance(error, txpg.RollbackFailed):
                    error = error.originalFailure.value
                self.log.warn("PostgreSQL unavailable: {error}", error=str(error).strip())
                raise StoreUnavailable(str(error).strip() or type(error).__name__) from error
            return failure

        # A caller's cancel stops here (see InFlight): the transaction runs to its end.
        return self._in_flight.track(d.addErrback(failed))
