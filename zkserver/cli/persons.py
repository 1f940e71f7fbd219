"""``zkserver persons``: the person registry from the console (through the API).

    zkserver persons list [--search TEXT] [--device ID|SN] [--limit N]
    zkserver persons show PIN
    zkserver persons add PIN [name=...] [card=...] [privilege=0|2|6|14] [password=...]
                             [group=...] [devices=all|ID;ID] [active=true|false]
    zkserver persons edit PIN key=value ...
    zkserver persons remove PIN --yes
    zkserver persons import --from-device ID|SN | --csv FILE [--partial]
    zkserver persons sync PIN | --device ID|SN
    zkserver persons export [--output FILE]

``devices`` names devices by id or serial number (``;`` between them) or ``all``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from zkserver.cli.client import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Client, CLIError, find_device
from zkserver.cli.commands import command_fields

__all__ = ["add_parsers", "person_table"]

COLUMNS = [
    ("PIN", "user_id"),
    ("NAME", "name"),
    ("CARD", "card"),
    ("PRIV", "privilege"),
    ("GROUP", "group"),
    ("DEVICES", "devices"),
    ("ACTIVE", "active"),
]


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ";".join(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)


def person_table(persons: list[dict[str, Any]]) -> str:
    rows = [[title for title, _ in COLUMNS]]
    rows += [[_text(p.get(key))[:40] for _, key in COLUMNS] for p in persons]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _refused(code: int, answer: Any) -> CLIError:
    if isinstance(answer, dict):
        where = f" (device {answer['device_id']})" if answer.get("device_id") else ""
        field = f"{answer['field']}: " if answer.get("field") else ""
        detail = answer.get("detail") or answer.get("error")
        return CLIError(f"the server refused it ({code}): {field}{detail}{where}")
    return CLIError(f"the server refused it ({code}): {answer}")


async def _devices_field(client: Client, fields: dict[str, Any]) -> None:
    value = fields.get("devices")
    if not isinstance(value, str) or value.strip().lower() == "all":
        return
    ids = []
    for ref in [v.strip() for v in value.replace(",", ";").split(";") if v.strip()]:
        ids.append((await find_device(client, ref))["id"])
    fields["devices"] = ids


def _path(pin: str) -> str:
    return "/api/persons/" + quote(pin, safe="")


def _print(args: argparse.Namespace, answer: Any, text: str) -> None:
    print(json.dumps(answer, ensure_ascii=False) if args.json else text)


async def list_persons(client: Client, args: argparse.Namespace) -> int:
    query: dict[str, Any] = {"limit": args.limit}
    if args.search:
        query["q"] = args.search
    if args.device:
        query["device_id"] = (await find_device(client, args.device))["id"]
    page = await client.ok("GET", "/api/persons?" + urlencode(query))
    items = page["items"]
    _print(args, items, person_table(items) if items else "no persons")
    return EXIT_OK


async def show(client: Client, args: argparse.Namespace) -> int:
    code, person = await client.call("GET", _path(args.pin))
    if code == 404:
        raise CLIError(f"no person {args.pin}")
    if code != 200:
        raise _refused(code, person)
    sync = await client.ok("GET", _path(args.pin) + "/sync")
    templates = await client.ok("GET", _path(args.pin) + "/templates")
    if args.json:
        print(
            json.dumps(
                {**person, "sync": sync["devices"], "templates": templates}, ensure_ascii=False
            )
        )
        return EXIT_OK
    print(person_table([person]))
    print(f"origin: {person.get('origin') or '-'} at {person.get('origin_at') or '-'}")
    for t in templates:
        print(
            f"template {t['template_id']}: {t['kind']} {t['index']} format {t['format']}"
            f" ({t['size']} bytes, from {t['source']})"
        )
    for d in sync["devices"]:
        detail = f" - {d['detail']}" if d["detail"] else ""
        print(f"{d.get('serial_number') or d['device_id']}: {d['operation']} {d['state']}{detail}")
    return EXIT_OK


async def add(client: Client, args: argparse.Namespace) -> int:
    fields = {"user_id": args.pin, **command_fields(args.fields)}
    await _devices_field(client, fields)
    code, answer = await client.call("POST", "/api/persons", fields)
    if code != 201:
        raise _refused(code, answer)
    _print(args, answer, f"added {answer['user_id']} ({answer['name']})")
    return EXIT_OK


async def edit(client: Client, args: argparse.Namespace) -> int:
    fields = command_fields(args.fields)
    if not fields:
        raise CLIError("give the fields to change as key=value", EXIT_USAGE)
    await _devices_field(client, fields)
    code, answer = await client.call("PATCH", _path(args.pin), fields)
    if code == 404:
        raise CLIError(f"no person {args.pin}")
    if code != 200:
        raise _refused(code, answer)
    _print(args, answer, f"changed {answer['user_id']}")
    return EXIT_OK


async def remove(client: Client, args: argparse.Namespace) -> int:
    if not args.yes:
        raise CLIError(f"this removes {args.pin} from every terminal: add --yes", EXIT_USAGE)
    code, answer = await client.call("DELETE", _path(args.pin))
    if code == 404:
        raise CLIError(f"no person {args.pin}")
    if code != 200:
        raise _refused(code, answer)
    _print(args, answer, f"removed {args.pin}; deleting on {len(answer['sync'])} devices")
    return EXIT_OK


async def import_(client: Client, args: argparse.Namespace) -> int:
    if bool(args.from_device) == bool(args.csv):
        raise CLIError("give --from-device DEVICE or --csv FILE", EXIT_USAGE)
    if args.from_device:
        device = await find_device(client, args.from_device)
        code, answer = await client.call(
            "POST", "/api/persons/import", {"from_device": device["id"]}
        )
        if code != 200:
            raise _refused(code, answer)
        text = (
            f"imported {answer['imported']}, unchanged {answer['unchanged']},"
            f" conflicts {answer['conflicts']}, templates {answer['templates']}"
        )
        for row in answer["rows"]:
            if row["status"] in ("conflict", "error"):
                text += f"\n{row['user_id']}: {row['status']}: {row.get('detail', '')}"
        _print(args, answer, text)
        return EXIT_OK
    try:
        data = sys.stdin.buffer.read() if args.csv == "-" else Path(args.csv).read_bytes()
    except OSError as e:
        raise CLIError(f"cannot read {args.csv}: {e.strerror}", EXIT_USAGE) from None
    path = "/api/persons.csv" + ("?partial=1" if args.partial else "")
    code, raw = await client.raw("POST", path, data, "text/csv; charset=utf-8")
    try:
        answer = json.loads(raw)
    except ValueError:
        raise CLIError(f"unexpected answer (HTTP {code})") from None
    lines = [f"row {e['row']}: {e['field']}: {e['detail']}" for e in answer.get("errors", [])]
    if code == 422:
        _print(args, answer, "\n".join([f"nothing applied: {answer['error']}", *lines]))
        return EXIT_FAILED
    if code != 200:
        raise _refused(code, answer)
    _print(
        args, answer, "\n".join([f"added {answer['added']}, changed {answer['changed']}", *lines])
    )
    return EXIT_FAILED if lines else EXIT_OK


async def sync(client: Client, args: argparse.Namespace) -> int:
    if bool(args.pin) == bool(args.device):
        raise CLIError(
            "give PIN (show its state) or --device DEVICE (re-send everyone)", EXIT_USAGE
        )
    if args.device:
        device = await find_device(client, args.device)
        code, answer = await client.call("POST", f"/api/devices/{device['id']}/sync-persons")
        if code != 200:
            raise _refused(code, answer)
        _print(
            args,
            answer,
            f"{answer['persons']} persons: {answer['queued']} queued, {answer['failed']} failed",
        )
        return EXIT_OK
    code, answer = await client.call("GET", _path(args.pin) + "/sync")
    if code == 404:
        raise CLIError(f"no person {args.pin}")
    lines = [
        f"{d.get('serial_number') or d['device_id']}: {d['operation']} {d['state']}"
        + (f" - {d['detail']}" if d["detail"] else "")
        for d in answer["devices"]
    ]
    _print(args, answer, "\n".join(lines) or "not on any device yet")
    return EXIT_FAILED if any(d["state"] == "failed" for d in answer["devices"]) else EXIT_OK


async def export(client: Client, args: argparse.Namespace) -> int:
    code, raw = await client.raw("GET", "/api/persons.csv")
    if code != 200:
        raise CLIError(f"the server answered {code}")
    if args.output in (None, "-"):
        sys.stdout.write(raw.decode("utf-8"))
        sys.stdout.flush()
    else:
        Path(args.output).write_bytes(raw)
    return EXIT_OK


def add_parsers(commands: Any, common: argparse.ArgumentParser, parser_class: type) -> None:
    """Add ``zkserver persons ...`` to the console's subcommands."""
    group = commands.add_parser("persons", help="the person registry (kept on every terminal)")
    actions = group.add_subparsers(dest="action", metavar="ACTION", parser_class=parser_class)
    actions.required = True
    listing = actions.add_parser("list", parents=[common], help="list persons")
    listing.add_argument("--search", metavar="TEXT", help="part of a name or PIN")
    listing.add_argument("--device", metavar="ID|SN", help="only those who must be on it")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(run=list_persons)
    showing = actions.add_parser(
        "show", parents=[common], help="a person, their templates and sync state"
    )
    showing.add_argument("pin", metavar="PIN")
    showing.set_defaults(run=show)
    for name, run, text in (("add", add, "add a person"), ("edit", edit, "change a person")):
        sub = actions.add_parser(
            name,
            parents=[common],
            help=text,
            description="fields as key=value: name, card, privilege (0/2/6/14), password, "
            "group, devices (all, or ids/serial numbers separated by ;), active, notes",
        )
        sub.add_argument("pin", metavar="PIN")
        sub.add_argument("fields", nargs="*", metavar="KEY=VALUE")
        sub.set_defaults(run=run)
    removing = actions.add_parser("remove", parents=[common], help="remove from every terminal")
    removing.add_argument("pin", metavar="PIN")
    removing.add_argument("--yes", action="store_true", help="confirm")
    removing.set_defaults(run=remove)
    importing = actions.add_parser(
        "import", parents=[common], help="import a terminal's users, or a CSV file"
    )
    importing.add_argument("--from-device", metavar="ID|SN")
    importing.add_argument("--csv", metavar="FILE", help="CSV file ('-' for stdin)")
    importing.add_argument(
        "--partial",
        action="store_true",
        help="with --csv: apply the good rows even if some are bad",
    )
    importing.set_defaults(run=import_)
    syncing = actions.add_parser(
        "sync", parents=[common], help="a person's state per device, or re-send a device"
    )
    syncing.add_argument("pin", metavar="PIN", nargs="?")
    syncing.add_argument(
        "--device", metavar="ID|SN", help="re-send everyone who must be on this device"
    )
    syncing.set_defaults(run=sync)
    exporting = actions.add_parser("export", parents=[common], help="every person as CSV")
    exporting.add_argument("--output", "-o", metavar="FILE", help="default: standard output")
    exporting.set_defaults(run=export)
