"""When to set a pull terminal's clock right (``--fix-drift SECONDS``).

The idle probe reads the terminal's clock (GET_TIME) and measures its offset with
:func:`zkserver.localtime.clock_offset` (kept with the device as ``clock_offset_s``);
:class:`DriftFixer` decides whether the clock is set now: only when the offset is larger
than the threshold, and at most once per ``interval`` (an hour) per device.  Pure: the
caller passes the time.
"""

from __future__ import annotations

from attrs import define, field

__all__ = ["DriftFixer", "FIX_INTERVAL"]

FIX_INTERVAL = 3600.0
"""Seconds between two automatic clock settings of one device."""


@define
class DriftFixer:
    """Per-device decision for ``--fix-drift``: threshold in seconds (None = off)."""

    threshold: float | None = None
    interval: float = FIX_INTERVAL
    _last_fix: dict[str, float] = field(factory=dict, init=False)

    def due(self, device_id: str, offset: float, now: float) -> bool:
        """Whether the clock of ``device_id`` is to be set now (``now``: monotonic seconds
        of the injected clock).  True records the fix, so the next one waits ``interval``."""
        if self.threshold is None or abs(offset) <= self.threshold:
            return False
        last = self._last_fix.get(device_id)
        if last is not None and now - last < self.interval:
            return False
        self._last_fix[device_id] = now
        return True

    def forget(self, device_id: str) -> None:
        """Let the next check of ``device_id`` fix at once (e.g. after a failed attempt)."""
        self._last_fix.pop(device_id, None)
