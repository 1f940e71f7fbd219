"""The embedded store: one SQLite file in WAL mode, one writer thread and a few readers.

- Every write runs on one connection in one pool thread, so write transactions are
  serialised by construction and event ids are committed in the order they are allocated.
- Reads run on their own small pool of read-only connections (opened once the migrations
  have run): in WAL mode they see the last commit and never wait for a writer, so
  ``/healthz``, the API and SSE replay keep answering while a write is blocked.
- Another connection may hold the file's write lock (a backup tool, a second process in
  ``BEGIN EXCLUSIVE``). A write then waits up to the busy timeout and fails with
  StoreUnavailable (503 for terminals, which resend). The writes that were queued while
  it waited fail at once with it instead of each waiting its own busy timeout in turn, so
  every caller has its answer within about one busy timeout; the next write waits again.
- WAL checkpoints run on a connection and thread of their own, never inside a commit
  (see zkserver/store/checkpoint.py).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from zkserver.store.base import StoreUnavailable
from zkserver.store.checkpoint import WAL_SIZE_LIMIT, WRITER_AUTOCHECKPOINT, WalCheckpointer
from zkserver.store.commands import CommandScripts
from zkserver.store.dialect import Q, Script, params_for, render
from zkserver.store.sql import InFlight, SQLStore
from zkserver.store.sqlite_pool import sqlite_pool

__all__ = ["SqliteStore"]

T = TypeVar("T")

#: sqlite3 error messages that mean "the database cannot serve us now" (not a bug).
_UNAVAILABLE = (
    "database is locked",
    "database table is locked",
    "database is busy",
    "disk i/o error",
    "unable to open database file",
    "database or disk is full",
    "attempt to write a readonly database",
    "database disk image is malformed",
    "file is not a database",
    "cannot operate on a closed database",
)


def _unavailable(failure: Failure) -> bool:
    if failure.check(adbapi.ConnectionLost):
        return True
    if failure.check(sqlite3.DatabaseError, sqlite3.ProgrammingError):
        message = str(failure.value).lower()
        return any(text in message for text in _UNAVAILABLE)
    return False


#: How many read-only connections serve reads.
READERS = 3


def _locked(error: BaseException) -> bool:
    """Whether ``error`` is SQLite's "another connection holds the lock"."""
    message = str(error).lower()
    return isinstance(error, sqlite3.OperationalError) and (
        "locked" in message or "busy" in message
    )


def _drive(conn: Any, script: Script[T], write: bool) -> T:
    """Run a transaction script on the pool thread, in one transaction."""
    cursor = conn.cursor()
    cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        query: Q = next(script)
        while True:
            if query.after_commit:
                cursor.execute("COMMIT")
            sql = render(query.sql, "sqlite")
            params = params_for(query)
            if params is None:
                cursor.execute(sql)
            else:
                cursor.execute(sql, params)
            rows = cursor.fetchall()  # run to the end, even when the script reads nothing
            try:
                done = query.after_commit
                query = script.send(rows if query.fetch else [])
            except StopIteration as stop:
                result = stop.value
                break
            if done:
                raise RuntimeError("a transaction script went on after its after-commit statement")
        if conn.in_transaction:
            cursor.execute("COMMIT")
        return result
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    finally:
        script.close()
        cursor.close()


class SqliteStore(CommandScripts, SQLStore):
    """:class:`~zkserver.store.base.Store` on a SQLite file (WAL, one writer)."""

    dialect = "sqlite"
    _integrity_errors = (sqlite3.IntegrityError,)
    log = Logger()

    def __init__(self, path: str, reactor: Any = None, busy_timeout: float = 5.0) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.path = path
        self._reactor = reactor
        self._busy_timeout = busy_timeout
        self._pool: adbapi.ConnectionPool | None = None
        self._readers: adbapi.ConnectionPool | None = None
        #: Writes that failed because another connection held the lock; a write queued
        #: before the latest such failure fails without waiting again (see the module doc).
        self._lock_failures = 0
        self._in_flight = InFlight()
        self._watchers: list[Callable[[int], None]] = []
        self._checkpointer: WalCheckpointer | None = None

    def __repr__(self) -> str:
        return f"<SqliteStore {self.path}>"

    def _on_open(self, conn: sqlite3.Connection) -> None:
        """Runs in the pool's thread (never the reactor's), so it may wait."""
        # WAL is a property of the file: set it once. Switching needs the file to itself,
        # and SQLite answers "locked" at once (no busy wait) while another connection is
        # mid-transaction: retry for up to the busy timeout.
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
            except sqlite3.OperationalError:
                mode = ""
            if mode == "wal" or time.monotonic() > deadline:
                break  # past the deadline the statements themselves report "locked"
            time.sleep(0.05)
        conn.execute("PRAGMA synchronous=NORMAL")
        # Checkpoints are the checkpointer's; the writer's own is a safety net only.
        conn.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT}")
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")

    @staticmethod
    def _on_open_reader(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA query_only=1")

    # --- life cycle -----------------------------------------------------------------
    def start(self) -> Deferred[None]:
        if self._pool is not None:
            return succeed(None)
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            return fail(StoreUnavailable(f"cannot create {directory}: {e}"))
        self._pool = sqlite_pool(
            self.path, self._reactor, self._busy_timeout, openfun=self._on_open
        )
        d = self._run(self._migrate())

        def started(applied: list[int]) -> None:
            if self._pool is None:
                return  # stop() ran meanwhile and closed the writer: open nothing more
            self._open_readers()
            if not self._path_is_memory():
                self._checkpointer = WalCheckpointer(
                    self.path, self._reactor, busy_timeout=self._busy_timeout
                )
                self._checkpointer.start()
            self.log.info(
                "SQLite store {path} ready (applied migrations: {applied})",
                path=self.path,
                applied=applied or "none",
            )

        def failed(failure: Failure) -> Failure:
            self._close_pool()
            return failure

        return d.addCallbacks(started, failed)

    def _open_readers(self) -> None:
        """Read-only connections, once the schema exists (WAL: they never wait for the
        writer)."""
        if self._path_is_memory():
            return  # an in-memory database exists on one connection only
        self._readers = sqlite_pool(
            self.path, self._reactor, self._busy_timeout, READERS, self._on_open_reader
        )

    def _path_is_memory(self) -> bool:
        return self.path == ":memory:" or self.path.startswith("file::memory:")

    def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        readers, self._readers = self._readers, None
        for each in (pool, readers):
            if each is not None:
                each.close()

    def stop(self) -> Deferred[None]:
        """Wait for running statements and checkpoint, then close the connections."""
        checkpointer, self._checkpointer = self._checkpointer, None
        d = self._in_flight.wait()
        if checkpointer is not None:
            d.addCallback(lambda _: checkpointer.stop())
        return d.addCallback(lambda _: self._close_pool())

    # --- one process per pull device: one process owns the file, so it holds them all --
    def try_lock_device(self, device_id: str) -> Deferred[bool]:
        return succeed(True)

    def unlock_device(self, device_id: str) -> Deferred[None]:
        return succeed(None)

    def watch(self, callback: Callable[[int], None]) -> None:
        """One process owns the file: nobody else commits events, nothing to watch."""
        self._watchers.append(callback)

    # --- running scripts ------------------------------------------------------------
    def _run(self, script: Script[T], write: bool = True) -> Deferred[T]:
        if self._pool is None:
            script.close()
            return fail(StoreUnavailable("the store is not running"))
        if not write and self._readers is not None:
            d = self._readers.runWithConnection(_drive, script, False)
        else:
            d = self._pool.runWithConnection(self._write, script, write, self._lock_failures)

        def done(result: Any) -> Any:
            if isinstance(result, Failure) and _unavailable(result):
                self.log.warn("SQLite store unavailable: {error}", error=str(result.value))
                raise StoreUnavailable(str(result.value)) from result.value
            return result

        # A caller's cancel stops here (see InFlight): stop() waits for the thread.
        return self._in_flight.track(d.addBoth(done))

    def _write(self, conn: Any, script: Script[T], write: bool, queued_at: int) -> T:
        """On the writer thread: fail at once if a write that ran while this one was
        queued found the database locked by another connection; else run the script."""
        if self._lock_failures != queued_at:
            script.close()
            raise sqlite3.OperationalError(
                "database is locked by another connection (a write queued meanwhile "
                "waited and gave up)"
            )
        try:
            return _drive(conn, script, write)
        except sqlite3.OperationalError as e:
            if _locked(e):
                self._lock_failures += 1
            raise
