"""A user's password is kept for the terminals but never shown: the commands API and the
``command_result`` event carry ``***`` in its place (an empty one stays empty)."""

from __future__ import annotations

import pytest

from zkserver.records import Command, redact_command
from zkserver.store.commands import command_result_payload

LINE = "DATA UPDATE USERINFO PIN=1001\tName=Ann Lee\tPri=0\tPasswd=s3cret\tCard=4242\tGrp="


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (LINE, LINE.replace("s3cret", "***")),
        (
            "DATA UPDATE USERINFO PIN=1\tName=A\tPasswd=\tCard=",
            "DATA UPDATE USERINFO PIN=1\tName=A\tPasswd=\tCard=",
        ),
        ("DATA UPDATE USERINFO PIN=1\tPasswd=9", "DATA UPDATE USERINFO PIN=1\tPasswd=***"),
        ("INFO", "INFO"),
    ],
)
def test_redact_command(text: str, expected: str) -> None:
    assert redact_command(text) == expected


def _command(password: str) -> Command:
    fields = {"user_id": "1001", "name": "Ann Lee", "privilege": 0, "password": password}
    line = LINE.replace("s3cret", password)
    return Command(
        id="1", device_id="d", command=line, status="done", type="user_upsert", fields=fields
    )


def test_api_shape_and_event_hide_the_password() -> None:
    command = _command("s3cret")
    assert "s3cret" not in repr(command.public())
    assert command.public()["password"] == "***"
    assert "s3cret" not in repr(command_result_payload(command, "SN1"))
    assert command.command == LINE  # what the terminal gets is unchanged


def test_an_empty_password_stays_empty() -> None:
    assert _command("").public()["password"] == ""
