"""Typed commands as iclock command lines (docs/protocols.md §A.3, §A.4, §A.7). Pure.

:func:`format_push_command` turns a :class:`~zkserver.commands.spec.CommandSpec` into the
line sent after ``C:<id>:`` in a getrequest reply; :func:`fits_reply` tells whether it
fits the terminal's reply cap; :func:`parse_info_result` reads an INFO result.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from zkserver.pull.codec import encode_time

if TYPE_CHECKING:  # (a runtime import would cycle: zkserver.commands imports this module)
    from zkserver.commands.spec import CommandSpec

__all__ = [
    "MAX_COMMAND_REPLY",
    "MAX_ID_LENGTH",
    "fits_reply",
    "format_push_command",
    "parse_info_result",
    "zk_time",
]

MAX_COMMAND_REPLY = 900 * 1024  # bytes of one getrequest reply (docs/protocols.md §A.3)
MAX_ID_LENGTH = 16

#: template_upsert ``kind`` -> the push table and its PIN/index/data keys.
_BIODATA_TYPE = 9  # visible-light face, the usual BIODATA template of face terminals


def zk_time(local_now: datetime) -> int:
    """The ZK time encoding of a device-local time (docs/protocols.md §B.4)."""
    return encode_time(local_now)


def format_push_command(spec: CommandSpec, local_now: datetime) -> str:
    """The iclock command line for ``spec``; ``local_now`` is the device's local time
    (used by ``sync_time``). ValueError for a type push terminals cannot do."""
    f: dict[str, Any] = spec.fields
    t = spec.type
    if t == "reboot":
        return "REBOOT"
    if t == "sync_time":
        return f"SET OPTION DateTime={zk_time(local_now)}"
    if t == "info":
        return "INFO"
    if t == "check":
        return "CHECK"
    if t == "clear_log":
        return "CLEAR LOG"
    if t == "clear_data":
        return "CLEAR DATA"
    if t == "set_option":
        return f"SET OPTION {f['key']}={f['value']}"
    if t == "open_door":
        return "AC_UNLOCK"
    if t == "user_upsert":
        return (
            f"DATA UPDATE USERINFO PIN={f['user_id']}\tName={f['name']}\tPri={f['privilege']}"
            f"\tPasswd={f['password']}\tCard={f['card']}\tGrp={f['group']}"
        )
    if t == "user_delete":
        return f"DATA DELETE USERINFO PIN={f['user_id']}"
    if t == "query_users":
        return "DATA QUERY USERINFO"
    if t == "query_attlog":
        return f"DATA QUERY ATTLOG StartTime={f['since']}\tEndTime={f['until']}"
    if t == "enroll_finger":
        return f"ENROLL_FP PIN={f['user_id']}\tFID={f['finger']}\tRETRY=3\tOVERWRITE=1"
    if t == "template_upsert":
        return _template(f)
    if t == "raw":
        return str(f["command"])
    raise ValueError(f"push terminals cannot do {t!r}")


def _template(f: dict[str, Any]) -> str:
    data, pin, size = f["data"], f["user_id"], len(f["data"])
    kind = f["kind"]
    if kind == "finger":
        return (
            f"DATA UPDATE FINGERTMP PIN={pin}\tFID={f['index']}\tSize={size}"
            f"\tValid={f['valid']}\tTMP={data}"
        )
    if kind == "face":
        return (
            f"DATA UPDATE FACE PIN={pin}\tFID={f['index']}\tValid={f['valid']}"
            f"\tSize={size}\tTMP={data}"
        )
    if kind == "biodata":
        return (
            f"DATA UPDATE BIODATA Pin={pin}\tNo={f['index']}\tIndex=0\tValid={f['valid']}"
            f"\tDuress=0\tType={_BIODATA_TYPE}\tMajorVer={f['format']}\tMinorVer=0"
            f"\tFormat=0\tTmp={data}"
        )
    if kind == "userpic":
        return f"DATA UPDATE USERPIC PIN={pin}\tSize={size}\tContent={data}"
    raise ValueError(f"unknown template kind {kind!r}")


def fits_reply(line: str) -> bool:
    """Whether ``C:<id>:<line>`` fits one getrequest reply whatever the id (<= 16 chars)."""
    return len(line.encode()) + len("C::") + MAX_ID_LENGTH <= MAX_COMMAND_REPLY


_KEY = re.compile(r"^[~A-Za-z0-9_.]{1,64}$")


def parse_info_result(text: str, limit: int = 200) -> dict[str, str]:
    """The ``Key=Value`` lines of an INFO result (printable, bounded)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        key = key.strip()
        if sep and _KEY.match(key) and len(found) < limit:
            found[key] = re.sub(r"[\x00-\x1f\x7f]", "", value.strip())[:256]
    return found
