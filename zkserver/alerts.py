"""Device health alerts: which conditions hold, and what to announce (pure).

A ``device_alert`` event (``alert``: silent, storage, users, clock; ``state``: open or
recovered; ``detail``) is announced when a condition starts, again at most every
``repeat`` seconds while it holds, and once as ``recovered`` when it clears. The
service (:mod:`zkserver.alerts_service`) evaluates every device on a timer driven by an
injected clock; the store makes each transition happen once even with several
processes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any

from attrs import frozen

from zkserver.clock import parse_iso
from zkserver.localtime import utc_text
from zkserver.records import TIMESTAMP_FORMAT, Device

__all__ = [
    "AlertPolicy",
    "OpenAlert",
    "Transition",
    "failing_conditions",
    "transitions",
    "device_alert_payload",
    "ALERTS",
]

ALERTS = ("silent", "storage", "users", "clock")
FULL = 0.9  # above 90 % of capacity

_USER_CAP_KEYS = ("users_cap", "MaxUserCount", "~MaxUserCount")
_RECORD_CAP_KEYS = ("records_cap", "MaxAttLogCount", "~MaxAttLogCount")


@frozen
class AlertPolicy:
    silent: float = 900.0
    clock: float = 120.0
    repeat: float = 21600.0


@frozen
class OpenAlert:
    """An alert the store holds open for a device."""

    alert: str
    detail: str
    opened_at: float
    last_sent_at: float


@frozen
class Transition:
    """One announcement to make: ``state`` open (first or repeat) or recovered."""

    alert: str
    state: str
    detail: str
    repeat: bool = False


#: ASCII only: "²".isdigit() is true and float("²") raises (a whole check round failed).
_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        return float(value.strip())
    return None


def _capacity(info: Mapping[str, Any], keys: tuple[str, ...]) -> float | None:
    options = info.get("options") if isinstance(info.get("options"), Mapping) else {}
    for key in keys:
        for source in (info, options):
            found = _number(source.get(key)) if isinstance(source, Mapping) else None
            if found:
                return found
    return None


def _usage(info: Mapping[str, Any], count_key: str, cap_keys: tuple[str, ...]) -> str | None:
    count = _number(info.get(count_key))
    cap = _capacity(info, cap_keys)
    if count is None or not cap:
        return None
    if count / cap > FULL:
        return f"{int(count)} of {int(cap)} ({count / cap:.0%})"
    return None


def failing_conditions(
    device: Device, now: datetime, policy: AlertPolicy, watching_since: datetime | None = None
) -> dict[str, str]:
    """The alert conditions that hold for ``device`` at ``now``: alert -> detail.

    silent: no contact for longer than ``policy.silent`` seconds (only for approved
    devices that have been seen once); storage and users: more than 90 % of the
    capacity the device reports (pull GET_FREE_SIZES, push options); clock: the
    device's clock differs from the server's by more than ``policy.clock`` seconds
    (the device's ``clock_offset_s``: pull terminals' idle probe, push terminals' recent
    uploads; a fresher value a live session measured comes in ``info``)."""
    failing: dict[str, str] = {}
    if device.status in ("pending", "rejected") or not device.approved:
        return failing
    seen = parse_iso(device.last_seen)
    if seen is not None:
        # Silence counts from the server's start at the earliest: while it was down no
        # device could reach it (no storm of silent alerts after a long outage).
        since = seen if watching_since is None else max(seen, watching_since)
        quiet = (now - since).total_seconds()
        if quiet > policy.silent:
            failing["silent"] = f"no contact for {int(quiet)} s (last seen {device.last_seen})"
    info = device.info or {}
    records = _usage(info, "attlog_count", _RECORD_CAP_KEYS)
    if records is not None:
        failing["storage"] = f"attendance log {records} full"
    users = _usage(info, "user_count", _USER_CAP_KEYS)
    if users is not None:
        failing["users"] = f"users {users} full"
    offset = _number(info.get("clock_offset_s", info.get("clock_offset")))
    if offset is None and device.clock_offset_s is not None:
        offset = float(device.clock_offset_s)
    if offset is not None and abs(offset) > policy.clock:
        failing["clock"] = f"device clock off by {int(offset)} s"
    return failing


def transitions(
    open_alerts: Mapping[str, OpenAlert],
    failing: Mapping[str, str],
    now: float,
    policy: AlertPolicy,
) -> list[Transition]:
    """What to announce, given the alerts open now and the conditions that hold."""
    result: list[Transition] = []
    for alert in ALERTS:
        current = open_alerts.get(alert)
        if alert in failing:
            if current is None:
                result.append(Transition(alert, "open", failing[alert]))
            elif now - current.last_sent_at >= policy.repeat:
                result.append(Transition(alert, "open", failing[alert], repeat=True))
        elif current is not None:
            result.append(Transition(alert, "recovered", current.detail))
    return result


def device_alert_payload(
    device: Device, alert: str, state: str, detail: str, at: datetime, zone: tzinfo
) -> dict[str, Any]:
    """The ``device_alert`` stream event. ``at`` (aware) is when the server saw the change;
    ``timestamp`` is that moment in the device's local time (``zone``: its own, else the
    default), ``YYYY-MM-DD HH:MM:SS`` as on every event, and ``timestamp_utc`` the same
    instant as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return {
        "type": "device_alert",
        "device_id": device.id,
        "device_name": device.display_name,
        "serial_number": device.serial_number,
        "timestamp": at.astimezone(zone).strftime(TIMESTAMP_FORMAT),
        "timestamp_utc": utc_text(at),
        "alert": alert,
        "state": state,
        "detail": detail,
    }
