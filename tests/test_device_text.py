"""Terminal text in the device's encoding: pure table tests (docs/protocols.md §A.2, §B.4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zkserver import device_text
from zkserver.pull import codec
from zkserver.push import iclock
from zkserver.records import DeviceUser

DECODED = [
    # (bytes, device encoding, text)
    ("Müller".encode("cp1252"), "cp1252", "Müller"),
    ("François".encode("cp1252"), "cp1252", "François"),
    ("Иванов".encode("cp1251"), "cp1251", "Иванов"),
    ("Dvořák".encode("cp1250"), "cp1250", "Dvořák"),
    ("Yılmaz".encode("cp1254"), "cp1254", "Yılmaz"),
    ("张三".encode("gbk"), "gbk", "张三"),
    ("陳大文".encode("big5"), "big5", "陳大文"),
    ("Müller".encode(), "utf-8", "Müller"),
    # automatic: UTF-8, else GBK, else latin-1 (today's reading)
    ("Müller".encode(), "", "Müller"),
    ("张三".encode("gbk"), "", "张三"),
    (b"Ann", "", "Ann"),
    (b"\xff\xfe", "", "\xff\xfe"),
    # a set code page that does not hold the bytes: UTF-8, else latin-1 (every byte kept)
    ("Ölçü".encode(), "cp1252", "Ã–lÃ§Ã¼"),  # UTF-8 is valid cp1252: the setting wins
    (b"M\x81ller", "cp1252", "M\x81ller"),  # 0x81 is not cp1252: latin-1, kept
    ("Ĳ€".encode(), "ascii", "Ĳ€"),  # not ASCII, valid UTF-8
]


@pytest.mark.parametrize(("raw", "encoding", "text"), DECODED)
def test_decode_in_the_device_encoding(raw: bytes, encoding: str, text: str) -> None:
    assert device_text.decode(raw, encoding) == text
    assert iclock.decode_text(raw, encoding) == text


def test_auto_reads_single_byte_names_as_gbk_which_is_why_the_setting_exists() -> None:
    assert device_text.decode("Müller".encode("cp1252")) == "M黮ler"
    assert device_text.decode("Müller".encode("cp1252"), "cp1252") == "Müller"


@given(st.binary(max_size=64), st.sampled_from(["", "cp1252", "cp1251", "gbk", "big5", "utf-8"]))
def test_decode_never_fails(raw: bytes, encoding: str) -> None:
    assert isinstance(device_text.decode(raw, encoding), str)


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("", ""),
        ("  ", ""),
        ("cp1252", "cp1252"),
        ("windows-1252", "cp1252"),
        ("CP1251", "cp1251"),
        ("latin-1", "iso8859-1"),
        ("GBK", "gbk"),
        ("gb2312", "gb2312"),
        ("Big5", "big5"),
        ("UTF8", "utf-8"),
        ("cp874", "cp874"),
        ("cp1256", "cp1256"),
    ],
)
def test_check_encoding_accepts_terminal_code_pages(value: str, canonical: str) -> None:
    assert device_text.check_encoding(value) == canonical


@pytest.mark.parametrize(
    "value",
    ["klingon", "base64", "rot13", "zlib", "hex", "utf-16", "utf-32", "utf-7", "cp037", "hz",
     "iso2022_jp", "unicode_escape", "raw_unicode_escape", "idna", "punycode"],
)  # fmt: skip
def test_check_encoding_refuses_what_is_not_ascii_compatible_text(value: str) -> None:
    with pytest.raises(ValueError, match=value):
        device_text.check_encoding(value)


def test_push_parsers_read_names_in_the_device_encoding() -> None:
    body = "USER PIN=7\tName=Müller\tPri=0\tPasswd=\tCard=\tGrp=1\n".encode("cp1252")
    assert [u.name for u in iclock.parse_operlog(body, "cp1252").users] == ["Müller"]
    assert [u.name for u in iclock.parse_operlog(body).users] == ["M黮ler"]  # auto
    # a byte cp1252 leaves undefined: the line is kept raw, not stored as a name
    batch = iclock.parse_operlog(b"USER PIN=8\tName=M\x81ller\tPri=0\n", "cp1252")
    assert not batch.users and batch.rejected[0].raw.startswith("USER PIN=8\tName=M\x81ller")
    assert iclock.parse_options("DeviceName=Küche".encode("cp1252"), "cp1252") == {
        "DeviceName": "Küche"
    }
    result = "ID=5&Return=0&CMD=INFO\n~DeviceName=Küche\n".encode("cp1252")
    results = iclock.parse_devicecmd(result, "cp1252")
    assert results[0].result == "~DeviceName=Küche"


def test_pull_user_records_in_the_device_encoding() -> None:
    user = DeviceUser(user_id="12", name="Иванов", privilege=0, uid=1)
    for size in (28, 72):
        dataset = codec.encode_users([user], size, encoding="cp1251")
        assert (
            codec.parse_users(dataset, record_size=size, encoding="cp1251")[0].name
            == ("Иванов"[: 8 if size == 28 else 24])
        )
        record = codec.encode_user_wrq(user, size, 1, encoding="cp1251")
        assert "Иванов".encode("cp1251") in record
    # automatic writes UTF-8 and reads as before
    assert "Иванов".encode() in codec.encode_user_wrq(user, 72, 1, encoding="")
    dataset = codec.encode_users([user], 72, encoding="cp1251")
    assert codec.parse_users(dataset, record_size=72)[0].name != "Иванов"
