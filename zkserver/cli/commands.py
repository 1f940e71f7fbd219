"""``zkserver commands``: send typed commands to devices, list them, cancel them.

    zkserver commands send DEVICE TYPE [key=value ...] [--wait]
    zkserver commands send --all [--kind push|pull] TYPE [key=value ...]
    zkserver commands list [--device ID|SN] [--status S] [--batch B] [--limit N]
    zkserver commands cancel ID

``key=value`` pairs are the type's fields (README, "Device control"); ``true``/``false``
become booleans (``confirm=true``), everything else is sent as text and checked by the
server, which names a wrong field in its answer.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from twisted.internet.task import deferLater

from zkserver.cli.client import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Client, CLIError, find_device

__all__ = ["add_parsers", "command_fields", "command_table"]

FINAL = ("done", "failed", "expired", "cancelled")


def command_fields(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` words as command fields; CLIError (usage) for a word without ``=``."""
    fields: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"expected key=value, not {pair!r}", EXIT_USAGE)
        lowered = value.strip().lower()
        fields[key] = True if lowered == "true" else False if lowered == "false" else value
    return fields


COLUMNS = [
    ("ID", "id"), ("DEVICE", "device"), ("TYPE", "type"), ("STATUS", "status"),
    ("TRIES", "attempts"), ("RETURN", "return_code"), ("RESULT", "result"),
    ("QUEUED", "queued_at"),
]  # fmt: skip


def _cell(command: dict[str, Any], key: str, serials: dict[str, str]) -> str:
    if key == "device":
        return serials.get(command.get("device_id", ""), command.get("device_id", ""))
    value = command.get(key)
    text = "" if value is None else str(value)
    return text.replace("\n", " ")[:40]


def command_table(commands: Sequence[dict[str, Any]], serials: dict[str, str]) -> str:
    """Commands as a plain text table (header, one line each)."""
    rows = [[title for title, _ in COLUMNS]]
    rows += [[_cell(c, key, serials) for _, key in COLUMNS] for c in commands]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def _serials(client: Client) -> dict[str, str]:
    devices = await client.ok("GET", "/api/devices")
    return {d["id"]: d.get("serial_number") or d.get("host") or d["id"] for d in devices}


def _refused(code: int, answer: Any) -> CLIError:
    detail = answer.get("detail") or answer.get("error") if isinstance(answer, dict) else answer
    return CLIError(f"the server refused the command ({code}): {detail}")


async def _wait(client: Client, command: dict[str, Any], seconds: float) -> dict[str, Any]:
    from twisted.internet import reactor

    waited = 0.0
    while command["status"] not in FINAL and waited < seconds:
        await deferLater(reactor, 0.5, lambda: None)
        waited += 0.5
        command = await client.ok("GET", f"/api/commands/{command['id']}")
    return command


async def send(client: Client, args: argparse.Namespace) -> int:
    words = list(args.words)
    if args.all:
        if not words:
            raise CLIError("give the command TYPE", EXIT_USAGE)
        device = None
    else:
        if len(words) < 2:
            raise CLIError("give DEVICE and TYPE (or --all TYPE)", EXIT_USAGE)
        device = await find_device(client, words.pop(0))
    command = {"type": words[0], **command_fields(words[1:])}
    if device is None:
        body: dict[str, Any] = {"command": command, "all": True, "kind": args.kind}
        code, answer = await client.call("POST", "/api/commands", body)
        if code != 201:
            raise _refused(code, answer)
        if args.json:
            print(json.dumps(answer, ensure_ascii=False))
        else:
            print(
                f"queued {command['type']} for {len(answer['commands'])} devices "
                f"(batch {answer['batch_id']})"
            )
            for skipped in answer["skipped"]:
                print(f"skipped {skipped['device_id']}: {skipped['reason']}")
        return EXIT_OK
    code, answer = await client.call("POST", f"/api/devices/{device['id']}/commands", command)
    if code != 201:
        raise _refused(code, answer)
    if args.wait:
        answer = await _wait(client, answer, args.wait_seconds)
    if args.json:
        print(json.dumps(answer, ensure_ascii=False))
    else:
        serial = device.get("serial_number") or device.get("host")
        result = f": {answer['result']}" if answer.get("result") else ""
        print(
            f"command {answer['id']} ({answer['type']}) for {serial} is {answer['status']}{result}"
        )
    return EXIT_FAILED if answer["status"] in ("failed", "expired") else EXIT_OK


async def list_commands(client: Client, args: argparse.Namespace) -> int:
    query: dict[str, Any] = {"limit": args.limit}
    if args.device:
        query["device_id"] = (await find_device(client, args.device))["id"]
    if args.status:
        query["status"] = args.status
    if args.batch:
        query["batch_id"] = args.batch
    page = await client.ok("GET", "/api/commands?" + urlencode(query))
    if args.json:
        print(json.dumps(page["items"], ensure_ascii=False))
    elif not page["items"]:
        print("no commands")
    else:
        print(command_table(page["items"], await _serials(client)))
    return EXIT_OK


async def cancel(client: Client, args: argparse.Namespace) -> int:
    code, answer = await client.call("DELETE", f"/api/commands/{args.id}")
    if code == 404:
        raise CLIError(f"no command {args.id}")
    if code == 409:
        raise CLIError(f"command {args.id} cannot be cancelled: {answer.get('detail')}")
    if code != 200:
        raise _refused(code, answer)
    if args.json:
        print(json.dumps(answer, ensure_ascii=False))
    else:
        print(f"cancelled command {answer['id']} ({answer['type']})")
    return EXIT_OK


def add_parsers(commands: Any, common: argparse.ArgumentParser, parser_class: type) -> None:
    """Add ``zkserver commands ...`` to the console's subcommands."""
    group = commands.add_parser("commands", help="send, list and cancel device commands")
    actions = group.add_subparsers(dest="action", metavar="ACTION", parser_class=parser_class)
    actions.required = True
    sending = actions.add_parser(
        "send",
        parents=[common],
        usage="zkserver commands send [options] DEVICE TYPE [key=value ...]\n"
        "       zkserver commands send --all [--kind push|pull] [options] TYPE [key=value ...]",
        help="send a typed command to a device or to all",
        description="zkserver commands send DEVICE TYPE [key=value ...] | "
        "--all TYPE [key=value ...]; types and fields: README, 'Device control'.",
    )
    sending.add_argument(
        "--all",
        action="store_true",
        help="every approved device (those that cannot do it are skipped)",
    )
    sending.add_argument("--kind", choices=["push", "pull"], help="with --all: only this kind")
    sending.add_argument(
        "--wait", action="store_true", help="wait until the device has answered (or expired)"
    )
    sending.add_argument(
        "--wait-seconds", type=float, default=60.0, metavar="S", help="wait at most S seconds"
    )
    sending.add_argument(
        "words",
        nargs="+",
        metavar="ARG",
        help="DEVICE (id or serial number; not with --all), TYPE, then key=value fields",
    )
    sending.set_defaults(run=send)
    listing = actions.add_parser("list", parents=[common], help="list commands, newest first")
    listing.add_argument("--device", metavar="ID|SN", help="only this device's")
    listing.add_argument("--status", choices=["queued", "sent", *FINAL])
    listing.add_argument("--batch", metavar="BATCH_ID", help="only this batch")
    listing.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    listing.set_defaults(run=list_commands)
    cancelling = actions.add_parser("cancel", parents=[common], help="cancel a queued command")
    cancelling.add_argument("id", metavar="ID")
    cancelling.set_defaults(run=cancel)
