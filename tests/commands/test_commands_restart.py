"""A server restart, graceful or ``kill -9``, with commands queued, sent and done: none is
lost and none that reported ``done`` runs again (twistd in a subprocess, both databases)."""

from __future__ import annotations

import signal
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.web.browser import ServerProcess, handshake, wait_until


@pytest.fixture
def process(db_url: str, tmp_path: Any) -> Iterator[ServerProcess]:
    server = ServerProcess(
        db=db_url,
        data_dir=tmp_path / "data",
        extra=("--auto-approve", "--no-pull", "--command-timeout", "3"),
    )
    server.start()
    yield server
    server.stop()


def getrequest(server: ServerProcess, serial: str) -> list[tuple[str, str]]:
    """What the terminal is told to do: (id, command) per ``C:`` line."""
    url = f"{server.push_url}/iclock/getrequest?SN={serial}"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    if text.strip() == "OK":
        return []
    return [tuple(line[2:].split(":", 1)) for line in text.splitlines()]  # type: ignore[misc]


def devicecmd(server: ServerProcess, serial: str, *ids: str) -> None:
    body = "\n".join(f"ID={i}&Return=0&CMD=X" for i in ids).encode()
    request = urllib.request.Request(
        f"{server.push_url}/iclock/devicecmd?SN={serial}", data=body, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as r:
        assert r.read().decode().strip() == "OK"


def command(server: ServerProcess, command_id: str) -> dict[str, Any]:
    code, body = server.api("GET", f"/api/commands/{command_id}")
    assert code == 200, body
    return body


@pytest.mark.parametrize("how", ["restart", "kill -9"])
def test_restart_loses_no_command_and_reruns_none_done(process: ServerProcess, how: str):
    serial = "CMDRST1"
    assert handshake(process, serial)[0] == 200
    device = process.device(serial)
    assert device is not None
    ids = []
    for body in ({"type": "info"}, {"type": "check"}, {"type": "raw", "command": "LOG"}):
        code, queued = process.api("POST", f"/api/devices/{device['id']}/commands", body)
        assert code == 201, queued
        ids.append(queued["id"])
    assert [i for i, _ in getrequest(process, serial)] == ids  # all three are sent
    devicecmd(process, serial, ids[0])  # only the first reports back
    code, later = process.api("POST", f"/api/devices/{device['id']}/commands", {"type": "reboot"})
    assert code == 201
    ids.append(later["id"])
    assert [command(process, i)["status"] for i in ids] == ["done", "sent", "sent", "queued"]

    if how == "restart":
        process.restart()
    else:
        assert process.process is not None
        process.process.send_signal(signal.SIGKILL)
        process.process.wait(10)
        process.start()

    after = [command(process, i)["status"] for i in ids]
    # (the unanswered ones may already be back in the queue if the start took > 3 s)
    assert after[0] == "done" and after[3] == "queued" and set(after[1:3]) <= {"sent", "queued"}
    # the unanswered ones go back to the queue after --command-timeout, then all are sent
    # again in their order, with the same ids; the done one is not
    wait_until(lambda: command(process, ids[1])["status"] == "queued", timeout=20)
    wait_until(lambda: command(process, ids[2])["status"] == "queued", timeout=20)
    assert [i for i, _ in getrequest(process, serial)] == ids[1:]
    devicecmd(process, serial, *ids[1:])
    devicecmd(process, serial, ids[0])  # a repeated result changes nothing
    final = [command(process, i) for i in ids]
    assert [c["status"] for c in final] == ["done"] * 4
    assert [c["attempts"] for c in final] == [1, 2, 2, 1]
    assert getrequest(process, serial) == []
    code, page = process.api("GET", f"/api/commands?device_id={device['id']}")
    assert len(page["items"]) == 4
