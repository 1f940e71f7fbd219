"""Pure codec for the binary ZK protocol (port 4370, TCP or UDP): bytes in, records out.

No reactor and no sockets here: the server's client protocol and the device emulator both
build on these functions.  Every decoder raises only :class:`CodecError` (or its subclass
:class:`FrameError`) on bad input.

Checksums: :func:`encode_packet` writes the true one's-complement checksum.  pyzk 0.9 sends
a value one lower (and computes it over the pre-increment reply id), and devices do not check
it, so :func:`decode_packet` never verifies checksums; an emulator must accept any value.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import IntEnum, IntFlag

from attrs import field, frozen

from zkserver import device_text
from zkserver.records import TIMESTAMP_FORMAT, DeviceUser, Punch

__all__ = [
    "USHRT_MAX",
    "TCP_MAGIC",
    "TCP_HEADER_SIZE",
    "HEADER_SIZE",
    "MAX_FRAME_LENGTH",
    "TCP_MAX_CHUNK",
    "UDP_MAX_CHUNK",
    "UDP_DATA_SIZE",
    "USER_RECORD_SIZES",
    "ATTENDANCE_RECORD_SIZES",
    "ATTENDANCE_EVENT_SIZES",
    "Cmd",
    "Reply",
    "Fct",
    "EventFlag",
    "EventCode",
    "EF_ATTLOG",
    "EF_FINGER",
    "EF_ENROLLUSER",
    "EF_ENROLLFINGER",
    "EF_BUTTON",
    "EF_UNLOCK",
    "EF_VERIFY",
    "EF_FPFTR",
    "EF_ALARM",
    "CodecError",
    "FrameError",
    "Packet",
    "checksum",
    "encode_packet",
    "decode_packet",
    "next_reply_id",
    "frame_tcp",
    "encode_tcp",
    "TcpDeframer",
    "make_commkey",
    "check_commkey",
    "encode_time",
    "decode_time",
    "pack_time",
    "unpack_time",
    "encode_event_time",
    "decode_event_time",
    "Sizes",
    "parse_free_sizes",
    "encode_free_sizes",
    "record_size_for",
    "user_layout",
    "pin_key",
    "user_record_size",
    "parse_user_record",
    "encode_user_record",
    "parse_users",
    "encode_users",
    "PullRecord",
    "AttendanceDataset",
    "attendance_layout",
    "attendance_record_size",
    "read_attendance_dataset",
    "parse_attendance",
    "encode_attendance",
    "to_punch",
    "AttendanceEvent",
    "OtherEvent",
    "parse_event",
    "encode_attendance_event",
    "encode_reg_event",
    "parse_reg_event",
    "BufferReply",
    "encode_prepare_buffer",
    "parse_prepare_buffer",
    "encode_prepare_buffer_ack",
    "parse_prepare_buffer_reply",
    "encode_read_chunk",
    "parse_read_chunk",
    "encode_prepare_data",
    "parse_prepare_data",
    "chunk_plan",
    "encode_option_request",
    "parse_option_request",
    "encode_option_reply",
    "parse_option_reply",
    "encode_version",
    "parse_version",
]

USHRT_MAX = 0xFFFF
TCP_MAGIC = b"\x50\x50\x82\x7d"
TCP_HEADER_SIZE = 8
HEADER_SIZE = 8
MAX_FRAME_LENGTH = 16 * 1024 * 1024
TCP_MAX_CHUNK = 0xFFC0
UDP_MAX_CHUNK = 16 * 1024
UDP_DATA_SIZE = 1024

_HEADER = struct.Struct("<4H")
_TCP_TOP = struct.Struct("<4sI")


# --------------------------------------------------------------------------- constants


class Cmd(IntEnum):
    """Command codes a client sends (and PREPARE_DATA/DATA, which devices send too)."""

    DB_RRQ = 7
    USER_WRQ = 8
    USERTEMP_RRQ = 9
    USERTEMP_WRQ = 10
    OPTIONS_RRQ = 11
    OPTIONS_WRQ = 12
    ATTLOG_RRQ = 13
    CLEAR_DATA = 14
    CLEAR_ATTLOG = 15
    DELETE_USER = 18
    DELETE_USERTEMP = 19
    CLEAR_ADMIN = 20
    UNLOCK = 31
    CLEAR_OPLOG = 33
    OPLOG_RRQ = 34
    GET_FREE_SIZES = 50
    ENABLE_CLOCK = 57
    STARTVERIFY = 60
    STARTENROLL = 61
    CANCELCAPTURE = 62
    STATE_RRQ = 64
    WRITE_LCD = 66
    CLEAR_LCD = 67
    GET_PINWIDTH = 69
    DOORSTATE_RRQ = 75
    GET_TIME = 201
    SET_TIME = 202
    REG_EVENT = 500
    CONNECT = 1000
    EXIT = 1001
    ENABLEDEVICE = 1002
    DISABLEDEVICE = 1003
    RESTART = 1004
    POWEROFF = 1005
    SLEEP = 1006
    RESUME = 1007
    CAPTUREFINGER = 1009
    TEST_TEMP = 1011
    CAPTUREIMAGE = 1012
    REFRESHDATA = 1013
    REFRESHOPTION = 1014
    TESTVOICE = 1017
    GET_VERSION = 1100
    CHANGE_SPEED = 1101
    AUTH = 1102
    PREPARE_DATA = 1500
    DATA = 1501
    FREE_DATA = 1502
    PREPARE_BUFFER = 1503
    READ_BUFFER = 1504


class Reply(IntEnum):
    """Reply codes a device sends."""

    ACK_OK = 2000
    ACK_ERROR = 2001
    ACK_DATA = 2002
    ACK_RETRY = 2003
    ACK_REPEAT = 2004
    ACK_UNAUTH = 2005
    ACK_ERROR_DATA = 0xFFFB
    ACK_ERROR_INIT = 0xFFFC
    ACK_ERROR_CMD = 0xFFFD
    ACK_UNKNOWN = 0xFFFF


class Fct(IntEnum):
    """Data-set selectors (``fct``) for the prepare-buffer command."""

    ATTLOG = 1
    FINGERTMP = 2
    OPLOG = 4
    USER = 5
    SMS = 6
    UDATA = 7
    WORKCODE = 8


class EventFlag(IntFlag):
    """REG_EVENT subscription bits."""

    ATTLOG = 1
    FINGER = 1 << 1
    ENROLLUSER = 1 << 2
    ENROLLFINGER = 1 << 3
    BUTTON = 1 << 4
    UNLOCK = 1 << 5
    VERIFY = 1 << 7
    FPFTR = 1 << 8
    ALARM = 1 << 9


class EventCode(IntEnum):
    """Event code carried in the session field of a device's command-500 packet."""

    ATTLOG = 1
    FINGER = 1 << 1
    ENROLLUSER = 1 << 2
    ENROLLFINGER = 1 << 3
    BUTTON = 1 << 4
    UNLOCK = 1 << 5
    VERIFY = 1 << 7
    FPFTR = 1 << 8
    ALARM = 1 << 9


EF_ATTLOG = EventFlag.ATTLOG
EF_FINGER = EventFlag.FINGER
EF_ENROLLUSER = EventFlag.ENROLLUSER
EF_ENROLLFINGER = EventFlag.ENROLLFINGER
EF_BUTTON = EventFlag.BUTTON
EF_UNLOCK = EventFlag.UNLOCK
EF_VERIFY = EventFlag.VERIFY
EF_FPFTR = EventFlag.FPFTR
EF_ALARM = EventFlag.ALARM


class CodecError(ValueError):
    """Bytes that do not decode, or values that cannot be encoded."""


class FrameError(CodecError):
    """Corrupt TCP framing: the stream cannot be resynchronised, reset the session."""


# --------------------------------------------------------------------------- packets


@frozen
class Packet:
    """One inner packet (the checksum is computed on encode, ignored on decode)."""

    command: int
    session_id: int = 0
    reply_id: int = 0
    data: bytes = b""


def checksum(buf: bytes) -> int:
    """One's-complement 16-bit LE word sum of ``buf`` (odd tail byte padded with zero)."""
    if len(buf) % 2:
        buf += b"\x00"
    total = sum(struct.unpack(f"<{len(buf) // 2}H", buf))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def encode_packet(p: Packet) -> bytes:
    """Serialise ``p`` as an inner packet with the correct checksum."""
    try:
        head = _HEADER.pack(p.command, 0, p.session_id, p.reply_id)
    except struct.error as e:
        raise CodecError(f"packet field out of range: {p!r}") from e
    data = bytes(p.data)
    csum = checksum(head + data)
    return _HEADER.pack(p.command, csum, p.session_id, p.reply_id) + data


def decode_packet(raw: bytes) -> Packet:
    """Parse an inner packet (a UDP datagram, or a TCP frame's body)."""
    if len(raw) < HEADER_SIZE:
        raise CodecError(f"packet too short: {len(raw)} bytes, need {HEADER_SIZE}")
    command, _csum, session_id, reply_id = _HEADER.unpack_from(raw)
    return Packet(command, session_id, reply_id, bytes(raw[HEADER_SIZE:]))


def next_reply_id(reply_id: int) -> int:
    """The reply id for the next command (wraps like the SDK: 65534 -> 0)."""
    return (reply_id + 1) % USHRT_MAX


def frame_tcp(inner: bytes) -> bytes:
    """Prefix an inner packet with the TCP header (magic + uint32 LE length)."""
    return _TCP_TOP.pack(TCP_MAGIC, len(inner)) + inner


def encode_tcp(p: Packet) -> bytes:
    """``frame_tcp(encode_packet(p))``: one TCP frame, to be written in one send."""
    return frame_tcp(encode_packet(p))


class TcpDeframer:
    """Incremental TCP deframer: feed stream bytes, get whole packets.

    Handles frames split across reads and several frames per read.  On wrong magic or an
    absurd length it raises :class:`FrameError` and stays broken (every later ``feed``
    raises again): the caller must drop the connection.
    """

    def __init__(self, max_length: int = MAX_FRAME_LENGTH) -> None:
        self.max_length = max_length
        self._buf = bytearray()
        self._error: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Packet]:
        """Add ``data``; return every packet now complete, in order."""
        if self._error is not None:
            raise self._error
        self._buf += data
        out: list[Packet] = []
        buf = self._buf
        pos = 0
        try:
            while len(buf) - pos >= TCP_HEADER_SIZE:
                magic, length = _TCP_TOP.unpack_from(buf, pos)
                if magic != TCP_MAGIC:
                    raise FrameError(f"bad TCP magic {bytes(magic).hex()}")
                if length < HEADER_SIZE or length > self.max_length:
                    raise FrameError(f"bad TCP frame length {length}")
                end = pos + TCP_HEADER_SIZE + length
                if len(buf) < end:
                    break
                out.append(decode_packet(bytes(buf[pos + TCP_HEADER_SIZE : end])))
                pos = end
        except FrameError as e:
            self._error = e
            self._buf = bytearray()
            raise
        del buf[:pos]
        return out


# --------------------------------------------------------------------------- auth


def make_commkey(key: int, session_id: int, ticks: int = 50) -> bytes:
    """The 4-byte CMD_AUTH payload for comm key ``key`` (same bytes as the SDK/pyzk)."""
    key = int(key) & 0xFFFFFFFF
    rev = int(f"{key:032b}"[::-1], 2)  # bit-reverse the 32-bit key
    k = (rev + int(session_id)) & 0xFFFFFFFF
    b = bytes(x ^ y for x, y in zip(struct.pack("<I", k), b"ZKSO", strict=True))
    b = b[2:] + b[:2]  # swap the 16-bit halves
    t = ticks & 0xFF
    return bytes((b[0] ^ t, b[1] ^ t, t, b[3] ^ t))


def check_commkey(data: bytes, key: int, session_id: int) -> bool:
    """Whether a CMD_AUTH payload matches ``key`` (ticks are read from the payload)."""
    if len(data) < 4:
        return False
    return bytes(data[:4]) == make_commkey(key, session_id, data[2])


# --------------------------------------------------------------------------- time


def encode_time(dt: datetime) -> int:
    """Device time: seconds in a calendar where every month has 31 days (year % 100)."""
    days = (dt.year % 100) * 12 * 31 + (dt.month - 1) * 31 + dt.day - 1
    return days * 86400 + (dt.hour * 60 + dt.minute) * 60 + dt.second


def decode_time(t: int) -> datetime:
    """Inverse of :func:`encode_time` (years from 2000)."""
    if t < 0:
        raise CodecError(f"negative device time {t}")
    rest, second = divmod(t, 60)
    rest, minute = divmod(rest, 60)
    rest, hour = divmod(rest, 24)
    rest, day = divmod(rest, 31)
    year, month = divmod(rest, 12)
    try:
        return datetime(year + 2000, month + 1, day + 1, hour, minute, second)
    except ValueError as e:
        raise CodecError(f"invalid device time {t}: {e}") from e


def pack_time(dt: datetime) -> bytes:
    """SET_TIME payload / GET_TIME reply: ``<I encode_time(dt)>``."""
    try:
        return struct.pack("<I", encode_time(dt))
    except struct.error as e:
        raise CodecError(f"time out of range: {dt}") from e


def unpack_time(data: bytes) -> datetime:
    """Decode a 4-byte device time (extra bytes ignored)."""
    if len(data) < 4:
        raise CodecError(f"time needs 4 bytes, got {len(data)}")
    return decode_time(struct.unpack_from("<I", data)[0])


def encode_event_time(dt: datetime) -> bytes:
    """The 6-byte real-time event time ``YY MM DD hh mm ss`` (year - 2000)."""
    if not 2000 <= dt.year <= 2255:
        raise CodecError(f"event year out of range: {dt.year}")
    return bytes((dt.year - 2000, dt.month, dt.day, dt.hour, dt.minute, dt.second))


def decode_event_time(data: bytes) -> datetime:
    """Inverse of :func:`encode_event_time`."""
    if len(data) != 6:
        raise CodecError(f"event time needs 6 bytes, got {len(data)}")
    y, mo, d, h, mi, s = data
    try:
        return datetime(2000 + y, mo, d, h, mi, s)
    except ValueError as e:
        raise CodecError(f"invalid event time {bytes(data).hex()}: {e}") from e


# --------------------------------------------------------------------------- free sizes


@frozen
class Sizes:
    """GET_FREE_SIZES reply: counts, capacities and free slots."""

    users: int = 0
    fingers: int = 0
    records: int = 0
    cards: int = 0
    fingers_cap: int = 0
    users_cap: int = 0
    records_cap: int = 0
    fingers_available: int = 0
    users_available: int = 0
    records_available: int = 0
    faces: int | None = None
    faces_cap: int | None = None

    @classmethod
    def of(
        cls,
        users: int,
        fingers: int,
        records: int,
        *,
        users_cap: int = 10_000,
        fingers_cap: int = 10_000,
        records_cap: int = 100_000,
        cards: int = 0,
        faces: int | None = None,
        faces_cap: int | None = None,
    ) -> Sizes:
        """Sizes consistent with the counts (available = capacity - count)."""
        return cls(
            users=users,
            fingers=fingers,
            records=records,
            cards=cards,
            fingers_cap=fingers_cap,
            users_cap=users_cap,
            records_cap=records_cap,
            fingers_available=fingers_cap - fingers,
            users_available=users_cap - users,
            records_available=records_cap - records,
            faces=faces,
            faces_cap=faces_cap,
        )


def parse_free_sizes(data: bytes) -> Sizes:
    """Parse the 80-byte ``<20i>`` reply, plus face counts when 92 bytes are present."""
    if len(data) < 80:
        raise CodecError(f"free sizes need 80 bytes, got {len(data)}")
    f = struct.unpack_from("<20i", data)
    faces = faces_cap = None
    if len(data) >= 92:
        faces, _, faces_cap = struct.unpack_from("<3i", data, 80)
    return Sizes(
        users=f[4],
        fingers=f[6],
        records=f[8],
        cards=f[12],
        fingers_cap=f[14],
        users_cap=f[15],
        records_cap=f[16],
        fingers_available=f[17],
        users_available=f[18],
        records_available=f[19],
        faces=faces,
        faces_cap=faces_cap,
    )


def encode_free_sizes(sizes: Sizes) -> bytes:
    """80 bytes, or 92 when ``sizes.faces`` is set."""
    f = [0] * 20
    f[4], f[6], f[8], f[12] = sizes.users, sizes.fingers, sizes.records, sizes.cards
    f[14], f[15], f[16] = sizes.fingers_cap, sizes.users_cap, sizes.records_cap
    f[17], f[18], f[19] = sizes.fingers_available, sizes.users_available, sizes.records_available
    try:
        out = struct.pack("<20i", *f)
        if sizes.faces is not None:
            out += struct.pack("<3i", sizes.faces, 0, sizes.faces_cap or 0)
    except struct.error as e:
        raise CodecError(f"sizes out of range: {sizes!r}") from e
    return out


# --------------------------------------------------------------------------- text helpers


def _decode_text(raw: bytes, encoding: str = "") -> str:
    """NUL-terminated device text in the device's ``encoding``; ``""``: UTF-8, else GBK,
    else latin-1 (never fails; zkserver.device_text, docs/protocols.md §B.4)."""
    return device_text.decode(bytes(raw).split(b"\x00", 1)[0], encoding)


def _encode_text(text: str, width: int, encoding: str = "") -> bytes:
    """``text`` in ``encoding`` (``""``: UTF-8) cut to ``width`` bytes on a character
    boundary, NUL padded."""
    encoding = device_text.write_encoding(encoding)
    raw = text.encode(encoding, errors="replace")
    if len(raw) > width:
        raw = raw[:width].decode(encoding, errors="ignore").encode(encoding)
    return raw.ljust(width, b"\x00")


def _int_field(value: str, what: str) -> int:
    try:
        return int(value) if value else 0
    except ValueError as e:
        raise CodecError(f"{what} must be numeric for this record size: {value!r}") from e


# --------------------------------------------------------------------------- record sizes
#
# Firmware differs in how long each record of a dataset is (docs/protocols.md §B.8):
# every known size starts with one of a few documented layouts and may carry more
# bytes after it (e.g. 49-byte attendance records: the 40-byte layout + 9 bytes).  So the
# record size is learnt from the dataset (length / record count) and the largest known
# layout that fits is read from the start of each record; the rest is kept as ``extra``.


def _layout_for(size: int, layouts: Sequence[int], what: str) -> int:
    fits = [n for n in layouts if n <= size]
    if not fits:
        raise CodecError(
            f"{what} record of {size} bytes is shorter than every known layout"
            f" ({', '.join(map(str, sorted(layouts)))} bytes)"
        )
    return max(fits)


def record_size_for(
    length: int,
    counts: Iterable[int | None] = (),
    *,
    hint: int | None = None,
    layouts: Sequence[int],
    what: str = "dataset",
) -> int:
    """The size of each record in a dataset body of ``length`` bytes.

    Tried in order: ``length / n`` for each record count ``n`` in ``counts`` (from
    GET_FREE_SIZES; several when the count may have moved during the read) that divides
    the length into records of at least the smallest layout; ``hint`` (the size this device
    used before) when it divides the length; the largest known layout size dividing it.
    Raises :class:`CodecError` (naming the length and the counts) when none fits.
    """
    smallest = min(layouts)
    tried = [n for n in counts if n is not None and n > 0]
    for n in tried:
        size, rem = divmod(length, n)
        if not rem and size >= smallest:
            return size
    if hint is not None and hint >= smallest and length % hint == 0:
        return hint
    fits = [s for s in layouts if length % s == 0]
    if fits:
        return max(fits)
    if tried:
        counts_text = " or ".join(str(n) for n in dict.fromkeys(tried))
        raise CodecError(
            f"{what} dataset of {length} bytes is not {counts_text} records"
            f" of {smallest} bytes or more"
        )
    raise CodecError(f"{what} dataset of {length} bytes fits no known record size")


def _dataset_body(dataset: bytes) -> bytes:
    if not dataset:  # a bulk read of size 0 is an empty table (docs/protocols.md §B.4)
        return b""
    if len(dataset) < 4:
        raise CodecError(f"dataset needs a 4-byte length, got {len(dataset)} bytes")
    (total,) = struct.unpack_from("<I", dataset)
    if len(dataset) - 4 < total:
        raise CodecError(f"dataset truncated: {len(dataset) - 4} of {total} bytes")
    return bytes(dataset[4 : 4 + total])


def _pad(extra: bytes, width: int) -> bytes:
    return bytes(extra[:width]).ljust(width, b"\x00")


# --------------------------------------------------------------------------- users

_USER28 = struct.Struct("<HB5s8sIxBhI")
_USER72 = struct.Struct("<HB8s24sIx7sx24s")
USER_RECORD_SIZES = (28, 72)
"""The documented user layouts; a record of another size is read by :func:`user_layout`."""


def user_layout(record_size: int) -> int:
    """The layout read from a user record: 72 for 72 bytes or more, 28 for 28..71."""
    return _layout_for(record_size, USER_RECORD_SIZES, "user")


def pin_key(user_id: str, layout: int | None) -> str:
    """What identifies the user ``user_id`` on a terminal of user ``layout`` (28 or 72,
    None: unknown): the 28-byte layout keeps the PIN as a number, so ``0012`` and ``12``
    are one user there (``"12"``); the 72-byte layout keeps it as text."""
    if layout == 28 and user_id.isascii() and user_id.isdigit():
        return str(int(user_id))
    return user_id


def parse_user_record(data: bytes, record_size: int, encoding: str = "") -> DeviceUser:
    """One user record (also the CMD_USER_WRQ payload) of ``record_size`` bytes (>= 28);
    text in the device's ``encoding`` (``""``: automatic)."""
    layout = user_layout(record_size)
    if len(data) < record_size:
        raise CodecError(f"user record needs {record_size} bytes, got {len(data)}")
    if layout == 28:
        uid, priv, pwd, name, card, group, _tz, user_id = _USER28.unpack_from(data)
        group_s, user_id_s = str(group), str(user_id)
    else:
        uid, priv, pwd, name, card, group_b, user_id_b = _USER72.unpack_from(data)
        group_s, user_id_s = _decode_text(group_b, encoding), _decode_text(user_id_b, encoding)
    return DeviceUser(
        user_id=user_id_s,
        name=_decode_text(name, encoding),
        privilege=priv,
        card=str(card) if card else "",
        password=_decode_text(pwd, encoding),
        group=group_s,
        uid=uid,
    )


def encode_user_record(
    user: DeviceUser, record_size: int, uid: int | None = None, encoding: str = ""
) -> bytes:
    """Inverse of :func:`parse_user_record`; text (in ``encoding``, ``""``: UTF-8) is cut
    to the field widths, a record longer than its layout is padded with zero bytes."""
    layout = user_layout(record_size)
    uid = user.uid if user.uid is not None else uid
    if uid is None:
        raise CodecError(f"user {user.user_id!r} has no uid")
    card = _int_field(user.card, "card")
    try:
        if layout == 28:
            head = _USER28.pack(
                uid,
                user.privilege,
                _encode_text(user.password, 5, encoding),
                _encode_text(user.name, 8, encoding),
                card,
                _int_field(user.group, "group"),
                0,
                _int_field(user.user_id, "user_id"),
            )
        else:
            head = _USER72.pack(
                uid,
                user.privilege,
                _encode_text(user.password, 8, encoding),
                _encode_text(user.name, 24, encoding),
                card,
                _encode_text(user.group, 7, encoding),
                _encode_text(user.user_id, 24, encoding),
            )
    except struct.error as e:
        raise CodecError(f"user field out of range: {user!r}") from e
    return head.ljust(record_size, b"\x00")


def user_record_size(
    dataset: bytes, counts: Iterable[int | None] = (), *, hint: int | None = None
) -> int | None:
    """The record size of a users dataset (None when it is empty); see :func:`record_size_for`."""
    body = _dataset_body(dataset)
    if not body:
        return None
    return record_size_for(len(body), counts, hint=hint, layouts=USER_RECORD_SIZES, what="user")


def parse_users(
    dataset: bytes,
    count: int | None = None,
    *,
    record_size: int | None = None,
    hint: int | None = None,
    encoding: str = "",
) -> list[DeviceUser]:
    """Users from a ``<I length>`` + records dataset; text in the device's ``encoding``
    (``""``: automatic, docs/protocols.md §B.4).

    The record size is ``record_size``, else ``length / count`` (``count`` from
    GET_FREE_SIZES), else ``hint``, else guessed from the length (72 when both documented
    sizes divide it).  Records of 72 bytes or more are read with the 72-byte layout,
    28..71 with the 28-byte one.
    """
    body = _dataset_body(dataset)
    if not body:
        return []
    if record_size is None:
        record_size = record_size_for(
            len(body), (count,), hint=hint, layouts=USER_RECORD_SIZES, what="user"
        )
    user_layout(record_size)
    if len(body) % record_size:
        raise CodecError(f"user dataset of {len(body)} bytes is not {record_size}-byte records")
    return [
        parse_user_record(body[i : i + record_size], record_size, encoding)
        for i in range(0, len(body), record_size)
    ]


def encode_users(users: Iterable[DeviceUser], record_size: int, encoding: str = "") -> bytes:
    """A users dataset (``<I length>`` + records); users without uid get 1, 2, ..."""
    body = b"".join(
        encode_user_record(u, record_size, uid=i, encoding=encoding)
        for i, u in enumerate(users, start=1)
    )
    return struct.pack("<I", len(body)) + body


# --------------------------------------------------------------------------- attendance

_ATT8 = struct.Struct("<HB4sB")
_ATT16 = struct.Struct("<I4sBB2sI")
_ATT40 = struct.Struct("<H24sB4sB8s")
ATTENDANCE_RECORD_SIZES = (8, 16, 40)
"""The documented attendance layouts; other sizes are read by :func:`attendance_layout`."""


def attendance_layout(record_size: int) -> int:
    """The layout read from an attendance record: 40 for 40 bytes or more, 16 for
    16..39, 8 for 8..15 (the largest documented layout that fits)."""
    return _layout_for(record_size, ATTENDANCE_RECORD_SIZES, "attendance")


@frozen
class PullRecord:
    """One attendance record read from a pull device.

    ``state`` is the in/out state (pyzk's ``punch``); ``verify_method`` is how the user
    verified (pyzk's ``status``).  ``uid`` is the device slot when the layout carries it.
    ``extra`` holds the bytes after the known layout (records longer than it).
    """

    user_id: str
    timestamp: datetime
    state: int
    verify_method: int
    uid: int | None = None
    workcode: int = 0
    extra: bytes = field(default=b"", eq=False)


@frozen
class AttendanceDataset:
    """An attendance dataset as read: the records, their size, and the records that did
    not decode (raw bytes and why), which the caller keeps for an operator."""

    records: list[PullRecord]
    record_size: int | None
    unreadable: list[tuple[bytes, str]] = field(factory=list)


def attendance_record_size(
    dataset: bytes, counts: Iterable[int | None] = (), *, hint: int | None = None
) -> int | None:
    """The record size of an attendance dataset (None when it is empty)."""
    body = _dataset_body(dataset)
    if not body:
        return None
    return record_size_for(
        len(body), counts, hint=hint, layouts=ATTENDANCE_RECORD_SIZES, what="attendance"
    )


def _attendance_record(
    chunk: bytes, layout: int, by_uid: dict[int, str], by_user_id: dict[str, int | None]
) -> PullRecord:
    workcode = 0
    if layout == 8:
        uid, verify, t, state = _ATT8.unpack_from(chunk)
        user_id = by_uid.get(uid, str(uid))
    elif layout == 16:
        uid_int, t, verify, state, _res, workcode = _ATT16.unpack_from(chunk)
        user_id = str(uid_int)
        uid = by_user_id.get(user_id)
    else:
        uid, user_id_b, verify, t, state, _space = _ATT40.unpack_from(chunk)
        user_id = _decode_text(user_id_b)
    ts = decode_time(struct.unpack("<I", t)[0])
    return PullRecord(user_id, ts, state, verify, uid, workcode, bytes(chunk[layout:]))


def read_attendance_dataset(
    dataset: bytes,
    counts: Iterable[int | None] = (),
    *,
    record_size: int | None = None,
    hint: int | None = None,
    users: Iterable[DeviceUser] = (),
) -> AttendanceDataset:
    """Attendance records from a ``<I length>`` + records dataset, of any record size.

    The size is ``record_size``, else found by :func:`attendance_record_size` (``counts``
    from GET_FREE_SIZES, ``hint`` the size seen before).  A record that does not decode
    (an impossible date) is listed in ``unreadable`` and the others are kept; when no
    record decodes, or no size fits, the dataset is unreadable: :class:`CodecError`.
    ``users`` maps 8-byte records' uid to user ids (and fills ``uid`` for 16-byte records).
    """
    body = _dataset_body(dataset)
    if not body:
        return AttendanceDataset([], None)
    if record_size is None:
        record_size = record_size_for(
            len(body), counts, hint=hint, layouts=ATTENDANCE_RECORD_SIZES, what="attendance"
        )
    layout = attendance_layout(record_size)
    if len(body) % record_size:
        raise CodecError(
            f"attendance dataset of {len(body)} bytes is not {record_size}-byte records"
        )
    users = list(users)
    by_uid = {u.uid: u.user_id for u in users if u.uid is not None}
    by_user_id = {u.user_id: u.uid for u in users}
    records: list[PullRecord] = []
    unreadable: list[tuple[bytes, str]] = []
    for i in range(0, len(body), record_size):
        chunk = body[i : i + record_size]
        try:
            records.append(_attendance_record(chunk, layout, by_uid, by_user_id))
        except CodecError as e:
            unreadable.append((chunk, f"record {i // record_size + 1}: {e}"))
    if unreadable and not records:
        count = len(unreadable)
        raise CodecError(
            f"none of {count} {record_size}-byte attendance records decodes ({unreadable[0][1]})"
        )
    return AttendanceDataset(records, record_size, unreadable)


def parse_attendance(
    dataset: bytes,
    count: int | None = None,
    *,
    record_size: int | None = None,
    hint: int | None = None,
    users: Iterable[DeviceUser] = (),
) -> list[PullRecord]:
    """Attendance records from a ``<I length>`` + records dataset; every record must decode.

    Pass ``count`` (records from GET_FREE_SIZES) or ``record_size`` to be exact; otherwise
    ``hint``, else the largest documented size dividing the length, is used.  Any size of
    8 or more is read (see :func:`attendance_layout`).
    """
    read = read_attendance_dataset(
        dataset, (count,), record_size=record_size, hint=hint, users=users
    )
    if read.unreadable:
        raise CodecError(read.unreadable[0][1])
    return read.records


def encode_attendance(
    records: Iterable[PullRecord], record_size: int, users: Iterable[DeviceUser] = ()
) -> bytes:
    """An attendance dataset (``<I length>`` + records) of ``record_size``-byte records.

    Each record is its layout (:func:`attendance_layout`) followed by ``record.extra``,
    cut or zero-padded to the record size.  8-byte records carry only the uid: it is
    ``record.uid``, else looked up in ``users``, else the numeric user id.
    """
    layout = attendance_layout(record_size)
    uids = {u.user_id: u.uid for u in users if u.uid is not None}
    parts = []
    try:
        for r in records:
            t = pack_time(r.timestamp)
            if layout == 8:
                uid = r.uid if r.uid is not None else uids.get(r.user_id)
                if uid is None:
                    uid = _int_field(r.user_id, "user_id")
                head = _ATT8.pack(uid, r.verify_method, t, r.state)
            elif layout == 16:
                uid_int = _int_field(r.user_id, "user_id")
                head = _ATT16.pack(uid_int, t, r.verify_method, r.state, b"", r.workcode)
            else:
                head = _ATT40.pack(
                    r.uid or 0, _encode_text(r.user_id, 24), r.verify_method, t, r.state, b""
                )
            parts.append(head + _pad(r.extra, record_size - layout))
    except struct.error as e:
        raise CodecError(f"attendance field out of range: {e}") from e
    body = b"".join(parts)
    return struct.pack("<I", len(body)) + body


def to_punch(record: PullRecord | AttendanceEvent) -> Punch:
    """The shared :class:`~zkserver.records.Punch` for a pulled record or real-time event.

    Bytes after the known layout are kept in ``raw`` as ``extra`` (hex) unless all zero.
    """
    raw: dict[str, object] = {
        "user_id": record.user_id,
        "timestamp": record.timestamp.strftime(TIMESTAMP_FORMAT),
        "status": record.state,
        "verify_method": record.verify_method,
    }
    uid = getattr(record, "uid", None)
    if uid is not None:
        raw["uid"] = uid
    workcode = getattr(record, "workcode", 0)
    if workcode:
        raw["workcode"] = workcode
    if any(record.extra):
        raw["extra"] = record.extra.hex()
    return Punch(
        user_id=record.user_id,
        timestamp=record.timestamp.strftime(TIMESTAMP_FORMAT),
        status=record.state,
        verify=record.verify_method,
        workcode=str(workcode) if workcode else "",
        raw=raw,
    )


# --------------------------------------------------------------------------- events

# The leading layouts of attendance event payloads: (struct, user id is an integer).
_EVENT_SHORT = (struct.Struct("<HBB6s"), True)  # 10 bytes; 14 = this + 4
_EVENT_LONG = (struct.Struct("<IBB6s"), True)  # 12 bytes
_EVENT_TEXT = (struct.Struct("<24sBB6s"), False)  # 32 bytes; 36, 37, 52 = this + 4, 5, 20
ATTENDANCE_EVENT_SIZES = (10, 12, 14, 32, 36, 37, 52)
"""The documented event sizes; any size of 10 or more is read (see :func:`parse_event`)."""


def _event_layouts(size: int) -> list[tuple[struct.Struct, bool]]:
    """Candidate leading layouts for an event payload of ``size`` bytes, preferred first."""
    if size >= 32:
        return [_EVENT_TEXT]
    if size >= 14:
        return [_EVENT_SHORT, _EVENT_LONG]
    if size >= 12:
        return [_EVENT_LONG, _EVENT_SHORT]
    if size >= 10:
        return [_EVENT_SHORT]
    return []


@frozen
class AttendanceEvent:
    """A real-time attendance event (event code 1)."""

    user_id: str
    timestamp: datetime
    state: int
    verify_method: int
    extra: bytes = field(default=b"", eq=False)


@frozen
class OtherEvent:
    """A real-time event this codec does not decode (finger, enroll, button, alarm...)."""

    code: int
    data: bytes


def parse_event(event_code: int, data: bytes) -> AttendanceEvent | OtherEvent:
    """Decode a command-500 packet's data; ``event_code`` is the packet's session field.

    An attendance payload of any size of 10 bytes or more is read by size range: 32 or
    more the text user id layout, 14..31 the 2-byte uid layout, 12..13 the 4-byte one,
    10..11 the 2-byte one; where two layouts could apply, the one whose time is a valid
    date wins.  The bytes after the layout are kept in ``extra``.
    """
    if event_code != EventCode.ATTLOG:
        return OtherEvent(event_code, bytes(data))
    data = bytes(data)
    layouts = _event_layouts(len(data))
    if not layouts:
        raise CodecError(f"attendance event of {len(data)} bytes is shorter than 10 bytes")
    error: CodecError | None = None
    for layout, numeric in layouts:
        user, verify, state, t = layout.unpack_from(data)
        try:
            when = decode_event_time(t)
        except CodecError as e:
            error = error or e
            continue
        user_id = str(user) if numeric else _decode_text(user)
        return AttendanceEvent(user_id, when, state, verify, data[layout.size :])
    assert error is not None
    raise CodecError(f"attendance event of {len(data)} bytes: {error}")


def encode_attendance_event(
    user_id: str, state: int, verify: int, dt: datetime, size: int = 36, extra: bytes = b""
) -> bytes:
    """Attendance event data (command 500, session field 1) of ``size`` bytes (>= 10):
    the preferred layout for that size, then ``extra`` cut or zero-padded."""
    layouts = _event_layouts(size)
    if not layouts:
        raise CodecError(f"attendance event size {size} is below 10 bytes")
    layout, numeric = layouts[0]
    user: int | bytes = _int_field(user_id, "user_id") if numeric else _encode_text(user_id, 24)
    try:
        head = layout.pack(user, verify, state, encode_event_time(dt))
    except struct.error as e:
        raise CodecError(f"event field out of range: {e}") from e
    return head + _pad(extra, size - layout.size)


def encode_reg_event(flags: int) -> bytes:
    """CMD_REG_EVENT payload ``<I flags>``."""
    return struct.pack("<I", flags)


def parse_reg_event(data: bytes) -> EventFlag:
    """Flags from a CMD_REG_EVENT payload."""
    if len(data) < 4:
        raise CodecError(f"REG_EVENT needs 4 bytes, got {len(data)}")
    return EventFlag(struct.unpack_from("<I", data)[0])


# --------------------------------------------------------------------------- bulk reads

_PREPARE_BUFFER = struct.Struct("<bhii")
_READ_CHUNK = struct.Struct("<ii")


@frozen
class BufferReply:
    """Reply to the prepare-buffer command: the whole dataset inline, or its size."""

    size: int
    data: bytes | None = None  # set when the device answered CMD_DATA


def encode_prepare_buffer(command: int, fct: int = 0, ext: int = 0) -> bytes:
    """Payload of command 1503: ``<bhii>(1, command, fct, ext)``."""
    try:
        return _PREPARE_BUFFER.pack(1, command, fct, ext)
    except struct.error as e:
        raise CodecError(f"prepare-buffer field out of range: {e}") from e


def parse_prepare_buffer(data: bytes) -> tuple[int, int, int]:
    """(command, fct, ext) from a 1503 payload."""
    if len(data) < _PREPARE_BUFFER.size:
        raise CodecError(f"prepare-buffer needs {_PREPARE_BUFFER.size} bytes, got {len(data)}")
    _one, command, fct, ext = _PREPARE_BUFFER.unpack_from(data)
    return command, fct, ext


def encode_prepare_buffer_ack(size: int) -> bytes:
    """ACK_OK payload announcing a dataset of ``size`` bytes: ``<BI>(0, size)``."""
    return struct.pack("<BI", 0, size)


def parse_prepare_buffer_reply(p: Packet) -> BufferReply:
    """Interpret the device's reply to 1503 (CMD_DATA inline or ACK_OK with a size)."""
    if p.command == Cmd.DATA:
        return BufferReply(len(p.data), p.data)
    if p.command == Reply.ACK_OK:
        if len(p.data) < 5:
            raise CodecError(f"prepare-buffer ACK needs 5 bytes, got {len(p.data)}")
        return BufferReply(struct.unpack_from("<I", p.data, 1)[0])
    raise CodecError(f"prepare-buffer refused: reply code {p.command}")


def encode_read_chunk(start: int, size: int) -> bytes:
    """Payload of command 1504: ``<ii>(start, size)``."""
    try:
        return _READ_CHUNK.pack(start, size)
    except struct.error as e:
        raise CodecError(f"read-chunk field out of range: {e}") from e


def parse_read_chunk(data: bytes) -> tuple[int, int]:
    """(start, size) from a 1504 payload."""
    if len(data) < _READ_CHUNK.size:
        raise CodecError(f"read-chunk needs {_READ_CHUNK.size} bytes, got {len(data)}")
    return _READ_CHUNK.unpack_from(data)


def encode_prepare_data(size: int) -> bytes:
    """CMD_PREPARE_DATA payload (8 bytes) announcing ``size`` bytes of DATA."""
    return struct.pack("<II", size, 0)


def parse_prepare_data(data: bytes) -> int:
    """Size announced by a CMD_PREPARE_DATA payload."""
    if len(data) < 4:
        raise CodecError(f"PREPARE_DATA needs 4 bytes, got {len(data)}")
    return struct.unpack_from("<I", data)[0]


def chunk_plan(total: int, max_chunk: int = TCP_MAX_CHUNK) -> list[tuple[int, int]]:
    """(start, size) reads covering ``total`` bytes, each at most ``max_chunk``."""
    if max_chunk <= 0:
        raise ValueError("max_chunk must be positive")
    return [(s, min(max_chunk, total - s)) for s in range(0, max(total, 0), max_chunk)]


# --------------------------------------------------------------------------- options


def encode_option_request(key: str) -> bytes:
    """OPTIONS_RRQ payload: ``key`` NUL-terminated (e.g. ``~SerialNumber``)."""
    return key.encode("utf-8") + b"\x00"


def parse_option_request(data: bytes) -> str:
    """The option key from an OPTIONS_RRQ payload."""
    return _decode_text(data)


def encode_option_reply(key: str, value: str) -> bytes:
    """OPTIONS_RRQ reply payload ``key=value\\0``."""
    return f"{key}={value}".encode() + b"\x00"


def parse_option_reply(data: bytes) -> tuple[str, str]:
    """(key, value) from ``key=value\\0``."""
    text = _decode_text(data)
    if "=" not in text:
        raise CodecError(f"option reply without '=': {text!r}")
    key, value = text.split("=", 1)
    return key, value


def encode_version(version: str) -> bytes:
    """GET_VERSION reply payload (``Ver 6.60 ...\\0``)."""
    return version.encode("utf-8") + b"\x00"


def parse_version(data: bytes) -> str:
    """Firmware version string from a GET_VERSION reply (up to the first NUL)."""
    return _decode_text(data).strip()


# --------------------------------------------------------------------------- writes
#
# The forms pyzk 0.9 sends to change a terminal (docs/protocols.md §B.7).
# Encoders for the server, parsers for the emulator.

#: Command 110: store a user and its fingerprint templates from the uploaded buffer.
SAVE_USER_TEMPLATES = 110
#: Largest DATA (1501) piece of an uploaded buffer, as pyzk sends it.
WRITE_CHUNK = 1024
#: Widths (bytes, device encoding) of the text fields of each user layout.
USER_FIELD_WIDTHS: dict[int, dict[str, int]] = {
    28: {"password": 5, "name": 8},
    72: {"password": 8, "name": 24, "group": 7, "user_id": 24},
}
#: OPTIONS_RRQ keys of the algorithm versions (the face key has no tilde, as pyzk asks).
FP_VERSION_OPTION = "~ZKFPVersion"
FACE_VERSION_OPTION = "ZKFaceVersion"
#: Templates' finger byte in the command-110 table is 0x10 + finger index (0-9).
TEMPLATE_FLAG = 0x10

_USER28_WRQ = struct.Struct("<HB5s8sIxBHI")
_USER29_BUF = struct.Struct("<BHB5s8sIxBhI")
_USER73_BUF = struct.Struct("<BHB8s24sIB7sx24s")
_TEMPLATE_HEAD = struct.Struct("<HHbb")
_TEMPLATE_ENTRY = struct.Struct("<bHbI")
_BUFFER_HEAD = struct.Struct("<III")
_ENROLL_TCP = struct.Struct("<24sbb")
_ENROLL_UDP = struct.Struct("<Ib")


class FieldError(CodecError):
    """A value that does not fit the device's form; ``field`` is its JSON name."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@frozen
class Template:
    """A fingerprint template as a pull terminal keeps it (``finger`` 0-9)."""

    uid: int
    finger: int
    valid: int
    data: bytes = field(repr=lambda b: f"<{len(b)} bytes>")


def _device_text(value: str, width: int, what: str, encoding: str) -> bytes:
    encoding = device_text.write_encoding(encoding)  # "" (automatic): UTF-8
    try:
        raw = value.encode(encoding)
    except (UnicodeEncodeError, LookupError) as e:
        raise FieldError(what, f"cannot be written in the device encoding {encoding}") from e
    if b"\x00" in raw:
        raise FieldError(what, "must not contain NUL")
    if len(raw) > width:
        raise FieldError(what, f"is {len(raw)} bytes, the device's user layout holds {width}")
    return raw.ljust(width, b"\x00")


def _number(value: str, what: str, limit: int) -> int:
    text = (value or "").strip()
    if not text:
        return 0
    if not text.isdigit() or int(text) > limit:
        raise FieldError(what, f"must be a number from 0 to {limit} for this user layout")
    return int(text)


def check_user(user: DeviceUser, record_size: int, *, encoding: str = "utf-8") -> None:
    """Raise :class:`FieldError` when ``user`` does not fit the user layout ``record_size``."""
    encode_user_wrq(user, record_size, 1, encoding=encoding)


def _user_values(
    user: DeviceUser, record_size: int, uid: int, encoding: str
) -> tuple[int, int, bytes, bytes, int, int | bytes, int | bytes]:
    if record_size not in USER_RECORD_SIZES:
        raise CodecError(f"unknown user record size {record_size}")
    if not 1 <= uid <= 0xFFFF:
        raise FieldError("uid", "must be 1-65535")
    if not 0 <= user.privilege <= 0xFF:
        raise FieldError("privilege", "must be 0-255")
    widths = USER_FIELD_WIDTHS[record_size]
    password = _device_text(user.password, widths["password"], "password", encoding)
    name = _device_text(user.name, widths["name"], "name", encoding)
    card = _number(user.card, "card", 0xFFFFFFFF)
    group: int | bytes
    user_id: int | bytes
    if record_size == 28:
        group = _number(user.group, "group", 0xFF)
        user_id = _number(user.user_id, "user_id", 0xFFFFFFFF)
    else:
        group = _device_text(user.group, widths["group"], "group", encoding)
        user_id = _device_text(user.user_id, widths["user_id"], "user_id", encoding)
    return uid, user.privilege, password, name, card, group, user_id


def encode_user_wrq(
    user: DeviceUser, record_size: int, uid: int, *, encoding: str = "utf-8"
) -> bytes:
    """USER_WRQ (8) payload: one user record in the device's layout, slot ``uid``.

    28 bytes ``<HB5s8sIxBHI>`` (group and user id numbers, time zone 0) or 72 bytes
    ``<HB8s24sIx7sx24s>`` (group and user id text); text in the device's ``encoding``.
    Never cuts a value: one that does not fit raises :class:`FieldError`.
    """
    uid_, priv, password, name, card, group, user_id = _user_values(
        user, record_size, uid, encoding
    )
    if record_size == 28:
        return _USER28_WRQ.pack(uid_, priv, password, name, card, group, 0, user_id)
    return _USER72.pack(uid_, priv, password, name, card, group, user_id)


def encode_delete_user(uid: int) -> bytes:
    """DELETE_USER (18) payload ``<H uid>`` (pyzk packs ``h``: the same bytes up to 32767)."""
    if not 1 <= uid <= 0xFFFF:
        raise FieldError("uid", "must be 1-65535")
    return struct.pack("<H", uid)


def parse_delete_user(data: bytes) -> int:
    """The uid of a DELETE_USER payload."""
    if len(data) < 2:
        raise CodecError(f"DELETE_USER needs 2 bytes, got {len(data)}")
    return int(struct.unpack_from("<H", data)[0])


def encode_unlock(seconds: float) -> bytes:
    """UNLOCK (31) payload ``<I seconds * 10>`` (tenths of a second)."""
    tenths = round(seconds * 10)
    if not 0 < tenths <= 0xFFFFFFFF:
        raise FieldError("seconds", "must be positive")
    return struct.pack("<I", tenths)


def parse_unlock(data: bytes) -> float:
    """Seconds from an UNLOCK payload."""
    if len(data) < 4:
        raise CodecError(f"UNLOCK needs 4 bytes, got {len(data)}")
    return int(struct.unpack_from("<I", data)[0]) / 10


def encode_start_enroll(user_id: str, finger: int, *, transport: str = "tcp") -> bytes:
    """STARTENROLL (61): ``<24sbb>(user_id, finger, 1)`` on TCP, ``<Ib>`` on UDP (pyzk)."""
    if not 0 <= finger <= 9:
        raise FieldError("finger", "must be 0-9")
    if transport == "udp":
        return _ENROLL_UDP.pack(_number(user_id, "user_id", 0xFFFFFFFF), finger)
    return _ENROLL_TCP.pack(_device_text(user_id, 24, "user_id", "utf-8"), finger, 1)


def parse_start_enroll(data: bytes) -> tuple[str, int]:
    """(user id, finger) from a STARTENROLL payload of either form."""
    if len(data) >= _ENROLL_TCP.size:
        user_id, finger, _one = _ENROLL_TCP.unpack_from(data)
        return _decode_text(user_id), finger
    if len(data) >= _ENROLL_UDP.size:
        number, finger = _ENROLL_UDP.unpack_from(data)
        return str(number), finger
    raise CodecError(f"STARTENROLL needs 5 or 26 bytes, got {len(data)}")


def encode_templates(templates: Iterable[Template]) -> bytes:
    """The FINGERTMP dataset (DB_RRQ 7, fct 2): ``<i total>`` then per template
    ``<HHbb>(size + 6, uid, finger, valid)`` and its bytes."""
    parts = []
    try:
        for t in templates:
            parts.append(_TEMPLATE_HEAD.pack(len(t.data) + 6, t.uid, t.finger, t.valid) + t.data)
    except struct.error as e:
        raise CodecError(f"template field out of range: {e}") from e
    body = b"".join(parts)
    return struct.pack("<i", len(body)) + body


def parse_templates(dataset: bytes) -> list[Template]:
    """Inverse of :func:`encode_templates`."""
    body = _dataset_body(dataset)
    out = []
    pos = 0
    while pos < len(body):
        if len(body) - pos < _TEMPLATE_HEAD.size:
            raise CodecError(f"template header truncated at byte {pos}")
        size, uid, finger, valid = _TEMPLATE_HEAD.unpack_from(body, pos)
        if size < _TEMPLATE_HEAD.size or pos + size > len(body):
            raise CodecError(f"template at byte {pos} declares {size} bytes")
        out.append(Template(uid, finger, valid, bytes(body[pos + 6 : pos + size])))
        pos += size
    return out


def encode_user_buffer_record(
    user: DeviceUser, record_size: int, uid: int, *, encoding: str = "utf-8"
) -> bytes:
    """The user record of the command-110 buffer: a leading byte 2 and the layout
    (29 or 73 bytes; pyzk's ``User.repack29``/``repack73``)."""
    uid_, priv, password, name, card, group, user_id = _user_values(
        user, record_size, uid, encoding
    )
    if record_size == 28:
        return _USER29_BUF.pack(2, uid_, priv, password, name, card, group, 0, user_id)
    return _USER73_BUF.pack(2, uid_, priv, password, name, card, 1, group, user_id)


def encode_user_templates(
    user: DeviceUser,
    record_size: int,
    uid: int,
    templates: Iterable[tuple[int, bytes]],
    *,
    encoding: str = "utf-8",
) -> bytes:
    """The buffer command 110 stores: ``<III>(len(user), len(table), len(templates))``,
    the user record (:func:`encode_user_buffer_record`), a table of
    ``<bHbI>(2, uid, 0x10 + finger, offset)`` and the templates, each ``<H size>`` + bytes.
    ``templates`` are (finger, bytes) pairs."""
    record = encode_user_buffer_record(user, record_size, uid, encoding=encoding)
    table, blobs, offset = [], [], 0
    for finger, data in templates:
        if not 0 <= finger <= 9:
            raise FieldError("index", "must be 0-9")
        if not 0 < len(data) <= 0xFFFF - 6:
            raise FieldError("data", f"a template holds 1-{0xFFFF - 6} bytes")
        table.append(_TEMPLATE_ENTRY.pack(2, uid, TEMPLATE_FLAG + finger, offset))
        blob = struct.pack("<H", len(data)) + data
        blobs.append(blob)
        offset += len(blob)
    t, b = b"".join(table), b"".join(blobs)
    return _BUFFER_HEAD.pack(len(record), len(t), len(b)) + record + t + b


def parse_user_templates(
    buffer: bytes, encoding: str = ""
) -> tuple[DeviceUser, int, list[Template]]:
    """(user, user layout size, templates) from a command-110 buffer (templates valid=1)."""
    if len(buffer) < _BUFFER_HEAD.size:
        raise CodecError(f"template buffer needs 12 bytes, got {len(buffer)}")
    n_user, n_table, n_blobs = _BUFFER_HEAD.unpack_from(buffer)
    if _BUFFER_HEAD.size + n_user + n_table + n_blobs > len(buffer):
        raise CodecError("template buffer shorter than its lengths")
    if n_user - 1 not in USER_RECORD_SIZES or n_table % _TEMPLATE_ENTRY.size:
        raise CodecError(f"template buffer: user record {n_user}, table {n_table} bytes")
    pos = _BUFFER_HEAD.size
    if buffer[pos] != 2:
        raise CodecError(f"template buffer: user record starts with {buffer[pos]}, not 2")
    user = parse_user_record(buffer[pos + 1 : pos + n_user], n_user - 1, encoding)
    pos += n_user
    blobs = buffer[pos + n_table : pos + n_table + n_blobs]
    out = []
    for i in range(0, n_table, _TEMPLATE_ENTRY.size):
        _two, uid, flag, offset = _TEMPLATE_ENTRY.unpack_from(buffer, pos + i)
        if offset + 2 > len(blobs):
            raise CodecError(f"template offset {offset} outside the buffer")
        (size,) = struct.unpack_from("<H", blobs, offset)
        data = bytes(blobs[offset + 2 : offset + 2 + size])
        if len(data) != size:
            raise CodecError(f"template at {offset} truncated")
        out.append(Template(uid, flag & 0x0F, 1, data))
    return user, n_user - 1, out


def encode_save_user_templates() -> bytes:
    """Payload of command 110 after the buffer upload: ``<IHH>(12, 0, 8)`` (as pyzk)."""
    return struct.pack("<IHH", 12, 0, 8)


def encode_prepare_upload(size: int) -> bytes:
    """PREPARE_DATA (1500) payload a client sends before uploading ``size`` bytes: ``<I>``."""
    return struct.pack("<I", size)


def upload_chunks(buffer: bytes, size: int = WRITE_CHUNK) -> list[bytes]:
    """The DATA (1501) pieces of an upload, each at most ``size`` bytes."""
    return [buffer[i : i + size] for i in range(0, len(buffer), size)]


def parse_algorithm_version(data: bytes) -> int:
    """The number in an algorithm-version option reply (``~ZKFPVersion=10\\0``); 0 when
    empty or not a number (pyzk's reading)."""
    value = bytes(data).split(b"=", 1)[-1].split(b"\x00")[0].replace(b"=", b"").strip()
    return int(value) if value.isdigit() else 0


#: Words for the reply codes a command can fail with.
REPLY_WORDS: dict[int, str] = {
    Reply.ACK_ERROR: "refused by the terminal",
    Reply.ACK_UNKNOWN: "not supported by this terminal",
    Reply.ACK_UNAUTH: "not authorised",
    Reply.ACK_RETRY: "terminal busy, try again",
    Reply.ACK_REPEAT: "terminal busy, try again",
    Reply.ACK_ERROR_CMD: "not supported by this terminal",
    Reply.ACK_ERROR_INIT: "terminal not ready",
    Reply.ACK_ERROR_DATA: "data refused by the terminal",
}


def reply_words(code: int) -> str:
    """A device reply code in words (``"reply code N"`` when unknown)."""
    return REPLY_WORDS.get(code, f"reply code {code}")


__all__ += [
    "SAVE_USER_TEMPLATES",
    "WRITE_CHUNK",
    "USER_FIELD_WIDTHS",
    "FP_VERSION_OPTION",
    "FACE_VERSION_OPTION",
    "TEMPLATE_FLAG",
    "FieldError",
    "Template",
    "check_user",
    "encode_user_wrq",
    "encode_delete_user",
    "parse_delete_user",
    "encode_unlock",
    "parse_unlock",
    "encode_start_enroll",
    "parse_start_enroll",
    "encode_templates",
    "parse_templates",
    "encode_user_buffer_record",
    "encode_user_templates",
    "parse_user_templates",
    "encode_save_user_templates",
    "encode_prepare_upload",
    "upload_chunks",
    "parse_algorithm_version",
    "REPLY_WORDS",
    "reply_words",
]
