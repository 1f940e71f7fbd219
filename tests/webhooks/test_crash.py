"""At least once across ``kill -9``: a server process killed while a delivery is in flight
resends it after a restart, and skips nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest_twisted
import treq

from tests.harness import new_pool, sleep, wait_until
from tests.webhooks.receiver import Receiver

TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
SECRET = "a-test-secret-of-enough-length"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    def __init__(self, db: str, data_dir: str) -> None:
        self.web, self.push = _free_port(), _free_port()
        self.args = [
            sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--logfile", data_dir + ".log",
            "zkserver", "--data-dir", data_dir, "--db", db, "--token", "t", "--auto-approve",
            "--web", f"tcp:{self.web}:interface=127.0.0.1",
            "--push", f"tcp:{self.push}:interface=127.0.0.1",
            "--webhook-allow-private", "--webhook-timeout", "60",
            "--webhook-retry-min", "0.05", "--webhook-retry-max", "0.2", "--no-pull",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.pool = new_pool()

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        self.proc = subprocess.Popen(self.args, env=env, stdin=subprocess.DEVNULL)
        for _ in range(600):
            try:
                response = await treq.get(f"http://127.0.0.1:{self.web}/healthz", pool=self.pool)
                await response.content()
                if response.code == 200:
                    return
            except Exception:
                pass
            assert self.proc.poll() is None, "server exited"
            await sleep(0.05)
        raise AssertionError("server did not start")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await wait_until(lambda: self.proc is not None and self.proc.poll() is not None)
        await self.pool.closeCachedConnections()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            await wait_until(lambda: self.proc is not None and self.proc.poll() is not None)
        await self.pool.closeCachedConnections()

    async def call(self, method: str, path: str, data: bytes, port: int | None = None) -> bytes:
        response = await treq.request(
            method,
            f"http://127.0.0.1:{port or self.web}{path}",
            data=data,
            headers={"Authorization": "Bearer t", "Content-Type": "application/json"},
            pool=self.pool,
        )
        return await response.content()


@pytest_twisted.ensureDeferred
async def test_kill_9_mid_delivery_then_restart_delivers_every_event(db_url: str, tmp_path):
    receiver = await Receiver(secret=SECRET, dead=True).start()
    data_dir = str(tmp_path / "data")
    first = ServerProcess(db_url, data_dir)
    second = ServerProcess(db_url, data_dir)
    try:
        await first.start()
        body = f'{{"url": "{receiver.url}", "secret": "{SECRET}", "types": ["attendance"]}}'
        assert b'"id"' in await first.call("POST", "/api/webhooks", body.encode())
        lines = "\n".join(f"{u}\t2026-11-29 09:00:0{u}\t0\t1\t0\t0\t0" for u in range(1, 6))
        reply = await first.call(
            "POST", "/iclock/cdata?SN=CRASH001&table=ATTLOG", lines.encode(), port=first.push
        )
        assert reply == b"OK: 5"
        await wait_until(lambda: len(receiver.requests) == 1)  # in flight, unanswered
        await first.kill()
        receiver.dead = False
        await second.start()
        await wait_until(lambda: len(receiver.delivered_ids()) >= 5, timeout=30)
        users = [json_user(r.body) for r in receiver.requests]
        assert users[0] == users[1] == "1"  # the one in flight was sent again
        delivered = receiver.delivered_ids()
        assert delivered == sorted(set(delivered))  # in order, each once after the restart
        assert [json_user(r.body) for r in receiver.requests if r.status == 204] == [
            "1",
            "2",
            "3",
            "4",
            "5",
        ]
        assert all(r.signature_ok for r in receiver.requests)
    finally:
        await first.stop()
        await second.stop()
        await receiver.stop()


def json_user(body: bytes) -> str:
    import json

    return str(json.loads(body)["user_id"])
