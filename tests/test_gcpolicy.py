"""The GC governor freezes what survives a full collection and thaws it periodically."""

from __future__ import annotations

import gc
import threading
from typing import Any

from twisted.internet.task import Clock

from zkserver.gcpolicy import GCGovernor


def test_survivors_of_a_full_collection_are_frozen_then_thawed_and_stop_unfreezes() -> None:
    clock = Clock()
    governor = GCGovernor(clock, thaw_every=60)
    governor.startService()
    try:
        assert gc.get_freeze_count() == 0
        gc.collect(1)  # a young collection freezes nothing
        clock.advance(0)
        assert governor.freezes == 0
        gc.collect()
        assert gc.get_freeze_count() == 0  # not inside the collector
        clock.advance(0)
        assert governor.freezes == 1 and gc.get_freeze_count() > 0
        clock.advance(60)
        assert governor.thaws == 1 and gc.get_freeze_count() == 0
        gc.collect()
        clock.advance(0)
        assert gc.get_freeze_count() > 0
    finally:
        governor.stopService()
    assert gc.get_freeze_count() == 0 and governor._on_gc not in gc.callbacks
    assert not clock.getDelayedCalls()


def test_thaw_zero_never_thaws() -> None:
    clock = Clock()
    governor = GCGovernor(clock, thaw_every=0)
    governor.startService()
    try:
        assert not clock.getDelayedCalls()
    finally:
        governor.stopService()


class ReactorThreadClock(Clock):
    """A Clock that refuses to be scheduled on from any thread but the one that made it
    (the reactor's rule for callLater)."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.current_thread()

    def callLater(self, delay: float, f: Any, *args: Any, **kw: Any) -> Any:
        assert threading.current_thread() is self.thread, "callLater from another thread"
        return super().callLater(delay, f, *args, **kw)


def test_a_full_collection_in_another_thread_hands_the_freeze_to_the_reactor_thread() -> None:
    clock = ReactorThreadClock()
    handed: list[Any] = []
    governor = GCGovernor(clock, thaw_every=0, call_from_thread=handed.append)
    governor.startService()
    try:
        errors: list[BaseException] = []

        def collect() -> None:
            try:
                gc.collect()
            except BaseException as e:  # an assertion in the gc callback surfaces here
                errors.append(e)

        worker = threading.Thread(target=collect)
        worker.start()
        worker.join()
        assert errors == [] and governor.freezes == 0 and len(handed) == 1
        handed.pop()()  # what the reactor thread runs
        clock.advance(0)
        assert governor.freezes == 1 and gc.get_freeze_count() > 0
    finally:
        governor.stopService()
    assert gc.get_freeze_count() == 0
