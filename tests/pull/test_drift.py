"""--fix-drift's decision (zkserver.pull.drift): threshold and at most once an hour."""

from __future__ import annotations

from datetime import datetime

from zkserver.pull.drift import DriftFixer, clock_offset


def test_clock_offset_sign_and_seconds() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, 600_000)
    assert clock_offset(datetime(2026, 1, 1, 12, 1, 30), now) == 90.0
    assert clock_offset(datetime(2026, 1, 1, 11, 0, 0), now) == -3600.0
    assert clock_offset(datetime(2026, 1, 1, 12, 0, 0), now) == 0.0


def test_off_by_default() -> None:
    assert not DriftFixer().due("d", 10_000, 0)


def test_only_beyond_the_threshold_and_once_an_hour_per_device() -> None:
    fixer = DriftFixer(threshold=30)
    assert not fixer.due("a", 30, 0)
    assert not fixer.due("a", -29, 0)
    assert fixer.due("a", -31, 0)
    assert not fixer.due("a", 500, 10)
    assert fixer.due("b", 500, 10)  # another device is not held back
    assert not fixer.due("a", 500, 3599)
    assert fixer.due("a", 500, 3600)
    fixer.forget("b")
    assert fixer.due("b", 500, 11)
