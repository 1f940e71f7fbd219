"""``twistd zkserver`` as an operator runs it: a real ``twistd`` subprocess per test, with
bad options, config files, database URLs, endpoints and data directories (one clear line,
exit status 1, no traceback), a second instance on the same SQLite file, signals, and
what its log lines may not contain."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZKSERVER_", "NOTIFY_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def listeners() -> list[str]:
    return [
        "--web",
        f"tcp:{free_port()}:interface=127.0.0.1",
        "--push",
        f"tcp:{free_port()}:interface=127.0.0.1",
        "--no-pull",
    ]


def twistd(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``twistd -n --pidfile= zkserver ARGS`` that is expected to stop by itself."""
    return subprocess.run(
        [*TWISTD, "-n", "--pidfile=", "zkserver", *args],
        env=env or environment(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_refused(result: subprocess.CompletedProcess[str], *texts: str) -> str:
    """The start was refused with exit status 1 and one line naming ``texts``, no
    traceback; returns that line."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    last = output.strip().splitlines()[-1]
    for text in texts:
        assert text in last, output
    return last


# --- the config file ----------------------------------------------------------------------------
def test_a_config_file_with_a_byte_order_mark_is_read(tmp_path: Path):
    """Notepad saves UTF-8 with a BOM: its keys are read, a bad value is still named."""
    config = tmp_path / "zkserver.toml"
    config.write_bytes('\ufeffpoll-delay = "soon"\n'.encode())
    assert_refused(twistd("-c", str(config)), "poll-delay", str(config), "'soon'")


def test_a_config_file_not_in_utf8_is_refused_in_one_line(tmp_path: Path):
    config = tmp_path / "zkserver.toml"
    config.write_bytes('timezone = "Europe/Z\xfcrich"\n'.encode("latin-1"))
    assert_refused(twistd("-c", str(config)), str(config), "UTF-8")


# --- --db -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "db, text",
    [
        ("mysql://zk@127.0.0.1/zk", "sqlite:PATH or postgresql://"),
        ("sqlite:zk.db?timeout=soon", "timeout"),
        ("sqlite:zk.db?timeout=-1", "timeout"),
        ("sqlite:zk.db?journal=wal", "journal"),
        ("postgresql://zk:xy%zzy@127.0.0.1/zk", "percent-encoded"),
        ("postgresql://zk:xy@zzy@127.0.0.1/zk", "%40"),
        ("postgresql://zk:plugh@127.0.0.1/zk?no_such_option=1", "no_such_option"),
    ],
)
def test_a_bad_db_is_refused_in_one_line_without_its_password(tmp_path: Path, db: str, text: str):
    """Before this, a bad --db stopped twistd with a traceback; a URL libpq could not
    parse started the server, which then logged libpq's message (the password in it)
    every 5 s."""
    line = assert_refused(twistd("-d", str(tmp_path), "--db", db, *listeners()), "db", text)
    for secret in ("xy", "zzy", "plugh"):
        assert secret not in line, line


def test_a_bad_db_from_the_environment_names_the_variable(tmp_path: Path):
    env = environment(ZKSERVER_DB="postgres://zk:s3cret@127.0.0.1/zk?bogus=1")
    result = twistd("-d", str(tmp_path), *listeners(), env=env)
    line = assert_refused(result, "environment variable ZKSERVER_DB", "bogus")
    assert "s3cret" not in result.stdout + result.stderr, line
