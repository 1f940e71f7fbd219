"""Request bodies sent with a Content-Encoding (docs/protocols.md §A.11): zkserver.http.inflate
is a pure function of the body, the header and the limit."""

from __future__ import annotations

import gzip
import zlib

import pytest

from zkserver.http import BodyTooLarge, inflate

_CUT = gzip.compress(b"b\n")[:12]  # a member cut off


@pytest.mark.parametrize(
    ("body", "header", "expected"),
    [
        (gzip.compress(b"a\n") + gzip.compress(b"b\n"), b"gzip", b"a\nb\n"),
        (gzip.compress(b"a\n") + bytes(8), b"gzip", b"a\n"),  # NUL padding after it
        # bytes after the last member that are none (cut off, or junk) follow as sent
        (gzip.compress(b"a\n") + b"junk", b"gzip", b"a\njunk"),
        (gzip.compress(b"a\n") + _CUT, b"gzip", b"a\n" + _CUT),
        (gzip.compress(b"a\n"), b" x-gzip , identity ", b"a\n"),
        (zlib.compress(gzip.compress(b"a\n")), b"gzip, deflate", b"a\n"),
        (b"a\n", b"gzip", None),
        (b"a\n", b"identity", None),
        (b"a\n", b"br", None),
        (gzip.compress(b"a\n"), b"gzip, br", None),
    ],
)
def test_inflate(body: bytes, header: bytes, expected: bytes | None) -> None:
    assert inflate(body, header, 100) == expected


def test_inflate_caps_all_members_together() -> None:
    body = gzip.compress(b"x" * 60) + gzip.compress(b"y" * 60)
    assert inflate(body, b"gzip", 120) == b"x" * 60 + b"y" * 60
    with pytest.raises(BodyTooLarge):
        inflate(body, b"gzip", 119)
    with pytest.raises(BodyTooLarge):
        inflate(gzip.compress(gzip.compress(b"z" * 1000)), b"gzip, gzip", 999)
