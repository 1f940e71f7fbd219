"""Terminal text and the per-device text encoding (docs/protocols.md §A.2, §B.4).

Terminals send names in their language's code page (cp1252 in Western Europe, cp1251 for
Cyrillic, GBK in China, ...) or, on newer firmware, UTF-8; the bytes alone cannot always
tell which (``M\\xfcller`` is cp1252 ``Müller`` and also valid GBK). So each device has an
``encoding``: ``""`` (automatic: UTF-8, else GBK, else latin-1) or a codec the operator
chose. Pure functions, no I/O.
"""

from __future__ import annotations

import codecs

__all__ = ["AUTO", "check_encoding", "decode", "write_encoding"]

#: The automatic setting: read UTF-8, else GBK, else latin-1; write UTF-8.
AUTO = ""

_AUTO_ORDER = ("utf-8", "gbk")
# Every ASCII byte, and sequences that make stateful or escaping codecs (ISO-2022, HZ,
# unicode-escape, UTF-7) read something else: a terminal's text codec reads them as ASCII.
_ASCII_PROBE = bytes(range(128)) + b"\\u00e9\\x41\x1b$B\x1b(B~{~}+-"


def decode(data: bytes, encoding: str = AUTO) -> str:
    """Device text as ``str``; never fails and never drops a byte.

    Automatic: UTF-8, else GBK (Chinese firmware), else latin-1. With an ``encoding``: that
    codec, else UTF-8 (newer firmware), else latin-1 (GBK is not tried: it would read
    single-byte names as Chinese). latin-1 maps each byte to one character, so the bytes
    stay recoverable with ``.encode("latin-1")``; the bytes 0x80-0x9F, which the Windows
    code pages 1250-1252 and 1254 leave undefined, become control characters there, which
    the line parsers reject (the line is kept raw for an operator).
    """
    order = (encoding, "utf-8") if encoding else _AUTO_ORDER
    for name in order:
        try:
            return data.decode(name)
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1")


def write_encoding(encoding: str) -> str:
    """The codec text is written to the device in: its encoding, UTF-8 when automatic."""
    return encoding or "utf-8"


def check_encoding(value: str) -> str:
    """The canonical codec name of ``value`` (``windows-1252`` is ``cp1252``), ``""`` for
    automatic; ValueError with the reason when it is not a codec a terminal can use: an
    unknown name, a codec that is not text (``base64``, ``rot13``) or one in which ASCII is
    not ASCII (``utf-16``, ``utf-7``, EBCDIC), since terminals' protocol text is ASCII."""
    value = value.strip()
    if not value:
        return AUTO
    try:
        info = codecs.lookup(value)
    except LookupError:
        raise ValueError(f"unknown encoding {value[:40]!r}") from None
    text = _ASCII_PROBE.decode("ascii")
    try:
        ascii_compatible = (
            text.encode(info.name) == _ASCII_PROBE and _ASCII_PROBE.decode(info.name) == text
        )
    except (LookupError, UnicodeError, TypeError):
        ascii_compatible = False  # LookupError: not a text encoding (base64, rot13, zlib)
    if not ascii_compatible:
        raise ValueError(
            f"encoding {value[:40]!r} is not a text encoding that keeps ASCII as it is"
            " (terminals send ASCII-compatible text: cp1252, cp1251, gbk, big5, utf-8, ...)"
        )
    return info.name
