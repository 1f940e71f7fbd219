"""The webhook signature: ``sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``.

A receiver recomputes the HMAC over the exact bytes it received, prefixed with the
``X-Zkserver-Timestamp`` header and a dot, compares in constant time, and rejects old
timestamps (replays). The event id (``X-Zkserver-Event-Id``) is the idempotency key:
delivery is at least once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["sign", "verify", "new_secret", "signed_headers", "SIGNATURE_PREFIX"]

SIGNATURE_PREFIX = "sha256="


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>`` over ``b"<timestamp>." + body`` with the subscription's secret."""
    message = str(int(timestamp)).encode() + b"." + body
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    tolerance: float = 300,
) -> bool:
    """What a receiver does: constant-time compare, and (given ``now``) refuse a
    timestamp more than ``tolerance`` seconds away from it."""
    try:
        stamp = int(timestamp)
    except (TypeError, ValueError):
        return False
    if now is not None and abs(now - stamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, stamp, body), signature or "")


def new_secret() -> str:
    """A fresh random secret (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


def signed_headers(
    secret: str, timestamp: int, body: bytes, event_ids: list[str]
) -> dict[str, str]:
    """Every header a delivery carries (besides Content-Length)."""
    return {
        "Content-Type": "application/json",
        "X-Zkserver-Event-Id": ",".join(event_ids),
        "X-Zkserver-Timestamp": str(int(timestamp)),
        "X-Zkserver-Signature": sign(secret, timestamp, body),
    }
