"""``zkserver``: the operator console, a client of a running server's HTTP API.

    zkserver devices list
    zkserver devices add --serial SN [--name N] [--timezone TZ]
    zkserver devices add --kind pull --host H [--port 4370] [--comm-key K] [--transport tcp]
    zkserver devices approve ID|SN
    zkserver devices remove ID|SN
    zkserver commands send DEVICE TYPE [key=value ...] [--wait [S]]
    zkserver commands send --all [--kind push|pull] TYPE [key=value ...]
    zkserver commands list [--device ID|SN] [--status S] [--batch B] [--limit N]
    zkserver commands cancel ID
    zkserver persons list|show|add|edit|remove|import|sync|export ...
    zkserver tail [--type attendance] [--device SN] [--last-event-id N]
    zkserver token [--data-dir D]
    zkserver emulate push|pull ...

The server is ``--server`` (else ``$ZKSERVER_URL``, else http://127.0.0.1:5000) and the
token ``--token`` (else ``$ZKSERVER_TOKEN``, else the file ``token`` in ``--data-dir``).
Exit status: 0 done, 1 failed (e.g. no such device), 2 bad usage, 3 server unreachable,
4 token missing or refused.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from zkserver.cli.client import (
    DEFAULT_DATA_DIR,
    DEFAULT_SERVER,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TOKEN,
    EXIT_USAGE,
    Client,
    CLIError,
    find_device,
    message,
)
from zkserver.cli.commands import add_parsers as add_command_parsers
from zkserver.cli.persons import add_parsers as add_person_parsers
from zkserver.cli.rendering import device_table, label, show
from zkserver.cli.tail import tail

__all__ = ["build_parser", "main"]


# --- devices ----------------------------------------------------------------------------------
async def devices_list(client: Client, args: argparse.Namespace) -> int:
    devices = await client.ok("GET", "/api/devices" + (f"?kind={args.kind}" if args.kind else ""))
    if args.json:
        print(json.dumps(devices, ensure_ascii=False))
    elif not devices:
        print("no devices")
    else:
        print(device_table(devices))
    return EXIT_OK


async def devices_add(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"kind": args.kind}
    if args.serial:
        body["serial_number"] = args.serial
    if args.name:
        body["name"] = args.name
    if args.timezone:
        body["timezone"] = args.timezone
    if args.kind == "pull":
        body.update(
            host=args.host, port=args.port, comm_key=args.comm_key, transport=args.transport
        )
    code, answer = await client.call("POST", "/api/devices", body)
    if code == 409:
        raise CLIError(f"a device with serial number {args.serial!r} already exists")
    if code != 201:
        raise CLIError(f"the server refused the device: {message(answer)}")
    show(args, [answer], f"added {label(answer)}")
    return EXIT_OK


async def devices_approve(client: Client, args: argparse.Namespace) -> int:
    device = await find_device(client, args.device)
    approved = await client.ok("POST", f"/api/devices/{device['id']}/approve")
    show(args, [approved], f"approved {label(approved)}")
    return EXIT_OK


async def devices_remove(client: Client, args: argparse.Namespace) -> int:
    device = await find_device(client, args.device)
    code, answer = await client.call("DELETE", f"/api/devices/{device['id']}")
    if code == 404:
        raise CLIError(f"no device with id or serial number {args.device!r}")
    if code != 200:
        raise CLIError(f"the server answered {code}: {message(answer)}")
    show(args, [device], f"removed {label(device)}")
    return EXIT_OK


# --- token and emulators ----------------------------------------------------------------------
def read_token(data_dir: str) -> str | None:
    path = Path(data_dir) / "token"
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CLIError(f"cannot read the token file {path}: {e.strerror}", EXIT_TOKEN) from None
    return token or None


def show_token(args: argparse.Namespace) -> int:
    token = read_token(args.data_dir)
    if token is None:
        path = Path(args.data_dir) / "token"
        raise CLIError(
            f"no token in {path} (the server creates it at its first start; "
            "pass the server's --data-dir)",
            EXIT_TOKEN,
        )
    print(token)
    return EXIT_OK


EMULATORS = {"push": "zkserver.emulator.push", "pull": "zkserver.emulator.pull"}


def emulate(kind: str, rest: list[str]) -> int:
    """Run ``zkserver.emulator.<kind>.main(rest)`` (it runs its own reactor)."""
    name = EMULATORS[kind]
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name not in (name, "zkserver.emulator"):
            raise
        raise CLIError(f"the {kind} emulator is not available ({name} is missing)") from None
    try:
        result = module.main(rest)
    except SystemExit as e:
        return exit_code(e.code)
    return result if isinstance(result, int) else EXIT_OK


def exit_code(code: Any) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return EXIT_FAILED


# --- command line -----------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _connection_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The global options; on subcommands they default to SUPPRESS so they only override."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--server",
        metavar="URL",
        default=default(os.environ.get("ZKSERVER_URL") or DEFAULT_SERVER),
        help=f"the server's web listener (default: $ZKSERVER_URL or {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--token",
        default=default(None),
        help="access token (default: $ZKSERVER_TOKEN, else DATA_DIR/token)",
    )
    parser.add_argument(
        "--data-dir",
        "-d",
        metavar="DIR",
        default=default(os.environ.get("ZKSERVER_DATA_DIR") or DEFAULT_DATA_DIR),
        help=f"the server's data directory, holding its token (default: {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print JSON instead of tables and messages",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="zkserver",
        description="Operator console for a running zkserver (devices, live events, token).",
        epilog="Exit status: 0 ok, 1 failed, 2 usage, 3 server unreachable, 4 token refused.",
    )
    _connection_options(parser, suppress=False)
    common = _Parser(add_help=False)
    _connection_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    devices = commands.add_parser("devices", help="list, add, approve and remove devices")
    device_commands = devices.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    device_commands.required = True
    listing = device_commands.add_parser("list", parents=[common], help="list devices")
    listing.add_argument("--kind", choices=["push", "pull"], help="only push or pull devices")
    listing.set_defaults(run=devices_list)

    add = device_commands.add_parser(
        "add",
        parents=[common],
        help="add a device (approved)",
        description="Add a push device by serial number, or a pull device by address.",
    )
    add.add_argument("--kind", choices=["push", "pull"], default="push")
    add.add_argument("--serial", metavar="SN", help="serial number (required for push)")
    add.add_argument("--name", help="display name")
    add.add_argument("--timezone", metavar="TZ", help="IANA zone or offset such as +05:30")
    add.add_argument("--host", help="pull: the terminal's address")
    add.add_argument("--port", type=int, default=4370, help="pull: port (default 4370)")
    add.add_argument("--comm-key", type=int, default=0, metavar="K", help="pull: comm key")
    add.add_argument("--transport", choices=["tcp", "udp"], default="tcp", help="pull")
    add.set_defaults(run=devices_add)

    for name, run, text in (
        ("approve", devices_approve, "approve a pending device"),
        ("remove", devices_remove, "remove a device"),
    ):
        sub = device_commands.add_parser(name, parents=[common], help=text)
        sub.add_argument("device", metavar="ID|SN", help="device id or serial number")
        sub.set_defaults(run=run)

    follow = commands.add_parser(
        "tail", parents=[common], help="print live events, one JSON per line, until Ctrl-C"
    )
    follow.add_argument("--type", help="only these event types (comma-separated)")
    follow.add_argument("--device", metavar="SN", help="only these serial numbers (comma-sep.)")
    follow.add_argument(
        "--last-event-id", type=int, metavar="N", help="first replay every event after id N"
    )
    follow.set_defaults(run=tail)

    add_command_parsers(commands, common, _Parser)
    add_person_parsers(commands, common, _Parser)

    token = commands.add_parser("token", parents=[common], help="print the access token")
    token.set_defaults(local=show_token)

    emulator = commands.add_parser(
        "emulate",
        help="run a push or pull device emulator",
        description="Run a device emulator; options after push|pull go to it (try --help).",
    )
    emulator.add_argument("kind", choices=sorted(EMULATORS))
    emulator.add_argument("args", nargs=argparse.REMAINDER, help="emulator options")
    return parser


def _server_url(value: str) -> str:
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CLIError(f"--server must be an http:// or https:// URL, not {value!r}", EXIT_USAGE)
    return url


def _token(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get("ZKSERVER_TOKEN") or read_token(args.data_dir)
    if not token:
        raise CLIError(
            "no token: pass --token, set ZKSERVER_TOKEN, or pass the server's --data-dir "
            f"(no token file in {args.data_dir})",
            EXIT_TOKEN,
        )
    return token


def _run_remote(args: argparse.Namespace) -> int:
    server = _server_url(args.server)
    token = _token(args)
    status = [EXIT_OK]

    async def run(reactor: Any) -> None:
        client = Client(server=server, token=token, reactor=reactor)
        try:
            status[0] = await args.run(client, args)
        except CLIError as e:
            _fail(e)
            status[0] = e.code
        except Exception as e:  # never a traceback for the operator
            _fail(CLIError(f"unexpected error: {type(e).__name__}: {e}"))
            status[0] = EXIT_FAILED
        finally:
            await client.pool.closeCachedConnections()

    try:
        react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    except SystemExit:
        pass
    return status[0]


def _fail(error: CLIError) -> None:
    print(f"zkserver: error: {error.message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:
        return exit_code(e.code)
    try:
        if args.command == "emulate":
            return emulate(args.kind, list(args.args))
        if hasattr(args, "local"):
            return args.local(args)
        return _run_remote(args)
    except CLIError as e:
        _fail(e)
        return e.code
    except KeyboardInterrupt:
        return 130
