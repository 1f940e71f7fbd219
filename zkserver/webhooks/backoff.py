"""When to try a failed webhook delivery again, and when to give up.

Exponential: ``retry_min * 2**(attempt-1)`` seconds, capped at ``retry_max``, stretched by
up to ``jitter`` (20 %) at random so many failing subscriptions do not retry in step;
never below ``retry_min`` nor above ``retry_max``. A delivery still failing
``give_up`` seconds after its first attempt is ``failed``.

A receiver answering 429 or 503 with ``Retry-After`` (RFC 9110 section 10.2.3: seconds, or
an HTTP-date) is waited for at least that long, within ``retry_max``.
"""

from __future__ import annotations

import calendar
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime

from attrs import frozen

__all__ = ["RetryPolicy", "retry_after"]


@frozen
class RetryPolicy:
    retry_min: float = 5.0
    retry_max: float = 3600.0
    give_up: float = 86400.0
    timeout: float = 10.0
    jitter: float = 0.2

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...)."""
        exponent = min(max(attempt, 1) - 1, 62)
        base = min(self.retry_max, self.retry_min * (2.0**exponent))
        stretched = base * (1.0 + self.jitter * rand())
        return max(self.retry_min, min(self.retry_max, stretched))

    def honour(self, backoff: float, asked: float | None) -> float:
        """The wait after a failed attempt: its ``backoff`` (:meth:`delay`), or the
        ``asked`` seconds (a Retry-After) when longer, never above ``retry_max``."""
        if asked is None:
            return backoff
        return min(self.retry_max, max(backoff, asked))

    def exhausted(self, first_attempt: float, now: float) -> bool:
        """True when retrying longer would pass ``give_up`` seconds since the first try."""
        return now - first_attempt >= self.give_up


_DAYS = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"
_LONG_DAYS = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = "(?P<month>" + "|".join(_MONTHS) + ")"
_TIME = r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
_DELAY = re.compile(r"[0-9]+", re.ASCII)
# RFC 9110 section 5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime forms that a
# recipient must also accept. Names are case-sensitive; the zone is always GMT.
_IMF = re.compile(rf"(?:{_DAYS}), (?P<day>[0-9]{{2}}) {_MONTH} (?P<year>[0-9]{{4}}) {_TIME} GMT")
_RFC850 = re.compile(
    rf"(?:{_LONG_DAYS}), (?P<day>[0-9]{{2}})-{_MONTH}-(?P<yy>[0-9]{{2}}) {_TIME} GMT"
)
_ASCTIME = re.compile(rf"(?:{_DAYS}) {_MONTH} (?P<day>[ 0-9][0-9]) {_TIME} (?P<year>[0-9]{{4}})")
_LONGEST = 10**12  # seconds: more than any cap; keeps an absurd value a float


def retry_after(value: str, now: float) -> float | None:
    """Seconds from ``now`` that a ``Retry-After`` field value asks to wait (negative for
    a date already past), or None when it is neither delay-seconds nor an HTTP-date."""
    text = value.strip(" \t")
    if _DELAY.fullmatch(text):
        # int() refuses more than 4300 digits (ValueError, out of the attempt): past 13
        # significant ones the value is beyond _LONGEST anyway.
        digits = text.lstrip("0") or "0"
        return float(_LONGEST if len(digits) > 13 else min(int(digits), _LONGEST))
    match = _IMF.fullmatch(text) or _RFC850.fullmatch(text) or _ASCTIME.fullmatch(text)
    if match is None:
        return None
    parts = match.groupdict()
    month = _MONTHS.index(parts["month"]) + 1
    day, hour, minute = int(parts["day"]), int(parts["hour"]), int(parts["minute"])
    second = int(parts["second"])
    if parts.get("yy") is not None:
        this_year = datetime.fromtimestamp(now, UTC).year
        year = this_year - this_year % 100 + int(parts["yy"])
        if year > this_year + 50:
            year -= 100
    else:
        year = int(parts["year"])
    try:  # a real date and time (a leap second, :60, is allowed)
        datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:
        return None
    if second > 60:
        return None
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - now
