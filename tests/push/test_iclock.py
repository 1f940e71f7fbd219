"""The pure push-protocol core: parsing what terminals send, formatting what they read."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkserver.push import iclock, v3
from zkserver.push.iclock import (
    MAX_COMMAND_REPLY,
    CommandResult,
    MalformedPhoto,
    decode_text,
    fit_commands,
    format_attlog_line,
    format_commands,
    format_handshake,
    format_ok,
    format_user_line,
    parse_attlog,
    parse_attphoto,
    parse_card,
    parse_devicecmd,
    parse_handshake_reply,
    parse_info,
    parse_ok,
    parse_operlog,
    parse_options,
    parse_query,
    parse_user_fields,
)
from zkserver.push.timezones import timezone_minutes, timezone_value, utc_offset_minutes
from zkserver.records import DeviceUser, Punch

# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"Ann", "Ann"),
        ("Zoë".encode(), "Zoë"),
        ("张三".encode("gbk"), "张三"),
        (b"\xff\xfe\xfa", "\xff\xfe\xfa"),  # neither UTF-8 nor GBK: latin-1, nothing dropped
    ],
)
def test_decode_text(data: bytes, text: str) -> None:
    assert decode_text(data) == text


def test_decode_text_keeps_every_byte() -> None:
    data = bytes(range(256))
    assert decode_text(data).encode("latin-1") == data


# --------------------------------------------------------------------------- query


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            b"/iclock/cdata?SN=ABC123&options=all&pushver=2.4.1&language=69",
            {"SN": "ABC123", "options": "all", "pushver": "2.4.1", "language": "69"},
        ),
        (
            "/iclock/cdata?SN=X&table=ATTLOG&Stamp=9999",
            {"SN": "X", "table": "ATTLOG", "Stamp": "9999"},
        ),
        (
            b"/iclock/getrequest?SN=X&INFO=Ver%208.0.4,5,3,120,192.168.1.201",
            {"SN": "X", "INFO": "Ver 8.0.4,5,3,120,192.168.1.201"},
        ),
        (b"/iclock/ping", {}),
        (b"/iclock/cdata?SN=", {"SN": ""}),
        (b"/iclock/cdata?SN=A&SN=B", {"SN": "A"}),
    ],
)
def test_parse_query(uri: bytes | str, expected: dict[str, str]) -> None:
    assert parse_query(uri) == expected


# --------------------------------------------------------------------------- ATTLOG

TS = "2025-10-09 18:30:45"


@pytest.mark.parametrize(
    ("line", "punch", "raw_extra"),
    [
        # the documented 7-field TAB form
        (f"1001\t{TS}\t0\t15\t0\t0\t0", Punch("1001", TS, 0, 15, "0"), {}),
        # 12-field extended form of newer firmware
        (
            f"7\t{TS}\t1\t1\t0\t0\t0\t0\t36.5\t36.5\t+28800\teyJhIjoxfQ==",
            Punch("7", TS, 1, 1, "0"),
            {
                "mask_flag": "0",
                "temperature": "36.5",
                "conv_temperature": "36.5",
                "time_offset": "+28800",
                "extend_data": "eyJhIjoxfQ==",
            },
        ),
        # space-separated firmware: date and time are two tokens
        (f"42 {TS} 2 4 0 0 0", Punch("42", TS, 2, 4, "0"), {}),
        # CRLF line ending
        (f"5\t{TS}\t3\t1\t\t0\t0\r", Punch("5", TS, 3, 1, ""), {}),
        # alphanumeric PIN, workcode
        (f"A12\t{TS}\t255\t200\t17", Punch("A12", TS, 255, 200, "17"), {}),
        # TAB between date and time
        ("9\t2025-10-09\t18:30:45\t0\t1", Punch("9", TS, 0, 1), {}),
        # short form: status/verify missing -> 255 "undefined" / 200 "other"
        (f"8\t{TS}", Punch("8", TS, 255, 200), {}),
        (f"8\t{TS}\t\t4", Punch("8", TS, 255, 4), {}),
    ],
)
def test_parse_attlog_accepts(line: str, punch: Punch, raw_extra: dict[str, str]) -> None:
    punches, rejected = parse_attlog(line)
    assert rejected == []
    assert punches == [punch]
    raw = punches[0].raw
    assert raw["user_id"] == punch.user_id
    assert raw["timestamp"] == TS
    assert raw["status"] == punch.status
    assert raw["verify_method"] == punch.verify
    assert raw.items() >= raw_extra.items()


def test_parse_attlog_raw_of_documented_form() -> None:
    (punch,), _ = parse_attlog(f"1001\t{TS}\t0\t15\t0\t0\t0\n")
    assert punch.raw == {
        "user_id": "1001",
        "timestamp": TS,
        "status": 0,
        "verify_method": 15,
        "workcode": "0",
        "reserved1": "0",
        "reserved2": "0",
    }


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("1\t2025-02-30 10:00:00\t0\t1", "impossible timestamp"),
        ("1\t2025-10-09 25:00:00\t0\t1", "impossible timestamp"),
        ("1\t2025-10-09X18:30:45\t0\t1", "bad timestamp"),
        ("1\t1899-10-09 18:30:45\t0\t1", "year out of range"),
        (f"\t{TS}\t0\t1", "empty PIN"),
        (f"1\t{TS}\tin\t1", "non-numeric status"),
        (f"1\t{TS}\t0\tface", "non-numeric verify_method"),
        (f"1\t{TS}\t-1\t1", "non-numeric status"),
        (f"1\t{TS}\t99999999999999\t1", "non-numeric status"),
        ("1", "missing timestamp"),
        ("hello world", "bad timestamp"),
        (f"1\x00\x01\t{TS}\t0\t1", "control or binary"),
        (f"{'9' * 40}\t{TS}\t0\t1", "PIN too long"),
        (f"1\t{TS}\t0\t1\x1b[31m", "control or binary"),
    ],
)
def test_parse_attlog_rejects(line: str, reason: str) -> None:
    punches, rejected = parse_attlog(line + "\n")
    assert punches == []
    assert len(rejected) == 1
    assert rejected[0].source == "ATTLOG"
    assert rejected[0].raw == line
    assert reason in rejected[0].reason


# Pieces of ATTLOG lines, the usual ones and the awkward: blanks of every kind, dates
# and times in normal and loose forms, empty fields.
_LINE_PIECES = st.sampled_from(
    [
        "1001",
        "7",
        "2025-10-09 18:30:45",
        "2025-10-09",
        "18:30:45",
        "2025-1-9 8:30:45",
        "2025-1-9",
        "8:30:45",
        "0",
        "15",
        "",
        " ",
        "  ",
        "\t",
        "\x1c",
        "\x0b",
        "\xa0",
        "\u3000",
        "é",
    ]
)


@settings(max_examples=500)
@given(st.lists(_LINE_PIECES, max_size=12), st.lists(_LINE_PIECES, max_size=4))
def test_fields_fast_path_gives_what_the_general_path_gives(
    pieces: list[str], pin: list[str]
) -> None:
    """The usual line takes a short cut in iclock._fields; any line gives the same fields
    as the general splitting."""
    line = "".join(pieces)
    assert iclock._fields(line) == iclock._split_fields(line, "\t")
    usual = "".join(pin) + "\t2025-10-09 18:30:45\t" + line  # almost the usual line
    assert iclock._fields(usual) == iclock._split_fields(usual, "\t")


def test_parse_attlog_mixed_body_keeps_order_and_skips_blank_lines() -> None:
    body = f"1\t{TS}\t0\t1\t0\t0\t0\r\n\r\n   \ngarbage\r\n2\t{TS}\t1\t15\t0\t0\t0\n\x00\n"
    punches, rejected = parse_attlog(body)
    assert [p.user_id for p in punches] == ["1", "2"]
    assert [r.raw for r in rejected] == ["garbage"]


def test_parse_attlog_bytes_decodes_line_by_line() -> None:
    body = f"1\t{TS}\t0\t1\n".encode() + "张\t".encode("gbk") + f"{TS}\t0\t1\n".encode()
    punches, rejected = parse_attlog(body)
    assert rejected == []
    assert [p.user_id for p in punches] == ["1", "张"]


@pytest.mark.parametrize("as_bytes", [False, True])
def test_parse_attlog_rejects_huge_line_cheaply(as_bytes: bool) -> None:
    huge = "1\t" + "9" * (10 * 1024 * 1024)
    body = f"{huge}\n2\t{TS}\t0\t1\n"
    punches, rejected = parse_attlog(body.encode() if as_bytes else body)
    assert [p.user_id for p in punches] == ["2"]
    assert len(rejected) == 1
    assert "too long" in rejected[0].reason
    assert len(rejected[0].raw) < 2000


def test_parse_attlog_binary_junk() -> None:
    punches, rejected = parse_attlog(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8")
    assert punches == []
    assert rejected and all(r.source == "ATTLOG" for r in rejected)


def test_format_attlog_line() -> None:
    assert format_attlog_line(Punch("1", TS, 0, 15, "0")) == f"1\t{TS}\t0\t15\t0\t0\t0"
    extended = Punch("1", TS, 0, 15, "", {"temperature": "36.6"})
    assert format_attlog_line(extended) == f"1\t{TS}\t0\t15\t\t0\t0\t\t36.6"


# hypothesis ------------------------------------------------------------------

pins = st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=24)
timestamps = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2099, 12, 31, 23, 59, 59)
).map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S"))
punches_st = st.builds(
    Punch,
    user_id=pins,
    timestamp=timestamps,
    status=st.integers(0, 255),
    verify=st.integers(0, 200),
    workcode=st.text(alphabet="0123456789abc", max_size=8),
)


@given(st.lists(punches_st, max_size=20), st.sampled_from(["\n", "\r\n"]))
def test_attlog_round_trip(punches: list[Punch], newline: str) -> None:
    body = newline.join(format_attlog_line(p) for p in punches) + newline
    parsed, rejected = parse_attlog(body)
    assert rejected == []
    assert parsed == punches


@given(st.lists(punches_st, max_size=10))
def test_attlog_round_trip_space_separated(punches: list[Punch]) -> None:
    body = "\n".join(
        " ".join([p.user_id, p.timestamp, str(p.status), str(p.verify)]) for p in punches
    )
    parsed, rejected = parse_attlog(body)
    assert rejected == []
    assert [(p.user_id, p.timestamp, p.status, p.verify) for p in parsed] == [
        (p.user_id, p.timestamp, p.status, p.verify) for p in punches
    ]


def _non_blank_lines(text: str) -> int:
    """Lines end at LF, CR LF or a bare CR; a BOM before the first is dropped (§A.10)."""
    lines = re.split(r"\r\n|\r|\n", text.removeprefix("\ufeff"))
    return sum(1 for line in lines if line.strip(" \t\r\x00"))


def _non_blank_chunks(data: bytes) -> int:
    chunks = re.split(rb"\r\n|\r|\n", data.removeprefix(b"\xef\xbb\xbf"))
    return sum(1 for c in chunks if c.strip(b" \t\r\x00"))


line_parts = st.one_of(
    st.text(max_size=30),
    punches_st.map(format_attlog_line),
    st.sampled_from(["\t", " ", "\r", "\x00", TS, "2025-02-30", "\u2028", "\x85", "张三"]),
)


@settings(max_examples=300)
@given(st.lists(line_parts, max_size=30).map("".join))
def test_parse_attlog_never_raises_nothing_lost_text(text: str) -> None:
    punches, rejected = parse_attlog(text)
    assert len(punches) + len(rejected) == _non_blank_lines(text)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_parse_attlog_never_raises_nothing_lost_bytes(data: bytes) -> None:
    punches, rejected = parse_attlog(data)
    assert len(punches) + len(rejected) == _non_blank_chunks(data)


@given(st.text(max_size=200))
def test_parse_operlog_never_raises_nothing_lost(text: str) -> None:
    batch = parse_operlog(text)
    assert batch.accepted + len(batch.rejected) == _non_blank_lines(text)


@given(st.binary(max_size=200))
def test_other_parsers_never_raise(data: bytes) -> None:
    text = decode_text(data)
    parse_devicecmd(data)
    parse_options(data)
    parse_info(text)
    parse_query(b"/x?" + data)
    try:
        parse_attphoto(data)
    except MalformedPhoto:
        pass


# --------------------------------------------------------------------------- OPERLOG


def test_parse_operlog_mixed_body() -> None:
    body = (
        "USER PIN=1\tName=Ann Smith\tPri=14\tPasswd=123\tCard=[15CD5B07]\tGrp=1"
        "\tTZ=0000000100000000\tVerify=0\tViceCard=\r\n"
        "USER PIN=2\tName=A&B\tPri=0\tPasswd=\tCard=0004567890\tGrp=1\n"
        "OPLOG 4\t0\t2025-10-09 18:30:45\t0\t0\t0\t0\n"
        "OPLOG 30\t1\t2025-10-09 18:31:00\t7\t1\t0\t0\n"
        "FP PIN=1\tFID=6\tSize=1184\tValid=1\tTMP=TWJTUzIxAAAD...\n"
        "FACE PIN=1\tFID=0\tSIZE=2048\tVALID=1\tTMP=AAAA\n"
        "USERPIC PIN=1\tFileName=1.jpg\tSize=4\tContent=/9j/\n"
        "BIOPHOTO PIN=1\tFileName=1.jpg\tType=9\tSize=4\tContent=/9j/\n"
        "USER Name=nobody\tPri=0\n"
        "USER PIN=3\tPri=admin\n"
        "OPLOG x\t0\t2025-10-09 18:30:45\n"
        "OPLOG 4\t0\t2025-13-09 18:30:45\n"
        "complete junk\n"
    )
    batch = parse_operlog(body.encode())
    assert batch.users == [
        DeviceUser("1", "Ann Smith", 14, "123456789", "123", "1"),
        DeviceUser("2", "A&B", 0, "4567890", "", "1"),
    ]
    assert batch.oplogs[0] == {
        "op": 4,
        "operator": "0",
        "timestamp": "2025-10-09 18:30:45",
        "obj": "0",
        "values": ["0", "0", "0"],
        "raw": "OPLOG 4\t0\t2025-10-09 18:30:45\t0\t0\t0\t0",
    }
    assert [o["op"] for o in batch.oplogs] == [4, 30]
    assert batch.counts() == {
        "USER": 2,
        "OPLOG": 2,
        "FP": 1,
        "FACE": 1,
        "USERPIC": 1,
        "BIOPHOTO": 1,
    }
    assert batch.other[0]["pin"] == "1"
    assert batch.accepted == 8
    assert len(batch.rejected) == 5
    assert all(r.source == "OPERLOG" for r in batch.rejected)
    assert "empty PIN" in batch.rejected[0].reason
    assert "bad privilege" in batch.rejected[1].reason


def test_parse_operlog_gbk_name_and_biodata() -> None:
    body = "USER PIN=8\tName=张三\tPri=0\n".encode("gbk") + (
        b"BIODATA Pin=8\tNo=0\tIndex=0\tValid=1\tDuress=0\tType=9\tMajorVer=5\tMinorVer=8"
        b"\tFormat=0\tTmp=AAAA\n"
    )
    batch = parse_operlog(body)
    assert batch.users == [DeviceUser("8", "张三")]
    assert batch.other == [
        {"kind": "BIODATA", "pin": "8", "index": "0", "raw": batch.other[0]["raw"]}
    ]


def test_parse_operlog_rejects_unknown_record_types() -> None:
    batch = parse_operlog(b"GARBAGE PIN=1\tX=2\nFP PIN=1\tFID=6\tSize=4\tValid=1\tTMP=AAAA\n")
    assert [o["kind"] for o in batch.other] == ["FP"] and batch.other[0]["index"] == "6"
    assert len(batch.rejected) == 1 and "GARBAGE" in batch.rejected[0].reason


def test_parse_user_fields_space_separated_firmware() -> None:
    user = parse_user_fields("PIN=5 Name=Ann Lee Pri=0 Passwd= Card= Grp=1")
    assert user == DeviceUser("5", "Ann Lee", 0, "", "", "1")


@pytest.mark.parametrize(
    ("value", "card"),
    [
        ("[15CD5B07]", "123456789"),
        ("[0000000000]", ""),
        ("[]", ""),
        ("123456789", "123456789"),
        ("0", ""),
        ("", ""),
    ],
)
def test_parse_card(value: str, card: str) -> None:
    assert parse_card(value) == card


@pytest.mark.parametrize("value", ["[XYZ]", "[123]", "12ab", "-5"])
def test_parse_card_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_card(value)


@given(
    st.builds(
        DeviceUser,
        user_id=pins,
        name=st.text(
            alphabet=st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20
        ),
        privilege=st.sampled_from([0, 2, 6, 14]),
        card=st.integers(1, 2**40).map(str) | st.just(""),
        password=st.text(alphabet="0123456789", max_size=8),
        group=st.sampled_from(["", "1", "2"]),
    )
)
def test_user_line_round_trip(user: DeviceUser) -> None:
    batch = parse_operlog(format_user_line(user) + "\n")
    assert batch.rejected == []
    assert batch.users == [user]


# --------------------------------------------------------------------------- ATTPHOTO

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) + b"\xff\xd9"


def _photo(name: str = "20251009183045-1001.jpg", size: int | None = None) -> bytes:
    n = len(JPEG) if size is None else size
    return f"PIN={name}\nSN=ABC123\nsize={n}\nCMD=uploadphoto".encode() + b"\0" + JPEG


def test_parse_attphoto() -> None:
    photo = parse_attphoto(_photo())
    assert photo.user_id == "1001"
    assert photo.timestamp == "2025-10-09 18:30:45"
    assert photo.serial_number == "ABC123"
    assert photo.filename == "20251009183045-1001.jpg"
    assert photo.data == JPEG
    assert photo.size == len(JPEG)


def test_parse_attphoto_without_pin() -> None:
    assert parse_attphoto(_photo("20251009183045.jpg")).user_id == ""


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"PIN=20251009183045-1.jpg\nsize=3\nCMD=uploadphoto", "no NUL"),
        (_photo("photo.jpg"), "bad photo file name"),
        (_photo("20250230183045-1.jpg"), "impossible time"),
        (_photo(size=10), "size says 10"),
        (_photo(size=10**6), "size says"),
        (_photo().replace(b"size=", b"size=x"), "bad size"),
        (b"x" * 5000 + b"\0", "header too long"),
    ],
)
def test_parse_attphoto_rejects(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedPhoto, match=reason):
        parse_attphoto(body)
    assert issubclass(MalformedPhoto, ValueError)


# --------------------------------------------------------------------------- options, INFO


def test_parse_options() -> None:
    body = (
        b"~DeviceName=K40,MAC=00:17:61:10:2a:3b,TransactionCount=120,MultiBioDataSupport=0:1:1,x,y"
    )
    assert parse_options(body) == {
        "~DeviceName": "K40",
        "MAC": "00:17:61:10:2a:3b",
        "TransactionCount": "120",
        "MultiBioDataSupport": "0:1:1,x,y",
    }
    assert parse_options("A=1\nB=2,C=\n") == {"A": "1", "B": "2", "C": ""}
    assert parse_options("") == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "Ver 8.0.4.7-20230427,5,3,120,192.168.1.201,10,7,12,5,111",
            {
                "firmware": "Ver 8.0.4.7-20230427",
                "user_count": 5,
                "fp_count": 3,
                "attlog_count": 120,
                "ip": "192.168.1.201",
                "fpver": "10",
                "facever": "7",
                "face_tmp_count": 12,
                "face_count": 5,
                "function_flags": "111",
            },
        ),
        (
            "Ver 6.60,2,,x",
            {"firmware": "Ver 6.60", "user_count": 2, "fp_count": "", "attlog_count": "x"},
        ),
        ("", {}),
        ("a,1,2,3,ip,5,6,7,8,9,10,11", {"extra": ["10", "11"]}),
    ],
)
def test_parse_info(value: str, expected: dict[str, object]) -> None:
    assert parse_info(value).items() >= expected.items()


# --------------------------------------------------------------------------- devicecmd


def test_parse_devicecmd() -> None:
    body = (
        "ID=17&Return=0&CMD=DATA\n"
        "ID=18&Return=-1002&CMD=USER\r\n"
        "ID=19&Return=0&CMD=INFO\n"
        "~DeviceName=K40\n"
        "UserCount=5\n"
        "ID=20&Return=x&CMD=CHECK&FILENAME=a.txt\n"
    )
    results = parse_devicecmd(body)
    assert results == [
        CommandResult("17", 0, "DATA"),
        CommandResult("18", -1002, "USER"),
        CommandResult("19", 0, "INFO", "~DeviceName=K40\nUserCount=5"),
        CommandResult("20", None, "CHECK"),
    ]
    assert results[0].ok and not results[1].ok
    assert results[3].params == {"FILENAME": "a.txt"}
    assert parse_devicecmd("junk before\n") == []


# --------------------------------------------------------------------------- commands


def test_format_commands() -> None:
    assert format_commands([]) == "OK"
    assert format_commands([("1", "INFO"), ("A2", "DATA DELETE USERINFO PIN=1")]) == (
        "C:1:INFO\nC:A2:DATA DELETE USERINFO PIN=1"
    )
    assert format_ok(3) == "OK: 3"
    assert format_ok() == "OK"


def test_format_commands_respects_cap() -> None:
    big = "SET OPTION X=" + "a" * 1000
    commands = [(str(i), big) for i in range(2000)]
    reply = format_commands(commands)
    assert len(reply.encode()) <= MAX_COMMAND_REPLY
    n = len(fit_commands(commands))
    assert reply.count("\n") + 1 == n < 2000
    assert fit_commands(commands, max_bytes=10) == []


@pytest.mark.parametrize(
    ("cmd_id", "command"),
    [("", "INFO"), ("a" * 17, "INFO"), ("a-b", "INFO"), ("1", "INFO\nC:2:REBOOT"), ("1", "")],
)
def test_format_commands_rejects_bad_commands(cmd_id: str, command: str) -> None:
    with pytest.raises(ValueError):
        format_commands([(cmd_id, command)])


@pytest.mark.parametrize(
    ("text", "n"),
    [("OK: 5", 5), ("OK:5", 5), ("OK", 0), ("OK: 0\n", 0), ("ERROR", None), ("", None)],
)
def test_parse_ok(text: str, n: int | None) -> None:
    assert parse_ok(text) == n


# --------------------------------------------------------------------------- handshake


def test_format_handshake_modern() -> None:
    text = format_handshake("ABC123", timezone_offset_minutes=480, push_version="2.4.1")
    lines = text.splitlines()
    assert lines[0] == "GET OPTION FROM: ABC123"
    options = parse_handshake_reply(text)
    assert options["serial"] == "ABC123"
    assert options["TimeZone"] == "8"
    assert options["Delay"] == "10"
    assert options["ErrorDelay"] == "30"
    assert options["Realtime"] == "1"
    assert options["OPERLOGStamp"] == "9999"
    assert options["TransFlag"] == (
        "TransData AttLog\tOpLog\tAttPhoto\tEnrollUser\tChgUser\tEnrollFP\tChgFP\tUserPic"
    )
    assert "Stamp" not in options and "OpStamp" not in options


@pytest.mark.parametrize("pushver", [None, "", "1.0", "1.9.9"])
def test_format_handshake_old_firmware(pushver: str | None) -> None:
    text = format_handshake("S", timezone_offset_minutes=0, push_version=pushver, delay=5)
    options = parse_handshake_reply(text)
    assert options["TransFlag"] == "111111111111"
    assert options["Stamp"] == options["OpStamp"] == options["PhotoStamp"] == "9999"
    assert options["ATTLOGStamp"] == "None"  # new keys too: ignored by old firmware
    assert options["Delay"] == "5"
    assert options["TimeZone"] == "0"


def test_format_handshake_options() -> None:
    text = format_handshake(
        "S",
        timezone_offset_minutes=330,
        push_version="2.2",
        realtime=False,
        error_delay=60,
        trans_interval=5,
        push_options=["FingerFunOn", "FaceFunOn"],
    )
    options = parse_handshake_reply(text)
    assert options["TimeZone"] == "330"
    assert options["Realtime"] == "0"
    assert options["ErrorDelay"] == "60"
    assert options["TransInterval"] == "5"
    assert options["PushOptions"] == "FingerFunOn,FaceFunOn"
    assert "\r" not in text and text.endswith("\n")


def test_parse_handshake_reply_requires_header() -> None:
    with pytest.raises(ValueError):
        parse_handshake_reply("Delay=10\n")


@pytest.mark.parametrize(
    ("minutes", "value"),
    [
        (0, 0),
        (480, 8),
        (-300, -5),
        (720, 12),
        (-720, -12),
        (330, 330),
        (345, 345),
        (780, 780),
        (-210, -210),
    ],
)
def test_timezone_value(minutes: int, value: int) -> None:
    assert timezone_value(minutes) == value
    assert timezone_minutes(value) == minutes


# --------------------------------------------------------------------------- time zones

SUMMER = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)
WINTER = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "now", "minutes"),
    [
        ("Asia/Kolkata", SUMMER, 330),
        ("Europe/Berlin", SUMMER, 120),
        ("Europe/Berlin", WINTER, 60),
        ("America/New_York", WINTER, -300),
        ("Asia/Kathmandu", WINTER, 345),
        ("UTC", WINTER, 0),
        ("+05:30", WINTER, 330),
        ("+0530", WINTER, 330),
        ("-3", WINTER, -180),
        ("UTC+8", WINTER, 480),
        ("330", WINTER, 330),
        ("-210", WINTER, -210),
        ("Europe/Berlin", datetime(2025, 7, 1, 12, 0), 120),  # naive = UTC
    ],
)
def test_utc_offset_minutes(name: str, now: datetime, minutes: int) -> None:
    assert utc_offset_minutes(name, now) == minutes


def test_utc_offset_minutes_local_zone() -> None:
    expected = SUMMER.astimezone().utcoffset()
    assert expected is not None
    assert utc_offset_minutes("", SUMMER) == expected.total_seconds() // 60


@pytest.mark.parametrize("name", ["Mars/Olympus", "+25:00", "+05:75", "900", "../../etc/passwd"])
def test_utc_offset_minutes_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        utc_offset_minutes(name, WINTER)


def test_public_names_are_exported() -> None:
    for name in iclock.__all__:
        assert hasattr(iclock, name), name


# --- push 3.x: rtlog, registry, push config ------------------------------------------

RTLOG_CASES = [
    # (line, punches, rejected, other)
    (
        "time=2025-10-09 18:30:45\tpin=1001\tcardno=0\teventaddr=1\tevent=0\t"
        "inoutstatus=1\tverifytype=15",
        1,
        0,
        0,
    ),
    ("time=2025-10-09 18:30:45\tpin=7\tinoutstatus=0", 1, 0, 0),  # verify defaults to 200
    ("time=2025-10-09 18:31:00\tpin=0\tevent=8\tinoutstatus=2\tverifytype=200", 0, 0, 1),
    ("time=2025-10-09 18:31:00\tpin=\tevent=102", 0, 0, 1),
    # A user on a line that is no verification letting them through: no punch
    # (denied, alarm, forced open, door state; docs/protocols.md §A.5b).
    ("time=2025-10-09 18:31:00\tpin=7\teventaddr=1\tevent=23", 0, 0, 1),
    ("time=2025-10-09 18:31:00\tpin=7\teventaddr=1\tevent=101", 0, 0, 1),
    ("time=2025-10-09 18:31:00\tpin=7\teventaddr=1\tevent=100", 0, 0, 1),
    ("time=2025-10-09 18:31:00\tpin=7\teventaddr=1\tevent=200", 0, 0, 1),
    ("time=2025-10-09 18:31:00\tpin=7\teventaddr=1\tevent=7", 0, 0, 1),
    ("time=2025-10-09 18:31:00\tpin=7\teventaddr=1\tevent=3", 1, 0, 0),  # let through
    ("time=2025-10-09 18:31:00\tpin=7\teventaddr=1\tevent=15", 1, 0, 0),  # unknown < 100
    ("time=2025-02-30 18:31:00\tpin=5\tinoutstatus=0\tverifytype=1", 0, 1, 0),
    ("time=2025-10-09 18:31:00\tpin=5\tinoutstatus=in\tverifytype=1", 0, 1, 0),
    ("pin=5\tinoutstatus=0", 0, 1, 0),
    ("\x00\x01junk", 0, 1, 0),
    ("", 0, 0, 0),
]


@pytest.mark.parametrize(("line", "n_punches", "n_rejected", "n_other"), RTLOG_CASES)
def test_parse_rtlog_cases(line: str, n_punches: int, n_rejected: int, n_other: int) -> None:
    punches, rejected, other = v3.parse_rtlog(line)
    assert (len(punches), len(rejected), len(other)) == (n_punches, n_rejected, n_other)
    for punch in punches:
        assert punch.raw["user_id"] == punch.user_id
        assert punch.raw["status"] == punch.status


def test_parse_rtlog_maps_inoutstatus_to_action_and_verifytype_to_method() -> None:
    (punch,), _, _ = v3.parse_rtlog(RTLOG_CASES[0][0])
    assert (punch.user_id, punch.timestamp, punch.status, punch.verify) == (
        "1001",
        "2025-10-09 18:30:45",
        1,
        15,
    )
    assert punch.raw["eventaddr"] == "1"


@given(st.binary(max_size=400))
def test_parse_rtlog_never_raises_and_loses_no_line(body: bytes) -> None:
    punches, rejected, other = v3.parse_rtlog(body)
    assert len(punches) + len(rejected) + len(other) == _non_blank_chunks(body)


def test_registry_code_is_stable_per_serial() -> None:
    assert v3.registry_code("A") == v3.registry_code("A") != v3.registry_code("B")


def test_push_config_carries_delays_and_timezone() -> None:
    text = v3.format_push_config("A", delay=7, error_delay=9, timezone_offset_minutes=330)
    config = dict(line.split("=", 1) for line in text.splitlines())
    assert (config["RequestDelay"], config["ErrorDelay"], config["TimeZone"]) == ("7", "9", "330")
