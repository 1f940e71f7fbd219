"""Periodic jobs that survive their own errors.

A plain :class:`~twisted.application.internet.TimerService` stops for good the first time
its job raises (or returns a failing Deferred). :class:`PeriodicJob` logs the failure and
runs the job again at the next tick; a run that is still going when the next tick comes
is not started twice, and stopping waits for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from zkserver.store.base import StoreUnavailable

__all__ = ["PeriodicJob"]

log = Logger()


class PeriodicJob(TimerService):
    """Run ``job()`` every ``interval`` seconds (first at start); never stop on errors.

    ``job`` may return a Deferred or a coroutine. ``clock`` is the reactor (tests pass a
    :class:`~twisted.internet.task.Clock`). The service's ``name`` is ``what``.
    """

    def __init__(
        self, what: str, interval: float, job: Callable[[], Any], clock: Any = None
    ) -> None:
        super().__init__(interval, self._tick)
        self.setName(what)
        self.job = job
        if clock is not None:
            self.clock = clock
        self._running_job: Deferred[None] | None = None

    def _tick(self) -> None:
        if self._running_job is not None:
            log.debug("Periodic job {job} still running; skipping a tick", job=self.name)
            return
        d = maybeDeferred(self.job)
        if not isinstance(d, Deferred):  # pragma: no cover - maybeDeferred always is
            return
        d = d.addCallback(self._await_coroutine)
        d.addErrback(self._failed)
        if not d.called:
            self._running_job = d
            d.addBoth(self._finished)

    def _failed(self, failure: Failure) -> None:
        if failure.check(StoreUnavailable):  # expected now and then: one line, no traceback
            log.warn(
                "Periodic job {job} skipped: database unavailable ({error}); "
                "it runs again in {interval:g} s",
                job=self.name,
                error=failure.getErrorMessage(),
                interval=self.step,
            )
            return
        log.failure(
            "Periodic job {job} failed; it runs again in {interval:g} s",
            failure,
            job=self.name,
            interval=self.step,
        )

    @staticmethod
    def _await_coroutine(result: Any) -> Any:
        if hasattr(result, "__await__") and not isinstance(result, Deferred):
            return Deferred.fromCoroutine(result)
        return result

    def _finished(self, _: Any) -> None:
        self._running_job = None

    def stopService(self) -> Deferred[None]:  # noqa: N802
        super().stopService()
        running = self._running_job
        if running is None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        running.addBoth(lambda _: waiter.callback(None))
        return waiter
