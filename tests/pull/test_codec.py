"""Tests for zkserver.pull.codec: expected values from pyzk 0.9 and docs/protocols.md §B."""

from __future__ import annotations

import struct
from datetime import datetime

import attrs
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from zk import const
from zk.base import ZK
from zk.base import make_commkey as pyzk_make_commkey
from zk.user import User

from zkserver.pull import codec
from zkserver.pull.codec import (
    AttendanceEvent,
    BufferReply,
    Cmd,
    CodecError,
    EventCode,
    FrameError,
    OtherEvent,
    Packet,
    PullRecord,
    Reply,
    Sizes,
    TcpDeframer,
)
from zkserver.records import DeviceUser, Punch


def _pyzk() -> ZK:
    """A ZK object without a socket, to call its pure private helpers."""
    zk = ZK.__new__(ZK)
    zk.verbose = False
    zk.encoding = "UTF-8"
    return zk


u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
packets = st.builds(Packet, u16, u16, u16, st.binary(max_size=300))
device_times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31))
digits = st.text("0123456789", min_size=1, max_size=9).map(lambda s: str(int(s)))


# --------------------------------------------------------------------------- constants


def test_constants_match_pyzk() -> None:
    for name, member in {**Cmd.__members__, **Reply.__members__}.items():
        if hasattr(const, f"CMD_{name}"):
            assert member == getattr(const, f"CMD_{name}"), name
    for name, member in codec.EventFlag.__members__.items():
        assert member == getattr(const, f"EF_{name}") == getattr(codec, f"EF_{name}")
    assert (Cmd.PREPARE_BUFFER, Cmd.READ_BUFFER) == (1503, 1504)
    assert codec.Fct.USER == const.FCT_USER and codec.Fct.ATTLOG == const.FCT_ATTLOG
    assert EventCode.ATTLOG == 1
    assert codec.TCP_MAGIC == struct.pack(
        "<HH", const.MACHINE_PREPARE_DATA_1, const.MACHINE_PREPARE_DATA_2
    )


# --------------------------------------------------------------------------- packets


def _ones_sum(buf: bytes) -> int:
    buf = buf + b"\x00" * (len(buf) % 2)
    total = sum(struct.unpack(f"<{len(buf) // 2}H", buf))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@given(packets)
def test_packet_round_trip(p: Packet) -> None:
    raw = codec.encode_packet(p)
    assert len(raw) == 8 + len(p.data)
    assert codec.decode_packet(raw) == p
    # one's-complement sum over the whole packet, checksum included, is 0xFFFF
    assert _ones_sum(raw) in (0xFFFF, 0)


@given(st.binary(max_size=200))
@example(b"")
@example(b"\xff\xff")
def test_checksum_is_pyzk_plus_one(buf: bytes) -> None:
    ours = codec.checksum(buf)
    theirs = struct.unpack("<H", _pyzk()._ZK__create_checksum(buf))[0]
    # pyzk adds USHRT_MAX instead of 0x10000 after complementing: one less than correct
    assert ours == (theirs + 1) & 0xFFFF or (ours, theirs) == (0, 0xFFFE)


def test_checksum_table() -> None:
    # CMD_CONNECT, session 0, reply 0: sum 1000 -> ~1000
    assert codec.checksum(struct.pack("<4H", 1000, 0, 0, 0)) == 0xFFFF - 1000
    assert codec.encode_packet(Packet(1000, 0, 0)) == bytes.fromhex("e803 17fc 0000 0000")
    assert codec.checksum(b"\x01") == 0xFFFE  # odd byte is the low byte of a word
    assert codec.checksum(b"\xff\xff\x02\x00") == 0xFFFD  # end-around carry


@given(u16, st.binary(max_size=64), u16, st.integers(0, 0xFFFE))
def test_decode_pyzk_header(command: int, data: bytes, session: int, reply: int) -> None:
    raw = _pyzk()._ZK__create_header(command, data, session, reply)
    p = codec.decode_packet(raw)
    assert p == Packet(command, session, codec.next_reply_id(reply), data)


def test_next_reply_id_wraps_like_pyzk() -> None:
    assert codec.next_reply_id(0) == 1
    assert codec.next_reply_id(const.USHRT_MAX - 1) == 0


@given(st.binary(max_size=7))
def test_decode_packet_short(raw: bytes) -> None:
    with pytest.raises(CodecError):
        codec.decode_packet(raw)


def test_encode_packet_out_of_range() -> None:
    with pytest.raises(CodecError):
        codec.encode_packet(Packet(70000, 0, 0))


# --------------------------------------------------------------------------- TCP framing


def test_frame_tcp_layout() -> None:
    inner = codec.encode_packet(Packet(Cmd.CONNECT))
    assert codec.frame_tcp(inner) == b"\x50\x50\x82\x7d" + struct.pack("<I", 8) + inner
    assert codec.encode_tcp(Packet(Cmd.CONNECT)) == codec.frame_tcp(inner)


@given(st.lists(packets, min_size=1, max_size=4))
def test_deframer_split_at_every_position(ps: list[Packet]) -> None:
    stream = b"".join(codec.encode_tcp(p) for p in ps)
    for i in range(len(stream) + 1):
        d = TcpDeframer()
        got = d.feed(stream[:i]) + d.feed(stream[i:])
        assert got == ps
        assert d.buffered == 0


@given(st.lists(packets, max_size=6), st.data())
def test_deframer_random_chunkings(ps: list[Packet], data: st.DataObject) -> None:
    stream = b"".join(codec.encode_tcp(p) for p in ps)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    d = TcpDeframer()
    got: list[Packet] = []
    prev = 0
    for c in [*cuts, len(stream)]:
        got += d.feed(stream[prev:c])
        prev = c
    assert got == ps
    assert d.buffered == 0


def test_deframer_partial_keeps_waiting() -> None:
    frame = codec.encode_tcp(Packet(Reply.ACK_OK, 7, 3, b"abc"))
    d = TcpDeframer()
    assert d.feed(frame[:-1]) == []
    assert d.buffered == len(frame) - 1
    assert d.feed(frame[-1:]) == [Packet(Reply.ACK_OK, 7, 3, b"abc")]


@pytest.mark.parametrize(
    "stream",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x50\x50\x82\x7e" + struct.pack("<I", 8) + bytes(8),
        b"\x50\x50\x82\x7d" + struct.pack("<I", 16 * 1024 * 1024 + 1),
        b"\x50\x50\x82\x7d" + struct.pack("<I", 0xFFFFFFFF),
        b"\x50\x50\x82\x7d" + struct.pack("<I", 4) + bytes(4),
    ],
)
def test_deframer_garbage(stream: bytes) -> None:
    d = TcpDeframer()
    with pytest.raises(FrameError):
        d.feed(stream)
    with pytest.raises(FrameError):  # stays broken: the session must be reset
        d.feed(codec.encode_tcp(Packet(Cmd.CONNECT)))


def test_deframer_error_after_good_frame() -> None:
    d = TcpDeframer()
    good = codec.encode_tcp(Packet(Cmd.EXIT, 1, 2))
    assert d.feed(good) == [Packet(Cmd.EXIT, 1, 2)]
    with pytest.raises(FrameError):
        d.feed(b"garbage!")


def test_deframer_custom_cap() -> None:
    d = TcpDeframer(max_length=100)
    with pytest.raises(FrameError):
        d.feed(codec.encode_tcp(Packet(Cmd.DATA, data=bytes(200))))


@given(st.lists(st.binary(max_size=40), max_size=8))
def test_deframer_arbitrary_bytes_only_frame_errors(chunks: list[bytes]) -> None:
    d = TcpDeframer()
    try:
        for c in chunks:
            for p in d.feed(c):
                assert isinstance(p, Packet)
    except FrameError:
        pass


# --------------------------------------------------------------------------- commkey


@given(st.integers(0, 999_999_999), u16, st.integers(0, 255))
@example(0, 0, 50)
@example(123456, 4321, 50)
def test_commkey_matches_pyzk(key: int, session: int, ticks: int) -> None:
    try:
        expected = pyzk_make_commkey(key, session, ticks)
    except struct.error:  # pyzk overflows where the SDK's uint32 wraps
        assume(False)
    assert codec.make_commkey(key, session, ticks) == expected
    assert codec.check_commkey(expected, key, session)


@given(u32, u16)
def test_commkey_default_ticks_and_overflow(key: int, session: int) -> None:
    k = codec.make_commkey(key, session)
    assert len(k) == 4 and k[2] == 50


def test_check_commkey_rejects() -> None:
    good = codec.make_commkey(1234, 99)
    assert not codec.check_commkey(good, 1235, 99)
    assert not codec.check_commkey(good[:3], 1234, 99)


# --------------------------------------------------------------------------- time


@given(device_times.map(lambda d: d.replace(microsecond=0)))
def test_time_matches_pyzk_and_round_trips(dt: datetime) -> None:
    zk = _pyzk()
    t = codec.encode_time(dt)
    assert t == zk._ZK__encode_time(dt)
    assert codec.decode_time(t) == dt == zk._ZK__decode_time(struct.pack("<I", t))
    assert codec.unpack_time(codec.pack_time(dt)) == dt


def test_time_table() -> None:
    # docs/protocols.md §B.4 formula, by hand
    dt = datetime(2024, 3, 15, 12, 34, 56)
    assert codec.encode_time(dt) == (
        (24 * 12 * 31 + 2 * 31 + 14) * 86400 + (12 * 60 + 34) * 60 + 56
    )
    assert codec.decode_time(0) == datetime(2000, 1, 1)


@given(u32)
def test_decode_time_any_uint32(t: int) -> None:
    try:
        assert isinstance(codec.decode_time(t), datetime)
    except CodecError:
        pass


def test_decode_time_impossible_date() -> None:
    with pytest.raises(CodecError):  # 31 February
        codec.decode_time(codec.encode_time(datetime(2024, 2, 1)) + 30 * 86400)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2255, 12, 31)))
def test_event_time_round_trip(dt: datetime) -> None:
    dt = dt.replace(microsecond=0)
    raw = codec.encode_event_time(dt)
    assert raw == bytes([dt.year - 2000, dt.month, dt.day, dt.hour, dt.minute, dt.second])
    assert codec.decode_event_time(raw) == dt == _pyzk()._ZK__decode_timehex(raw)


@given(st.binary(max_size=8))
def test_event_time_garbage(raw: bytes) -> None:
    try:
        codec.decode_event_time(raw)
    except CodecError:
        pass


# --------------------------------------------------------------------------- free sizes


def test_free_sizes_table() -> None:
    fields = list(range(100, 120))
    s = codec.parse_free_sizes(struct.pack("<20i", *fields))
    assert (s.users, s.fingers, s.records, s.cards) == (104, 106, 108, 112)
    assert (s.fingers_cap, s.users_cap, s.records_cap) == (114, 115, 116)
    assert (s.fingers_available, s.users_available, s.records_available) == (117, 118, 119)
    assert s.faces is None
    s = codec.parse_free_sizes(struct.pack("<23i", *fields, 3, 0, 400))
    assert (s.faces, s.faces_cap) == (3, 400)


def test_free_sizes_read_by_pyzk() -> None:
    sizes = Sizes.of(5, 7, 1234, faces=2, faces_cap=300)
    raw = codec.encode_free_sizes(sizes)
    assert len(raw) == 92
    zk = _pyzk()
    zk._ZK__send_command = lambda *a, **k: {"status": True, "code": 2000}
    zk._ZK__data = raw
    assert zk.read_sizes()
    assert (zk.users, zk.fingers, zk.records, zk.faces, zk.faces_cap) == (5, 7, 1234, 2, 300)
    assert (zk.users_av, zk.rec_av, zk.rec_cap) == (10_000 - 5, 100_000 - 1234, 100_000)


sizes_st = st.builds(
    Sizes,
    *[st.integers(-(2**31), 2**31 - 1)] * 10,
    st.one_of(st.none(), st.integers(0, 2**31 - 1)),
    st.integers(0, 2**31 - 1),
)


@given(sizes_st)
def test_free_sizes_round_trip(s: Sizes) -> None:
    raw = codec.encode_free_sizes(s)
    assert len(raw) == (80 if s.faces is None else 92)
    back = codec.parse_free_sizes(raw)
    assert back == (s if s.faces is not None else s.__class__(**{**_asdict(s), "faces_cap": None}))


def _asdict(s: Sizes) -> dict:
    return attrs.asdict(s)


def test_free_sizes_short() -> None:
    with pytest.raises(CodecError):
        codec.parse_free_sizes(bytes(79))


# --------------------------------------------------------------------------- users


def test_user28_from_pyzk_layout() -> None:
    rec = User(7, "Ann", 14, "123", "3", "1001", 555).repack29()[1:]
    assert len(rec) == 28
    u = codec.parse_user_record(rec, 28)
    assert u == DeviceUser("1001", "Ann", 14, "555", "123", "3", 7)
    ds = struct.pack("<I", 28) + rec
    assert codec.parse_users(ds, 1) == [u]


def test_user72_from_pyzk_layout() -> None:
    rec = User(9, "Zoë Ñ", 0, "pw", "grp", "A-17", 0).repack73()[1:]
    assert len(rec) == 72
    u = codec.parse_user_record(rec, 72)
    assert u == DeviceUser("A-17", "Zoë Ñ", 0, "", "pw", "grp", 9)


def test_user_name_gbk_fallback() -> None:
    rec = struct.pack("<HB8s24sIx7sx24s", 1, 0, b"", "张三".encode("gbk"), 0, b"", b"1")
    assert codec.parse_user_record(rec, 72).name == "张三"


text8 = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
users28 = st.builds(
    DeviceUser,
    user_id=st.integers(0, 2**32 - 1).map(str),
    name=text8.filter(lambda s: len(s.encode()) <= 8),
    privilege=st.integers(0, 255),
    card=st.integers(1, 2**32 - 1).map(str) | st.just(""),
    password=text8.filter(lambda s: len(s.encode()) <= 5),
    group=st.integers(0, 255).map(str),
    uid=st.integers(0, 0xFFFF),
)
text24 = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=24)
users72 = st.builds(
    DeviceUser,
    user_id=text24.filter(lambda s: len(s.encode()) <= 24),
    name=text24.filter(lambda s: len(s.encode()) <= 24),
    privilege=st.integers(0, 255),
    card=st.integers(1, 2**32 - 1).map(str) | st.just(""),
    password=text8.filter(lambda s: len(s.encode()) <= 8),
    group=text8.filter(lambda s: len(s.encode()) <= 7),
    uid=st.integers(0, 0xFFFF),
)


@given(st.lists(users28, max_size=20))
def test_users28_round_trip(users: list[DeviceUser]) -> None:
    ds = codec.encode_users(users, 28)
    assert len(ds) == 4 + 28 * len(users)
    assert codec.parse_users(ds, len(users)) == users
    assert codec.parse_users(ds, record_size=28) == users


@given(st.lists(users72, max_size=20))
def test_users72_round_trip(users: list[DeviceUser]) -> None:
    ds = codec.encode_users(users, 72)
    assert codec.parse_users(ds, len(users)) == users
    assert codec.parse_users(ds) == users  # 72 is preferred when both sizes divide


def _pyzk_users(ds: bytes, count: int) -> list[User]:
    zk = _pyzk()
    zk.read_sizes = lambda: True
    zk.users = count
    zk.read_with_buffer = lambda *a, **k: (ds, len(ds))
    return zk.get_users()


@settings(max_examples=50)
@given(st.lists(users28, min_size=1, max_size=5, unique_by=lambda u: u.uid), st.booleans())
def test_users_read_by_pyzk(users: list[DeviceUser], wide: bool) -> None:
    if wide:
        pass  # numeric user ids fit both layouts
    size = 72 if wide else 28
    ds = codec.encode_users(users, size)
    got = _pyzk_users(ds, len(users))
    for theirs, ours in zip(got, users, strict=True):
        assert (theirs.uid, theirs.user_id, theirs.privilege) == (
            ours.uid,
            ours.user_id,
            ours.privilege,
        )
        assert theirs.name.strip() in (ours.name.strip(), f"NN-{ours.user_id}")
        assert str(theirs.card) == (ours.card or "0")


def test_encode_users_assigns_uids_and_checks() -> None:
    ds = codec.encode_users([DeviceUser("5"), DeviceUser("6")], 28)
    assert [u.uid for u in codec.parse_users(ds, 2)] == [1, 2]
    with pytest.raises(CodecError):
        codec.encode_users([DeviceUser("A1", uid=1)], 28)  # 28-byte user ids are integers
    with pytest.raises(CodecError):
        codec.encode_users([DeviceUser("1", uid=1)], 27)  # shorter than every layout
    ds30 = codec.encode_users([DeviceUser("1", uid=1)], 30)  # the 28-byte layout + 2 bytes
    assert len(ds30) == 4 + 30 and codec.parse_users(ds30, 1) == [DeviceUser("1", uid=1, group="0")]


def test_parse_users_errors() -> None:
    assert codec.parse_users(struct.pack("<I", 0)) == []
    with pytest.raises(CodecError):
        codec.parse_users(b"\x01")
    with pytest.raises(CodecError):
        codec.parse_users(struct.pack("<I", 56) + bytes(28))  # truncated
    with pytest.raises(CodecError):
        codec.parse_users(struct.pack("<I", 54) + bytes(54), 2)  # 27-byte records: too short
    with pytest.raises(CodecError):
        codec.parse_users(struct.pack("<I", 61) + bytes(61), 2)  # not 2 records; no size fits


# --------------------------------------------------------------------------- attendance


def _pyzk_attendance(ds: bytes, count: int, users: list[User]) -> list:
    zk = _pyzk()
    zk.read_sizes = lambda: True
    zk.records = count
    zk.get_users = lambda: users
    zk.read_with_buffer = lambda *a, **k: (ds, len(ds))
    return zk.get_attendance()


def test_attendance_layouts_table() -> None:
    t = struct.pack("<I", codec.encode_time(datetime(2023, 1, 2, 8, 0, 1)))
    r8 = struct.pack("<HB4sB", 3, 1, t, 0)
    r16 = struct.pack("<I4sBB2sI", 1001, t, 15, 1, b"", 7)
    r40 = struct.pack("<H24sB4sB8s", 3, b"1001", 4, t, 5, b"")
    when = datetime(2023, 1, 2, 8, 0, 1)
    users = [DeviceUser("1001", uid=3)]
    ds8 = struct.pack("<I", 8) + r8
    assert codec.parse_attendance(ds8, 1, users=users) == [PullRecord("1001", when, 0, 1, 3)]
    assert codec.parse_attendance(ds8, 1) == [PullRecord("3", when, 0, 1, 3)]
    ds16 = struct.pack("<I", 16) + r16
    assert codec.parse_attendance(ds16, 1, users=users) == [PullRecord("1001", when, 1, 15, 3, 7)]
    ds40 = struct.pack("<I", 40) + r40
    assert codec.parse_attendance(ds40, 1) == [PullRecord("1001", when, 5, 4, 3)]
    assert codec.parse_attendance(ds40) == [PullRecord("1001", when, 5, 4, 3)]


att_user_ids = st.integers(1, 2**32 - 1).map(str)


@st.composite
def attendance_records(draw: st.DrawFn, size: int) -> PullRecord:
    ts = draw(device_times).replace(microsecond=0)
    if size == 8:
        uid = draw(st.integers(0, 0xFFFF))
        return PullRecord(str(uid), ts, draw(st.integers(0, 255)), draw(st.integers(0, 255)), uid)
    if size == 16:
        return PullRecord(
            draw(att_user_ids),
            ts,
            draw(st.integers(0, 255)),
            draw(st.integers(0, 255)),
            None,
            draw(st.integers(0, 2**32 - 1)),
        )
    return PullRecord(
        draw(text24.filter(lambda s: len(s.encode()) <= 24)),
        ts,
        draw(st.integers(0, 255)),
        draw(st.integers(0, 255)),
        draw(st.integers(0, 0xFFFF)),
    )


# (no pytest.mark.parametrize with @given here: pytest-twisted breaks that combination)
@given(
    st.sampled_from([8, 16, 40]).flatmap(
        lambda n: st.tuples(st.just(n), st.lists(attendance_records(n), max_size=20))
    )
)
def test_attendance_round_trip(case: tuple[int, list[PullRecord]]) -> None:
    size, records = case
    ds = codec.encode_attendance(records, size)
    assert len(ds) == 4 + size * len(records)
    assert codec.parse_attendance(ds, len(records)) == records
    assert codec.parse_attendance(ds, record_size=size) == records


@settings(max_examples=100)
@given(
    st.sampled_from([8, 16, 40]).flatmap(
        lambda n: st.tuples(st.just(n), st.lists(attendance_records(n), min_size=1, max_size=5))
    )
)
def test_attendance_read_by_pyzk(case: tuple[int, list[PullRecord]]) -> None:
    size, records = case
    ds = codec.encode_attendance(records, size)
    got = _pyzk_attendance(ds, len(records), [])
    for theirs, ours in zip(got, records, strict=True):
        # pyzk: status = verify method, punch = in/out state
        assert (theirs.user_id, theirs.timestamp) == (ours.user_id, ours.timestamp)
        assert (theirs.status, theirs.punch) == (ours.verify_method, ours.state)


def test_to_punch() -> None:
    r = PullRecord("1001", datetime(2024, 5, 6, 7, 8, 9), state=1, verify_method=15, uid=3)
    p = codec.to_punch(r)
    assert p == Punch("1001", "2024-05-06 07:08:09", status=1, verify=15)
    assert p.raw == {
        "user_id": "1001",
        "timestamp": "2024-05-06 07:08:09",
        "status": 1,
        "verify_method": 15,
        "uid": 3,
    }
    p = codec.to_punch(PullRecord("9", datetime(2024, 1, 1), 0, 1, workcode=42))
    assert p.workcode == "42" and "uid" not in p.raw and p.raw["workcode"] == 42
    e = codec.parse_event(1, codec.encode_attendance_event("7", 5, 1, datetime(2024, 1, 1)))
    assert codec.to_punch(e) == Punch("7", "2024-01-01 00:00:00", 5, 1)


# --------------------------------------------------------------------------- events

EVENT_FORMATS = {
    10: "<HBB6s",
    12: "<IBB6s",
    14: "<HBB6s4s",
    32: "<24sBB6s",
    36: "<24sBB6s4s",
    37: "<24sBB6s5s",
    52: "<24sBB6s20s",
}


@pytest.mark.parametrize("size", sorted(EVENT_FORMATS))
def test_event_layouts_table(size: int) -> None:
    fmt = EVENT_FORMATS[size]
    when = bytes([24, 5, 6, 7, 8, 9])
    user: int | bytes = 4321 if fmt[1] in "HI" else b"4321"
    args = [user, 15, 1, when] + (
        [b"\x01" * struct.calcsize("<" + fmt[-2:])] if size in (14, 36, 37, 52) else []
    )
    ev = codec.parse_event(1, struct.pack(fmt, *args))
    assert ev == AttendanceEvent("4321", datetime(2024, 5, 6, 7, 8, 9), state=1, verify_method=15)
    assert (
        len(codec.encode_attendance_event("4321", 1, 15, datetime(2024, 5, 6, 7, 8, 9), size))
        == size
    )


def test_event_longer_than_52() -> None:
    raw = codec.encode_attendance_event("12", 0, 1, datetime(2024, 1, 2), 52) + b"xyz"
    ev = codec.parse_event(1, raw)
    assert isinstance(ev, AttendanceEvent) and ev.user_id == "12" and ev.extra.endswith(b"xyz")


@given(
    st.sampled_from(sorted(EVENT_FORMATS)),
    digits.filter(lambda s: int(s) <= 0xFFFF),
    st.integers(0, 255),
    st.integers(0, 255),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2255, 12, 31)),
)
def test_event_round_trip(size: int, user_id: str, state: int, verify: int, dt: datetime) -> None:
    dt = dt.replace(microsecond=0)
    raw = codec.encode_attendance_event(user_id, state, verify, dt, size)
    assert len(raw) == size
    assert codec.parse_event(EventCode.ATTLOG, raw) == AttendanceEvent(user_id, dt, state, verify)


@given(text24.filter(lambda s: len(s.encode()) <= 24))
def test_event_text_user_ids(user_id: str) -> None:
    raw = codec.encode_attendance_event(user_id, 0, 1, datetime(2030, 1, 1))
    assert codec.parse_event(1, raw).user_id == user_id


def test_other_events_and_bad_sizes() -> None:
    assert codec.parse_event(EventCode.FINGER, b"abc") == OtherEvent(2, b"abc")
    assert codec.parse_event(12345, b"") == OtherEvent(12345, b"")
    for size in (0, 8, 11, 40, 51):
        with pytest.raises(CodecError):
            codec.parse_event(1, bytes(size))
    with pytest.raises(CodecError):
        codec.encode_attendance_event("1", 0, 0, datetime(2024, 1, 1), 9)
    with pytest.raises(CodecError):
        codec.encode_attendance_event("70000", 0, 0, datetime(2024, 1, 1), 10)


def test_reg_event() -> None:
    assert codec.encode_reg_event(codec.EF_ATTLOG) == b"\x01\x00\x00\x00"
    assert codec.parse_reg_event(b"\x01\x00\x00\x00") == codec.EventFlag.ATTLOG
    with pytest.raises(CodecError):
        codec.parse_reg_event(b"\x01")


# --------------------------------------------------------------------------- bulk reads


def test_bulk_read_payloads() -> None:
    assert codec.encode_prepare_buffer(9, 5) == struct.pack("<bhii", 1, 9, 5, 0)
    assert codec.parse_prepare_buffer(codec.encode_prepare_buffer(13, 0, 3)) == (13, 0, 3)
    assert codec.encode_read_chunk(0xFFC0, 100) == struct.pack("<ii", 0xFFC0, 100)
    assert codec.parse_read_chunk(codec.encode_read_chunk(5, 6)) == (5, 6)
    assert codec.parse_prepare_data(codec.encode_prepare_data(1234)) == 1234
    assert len(codec.encode_prepare_data(1)) == 8


def test_prepare_buffer_reply() -> None:
    ack = Packet(Reply.ACK_OK, 1, 2, codec.encode_prepare_buffer_ack(70000))
    assert struct.unpack("I", ack.data[1:5])[0] == 70000  # where pyzk reads it
    assert codec.parse_prepare_buffer_reply(ack) == BufferReply(70000)
    inline = Packet(Cmd.DATA, 1, 2, b"\x04\x00\x00\x00abcd")
    assert codec.parse_prepare_buffer_reply(inline) == BufferReply(8, inline.data)
    with pytest.raises(CodecError):
        codec.parse_prepare_buffer_reply(Packet(Reply.ACK_ERROR, 1, 2))
    with pytest.raises(CodecError):
        codec.parse_prepare_buffer_reply(Packet(Reply.ACK_OK, 1, 2, b"\x00"))


@given(st.integers(0, 10**6), st.sampled_from([codec.TCP_MAX_CHUNK, codec.UDP_MAX_CHUNK, 7]))
def test_chunk_plan(total: int, max_chunk: int) -> None:
    plan = codec.chunk_plan(total, max_chunk)
    assert sum(s for _, s in plan) == total
    assert all(0 < s <= max_chunk for _, s in plan)
    assert [start for start, _ in plan] == [i * max_chunk for i in range(len(plan))]
    # same reads as pyzk's read_with_buffer
    full, remain = divmod(total, max_chunk)
    assert len(plan) == full + (1 if remain else 0)


def test_chunk_plan_table() -> None:
    assert codec.chunk_plan(0) == []
    assert codec.chunk_plan(0xFFC0 + 1) == [(0, 0xFFC0), (0xFFC0, 1)]
    assert codec.chunk_plan(40000, codec.UDP_MAX_CHUNK) == [
        (0, 16384),
        (16384, 16384),
        (32768, 7232),
    ]


# --------------------------------------------------------------------------- options


def test_options_and_version() -> None:
    assert codec.encode_option_request("~SerialNumber") == b"~SerialNumber\x00"
    assert codec.parse_option_request(b"~SerialNumber\x00") == "~SerialNumber"
    assert codec.parse_option_reply(b"~SerialNumber=ABC123\x00junk") == ("~SerialNumber", "ABC123")
    assert codec.encode_option_reply("~ZKFPVersion", "10") == b"~ZKFPVersion=10\x00"
    assert codec.parse_option_reply(b"IPAddress=1=2\x00") == ("IPAddress", "1=2")
    with pytest.raises(CodecError):
        codec.parse_option_reply(b"\x00")
    assert codec.parse_version(b"Ver 6.60 Apr 28 2017\x00\x00") == "Ver 6.60 Apr 28 2017"
    assert codec.parse_version(codec.encode_version("Ver 8.0")) == "Ver 8.0"


def test_serial_read_by_pyzk() -> None:
    zk = _pyzk()
    zk._ZK__send_command = lambda *a, **k: {"status": True, "code": 2000}
    zk._ZK__data = codec.encode_option_reply("~SerialNumber", "DGD9190019050335134")
    assert zk.get_serialnumber() == "DGD9190019050335134"
    zk._ZK__data = codec.encode_version("Ver 6.60 Apr 28 2017")
    assert zk.get_firmware_version() == "Ver 6.60 Apr 28 2017"


# --------------------------------------------------------------------------- robustness


@settings(max_examples=300)
@given(st.binary(max_size=120), u16)
def test_decoders_raise_only_codec_error(raw: bytes, code: int) -> None:
    decoders = [
        codec.decode_packet,
        codec.parse_free_sizes,
        codec.parse_users,
        lambda b: codec.parse_users(b, 1),
        lambda b: codec.parse_users(b, record_size=28),
        codec.parse_attendance,
        lambda b: codec.parse_attendance(b, 2),
        lambda b: codec.parse_attendance(b, record_size=8),
        lambda b: codec.parse_event(1, b),
        lambda b: codec.parse_event(code, b),
        codec.decode_event_time,
        codec.unpack_time,
        codec.parse_prepare_buffer,
        codec.parse_read_chunk,
        codec.parse_prepare_data,
        codec.parse_reg_event,
        codec.parse_option_request,
        codec.parse_option_reply,
        codec.parse_version,
        lambda b: codec.parse_prepare_buffer_reply(Packet(code, 0, 0, b)),
        lambda b: codec.parse_user_record(b, 28),
        lambda b: codec.parse_user_record(b, 72),
        lambda b: TcpDeframer().feed(b),
    ]
    for decode in decoders:
        try:
            decode(raw)
        except CodecError:
            pass


@settings(max_examples=200)
@given(st.lists(st.sampled_from([28, 72]), min_size=1, max_size=3), st.binary(max_size=300))
def test_parse_users_garbage_dataset(_sizes: list[int], body: bytes) -> None:
    ds = struct.pack("<I", len(body)) + body
    for kw in ({}, {"record_size": 28}, {"record_size": 72}):
        try:
            codec.parse_users(ds, **kw)
            codec.parse_attendance(ds, **{k: 8 for k in kw})
        except CodecError:
            pass


# --------------------------------------------------------------------------- any firmware's sizes
# docs/protocols.md §B.8: size = length / count, the largest documented layout
# that fits is read from the start of each record, the rest is kept as ``extra``.


def _t(dt: datetime) -> bytes:
    return struct.pack("<I", codec.encode_time(dt))


def _att40(uid: int, user_id: str, verify: int, dt: datetime, state: int) -> bytes:
    return struct.pack("<H24sB4sB8s", uid, user_id.encode(), verify, _t(dt), state, b"")


def test_mb560_49_byte_records() -> None:
    """The issue's terminal: GET_FREE_SIZES says 3, the dataset is 4 + 147 bytes."""
    body = b"".join(
        _att40(uid, user, verify, dt, state) + bytes(9)
        for uid, user, verify, dt, state in [
            (1, "7001", 15, datetime(2026, 11, 28, 8, 0, 0), 0),
            (2, "7002", 1, datetime(2026, 11, 28, 8, 5, 0), 1),
            (1, "7001", 15, datetime(2026, 11, 28, 17, 0, 0), 1),
        ]
    )
    ds = struct.pack("<I", len(body)) + body
    assert len(ds) == 4 + 147
    expected = [
        PullRecord("7001", datetime(2026, 11, 28, 8, 0, 0), 0, 15, 1),
        PullRecord("7002", datetime(2026, 11, 28, 8, 5, 0), 1, 1, 2),
        PullRecord("7001", datetime(2026, 11, 28, 17, 0, 0), 1, 15, 1),
    ]
    assert codec.parse_attendance(ds, 3) == expected
    assert codec.attendance_record_size(ds, [3]) == 49
    read = codec.read_attendance_dataset(ds, [3])
    assert read.record_size == 49 and read.records == expected and read.unreadable == []
    assert all(r.extra == bytes(9) for r in read.records)
    # zero padding adds nothing to the punch: the same raw_data as a 40-byte record
    assert codec.to_punch(read.records[0]).raw == {
        "user_id": "7001",
        "timestamp": "2026-11-28 08:00:00",
        "status": 0,
        "verify_method": 15,
        "uid": 1,
    }
    assert codec.encode_attendance(expected, 49) == ds


WHEN = datetime(2024, 2, 29, 23, 59, 58)


@pytest.mark.parametrize(
    ("size", "layout"),
    [
        (8, 8),
        (9, 8),
        (12, 8),
        (15, 8),
        (16, 16),
        (17, 16),
        (20, 16),
        (24, 16),
        (32, 16),
        (36, 16),
        (39, 16),
        (40, 40),
        (41, 40),
        (44, 40),
        (48, 40),
        (49, 40),
        (50, 40),
        (52, 40),
        (56, 40),
        (60, 40),
        (64, 40),
        (72, 40),
        (80, 40),
        (96, 40),
        (128, 40),
        (255, 40),
        (1000, 40),
    ],
)
def test_attendance_any_record_size(size: int, layout: int) -> None:
    assert codec.attendance_layout(size) == layout
    head = {
        8: struct.pack("<HB4sB", 3, 4, _t(WHEN), 1),
        16: struct.pack("<I4sBB2sI", 1234, _t(WHEN), 4, 1, b"", 9),
        40: _att40(3, "1234", 4, WHEN, 1),
    }[layout]
    extra = bytes(i % 256 for i in range(1, size - layout + 1))
    body = (head + extra) * 4
    ds = struct.pack("<I", len(body)) + body
    records = codec.parse_attendance(ds, 4, users=[DeviceUser("1234", uid=3)])
    assert len(records) == 4
    for r in records:
        assert (r.user_id, r.timestamp, r.state, r.verify_method) == ("1234", WHEN, 1, 4)
        assert r.extra == extra
    if any(extra):
        assert codec.to_punch(records[0]).raw["extra"] == extra.hex()
    else:
        assert "extra" not in codec.to_punch(records[0]).raw
    assert codec.encode_attendance(records, size, [DeviceUser("1234", uid=3)]) == ds


def test_attendance_record_size_rules() -> None:
    ds = codec.encode_attendance([PullRecord("1", WHEN, 0, 1)] * 3, 49)
    # the count moved between GET_FREE_SIZES and the read: the count read after it fits
    assert codec.attendance_record_size(ds, [2, 3]) == 49
    # count unknown (None) or 0: the size the device used before, else a documented size
    assert codec.attendance_record_size(ds, [None], hint=49) == 49
    assert codec.attendance_record_size(ds, [0], hint=49) == 49
    with pytest.raises(CodecError, match="147 bytes fits no known record size"):
        codec.attendance_record_size(ds, [0])
    with pytest.raises(CodecError, match="147 bytes is not 2 or 4 records"):
        codec.attendance_record_size(ds, [2, 4])
    with pytest.raises(CodecError, match="147 bytes is not 2 records"):
        codec.parse_attendance(ds, 2)
    # a count giving records shorter than every layout is not taken
    assert codec.attendance_record_size(codec.encode_attendance([], 40), [3]) is None
    ds40 = codec.encode_attendance([PullRecord("1", WHEN, 0, 1)] * 2, 40)
    assert codec.attendance_record_size(ds40, [20]) == 40  # 4-byte records: no; 40 divides
    assert codec.parse_attendance(ds40, 0) == [PullRecord("1", WHEN, 0, 1, 0)] * 2
    with pytest.raises(CodecError, match="shorter than every known layout"):
        codec.parse_attendance(ds40, record_size=5)
    with pytest.raises(CodecError, match="not 48-byte records"):
        codec.parse_attendance(ds40, record_size=48)


def test_attendance_unreadable_records_are_listed() -> None:
    good = _att40(1, "5", 1, WHEN, 0) + bytes(9)
    # day 31 of February (every month has 31 days in device time): an impossible date
    bad = _att40(2, "6", 1, WHEN, 0)[:27] + struct.pack("<I", (31 + 30) * 86400) + bytes(18)
    ds = struct.pack("<I", 98) + good + bad
    read = codec.read_attendance_dataset(ds, [2])
    assert [r.user_id for r in read.records] == ["5"]
    assert read.unreadable[0][0] == bad and "record 2" in read.unreadable[0][1]
    with pytest.raises(CodecError):
        codec.parse_attendance(ds, 2)
    with pytest.raises(CodecError, match="none of 1 49-byte attendance records decodes"):
        codec.read_attendance_dataset(struct.pack("<I", 49) + bad, [1])


@st.composite
def long_records(draw: st.DrawFn) -> tuple[int, list[PullRecord]]:
    size = draw(st.integers(40, 400))
    records = draw(st.lists(attendance_records(40), max_size=8))
    extras = draw(
        st.lists(
            st.binary(min_size=size - 40, max_size=size - 40),
            min_size=len(records),
            max_size=len(records),
        )
    )
    return size, [attrs.evolve(r, extra=e) for r, e in zip(records, extras, strict=True)]


@given(long_records())
def test_any_record_size_from_40_round_trips(case: tuple[int, list[PullRecord]]) -> None:
    size, records = case
    ds = codec.encode_attendance(records, size)
    assert len(ds) == 4 + size * len(records)
    back = codec.parse_attendance(ds, len(records))
    assert back == records
    assert [r.extra for r in back] == [r.extra for r in records]
    assert codec.parse_attendance(ds, record_size=size) == records
    if records:
        assert codec.attendance_record_size(ds, [len(records)]) == size


@given(st.integers(8, 39), st.lists(device_times, min_size=1, max_size=5))
def test_short_record_sizes_read_8_or_16_layout(size: int, times: list[datetime]) -> None:
    records = [
        PullRecord(str(i + 1), t.replace(microsecond=0), 1, 2, i + 1) for i, t in enumerate(times)
    ]
    ds = codec.encode_attendance(records, size)
    back = codec.parse_attendance(ds, len(records))
    expected = records if size < 16 else [attrs.evolve(r, uid=None) for r in records]
    assert back == expected


@pytest.mark.parametrize(
    ("size", "layout"),
    [
        (28, 28),
        (29, 28),
        (40, 28),
        (64, 28),
        (71, 28),
        (72, 72),
        (73, 72),
        (80, 72),
        (96, 72),
        (200, 72),
    ],
)
def test_users_any_record_size(size: int, layout: int) -> None:
    assert codec.user_layout(size) == layout
    users = [
        DeviceUser("7001", "Ann", 0, "123", "", "1", uid=1),
        DeviceUser("7002", "Bob", 14, "", "", "1", uid=2),
    ]
    ds = codec.encode_users(users, size)
    assert len(ds) == 4 + 2 * size
    assert codec.parse_users(ds, 2) == users
    assert codec.user_record_size(ds, [2]) == size
    with pytest.raises(CodecError):
        codec.user_layout(27)


@given(st.integers(28, 300), st.lists(users28, min_size=1, max_size=5, unique_by=lambda u: u.uid))
def test_users_any_size_round_trip(size: int, users: list[DeviceUser]) -> None:
    ds = codec.encode_users(users, size)
    assert codec.parse_users(ds, len(users)) == users


@pytest.mark.parametrize(
    "size",
    [
        10,
        11,
        12,
        13,
        14,
        15,
        16,
        18,
        20,
        24,
        28,
        31,
        32,
        33,
        34,
        36,
        37,
        38,
        40,
        44,
        48,
        51,
        52,
        53,
        56,
        60,
        64,
        72,
        100,
    ],
)
def test_event_any_size(size: int) -> None:
    when = datetime(2026, 11, 28, 8, 0, 0)
    user = "7001"
    raw = codec.encode_attendance_event(user, 1, 15, when, size, extra=b"\x05" * 100)
    assert len(raw) == size
    ev = codec.parse_event(EventCode.ATTLOG, raw)
    assert ev == AttendanceEvent(user, when, 1, 15)
    head = 32 if size >= 32 else 12 if size in (12, 13) else 10
    assert ev.extra == b"\x05" * (size - head)


def test_event_layout_picked_by_valid_time() -> None:
    when = datetime(2026, 11, 28, 8, 0, 0)
    # 16 bytes built on the 4-byte user id layout (12) + 4: read with the preferred 2-byte
    # layout its time would be (verify, state, YY, MM, DD, hh): month 0 is not a date, so
    # the 4-byte layout is read
    raw = struct.pack("<IBB6s4s", 70001, 15, 0, codec.encode_event_time(when), b"\x00" * 4)
    assert codec.parse_event(1, raw) == AttendanceEvent("70001", when, 0, 15)
    # a 14..31-byte payload whose 2-byte layout time is valid is read with that layout
    raw = struct.pack("<HBB6s10s", 7001, 15, 1, codec.encode_event_time(when), bytes(10))
    assert codec.parse_event(1, raw) == AttendanceEvent("7001", when, 1, 15)
    with pytest.raises(CodecError, match="attendance event of 40 bytes"):
        codec.parse_event(1, bytes(40))
    with pytest.raises(CodecError, match="shorter than 10 bytes"):
        codec.parse_event(1, bytes(9))


@given(
    st.integers(10, 200),
    digits.filter(lambda s: int(s) <= 0xFFFF),
    st.integers(0, 255),
    st.integers(0, 255),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2255, 12, 31)),
    st.binary(max_size=200),
)
def test_event_any_size_round_trip(
    size: int, user_id: str, state: int, verify: int, dt: datetime, extra: bytes
) -> None:
    dt = dt.replace(microsecond=0)
    raw = codec.encode_attendance_event(user_id, state, verify, dt, size, extra=extra)
    assert len(raw) == size
    assert codec.parse_event(1, raw) == AttendanceEvent(user_id, dt, state, verify)
