"""``zkserver``: the operator console, a client of a running server's HTTP API.

    zkserver devices list
    zkserver devices add --serial SN [--name N] [--timezone TZ]
    zkserver devices add --kind pull --host H [--port 4370] [--comm-key K] [--transport tcp]
    zkserver devices approve ID|SN
    zkserver devices remove ID|SN
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
from urllib.parse import urlencode, urlsplit

import treq
from attrs import define, field
from twisted.internet import error as net
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import react
from twisted.web.client import HTTPConnectionPool, ResponseFailed, ResponseNeverReceived

__all__ = ["main", "CLIError"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TOKEN = 4

DEFAULT_SERVER = "http://127.0.0.1:5000"
DEFAULT_DATA_DIR = "./zkserver-data"
REQUEST_TIMEOUT = 30.0
TOKEN_REFUSED = "the server refused the token; pass --token or set ZKSERVER_TOKEN"


class CLIError(Exception):
    """A failure to report in one line, with the exit status to use."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --- talking to the server --------------------------------------------------------------------
def _reason(error: BaseException, timeout: float) -> str:
    """Why a connection failed, in a few words."""
    if isinstance(error, net.ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, net.DNSLookupError):
        return "unknown host"
    if isinstance(error, net.TimeoutError | CancelledError | net.ConnectingCancelledError):
        return f"no answer within {timeout:g} s"
    if isinstance(error, net.NoRouteError):
        return "no route to host"
    if isinstance(error, ResponseNeverReceived | ResponseFailed):
        reasons = getattr(error, "reasons", None) or []
        inner = reasons[0].value if reasons else None
        if inner is not None and "SSL" in type(inner).__module__ + type(inner).__name__:
            return f"TLS failed ({inner})"
        return "the connection closed before a complete answer"
    if isinstance(error, net.ConnectError):
        return str(error).strip() or type(error).__name__
    return f"{type(error).__name__}: {error}".rstrip(": ")


def _message(body: Any) -> str:
    """The ``error`` of an API error answer, else the answer itself (shortened)."""
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    return json.dumps(body)[:200]


def _error_text(raw: bytes) -> str:
    try:
        return _message(json.loads(raw))
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:200]


@define
class Client:
    """The API of one server, with the operator token, over treq."""

    server: str
    token: str
    reactor: Any
    timeout: float = REQUEST_TIMEOUT
    pool: Any = field(default=None)

    def __attrs_post_init__(self) -> None:
        if self.pool is None:
            self.pool = HTTPConnectionPool(self.reactor, persistent=False)

    def unreachable(self, error: BaseException) -> CLIError:
        return CLIError(
            f"cannot reach zkserver at {self.server}: {_reason(error, self.timeout)}",
            EXIT_UNREACHABLE,
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One API call: (status, decoded JSON). Raises CLIError for transport failures,
        a refused token and answers that are not JSON."""
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            response = await treq.request(
                method,
                self.server + path,
                headers=headers,
                data=data,
                pool=self.pool,
                timeout=self.timeout,
                reactor=self.reactor,
            )
            raw = await response.content()
        except Exception as e:
            raise self.unreachable(e) from None
        if response.code == 401:
            raise CLIError(TOKEN_REFUSED, EXIT_TOKEN)
        try:
            decoded = json.loads(raw)
        except ValueError:
            raise CLIError(
                f"unexpected answer from {self.server}{path} (HTTP {response.code}, not JSON): "
                "is --server the zkserver web listener (not the push listener)?"
            ) from None
        return response.code, decoded

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        """An API call that must succeed (2xx); its JSON."""
        code, decoded = await self.call(method, path, body)
        if not 200 <= code < 300:
            raise CLIError(f"the server answered {code}: {_message(decoded)}")
        return decoded


# --- devices ----------------------------------------------------------------------------------
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


async def find_device(client: Client, ref: str) -> dict[str, Any]:
    """The device whose id or serial number is ``ref``."""
    devices = await client.ok("GET", "/api/devices")
    for match in (
        lambda d: d.get("id") == ref,
        lambda d: d.get("serial_number") == ref,
        lambda d: str(d.get("serial_number", "")).lower() == ref.lower(),
    ):
        found = [d for d in devices if match(d)]
        if len(found) == 1:
            return found[0]
    raise CLIError(f"no device with id or serial number {ref!r}")


def _label(device: dict[str, Any]) -> str:
    serial = device.get("serial_number") or device.get("host") or "?"
    return f"{device.get('kind', '')} device {serial} ({device.get('name')}, id {device['id']})"


def _show(args: argparse.Namespace, devices: list[dict[str, Any]], message: str) -> None:
    if args.json:
        print(json.dumps(devices[0] if len(devices) == 1 else devices, ensure_ascii=False))
    else:
        print(message)


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
        body.update(host=args.host, port=args.port, comm_key=args.comm_key,
                    transport=args.transport)
    code, answer = await client.call("POST", "/api/devices", body)
    if code == 409:
        raise CLIError(f"a device with serial number {args.serial!r} already exists")
    if code != 201:
        raise CLIError(f"the server refused the device: {_message(answer)}")
    _show(args, [answer], f"added {_label(answer)}")
    return EXIT_OK


async def devices_approve(client: Client, args: argparse.Namespace) -> int:
    device = await find_device(client, args.device)
    approved = await client.ok("POST", f"/api/devices/{device['id']}/approve")
    _show(args, [approved], f"approved {_label(approved)}")
    return EXIT_OK


async def devices_remove(client: Client, args: argparse.Namespace) -> int:
    device = await find_device(client, args.device)
    code, answer = await client.call("DELETE", f"/api/devices/{device['id']}")
    if code == 404:
        raise CLIError(f"no device with id or serial number {args.device!r}")
    if code != 200:
        raise CLIError(f"the server answered {code}: {_message(answer)}")
    _show(args, [device], f"removed {_label(device)}")
    return EXIT_OK


# --- tail -------------------------------------------------------------------------------------
@define(eq=False)
class SSEPrinter:
    """Parses an event stream and prints each message's ``data:`` as one line."""

    out: Any
    last_id: int | None = None
    retry_ms: int = 3000
    printed: int = 0
    _buffer: bytes = b""

    def feed(self, data: bytes) -> None:
        self._buffer += data.replace(b"\r\n", b"\n")
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            self.frame(block.decode("utf-8", "replace"))

    def frame(self, block: str) -> None:
        data: list[str] = []
        event_id: int | None = None
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "id" and value.strip().isdigit():
                event_id = int(value)
            elif name == "retry" and value.strip().isdigit():
                self.retry_ms = int(value)
        if event_id is not None:
            self.last_id = event_id
        if data:
            self.out.write("\n".join(data) + "\n")
            self.out.flush()
            self.printed += 1


class _StreamBody(Protocol):
    """Delivers a streaming response body to an SSEPrinter; ``done`` fires when it ends."""

    def __init__(self, printer: SSEPrinter) -> None:
        self.printer = printer
        self.done: Deferred[None] = Deferred()
        self.error: BaseException | None = None

    def dataReceived(self, data: bytes) -> None:
        try:
            self.printer.feed(data)
        except Exception as e:  # e.g. BrokenPipeError: stdout went away
            self.error = e
            self.stop()

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(None)

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()
        elif not self.done.called:
            self.done.callback(None)


def _sleep(reactor: Any, seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred(lambda d: call.cancel() if call.active() else None)
    call = reactor.callLater(seconds, d.callback, None)
    return d


async def tail(client: Client, args: argparse.Namespace) -> int:
    """Print events until Ctrl-C; reconnects (resuming from the last id) when cut off."""
    printer = SSEPrinter(out=sys.stdout, last_id=args.last_event_id)
    if printer.last_id is None:
        # Resume point for reconnects: the server's newest event id now.
        stats = await client.ok("GET", "/api/stats")
        start = stats.get("last_event_id") if isinstance(stats, dict) else None
        printer.last_id = start if isinstance(start, int) else None
    query = {k: v for k, v in (("type", args.type), ("device", args.device)) if v}
    url = client.server + "/devices/events" + (f"?{urlencode(query)}" if query else "")
    state: dict[str, Any] = {"stopping": False, "body": None, "wait": None}

    def on_shutdown() -> None:  # Ctrl-C or SIGTERM: end quietly
        state["stopping"] = True
        if state["body"] is not None:
            state["body"].stop()
        if state["wait"] is not None:
            state["wait"].cancel()

    client.reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    connected_once = False
    backoff = 0.0
    while not state["stopping"]:
        headers = {**client.headers, "Accept": "text/event-stream"}
        if printer.last_id is not None:
            headers["Last-Event-ID"] = str(printer.last_id)
        try:
            response = await treq.get(url, headers=headers, unbuffered=True, pool=client.pool,
                                      timeout=client.timeout, reactor=client.reactor)
        except Exception as e:
            if state["stopping"]:
                break
            if not connected_once:
                raise client.unreachable(e) from None
            backoff = min(30.0, max(1.0, backoff * 2))
            _note(f"{client.unreachable(e).message}; retrying in {backoff:g} s")
            state["wait"] = _sleep(client.reactor, backoff)
            try:
                await state["wait"]
            except CancelledError:
                break
            continue
        if response.code == 401:
            raise CLIError(TOKEN_REFUSED, EXIT_TOKEN)
        content_type = (response.headers.getRawHeaders("content-type") or [""])[0]
        if response.code != 200 or not content_type.startswith("text/event-stream"):
            text = _error_text(await response.content())
            raise CLIError(f"the server answered {response.code} for the event stream: {text}")
        if not connected_once:
            resume = "" if args.last_event_id is None else f" after event {args.last_event_id}"
            _note(f"following events at {client.server}{resume} (Ctrl-C to stop)")
        connected_once = True
        backoff = 0.0
        body = _StreamBody(printer)
        state["body"] = body
        response.deliverBody(body)
        await body.done
        state["body"] = None
        if body.error is not None:
            if isinstance(body.error, BrokenPipeError | ValueError):  # reader went away
                _silence_stdout()
                return EXIT_OK
            raise CLIError(f"cannot print events: {body.error}")
        if state["stopping"]:
            break
        _note("the event stream ended; reconnecting")
        state["wait"] = _sleep(client.reactor, printer.retry_ms / 1000)
        try:
            await state["wait"]
        except CancelledError:
            break
    if printer.last_id is not None:
        _note(f"stopped at event id {printer.last_id} (resume with --last-event-id "
              f"{printer.last_id})")
    return EXIT_OK


def _note(text: str) -> None:
    print(f"zkserver: {text}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """After a broken pipe, keep the interpreter's final flush from failing too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


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
        raise CLIError(f"no token in {path} (the server creates it at its first start; "
                       "pass the server's --data-dir)", EXIT_TOKEN)
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
        return _exit_code(e.code)
    return result if isinstance(result, int) else EXIT_OK


def _exit_code(code: Any) -> int:
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
        "--server", metavar="URL",
        default=default(os.environ.get("ZKSERVER_URL") or DEFAULT_SERVER),
        help=f"the server's web listener (default: $ZKSERVER_URL or {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--token", default=default(None),
        help="access token (default: $ZKSERVER_TOKEN, else DATA_DIR/token)",
    )
    parser.add_argument(
        "--data-dir", "-d", metavar="DIR",
        default=default(os.environ.get("ZKSERVER_DATA_DIR") or DEFAULT_DATA_DIR),
        help=f"the server's data directory, holding its token (default: {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False),
        help="print JSON instead of tables and messages",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="zkserver",
        description="Operator console for a running zkserver (devices, live events, token).",
        epilog="Exit status: 0 ok, 1 failed, 2 usage, 3 server unreachable, 4 token refused.",
    )
    _connection_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    devices = commands.add_parser("devices", help="list, add, approve and remove devices")
    device_commands = devices.add_subparsers(dest="action", metavar="ACTION",
                                             parser_class=_Parser)
    device_commands.required = True
    listing = device_commands.add_parser("list", parents=[common], help="list devices")
    listing.add_argument("--kind", choices=["push", "pull"], help="only push or pull devices")
    listing.set_defaults(run=devices_list)

    add = device_commands.add_parser(
        "add", parents=[common], help="add a device (approved)",
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
    follow.add_argument("--last-event-id", type=int, metavar="N",
                        help="first replay every event after id N")
    follow.set_defaults(run=tail)

    token = commands.add_parser("token", parents=[common], help="print the access token")
    token.set_defaults(local=show_token)

    emulator = commands.add_parser(
        "emulate", help="run a push or pull device emulator",
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
        return _exit_code(e.code)
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


if __name__ == "__main__":
    sys.exit(main())
