"""The client side of Server-Sent Events: a pure, incremental ``text/event-stream`` parser.

Bytes in, events out, the way a browser's ``EventSource`` reads a stream (the WHATWG HTML
"event stream interpretation"): feed the body in chunks of any size; a frame, a line or a
UTF-8 character may be split anywhere. Shared by the console (``zkserver tail``), the tests
and the benchmarks; the server writes frames in :mod:`zkserver.web.sse`.

- Lines end with CRLF, LF or CR (a CRLF split across two chunks is one line end).
- A blank line dispatches the event being built; one without ``data`` dispatches nothing.
- ``data:`` lines are joined with LF; ``event:`` sets the type (default ``message``);
  ``id:`` sets the id of this and later events (an id holding NUL is ignored); it becomes
  :attr:`EventStreamParser.last_event_id` (the id to resume from) at the blank line, with
  or without data; ``retry:`` with only digits sets :attr:`EventStreamParser.retry`.
- One space after the colon is dropped; a line without a colon is a field with an empty
  value; unknown fields are ignored; a line starting with ``:`` is a comment.
- A UTF-8 byte order mark at the very start is skipped; bytes that are not UTF-8 become
  U+FFFD. An event not ended by a blank line when the stream ends is not dispatched.
"""

from __future__ import annotations

from attrs import frozen

__all__ = ["Comment", "EventStreamParser", "ServerSentEvent", "parse_event_stream"]

_BOM = b"\xef\xbb\xbf"


@frozen
class ServerSentEvent:
    """One dispatched event."""

    data: str
    event: str = "message"
    #: The last event id when the event was dispatched ("" when none was ever set).
    id: str = ""


@frozen
class Comment:
    """A ``:`` line (the server's keep-alives and notes), without the colon."""

    text: str


class EventStreamParser:
    """Feed bytes with :meth:`feed`; it returns the events and comments they completed."""

    def __init__(self) -> None:
        #: The id to send as ``Last-Event-ID`` when reconnecting ("" when none).
        self.last_event_id = ""
        self._id = ""
        #: The reconnection time the server asked for (``retry:``, milliseconds), if any.
        self.retry: int | None = None
        self._rest = b""
        self._started = False
        self._after_cr = False
        self._data: list[str] = []
        self._event = ""

    def feed(self, chunk: bytes) -> list[ServerSentEvent | Comment]:
        if not chunk:
            return []
        data = self._rest + chunk
        if not self._started:
            if len(data) < len(_BOM) and _BOM.startswith(data):
                self._rest = data  # maybe a BOM still arriving
                return []
            self._started = True
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
        if self._after_cr and data.startswith(b"\n"):
            data = data[1:]  # the LF of a CRLF whose CR ended the previous chunk
        self._after_cr = False
        if b"\r" in data:
            self._after_cr = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = data.split(b"\n")
        self._rest = lines.pop()
        out: list[ServerSentEvent | Comment] = []
        for line in lines:
            self._line(line.decode("utf-8", "replace"), out)
        return out

    def _line(self, line: str, out: list[ServerSentEvent | Comment]) -> None:
        if not line:
            self.last_event_id = self._id
            if self._data:
                out.append(
                    ServerSentEvent(
                        "\n".join(self._data), self._event or "message", self.last_event_id
                    )
                )
            self._data = []
            self._event = ""
            return
        if line.startswith(":"):
            out.append(Comment(line[1:].removeprefix(" ")))
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\x00" not in value:
                self._id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry = int(value)


def parse_event_stream(body: bytes) -> list[ServerSentEvent | Comment]:
    """Everything a complete stream body holds (for tests and one-shot reads)."""
    return EventStreamParser().feed(body)
