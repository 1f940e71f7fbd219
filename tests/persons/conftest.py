"""Fixtures for the person registry tests: a real server (SQLite and PostgreSQL), an
emulated push terminal and an emulated pull terminal on loopback sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from zk import ZK

from tests.harness import RunningServer, sleep, start_server
from zkserver.emulator.pull import PullDevice, PullTCPFactory, build_device
from zkserver.emulator.push import PushTerminal


@pytest_twisted.async_yield_fixture
async def site(db_url: str, tmp_path: Any) -> AsyncIterator[Site]:
    running = await start_server(
        db_url,
        str(tmp_path / "data"),
        "--auto-approve",
        "--person-sync-interval",
        "0.1",
        "--command-timeout",
        "2",
    )
    world = Site(running)
    yield world
    await world.close()


class Site:
    """A server, one push terminal and one pull terminal."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.push: PushTerminal | None = None
        self.push_id = ""
        self.pull: PullDevice | None = None
        self.pull_id = ""
        self.pull_port: Any = None
        self.factory: PullTCPFactory | None = None
        self.polling = True

    async def add_push(self, serial: str = "PPL0001") -> PushTerminal:
        self.push = PushTerminal(self.server.push_url, serial, reactor, users=0)
        await self.push.handshake()
        await self.push.poll()  # INFO: its algorithm versions
        _, devices = await self.server.api("GET", "/api/devices")
        self.push_id = next(d["id"] for d in devices if d["serial_number"] == serial)
        return self.push

    async def add_pull(self, serial: str = "PPLPULL1") -> PullDevice:
        # one user already there: zkserver learns the terminal's 72-byte user layout
        self.pull = build_device(users=1, serial_number=serial)
        self.factory = PullTCPFactory(self.pull, reactor)
        self.pull_port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        code, body = await self.server.api(
            "POST",
            "/api/devices",
            {"kind": "pull", "host": "127.0.0.1", "port": self.pull_port.getHost().port},
        )
        assert code == 201, body
        self.pull_id = body["id"]
        await self.until(lambda: any(s.flags for s in self.pull.sessions))  # type: ignore
        await self.until_async(self._pull_learnt)
        return self.pull

    async def _pull_learnt(self) -> bool:
        device = await self.server.store.device(self.pull_id)
        return "fp_version" in device.info

    async def until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        async def check() -> bool:
            return predicate()

        await self.until_async(check, timeout)

    async def until_async(self, predicate: Any, timeout: float = 15.0) -> None:
        """Poll the push terminal (as it does every few seconds) until ``predicate``."""
        waited = 0.0
        while not await predicate():
            if waited > timeout:
                raise AssertionError("condition not met in time")
            if self.push is not None and self.polling:
                await self.push.poll()
            await sleep(0.05)
            waited += 0.05

    async def states(self, user_id: str) -> dict[str, str]:
        code, body = await self.server.api("GET", f"/api/persons/{user_id}/sync")
        if code != 200:
            return {}
        return {d["device_id"]: d["state"] for d in body["devices"]}

    async def in_step(self, user_id: str, *device_ids: str) -> None:
        async def check() -> bool:
            states = await self.states(user_id)
            return all(states.get(d) == "in_step" for d in device_ids)

        try:
            await self.until_async(check)
        except AssertionError:
            raise AssertionError(
                (await self.server.api("GET", f"/api/persons/{user_id}/sync"))[1]
            ) from None

    def pyzk(self, what: str) -> Any:
        port = self.pull_port.getHost().port

        def read() -> Any:
            conn = ZK("127.0.0.1", port, timeout=5, ommit_ping=True).connect()
            try:
                if what == "users":
                    return {u.user_id: (u.name, u.privilege, str(u.card)) for u in conn.get_users()}
                users = {u.uid: u.user_id for u in conn.get_users()}
                return {(users.get(t.uid), t.fid): t.template for t in conn.get_templates()}
            finally:
                conn.disconnect()

        return deferToThread(read)

    async def close(self) -> None:
        if self.factory is not None:
            await self.factory.close_connections()
        if self.pull_port is not None:
            await self.pull_port.stopListening()
        if self.push is not None:
            await self.push.close()
        await self.server.stop()
