"""The event payloads' JSON form (zkserver.events): pure."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from zkserver.events import attendance_encoder, attendance_payload, encode_payload
from zkserver.records import Device, Punch

# Text a terminal or an operator may produce: quotes, backslashes, controls, NUL,
# non-ASCII, surrogate-free.
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
raw_value = st.one_of(text, st.integers(-(2**40), 2**40), st.none(), st.lists(text, max_size=3))


@st.composite
def punches(draw: Any) -> Punch:
    return Punch(
        draw(text),
        draw(text),
        draw(st.integers(0, 10**9)),
        draw(st.integers(0, 10**9)),
        draw(text),
        draw(st.dictionaries(text, raw_value, max_size=5)),
        draw(st.one_of(st.just(""), text)),
        draw(st.booleans()),
        draw(st.one_of(st.none(), text)),
    )


devices = st.builds(
    Device,
    id=text,
    serial_number=text,
    name=text,
    kind=st.sampled_from(["push", "pull"]),
    status=st.just("online"),
    approved=st.just(True),
)


@settings(max_examples=300)
@given(devices, st.lists(punches(), min_size=1, max_size=4))
def test_attendance_encoder_gives_the_payload_and_exactly_its_json(
    device: Device, batch: list[Punch]
) -> None:
    encode = attendance_encoder(device)
    for punch in batch:
        payload, data = encode(punch, encode_payload(punch.raw))
        assert payload == attendance_payload(device, punch)
        assert data == encode_payload(payload)


def test_attendance_encoder_falls_back_for_unusual_fields() -> None:
    """A punch without raw fields (raw_data is then built from the punch) or with a field
    of another type (a bool status) takes the general path: same text."""
    device = Device("d1", "SN1", 'Lobby "A"', "push", "online", True)
    encode = attendance_encoder(device)
    for punch in (
        Punch("7", "2025-01-01 08:00:00", 1, 15),
        Punch("7", "2025-01-01 08:00:00", True, 15, raw={"a": 1}),  # type: ignore[arg-type]
        Punch("7", "2025-01-01 08:00:00", 1, 15, raw={"a": 1}, time_ambiguous=1),  # type: ignore[arg-type]
    ):
        payload, data = encode(punch, encode_payload(punch.raw))
        assert payload == attendance_payload(device, punch)
        assert data == encode_payload(payload)
