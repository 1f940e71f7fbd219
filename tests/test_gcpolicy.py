"""The GC governor freezes what survives a full collection and thaws it periodically."""

from __future__ import annotations

import gc

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
