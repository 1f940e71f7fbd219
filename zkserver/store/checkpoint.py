"""WAL checkpoints for the SQLite store, off the commit path.

In WAL mode SQLite copies committed pages from the ``-wal`` file back into the database
file in a *checkpoint*. By default the connection that commits runs one whenever the WAL
passes 1,000 pages, inside that commit: with ``synchronous=NORMAL`` it syncs the WAL and
the database file, so every few dozen one-punch uploads one of them waited several
milliseconds for the disk. Measured with ``bench/sse_fanout.py --clients 100 --rates 100``
(2026-11-29, 2-core VM, three runs each): POST-to-stream p99 6.0-8.5 ms with the commit
checkpointing, 3.7-5.1 ms without.

:class:`WalCheckpointer` runs ``PRAGMA wal_checkpoint(PASSIVE)`` every ``interval``
seconds on a connection and thread of its own. A passive checkpoint takes no lock a
writer or a reader waits for: it copies what it can and leaves the rest for the next
one. The writer keeps an automatic checkpoint only as a safety net, at
:data:`WRITER_AUTOCHECKPOINT` pages (should this one stop or fall behind, the WAL still
stops growing), and ``journal_size_limit`` truncates a WAL that grew past
:data:`WAL_SIZE_LIMIT` bytes once it is reset.

Neither checkpoint bounds the WAL on its own: the WAL starts again from its beginning only
when a write begins after a complete checkpoint and no reader still reads its frames.
Under reads that overlap without a pause it outgrows the safety net (2026-11-29, a writer
committing 5 punches ~250 times a second and three readers reading back to back for 15 s:
the WAL file peaked at ~23,000 pages, ~7,400 with SQLite's default automatic checkpoint).

Source: https://www.sqlite.org/wal.html (checkpointing, automatic checkpoint) and
https://www.sqlite.org/pragma.html#pragma_wal_checkpoint.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet import task
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from zkserver.store.sqlite_pool import sqlite_pool

__all__ = ["WalCheckpointer", "WRITER_AUTOCHECKPOINT", "WAL_SIZE_LIMIT"]

log = Logger()

#: The writer's own automatic checkpoint, in WAL pages (~40 MB at 4 KiB pages): a safety
#: net that never fires while the checkpointer keeps up.
WRITER_AUTOCHECKPOINT = 10_000
#: Bytes a reset WAL file is truncated to (``PRAGMA journal_size_limit``).
WAL_SIZE_LIMIT = 64 * 1024 * 1024


def _checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(busy, frames in the WAL, frames checkpointed): SQLite's answer to the pragma."""
    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(row[0]), int(row[1]), int(row[2])


class WalCheckpointer:
    """Checkpoints the WAL of the SQLite file at ``path`` every ``interval`` seconds.

    Start it once the file exists (after the migrations). ``last`` is the latest answer
    (busy, WAL frames, frames checkpointed); ``checkpoints`` counts them. A busy answer
    (another connection checkpointing, readers on old frames) is not a failure. A failure
    is logged once, the next ticks try again, and ``failures`` counts those in a row; the
    first checkpoint after them logs that they resumed (a file that stays unusable does
    not log a traceback every second).
    """

    def __init__(
        self, path: str, reactor: Any, interval: float = 1.0, busy_timeout: float = 5.0
    ) -> None:
        self.path = path
        self.interval = interval
        self.checkpoints = 0
        self.failures = 0
        self.last: tuple[int, int, int] | None = None
        self._reactor = reactor
        self._busy_timeout = busy_timeout
        self._pool: adbapi.ConnectionPool | None = None
        self._loop: task.LoopingCall | None = None
        self._running: Deferred[None] | None = None

    def start(self) -> None:
        if self._pool is not None:
            return
        self._pool = sqlite_pool(self.path, self._reactor, self._busy_timeout)
        self._loop = task.LoopingCall(self.run)
        self._loop.clock = self._reactor
        self._loop.start(self.interval, now=False).addErrback(
            lambda f: log.failure("WAL checkpoint loop ended", f)
        )

    def run(self) -> Deferred[None]:
        """One checkpoint now, unless one is already running."""
        if self._pool is None or self._running is not None:
            return succeed(None)
        d = self._pool.runWithConnection(_checkpoint)

        def done(result: tuple[int, int, int]) -> None:
            self.last = result
            self.checkpoints += 1
            if self.failures:
                log.info(
                    "WAL checkpoints of {path} resumed after {failures} failed",
                    path=self.path,
                    failures=self.failures,
                )
                self.failures = 0

        def failed(failure: Any) -> None:
            self.failures += 1
            if self.failures == 1:
                log.failure(
                    "WAL checkpoint of {path} failed; trying again every {interval} s",
                    failure,
                    path=self.path,
                    interval=self.interval,
                )

        def finished(_: object) -> None:
            self._running = None

        d.addCallbacks(done, failed).addBoth(finished)
        self._running = d
        return d

    def stop(self) -> Deferred[None]:
        """Stop the ticks, wait for a checkpoint under way, close the connection."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        pool, self._pool = self._pool, None
        running = self._running if self._running is not None else succeed(None)

        def close(_: object) -> None:
            if pool is not None:
                pool.close()

        return running.addBoth(close)
