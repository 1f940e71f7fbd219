"""The ``zkserver`` console, run as a real subprocess against a real server on loopback.

The server runs in this process on the reactor; the CLI is spawned through the reactor
(``getProcessOutputAndValue`` / ``spawnProcess``) so the server keeps serving meanwhile.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue

from tests.harness import RunningServer, start_server, wait_until

ROOT = Path(__file__).resolve().parents[1]
PUNCH = b"1001\t2025-10-09 18:30:45\t0\t15\t0\t0\t0"
TOKEN_REFUSED = "the server refused the token; pass --token or set ZKSERVER_TOKEN"


def cli_env(**extra: str) -> dict[str, str]:
    """This environment without ZKSERVER_* settings, able to import this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKSERVER_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


async def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[str, str, int]:
    """Run ``python -m zkserver.cli ARGS``; (stdout, stderr, exit status)."""
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        ["-m", "zkserver.cli", *args],
        env=cli_env() if env is None else env,
        path=str(cwd or ROOT),
        reactor=reactor,
    )
    return out.decode(), err.decode(), code


def remote(server: RunningServer) -> list[str]:
    return ["--server", server.web_url, f"--token={server.token}"]


async def upload(server: RunningServer, sn: str, body: bytes = PUNCH) -> int:
    response = await treq.post(
        f"{server.push_url}/iclock/cdata?SN={sn}&table=ATTLOG", data=body, pool=server.pool
    )
    await response.content()
    return response.code


def assert_one_line_error(err: str, text: str) -> None:
    assert "Traceback" not in err, err
    assert text in err, err
    assert len(err.strip().splitlines()) == 1, err


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- devices ----------------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_devices_add_list_remove(server: RunningServer):
    out, err, code = await run_cli(*remote(server), "devices", "list")
    assert (out.strip(), code) == ("no devices", 0), err

    out, err, code = await run_cli(
        *remote(server),
        "devices",
        "add",
        "--serial",
        "CLI0001",
        "--name",
        "Front door",
        "--timezone",
        "+05:30",
    )
    assert code == 0, err
    assert "added push device CLI0001 (Front door" in out

    out, err, code = await run_cli(
        *remote(server),
        "devices",
        "add",
        "--kind",
        "pull",
        "--host",
        "127.0.0.10",
        "--port",
        "4371",
        "--comm-key",
        "5",
        "--transport",
        "udp",
        "--name",
        "Back",
    )
    assert code == 0, err
    assert "added pull device 127.0.0.10 (Back" in out

    # The token from the server's data directory and the URL from the environment.
    out, err, code = await run_cli(
        "--data-dir",
        server.args[server.args.index("--data-dir") + 1],
        "devices",
        "list",
        env=cli_env(ZKSERVER_URL=server.web_url),
    )
    assert code == 0, err
    header, *rows = out.strip().splitlines()
    assert header.split()[:5] == ["ID", "SERIAL", "NAME", "KIND", "STATUS"]
    assert len(rows) == 2
    assert "CLI0001" in rows[0] and "Front door" in rows[0] and "push" in rows[0]
    assert "Back" in rows[1] and "127.0.0.10:4371/udp" in rows[1]

    out, err, code = await run_cli(
        "--json",
        "devices",
        "list",
        env=cli_env(ZKSERVER_URL=server.web_url, ZKSERVER_TOKEN=server.token),
    )
    assert code == 0, err
    devices = {d["name"]: d for d in json.loads(out)}
    assert devices["Front door"]["timezone"] == "+05:30"
    assert devices["Back"]["has_comm_key"] is True and devices["Back"]["port"] == 4371

    out, err, code = await run_cli(*remote(server), "devices", "add", "--serial", "CLI0001")
    assert code == 1
    assert_one_line_error(err, "a device with serial number 'CLI0001' already exists")

    out, err, code = await run_cli(
        *remote(server), "devices", "add", "--timezone", "Mars/Base", "--serial", "CLI0002"
    )
    assert code == 1
    assert_one_line_error(err, "unknown timezone")

    out, err, code = await run_cli(*remote(server), "devices", "remove", "cli0001")
    assert code == 0, err
    assert "removed push device CLI0001" in out
    out, err, code = await run_cli(*remote(server), "devices", "remove", devices["Back"]["id"])
    assert code == 0, err
    status, remaining = await server.api("GET", "/api/devices")
    assert (status, remaining) == (200, [])

    out, err, code = await run_cli(*remote(server), "devices", "remove", "CLI0001")
    assert code == 1
    assert_one_line_error(err, "no device with id or serial number 'CLI0001'")


@pytest_twisted.ensureDeferred
async def test_devices_approve_a_pending_device(db_url: str, tmp_path: Path):
    server = await start_server(db_url, str(tmp_path / "data"))  # no auto-approval
    try:
        await upload(server, "PEND0001")
        out, err, code = await run_cli(*remote(server), "devices", "list")
        assert code == 0, err
        row = next(line for line in out.splitlines() if "PEND0001" in line)
        assert "pending" in row.split() and "no" in row.split()

        out, err, code = await run_cli(*remote(server), "devices", "approve", "PEND0001")
        assert code == 0, err
        assert "approved push device PEND0001" in out
        _, devices = await server.api("GET", "/api/devices")
        assert [d["approved"] for d in devices if d["serial_number"] == "PEND0001"] == [True]

        out, err, code = await run_cli(*remote(server), "devices", "approve", "NOPE")
        assert code == 1
        assert_one_line_error(err, "no device with id or serial number 'NOPE'")
    finally:
        await server.stop()


# --- tail -------------------------------------------------------------------------------------
class CLIProcess(ProcessProtocol):
    """A long-running CLI process whose output is collected as it arrives."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred[Any] = Deferred()

    def outReceived(self, data: bytes) -> None:  # noqa: N802
        self.out += data

    def errReceived(self, data: bytes) -> None:  # noqa: N802
        self.err += data

    def processEnded(self, reason: Any) -> None:  # noqa: N802
        self.ended.callback(reason.value)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.decode().splitlines() if line.strip()]

    @classmethod
    def spawn(cls, *args: str) -> CLIProcess:
        protocol = cls()
        reactor.spawnProcess(
            protocol,
            sys.executable,
            [sys.executable, "-m", "zkserver.cli", *args],
            env=cli_env(),
            path=str(ROOT),
        )
        return protocol

    async def interrupt(self) -> Any:
        """Ctrl-C (SIGTERM where this test run ignores SIGINT, as children inherit that)."""
        ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        self.transport.signalProcess("TERM" if ignored else "INT")
        return await self.ended

    async def kill(self) -> None:
        if not self.ended.called:
            self.transport.signalProcess("KILL")
            await self.ended


@pytest_twisted.ensureDeferred
async def test_tail_prints_an_uploaded_punch(server: RunningServer):
    tail = CLIProcess.spawn(*remote(server), "tail")
    try:
        await wait_until(lambda: b"following events" in tail.err, timeout=20)
        assert await upload(server, "TAIL0001") == 200
        await wait_until(lambda: any(e.get("type") == "attendance" for e in tail.lines()))
        ended = await tail.interrupt()
    finally:
        await tail.kill()
    assert ended.exitCode == 0, tail.err
    assert b"Traceback" not in tail.err
    event = next(e for e in tail.lines() if e["type"] == "attendance")
    _, devices = await server.api("GET", "/api/devices")
    assert event == {
        "type": "attendance",
        "device_id": devices[0]["id"],
        "device_name": "Push Device TAIL0001",
        "serial_number": "TAIL0001",
        "user_id": "1001",
        "timestamp": "2025-10-09 18:30:45",
        "action": 0,
        "method": 15,
        "raw_data": event["raw_data"],
        "timestamp_utc": event["timestamp_utc"],
        "time_ambiguous": False,
        "suspect_time": event["suspect_time"],
    }
    assert event["raw_data"]["verify_method"] == 15
    assert b"resume with --last-event-id" in tail.err


@pytest_twisted.ensureDeferred
async def test_tail_replays_filtered_events_after_an_id(server: RunningServer):
    await upload(server, "TAIL0001", PUNCH)
    await upload(server, "TAIL0002", PUNCH)
    tail = CLIProcess.spawn(
        *remote(server),
        "tail",
        "--type",
        "attendance",
        "--device",
        "TAIL0002",
        "--last-event-id",
        "0",
    )
    try:
        await wait_until(lambda: len(tail.lines()) >= 1, timeout=20)
        await upload(server, "TAIL0002", b"1002\t2025-10-09 18:31:00\t1\t1\t0\t0\t0")
        await wait_until(lambda: len(tail.lines()) >= 2)
        await tail.interrupt()
    finally:
        await tail.kill()
    events = tail.lines()
    assert [(e["type"], e["serial_number"], e["user_id"]) for e in events] == [
        ("attendance", "TAIL0002", "1001"),
        ("attendance", "TAIL0002", "1002"),
    ]


@pytest_twisted.ensureDeferred
async def test_tail_with_a_wrong_token(server: RunningServer):
    out, err, code = await run_cli("--server", server.web_url, "--token", "wrong", "tail")
    assert (out, code) == ("", 4)
    assert_one_line_error(err, TOKEN_REFUSED)


# --- token and errors -------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_token_prints_the_token_file(tmp_path: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "token").write_text("s3cret-token\n")
    assert await run_cli("token", "--data-dir", str(tmp_path / "data")) == ("s3cret-token\n", "", 0)
    assert await run_cli("-d", str(tmp_path / "data"), "token") == ("s3cret-token\n", "", 0)
    # The default data directory is ./zkserver-data.
    (tmp_path / "zkserver-data").mkdir()
    (tmp_path / "zkserver-data" / "token").write_text("here\n")
    assert await run_cli("token", cwd=tmp_path) == ("here\n", "", 0)

    out, err, code = await run_cli("token", "--data-dir", str(tmp_path / "missing"))
    assert (out, code) == ("", 4)
    assert_one_line_error(err, f"no token in {tmp_path / 'missing' / 'token'}")


@pytest_twisted.ensureDeferred
async def test_unreachable_server():
    url = f"http://127.0.0.1:{closed_port()}"
    out, err, code = await run_cli("--server", url, "--token", "x", "devices", "list")
    assert (out, code) == ("", 3)
    assert_one_line_error(err, f"cannot reach zkserver at {url}: connection refused")
    out, err, code = await run_cli("--server", url, "--token", "x", "tail")
    assert (out, code) == ("", 3)
    assert_one_line_error(err, f"cannot reach zkserver at {url}: connection refused")


@pytest_twisted.ensureDeferred
async def test_wrong_token_and_missing_token(server: RunningServer, tmp_path: Path):
    out, err, code = await run_cli(
        "--server", server.web_url, "--token", "wrong", "devices", "list"
    )
    assert (out, code) == ("", 4)
    assert_one_line_error(err, TOKEN_REFUSED)

    out, err, code = await run_cli("--server", server.web_url, "devices", "list", cwd=tmp_path)
    assert (out, code) == ("", 4)
    assert_one_line_error(err, "no token: pass --token, set ZKSERVER_TOKEN")


@pytest_twisted.ensureDeferred
async def test_usage_errors(server: RunningServer):
    out, err, code = await run_cli("--server", "localhost:5000", "--token", "x", "devices", "list")
    assert code == 2
    assert_one_line_error(err, "--server must be an http:// or https:// URL")
    out, err, code = await run_cli(*remote(server), "devices", "frob")
    assert code == 2 and "invalid choice" in err and "Traceback" not in err
    # The push listener is not the API: say so instead of failing on its answer.
    out, err, code = await run_cli(
        "--server", server.push_url, f"--token={server.token}", "devices", "list"
    )
    assert code == 1
    assert_one_line_error(err, "is --server the zkserver web listener")


# --- emulators --------------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_emulate_delegates_to_the_emulators(server: RunningServer):
    out, err, code = await run_cli("emulate", "push", "--help")
    assert code == 0 and "--sn" in out, err
    out, err, code = await run_cli("emulate", "pull", "--help")
    assert code == 0 and "--listen" in out, err

    out, err, code = await run_cli(
        "emulate",
        "push",
        "--server",
        server.push_url,
        "--sn",
        "EMUCLI01",
        "--count",
        "2",
        "--rate",
        "50",
    )
    assert code == 0, out + err
    status, page = await server.api("GET", "/api/attendance")
    assert status == 200
    assert {row["serial_number"] for row in page["items"]} == {"EMUCLI01"}
    assert len(page["items"]) == 2
