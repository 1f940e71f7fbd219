"""Pure parts of the person registry: validation, device fit, CSV, biometric records."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zkserver.persons.biometric import device_versions, from_push_record, plan_upsert
from zkserver.persons.csvio import format_csv, parse_csv
from zkserver.persons.model import Person, PersonTemplate
from zkserver.persons.validate import PersonError, check_fits, fit_problems, person_fields
from zkserver.records import Device


def _device(kind: str = "pull", layout: int | None = 28, **info: object) -> Device:
    if layout is not None:
        info["user_layout"] = layout
    return Device(
        id="dev-1",
        serial_number="SN1",
        name="Gate",
        kind=kind,
        status="online",
        approved=True,
        info=dict(info),
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "a-b"}, "user_id"),
        ({"user_id": "x" * 25}, "user_id"),
        ({"user_id": "1", "name": "a\tb"}, "name"),
        ({"user_id": "1", "name": "a\nb"}, "name"),
        ({"user_id": "1", "name": "n" * 25}, "name"),
        ({"user_id": "1", "privilege": 3}, "privilege"),
        ({"user_id": "1", "privilege": True}, "privilege"),
        ({"user_id": "1", "card": "12a"}, "card"),
        ({"user_id": "1", "card": "4294967296"}, "card"),
        ({"user_id": "1", "password": "123456789"}, "password"),
        ({"user_id": "1", "group": "a b"}, "group"),
        ({"user_id": "1", "active": "maybe"}, "active"),
        ({"user_id": "1", "devices": 5}, "devices"),
        ({"user_id": "1", "colour": "red"}, "colour"),
        ({"user_id": "1", "name": "a\x85b"}, "name"),
        ({"user_id": "1", "name": "a\u2028b"}, "name"),
        ({"user_id": "1", "name": "Bob Pri=14"}, "name"),
        ({"user_id": "1", "password": "1 Pri=14"}, "password"),
        ({"user_id": "1", "card": "\u00b2"}, "card"),
        ({"user_id": "1", "card": "\uff11\uff12"}, "card"),
        ({"user_id": "1", "privilege": "\u00b2"}, "privilege"),
        ({"user_id": "1", "group": "\u00b2"}, "group"),
    ],
)
def test_bad_fields_are_named(body: dict, field: str) -> None:
    with pytest.raises(PersonError) as caught:
        person_fields(body)
    assert caught.value.field == field


def test_defaults_and_normalising() -> None:
    fields = person_fields(
        {"user_id": 42, "name": " Ann ", "privilege": "14", "devices": "a;b;a", "card": "007"}
    )
    assert fields == {
        "user_id": "42",
        "name": "Ann",
        "card": "7",
        "password": "",
        "privilege": 14,
        "group": "",
        "active": True,
        "devices": ["a", "b"],
        "notes": "",
    }
    assert person_fields({"name": "B"}, partial=True) == {"name": "B"}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"user_id": "A12", "name": "Ann"}, "user_id"),
        ({"user_id": "12", "name": "Nine Bytes"}, "name"),
        ({"user_id": "12", "name": "Ann", "password": "123456"}, "password"),
        ({"user_id": "12", "name": "Ann", "group": "G"}, "group"),
        # the PIN is a number there: 0012 would be kept (and reported back) as 12
        ({"user_id": "0012", "name": "Ann"}, "user_id"),
    ],
)
def test_a_28_byte_terminal_names_device_and_field(fields: dict, field: str) -> None:
    problems = fit_problems(fields, _device(layout=28))
    assert [p.field for p in problems] == [field]
    assert problems[0].device_id == "dev-1"
    assert "Gate" in problems[0].message and "28-byte" in problems[0].message


def test_72_byte_push_and_unknown_layouts_fit() -> None:
    assert fit_problems({"user_id": "0012", "name": "Ann"}, _device(layout=72)) == []
    assert fit_problems({"user_id": "0012", "name": "Ann"}, _device(kind="push", layout=None)) == []
    fields = {"user_id": "A12", "name": "A name of twenty chars", "password": "12345678"}
    assert fit_problems(fields, _device(layout=72)) == []
    assert fit_problems(fields, _device(layout=None)) == []
    assert fit_problems(fields, _device(kind="push", layout=None)) == []
    check_fits({**fields, "devices": ["other"]}, [_device(layout=28)])  # not a target
    with pytest.raises(PersonError):
        check_fits({**fields, "devices": "all"}, [_device(layout=28)])


def test_csv_round_trip_and_row_errors() -> None:
    people = [
        Person("1", name="=cmd", devices="all"),
        Person(
            "2", name="Bo", card="5", privilege=6, group="2", active=False, devices=["d1", "d2"]
        ),
    ]
    text = format_csv(people)
    assert text.splitlines()[1] == "1,'=cmd,,0,,all,true"
    good, errors = parse_csv(text)
    assert errors == []
    assert [r.fields for r in good] == [
        {
            "user_id": "1",
            "name": "=cmd",
            "card": "",
            "privilege": 0,
            "group": "",
            "devices": "all",
            "active": True,
        },
        {
            "user_id": "2",
            "name": "Bo",
            "card": "5",
            "privilege": 6,
            "group": "2",
            "devices": ["d1", "d2"],
            "active": False,
        },
    ]
    good, errors = parse_csv("user_id,name\n1,A\n1,B\nx-y,C\n")
    assert [r.row for r in good] == [2]
    assert [(e["row"], e["field"]) for e in errors] == [(3, "user_id"), (4, "user_id")]
    assert parse_csv("pin,name\n1,A\n")[1][0]["field"] == "user_id"


@pytest.mark.parametrize(
    "text",
    [
        # a spreadsheet in a comma-decimal locale saves with ';' (Excel "CSV"), with a BOM
        '\ufeffuser_id;name;card;devices\r\n0012;Müller, Jörg;0042;all\r\n7;"Ann; Lee";;\r\n',
        # TAB-separated ("Unicode text" / copied from a sheet)
        "user_id\tname\tcard\tdevices\n0012\tMüller, Jörg\t42\tall\n7\tAnn; Lee\t\t\n",
        # bare CR line ends (classic Mac Excel)
        'user_id,name,card,devices\r0012,"Müller, Jörg",42,all\r7,Ann; Lee,,\r',
        # quoted header and fields, CRLF
        '"user_id","name","card","devices"\r\n"0012","Müller, Jörg","42","all"\r\n'
        '"7","Ann; Lee","",""\r\n',
    ],
)
def test_csv_dialects_of_real_files(text: str) -> None:
    good, errors = parse_csv(text)
    assert errors == []
    assert [(r.row, r.fields) for r in good] == [
        (2, {"user_id": "0012", "name": "Müller, Jörg", "card": "42", "devices": "all"}),
        (3, {"user_id": "7", "name": "Ann; Lee", "card": "", "devices": "all"}),
    ]


def test_csv_semicolon_file_keeps_its_quoted_device_list() -> None:
    good, errors = parse_csv('user_id;name;devices\n5;Bo;"d1;d2"\n6;Al;d3,d4\n')
    assert errors == []
    assert [r.fields["devices"] for r in good] == [["d1", "d2"], ["d3", "d4"]]


@given(st.lists(st.text(alphabet="abcXYZ 019éü", max_size=24), max_size=5))
def test_csv_names_survive(names: list[str]) -> None:
    people = [Person(str(i + 1), name=n.strip()) for i, n in enumerate(names)]
    good, errors = parse_csv(format_csv(people))
    assert errors == []
    assert [r.fields.get("name", "") for r in good] == [p.name for p in people]


DATA = bytes(range(64))
B64 = base64.b64encode(DATA).decode()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"FP PIN=7\tFID=3\tSize={len(B64)}\tValid=1\tTMP={B64}", ("finger", 3, "10")),
        (f"FACE PIN=7\tFID=0\tSize={len(B64)}\tValid=1\tTMP={B64}", ("face", 0, "7")),
        (f"USERPIC PIN=7\tFileName=7.jpg\tSize={len(B64)}\tContent={B64}", ("userpic", 0, "")),
        (f"BIOPHOTO PIN=7\tType=9\tSize={len(B64)}\tContent={B64}", ("biophoto", 0, "")),
        (
            f"BIODATA Pin=7\tNo=0\tIndex=0\tValid=1\tDuress=0\tType=9\tMajorVer=39\tMinorVer=1"
            f"\tFormat=0\tTmp={B64}",
            ("face", 0, "39"),
        ),
        (
            f"BIODATA Pin=7\tNo=2\tIndex=0\tValid=1\tDuress=1\tType=8\tMajorVer=35\tTmp={B64}",
            ("palm", 2, "35"),
        ),
    ],
)
def test_push_biometric_records(line: str, expected: tuple) -> None:
    device = _device(kind="push", layout=None, fpver="10", facever="7")
    template = from_push_record(line.split(" ")[0], line, device)
    assert template is not None
    assert (template.kind, template.index, template.format) == expected
    assert template.data == DATA and template.user_id == "7"


def test_unreadable_biometric_records() -> None:
    assert from_push_record("FP", "FP FID=1\tTMP=AAAA") is None  # no PIN
    assert from_push_record("FP", "FP PIN=1\tFID=1\tTMP=%%%") is None
    assert from_push_record("BIODATA", f"BIODATA Pin=1\tType=4\tTmp={B64}") is None


def test_versions_by_kind() -> None:
    assert device_versions(_device(layout=None, fp_version=10, face_version=0)) == {"finger": "10"}
    push = _device(kind="push", layout=None, options={"FPVersion": "12", "FaceVersion": "7"})
    assert device_versions(push) == {"finger": "12", "face": "7"}
    assert device_versions(_device(kind="push", layout=None, fpver="10")) == {"finger": "10"}


def _template(kind: str, index: int, fmt: str, digest: str = "d") -> tuple:
    meta = PersonTemplate(1, "7", kind, index, fmt, 1, 0, 3, digest, "api", "", "t")
    return meta, b"abc"


def test_plan_sends_what_the_terminal_takes_and_says_why_not() -> None:
    person = Person("7", name="Ann")
    templates = [
        _template("finger", 1, "10"),
        _template("finger", 2, "12"),
        _template("face", 0, "7"),
        _template("palm", 0, "35"),
    ]
    pull = plan_upsert(person, templates, _device(layout=72, fp_version=10))
    assert [(t["kind"], t["index"]) for t in pull.templates] == [("finger", 1)]
    assert len(pull.skipped) == 3
    assert any("version 12, the terminal has 10" in s for s in pull.skipped)
    push = plan_upsert(
        person, templates, _device(kind="push", layout=None, fpver="12", facever="7")
    )
    assert [(t["kind"], t["index"]) for t in push.templates] == [("face", 0), ("finger", 2)]
    again = plan_upsert(person, templates, _device(layout=72, fp_version=10))
    assert again.want == pull.want
    changed = plan_upsert(Person("7", name="Bob"), templates, _device(layout=72, fp_version=10))
    assert changed.want != pull.want
