"""Periodic jobs (heartbeat, silence checks, any TimerService) survive their own errors:
the exception is logged and the job runs again at its next tick."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.application.internet import TimerService
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from zkserver.periodic import PeriodicJob
from zkserver.tap import Options, makeService


@pytest.fixture
def failures() -> Iterator[list[dict[str, Any]]]:
    caught: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None:
            caught.append(event)

    globalLogPublisher.addObserver(observe)
    yield caught
    globalLogPublisher.removeObserver(observe)


def test_a_job_that_raises_or_fails_is_logged_and_runs_again(failures):
    clock = Clock()
    calls: list[int] = []

    def job() -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first run raises")
        if len(calls) == 2:
            return fail(RuntimeError("second run fails"))
        return None

    service = PeriodicJob("test job", 10, job, clock=clock)
    service.startService()
    assert len(calls) == 1
    clock.advance(10)
    clock.advance(10)
    clock.advance(10)
    assert len(calls) == 4
    assert [e["log_failure"].getErrorMessage() for e in failures] == [
        "first run raises",
        "second run fails",
    ]
    assert all(e["job"] == "test job" for e in failures)
    service.stopService()


def test_a_job_still_running_is_not_started_twice_and_stop_waits_for_it():
    clock = Clock()
    running: list[Deferred[None]] = []

    def job() -> Deferred[None]:
        d: Deferred[None] = Deferred()
        running.append(d)
        return d

    service = PeriodicJob("slow", 1, job, clock=clock)
    service.startService()
    clock.advance(1)
    clock.advance(1)
    assert len(running) == 1  # the first run has not finished: no overlap
    stopped = service.stopService()
    assert not stopped.called
    running[0].callback(None)
    assert stopped.called


def test_every_timer_of_the_server_survives_a_failing_run(tmp_path, failures):
    config = Options()
    config.parseOptions(["-d", str(tmp_path), "--no-pull", "--heartbeat", "1"])
    server = makeService(config, reactor)
    timers = [s for s in server if isinstance(s, TimerService)]
    assert {t.name for t in timers} >= {"heartbeat", "presence"}
    assert all(isinstance(t, PeriodicJob) for t in timers)
    for timer in timers:
        calls: list[int] = []

        def failing_first(calls: list[int] = calls) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise OSError("broken pipe")

        timer.job = failing_first
        timer.clock = Clock()
        timer.startService()
        timer.clock.advance(timer.step)
        timer.clock.advance(timer.step)
        timer.stopService()
        assert len(calls) == 3, timer.name
    assert [e["job"] for e in failures] == [t.name for t in timers]


def test_database_unavailable_is_one_warning_line_not_a_traceback(failures):
    from twisted.logger import LogLevel, formatEvent, globalLogPublisher

    from zkserver.store.base import StoreUnavailable

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    clock = Clock()
    calls: list[int] = []

    def job() -> Any:
        calls.append(1)
        return fail(StoreUnavailable("database is locked"))

    service = PeriodicJob("presence", 5, job, clock=clock)
    try:
        service.startService()
        clock.advance(5)
    finally:
        service.stopService()
        globalLogPublisher.removeObserver(events.append)
    assert len(calls) == 2
    assert not failures
    warnings = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
    assert (
        warnings
        == [
            "Periodic job presence skipped: database unavailable (database is locked); "
            "it runs again in 5 s"
        ]
        * 2
    )
