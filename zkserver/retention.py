"""``--retain-events DAYS``: old events are pruned in small batches in the background.

Every ``interval`` seconds (and once the store is ready) :meth:`EventRetention.run`
deletes events older than DAYS days, ``batch`` rows per transaction with a pause between
transactions, so a push upload or a pull catch-up never waits behind a long delete (on
SQLite, one writer, it waits at most one small batch; on PostgreSQL the delete takes no
lock that inserts wait for). Punches themselves are kept: only the stream's replay log
(the ``events`` table) is pruned. A stream client whose Last-Event-ID is below the highest
pruned id is sent one ``reset`` event, and so is one whose replay a prune overtakes: each
replay page is read with the pruned-through mark at the same instant (see
zkserver/web/sse.py and ``Store.replay_page``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from attrs import define
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from zkserver.store.base import Store

__all__ = ["EventRetention"]

log = Logger()


@define(eq=False)
class EventRetention:
    store: Store
    clock: IReactorTime
    days: float = 30.0
    batch: int = 500
    pause: float = 0.05
    max_batches: int = 2000
    running: bool = False

    def cutoff(self) -> str:
        """Events created before this (stored time format) are pruned."""
        now = datetime.fromtimestamp(self.clock.seconds(), UTC)
        return (now - timedelta(days=self.days)).isoformat(timespec="microseconds")

    async def run(self) -> int:
        """Prune what is due, one small batch at a time; returns how many were deleted."""
        if self.days <= 0 or self.running:
            return 0
        self.running = True
        total = 0
        try:
            before = self.cutoff()
            for _ in range(self.max_batches):
                deleted = await self.store.prune_events(before, self.batch)
                total += deleted
                if deleted < self.batch:
                    break
                await deferLater(self.clock, self.pause, lambda: None)
        finally:
            self.running = False
        if total:
            log.info("Pruned {count} events older than {days} days", count=total, days=self.days)
        return total
