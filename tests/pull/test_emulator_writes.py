"""The pull emulator obeys writes: unmodified pyzk 0.9 ``set_user``, ``delete_user``,
``get_templates``, ``save_user_template``, ``unlock``, ``clear_attendance`` and ``restart``
against it (in a thread, as in test_emulator.py), both user layouts, TCP and UDP."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from zk.finger import Finger
from zk.user import User

from tests.pull.test_emulator import HOST, TRANSPORTS, Served, in_thread, until
from zkserver.emulator.pull import (
    PullDevice,
    PullTCPFactory,
    PullUDPProtocol,
    Session,
    build_device,
)
from zkserver.pull.codec import Cmd, Packet, Reply, Template
from zkserver.records import DeviceUser

LAYOUTS = pytest.mark.parametrize("user_size", [28, 72])


@pytest_twisted.async_yield_fixture
async def serve():
    """Serve emulated devices on 127.0.0.1 (TCP and UDP); stopped in teardown."""
    started: list[Served] = []

    def start(device: PullDevice) -> Served:
        factory = PullTCPFactory(device, reactor)
        tcp = reactor.listenTCP(0, factory, interface=HOST)
        udp = reactor.listenUDP(0, PullUDPProtocol(device), interface=HOST)
        started.append(Served(device, factory, tcp, udp))
        return started[-1]

    yield start
    for s in started:
        await s.stop()


def _users(conn: Any) -> list[tuple[int, str, str, int, str, str]]:
    return [
        (u.uid, u.user_id, u.name, u.privilege, str(u.group_id), str(u.card))
        for u in conn.get_users()
    ]


@TRANSPORTS
@LAYOUTS
@pytest_twisted.ensureDeferred
async def test_pyzk_set_user_adds_and_updates(serve, udp: bool, user_size: int) -> None:
    s = serve(build_device(users=2, user_size=user_size))

    def session() -> tuple[list[Any], list[Any]]:
        conn = s.zk(udp).connect()
        conn.get_users()  # pyzk learns the user record size from the read
        conn.set_user(
            uid=3, name="Ann", privilege=14, password="12", group_id="4", user_id="303", card=123456
        )
        conn.set_user(uid=1, name="Bob", privilege=0, group_id="1", user_id="1", card=0)
        added = _users(conn)
        conn.disconnect()
        return added, []

    users, _ = await in_thread(session)
    assert (3, "303", "Ann", 14, "4", "123456") in users
    assert (1, "1", "Bob", 0, "1", "0") in users
    assert len(users) == 3
    assert s.device.refreshes == 2  # pyzk refreshes after each write
    assert s.device.sizes().users == 3


@TRANSPORTS
@pytest_twisted.ensureDeferred
async def test_pyzk_delete_user(serve, udp: bool) -> None:
    s = serve(build_device(users=3))
    s.device.templates.append(Template(2, 0, 1, b"T" * 40))

    def session() -> list[str]:
        conn = s.zk(udp).connect()
        conn.delete_user(uid=2)
        conn.delete_user(user_id="3")
        left = [u.user_id for u in conn.get_users()]
        conn.disconnect()
        return left

    assert await in_thread(session) == ["1"]
    assert s.device.templates == []  # a deleted user's templates go with it


@TRANSPORTS
@pytest_twisted.ensureDeferred
async def test_pyzk_templates_read_and_write(serve, udp: bool) -> None:
    s = serve(build_device(users=2))
    s.device.templates.append(Template(1, 6, 1, bytes(range(256)) * 3))

    def session() -> list[tuple[int, int, int, bytes]]:
        conn = s.zk(udp).connect()
        users = conn.get_users()
        user = next(u for u in users if u.uid == 2)
        conn.save_user_template(user, [Finger(2, 0, 1, b"A" * 500), Finger(2, 3, 1, b"B" * 900)])
        got = [(f.uid, f.fid, f.valid, f.template) for f in conn.get_templates()]
        conn.disconnect()
        return got

    got = await in_thread(session)
    assert (1, 6, 1, bytes(range(256)) * 3) in got
    assert (2, 0, 1, b"A" * 500) in got and (2, 3, 1, b"B" * 900) in got
    assert len(got) == 3
    assert s.device.sizes().fingers == 3


@TRANSPORTS
@pytest_twisted.ensureDeferred
async def test_pyzk_save_user_template_writes_a_new_user_too(serve, udp: bool) -> None:
    s = serve(build_device(users=1, user_size=28))

    def session() -> list[str]:
        conn = s.zk(udp).connect()
        conn.get_users()
        conn.save_user_template(User(7, "Neu", 0, "", "1", "77", 0), [Finger(7, 1, 1, b"x" * 64)])
        ids = [u.user_id for u in conn.get_users()]
        conn.disconnect()
        return ids

    assert await in_thread(session) == ["1", "77"]
    assert s.device.templates == [Template(7, 1, 1, b"x" * 64)]


@TRANSPORTS
@pytest_twisted.ensureDeferred
async def test_pyzk_unlock_and_clear_attendance(serve, udp: bool) -> None:
    s = serve(build_device(users=2, records=30))

    def session() -> int:
        conn = s.zk(udp).connect()
        conn.unlock(5)
        conn.clear_attendance()
        left = len(conn.get_attendance())
        conn.disconnect()
        return left

    assert await in_thread(session) == 0
    assert s.device.unlocks == [5.0]
    assert s.device.records == []


@pytest_twisted.ensureDeferred
async def test_pyzk_restart_drops_the_link_and_the_device_comes_back(serve) -> None:
    device = PullDevice(restart_delay=0.3)
    s = serve(device)

    def restart() -> None:
        conn = s.zk().connect()
        conn.restart()

    await in_thread(restart)
    assert device.restarts == 1 and device.rebooting
    await until(lambda: not device.sessions)

    def refused() -> bool:
        with socket.create_connection(("127.0.0.1", s.tcp_port), timeout=2) as sock:
            sock.settimeout(2)
            return sock.recv(1) == b""  # accepted, then closed at once: no session

    assert await in_thread(refused)
    await until(lambda: not device.rebooting)

    def again() -> str:
        conn = s.zk().connect()
        sn = conn.get_serialnumber()
        conn.disconnect()
        return sn

    assert await in_thread(again) == "EMU0000001"


class _Link:
    def __init__(self) -> None:
        self.sent: list[Packet] = []

    def send(self, packet: Packet) -> None:
        self.sent.append(packet)

    def send_raw(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("drops", [False, True])
def test_disable_device_can_drop_the_event_registration(drops: bool) -> None:
    device = PullDevice()
    device.faults.disable_drops_events = drops
    link = _Link()
    session = Session(device, link)
    for i, (cmd, data) in enumerate(
        [(Cmd.CONNECT, b""), (Cmd.REG_EVENT, b"\x01\x00\x00\x00"), (Cmd.DISABLEDEVICE, b"")]
    ):
        session.handle(Packet(cmd, session.session_id, i, data))
    assert not device.enabled
    session.handle(Packet(Cmd.ENABLEDEVICE, session.session_id, 3))
    device.punch("1")
    events = [p for p in link.sent if p.command == Cmd.REG_EVENT]
    assert len(events) == (0 if drops else 1)
    assert [p.command for p in link.sent[:4]] == [Reply.ACK_OK] * 4


def test_emulator_user_helpers() -> None:
    d = build_device(users=2)
    d.upsert_user(DeviceUser("9", "Nine", uid=2))
    assert [u.user_id for u in d.users] == ["1", "9"]
    assert d.uid_of("9") == 2 and d.uid_of("2") is None
    assert not d.delete_user(5)
    d.clear_data()
    assert (d.users, d.records, d.templates) == ([], [], [])
