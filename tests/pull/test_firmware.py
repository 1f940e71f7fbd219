"""Pull terminals of other firmware, end to end on loopback sockets: records, users and
real-time events of sizes beyond the documented ones, unreadable datasets, and why a device
is not online (``status_detail``) for every way a session fails.

docs/protocols.md §B.8 and §B.9.
"""

from __future__ import annotations

import random
import struct
from datetime import datetime
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol

from tests.harness import wait_until
from tests.pull import test_service
from tests.pull.test_service import World, sleep
from zkserver.emulator.pull import build_device
from zkserver.pull import codec
from zkserver.pull.codec import Cmd, Packet, PullRecord, Reply, TcpDeframer

# The terminal (MB560-VL / SpeedFace class): three 49-byte records, each the
# 40-byte layout followed by 9 zero bytes.
world = test_service.world  # the fixture: a store, ingest, registry and an event recorder

MB560_LOG = [
    PullRecord("7001", datetime(2026, 11, 28, 8, 0, 0), 0, 15),
    PullRecord("7002", datetime(2026, 11, 28, 8, 5, 0), 1, 1),
    PullRecord("7001", datetime(2026, 11, 28, 17, 0, 0), 1, 15),
]


def statuses(w: World) -> list[tuple[str, str | None]]:
    return [(e["status"], e.get("status_detail")) for e in w.recorder.of_type("device_status")]


async def registered(emu: Any) -> None:
    await wait_until(lambda: any(s.flags for s in emu.sessions))


# --------------------------------------------------------------------------- record sizes


@pytest.mark.parametrize("transport", ["tcp", "udp"])
@pytest_twisted.ensureDeferred
async def test_mb560_49_byte_records_saved_streamed_and_live(world: World, transport: str) -> None:
    emu = build_device(serial_number="MB560VL01", record_size=49, event_size=52)
    emu.records = list(MB560_LOG)
    assert len(emu.attendance_dataset()) == 4 + 147
    device = await world.add(await world.emulator(emu, transport), transport=transport)
    manager = world.manager()
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 3)
    await registered(emu)  # the session carried on and registered for real-time events
    got = [
        (e["user_id"], e["timestamp"], e["action"], e["method"])
        for e in world.recorder.of_type("attendance")
    ]
    assert got == [
        ("7001", "2026-11-28 08:00:00", 0, 15),
        ("7002", "2026-11-28 08:05:00", 1, 1),
        ("7001", "2026-11-28 17:00:00", 1, 15),
    ]
    stored = await world.device(device.id)
    assert stored.status == "online" and stored.status_detail is None
    assert stored.info["attlog_record_size"] == 49
    assert await world.punch_count(device.id) == 3
    assert await world.real_store.rejected() == []
    # a live punch from the same terminal is saved too
    emu.punch("7002", state=0, verify=1, when=datetime(2026, 11, 28, 18, 0, 0))
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 4)
    assert world.recorder.of_type("attendance")[-1]["user_id"] == "7002"
    await sleep(0.3)  # no flapping: one online status, one session
    assert statuses(world) == [("online", None)]
    assert manager.devices[device.id].attempts == 1
    assert await world.punch_count(device.id) == 4


@pytest.mark.parametrize(
    ("record_size", "event_size"), [(44, 10), (64, 13), (80, 40), (24, 16), (12, 37)]
)
@pytest_twisted.ensureDeferred
async def test_other_record_and_event_sizes(
    world: World, record_size: int, event_size: int
) -> None:
    emu = build_device(users=3, records=1500, record_size=record_size, event_size=event_size,
                       user_size=80)  # fmt: skip
    device = await world.add(await world.emulator(emu))
    manager = world.manager()
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 1500, timeout=20)
    await registered(emu)
    emu.punch("2", state=1, verify=15, when=datetime(2026, 11, 28, 9, 0, 0))
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 1501)
    last = world.recorder.of_type("attendance")[-1]
    assert (last["user_id"], last["timestamp"], last["action"], last["method"]) == (
        "2",
        "2026-11-28 09:00:00",
        1,
        15,
    )
    assert await manager.read_users(await world.device(device.id)) == {"users": 3}
    assert await world.real_store.rejected() == []


@pytest_twisted.ensureDeferred
async def test_unreadable_dataset_is_kept_and_the_session_goes_on(world: World) -> None:
    emu = build_device(users=2, records=3, serial_number="ODDFW0001")
    body = bytes(range(146))  # 3 records announced, 146 bytes: no record size fits
    emu.faults.attendance_dataset = struct.pack("<I", len(body)) + body
    device = await world.add(await world.emulator(emu))
    manager = world.manager()
    await registered(emu)  # registered for real-time events all the same
    await wait_until(lambda: any(d for _, d in statuses(world)))
    stored = await world.device(device.id)
    assert stored.status == "online"
    assert stored.status_detail == (
        "dataset unreadable: attendance dataset of 146 bytes is not 3 records of 8 bytes or more"
    )
    rejected = await world.real_store.rejected()
    assert [(r["source"], r["raw"]) for r in rejected] == [
        ("pull:attendance", emu.faults.attendance_dataset.hex())
    ]
    assert "146 bytes is not 3 records" in rejected[0]["reason"]
    assert rejected[0]["serial_number"] == "ODDFW0001"
    assert statuses(world)[-1] == ("online", stored.status_detail)
    # live punches are saved; the device does not flap, nothing is kept twice
    emu.punch("1", when=datetime(2026, 11, 28, 8, 0, 0))
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 1)
    await sleep(0.5)
    assert manager.devices[device.id].attempts == 1
    assert "offline" not in [s for s, _ in statuses(world)]
    assert len(await world.real_store.rejected()) == 1
    # the firmware is fixed (the log reads again): the detail is cleared
    emu.faults.attendance_dataset = None
    assert await manager.read_log(await world.device(device.id)) == {"records": 4, "new": 3}
    await wait_until(lambda: statuses(world)[-1] == ("online", None))
    assert (await world.device(device.id)).status_detail is None


@pytest_twisted.ensureDeferred
async def test_undecodable_event_is_kept_and_the_next_one_saved(world: World) -> None:
    emu = build_device(users=2, records=0)
    device = await world.add(await world.emulator(emu))
    world.manager()
    await registered(emu)
    emu.emit_event(codec.EventCode.ATTLOG, b"\x01\x02\x03\x04\x05", codec.EventFlag.ATTLOG)
    emu.punch("2", when=datetime(2026, 11, 28, 8, 0, 0))
    await wait_until(lambda: len(world.recorder.of_type("attendance")) == 1)
    rejected = []
    for _ in range(50):
        rejected = await world.real_store.rejected()
        if rejected:
            break
        await sleep(0.02)
    assert [(r["source"], r["raw"]) for r in rejected] == [("pull:event", "0102030405")]
    assert "shorter than 10 bytes" in rejected[0]["reason"]
    assert (await world.device(device.id)).status == "online"


# --------------------------------------------------------------------------- status_detail


class RawDevice(Protocol):
    """A TCP peer that answers every command with ``replies[command]`` (a reply code), or
    closes (``close``) / resets (``reset``) the connection when that command arrives."""

    def __init__(self, replies: dict[int, int | str]) -> None:
        self.replies = replies
        self.deframer = TcpDeframer()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        for p in self.deframer.feed(data):
            action = self.replies.get(p.command, Reply.ACK_UNKNOWN)
            if action == "close":
                self.transport.loseConnection()
                return
            if action == "reset":
                self.transport.abortConnection()
                return
            assert isinstance(action, int)
            self.transport.write(codec.encode_tcp(Packet(action, 77, p.reply_id)))


async def raw_device(world: World, replies: dict[int, int | str]) -> int:
    factory = Factory.forProtocol(lambda: RawDevice(replies))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    world.listeners.append(port)
    return port.getHost().port


async def closed_port(transport: str = "tcp") -> int:
    """A port nothing listens on, below the ephemeral range (so our own outgoing connection
    can never be given it as its local port and connect to itself)."""
    for number in random.sample(range(20_000, 30_000), 50):
        try:
            if transport == "udp":
                port = reactor.listenUDP(number, DatagramProtocol(), interface="127.0.0.1")
            else:
                port = reactor.listenTCP(number, Factory.forProtocol(Protocol),
                                         interface="127.0.0.1")  # fmt: skip
        except CannotListenError:
            continue
        await port.stopListening()
        return number
    raise AssertionError("no free port")


async def detail_of(world: World, device_id: str, status: str = "offline") -> str | None:
    async def current() -> Any:
        return await world.device(device_id)

    found: list[Any] = []

    async def poll() -> bool:
        found[:] = [await current()]
        return found[0].status == status and found[0].status_detail is not None

    for _ in range(250):
        if await poll():
            return found[0].status_detail
        await sleep(0.02)
    raise AssertionError(f"no {status} status with a detail: {found}")


@pytest.mark.parametrize(
    ("case", "status", "detail"),
    [
        ("connect_6001", "offline", "CONNECT answered 6001"),
        ("reg_event_error", "offline", "REG_EVENT answered 2001 (ACK_ERROR)"),
        ("sizes_unknown", "offline", "GET_FREE_SIZES answered 65535 (ACK_UNKNOWN)"),
        ("wrong_key", "auth_failed", "wrong comm key"),
        ("refused", "offline", "connection refused"),
        ("udp_refused", "offline", "connection refused"),
        ("timeout", "offline", "timed out after 0.5 s"),
        ("udp_timeout", "offline", "timed out after 0.5 s"),
        ("broken_frame", "offline", "broken frame: bad TCP magic 5051827e"),
        ("reset", "offline", "connection reset by the device"),
        ("closed", "offline", "connection closed by the device"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_status_detail_says_why(world: World, case: str, status: str, detail: str) -> None:
    emu = build_device(users=1, records=2, serial_number="WHY0000001")
    transport = "udp" if case.startswith("udp") else "tcp"
    comm_key = 0
    if case == "connect_6001":
        emu.faults.replies[Cmd.CONNECT] = 6001
    elif case == "reg_event_error":
        emu.faults.replies[Cmd.REG_EVENT] = Reply.ACK_ERROR
    elif case == "sizes_unknown":
        emu.faults.replies[Cmd.GET_FREE_SIZES] = Reply.ACK_UNKNOWN
    elif case == "wrong_key":
        emu.comm_key, comm_key = 1234, 4321
    elif case in ("timeout", "udp_timeout"):
        emu.faults.mute = True
    elif case == "broken_frame":
        emu.faults.bad_magic = True
    if case in ("refused", "udp_refused"):
        port = await closed_port(transport)
    elif case in ("reset", "closed"):
        port = await raw_device(world, {Cmd.CONNECT: case.replace("closed", "close")})
    else:
        port = await world.emulator(emu, transport)
    device = await world.add(port, comm_key=comm_key, transport=transport)
    world.manager()
    assert await detail_of(world, device.id, status) == detail
    # the same detail reaches the stream and the API's device record
    await wait_until(lambda: (status, detail) in statuses(world))
    assert (await world.device(device.id)).public()["status_detail"] == detail


@pytest_twisted.ensureDeferred
async def test_status_detail_cleared_when_online_again(world: World) -> None:
    emu = build_device(users=1, records=2)
    emu.faults.replies[Cmd.CONNECT] = 6001
    device = await world.add(await world.emulator(emu))
    manager = world.manager()
    assert await detail_of(world, device.id) == "CONNECT answered 6001"
    attempts = manager.devices[device.id].attempts
    await sleep(0.6)  # retries with the same failure publish nothing new
    assert manager.devices[device.id].attempts > attempts
    assert statuses(world).count(("offline", "CONNECT answered 6001")) == 1
    del emu.faults.replies[Cmd.CONNECT]
    await wait_until(lambda: statuses(world)[-1] == ("online", None))
    assert (await world.device(device.id)).status_detail is None
