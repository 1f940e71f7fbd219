"""The persons CSV (``GET``/``POST /api/persons.csv``), with the csv module. Pure.

Columns ``user_id,name,card,privilege,group,devices,active`` (separated by ``,``, or by
``;`` or TAB throughout the file): ``devices`` is ``all`` or device ids separated by ``;``
(or ``,``), ``active`` is ``true``/``false``. :func:`parse_csv`
validates every row and returns the good rows and the errors of the bad ones (row numbers
count the header as row 1, as a spreadsheet shows them).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from attrs import frozen

from zkserver.persons.model import ALL, Person
from zkserver.persons.validate import PersonError, person_fields

__all__ = ["COLUMNS", "CsvRow", "format_csv", "parse_csv", "safe_cell"]

COLUMNS = ("user_id", "name", "card", "privilege", "group", "devices", "active")
MAX_ROWS = 100_000


@frozen
class CsvRow:
    row: int
    fields: dict[str, Any]


#: What makes a spreadsheet read a cell as a formula (TAB and CR too, in some).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: str) -> str:
    """Spreadsheet-safe: a cell that starts like a formula is quoted with ``'``."""
    if value[:1] in FORMULA_STARTS:
        return "'" + value
    return value


_cell = safe_cell


def format_csv(persons: Iterable[Person], header: bool = True) -> str:
    """The persons as CSV lines (``header``: the column names first)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(COLUMNS)
    for p in persons:
        devices = ALL if p.devices == ALL else ";".join(p.devices)
        writer.writerow(
            [
                _cell(p.user_id),
                _cell(p.name),
                p.card,
                p.privilege,
                _cell(p.group),
                devices,
                "true" if p.active else "false",
            ]
        )
    return out.getvalue()


def _separator(text: str) -> str:
    """The header line's separator: ``,`` when it has one, else ``;``, else TAB."""
    header = text.split("\n", 1)[0].split("\r", 1)[0]
    for separator in (",", ";", "\t"):
        if separator in header:
            return separator
    return ","


def parse_csv(text: str) -> tuple[list[CsvRow], list[dict[str, Any]]]:
    """(good rows, errors); each error ``{"row", "user_id", "field", "detail"}``.

    A PIN that appears twice in the file is an error on its second row. The separator is
    read from the header line: ``,``, else ``;`` (a spreadsheet saving "CSV" in a locale
    whose decimal mark is a comma), else TAB; lines end with LF, CR LF or a bare CR."""
    text = text.lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_separator(text))
    try:
        header = next(reader)
    except StopIteration:
        return [], [{"row": 1, "user_id": "", "field": "user_id", "detail": "the file is empty"}]
    except csv.Error as e:
        return [], [{"row": 1, "user_id": "", "field": "user_id", "detail": f"not CSV: {e}"}]
    names = [h.strip().lower() for h in header]
    missing = [c for c in ("user_id",) if c not in names]
    unknown = [n for n in names if n and n not in COLUMNS]
    if missing or unknown:
        detail = (
            f"missing column {missing[0]!r}" if missing else f"unknown column {unknown[0]!r}"
        ) + f"; columns: {','.join(COLUMNS)}"
        return [], [{"row": 1, "user_id": "", "field": (missing or unknown)[0], "detail": detail}]
    good: list[CsvRow] = []
    errors: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    number = 1
    try:
        for cells in reader:
            number += 1
            if number > MAX_ROWS + 1:
                errors.append(
                    {
                        "row": number,
                        "user_id": "",
                        "field": "user_id",
                        "detail": f"more than {MAX_ROWS} rows",
                    }
                )
                break
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(names):
                errors.append(
                    {
                        "row": number,
                        "user_id": cells[0].strip() if cells else "",
                        "field": names[-1],
                        "detail": "more cells than columns",
                    }
                )
                continue
            body: dict[str, Any] = {}
            for name, cell in zip(names, cells, strict=False):
                if not name:
                    continue
                value = cell.strip()
                if value.startswith("'") and value[1:2] in ("=", "+", "-", "@"):
                    value = value[1:]
                if name in ("privilege", "card", "name", "group") and value == "":
                    continue
                if name == "active" and value == "":
                    continue
                if name == "devices" and value == "":
                    value = ALL
                body[name] = value
            try:
                fields = person_fields(body)
            except PersonError as e:
                errors.append(
                    {
                        "row": number,
                        "user_id": str(body.get("user_id", ""))[:24],
                        "field": e.field,
                        "detail": e.message,
                    }
                )
                continue
            pin = fields["user_id"]
            if pin in seen:
                errors.append(
                    {
                        "row": number,
                        "user_id": pin,
                        "field": "user_id",
                        "detail": f"user_id {pin} is also on row {seen[pin]}",
                    }
                )
                continue
            seen[pin] = number
            fields.pop("password", None)
            fields.pop("notes", None)
            present = {n for n in names if n}
            good.append(
                CsvRow(number, {k: v for k, v in fields.items() if k in present or k == "user_id"})
            )
    except csv.Error as e:
        errors.append({"row": number, "user_id": "", "field": "user_id", "detail": f"not CSV: {e}"})
    return good, errors
