"""Access control for the web listener: one operator token.

Accepted as ``Authorization: Bearer TOKEN``, ``?token=TOKEN`` (EventSource cannot set
headers) or the session cookie the login endpoint sets (HttpOnly, SameSite=Strict). The
cookie holds an HMAC of the token, so it needs no server-side state, works across several
processes, and stops working when the token changes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from attrs import frozen
from twisted.logger import Logger
from twisted.web.iweb import IRequest

__all__ = ["TokenAuth", "load_or_create_token", "query_params", "query_lists", "COOKIE_NAME"]

log = Logger()

COOKIE_NAME = b"zkserver_session"


def query_params(request: IRequest) -> dict[str, str]:
    """The query string of the raw URI (never the form body), last value wins."""
    return {key: values[-1] for key, values in query_lists(request).items()}


def query_lists(request: IRequest) -> dict[str, list[str]]:
    """The query string of the raw URI, every value of a repeated parameter in order."""
    query = urlsplit(request.uri.decode("latin-1")).query
    return parse_qs(query, keep_blank_values=True)


@frozen
class TokenAuth:
    token: str

    def session_value(self) -> str:
        return hmac.new(self.token.encode(), b"zkserver-session-v1", hashlib.sha256).hexdigest()

    def check(self, request: IRequest) -> bool:
        header = request.getHeader(b"authorization")
        if header:
            scheme, _, value = header.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and self._same(value.strip(), self.token):
                return True
        supplied = query_params(request).get("token")
        # Stripped as the header's value is: a token never holds spaces, and one pasted
        # with a space or newline around it is the same token.
        if supplied is not None and self._same(supplied.strip(), self.token):
            return True
        cookie = request.getCookie(COOKIE_NAME)
        if cookie and self._same(cookie.decode("latin-1"), self.session_value()):
            return True
        return False

    @staticmethod
    def _same(a: str, b: str) -> bool:
        return hmac.compare_digest(a.encode(), b.encode())


def load_or_create_token(data_dir: Path) -> tuple[str, bool]:
    """The token kept in ``data_dir/token`` (created, mode 0600, when missing).

    Returns the token and whether it was just generated."""
    path = data_dir / "token"
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token, False
    token = secrets.token_urlsafe(24)
    while token.startswith("-"):  # would read as an option on a command line
        token = secrets.token_urlsafe(24)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # holds keys
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token, True
