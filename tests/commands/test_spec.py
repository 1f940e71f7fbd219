"""The typed command table: validation naming the field, kinds, push lines, result words."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zkserver.commands.spec import (
    COMMAND_TYPES,
    CommandError,
    CommandSpec,
    Unsupported,
    check_for_device,
    parse_command,
    pull_result,
    push_result,
    supports,
)
from zkserver.push.commands import fits_reply, format_push_command, parse_info_result, zk_time

B64 = base64.b64encode(b"\x01\x02template").decode()


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"type": "reboot"}, {}),
        ({"type": "sync_time"}, {}),
        ({"type": "clear_log", "confirm": True}, {"confirm": True}),
        ({"type": "open_door"}, {"seconds": 3}),
        ({"type": "open_door", "seconds": "254"}, {"seconds": 254}),
        ({"type": "set_option", "key": "Delay", "value": 5}, {"key": "Delay", "value": "5"}),
        (
            {"type": "user_upsert", "user_id": 1001, "name": "Ann Lee", "privilege": 14},
            {"user_id": "1001", "name": "Ann Lee", "privilege": 14, "password": "",
             "card": "", "group": "1"},
        ),
        ({"type": "user_delete", "user_id": "A7"}, {"user_id": "A7"}),
        (
            {"type": "query_attlog", "since": "2025-01-01 00:00:00",
             "until": "2025-01-31 23:59:59"},
            {"since": "2025-01-01 00:00:00", "until": "2025-01-31 23:59:59"},
        ),
        ({"type": "enroll_finger", "user_id": "5", "finger": 9}, {"user_id": "5", "finger": 9}),
        (
            {"type": "template_upsert", "user_id": "5", "kind": "finger", "index": 2,
             "format": "10", "data": B64},
            {"user_id": "5", "kind": "finger", "index": 2, "format": "10", "valid": 1,
             "data": B64},
        ),
        ({"type": "raw", "command": " INFO "}, {"command": "INFO"}),
        ({"command": "CHECK"}, {"command": "CHECK"}),  # the untyped form is raw
    ],
)  # fmt: skip
def test_valid_commands_are_normalised(body: dict[str, Any], fields: dict[str, Any]) -> None:
    spec = parse_command(body)
    assert spec.type == body.get("type", "raw")
    assert spec.fields == fields


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "type"),
        ({"type": "explode"}, "type"),
        ({"type": 7}, "type"),
        ({"type": "reboot", "seconds": 3}, "seconds"),
        ({"type": "clear_log"}, "confirm"),
        ({"type": "clear_data", "confirm": "yes"}, "confirm"),
        ({"type": "open_door", "seconds": 0}, "seconds"),
        ({"type": "open_door", "seconds": 255}, "seconds"),
        ({"type": "open_door", "seconds": True}, "seconds"),
        ({"type": "user_upsert"}, "user_id"),
        ({"type": "user_upsert", "user_id": "a b"}, "user_id"),
        ({"type": "user_upsert", "user_id": "1" * 25}, "user_id"),
        ({"type": "user_upsert", "user_id": "1", "name": "A\tB"}, "name"),
        ({"type": "user_upsert", "user_id": "1", "name": "A\nB"}, "name"),
        ({"type": "user_upsert", "user_id": "1", "name": "x" * 25}, "name"),
        ({"type": "user_upsert", "user_id": "1", "privilege": 3}, "privilege"),
        ({"type": "user_upsert", "user_id": "1", "card": "12ab"}, "card"),
        ({"type": "user_upsert", "user_id": "1", "password": "123456789"}, "password"),
        ({"type": "user_delete"}, "user_id"),
        ({"type": "set_option", "value": "1"}, "key"),
        ({"type": "set_option", "key": "A=B", "value": "1"}, "key"),
        ({"type": "set_option", "key": "A"}, "value"),
        ({"type": "query_attlog", "since": "2025-01-01", "until": "2025-01-02 00:00:00"}, "since"),
        ({"type": "query_attlog", "since": "2025-01-02 00:00:00",
          "until": "2025-01-01 00:00:00"}, "until"),
        ({"type": "enroll_finger", "user_id": "1"}, "finger"),
        ({"type": "enroll_finger", "user_id": "1", "finger": 10}, "finger"),
        ({"type": "template_upsert", "user_id": "1", "kind": "iris", "data": B64}, "kind"),
        ({"type": "template_upsert", "user_id": "1", "kind": "finger", "data": B64}, "format"),
        ({"type": "template_upsert", "user_id": "1", "kind": "userpic", "data": "%%%"}, "data"),
        ({"type": "template_upsert", "user_id": "1", "kind": "finger", "index": 10,
          "format": "10", "data": B64}, "index"),
        ({"type": "raw", "command": "A\nB"}, "command"),
        ({"type": "raw"}, "command"),
        # other members of "TAB or newline": C1 NEL, Unicode line/paragraph separators,
        # vertical tab, and NUL (ends the line for a terminal's C string)
        ({"type": "user_upsert", "user_id": "1", "name": "A\x85B"}, "name"),
        ({"type": "user_upsert", "user_id": "1", "name": "A\u2028B"}, "name"),
        ({"type": "user_upsert", "user_id": "1", "name": "A\u2029B"}, "name"),
        ({"type": "user_upsert", "user_id": "1", "name": "A\x0bB"}, "name"),
        ({"type": "set_option", "key": "A", "value": "1\u2028REBOOT"}, "value"),
        ({"type": "raw", "command": "INFO\x00"}, "command"),
        ({"type": "raw", "command": "INFO\u2028REBOOT"}, "command"),
        ({"type": "raw", "command": "INFO\x85REBOOT"}, "command"),
        # a space before Key= is a field break where TABs are missing
        # (docs/protocols.md §A.10): "Bob Pri=14" would come back as privilege 14
        ({"type": "user_upsert", "user_id": "1", "name": "Bob Pri=14"}, "name"),
        ({"type": "user_upsert", "user_id": "1", "name": "Ann Card=12"}, "name"),
        ({"type": "user_upsert", "user_id": "1", "password": "1 Pri=14"}, "password"),
        # digits are ASCII digits: a superscript or a full-width digit is not a card
        ({"type": "user_upsert", "user_id": "1", "card": "\u00b2"}, "card"),
        ({"type": "user_upsert", "user_id": "1", "card": "\uff11\uff12"}, "card"),
        ({"type": "user_upsert", "user_id": "1", "group": "\u00b2"}, "group"),
        ({"type": "template_upsert", "user_id": "1", "kind": "finger", "format": "\u00b9\u2070",
          "data": B64}, "format"),
    ],
)  # fmt: skip
def test_invalid_commands_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse_command(body)
    assert caught.value.field == field
    assert field in caught.value.message


def test_not_an_object() -> None:
    with pytest.raises(CommandError):
        parse_command(["reboot"])


@pytest.mark.parametrize(
    ("type_name", "push", "pull"),
    [(name, "push" in t.kinds, "pull" in t.kinds) for name, t in COMMAND_TYPES.items()],
)
def test_kinds(type_name: str, push: bool, pull: bool) -> None:
    assert supports(type_name, "push") is push and supports(type_name, "pull") is pull
    assert push  # every type has a push form
    expected_pull_only_missing = {"check", "set_option", "raw"}
    assert pull is (type_name not in expected_pull_only_missing)


@pytest.mark.parametrize(
    "body",
    [
        {"type": "user_upsert", "user_id": "0012"},
        {"type": "user_delete", "user_id": "0012"},
        {"type": "enroll_finger", "user_id": "007", "finger": 1},
        {"type": "template_upsert", "user_id": "0012", "kind": "finger", "format": "10",
         "data": B64},
        {"type": "user_delete", "user_id": "A12"},
    ],
)  # fmt: skip
def test_a_numeric_pin_terminal_refuses_pins_it_would_change(body: dict[str, Any]) -> None:
    """A 28-byte-layout terminal keeps the PIN as a number: 0012 would become user 12 (a
    second record beside an existing 12, and a delete of 0012 that finds no one)."""
    spec = parse_command(body)
    check_for_device(spec, "pull", {"user_layout": 72})
    check_for_device(spec, "push")
    with pytest.raises(CommandError) as caught:
        check_for_device(spec, "pull", {"user_layout": 28})
    assert caught.value.field == "user_id"


def test_check_for_device_kind_and_pull_user_layout() -> None:
    with pytest.raises(Unsupported, match="pull terminal cannot do 'check'"):
        check_for_device(CommandSpec("check"), "pull")
    user = parse_command({"type": "user_upsert", "user_id": "1", "name": "Anneliese"})
    check_for_device(user, "push")
    check_for_device(user, "pull", {"user_layout": 72})
    with pytest.raises(CommandError) as caught:
        check_for_device(user, "pull", {"user_layout": 28})
    assert caught.value.field == "name"
    long_name = parse_command({"type": "user_upsert", "user_id": "1", "name": "é" * 13})
    with pytest.raises(CommandError):  # 26 bytes in UTF-8
        check_for_device(long_name, "pull", {"user_layout": 72})


def test_pull_refusals_known_before_queueing() -> None:
    """What a pull terminal's layout or the command 110 write cannot take is refused at the
    API (400 naming the field, or 422), not queued to fail later."""
    letters = parse_command({"type": "user_upsert", "user_id": "ab12", "name": "x"})
    check_for_device(letters, "pull", {"user_layout": 72})
    check_for_device(letters, "push")
    with pytest.raises(CommandError) as caught:
        check_for_device(letters, "pull", {"user_layout": 28})
    assert caught.value.field == "user_id"
    too_big = parse_command({"type": "user_upsert", "user_id": "4294967296", "name": "x"})
    with pytest.raises(CommandError) as caught:
        check_for_device(too_big, "pull", {"user_layout": 28})
    assert caught.value.field == "user_id"
    check_for_device(
        parse_command({"type": "user_upsert", "user_id": "4294967295"}), "pull", {"user_layout": 28}
    )
    finger = {"type": "template_upsert", "user_id": "7", "format": "10", "data": B64}
    check_for_device(parse_command({**finger, "kind": "finger"}), "pull", {"user_layout": 72})
    with pytest.raises(CommandError) as caught:
        check_for_device(
            parse_command({**finger, "kind": "finger", "user_id": "x7"}),
            "pull",
            {"user_layout": 28},
        )
    assert caught.value.field == "user_id"
    for kind in ("face", "biodata", "userpic"):
        spec = parse_command({**finger, "kind": kind})
        check_for_device(spec, "push")
        with pytest.raises(Unsupported, match=f"{kind} templates"):
            check_for_device(spec, "pull", {"user_layout": 72})


NOW = datetime(2025, 10, 9, 18, 30, 45)


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ({"type": "reboot"}, "REBOOT"),
        ({"type": "sync_time"}, f"SET OPTION DateTime={zk_time(NOW)}"),
        ({"type": "info"}, "INFO"),
        ({"type": "check"}, "CHECK"),
        ({"type": "clear_log", "confirm": True}, "CLEAR LOG"),
        ({"type": "clear_data", "confirm": True}, "CLEAR DATA"),
        ({"type": "set_option", "key": "Delay", "value": "5"}, "SET OPTION Delay=5"),
        ({"type": "open_door", "seconds": 9}, "AC_UNLOCK"),
        ({"type": "user_upsert", "user_id": "7", "name": "Zoe", "card": "123"},
         "DATA UPDATE USERINFO PIN=7\tName=Zoe\tPri=0\tPasswd=\tCard=123\tGrp=1"),
        ({"type": "user_delete", "user_id": "7"}, "DATA DELETE USERINFO PIN=7"),
        ({"type": "query_users"}, "DATA QUERY USERINFO"),
        ({"type": "query_attlog", "since": "2025-01-01 00:00:00", "until": "2025-01-02 00:00:00"},
         "DATA QUERY ATTLOG StartTime=2025-01-01 00:00:00\tEndTime=2025-01-02 00:00:00"),
        ({"type": "enroll_finger", "user_id": "7", "finger": 3},
         "ENROLL_FP PIN=7\tFID=3\tRETRY=3\tOVERWRITE=1"),
        ({"type": "template_upsert", "user_id": "7", "kind": "finger", "index": 3,
          "format": "10", "data": "QUJD"},
         "DATA UPDATE FINGERTMP PIN=7\tFID=3\tSize=4\tValid=1\tTMP=QUJD"),
        ({"type": "template_upsert", "user_id": "7", "kind": "face", "format": "7",
          "data": "QUJD"},
         "DATA UPDATE FACE PIN=7\tFID=0\tValid=1\tSize=4\tTMP=QUJD"),
        ({"type": "template_upsert", "user_id": "7", "kind": "biodata", "format": "39",
          "index": 1, "data": "QUJD"},
         "DATA UPDATE BIODATA Pin=7\tNo=1\tIndex=0\tValid=1\tDuress=0\tType=9\tMajorVer=39"
         "\tMinorVer=0\tFormat=0\tTmp=QUJD"),
        ({"type": "template_upsert", "user_id": "7", "kind": "userpic", "data": "QUJD"},
         "DATA UPDATE USERPIC PIN=7\tSize=4\tContent=QUJD"),
        ({"type": "raw", "command": "RELOAD OPTIONS"}, "RELOAD OPTIONS"),
    ],
)  # fmt: skip
def test_push_lines(body: dict[str, Any], line: str) -> None:
    assert format_push_command(parse_command(body), NOW) == line


def test_zk_time_is_the_31_day_month_encoding() -> None:
    # ((25*12*31) + (10-1)*31 + 9-1) * 86400 + (18*60+30)*60 + 45
    assert zk_time(NOW) == ((25 * 12 * 31) + 9 * 31 + 8) * 86400 + (18 * 60 + 30) * 60 + 45


def test_reply_cap() -> None:
    assert fits_reply("x" * (900 * 1024 - 19))
    assert not fits_reply("x" * (900 * 1024 - 18))


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (0, ""),
        (-1, "bad parameter"),
        (-3, "read/write error"),
        (-10, "user not found"),
        (-1001, "capacity full"),
        (-1002, "not supported by this terminal"),
        (-1003, "timeout"),
        (-1005, "busy"),
        (-77, "error -77"),
        (None, "no return code"),
    ],
)
def test_push_result_words(code: int | None, words: str) -> None:
    assert push_result(code) == words


def test_result_words_keep_the_device_text() -> None:
    assert push_result(0, "UserCount=3") == "UserCount=3"
    assert push_result(-1, "x") == "bad parameter\nx"
    assert pull_result(0xFFFF) == "not supported by this terminal"
    assert pull_result(2001) == "refused by the terminal"


def test_info_result_lines() -> None:
    text = "~DeviceName=F22\nMAC=00:17\nnot a pair\nUserCount=12\nbad key!=1\x01"
    assert parse_info_result(text) == {"~DeviceName": "F22", "MAC": "00:17", "UserCount": "12"}


@given(
    st.dictionaries(
        st.text(max_size=12),
        st.one_of(st.none(), st.integers(), st.text(), st.booleans(), st.lists(st.integers())),
    )
)
def test_parse_never_raises_anything_but_command_error(body: dict[str, Any]) -> None:
    for type_name in [*COMMAND_TYPES, None]:
        candidate = dict(body) if type_name is None else {**body, "type": type_name}
        try:
            spec = parse_command(candidate)
        except CommandError as e:
            known = COMMAND_TYPES.get(str(candidate.get("type", "raw")))
            assert (
                e.field in candidate
                or e.field == "type"
                or (known is not None and e.field in known.fields)
            )
        else:
            if spec.type in ("raw",) or "push" in COMMAND_TYPES[spec.type].kinds:
                format_push_command(spec, NOW)
