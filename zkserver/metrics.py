"""Prometheus metrics: exactly the ``zkserver_*`` families ``GET /metrics`` serves.

Counters and histograms are incremented where things happen (one line each: broadcaster,
SSE, ingest, webhooks); gauges are read when scraped (:func:`scrape`), from the objects
that know them (the broadcaster's clients, the pull manager's sessions, the store's
commands and open alerts). They live in their own registry, so a scrape shows these
families and nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from time import perf_counter
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "REGISTRY",
    "CONTENT_TYPE",
    "SSE_CLIENTS",
    "EVENTS_PUBLISHED",
    "SSE_DELIVERIES",
    "SSE_CLIENTS_DROPPED",
    "FANOUT_ROUND_SECONDS",
    "PUNCHES_SAVED",
    "INGEST_COMMIT_SECONDS",
    "DB_ERRORS",
    "PULL_SESSIONS",
    "COMMANDS",
    "WEBHOOK_DELIVERIES",
    "WEBHOOK_ATTEMPT_SECONDS",
    "DEVICE_ALERTS_OPEN",
    "FAMILIES",
    "fanout_round",
    "published",
    "sse_delivered",
    "count_db_error",
    "now",
    "scrape",
    "GaugeSources",
]

disable_created_metrics()  # no ``*_created`` series: only the families listed here
REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST

_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_HTTP = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

SSE_CLIENTS = Gauge("zkserver_sse_clients", "Open event-stream clients.", registry=REGISTRY)
EVENTS_PUBLISHED = Counter(
    "zkserver_events_published",
    "Committed events published to the stream, by event type.",
    ["type"],
    registry=REGISTRY,
)
SSE_DELIVERIES = Counter(
    "zkserver_sse_deliveries", "Events written to stream clients.", registry=REGISTRY
)
SSE_CLIENTS_DROPPED = Counter(
    "zkserver_sse_clients_dropped",
    "Stream clients disconnected for falling behind or failing a write.",
    registry=REGISTRY,
)
FANOUT_ROUND_SECONDS = Histogram(
    "zkserver_fanout_round_seconds",
    "Time for one pass of the fan-out sweep over every stream client.",
    buckets=_FAST,
    registry=REGISTRY,
)
PUNCHES_SAVED = Counter(
    "zkserver_punches_saved",
    "New punches committed, by device kind (push, pull).",
    ["kind"],
    registry=REGISTRY,
)
INGEST_COMMIT_SECONDS = Histogram(
    "zkserver_ingest_commit_seconds",
    "Time to commit one batch of punches and their events.",
    buckets=_HTTP,
    registry=REGISTRY,
)
DB_ERRORS = Counter("zkserver_db_errors", "Database operations that failed.", registry=REGISTRY)
PULL_SESSIONS = Gauge(
    "zkserver_pull_sessions",
    "Pull devices this process handles, by status (online, offline, auth_failed, ...).",
    ["status"],
    registry=REGISTRY,
)
COMMANDS = Gauge(
    "zkserver_commands",
    "Device commands in the store, by status.",
    ["status"],
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "zkserver_webhook_deliveries",
    "Webhook delivery attempts by outcome (delivered, retry, failed).",
    ["status"],
    registry=REGISTRY,
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "zkserver_webhook_attempt_seconds",
    "Duration of one webhook POST (until the answer, an error or the timeout).",
    buckets=_HTTP,
    registry=REGISTRY,
)
DEVICE_ALERTS_OPEN = Gauge(
    "zkserver_device_alerts_open", "Device health alerts currently open.", registry=REGISTRY
)

#: Every family name as it appears in the exposition (counters without ``_total``).
FAMILIES = (
    "zkserver_sse_clients",
    "zkserver_events_published",
    "zkserver_sse_deliveries",
    "zkserver_sse_clients_dropped",
    "zkserver_fanout_round_seconds",
    "zkserver_punches_saved",
    "zkserver_ingest_commit_seconds",
    "zkserver_db_errors",
    "zkserver_pull_sessions",
    "zkserver_commands",
    "zkserver_webhook_deliveries",
    "zkserver_webhook_attempt_seconds",
    "zkserver_device_alerts_open",
)


now = perf_counter
"""A monotonic clock for durations (``started = metrics.now()``)."""


def count_db_error(failure: Any) -> Any:
    """An errback: count a failed database operation (not a refused argument), pass the
    failure on."""
    if not failure.check(ValueError, TypeError):
        DB_ERRORS.inc()
    return failure


def published(events: Sequence[Any]) -> None:
    """Count events published to the stream, by type (one labelled increment per type:
    ``labels()`` costs a few microseconds, and a round holds hundreds of events)."""
    counts: dict[str, int] = {}
    for event in events:
        counts[event.type] = counts.get(event.type, 0) + 1
    for kind, count in counts.items():
        EVENTS_PUBLISHED.labels(kind).inc(count)


def sse_delivered(event_filter: Any, events: Sequence[Any]) -> None:
    """Count the events of a round one stream client was sent (its filter's share)."""
    if getattr(event_filter, "everything", False):
        SSE_DELIVERIES.inc(len(events))
    else:
        SSE_DELIVERIES.inc(sum(1 for e in events if event_filter.accepts(e)))


def fanout_round(started: float) -> None:
    """Record one fan-out round that began at ``perf_counter()`` value ``started``."""
    FANOUT_ROUND_SECONDS.observe(perf_counter() - started)


GaugeSources = Mapping[str, Callable[[], "Awaitable[Mapping[str, float] | float] | float"]]


def _set_labelled(gauge: Gauge, counts: Mapping[str, float]) -> None:
    gauge.clear()
    for label, value in counts.items():
        gauge.labels(label).set(value)


async def scrape(
    sse_clients: Callable[[], int],
    pull_sessions: Callable[[], Mapping[str, int]],
    commands: Callable[[], Awaitable[Mapping[str, int]]],
    alerts_open: Callable[[], Awaitable[int]],
) -> bytes:
    """Refresh the gauges from their sources and return the text exposition."""
    SSE_CLIENTS.set(sse_clients())
    _set_labelled(PULL_SESSIONS, pull_sessions())
    _set_labelled(COMMANDS, await commands())
    DEVICE_ALERTS_OPEN.set(await alerts_open())
    return generate_latest(REGISTRY)
