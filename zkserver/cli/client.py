"""The zkserver API over HTTP (treq), with the operator token, and the CLI's errors."""

from __future__ import annotations

import json
from typing import Any

import treq
from attrs import define, field
from twisted.internet import error as net
from twisted.internet.defer import CancelledError
from twisted.web.client import HTTPConnectionPool, ResponseFailed, ResponseNeverReceived

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_SERVER",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_TOKEN",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CLIError",
    "Client",
    "TOKEN_REFUSED",
    "error_text",
    "find_device",
    "message",
    "reason",
]

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


def reason(error: BaseException, timeout: float) -> str:
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


def message(body: Any) -> str:
    """The ``error`` of an API error answer, else the answer itself (shortened)."""
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    return json.dumps(body)[:200]


def error_text(raw: bytes) -> str:
    try:
        return message(json.loads(raw))
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
            f"cannot reach zkserver at {self.server}: {reason(error, self.timeout)}",
            EXIT_UNREACHABLE,
        )

    @property
    def headers(self) -> dict[bytes | str, bytes | str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One API call: (status, decoded JSON). Raises CLIError for transport failures,
        a refused token and answers that are not JSON."""
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        code, raw = await self._request(method, path, headers, data)
        try:
            decoded = json.loads(raw)
        except ValueError:
            raise CLIError(
                f"unexpected answer from {self.server}{path} (HTTP {code}, not JSON): "
                "is --server the zkserver web listener (not the push listener)?"
            ) from None
        return code, decoded

    async def raw(
        self, method: str, path: str, data: bytes | None = None, content_type: str = ""
    ) -> tuple[int, bytes]:
        """One API call with a raw body (e.g. CSV): (status, body bytes)."""
        headers = dict(self.headers)
        headers["Accept"] = "*/*"
        if content_type:
            headers["Content-Type"] = content_type
        return await self._request(method, path, headers, data)

    async def _request(
        self, method: str, path: str, headers: dict[bytes | str, bytes | str], data: bytes | None
    ) -> tuple[int, bytes]:
        """Send one request and read its whole body; CLIError when the server cannot be
        reached or refuses the token."""
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
            body = await response.content()
        except Exception as e:
            raise self.unreachable(e) from None
        if response.code == 401:
            raise CLIError(TOKEN_REFUSED, EXIT_TOKEN)
        return response.code, body

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        """An API call that must succeed (2xx); its JSON."""
        code, decoded = await self.call(method, path, body)
        if not 200 <= code < 300:
            raise CLIError(f"the server answered {code}: {message(decoded)}")
        return decoded


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
