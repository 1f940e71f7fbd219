"""The token file: created once, private, never starting with '-' (it is passed as an
option value on command lines)."""

from __future__ import annotations

import stat

from zkserver.web import auth


def test_generated_token_is_kept_private_and_reused(tmp_path):
    token, created = auth.load_or_create_token(tmp_path / "d")
    assert created and token
    assert stat.S_IMODE((tmp_path / "d" / "token").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700
    assert auth.load_or_create_token(tmp_path / "d") == (token, False)


def test_generated_token_never_starts_with_a_dash(tmp_path, monkeypatch):
    drawn = iter(["-looks-like-an-option", "--another", "fine-token"])
    monkeypatch.setattr(auth.secrets, "token_urlsafe", lambda n: next(drawn))
    assert auth.load_or_create_token(tmp_path) == ("fine-token", True)
