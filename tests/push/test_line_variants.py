"""Push lines as terminals in the field send them (docs/protocols.md §A.10): every variant
is parsed, or kept in /api/rejected with a reason, never dropped; the good lines of a batch
are saved and ``OK: n`` counts exactly the lines saved."""

from __future__ import annotations

from io import BytesIO

import pytest
import pytest_twisted
import treq
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http_headers import Headers

from tests.harness import RunningServer
from zkserver.push import v3
from zkserver.push.iclock import parse_attlog, parse_operlog

TS = "2025-10-09 18:30:45"

# (line as sent, user id, timestamp, status, verify, extra raw fields)
ATTLOG_VARIANTS = [
    ("documented", f"1001\t{TS}\t0\t15\t0\t0\t0", "1001", TS, 0, 15, {}),
    ("spaces", f"1001 {TS} 0 15 0 0 0", "1001", TS, 0, 15, {}),
    ("runs of spaces", "1001   2025-10-09   18:30:45   1  1", "1001", TS, 1, 1, {}),
    ("space in a TAB field", f"1001\t{TS} 0 15", "1001", TS, 0, 15, {}),
    ("TAB after spaces", f"1001 {TS}\t0\t15", "1001", TS, 0, 15, {}),
    ("TAB between date and time", "1001\t2025-10-09\t18:30:45\t1\t4", "1001", TS, 1, 4, {}),
    ("PIN and time only", f"1001\t{TS}", "1001", TS, 255, 200, {}),
    ("empty status", f"1001\t{TS}\t\t15\t\t\t", "1001", TS, 255, 15, {}),
    ("trailing TABs", f"1001\t{TS}\t0\t1\t\t\t\t", "1001", TS, 0, 1, {}),
    ("trailing NUL", f"1001\t{TS}\t0\t1\x00", "1001", TS, 0, 1, {}),
    ("leading spaces", f"  1001\t{TS}\t0\t1", "1001", TS, 0, 1, {}),
    ("BOM", f"\ufeff1001\t{TS}\t0\t1", "1001", TS, 0, 1, {}),
    (
        "extended firmware",
        f"1001\t{TS}\t0\t15\t0\t0\t0\t1\t36.5\t97.7\t+28800\teyJ0Ijo1fQ==",
        "1001", TS, 0, 15,
        {"mask_flag": "1", "temperature": "36.5", "time_offset": "+28800"},
    ),
    (
        "more fields than known",
        f"1001\t{TS}\t0\t15\t0\t0\t0\t0\t36.5\t97.7\t+28800\tx\ty\tz",
        "1001", TS, 0, 15, {"extra": ["y", "z"]},
    ),
    ("slashes in the date", "1001\t2025/10/09 18:30:45\t0\t1", "1001", TS, 0, 1, {}),
    ("ISO T", "1001\t2025-10-09T18:30:45\t0\t1", "1001", TS, 0, 1, {}),
    ("one-digit fields", "1001\t2025-10-9 8:05:07\t0\t1", "1001", "2025-10-09 08:05:07", 0, 1, {}),
    ("semicolons", f"1001;{TS};1;15", "1001", TS, 1, 15, {}),
    ("commas", f"1001,{TS},1,15", "1001", TS, 1, 15, {}),
    (
        "key=value",
        f"PIN=1001\tDateTime={TS}\tStatus=1\tVerify=15\tWorkCode=7",
        "1001", TS, 1, 15, {"workcode": "7"},
    ),
    (
        "key=value, any order and case, unknown keys",
        f"verifytype=4 time={TS} userid=1001 state=0 Temperature=36.6 MaskFlag=1",
        "1001", TS, 0, 4, {"temperature": "36.6", "maskflag": "1"},
    ),
    (
        "key=value, TABs and spaces mixed",
        f"pin=1001\tcheckTime={TS} inoutstatus=1\tverifymode=15",
        "1001", TS, 1, 15, {},
    ),
    ("key=value, no status", f"PIN=1001\tTIME={TS}", "1001", TS, 255, 200, {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "line", "user_id", "timestamp", "status", "verify", "raw_extra"),
    ATTLOG_VARIANTS,
    ids=[v[0] for v in ATTLOG_VARIANTS],
)
@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r", ""])
def test_attlog_variants_are_parsed(
    name: str,
    line: str,
    user_id: str,
    timestamp: str,
    status: int,
    verify: int,
    raw_extra: dict[str, object],
    ending: str,
) -> None:
    for body in (line + ending, (line + ending).encode()):
        punches, rejected = parse_attlog(body)
        assert rejected == [], rejected
        (punch,) = punches
        assert (punch.user_id, punch.timestamp, punch.status, punch.verify) == (
            user_id, timestamp, status, verify,
        )  # fmt: skip
        assert punch.raw["user_id"] == user_id and punch.raw["timestamp"] == timestamp
        for key, value in raw_extra.items():
            assert punch.raw[key] == value, key


ATTLOG_KEPT = [
    ("empty PIN (leading TAB)", f"\t{TS}\t0\t1", "empty PIN"),
    ("no time", "1001", "missing timestamp"),
    ("impossible date", "1001\t2025-02-30 10:00:00\t0\t1", "impossible timestamp"),
    ("words", "hello world", "bad timestamp"),
    ("status in words", f"1001\t{TS}\tin\t1", "non-numeric status"),
    ("key=value without a PIN", f"Time={TS}\tStatus=0", "empty PIN"),
    ("key=value with a bad time", "PIN=1\tTime=yesterday", "bad timestamp"),
    ("key=value status in words", f"PIN=1\tTime={TS}\tStatus=in", "non-numeric status"),
    ("binary", f"1001\x01\t{TS}\t0\t1", "control or binary"),
    ("pipes", f"1001|{TS}|0|1", "bad timestamp"),
]


@pytest.mark.parametrize(("name", "line", "reason"), ATTLOG_KEPT, ids=[k[0] for k in ATTLOG_KEPT])
def test_attlog_lines_that_cannot_be_read_are_kept_with_the_reason(
    name: str, line: str, reason: str
) -> None:
    punches, rejected = parse_attlog(f"{line}\r\n7\t{TS}\t0\t1\r\n")
    assert [p.user_id for p in punches] == ["7"]  # the good line of the batch
    assert len(rejected) == 1
    assert rejected[0].source == "ATTLOG" and reason in rejected[0].reason
    assert rejected[0].raw == line  # as sent, for an operator


def test_one_body_of_every_variant_keeps_every_line() -> None:
    good = [v[1] for v in ATTLOG_VARIANTS]
    bad = [k[1] for k in ATTLOG_KEPT]
    body = "\ufeff" + "\r\n".join(good[:10]) + "\r" + "\n".join(bad) + "\n" + "\r".join(good[10:])
    punches, rejected = parse_attlog(body.encode())
    assert len(punches) == len(good) and len(rejected) == len(bad)


OPERLOG_VARIANTS = [
    ("documented", "USER PIN=1\tName=Ann Lee\tPri=0\tPasswd=\tCard=\tGrp=1", "user"),
    ("lowercase keyword and keys", "user pin=2\tname=Bo\tpri=14", "user"),
    ("keys in any order, unknown keys", "USER Name=Cy\tFoo=bar\tPIN=3\tVerify=1", "user"),
    ("spaces between fields", "USER PIN=4 Name=Di Ng Pri=0 Card=[15CD5B07]", "user"),
    ("TABs and spaces mixed", "USER PIN=5\tName=Ed Card=123 Pri=0", "user"),
    ("trailing CR and NUL", "USER PIN=6\tName=Fay\r\x00", "user"),
    ("BOM", "\ufeffUSER PIN=7\tName=Gus", "user"),
    ("OPLOG documented", f"OPLOG 4\t0\t{TS}\t0\t0\t0\t0", "oplog"),
    ("OPLOG with spaces", f"OPLOG 4 0 {TS} 0 0 0 0", "oplog"),
    ("OPLOG TABs and spaces", f"OPLOG 4\t0 {TS}\t0", "oplog"),
    ("OPLOG lowercase, ISO T", "oplog 4\t0\t2025-10-09T18:30:45\t1", "oplog"),
    ("FP lowercase keys", "FP pin=1\tfid=6\tsize=4\tvalid=1\ttmp=QUJD", "other"),
]


@pytest.mark.parametrize(
    ("name", "line", "kind"), OPERLOG_VARIANTS, ids=[v[0] for v in OPERLOG_VARIANTS]
)
def test_operlog_variants_are_parsed(name: str, line: str, kind: str) -> None:
    batch = parse_operlog((line + "\r\n").encode())
    assert batch.rejected == [], batch.rejected
    assert batch.accepted == 1
    if kind == "user":
        (user,) = batch.users
        assert user.user_id.isdigit() and user.name
    elif kind == "oplog":
        (entry,) = batch.oplogs
        assert (entry["op"], entry["timestamp"]) == (4, TS)
    else:
        assert batch.other[0]["pin"] == "1"


def test_operlog_user_fields_whatever_the_separators() -> None:
    batch = parse_operlog(
        "USER PIN=4 Name=Di Ng Pri=0 Card=[15CD5B07]\nuser pin=2\tname=Bo\tpri=14\n"
    )
    assert [(u.user_id, u.name, u.privilege, u.card) for u in batch.users] == [
        ("4", "Di Ng", 0, "123456789"),
        ("2", "Bo", 14, ""),
    ]


def test_operlog_lines_that_cannot_be_read_are_kept() -> None:
    batch = parse_operlog(f"USER Name=NoPin\nWHATEVER 1 2 3\nOPLOG x\t0\t{TS}\nUSER PIN=9\n")
    assert [u.user_id for u in batch.users] == ["9"]
    assert [r.raw for r in batch.rejected] == [
        "USER Name=NoPin",
        "WHATEVER 1 2 3",
        f"OPLOG x\t0\t{TS}",
    ]
    assert all(r.reason for r in batch.rejected)


RTLOG_VARIANTS = [
    ("documented", f"time={TS}\tpin=1001\tcardno=0\tevent=0\tinoutstatus=1\tverifytype=15"),
    ("upper case keys", f"TIME={TS}\tPIN=1001\tEvent=0\tInOutStatus=1\tVerifyType=15"),
    ("spaces", f"time={TS} pin=1001 event=0 inoutstatus=1 verifytype=15"),
    ("mixed separators, any order", f"verifytype=15 inoutstatus=1\tpin=1001 time={TS}\tevent=0"),
    (
        "unknown keys, trailing CR",
        f"time={TS}\tpin=1001\tinoutstatus=1\tverifytype=15\tmaskflag=1\ttemperature=36.4\r",
    ),
    ("ISO T, BOM", "\ufefftime=2025-10-09T18:30:45\tpin=1001\tinoutstatus=1\tverifytype=15"),
]


@pytest.mark.parametrize(("name", "line"), RTLOG_VARIANTS, ids=[v[0] for v in RTLOG_VARIANTS])
def test_rtlog_variants_are_parsed(name: str, line: str) -> None:
    punches, rejected, other = v3.parse_rtlog((line + "\n").encode())
    assert (rejected, other) == ([], [])
    (punch,) = punches
    assert (punch.user_id, punch.timestamp, punch.status, punch.verify) == ("1001", TS, 1, 15)


def test_rtlog_lines_that_cannot_be_read_are_kept() -> None:
    body = (
        f"time={TS}\tpin=1\tinoutstatus=x\ntime=soon\tpin=2\npin=3\n"
        f"time={TS}\tpin=4\tverifytype=1\n"
    )
    punches, rejected, _other = v3.parse_rtlog(body)
    assert [p.user_id for p in punches] == ["4"]
    assert len(rejected) == 3 and all(r.source == "rtlog" and r.reason for r in rejected)


separators = st.sampled_from(["\t", " ", "  ", " \t", "\t "])


@given(
    st.integers(1, 99999).map(str),
    st.sampled_from([TS, "2025/10/09 18:30:45", "2025-10-09T18:30:45"]),
    st.integers(0, 5),
    st.integers(0, 255),
    st.lists(separators, min_size=3, max_size=3),
    st.sampled_from(["", "\r", "\x00", "\t", " "]),
    st.booleans(),
)
def test_any_mix_of_separators_reads_the_same_punch(
    pin: str, when: str, status: int, verify: int, seps: list[str], tail: str, bom: bool
) -> None:
    line = f"{pin}{seps[0]}{when}{seps[1]}{status}{seps[2]}{verify}{tail}"
    body = ("\ufeff" if bom else "") + line + "\r\n" + line.replace(pin, pin + "0", 1) + "\r"
    punches, rejected = parse_attlog(body.encode())
    assert rejected == []
    assert [(p.user_id, p.timestamp, p.status, p.verify) for p in punches] == [
        (pin, TS, status, verify),
        (pin + "0", TS, status, verify),
    ]


# --------------------------------------------------------------------------- over HTTP

SN = "VARIANTS01"


async def post(server: RunningServer, table: str, body: bytes) -> tuple[int, bytes]:
    agent = Agent(reactor, pool=server.pool)
    response = await agent.request(
        b"POST",
        f"{server.push_url}/iclock/cdata?SN={SN}&table={table}".encode(),
        Headers({b"User-Agent": [b"iClock Proxy/1.09"]}),
        FileBodyProducer(BytesIO(body)),
    )
    return response.code, await treq.content(response)


@pytest_twisted.ensureDeferred
async def test_a_batch_of_variants_saves_the_good_lines_and_counts_them(server: RunningServer):
    code, device = await server.api("POST", "/api/devices", {"serial_number": SN})
    assert code == 201
    await server.api("POST", f"/api/devices/{device['id']}/approve")
    good = [
        f"1001\t{TS}\t0\t15\t0\t0\t0",
        "1002 2025-10-09 18:31:00 1 1",
        "1003\t2025-10-09 18:32:00 0 4",
        "PIN=1004\tDateTime=2025-10-09 18:33:00\tStatus=1\tVerify=15",
        "1005;2025-10-09 18:34:00;0;1",
        "1006\t2025/10/09 18:35:00\t0\t1\x00",
    ]
    bad = ["1007\t2025-02-30 10:00:00\t0\t1", "garbage line", f"\t{TS}\t0\t1"]
    body = "\ufeff" + "\r\n".join(good[:3] + bad[:1]) + "\r" + "\n".join(good[3:] + bad[1:])
    code, reply = await post(server, "ATTLOG", body.encode())
    assert (code, reply) == (200, f"OK: {len(good)}".encode())
    code, page = await server.api("GET", f"/api/attendance?device_id={device['id']}")
    assert sorted(r["user_id"] for r in page["items"]) == [f"100{i}" for i in range(1, 7)]
    code, rejected = await server.api("GET", "/api/rejected")
    assert sorted(r["raw"] for r in rejected if r["serial_number"] == SN) == sorted(bad)
    # the same batch again: the same count (all already saved), nothing saved twice
    code, reply = await post(server, "ATTLOG", body.encode())
    assert (code, reply) == (200, f"OK: {len(good)}".encode())
    code, page = await server.api("GET", f"/api/attendance?device_id={device['id']}")
    assert len(page["items"]) == len(good)
    # rtlog and OPERLOG alike
    rtlog = f"TIME={TS}\tPIN=2001\tInOutStatus=1\tVerifyType=15\r\ntime=bad\tpin=2002\r\n"
    assert await post(server, "rtlog", rtlog.encode()) == (200, b"OK: 1")
    operlog = "user pin=3001\tname=Ann\r\nUSER PIN=3002 Name=Bo Pri=0\r\nNOPE x\r\n"
    assert await post(server, "OPERLOG", operlog.encode()) == (200, b"OK: 2")
