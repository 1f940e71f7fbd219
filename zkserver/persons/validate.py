"""Validation of persons: the fields, and whether a person fits each target terminal. Pure.

:func:`person_fields` checks a JSON object (a new person, or with ``partial`` the fields
of a change) and returns the normalised fields; :func:`check_fits` checks them against
the devices the person must be on. Errors name the field by its JSON name
(:class:`PersonError`, HTTP 400) and, for a device, which device.

What a pull terminal takes depends on its user record layout, learnt when zkserver
first read its users (``device.info["user_layout"]``, docs/protocols.md §B.7): the 28-byte
layout keeps the PIN and the group as numbers (PIN at most 4294967295, group at most
255), the name in 8 bytes and the password in 5; the 72-byte layout keeps a 24-byte name,
an 8-byte password and PIN and group as text. Push terminals take the PIN as 1-24
letters or digits and a name of up to 24 characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from zkserver.commands.spec import (  # the same user-record fields as the commands'
    ALNUM_RE,
    CONTROL_RE,
    DIGITS_RE,
    GROUP_MAX,
    KEY_AFTER_SPACE_RE,
    NAME_MAX,
    PASSWORD_MAX,
    PIN_RE,
    PRIVILEGES,
)
from zkserver.persons.model import ALL
from zkserver.pull import codec
from zkserver.records import Device, DeviceUser

__all__ = [
    "PRIVILEGES",
    "PersonError",
    "check_fits",
    "fit_problems",
    "parse_bool",
    "parse_devices",
    "person_fields",
    "valid_pin",
]

NOTES_MAX = 2000
DEVICES_MAX = 1000
FIELDS = ("user_id", "name", "card", "password", "privilege", "group", "active", "devices", "notes")


class PersonError(ValueError):
    """A field is not right: ``field`` (JSON name), ``message``; ``device_id`` when the
    value does not fit that device."""

    def __init__(self, field: str, message: str, device_id: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.device_id = device_id

    def public(self) -> dict[str, Any]:
        body: dict[str, Any] = {"field": self.field, "detail": self.message}
        if self.device_id is not None:
            body["device_id"] = self.device_id
        return body


def valid_pin(value: Any) -> str:
    """A PIN: 1-24 letters or digits (an integer is taken as its digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not PIN_RE.match(value.strip()):
        raise PersonError("user_id", "user_id must be 1-24 letters or digits")
    return value.strip()


def _text(body: Mapping[str, Any], name: str, limit: int) -> str:
    value = body.get(name, "")
    if value is None:
        value = ""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise PersonError(name, f"{name} must be a string")
    if name != "notes" and CONTROL_RE.search(value):
        raise PersonError(name, f"{name} must not contain TAB, newline or control characters")
    if len(value) > limit:
        raise PersonError(name, f"{name} is longer than {limit} characters")
    if name in ("name", "password") and KEY_AFTER_SPACE_RE.search(value):
        raise PersonError(
            name, f"{name} must not contain a space followed by Key= (read as another field)"
        )
    return value.strip() if name != "password" else value


def parse_bool(value: Any, name: str = "active") -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no"):
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise PersonError(name, f"{name} must be true or false")


def parse_devices(value: Any) -> str | list[str]:
    """``"all"`` or a list of device ids (a string of ids separated by ``;`` or ``,``)."""
    if value is None or value == ALL:
        return ALL
    if isinstance(value, str):
        value = [v for v in re.split(r"[;,]", value)]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PersonError("devices", 'devices must be "all" or a list of device ids')
    ids = list(dict.fromkeys(v.strip() for v in value if v.strip()))
    if len(ids) > DEVICES_MAX:
        raise PersonError("devices", f"devices has more than {DEVICES_MAX} entries")
    for item in ids:
        if len(item) > 64 or "," in item or CONTROL_RE.search(item):
            raise PersonError("devices", f"{item[:40]!r} is not a device id")
    return ids


def _privilege(value: Any) -> int:
    if isinstance(value, str) and DIGITS_RE.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value not in PRIVILEGES:
        raise PersonError(
            "privilege", "privilege must be 0 (user), 2 (registrar), 6 (admin) or 14 (super admin)"
        )
    return value


def person_fields(body: Any, *, partial: bool = False) -> dict[str, Any]:
    """The normalised fields of ``body``: all of them (defaults filled in) for a new
    person, only those given with ``partial``. PersonError naming the field."""
    if not isinstance(body, Mapping):
        raise PersonError("user_id", "a person must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise PersonError(unknown[0], f"a person has no field {unknown[0][:40]!r}")
    out: dict[str, Any] = {}
    if not partial or "user_id" in body:
        if "user_id" not in body:
            raise PersonError("user_id", "user_id is required")
        out["user_id"] = valid_pin(body["user_id"])
    checks = {
        "name": lambda: _text(body, "name", NAME_MAX),
        "card": lambda: _card(body),
        "password": lambda: _text(body, "password", PASSWORD_MAX),
        "privilege": lambda: _privilege(body.get("privilege", 0)),
        "group": lambda: _group(body),
        "active": lambda: parse_bool(body.get("active", True)),
        "devices": lambda: parse_devices(body.get("devices", ALL)),
        "notes": lambda: _text(body, "notes", NOTES_MAX),
    }
    for name, check in checks.items():
        if not partial or name in body:
            out[name] = check()
    return out


def _card(body: Mapping[str, Any]) -> str:
    card = _text(body, "card", 10)
    if card and (not DIGITS_RE.fullmatch(card) or int(card) > 0xFFFFFFFF):
        raise PersonError("card", "card must be a card number (digits, at most 4294967295)")
    return str(int(card)) if card and int(card) else ""


def _group(body: Mapping[str, Any]) -> str:
    group = _text(body, "group", GROUP_MAX)
    if group and not ALNUM_RE.fullmatch(group):
        raise PersonError("group", "group must be letters or digits")
    return group


def fit_problems(fields: Mapping[str, Any], device: Device) -> list[PersonError]:
    """Why a person with ``fields`` does not fit ``device`` (empty when it fits).

    Push terminals take every valid person whose name and password their text encoding
    holds; pull terminals are checked when their user layout is known."""
    if device.kind != "pull":
        return _unwritable(fields, device)
    layout = device.info.get("user_layout")
    if layout not in codec.USER_RECORD_SIZES:
        return []
    user = DeviceUser(
        user_id=str(fields.get("user_id", "")),
        name=str(fields.get("name", "")),
        privilege=int(fields.get("privilege", 0)),
        card=str(fields.get("card", "") or ""),
        password=str(fields.get("password", "") or ""),
        group=str(fields.get("group", "") or ""),
    )
    encoding = device.encoding
    label = device.name or device.serial_number or device.id
    pin = user.user_id
    if layout == 28 and DIGITS_RE.fullmatch(pin) and pin != str(int(pin)):
        return [
            PersonError(
                "user_id",
                f"device {label} ({device.id}) keeps 28-byte user records and takes a numeric"
                f" PIN: {pin} would be kept there, and reported back, as {int(pin)}",
                device.id,
            )
        ]
    try:
        codec.check_user(user, layout, encoding=encoding)
    except codec.FieldError as e:
        what = {
            "user_id": "a numeric PIN (at most 4294967295)" if layout == 28 else "a PIN",
            "name": f"a name of at most {codec.USER_FIELD_WIDTHS[layout]['name']} bytes",
            "password": (
                f"a password of at most {codec.USER_FIELD_WIDTHS[layout]['password']} bytes"
            ),
            "group": "a numeric group (at most 255)" if layout == 28 else "a group",
        }.get(e.field, e.field)
        return [
            PersonError(
                e.field,
                f"device {label} ({device.id}) keeps {layout}-byte user records and takes"
                f" {what}: {e.field} {e.reason}",
                device.id,
            )
        ]
    return []


def _unwritable(fields: Mapping[str, Any], device: Device) -> list[PersonError]:
    """A name or password the device's text encoding cannot hold (zkserver.device_text;
    none when it is automatic: UTF-8 holds everything)."""
    for name in ("name", "password"):
        value = str(fields.get(name, "") or "")
        try:
            value.encode(device.encoding or "utf-8")
        except UnicodeEncodeError as e:
            label = device.name or device.serial_number or device.id
            return [
                PersonError(
                    name,
                    f"device {label} ({device.id}) writes text in {device.encoding}, which"
                    f" has no {value[e.start]!r}: {name} cannot be written there",
                    device.id,
                )
            ]
    return []


def check_fits(fields: Mapping[str, Any], devices: Iterable[Device]) -> None:
    """Raise the first :func:`fit_problems` error for the devices ``fields`` target."""
    targets = fields.get("devices", ALL)
    for device in devices:
        if targets != ALL and device.id not in targets:
            continue
        problems = fit_problems(fields, device)
        if problems:
            raise problems[0]
