"""The pull write forms (zkserver.pull.codec, docs/protocols.md §B.7): table tests, hypothesis
round trips, and the bytes pyzk 0.9 itself packs for the same operation.

pyzk runs here without a socket: its private ``__send_command`` is replaced by a recorder,
so each operation's real packing code produces the bytes we compare with.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zk import const
from zk.base import ZK
from zk.finger import Finger
from zk.user import User

from zkserver.pull import codec
from zkserver.pull.codec import Cmd, CodecError, FieldError, Reply, Template
from zkserver.records import DeviceUser


class Recorder:
    """A pyzk ZK object that records (command, payload) instead of sending."""

    def __init__(self, user_size: int = 72, *, udp: bool = False, reply: bytes = b"") -> None:
        zk = ZK.__new__(ZK)
        ZK.__init__(zk, "127.0.0.1", ommit_ping=True, force_udp=udp)
        zk._ZK__sock.close()
        zk.is_connect = True
        zk.user_packet_size = user_size
        self.sent: list[tuple[int, bytes]] = []
        self.buffers: list[bytes] = []

        def send_command(command: int, command_string: Any = b"", response_size: int = 8) -> dict:
            if isinstance(command_string, str):
                command_string = command_string.encode()
            self.sent.append((command, bytes(command_string)))
            zk._ZK__data = reply
            return {"status": True, "code": const.CMD_ACK_OK}

        zk._ZK__send_command = send_command
        zk._send_with_buffer = self.buffers.append
        self.zk = zk


digits = st.integers(1, 999_999_999).map(str)
names8 = st.text(st.characters(max_codepoint=0x7E, min_codepoint=0x20), max_size=8)
names24 = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=8)
privileges = st.sampled_from([0, 14])


# --------------------------------------------------------------------------- USER_WRQ


@given(
    uid=st.integers(1, 0xFFFF),
    user_id=digits,
    name=names8,
    priv=privileges,
    password=st.text("0123456789", max_size=5),
    card=st.integers(0, 0xFFFFFFFF),
    group=st.integers(0, 255),
)
def test_user_wrq_28_is_pyzk_set_user(uid, user_id, name, priv, password, card, group) -> None:
    r = Recorder(28)
    r.zk.set_user(
        uid=uid,
        name=name,
        privilege=priv,
        password=password,
        group_id=str(group),
        user_id=user_id,
        card=card,
    )
    user = DeviceUser(user_id, name, priv, str(card), password, str(group))
    ours = codec.encode_user_wrq(user, 28, uid)
    assert r.sent[0] == (Cmd.USER_WRQ, ours)
    assert r.sent[1] == (Cmd.REFRESHDATA, b"")
    back = codec.parse_user_record(ours, 28)
    assert (back.uid, back.user_id, back.name, back.password) == (uid, user_id, name, password)
    assert (back.card, back.group, back.privilege) == (str(card) if card else "", str(group), priv)


@given(
    uid=st.integers(1, 0xFFFF),
    user_id=st.text("0123456789ABCZ", min_size=1, max_size=24),
    name=names24,
    priv=privileges,
    password=st.text("0123456789", max_size=8),
    card=st.integers(0, 0xFFFFFFFF),
    group=st.text("0123456789", max_size=7),
)
def test_user_wrq_72_is_pyzk_set_user(uid, user_id, name, priv, password, card, group) -> None:
    if len(name.encode()) > 24:
        name = name[:6]
    r = Recorder(72)
    r.zk.set_user(
        uid=uid,
        name=name,
        privilege=priv,
        password=password,
        group_id=group,
        user_id=user_id,
        card=card,
    )
    user = DeviceUser(user_id, name, priv, str(card), password, group)
    ours = codec.encode_user_wrq(user, 72, uid)
    assert r.sent[0] == (Cmd.USER_WRQ, ours)
    back = codec.parse_user_record(ours, 72)
    assert (back.uid, back.user_id, back.name, back.password, back.group) == (
        uid,
        user_id,
        name,
        password,
        group,
    )


def test_user_wrq_names_in_the_device_encoding() -> None:
    user = DeviceUser("7", "张三", 0)
    gbk = codec.encode_user_wrq(user, 72, 3, encoding="gbk")
    assert gbk[11:15] == "张三".encode("gbk")
    r = Recorder(72)
    ZK.__init__(r.zk, "127.0.0.1", ommit_ping=True, encoding="gbk")
    r.zk._ZK__sock.close()
    r.zk.is_connect, r.zk.user_packet_size = True, 72
    r.zk._ZK__send_command = lambda c, s=b"", n=8: r.sent.append((c, s)) or {"status": True}
    r.zk.set_user(uid=3, name="张三", user_id="7")
    assert r.sent[0] == (Cmd.USER_WRQ, gbk)
    assert codec.parse_user_record(gbk, 72).name == "张三"  # the reader falls back to GBK
    User.encoding = "UTF-8"


@pytest.mark.parametrize(
    ("size", "user", "field"),
    [
        (28, DeviceUser("12", "Nine char"), "name"),  # 9 bytes > 8
        (72, DeviceUser("12", "x" * 25), "name"),
        (72, DeviceUser("12", "é" * 13), "name"),  # 26 bytes in UTF-8
        (28, DeviceUser("A12", "n"), "user_id"),  # 28-byte layout: numeric PINs only
        (28, DeviceUser("4294967296", "n"), "user_id"),
        (72, DeviceUser("1" * 25, "n"), "user_id"),
        (28, DeviceUser("1", "n", group="256"), "group"),
        (72, DeviceUser("1", "n", group="12345678"), "group"),
        (28, DeviceUser("1", "n", password="123456"), "password"),
        (72, DeviceUser("1", "n", card="12x"), "card"),
        (72, DeviceUser("1", "n", privilege=256), "privilege"),
        (72, DeviceUser("1", "a\x00b"), "name"),
    ],
)
def test_user_that_does_not_fit_names_the_field(size: int, user: DeviceUser, field: str) -> None:
    with pytest.raises(FieldError) as e:
        codec.check_user(user, size)
    assert e.value.field == field
    assert isinstance(e.value, CodecError)


def test_user_wrq_rejects_unknown_layout_and_uid() -> None:
    with pytest.raises(CodecError):
        codec.encode_user_wrq(DeviceUser("1"), 40, 1)
    with pytest.raises(FieldError):
        codec.encode_user_wrq(DeviceUser("1"), 72, 0)
    with pytest.raises(FieldError):
        codec.encode_user_wrq(DeviceUser("1", "é"), 72, 1, encoding="ascii")


# --------------------------------------------------------------------------- small commands


@given(st.integers(1, 0x7FFF))
def test_delete_user_is_pyzk(uid: int) -> None:
    r = Recorder()
    r.zk.delete_user(uid=uid)
    assert r.sent[0] == (Cmd.DELETE_USER, codec.encode_delete_user(uid))
    assert r.sent[1] == (Cmd.REFRESHDATA, b"")
    assert codec.parse_delete_user(codec.encode_delete_user(uid)) == uid


def test_delete_user_table() -> None:
    assert codec.encode_delete_user(1) == b"\x01\x00"
    assert codec.encode_delete_user(0xFFFF) == b"\xff\xff"
    with pytest.raises(FieldError):
        codec.encode_delete_user(0)
    with pytest.raises(CodecError):
        codec.parse_delete_user(b"\x01")


@given(st.integers(1, 254))
def test_unlock_is_pyzk(seconds: int) -> None:
    r = Recorder()
    r.zk.unlock(seconds)
    assert r.sent == [(Cmd.UNLOCK, codec.encode_unlock(seconds))]
    assert codec.parse_unlock(codec.encode_unlock(seconds)) == seconds


def test_unlock_table() -> None:
    assert codec.encode_unlock(3) == struct.pack("<I", 30)
    assert codec.encode_unlock(0.5) == struct.pack("<I", 5)
    with pytest.raises(FieldError):
        codec.encode_unlock(0)


def test_restart_and_clears_carry_no_data_as_in_pyzk() -> None:
    r = Recorder()
    r.zk.restart()
    r.zk.is_connect = True
    r.zk.clear_attendance()
    r.zk.refresh_data()
    r.zk.enable_device()
    r.zk.disable_device()
    assert r.sent == [
        (Cmd.RESTART, b""),
        (Cmd.CLEAR_ATTLOG, b""),
        (Cmd.REFRESHDATA, b""),
        (Cmd.ENABLEDEVICE, b""),
        (Cmd.DISABLEDEVICE, b""),
    ]
    assert (Cmd.RESTART, Cmd.CLEAR_ATTLOG, Cmd.CLEAR_DATA) == (
        const.CMD_RESTART,
        const.CMD_CLEAR_ATTLOG,
        const.CMD_CLEAR_DATA,
    )


@given(user_id=st.text("0123456789", min_size=1, max_size=9), finger=st.integers(0, 9))
def test_start_enroll_forms(user_id: str, finger: int) -> None:
    tcp = codec.encode_start_enroll(user_id, finger)
    assert tcp == struct.pack("<24sbb", user_id.encode(), finger, 1)  # pyzk's TCP form
    assert codec.parse_start_enroll(tcp) == (user_id, finger)
    udp = codec.encode_start_enroll(user_id, finger, transport="udp")
    assert udp == struct.pack("<Ib", int(user_id), finger)  # pyzk's UDP form
    assert codec.parse_start_enroll(udp) == (str(int(user_id)), finger)
    assert Cmd.STARTENROLL == const.CMD_STARTENROLL == 61


def test_start_enroll_rejects() -> None:
    with pytest.raises(FieldError) as e:
        codec.encode_start_enroll("1", 10)
    assert e.value.field == "finger"
    with pytest.raises(FieldError):
        codec.encode_start_enroll("x" * 25, 1)
    with pytest.raises(CodecError):
        codec.parse_start_enroll(b"\x01")


# --------------------------------------------------------------------------- templates

templates = st.lists(
    st.builds(
        Template,
        st.integers(1, 0xFFFF),
        st.integers(0, 9),
        st.integers(0, 3),
        st.binary(min_size=1, max_size=600),
    ),
    max_size=6,
)


@given(templates)
def test_template_dataset_round_trip_and_pyzk_reads_it(ts: list[Template]) -> None:
    dataset = codec.encode_templates(ts)
    assert codec.parse_templates(dataset) == ts
    # pyzk 0.9 get_templates() over the same dataset
    zk = Recorder().zk
    zk.read_sizes = lambda: True
    zk.fingers = len(ts)
    zk.read_with_buffer = lambda command, fct=0, ext=0: (
        (dataset, len(dataset))
        if (command, fct) == (const.CMD_DB_RRQ, const.FCT_FINGERTMP)
        else (b"", 0)
    )
    got = zk.get_templates() if ts else []
    assert [(f.uid, f.fid, f.valid, f.template) for f in got] == [
        (t.uid, t.finger, t.valid, t.data) for t in ts
    ]
    # and each entry is pyzk's Finger.repack()
    assert dataset[4:] == b"".join(Finger(t.uid, t.finger, t.valid, t.data).repack() for t in ts)


def test_template_dataset_table() -> None:
    t = Template(5, 3, 1, b"ABCD")
    assert (
        codec.encode_templates([t])
        == struct.pack("<i", 10) + struct.pack("<HHbb", 10, 5, 3, 1) + b"ABCD"
    )
    assert codec.encode_templates([]) == b"\x00\x00\x00\x00"
    assert codec.parse_templates(b"\x00\x00\x00\x00") == []
    with pytest.raises(CodecError):
        codec.parse_templates(struct.pack("<i", 10) + struct.pack("<HHbb", 20, 5, 3, 1) + b"ABCD")
    with pytest.raises(CodecError):
        codec.parse_templates(struct.pack("<i", 3) + b"\x01\x02\x03")
    with pytest.raises(CodecError):
        codec.parse_templates(struct.pack("<i", 8) + b"\x01")


@given(
    size=st.sampled_from([28, 72]),
    uid=st.integers(1, 0x7FFF),
    user_id=st.integers(1, 99_999_999).map(str),
    fingers=st.dictionaries(st.integers(0, 9), st.binary(min_size=1, max_size=700), max_size=4),
    card=st.integers(0, 0xFFFFFFFF),
)
def test_user_templates_buffer_is_pyzk_save_user_template(size, uid, user_id, fingers, card):
    user = DeviceUser(user_id, "Ann", 14, str(card), "12", "1")
    pyzk_user = User(uid, "Ann", 14, "12", "1", user_id, card)
    r = Recorder(size)
    r.zk.save_user_template(pyzk_user, [Finger(uid, f, 1, d) for f, d in fingers.items()])
    ours = codec.encode_user_templates(user, size, uid, list(fingers.items()))
    assert r.buffers == [ours]
    assert r.sent == [
        (codec.SAVE_USER_TEMPLATES, codec.encode_save_user_templates()),
        (Cmd.REFRESHDATA, b""),
    ]
    back, layout, ts = codec.parse_user_templates(ours)
    assert layout == size
    assert (back.uid, back.user_id, back.name, back.card) == (
        uid,
        user_id,
        "Ann",
        str(card) if card else "",
    )
    assert [(t.uid, t.finger, t.data) for t in ts] == [(uid, f, d) for f, d in fingers.items()]


def test_user_templates_buffer_table() -> None:
    buf = codec.encode_user_templates(DeviceUser("9", "A"), 72, 4, [(2, b"TT")])
    head = struct.unpack_from("<III", buf)
    assert head == (73, 8, 4)
    assert buf[12] == 2
    assert buf[12 + 73 : 12 + 73 + 8] == struct.pack("<bHbI", 2, 4, 0x12, 0)
    assert buf[-4:] == b"\x02\x00TT"
    with pytest.raises(FieldError) as e:
        codec.encode_user_templates(DeviceUser("9"), 72, 4, [(10, b"T")])
    assert e.value.field == "index"
    with pytest.raises(FieldError):
        codec.encode_user_templates(DeviceUser("9"), 72, 4, [(1, b"")])
    for bad in (b"", buf[:-1], b"\x03" + buf[1:12] + b"\x07" + buf[13:]):
        with pytest.raises(CodecError):
            codec.parse_user_templates(bad)


def test_upload_chunks_as_pyzk_sends_them() -> None:
    buf = bytes(range(256)) * 9  # 2304 bytes
    assert [len(c) for c in codec.upload_chunks(buf)] == [1024, 1024, 256]
    assert b"".join(codec.upload_chunks(buf)) == buf
    assert codec.upload_chunks(b"") == []
    assert codec.encode_prepare_upload(2304) == struct.pack("I", 2304)
    assert codec.parse_prepare_data(codec.encode_prepare_upload(2304)) == 2304


# --------------------------------------------------------------------------- options, replies


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"~ZKFPVersion=10\x00", 10),
        (b"~ZKFPVersion=12\x00", 12),
        (b"ZKFaceVersion=7\x00", 7),
        (b"~ZKFPVersion=\x00", 0),
        (b"~ZKFPVersion=x\x00", 0),
        (b"", 0),
    ],
)
def test_algorithm_version_read_as_pyzk(reply: bytes, expected: int) -> None:
    assert codec.parse_algorithm_version(reply) == expected
    r = Recorder(reply=reply)
    assert r.zk.get_fp_version() == expected
    assert r.zk.get_face_version() == expected
    assert r.sent == [
        (Cmd.OPTIONS_RRQ, codec.encode_option_request(codec.FP_VERSION_OPTION)),
        (Cmd.OPTIONS_RRQ, codec.encode_option_request(codec.FACE_VERSION_OPTION)),
    ]


def test_reply_words() -> None:
    assert codec.reply_words(Reply.ACK_UNKNOWN) == "not supported by this terminal"
    assert codec.reply_words(Reply.ACK_ERROR) == "refused by the terminal"
    assert codec.reply_words(1234) == "reply code 1234"
