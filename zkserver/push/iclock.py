"""The push ("ADMS" / iclock HTTP) protocol, pure: text and bytes in, records out.

Nothing here touches the reactor or does I/O; the Klein resource and the push terminal
emulator call these functions. Parsers never raise on device data (except
:func:`parse_attphoto`, which raises :class:`MalformedPhoto`): a line the server cannot use
becomes a :class:`~zkserver.records.Rejected` kept for an operator, because answering a
terminal with an error makes it resend the same batch forever.

Decisions worth knowing (see docs/protocols.md §A):

- A line ends at LF, CR LF or a bare CR; a byte-order mark before the first line, blanks
  (space, CR, NUL) before a line and blanks (also TAB) after it are dropped; a line holding
  only blanks is ignored. Every other line becomes exactly one record or one Rejected
  (docs/protocols.md §A.10 lists the layouts seen in the field and how they are read).
- ATTLOG: PIN and time are required. A *missing or empty* status defaults to 255
  ("undefined" in the protocol) and a missing or empty verify to 200 ("other"), so a short
  line from odd firmware is kept without claiming "check-in" or "password"; a present but
  non-numeric value is rejected. Extended fields are kept as strings, exactly as sent.
- Handshake: a terminal that sends no ``pushver`` (old firmware) or one below 2.0 gets the old
  stamp keys (``Stamp``, ``OpStamp``, ``PhotoStamp``, integers) *in addition to* the new ones
  (unknown keys are ignored by terminals) and ``TransFlag=111111111111``; a terminal with
  pushver >= 2.0 gets only the new keys and the TAB-separated TransFlag.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from attrs import field, frozen

from zkserver import device_text
from zkserver.push.timezones import timezone_value
from zkserver.records import TIMESTAMP_FORMAT, DeviceUser, Punch, Rejected

__all__ = [
    "ATTLOG_FIELDS",
    "CommandResult",
    "MAX_ATTLOG_LINE",
    "MAX_COMMAND_REPLY",
    "MalformedPhoto",
    "OperlogBatch",
    "Photo",
    "check_command",
    "decode_text",
    "fit_commands",
    "format_attlog_line",
    "format_commands",
    "format_devicecmd_result",
    "format_handshake",
    "format_ok",
    "format_user_fields",
    "format_user_line",
    "format_userinfo_command",
    "parse_attlog",
    "parse_attphoto",
    "parse_card",
    "parse_devicecmd",
    "parse_handshake_reply",
    "parse_info",
    "parse_key_values",
    "parse_ok",
    "parse_operlog",
    "parse_options",
    "parse_query",
    "normal_timestamp",
    "parse_user_fields",
    "push_version_tuple",
    "split_lines",
    "TIMESTAMP_RE",
    "terminal_path",
]

#: Field names of an ATTLOG line, in order (the first seven are the documented form).
ATTLOG_FIELDS: tuple[str, ...] = (
    "user_id",
    "timestamp",
    "status",
    "verify_method",
    "workcode",
    "reserved1",
    "reserved2",
    "mask_flag",
    "temperature",
    "conv_temperature",
    "time_offset",
    "extend_data",
)

#: Longest ATTLOG line accepted (extend_data is base64 JSON, so allow some room).
MAX_ATTLOG_LINE = 8192
#: Longest OPERLOG/BIODATA line accepted (USERPIC/BIOPHOTO carry base64 images).
MAX_OPERLOG_LINE = 4 * 1024 * 1024
#: Longest PIN accepted (pull devices store 24 bytes; leave room for odd firmware).
MAX_PIN = 32
#: A ``getrequest`` reply must stay under ~900 KB.
MAX_COMMAND_REPLY = 900 * 1024
#: How much of an over-long line a Rejected keeps.
REJECTED_RAW_KEEP = 1024

DEFAULT_STATUS = 255  # "undefined"
DEFAULT_VERIFY = 200  # "other"

_BLANK = " \t\r\x00"
# C0 controls except TAB, DEL, C1 controls, and the replacement character.
_JUNK = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ufffd]")
_UINT = re.compile(r"[0-9]{1,9}")
# ASCII whitespace (str.split()) other than space and TAB.
_ASCII_SPACE = re.compile(r"[\n\x0b\x0c\r\x1c-\x1f]")
_INT = re.compile(r"[+-]?[0-9]{1,9}")
_DATE = re.compile(r"[0-9]{4}[-/][0-9]{1,2}[-/][0-9]{1,2}")
_TIME = re.compile(r"[0-9]{1,2}:[0-9]{2}:[0-9]{2}")
# A timestamp in a form seen in the field: '/' in the date, 'T' between date and time,
# one-digit month, day or hour (docs/protocols.md §A.10); normalised by normal_timestamp.
_LOOSE_TIMESTAMP = re.compile(
    r"([0-9]{4})[-/]([0-9]{1,2})[-/]([0-9]{1,2})[ T]([0-9]{1,2}):([0-9]{2}):([0-9]{2})"
)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_LINE_BREAK_BYTES = re.compile(rb"\r\n|\r|\n")
_BOM = "\ufeff"
# An ATTLOG line made of key=value fields (docs/protocols.md §A.10).
_KV_LINE = re.compile(r"[ \t]*[A-Za-z_][A-Za-z0-9_]*=")
# Key aliases of key=value punch lines, lower case (docs/protocols.md §A.10).
_PIN_KEYS = ("pin", "userid", "user_id")
_TIME_KEYS = ("time", "datetime", "checktime", "timestamp")
_STATUS_KEYS = ("status", "state", "inoutstatus")
_VERIFY_KEYS = ("verify", "verifytype", "verifymode", "verify_method")
_WORKCODE_KEYS = ("workcode", "work_code")
TIMESTAMP_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
_COMMAND_ID = re.compile(r"[A-Za-z0-9]{1,16}")
_KEYWORD_SPLIT = re.compile(r"([^ \t]*)([ \t]?)(.*)", re.DOTALL)
_KV_SPACE_SPLIT = re.compile(r" +(?=[A-Za-z~][A-Za-z0-9_~]*=)")
_MIN_YEAR, _MAX_YEAR = 1970, 2099


# --------------------------------------------------------------------------- text helpers


def decode_text(data: bytes, encoding: str = "") -> str:
    """Decode device text in the device's ``encoding`` (``""``: UTF-8, else GBK, else
    latin-1); see :func:`zkserver.device_text.decode` (docs/protocols.md §A.2).

    latin-1 maps every byte to a character, so nothing is ever dropped and the original
    bytes stay recoverable with ``.encode("latin-1")``.
    """
    return device_text.decode(data, encoding)


def split_lines(text: str) -> Iterator[str]:
    """The non-blank lines of a body: a line ends at LF, CR LF or a bare CR; a byte-order
    mark before the first line is dropped (docs/protocols.md §A.10)."""
    for line in _LINE_BREAK.split(text.removeprefix(_BOM)):
        if line.strip(_BLANK):
            yield line


def _trim(line: str) -> str:
    """A line without a byte-order mark, the blanks (space, CR, NUL) before it and the blanks
    (also TAB) after it; a leading TAB stays (it is an empty first field)."""
    return line.lstrip(" \r\x00").removeprefix(_BOM).lstrip(" \r\x00").rstrip(_BLANK)


def _lines(body: str | bytes, limit: int, encoding: str = "") -> Iterator[tuple[str, str | None]]:
    """Yield ``(line, reason)`` pairs; ``reason`` is set for lines too long to parse.

    Bytes are split first and decoded line by line (one GBK line does not change how the
    others decode); an over-long line is never decoded as a whole.
    """
    if isinstance(body, str):
        for line in split_lines(body):
            if len(line) > limit:
                yield _clip(line), f"line too long ({len(line)} characters, max {limit})"
            else:
                yield line, None
        return
    for chunk in _LINE_BREAK_BYTES.split(body.removeprefix(b"\xef\xbb\xbf")):
        if len(chunk) > limit:
            head = decode_text(chunk[:REJECTED_RAW_KEEP], encoding)
            yield head + "...", f"line too long ({len(chunk)} bytes, max {limit})"
            continue
        if not chunk.strip(_BLANK.encode()):
            continue
        yield decode_text(chunk, encoding), None


def _clip(line: str) -> str:
    return line if len(line) <= REJECTED_RAW_KEEP else line[:REJECTED_RAW_KEEP] + "..."


def _junk(line: str) -> str | None:
    match = _JUNK.search(line)
    if match is None:
        return None
    return f"control or binary character {match.group()!r} at column {match.start() + 1}"


def normal_timestamp(value: str) -> str:
    """``value`` as ``YYYY-MM-DD HH:MM:SS`` when it is a loose form of it, else unchanged."""
    if TIMESTAMP_RE.fullmatch(value):  # the usual case: already normal
        return value
    match = _LOOSE_TIMESTAMP.fullmatch(value.strip(" "))
    if match is None:
        return value
    y, mo, d, h, mi, se = match.groups()
    return f"{y}-{int(mo):02d}-{int(d):02d} {int(h):02d}:{mi}:{se}"


def _valid_timestamp(value: str) -> str | None:
    """``None`` if ``value`` is a real ``YYYY-MM-DD HH:MM:SS``, else why not."""
    if not TIMESTAMP_RE.fullmatch(value):
        return f"bad timestamp {value[:40]!r} (want YYYY-MM-DD HH:MM:SS)"
    try:  # what strptime(TIMESTAMP_FORMAT) checks once the pattern matched, 10x faster
        moment = datetime(
            int(value[:4]),
            int(value[5:7]),
            int(value[8:10]),
            int(value[11:13]),
            int(value[14:16]),
            int(value[17:19]),
        )
    except ValueError:
        return f"impossible timestamp {value!r}"
    if not _MIN_YEAR <= moment.year <= _MAX_YEAR:
        return f"timestamp year out of range {value!r}"
    return None


def _pin_problem(pin: str) -> str | None:
    if not pin:
        return "empty PIN"
    if len(pin) > MAX_PIN:
        return f"PIN too long ({len(pin)} characters)"
    if pin.split(maxsplit=1) != [pin]:  # str.split() splits at every str.isspace() character
        return "PIN contains whitespace"
    return None


# --------------------------------------------------------------------------- request path


def terminal_path(segments: Sequence[bytes]) -> list[bytes]:
    """The path segments of a terminal request as the routes know them: under ``iclock``
    empty segments (a trailing or doubled slash) are dropped and an ``.aspx`` suffix of the
    endpoint is removed (docs/protocols.md §A.11); any other path is left as it is."""
    kept = [s for s in segments if s]
    if not kept or kept[0] != b"iclock":
        return list(segments)
    last = kept[-1]
    if last.lower().endswith(b".aspx"):
        kept[-1] = last[: -len(b".aspx")]
    return kept


# --------------------------------------------------------------------------- query string


#: Query keys of the protocol, in their documented spelling (docs/protocols.md §A.1-§A.5).
_QUERY_KEYS = {
    key.lower(): key
    for key in (
        "SN",
        "table",
        "options",
        "pushver",
        "language",
        "DeviceType",
        "PushOptionsFlag",
        "INFO",
        "Stamp",
        "type",
    )
}


def parse_query(uri: bytes | str) -> dict[str, str]:
    """The query string of a raw request URI as a dict (first value wins).

    A key of the protocol sent in another letter case (``sn=``, ``Table=``) is stored under
    its documented spelling, unless that spelling is also sent (docs/protocols.md §A.11);
    other keys stay as sent. Read this instead of ``request.args``, which also merges a
    form-encoded body.
    """
    text = decode_text(uri) if isinstance(uri, bytes) else uri
    query = urlsplit(text).query
    result: dict[str, str] = {}
    folded: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        name = _QUERY_KEYS.get(key.lower(), key)
        (result if name == key else folded).setdefault(name, value)
    for name, value in folded.items():
        result.setdefault(name, value)
    return result


# --------------------------------------------------------------------------- ATTLOG


def parse_attlog(body: str | bytes, encoding: str = "") -> tuple[list[Punch], list[Rejected]]:
    """Parse an ATTLOG upload: one punch per line, TAB- or space-separated.

    Returns the punches in order and the lines that could not be used.
    """
    punches: list[Punch] = []
    rejected: list[Rejected] = []
    for line, reason in _lines(body, MAX_ATTLOG_LINE, encoding):
        if reason is None:
            result = _parse_attlog_line(line)
            if isinstance(result, Punch):
                punches.append(result)
                continue
            reason = result
        rejected.append(Rejected(source="ATTLOG", raw=line, reason=reason))
    return punches, rejected


def _fields(line: str, separator: str = "\t") -> list[str]:
    """Positional fields: split on TABs and, inside a TAB field, on spaces (a date and a time
    next to each other are one timestamp); an empty TAB field keeps its place; trailing empty
    fields are dropped (docs/protocols.md §A.10).  ``separator`` replaces TAB (``;``, ``,``)."""
    if (
        separator == "\t"
        and line.isascii()
        and line.count(" ") == 1
        and not _ASCII_SPACE.search(line)
    ):
        # The usual line, ``PIN<TAB>YYYY-MM-DD HH:MM:SS<TAB>...``: its one blank is the
        # timestamp's, so the TAB fields are the fields (what the general path gives).
        parts = line.split("\t")
        if len(parts) > 1 and TIMESTAMP_RE.fullmatch(parts[1]):
            while parts and parts[-1] == "":
                parts.pop()
            return parts
    return _split_fields(line, separator)


def _split_fields(line: str, separator: str) -> list[str]:
    """:func:`_fields`, the general way."""
    fields: list[str] = []
    for part in line.split(separator):
        words = part.split()
        fields.extend(words if words else [""])
    for i in range(1, len(fields) - 1):
        if _DATE.fullmatch(fields[i]) and _TIME.fullmatch(fields[i + 1]):
            fields[i : i + 2] = [f"{fields[i]} {fields[i + 1]}"]
            break
    while fields and fields[-1] == "":
        fields.pop()
    return fields


def _attlog_fields(line: str) -> list[str]:
    return _fields(line)


def _first(fields: dict[str, str], keys: Sequence[str]) -> str:
    for key in keys:
        if key in fields:
            return fields[key].strip(" ")
    return ""


def _parse_attlog_line(line: str) -> Punch | str:
    """A Punch, or the reason the line is rejected."""
    line = _trim(line)
    if problem := _junk(line):
        return problem
    if _KV_LINE.match(line):
        return _parse_attlog_kv(line)
    result = _punch_from_fields(_attlog_fields(line))
    if isinstance(result, str) and "\t" not in line:
        for separator in (";", ","):  # other separators seen: only when nothing else reads
            if separator in line:
                other = _punch_from_fields(_fields(line, separator))
                if isinstance(other, Punch):
                    return other
    return result


def _punch_from_fields(fields: list[str]) -> Punch | str:
    if len(fields) < 2:
        return "missing timestamp"
    pin, timestamp = fields[0], normal_timestamp(fields[1])
    if problem := _pin_problem(pin):
        return problem
    if problem := _valid_timestamp(timestamp):
        return problem
    count = len(fields)
    status = _number(fields[2] if count > 2 else "", DEFAULT_STATUS)
    if status is None:
        return f"non-numeric {ATTLOG_FIELDS[2]} {fields[2][:20]!r}"
    verify = _number(fields[3] if count > 3 else "", DEFAULT_VERIFY)
    if verify is None:
        return f"non-numeric {ATTLOG_FIELDS[3]} {fields[3][:20]!r}"
    raw: dict[str, Any] = {
        "user_id": pin,
        "timestamp": timestamp,
        "status": status,
        "verify_method": verify,
    }
    if count > 4:
        raw.update(zip(_ATTLOG_REST, fields[4:], strict=False))
        if count > len(ATTLOG_FIELDS):
            raw["extra"] = fields[len(ATTLOG_FIELDS) :]
    workcode = fields[4] if count > 4 else ""
    return Punch(pin, timestamp, status, verify, workcode, raw)


_ATTLOG_REST = ATTLOG_FIELDS[4:]


def _number(value: str, default: int) -> int | None:
    """A status or verify field: ``default`` when empty, None when not a number."""
    if value == "":
        return default
    return int(value) if _UINT.fullmatch(value) else None


def _parse_attlog_kv(line: str) -> Punch | str:
    """An ATTLOG line of ``key=value`` fields, read by key (any order, any letter case)."""
    fields = lower_keys(parse_key_values(line))
    pin = _first(fields, _PIN_KEYS)
    if problem := _pin_problem(pin):
        return problem
    timestamp = normal_timestamp(_first(fields, _TIME_KEYS))
    if problem := _valid_timestamp(timestamp):
        return problem
    numbers: list[int] = []
    for keys, default in ((_STATUS_KEYS, DEFAULT_STATUS), (_VERIFY_KEYS, DEFAULT_VERIFY)):
        value = _first(fields, keys)
        if value == "":
            numbers.append(default)
        elif _UINT.fullmatch(value):
            numbers.append(int(value))
        else:
            return f"non-numeric {keys[0]} {value[:20]!r}"
    status, verify = numbers
    workcode = _first(fields, _WORKCODE_KEYS)
    known = {*_PIN_KEYS, *_TIME_KEYS, *_STATUS_KEYS, *_VERIFY_KEYS}
    raw: dict[str, Any] = {
        "user_id": pin,
        "timestamp": timestamp,
        "status": status,
        "verify_method": verify,
        **{k: v for k, v in fields.items() if k not in known},
    }
    return Punch(pin, timestamp, status, verify, workcode, raw)


def format_attlog_line(punch: Punch) -> str:
    """One ATTLOG line (the documented 7-field TAB form, plus extended fields in ``raw``)."""
    fields = [
        punch.user_id,
        punch.timestamp,
        str(punch.status),
        str(punch.verify),
        punch.workcode,
        str(punch.raw.get("reserved1", "0")),
        str(punch.raw.get("reserved2", "0")),
    ]
    extended = [name for name in ATTLOG_FIELDS[7:] if name in punch.raw]
    if extended:
        last = ATTLOG_FIELDS.index(extended[-1])
        fields += [str(punch.raw.get(name, "")) for name in ATTLOG_FIELDS[7 : last + 1]]
    return "\t".join(_one_field(f) for f in fields)


def _one_field(value: str) -> str:
    return re.sub(r"[\t\r\n]", " ", value)


# --------------------------------------------------------------------------- OPERLOG / users


@frozen
class OperlogBatch:
    """What an OPERLOG (or BIODATA) upload held.

    ``oplogs`` are dicts ``{op, operator, timestamp, obj, values, raw}``; ``other`` holds
    template/photo lines (FP, FACE, USERPIC, BIOPHOTO, BIODATA, ...) as
    ``{kind, pin, raw}`` without decoding them.
    """

    users: list[DeviceUser] = field(factory=list)
    oplogs: list[dict[str, Any]] = field(factory=list)
    other: list[dict[str, str]] = field(factory=list)
    rejected: list[Rejected] = field(factory=list)

    @property
    def accepted(self) -> int:
        """Records the server can count in its ``OK: n``."""
        return len(self.users) + len(self.oplogs) + len(self.other)

    def counts(self) -> dict[str, int]:
        """Number of records per keyword (``USER``, ``OPLOG``, ``FP``, ...)."""
        result: dict[str, int] = {}
        if self.users:
            result["USER"] = len(self.users)
        if self.oplogs:
            result["OPLOG"] = len(self.oplogs)
        for item in self.other:
            result[item["kind"]] = result.get(item["kind"], 0) + 1
        return result


def parse_key_values(text: str) -> dict[str, str]:
    """``Key=Val<TAB>Key=Val`` into a dict (keys as sent, first wins).

    Fields are also split on spaces that precede ``Key=``, without TABs (odd firmware) and
    inside TAB fields (TABs and spaces mixed), so a name with spaces survives
    (docs/protocols.md §A.10).
    """
    if "\t" not in text:
        text = text.strip(" ")
    parts = [piece for part in text.split("\t") for piece in _KV_SPACE_SPLIT.split(part)]
    result: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        key = key.strip(" ")
        if sep and key:
            result.setdefault(key, value)
    return result


def lower_keys(fields: dict[str, str]) -> dict[str, str]:
    """``fields`` with lower-case keys (the first of keys differing only in case wins)."""
    result: dict[str, str] = {}
    for key, value in fields.items():
        result.setdefault(key.lower(), value)
    return result


def parse_card(value: str) -> str:
    """A card number as decimal text; ``[15CD5B07]`` is little-endian hex (123456789).

    ``""`` for no card (empty or zero). Raises ValueError for anything else.
    """
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        digits = value[1:-1]
        if not re.fullmatch(r"(?:[0-9A-Fa-f]{2})*", digits):
            raise ValueError(f"bad hex card {value!r}")
        number = int.from_bytes(bytes.fromhex(digits), "little")
    elif re.fullmatch(r"[0-9]{1,20}", value):
        number = int(value)
    elif value == "":
        return ""
    else:
        raise ValueError(f"bad card {value!r}")
    return str(number) if number else ""


def parse_user_fields(text: str) -> DeviceUser:
    """A DeviceUser from ``PIN=..\\tName=..\\tPri=..\\tPasswd=..\\tCard=..\\tGrp=..``.

    Raises ValueError when the PIN is missing or a number is malformed.
    """
    fields = {key.lower(): value for key, value in parse_key_values(text).items()}
    pin = fields.get("pin", "").strip()
    if problem := _pin_problem(pin):
        raise ValueError(problem)
    privilege = fields.get("pri", "").strip() or "0"
    if not _UINT.fullmatch(privilege):
        raise ValueError(f"bad privilege {privilege[:20]!r}")
    return DeviceUser(
        user_id=pin,
        name=fields.get("name", ""),
        privilege=int(privilege),
        card=parse_card(fields.get("card", "")),
        password=fields.get("passwd", ""),
        group=fields.get("grp", "").strip(),
    )


def format_user_fields(user: DeviceUser) -> str:
    """``PIN=..\\tName=..\\tPri=..\\tPasswd=..\\tCard=..\\tGrp=..`` for a user."""
    return "\t".join(
        [
            f"PIN={_one_field(user.user_id)}",
            f"Name={_one_field(user.name)}",
            f"Pri={user.privilege}",
            f"Passwd={_one_field(user.password)}",
            f"Card={_one_field(user.card)}",
            f"Grp={_one_field(user.group)}",
        ]
    )


def format_user_line(user: DeviceUser) -> str:
    """An OPERLOG ``USER`` line, as a terminal uploads it."""
    return f"USER {format_user_fields(user)}"


def format_userinfo_command(user: DeviceUser) -> str:
    """The getrequest command that adds or updates a user on a terminal."""
    return f"DATA UPDATE USERINFO {format_user_fields(user)}"


#: OPERLOG/BIODATA records kept as they are (templates and pictures of enrolled users).
BIOMETRIC_RECORDS = frozenset(
    {"FP", "FACE", "FVEIN", "USERPIC", "BIOPHOTO", "BIODATA", "FINGERTMP", "FACETMP"}
)


def parse_operlog(body: str | bytes, encoding: str = "") -> OperlogBatch:
    """Parse an OPERLOG or BIODATA upload into users, op-log entries and other lines."""
    batch = OperlogBatch()
    for line, reason in _lines(body, MAX_OPERLOG_LINE, encoding):
        if reason is None:
            reason = _parse_operlog_line(line, batch)
        if reason is not None:
            batch.rejected.append(Rejected(source="OPERLOG", raw=_clip(line), reason=reason))
    return batch


def _parse_operlog_line(line: str, batch: OperlogBatch) -> str | None:
    """Add the line's record to ``batch``; return a reason if it is rejected."""
    line = _trim(line)
    if problem := _junk(line):
        return problem
    # The keyword ends at the first space (or TAB, seen on some firmware).
    split = _KEYWORD_SPLIT.fullmatch(line.lstrip(" "))
    assert split is not None  # the pattern matches any text
    keyword, _, rest = split.groups()
    keyword = keyword.upper()  # 'user PIN=...' is seen too (docs/protocols.md §A.10)
    if keyword == "USER":
        try:
            batch.users.append(parse_user_fields(rest))
        except ValueError as e:
            return f"bad USER line: {e}"
        return None
    if keyword == "OPLOG":
        return _parse_oplog(line, rest, batch)
    if keyword in BIOMETRIC_RECORDS:
        fields = {key.lower(): value for key, value in parse_key_values(rest).items()}
        index = fields.get("fid") or fields.get("no") or fields.get("index") or ""
        batch.other.append(
            {"kind": keyword, "pin": fields.get("pin", ""), "index": index, "raw": line}
        )
        return None
    return f"unknown record {keyword[:20]!r}"


def _parse_oplog(line: str, rest: str, batch: OperlogBatch) -> str | None:
    fields = [f.strip(" ") for f in rest.split("\t")]
    if len(fields) < 3 or _valid_timestamp(normal_timestamp(fields[2])) is not None:
        fields = _fields(rest)  # spaces, or TABs and spaces mixed (docs/protocols.md §A.10)
    if len(fields) < 3:
        return "bad OPLOG line: fewer than 3 fields"
    op, operator, timestamp = fields[0], fields[1], normal_timestamp(fields[2])
    if not _UINT.fullmatch(op):
        return f"bad OPLOG line: non-numeric op {op[:20]!r}"
    if problem := _valid_timestamp(timestamp):
        return f"bad OPLOG line: {problem}"
    batch.oplogs.append(
        {
            "op": int(op),
            "operator": operator,
            "timestamp": timestamp,
            "obj": fields[3] if len(fields) > 3 else "",
            "values": fields[4:],
            "raw": line,
        }
    )
    return None


# --------------------------------------------------------------------------- ATTPHOTO


class MalformedPhoto(ValueError):
    """An ATTPHOTO upload that does not follow the documented layout."""


@frozen
class Photo:
    """An attendance photo: who, when (device local time) and the JPEG bytes."""

    user_id: str
    timestamp: str
    filename: str
    serial_number: str
    data: bytes = field(repr=lambda data: f"<{len(data)} bytes>")

    @property
    def size(self) -> int:
        return len(self.data)


_PHOTO_NAME = re.compile(r"([0-9]{14})(?:-([^/\\\s]{1,32}))?\.jpe?g", re.IGNORECASE)
_MAX_PHOTO_HEADER = 4096


def parse_attphoto(body: bytes, encoding: str = "") -> Photo:
    """Parse ``PIN=<yyyyMMddHHmmss-PIN.jpg>\\nSN=..\\nsize=<n>\\nCMD=uploadphoto\\0<JPEG>``.

    Raises :class:`MalformedPhoto` (a ValueError) with the reason.
    """
    header_bytes, sep, data = body.partition(b"\0")
    if not sep:
        raise MalformedPhoto("no NUL between the header and the image")
    if len(header_bytes) > _MAX_PHOTO_HEADER:
        raise MalformedPhoto(f"header too long ({len(header_bytes)} bytes)")
    header: dict[str, str] = {}
    for line in split_lines(decode_text(header_bytes, encoding)):
        key, eq, value = line.partition("=")
        if eq:
            header.setdefault(key.strip().lower(), value.strip())
    filename = header.get("pin", "")
    match = _PHOTO_NAME.fullmatch(filename)
    if match is None:
        raise MalformedPhoto(f"bad photo file name {filename[:60]!r}")
    stamp, pin = match.group(1), match.group(2) or ""
    try:
        moment = datetime.strptime(stamp, "%Y%m%d%H%M%S")
    except ValueError:
        raise MalformedPhoto(f"impossible time in file name {filename!r}") from None
    size_text = header.get("size", "")
    if not _UINT.fullmatch(size_text):
        raise MalformedPhoto(f"bad size {size_text[:20]!r}")
    size = int(size_text)
    if size != len(data):
        raise MalformedPhoto(f"size says {size} bytes, image has {len(data)}")
    return Photo(
        user_id=pin,
        timestamp=moment.strftime(TIMESTAMP_FORMAT),
        filename=filename,
        serial_number=header.get("sn", ""),
        data=data,
    )


# --------------------------------------------------------------------------- options, INFO


def parse_options(text: str | bytes, encoding: str = "") -> dict[str, str]:
    """A ``table=options`` body ``Key=Val,Key=Val,...`` (also LF-separated) as a dict.

    A piece without ``=`` is a comma inside the previous value and is joined back to it.
    """
    if isinstance(text, bytes):
        text = decode_text(text, encoding)
    result: dict[str, str] = {}
    last: str | None = None
    for line in split_lines(text):
        for piece in line.split(","):
            key, eq, value = piece.partition("=")
            key = key.strip(_BLANK)
            if eq and key:
                result[key] = value.strip(_BLANK)
                last = key
            elif last is not None and piece.strip(_BLANK):
                result[last] += "," + piece.strip(_BLANK)
    return result


#: Positional names of the ``INFO=`` getrequest value.
INFO_FIELDS: tuple[str, ...] = (
    "firmware",
    "user_count",
    "fp_count",
    "attlog_count",
    "ip",
    "fpver",
    "facever",
    "face_tmp_count",
    "face_count",
    "function_flags",
)
_INFO_INTS = {"user_count", "fp_count", "attlog_count", "face_tmp_count", "face_count"}


def parse_info(value: str) -> dict[str, Any]:
    """The getrequest ``INFO=`` value by position; counts as ints when numeric.

    Fewer fields give fewer keys; surplus fields go to ``extra``.
    """
    parts = [p.strip() for p in value.split(",")] if value.strip() else []
    result: dict[str, Any] = {}
    for name, part in zip(INFO_FIELDS, parts, strict=False):
        if name in _INFO_INTS and _UINT.fullmatch(part):
            result[name] = int(part)
        else:
            result[name] = part
    if len(parts) > len(INFO_FIELDS):
        result["extra"] = parts[len(INFO_FIELDS) :]
    return result


# --------------------------------------------------------------------------- commands


@frozen
class CommandResult:
    """One ``ID=..&Return=..&CMD=..`` result; ``result`` holds following Key=Value lines."""

    id: str
    return_code: int | None
    cmd: str
    result: str = ""
    params: dict[str, str] = field(factory=dict, eq=False)

    @property
    def ok(self) -> bool:
        return self.return_code == 0


_RESULT_NAMES = {"id": "ID", "return": "Return", "cmd": "CMD"}


def _results_of_line(line: str) -> list[dict[str, str]] | None:
    """The results one devicecmd line holds, or None when it is no result line (an INFO
    ``Key=Value`` line). Keys in any order and letter case; a key that comes again starts
    the next result of the same line (docs/protocols.md §A.11)."""
    groups: list[dict[str, str]] = [{}]
    seen: set[str] = set()
    for piece in line.split("&"):
        key, _, value = piece.partition("=")
        key = key.strip(_BLANK)
        lower = key.lower()
        if lower in seen:
            groups.append({})
            seen = set()
        seen.add(lower)
        groups[-1].setdefault(_RESULT_NAMES.get(lower, key), value.strip(_BLANK))
    if not line.startswith("ID=") and not any(
        "ID" in group and ("Return" in group or "CMD" in group) for group in groups
    ):
        return None
    return [group for group in groups if "ID" in group]


def parse_devicecmd(text: str | bytes, encoding: str = "") -> list[CommandResult]:
    """Parse a devicecmd body: several ``ID=<id>&Return=<code>&CMD=<type>`` lines.

    The three keys come in any order and letter case, and one line may hold several
    results (docs/protocols.md §A.11). Lines that are no result belong to the result before
    them (INFO's ``Key=Value`` lines); any before the first result are ignored. A
    non-numeric Return gives ``return_code=None``.
    """
    if isinstance(text, bytes):
        text = decode_text(text, encoding)
    results: list[CommandResult] = []
    current: dict[str, Any] | None = None
    extra: list[str] = []

    def close() -> None:
        if current is not None:
            code = current.pop("Return", "")
            results.append(
                CommandResult(
                    id=current.pop("ID", ""),
                    return_code=int(code) if _INT.fullmatch(code) else None,
                    cmd=current.pop("CMD", ""),
                    result="\n".join(extra),
                    params=current,
                )
            )

    for line in split_lines(text):
        stripped = line.strip(_BLANK)
        found = _results_of_line(stripped)
        if found is None:
            if current is not None:
                extra.append(stripped)
            continue
        for fields in found:
            close()
            current, extra = fields, []
    close()
    return results


def format_devicecmd_result(cmd_id: str, return_code: int, cmd: str, result: str = "") -> str:
    """One devicecmd result, as a terminal posts it (result lines follow, if any)."""
    head = f"ID={cmd_id}&Return={return_code}&CMD={cmd}"
    return f"{head}\n{result}" if result else head


def check_command(cmd_id: str, command: str) -> None:
    """Raise ValueError unless ``C:<cmd_id>:<command>`` is a valid single command line."""
    if not _COMMAND_ID.fullmatch(cmd_id):
        raise ValueError(f"command id must be 1-16 letters or digits: {cmd_id!r}")
    if not command or "\n" in command or "\r" in command:
        raise ValueError("command must be one non-empty line")
    if len(f"C:{cmd_id}:{command}".encode()) > MAX_COMMAND_REPLY:
        raise ValueError("command longer than a getrequest reply may be")


def fit_commands(
    commands: Sequence[tuple[str, str]], max_bytes: int = MAX_COMMAND_REPLY
) -> list[tuple[str, str]]:
    """The leading commands whose ``C:`` lines fit in one reply of ``max_bytes``."""
    chosen: list[tuple[str, str]] = []
    total = 0
    for cmd_id, command in commands:
        check_command(cmd_id, command)
        size = len(f"C:{cmd_id}:{command}".encode()) + (1 if chosen else 0)
        if total + size > max_bytes:
            break
        chosen.append((cmd_id, command))
        total += size
    return chosen


def format_commands(commands: Sequence[tuple[str, str]], max_bytes: int = MAX_COMMAND_REPLY) -> str:
    """A getrequest reply: ``C:<id>:<command>`` lines, or ``OK`` when there are none.

    Only the commands that fit in ``max_bytes`` are included; call :func:`fit_commands`
    to learn which ones were sent.
    """
    chosen = fit_commands(commands, max_bytes)
    if not chosen:
        return "OK"
    return "\n".join(f"C:{cmd_id}:{command}" for cmd_id, command in chosen)


def format_ok(n: int | None = None) -> str:
    """``OK: n`` for uploads, plain ``OK`` otherwise."""
    return "OK" if n is None else f"OK: {n}"


def parse_ok(text: str) -> int | None:
    """The ``n`` of an ``OK: n`` / ``OK:n`` / ``OK`` reply (0 for bare OK); None if not OK."""
    match = re.fullmatch(r"\s*OK(?:\s*:\s*([0-9]+))?\s*", text)
    if match is None:
        return None
    return int(match.group(1)) if match.group(1) else 0


# --------------------------------------------------------------------------- handshake

_NEW_TRANSFLAG = "\t".join(
    [
        "TransData AttLog",
        "OpLog",
        "AttPhoto",
        "EnrollUser",
        "ChgUser",
        "EnrollFP",
        "ChgFP",
        "UserPic",
    ]
)


def push_version_tuple(value: str | None) -> tuple[int, ...] | None:
    """``"2.4.1"`` -> ``(2, 4, 1)``; None when absent or unreadable."""
    if not value:
        return None
    numbers = re.findall(r"[0-9]+", value)
    return tuple(int(n) for n in numbers[:4]) if numbers else None


def _int_stamp(value: str) -> str:
    return value if _UINT.fullmatch(value) else "9999"


def format_handshake(
    serial: str,
    *,
    timezone_offset_minutes: int,
    delay: int = 10,
    error_delay: int = 30,
    trans_interval: int = 1,
    realtime: bool = True,
    push_version: str | None = None,
    trans_times: str = "00:00;14:05",
    attlog_stamp: str = "None",
    operlog_stamp: str = "9999",
    attphoto_stamp: str = "None",
    push_options: Sequence[str] = (),
    server_version: str = "2.4.1",
) -> str:
    """The reply to ``GET /iclock/cdata?SN=..&options=all`` (docs/protocols.md §A.1)."""
    version = push_version_tuple(push_version)
    old = version is None or version < (2,)
    lines = [
        f"GET OPTION FROM: {serial}",
        f"ATTLOGStamp={attlog_stamp}",
        f"OPERLOGStamp={_int_stamp(operlog_stamp)}",
        f"ATTPHOTOStamp={attphoto_stamp}",
    ]
    if old:
        lines += [
            f"Stamp={_int_stamp(attlog_stamp)}",
            f"OpStamp={_int_stamp(operlog_stamp)}",
            f"PhotoStamp={_int_stamp(attphoto_stamp)}",
        ]
    lines += [
        f"ErrorDelay={error_delay}",
        f"Delay={delay}",
        f"TransTimes={trans_times}",
        f"TransInterval={trans_interval}",
        f"TransFlag={'111111111111' if old else _NEW_TRANSFLAG}",
        f"TimeZone={timezone_value(timezone_offset_minutes)}",
        f"Realtime={1 if realtime else 0}",
        "Encrypt=None",
        f"ServerVer={server_version}",
        f"PushProtVer={server_version}",
    ]
    if push_options:
        lines.append(f"PushOptions={','.join(push_options)}")
    return "\n".join(lines) + "\n"


def parse_handshake_reply(text: str) -> dict[str, str]:
    """A handshake reply as a dict; raises ValueError without ``GET OPTION FROM``."""
    lines = list(split_lines(text))
    if not lines or not lines[0].startswith("GET OPTION FROM"):
        raise ValueError("handshake reply lacks 'GET OPTION FROM'")
    result: dict[str, str] = {"serial": lines[0].partition(":")[2].strip()}
    for line in lines[1:]:
        key, eq, value = line.partition("=")
        if eq:
            result[key.strip()] = value.strip()
    return result
