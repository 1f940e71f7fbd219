"""What the console prints: device tables, JSON, one-line messages on stderr."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["COLUMNS", "device_table", "label", "note", "show", "silence_stdout"]

COLUMNS = [
    ("ID", "id"),
    ("SERIAL", "serial_number"),
    ("NAME", "name"),
    ("KIND", "kind"),
    ("STATUS", "status"),
    ("APPROVED", "approved"),
    ("LAST SEEN", "last_seen"),
    ("ADDRESS", "address"),
]


def _cell(device: dict[str, Any], key: str) -> str:
    if key == "address":
        if device.get("kind") != "pull":
            return ""
        return f"{device.get('host', '')}:{device.get('port', '')}/{device.get('transport', '')}"
    value = device.get(key)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)


def device_table(devices: Sequence[dict[str, Any]]) -> str:
    """Devices as a plain text table (header, one line each)."""
    rows = [[title for title, _ in COLUMNS]]
    rows += [[_cell(d, key) for _, key in COLUMNS] for d in devices]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def label(device: dict[str, Any]) -> str:
    serial = device.get("serial_number") or device.get("host") or "?"
    return f"{device.get('kind', '')} device {serial} ({device.get('name')}, id {device['id']})"


def show(args: argparse.Namespace, devices: list[dict[str, Any]], message: str) -> None:
    if args.json:
        print(json.dumps(devices[0] if len(devices) == 1 else devices, ensure_ascii=False))
    else:
        print(message)


def note(text: str) -> None:
    print(f"zkserver: {text}", file=sys.stderr, flush=True)


def silence_stdout() -> None:
    """After a broken pipe, keep the interpreter's final flush from failing too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
