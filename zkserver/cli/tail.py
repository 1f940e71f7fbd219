"""``zkserver tail``: follow the event stream (SSE), print each event, resume when cut off."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import urlencode

import treq
from attrs import define, field
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol

from zkserver.cli.client import EXIT_OK, EXIT_TOKEN, TOKEN_REFUSED, Client, CLIError, error_text
from zkserver.cli.rendering import note, silence_stdout
from zkserver.eventsource import EventStreamParser, ServerSentEvent

__all__ = ["SSEPrinter", "tail"]


@define(eq=False)
class SSEPrinter:
    """Prints each event's ``data`` of an event stream as one line; keeps the id to resume
    from and the server's ``retry``."""

    out: Any
    last_id: int | None = None
    retry_ms: int = 3000
    printed: int = 0
    _parser: EventStreamParser = field(factory=EventStreamParser)

    def new_stream(self) -> None:
        """A new connection: what a cut-off connection left half-sent is dropped."""
        self._parser = EventStreamParser()

    def feed(self, data: bytes) -> None:
        for item in self._parser.feed(data):
            if isinstance(item, ServerSentEvent):
                self.out.write(item.data + "\n")
                self.out.flush()
                self.printed += 1
        if self._parser.last_event_id.isdigit():
            self.last_id = int(self._parser.last_event_id)
        if self._parser.retry is not None:
            self.retry_ms = self._parser.retry


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
            IPushProducer(self.transport).stopProducing()  # deliverBody's transport
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
        headers: dict[bytes | str, bytes | str] = {**client.headers, "Accept": "text/event-stream"}
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
        printer.new_stream()
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
