"""``twistd zkserver`` as an operator runs it: a real ``twistd`` subprocess per test, with
bad options, config files, database URLs, endpoints and data directories (one clear line,
exit status 1, no traceback), a second instance on the same SQLite file, signals, and
what its log lines may not contain."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
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
        ("postgresql://zk:xy/zzy@127.0.0.1/zk", "%2F"),
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


# --- listeners ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "endpoint, text",
    [
        ("bogus:8081", "Unknown endpoint type"),
        ("tcp:eighty", "eighty"),
        ("systemd:domain=INET:index=0", "LISTEN_FDS"),  # no socket passed in
        ("ssl:8443:privateKey=/nonexistent/key.pem", "No such file"),
    ],
)
def test_a_bad_endpoint_is_refused_in_one_line(tmp_path: Path, endpoint: str, text: str):
    result = twistd("-d", str(tmp_path), "--push", endpoint, "--web", "tcp:0", "--no-pull")
    assert_refused(result, "push", endpoint, text)


def test_a_port_in_use_or_a_missing_socket_directory_is_one_line(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for endpoint, text in (
            (f"tcp:{port}:interface=127.0.0.1", "Address already in use"),
            (f"unix:{tmp_path}/missing/web.sock", "No such file or directory"),
        ):
            result = twistd("-d", str(tmp_path / "d"), "--web", endpoint, "--push", "tcp:0")
            assert_refused(result, f"cannot listen on {endpoint}", text)


# --- the data directory ---------------------------------------------------------------------------
def test_a_data_directory_that_cannot_be_made_is_one_line(tmp_path: Path):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert_refused(twistd("-d", str(afile), *listeners()), str(afile), "not a directory")
    inside = afile / "data"
    assert_refused(twistd("-d", str(inside), *listeners()), str(inside), "Not a directory")


def test_a_data_directory_not_writable_is_one_line(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o500)
    try:
        if os.access(data, os.W_OK):  # root: test as root without its file powers
            if not Path("/usr/sbin/capsh").exists():
                pytest.skip("running as root without capsh")
            drop = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c"]
            command = [*drop, 'exec "$0" "$@"', *TWISTD]
        else:
            command = list(TWISTD)
        for extra, text in (([], "token"), (["--token", "t0ken"], "zkserver.sqlite3.lock")):
            result = subprocess.run(
                [*command, "-n", "--pidfile=", "zkserver", "-d", str(data), *extra, *listeners()],
                env=environment(),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert_refused(result, text, "Permission denied")
    finally:
        data.chmod(0o700)


def wait_for(path: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = path.read_text(errors="replace") if path.exists() else ""
        if text in log:
            return log
        assert process.poll() is None, log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged:\n{path.read_text(errors='replace')}")


def start_twistd(log: Path, data: Path, *args: str) -> subprocess.Popen[bytes]:
    """``twistd -n zkserver -d DATA ARGS`` in the background, its output in ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", "--logfile=-", "zkserver", "-d", str(data), *args],
            env=environment(),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, list[str]]]:
    """A ``twistd zkserver`` on SQLite in tmp_path/data, its log file and listeners."""
    log = tmp_path / "first.log"
    ports = listeners()
    process = start_twistd(log, tmp_path / "data", *ports)
    try:
        wait_for(log, "Database ready", process)
        yield process, log, ports
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(20)


def test_a_second_server_on_the_same_sqlite_database_is_refused(running, tmp_path: Path):
    """Both would connect the same pull terminals and prune the same events; the second
    is refused naming the first one's pid, and binds nothing."""
    process = running[0]
    result = twistd("-d", str(tmp_path / "data"), *listeners())
    line = assert_refused(result, f"pid {process.pid}", str(tmp_path / "data"))
    assert "Listening on" not in result.stdout, line
    # Another database in the same data directory is another server's own.
    log = tmp_path / "other.log"
    other = start_twistd(log, tmp_path / "data", "--db", "sqlite:other.db", *listeners())
    try:
        wait_for(log, "Database ready", other)
    finally:
        other.terminate()
        other.wait(20)


# --- what the log may not say ---------------------------------------------------------------------
def test_the_access_log_never_shows_the_token(tmp_path: Path):
    """The page is opened as /?token=..., EventSource URLs carry it, and every asset the
    page loads sends that URL as its Referer: Twisted's access log wrote them all."""
    import urllib.error
    import urllib.request

    token = "Sekr1t-t0ken-xyz"
    web = free_port()
    log = tmp_path / "twistd.log"
    process = start_twistd(
        log,
        tmp_path / "d",
        *["--token", token, "--web", f"tcp:{web}:interface=127.0.0.1"],
        *["--push", f"tcp:{free_port()}:interface=127.0.0.1", "--no-pull"],
    )
    try:
        wait_for(log, "Database ready", process)
        base = f"http://127.0.0.1:{web}"
        for path, referer in (
            (f"/?token={token}", ""),
            (f"/api/devices?limit=5&TOKEN={token}", f"{base}/?x=1&token={token}#top"),
            ("/healthz", f"{base}/?token={token}"),
        ):
            request = urllib.request.Request(base + path, headers={"Referer": referer})
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    answer.read()
            except urllib.error.HTTPError as e:  # TOKEN= is no token: 401, logged too
                assert e.code == 401
        wait_for(log, '"GET /healthz', process)
    finally:
        process.terminate()
        process.wait(20)
    text = log.read_text()
    assert "token=***" in text and "TOKEN=***" in text, text
    assert token not in text, text


# --- stopping -------------------------------------------------------------------------------------


def test_sigterm_answers_the_uploads_being_saved(tmp_path: Path):
    """SIGTERM while uploads wait for the database (here: another process holds it for a
    moment): each gets its answer (OK once its punches are saved, or 503 to resend), none
    a reset connection, and every punch answered OK is in the database."""
    import sqlite3
    import threading
    import urllib.error
    import urllib.request

    log = tmp_path / "stop.log"
    ports = listeners()
    process = start_twistd(log, tmp_path / "data", "--auto-approve", *ports)
    wait_for(log, "Database ready", process)
    push = ports[ports.index("--push") + 1].split(":")[1]
    database = tmp_path / "data" / "zkserver.sqlite3"
    base = f"http://127.0.0.1:{push}/iclock/cdata?SN=STOP0001"
    urllib.request.urlopen(base + "&options=all", timeout=10).read()
    answers: dict[int, str] = {}

    def upload(pin: int) -> None:
        body = f"{pin}\t2026-11-30 08:00:{pin % 60:02d}\t0\t1\t0\t0\t0\n".encode()
        try:
            with urllib.request.urlopen(base + "&table=ATTLOG", body, timeout=30) as r:
                answers[pin] = r.read().decode()
        except urllib.error.HTTPError as e:
            answers[pin] = str(e.code)
        except OSError as e:
            answers[pin] = f"error: {e}"

    holder = sqlite3.connect(database, timeout=10)
    holder.execute("BEGIN EXCLUSIVE")
    threads = [threading.Thread(target=upload, args=(pin,)) for pin in range(1, 21)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # every upload is now waiting for the database
    process.terminate()
    time.sleep(0.5)
    holder.rollback()
    holder.close()
    for t in threads:
        t.join(40)
    assert process.wait(30) is not None
    assert sorted(answers) == list(range(1, 21))
    errors = {pin: a for pin, a in answers.items() if not (a.startswith("OK") or a == "503")}
    assert errors == {}, (errors, log.read_text(errors="replace")[-3000:])
    saved = {
        int(row[0]) for row in sqlite3.connect(database).execute("SELECT user_id FROM punches")
    }
    assert {pin for pin, a in answers.items() if a.startswith("OK")} <= saved
