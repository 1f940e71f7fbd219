"""Server time helpers (UTC, ISO text) over an injected IReactorTime."""

from __future__ import annotations

from datetime import UTC, datetime

from twisted.internet.interfaces import IReactorTime

__all__ = ["utc_now", "iso", "parse_iso"]


def utc_now(clock: IReactorTime) -> datetime:
    return datetime.fromtimestamp(clock.seconds(), UTC)


def iso(moment: datetime) -> str:
    """UTC time as ``YYYY-MM-DDTHH:MM:SSZ`` (how server-side times are stored and shown)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
