"""Typed device commands: the types, their fields, validation, and which kinds do which.

Pure: no reactor, no I/O. The API, the CLI, the push formatter and the pull executor all
use this one table. A command is given as a JSON object ``{"type": ..., <fields>}``;
:func:`parse_command` checks it and returns a :class:`CommandSpec` whose ``fields`` are
normalised (defaults filled in, numbers as ``int``, ``user_id`` as text):

============== ============================================================ ==== ====
type           fields                                                       push pull
============== ============================================================ ==== ====
reboot                                                                      yes  yes
sync_time                                                                   yes  yes
info                                                                        yes  yes
check                                                                       yes  no
clear_log      ``confirm: true``                                            yes  yes
clear_data     ``confirm: true``                                            yes  yes
set_option     ``key``, ``value``                                           yes  no
open_door      ``seconds`` (1-254, default 3; only pull terminals use it)   yes  yes
user_upsert    ``user_id``, ``name``, ``privilege``, ``password``,          yes  yes
               ``card``, ``group``
user_delete    ``user_id``                                                  yes  yes
query_users                                                                 yes  yes
query_attlog   ``since``, ``until`` (``YYYY-MM-DD HH:MM:SS``, device time)  yes  yes
enroll_finger  ``user_id``, ``finger`` (0-9)                                yes  yes
template_upsert ``user_id``, ``kind``, ``index``, ``format``, ``valid``,    yes  yes
               ``data`` (base64)
raw            ``command`` (one line, sent as given)                        yes  no
============== ============================================================ ==== ====

Errors: :class:`CommandError` (HTTP 400) names the offending field by its JSON name in
``field``; :class:`Unsupported` (HTTP 422) says that a device kind cannot do a type.
:func:`check_for_device` adds the checks that depend on the device (its kind, and for a
pull terminal the user record layout it reported: ``device.info["user_layout"]``, 28 or
72 bytes, limits ``name`` to 8 or 24 bytes and ``password`` to 5 or 8 bytes).

Results are reported in words: :func:`push_result` maps a push ``Return=`` code and
:func:`pull_result` a pull reply code (see docs/protocols.md §A.4 and §B.2).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from attrs import field, frozen

__all__ = [
    "COMMAND_TYPES",
    "KINDS",
    "CommandError",
    "CommandSpec",
    "CommandType",
    "Unsupported",
    "check_for_device",
    "check_kind",
    "parse_command",
    "pull_result",
    "push_result",
    "supports",
    "PUSH_RETURN_WORDS",
    "PULL_REPLY_WORDS",
    "STATUSES",
    "FINAL_STATUSES",
]

KINDS = ("push", "pull")

#: Every status a command can have; queued -> sent -> done | failed | expired | cancelled.
STATUSES = ("queued", "sent", "done", "failed", "expired", "cancelled")
FINAL_STATUSES = frozenset({"done", "failed", "expired", "cancelled"})


class CommandError(ValueError):
    """The command is invalid; ``field`` is the JSON name of the field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class Unsupported(ValueError):
    """A device of this kind cannot do this type of command (HTTP 422)."""

    def __init__(self, type_name: str, kind: str, reason: str = "") -> None:
        reason = reason or f"a {kind} terminal cannot do {type_name!r}"
        super().__init__(reason)
        self.type = type_name
        self.kind = kind
        self.reason = reason


@frozen
class CommandSpec:
    """A validated command: its type and its normalised fields (JSON-ready values)."""

    type: str
    fields: dict[str, Any] = field(factory=dict)

    def public(self) -> dict[str, Any]:
        return {"type": self.type, **self.fields}


Validator = Callable[[Mapping[str, Any]], dict[str, Any]]


@frozen
class CommandType:
    name: str
    kinds: frozenset[str]
    fields: tuple[str, ...]
    validate: Validator


# --- field checks -------------------------------------------------------------------

PIN_RE = re.compile(r"^[A-Za-z0-9]{1,24}$")
OPTION_KEY_RE = re.compile(r"^[A-Za-z0-9_~.]{1,64}$")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
#: Control characters, C1 controls (NEL) and the Unicode line and paragraph separators:
#: each can end a line or a field of the iclock command line somewhere on its way.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: The same in a ``raw`` line, which keeps its TABs (they separate its fields).
_RAW_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
#: A space before ``Key=`` starts a new field where a terminal sends no TABs
#: (docs/protocols.md §A.10): a name "Bob Pri=14" would come back as privilege 14.
KEY_AFTER_SPACE_RE = re.compile(r" [A-Za-z~][A-Za-z0-9_~]*=")
#: ASCII digits only (``"²".isdigit()`` is true, and ``int()`` refuses it).
DIGITS_RE = re.compile(r"[0-9]+")
ALNUM_RE = re.compile(r"[A-Za-z0-9]+")
PRIVILEGES = (0, 2, 6, 14)
TEMPLATE_KINDS = ("finger", "face", "biodata", "userpic")
NAME_MAX = 24  # characters (push terminals); pull terminals: see check_for_device
PASSWORD_MAX = 8
GROUP_MAX = 7
VALUE_MAX = 256


def _int(body: Mapping[str, Any], name: str, lo: int, hi: int, default: int | None) -> int:
    value = body.get(name, default)
    if value is None:
        raise CommandError(name, f"{name} is required")
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,12}", value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommandError(name, f"{name} must be an integer")
    if not lo <= value <= hi:
        raise CommandError(name, f"{name} must be between {lo} and {hi}")
    return value


def _text(
    body: Mapping[str, Any],
    name: str,
    *,
    limit: int,
    default: str | None = "",
    allow_int: bool = False,
) -> str:
    value = body.get(name, default)
    if value is None:
        raise CommandError(name, f"{name} is required")
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise CommandError(name, f"{name} must be a string")
    if CONTROL_RE.search(value):
        raise CommandError(name, f"{name} must not contain TAB, newline or control characters")
    if len(value) > limit:
        raise CommandError(name, f"{name} is longer than {limit} characters")
    return value


def _field_text(body: Mapping[str, Any], name: str, *, limit: int, allow_int: bool) -> str:
    """A value sent as one ``Key=value`` field of a user line (name, password)."""
    value = _text(body, name, limit=limit, allow_int=allow_int)
    if KEY_AFTER_SPACE_RE.search(value):
        raise CommandError(
            name, f"{name} must not contain a space followed by Key= (read as another field)"
        )
    return value


def _pin(body: Mapping[str, Any]) -> str:
    value = _text(body, "user_id", limit=64, default=None, allow_int=True)
    if not PIN_RE.match(value):
        raise CommandError("user_id", "user_id must be 1-24 letters or digits")
    return value


def _confirm(body: Mapping[str, Any]) -> dict[str, Any]:
    if body.get("confirm") is not True:
        raise CommandError("confirm", "confirm must be true: this erases data on the terminal")
    return {"confirm": True}


def _time(body: Mapping[str, Any], name: str) -> str:
    value = _text(body, name, limit=19, default=None)
    try:
        datetime.strptime(value, TIME_FORMAT)
    except ValueError:
        raise CommandError(name, f"{name} must be YYYY-MM-DD HH:MM:SS") from None
    return value


def _none(body: Mapping[str, Any]) -> dict[str, Any]:
    return {}


def _set_option(body: Mapping[str, Any]) -> dict[str, Any]:
    key = _text(body, "key", limit=64, default=None)
    if not OPTION_KEY_RE.match(key):
        raise CommandError("key", "key must be 1-64 letters, digits, '_', '~' or '.'")
    value = _text(body, "value", limit=VALUE_MAX, default=None, allow_int=True)
    return {"key": key, "value": value}


def _open_door(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"seconds": _int(body, "seconds", 1, 254, 3)}


def _user_upsert(body: Mapping[str, Any]) -> dict[str, Any]:
    privilege = _int(body, "privilege", 0, 14, 0)
    if privilege not in PRIVILEGES:
        raise CommandError("privilege", "privilege must be 0 (user), 2, 6 or 14 (admin)")
    password = _field_text(body, "password", limit=PASSWORD_MAX, allow_int=True)
    card = _text(body, "card", limit=10, allow_int=True)
    if card and (not DIGITS_RE.fullmatch(card) or int(card) > 0xFFFFFFFF):
        raise CommandError("card", "card must be a card number (digits, at most 4294967295)")
    group = _text(body, "group", limit=GROUP_MAX, default="1", allow_int=True)
    if group and not ALNUM_RE.fullmatch(group):
        raise CommandError("group", "group must be letters or digits")
    return {
        "user_id": _pin(body),
        "name": _field_text(body, "name", limit=NAME_MAX, allow_int=False),
        "privilege": privilege,
        "password": password,
        "card": card,
        "group": group,
    }


def _user_delete(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"user_id": _pin(body)}


def _query_attlog(body: Mapping[str, Any]) -> dict[str, Any]:
    since, until = _time(body, "since"), _time(body, "until")
    if since > until:
        raise CommandError("until", "until must not be before since")
    return {"since": since, "until": until}


def _enroll_finger(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"user_id": _pin(body), "finger": _int(body, "finger", 0, 9, None)}


def _template_upsert(body: Mapping[str, Any]) -> dict[str, Any]:
    kind = body.get("kind")
    if kind not in TEMPLATE_KINDS:
        raise CommandError("kind", "kind must be one of " + ", ".join(TEMPLATE_KINDS))
    index = _int(body, "index", 0, 9 if kind == "finger" else 255, 0)
    fmt = _text(body, "format", limit=8, default="", allow_int=True)
    if fmt and not DIGITS_RE.fullmatch(fmt):
        raise CommandError("format", "format must be the algorithm version, e.g. '10' or '12'")
    if kind in ("finger", "face", "biodata") and not fmt:
        raise CommandError("format", f"format (the algorithm version) is required for {kind}")
    valid = _int(body, "valid", 0, 3, 1)
    data = body.get("data")
    if not isinstance(data, str) or not data:
        raise CommandError("data", "data must be the template as base64 text")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise CommandError("data", "data is not valid base64") from None
    return {
        "user_id": _pin(body),
        "kind": kind,
        "index": index,
        "format": fmt,
        "valid": valid,
        "data": data,
    }


def _raw(body: Mapping[str, Any]) -> dict[str, Any]:
    command = body.get("command")
    if not isinstance(command, str) or not command.strip():
        raise CommandError("command", "command is required: one line, e.g. 'INFO'")
    if "\n" in command or "\r" in command:
        raise CommandError("command", "command must be one line")
    if _RAW_CONTROL.search(command):
        raise CommandError(
            "command", "command must not contain control characters or line separators"
        )
    return {"command": command.strip()}


BOTH = frozenset(KINDS)
PUSH = frozenset({"push"})

COMMAND_TYPES: dict[str, CommandType] = {
    t.name: t
    for t in (
        CommandType("reboot", BOTH, (), _none),
        CommandType("sync_time", BOTH, (), _none),
        CommandType("info", BOTH, (), _none),
        CommandType("check", PUSH, (), _none),
        CommandType("clear_log", BOTH, ("confirm",), _confirm),
        CommandType("clear_data", BOTH, ("confirm",), _confirm),
        CommandType("set_option", PUSH, ("key", "value"), _set_option),
        CommandType("open_door", BOTH, ("seconds",), _open_door),
        CommandType(
            "user_upsert",
            BOTH,
            ("user_id", "name", "privilege", "password", "card", "group"),
            _user_upsert,
        ),
        CommandType("user_delete", BOTH, ("user_id",), _user_delete),
        CommandType("query_users", BOTH, (), _none),
        CommandType("query_attlog", BOTH, ("since", "until"), _query_attlog),
        CommandType("enroll_finger", BOTH, ("user_id", "finger"), _enroll_finger),
        CommandType(
            "template_upsert",
            BOTH,
            ("user_id", "kind", "index", "format", "valid", "data"),
            _template_upsert,
        ),
        CommandType("raw", PUSH, ("command",), _raw),
    )
}


def parse_command(body: Any) -> CommandSpec:
    """Validate a command object; CommandError (naming the field) when it is not right.

    An object without ``type`` but with ``command`` is a ``raw`` command (the form the
    API took before typed commands).
    """
    if not isinstance(body, Mapping):
        raise CommandError("command", "a command must be a JSON object with a 'type'")
    name = body.get("type")
    if name is None and "command" in body:
        name = "raw"
    if not isinstance(name, str) or not name:
        raise CommandError("type", "type is required, one of " + ", ".join(COMMAND_TYPES))
    kind = COMMAND_TYPES.get(name)
    if kind is None:
        raise CommandError(
            "type", f"unknown type {name[:40]!r}; one of " + ", ".join(COMMAND_TYPES)
        )
    unknown = sorted(set(body) - {"type", *kind.fields})
    if unknown:
        raise CommandError(unknown[0], f"{name} has no field {unknown[0][:40]!r}")
    return CommandSpec(name, kind.validate(body))


def supports(type_name: str, kind: str) -> bool:
    """Whether a device of ``kind`` ("push"/"pull") can do commands of ``type_name``."""
    found = COMMAND_TYPES.get(type_name)
    return found is not None and kind in found.kinds


def check_kind(spec: CommandSpec, kind: str) -> None:
    """Raise :class:`Unsupported` unless a ``kind`` device can do ``spec``."""
    if not supports(spec.type, kind):
        raise Unsupported(spec.type, kind)


def check_for_device(
    spec: CommandSpec, kind: str, info: Mapping[str, Any] | None = None, encoding: str = ""
) -> None:
    """The checks that depend on the device: its kind (:class:`Unsupported`; for a pull
    terminal also a template that is not a fingerprint), a ``name`` or ``password`` its
    text ``encoding`` cannot hold (:class:`CommandError`) and, for a pull terminal, the
    fields of its user record layout (:class:`CommandError`: ``name``, ``password``,
    ``group`` sizes in bytes of its encoding, and with the 28-byte layout a numeric
    ``user_id`` without leading zeros, for every type that names one)."""
    check_kind(spec, kind)
    if spec.type == "user_upsert" and encoding:
        for name in ("name", "password"):
            try:
                spec.fields[name].encode(encoding)
            except UnicodeEncodeError as e:
                bad = spec.fields[name][e.start]
                raise CommandError(
                    name, f"this terminal writes text in {encoding}, which has no {bad!r}"
                ) from None
    if kind != "pull" or "user_id" not in spec.fields:
        return
    layout = (info or {}).get("user_layout")
    if layout == 28:  # the PIN is a 32-bit number there (docs/protocols.md §B.7)
        pin = spec.fields["user_id"]
        if not pin.isdigit() or int(pin) > 0xFFFFFFFF:
            raise CommandError(
                "user_id", "this terminal keeps user_id as a number from 0 to 4294967295"
            )
        if pin != str(int(pin)):  # 0012 would be kept, and reported back, as 12
            raise CommandError(
                "user_id",
                f"this terminal keeps user_id as a number: {pin} would become {int(pin)}",
            )
    if spec.type not in ("user_upsert", "template_upsert"):
        return
    if spec.type == "template_upsert":
        template = spec.fields["kind"]
        if template != "finger":
            reason = f"a pull terminal takes finger templates only, not {template} templates"
            raise Unsupported(spec.type, kind, reason)
        return
    name_max, password_max = (8, 5) if layout == 28 else (24, 8)
    writes = encoding or "utf-8"
    if len(spec.fields["name"].encode(writes)) > name_max:
        raise CommandError("name", f"name is longer than this terminal's {name_max} bytes")
    if len(spec.fields["password"].encode(writes)) > password_max:
        raise CommandError(
            "password", f"password is longer than this terminal's {password_max} bytes"
        )
    if layout == 28 and spec.fields["group"] and not spec.fields["group"].isdigit():
        raise CommandError("group", "this terminal keeps group as a number")


# --- results in words -----------------------------------------------------------------

PUSH_RETURN_WORDS: dict[int, str] = {
    0: "",
    -1: "bad parameter",
    -2: "transfer error",
    -3: "read/write error",
    -10: "user not found",
    -1001: "capacity full",
    -1002: "not supported by this terminal",
    -1003: "timeout",
    -1005: "busy",
}

#: Pull reply codes (docs/protocols.md §B.2) that mean the command did not succeed.
PULL_REPLY_WORDS: dict[int, str] = {
    2001: "refused by the terminal",  # ACK_ERROR
    2005: "not authorised",  # ACK_UNAUTH
    0xFFFF: "not supported by this terminal",  # ACK_UNKNOWN
}


def push_result(return_code: int | None, extra: str = "") -> str:
    """A push ``Return=`` code in words; ``extra`` (the device's result lines) follows."""
    if return_code is None:
        words = "no return code"
    elif return_code in PUSH_RETURN_WORDS:
        words = PUSH_RETURN_WORDS[return_code]
    else:
        words = f"error {return_code}"
    if words and extra:
        return f"{words}\n{extra}"
    return words or extra


def pull_result(reply_code: int) -> str:
    """A pull reply code that is not ACK_OK/ACK_DATA, in words."""
    return PULL_REPLY_WORDS.get(reply_code, f"reply code {reply_code}")
