"""Biometric records: reading them from terminals, and which a terminal can take. Pure.

- :func:`from_push_record` reads an OPERLOG/BIODATA record of a push terminal (``FP``,
  ``FACE``, ``USERPIC``, ``BIOPHOTO``, ``BIODATA``; docs/protocols.md §A.2) into a
  :class:`~zkserver.persons.model.NewTemplate`.
- :func:`device_versions` is the fingerprint and face algorithm versions a terminal
  reports (push: ``FPVersion``/``FaceVersion`` from INFO or its options; pull:
  ``~ZKFPVersion``/``ZKFaceVersion`` read with OPTIONS_RRQ).
- :func:`plan_upsert` is what to send a device to bring a person into step: the
  ``user_upsert`` fields, one ``template_upsert`` per template the device can take, the
  templates skipped with the reason, and a digest of it all (unchanged digest: in step).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from attrs import field, frozen

from zkserver.persons.model import NewTemplate, Person, PersonTemplate
from zkserver.push.iclock import parse_key_values
from zkserver.records import Device

__all__ = [
    "KINDS",
    "Plan",
    "device_versions",
    "digest",
    "from_push_record",
    "plan_upsert",
]

KINDS = ("finger", "face", "palm", "userpic", "biophoto")

#: BIODATA ``Type`` -> kind (1 fingerprint, 2 face, 7 finger vein, 8 palm, 9 visible-light
#: face).
BIODATA_TYPES = {1: "finger", 2: "face", 8: "palm", 9: "face"}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _int(value: str, default: int = 0) -> int:
    value = (value or "").strip()
    return int(value) if value.isdigit() else default


def _decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def from_push_record(record: str, line: str, device: Device | None = None) -> NewTemplate | None:
    """The template of a push biometric record line (``FP PIN=1\\tFID=0\\t...``);
    None when the line has no PIN or no readable data."""
    keyword, _, rest = line.strip().partition(" ")
    if "\t" in keyword:
        keyword, _, more = keyword.partition("\t")
        rest = more + "\t" + rest
    fields = {k.lower(): v for k, v in parse_key_values(rest).items()}
    pin = fields.get("pin", "").strip()
    if not pin:
        return None
    versions = device_versions(device) if device is not None else {}
    record = (record or keyword).upper()
    kind, fmt = "", ""
    data_text = fields.get("tmp") or fields.get("content") or fields.get("data") or ""
    if record in ("FP", "FINGERTMP"):
        kind, fmt = "finger", versions.get("finger", "")
        index = _int(fields.get("fid", ""))
    elif record in ("FACE", "FACETMP"):
        kind, fmt = "face", versions.get("face", "")
        index = _int(fields.get("fid", ""))
    elif record == "USERPIC":
        kind, index = "userpic", 0
    elif record == "BIOPHOTO":
        kind, index = "biophoto", _int(fields.get("no", "") or fields.get("fid", ""))
    elif record == "BIODATA":
        kind = BIODATA_TYPES.get(_int(fields.get("type", "")), "")
        if not kind:
            return None
        index = _int(fields.get("no", ""))
        fmt = fields.get("majorver", "").strip()
    else:
        return None
    data = _decode(data_text)
    if not data:
        return None
    return NewTemplate(
        user_id=pin,
        kind=kind,
        index=index,
        format=fmt,
        data=data,
        valid=_int(fields.get("valid", "1"), 1),
        duress=_int(fields.get("duress", "0")),
        source_table=record,
        source_device=device.id if device is not None else "",
    )


def device_versions(device: Device) -> dict[str, str]:
    """``{"finger": "10", "face": "7"}``: the algorithm versions ``device`` reports
    (a version it does not report is left out)."""
    info = device.info or {}
    found: dict[str, str] = {}
    if device.kind == "pull":
        candidates = {"finger": [info.get("fp_version")], "face": [info.get("face_version")]}
    else:
        raw = info.get("options")
        options: dict[str, Any] = raw if isinstance(raw, dict) else {}
        candidates = {
            "finger": [info.get("FPVersion"), options.get("FPVersion"), info.get("fpver")],
            "face": [info.get("FaceVersion"), options.get("FaceVersion"), info.get("facever")],
        }
    for kind, values in candidates.items():
        for value in values:
            text = str(value).strip() if value is not None else ""
            if text.isdigit() and int(text) > 0:
                found[kind] = str(int(text))
                break
    return found


@frozen
class Plan:
    """What brings a person into step on one device."""

    user: dict[str, Any]
    templates: list[dict[str, Any]] = field(factory=list)
    skipped: list[str] = field(factory=list)
    want: str = ""

    def detail(self) -> str:
        return "; ".join(self.skipped)


def _why_not(template: PersonTemplate, device: Device, versions: dict[str, str]) -> str | None:
    """None when ``device`` takes ``template``, else the reason."""
    what = f"{template.kind} {template.index}"
    if template.kind in ("palm", "biophoto"):
        return f"{what} skipped: {template.kind} templates are kept, not sent to terminals"
    if device.kind == "pull" and template.kind != "finger":
        return f"{what} skipped: template format not supported (pull terminals take fingers)"
    if template.kind == "userpic":
        return None
    have = versions.get(template.kind)
    if not have:
        return f"{what} skipped: the terminal reports no {template.kind} algorithm version"
    if not template.format:
        return f"{what} skipped: the template's algorithm version is not known"
    if template.format != have:
        return (
            f"{what} skipped: template format not supported (version {template.format},"
            f" the terminal has {have})"
        )
    return None


def plan_upsert(
    person: Person, templates: Sequence[tuple[PersonTemplate, bytes]], device: Device
) -> Plan:
    """The commands' fields that put ``person`` (with their current ``templates``) on
    ``device``; templates it cannot take are skipped with the reason."""
    versions = device_versions(device)
    user = person.user_fields()
    sent: list[dict[str, Any]] = []
    skipped: list[str] = []
    for template, data in sorted(templates, key=lambda t: (t[0].kind, t[0].index)):
        reason = _why_not(template, device, versions)
        if reason is not None:
            skipped.append(reason)
            continue
        kind = template.kind
        if kind == "face" and template.source_table == "BIODATA" and device.kind == "push":
            kind = "biodata"
        sent.append(
            {
                "user_id": person.user_id,
                "kind": kind,
                "index": template.index,
                "format": template.format if kind != "userpic" else "",
                "valid": min(max(template.valid, 0), 3),
                "data": base64.b64encode(data).decode(),
                "_digest": template.digest,
            }
        )
    want = hashlib.sha256(
        json.dumps(
            [user, [(t["kind"], t["index"], t["_digest"]) for t in sent]], sort_keys=True
        ).encode()
    ).hexdigest()[:32]
    for t in sent:
        del t["_digest"]
    return Plan(user=user, templates=sent, skipped=skipped, want=want)
