"""Device health alerts: conditions and transitions (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from zkserver.alerts import AlertPolicy, OpenAlert, failing_conditions, transitions
from zkserver.records import Device

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
POLICY = AlertPolicy(silent=900, clock=120, repeat=21600)


def _device(**kw) -> Device:
    base = dict(
        id="d",
        serial_number="SN",
        name="",
        kind="pull",
        status="online",
        approved=True,
        last_seen="2026-11-29T11:59:00Z",
        info={},
    )
    base.update(kw)
    return Device(**base)


@pytest.mark.parametrize(
    ("device", "alerts"),
    [
        (_device(), set()),
        (_device(last_seen="2026-11-29T11:44:59Z"), {"silent"}),
        (_device(last_seen="2026-11-29T11:45:00Z"), set()),
        (_device(last_seen="2026-11-29T10:00:00Z", status="pending", approved=False), set()),
        (_device(info={"attlog_count": 91, "records_cap": 100}), {"storage"}),
        (_device(info={"attlog_count": 90, "records_cap": 100}), set()),
        (_device(info={"user_count": 950, "users_cap": 1000}), {"users"}),
        (
            _device(kind="push", info={"user_count": 99, "options": {"~MaxUserCount": "100"}}),
            {"users"},
        ),
        (_device(info={"clock_offset_s": -121}), {"clock"}),
        (_device(info={"clock_offset": 120}), set()),
    ],
)
def test_conditions(device: Device, alerts: set[str]) -> None:
    assert set(failing_conditions(device, NOW, POLICY)) == alerts


def test_open_repeat_and_recover() -> None:
    t0 = 1000.0
    first = transitions({}, {"silent": "quiet"}, t0, POLICY)
    assert [(t.alert, t.state, t.repeat) for t in first] == [("silent", "open", False)]
    held = {"silent": OpenAlert("silent", "quiet", t0, t0)}
    assert transitions(held, {"silent": "quiet"}, t0 + 21599, POLICY) == []
    again = transitions(held, {"silent": "quiet"}, t0 + 21600, POLICY)
    assert [(t.state, t.repeat) for t in again] == [("open", True)]
    over = transitions(held, {}, t0 + 30, POLICY)
    assert [(t.alert, t.state) for t in over] == [("silent", "recovered")]


def test_clock_offset_of_the_device_record() -> None:
    device = _device(kind="push", clock_offset_s=-500)
    assert set(failing_conditions(device, NOW, POLICY)) == {"clock"}


@pytest.mark.parametrize(
    "info",
    [
        {"attlog_count": "²", "records_cap": "100"},
        {"user_count": "99", "options": {"~MaxUserCount": "①"}},
        {"clock_offset_s": "٣٠٠"},
        {"attlog_count": 5, "records_cap": 0},  # a zero capacity: no alert, no division
        {"user_count": "50", "options": {"~MaxUserCount": "0"}},
        {"attlog_count": float("inf"), "records_cap": 100},  # int(inf) raised
        {"clock_offset_s": float("-inf")},
        {"clock_offset_s": float("nan")},
    ],
)
def test_odd_numbers_from_a_device_raise_no_alert_and_no_error(info: dict) -> None:
    assert failing_conditions(_device(info=info), NOW, POLICY) == {}


@pytest.mark.parametrize(
    ("offset", "alerts"),
    [(-120, set()), (-120.5, {"clock"}), ("-121", {"clock"}), ("-120.5", {"clock"}), (120, set())],
)
def test_clock_offset_at_and_past_the_threshold(offset: object, alerts: set[str]) -> None:
    assert set(failing_conditions(_device(info={"clock_offset_s": offset}), NOW, POLICY)) == alerts
