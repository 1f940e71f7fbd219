"""Door, alarm and device-log events: code tables and decoders (pure)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zkserver.access import (
    EF_ALARM,
    EF_BUTTON,
    EF_ENROLLFINGER,
    EF_ENROLLUSER,
    EF_UNLOCK,
    encode_pull_alarm,
    oplog_event,
    pull_event,
    rtlog_event,
    rtstate_events,
)
from zkserver.records import Device

T = "2026-11-29 10:00:00"


def _rt(event: str, pin: str = "0", door: str = "1", **extra: str) -> dict[str, str]:
    return {
        "time": T,
        "pin": pin,
        "cardno": "0",
        "eventaddr": door,
        "event": event,
        "inoutstatus": "0",
        "verifytype": "0",
        **extra,
    }


@pytest.mark.parametrize(
    ("fields", "kind", "expected"),
    [
        (_rt("200"), "door", {"door": 1, "event": "opened", "code": 200}),
        (_rt("201", door="2"), "door", {"door": 2, "event": "closed", "code": 201}),
        (_rt("102"), "door", {"event": "forced_open", "code": 102}),
        (_rt("28"), "door", {"event": "held_open", "code": 28}),
        (_rt("8"), "door", {"event": "remote_open", "code": 8}),
        (_rt("202"), "door", {"event": "exit_button", "code": 202}),
        (_rt("0", pin="1001"), "door", {"event": "verified_open", "user_id": "1001"}),
        (
            _rt("23", pin="7"),
            "door",
            {"event": "denied", "reason": "access_denied", "user_id": "7"},
        ),
        (_rt("100"), "alarm", {"alarm": "tamper", "state": "active", "code": 100}),
        (_rt("101", pin="5"), "alarm", {"alarm": "duress", "user_id": "5"}),
        (_rt("7"), "alarm", {"alarm": "alarm", "state": "cancelled"}),
        (_rt("206"), "device_log", {"operation": "device started", "code": 206}),
        (_rt("999"), "door", {"event": "other", "code": 999}),
        # unknown codes are kept with their code, with the user when there is one
        (_rt("999", pin="12"), "door", {"event": "other", "code": 999, "user_id": "12"}),
        (_rt("15", pin="12"), "door", {"event": "other", "code": 15, "user_id": "12"}),
    ],
)
def test_rtlog_codes(fields: dict[str, str], kind: str, expected: dict) -> None:
    event = rtlog_event(fields)
    assert event is not None and event.type == kind and event.timestamp == T
    assert expected.items() <= event.fields.items()


@pytest.mark.parametrize("fields", [{"time": T}, _rt("x")])
def test_rtlog_lines_that_are_no_device_event(fields: dict[str, str]) -> None:
    assert rtlog_event(fields) is None


def test_rtstate_changes_make_door_and_alarm_events() -> None:
    before = {"time": T, "sensor": "0101", "relay": "00", "alarm": "0000"}
    after = {"time": "2026-11-29 10:00:05", "sensor": "0102", "relay": "00", "alarm": "0200"}
    events = rtstate_events(before, after)
    assert [
        (
            e.type,
            e.fields.get("door"),
            e.fields.get("event") or e.fields["alarm"],
            e.fields.get("state"),
        )
        for e in events
    ] == [
        ("door", 2, "opened", None),
        ("alarm", 1, "tamper", "active"),
    ]
    cleared = rtstate_events(after, {**after, "alarm": "0000", "sensor": "0101"})
    assert [(e.fields.get("event"), e.fields.get("state")) for e in cleared] == [
        ("closed", None),
        (None, "cleared"),
    ]


def test_first_rtstate_is_a_baseline() -> None:
    assert rtstate_events(None, {"sensor": "02", "alarm": "02"}) == []
    assert rtstate_events({"sensor": "zz"}, {"sensor": "02"}) == []


@pytest.mark.parametrize(
    ("op", "operation"),
    [
        (0, "power on"),
        (4, "menu entered"),
        (5, "settings changed"),
        (9, "user deleted"),
        (6, "fingerprint enrolled"),
        (13, "data cleared"),
        (77, "operation 77"),
    ],
)
def test_oplog_operations(op: int, operation: str) -> None:
    event = oplog_event(
        {"op": op, "operator": "0", "timestamp": T, "obj": "1001", "values": ["0", "0", "0"]}
    )
    assert event is not None and event.type == "device_log"
    assert event.fields["operation"] == operation and event.fields["code"] == op
    assert event.fields["object"] == "1001" and "values" not in event.fields


def test_oplog_keeps_templates_out() -> None:
    assert oplog_event({"op": "FP", "operator": "1"}) is None


@pytest.mark.parametrize(
    ("code", "data", "kind", "expected"),
    [
        (EF_ALARM, encode_pull_alarm(0x37), "alarm", {"alarm": "tamper", "state": "active"}),
        (EF_ALARM, encode_pull_alarm(0x3A), "alarm", {"alarm": "misoperation"}),
        (EF_ALARM, encode_pull_alarm(0x35), "door", {"event": "exit_button"}),
        (EF_ALARM, bytes([0x54]) + bytes(7), "door", {"event": "closed"}),
        (
            EF_ALARM,
            b"\xff" * 4 + struct.pack("<HHI", 0x20, 3, 1),
            "alarm",
            {"alarm": "duress", "uid": 3, "verify_method": 1},
        ),
        (EF_ALARM, b"\x01\x02\x03", "alarm", {"alarm": "unknown", "raw": "010203"}),
        (EF_UNLOCK, b"", "door", {"event": "unlocked", "raw": ""}),
        (EF_BUTTON, b"\x01", "door", {"event": "exit_button", "raw": "01"}),
        (
            EF_ENROLLUSER,
            struct.pack("<I", 9),
            "device_log",
            {"operation": "user enrolled", "uid": 9},
        ),
        (
            EF_ENROLLFINGER,
            struct.pack("<HH", 0, 512) + b"1001\0\0\0\0\0" + b"\x06",
            "device_log",
            {"operation": "fingerprint enrolled", "user_id": "1001", "finger": 6},
        ),
        (
            EF_ENROLLFINGER,
            struct.pack("<H", 4),
            "device_log",
            {"operation": "fingerprint enrolment failed", "result": 4},
        ),
    ],
)
def test_pull_events(code: int, data: bytes, kind: str, expected: dict) -> None:
    event = pull_event(code, data, T)
    assert event is not None and event.type == kind
    assert expected.items() <= event.fields.items()


@given(
    st.sampled_from([EF_ALARM, EF_UNLOCK, EF_BUTTON, EF_ENROLLUSER, EF_ENROLLFINGER, 1, 2]),
    st.binary(max_size=64),
)
def test_pull_events_never_raise(code: int, data: bytes) -> None:
    pull_event(code, data, T)


def test_payload_carries_the_device_fields() -> None:
    device = Device(
        id="d1", serial_number="SN1", name="", kind="push", status="online", approved=True
    )
    event = rtlog_event(_rt("200"))
    assert event is not None
    assert event.payload(device) == {
        "type": "door",
        "device_id": "d1",
        "device_name": "Push Device SN1",
        "serial_number": "SN1",
        "timestamp": T,
        "door": 1,
        "event": "opened",
        "code": 200,
        "verifytype": "0",
        "cardno": "0",
        "inoutstatus": "0",
    }


@pytest.mark.parametrize("code", ["²", "①", "٣", "+5", "3.0", "0x10"])
def test_rtlog_codes_that_are_not_ascii_integers_are_no_device_event(code: str) -> None:
    # "²".isdigit() is true but int("²") raised: one such line failed its whole upload.
    fields = _rt(code, door="²")
    assert rtlog_event(fields) is None


@given(st.dictionaries(st.sampled_from(["event", "eventaddr", "pin", "time"]), st.text()))
def test_rtlog_decoder_never_raises(fields: dict[str, str]) -> None:
    rtlog_event(fields)
