"""The shared Server-Sent Events parser: table tests and properties (any chunking)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zkserver.events import Event, encode_comment
from zkserver.eventsource import Comment, EventStreamParser, ServerSentEvent, parse_event_stream

E = ServerSentEvent

CASES: list[tuple[bytes, list[ServerSentEvent | Comment]]] = [
    (b"", []),
    (b"data: a\n\n", [E("a")]),
    (b"data:a\n\n", [E("a")]),
    (b"data:  two spaces\n\n", [E(" two spaces")]),
    (b"data: a\ndata: b\n\n", [E("a\nb")]),
    (b"data\n\n", [E("")]),
    (b"data:\ndata:\n\n", [E("\n")]),
    (b"data: a\r\n\r\n", [E("a")]),
    (b"data: a\r\rdata: b\r\r", [E("a"), E("b")]),
    (b"data: a\n\r\ndata: b\r\n\n", [E("a"), E("b")]),
    (b"id: 7\ndata: x\n\n", [E("x", id="7")]),
    (b"id: 7\ndata: x\n\ndata: y\n\n", [E("x", id="7"), E("y", id="7")]),
    (b"id: 7\ndata: x\n\nid\ndata: y\n\n", [E("x", id="7"), E("y", id="")]),
    (b"id: 7\x00\ndata: x\n\n", [E("x")]),
    (b"event: ping\ndata: 1\n\ndata: 2\n\n", [E("1", event="ping"), E("2")]),
    (b"event: ping\n\ndata: 2\n\n", [E("2")]),  # no data: nothing dispatched, type reset
    (b": hello\n", [Comment("hello")]),
    (b":hello\n:\n", [Comment("hello"), Comment("")]),
    (b"id: 3\n\n", []),  # an id alone dispatches nothing, but is kept
    (b"data: a\nfoo: bar\nbaz\n\n", [E("a")]),  # unknown fields are ignored
    (b"data: a", []),  # no blank line at the end: not dispatched
    (b"data: a\n", []),
    (b"\xef\xbb\xbfdata: bom\n\n", [E("bom")]),
    (b"data: \xff\n\n", [E("\ufffd")]),
    (b"data: caf\xc3\xa9\n\n", [E("café")]),
    (b"data: a:b: c\n\n", [E("a:b: c")]),
    (b"Data: a\n\n", []),  # field names are case-sensitive
]


@pytest.mark.parametrize(("body", "expected"), CASES)
def test_table(body: bytes, expected: list[ServerSentEvent | Comment]) -> None:
    assert parse_event_stream(body) == expected


@pytest.mark.parametrize(("body", "expected"), CASES)
def test_table_one_byte_at_a_time(body: bytes, expected: list[ServerSentEvent | Comment]) -> None:
    parser = EventStreamParser()
    got = [item for i in range(len(body)) for item in parser.feed(body[i : i + 1])]
    assert got == expected


@pytest.mark.parametrize(
    ("body", "retry"),
    [
        (b"retry: 2500\n\n", 2500),
        (b"retry: 25x\n\n", None),
        (b"retry: -1\n\n", None),
        (b"retry: \xd9\xa3\n\n", None),
        (b"retry: 10\nretry: 20\n", 20),
    ],
)
def test_retry(body: bytes, retry: int | None) -> None:
    parser = EventStreamParser()
    assert parser.feed(body) == []
    assert parser.retry == retry


def test_the_resume_id_moves_at_the_blank_line() -> None:
    parser = EventStreamParser()
    parser.feed(b"id: 5\ndata: x\n\nid: 6\n")
    assert parser.last_event_id == "5"  # frame 6 is not complete yet
    assert parser.feed(b"\n") == []  # an id-only frame: nothing dispatched ...
    assert parser.last_event_id == "6"  # ... but its id is the resume point


def test_a_crlf_split_between_chunks_is_one_line_end() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []  # the LF of the same CRLF, not a blank line
    assert parser.feed(b"\r\n") == [E("a")]


def test_the_servers_frames_and_comments_parse_back() -> None:
    events = [Event(i, "attendance", {"type": "attendance", "user_id": str(i)}) for i in (1, 2)]
    body = b"retry: 3000\n\n" + encode_comment("ok") + b"".join(e.frame for e in events)
    parser = EventStreamParser()
    items = parser.feed(body)
    assert items[0] == Comment("ok")
    assert [(int(e.id), json.loads(e.data)) for e in items[1:] if isinstance(e, E)] == [
        (e.id, e.payload) for e in events
    ]
    assert parser.retry == 3000


# --- properties ---------------------------------------------------------------------------
_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"))
_line_end = st.sampled_from([b"\n", b"\r", b"\r\n"])
_field = st.one_of(
    st.tuples(st.sampled_from(["data", "id", "event", "retry", ":", "other"]), _text),
    st.just(("", "")),  # a blank line
)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(_field, max_size=30))
    out = b""
    for name, value in lines:
        if name == ":":
            text = ":" + value
        elif name:
            text = f"{name}: {value}"
        else:
            text = ""
        out += text.encode() + draw(_line_end)
    return out + draw(st.binary(max_size=8))


@given(streams(), st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_chunking_gives_the_same_items(body: bytes, cuts: list[int]) -> None:
    whole = EventStreamParser()
    expected = whole.feed(body)
    parser = EventStreamParser()
    got: list[ServerSentEvent | Comment] = []
    start = 0
    for cut in sorted(c % (len(body) + 1) for c in cuts) + [len(body)]:
        got += parser.feed(body[start:cut])
        start = max(start, cut)
    assert got == expected
    assert (parser.last_event_id, parser.retry) == (whole.last_event_id, whole.retry)


@given(st.binary(max_size=300))
def test_never_raises_on_any_bytes(body: bytes) -> None:
    parser = EventStreamParser()
    for item in parser.feed(body[:150]) + parser.feed(body[150:]):
        assert isinstance(item, ServerSentEvent | Comment)


@given(st.lists(st.tuples(st.integers(min_value=1, max_value=10**12), _text), max_size=20))
def test_frames_of_any_payload_parse_back(items: list[tuple[int, str]]) -> None:
    body = b"".join(f"id: {i}\ndata: {json.dumps(t)}\n\n".encode() for i, t in items)
    got = parse_event_stream(body)
    assert [(int(e.id), json.loads(e.data)) for e in got if isinstance(e, E)] == items
