"""``zkserver tail``: follow the event stream (SSE), print each event, resume when cut off."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import urlencode

import treq
from attrs import define
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol

from zkserver.cli.client import EXIT_OK, EXIT_TOKEN, TOKEN_REFUSED, Client, CLIError, error_text
from zkserver.cli.rendering import note, silence_stdout

__all__ = ["SSEPrinter", "tail"]


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
            response = await treq.get(
                url,
                headers=headers,
                unbuffered=True,
                pool=client.pool,
                timeout=client.timeout,
                reactor=client.reactor,
            )
        except Exception as e:
            if state["stopping"]:
                break
            if not connected_once:
                raise client.unreachable(e) from None
            backoff = min(30.0, max(1.0, backoff * 2))
            note(f"{client.unreachable(e).message}; retrying in {backoff:g} s")
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
            text = error_text(await response.content())
            raise CLIError(f"the server answered {response.code} for the event stream: {text}")
        if not connected_once:
            resume = "" if args.last_event_id is None else f" after event {args.last_event_id}"
            note(f"following events at {client.server}{resume} (Ctrl-C to stop)")
        connected_once = True
        backoff = 0.0
        body = _StreamBody(printer)
        state["body"] = body
        response.deliverBody(body)
        await body.done
        state["body"] = None
        if body.error is not None:
            if isinstance(body.error, BrokenPipeError | ValueError):  # reader went away
                silence_stdout()
                return EXIT_OK
            raise CLIError(f"cannot print events: {body.error}")
        if state["stopping"]:
            break
        note("the event stream ended; reconnecting")
        state["wait"] = _sleep(client.reactor, printer.retry_ms / 1000)
        try:
            await state["wait"]
        except CancelledError:
            break
    if printer.last_id is not None:
        note(
            f"stopped at event id {printer.last_id} (resume with --last-event-id {printer.last_id})"
        )
    return EXIT_OK
