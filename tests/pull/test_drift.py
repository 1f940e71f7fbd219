"""--fix-drift's decision (zkserver.pull.drift): threshold and at most once an hour."""

from __future__ import annotations

from zkserver.pull.drift import DriftFixer


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
