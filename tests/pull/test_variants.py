"""Pull terminals that answer in other (real) ways than the common case: empty datasets,
other reply forms to the bulk read, other error replies (docs/protocols.md §B.4, §B.9)."""

from __future__ import annotations

import pytest
import pytest_twisted
from zk.base import ZK

from tests.pull import test_service
from tests.pull.test_firmware import detail_of, statuses
from tests.pull.test_protocol import SESSION, FakeDevice, Wire, records, result_of
from tests.pull.test_service import World, sleep
from zkserver.emulator.pull import build_device
from zkserver.pull import codec
from zkserver.pull.codec import Cmd, Packet, Reply
from zkserver.pull.protocol import AuthenticationFailed, CommandFailed, failure_detail
from zkserver.records import DeviceUser

world = test_service.world  # the fixture: a store, ingest, registry and an event recorder

# --------------------------------------------------------------------------- empty datasets


def test_an_empty_dataset_holds_no_records() -> None:
    # A terminal whose log was emptied after GET_FREE_SIZES answers the bulk read with size
    # 0 (docs/protocols.md §B.4): no bytes at all, not even the length.  pyzk 0.9 reads
    # that as an empty log (get_attendance/get_users: "size < 4" / "size <= 4").
    zk = ZK.__new__(ZK)
    zk.verbose = False
    zk.records = 3
    zk.read_sizes = lambda: True
    zk.get_users = lambda: []
    zk.read_with_buffer = lambda *a, **k: (b"", 0)
    assert zk.get_attendance() == []
    assert codec.read_attendance_dataset(b"", [3]).records == []
    assert codec.attendance_record_size(b"", [3]) is None
    assert codec.parse_attendance(b"", 3) == []
    assert codec.user_record_size(b"", [2]) is None
    assert codec.parse_users(b"", 2) == []
    assert codec.parse_templates(b"") == []
    for garbage in (b"\x01", b"\x00\x00", b"\x00\x00\x00"):  # a cut length stays an error
        with pytest.raises(codec.CodecError):
            codec.read_attendance_dataset(garbage, [3])


@pytest.mark.parametrize("form", ["ack size 0", "inline no bytes"])
def test_log_emptied_between_the_count_and_the_read(form: str) -> None:
    users = [DeviceUser("1001", "Ann", uid=1)]
    dev = FakeDevice(log=records(3), users=users)  # GET_FREE_SIZES still counts 3 and 1

    def empty(p: Packet) -> list[Packet]:
        if form == "ack size 0":
            return [dev.reply(p, Reply.ACK_OK, codec.encode_prepare_buffer_ack(0))]
        return [dev.reply(p, Cmd.DATA, b"")]

    dev.extra[Cmd.PREPARE_BUFFER] = empty
    w = Wire(dev)
    w.proto.connect(0)
    d_log = w.proto.read_attendance_dataset()
    d_users = w.proto.read_users()
    w.pump()
    read = result_of(d_log)
    assert (read.records, read.unreadable) == ([], [])
    assert result_of(d_users) == []
    assert not w.proto.closed
    assert Cmd.READ_BUFFER not in [p.command for p in w.sent_packets]


# --------------------------------------------------------------------------- bulk read forms


@pytest.mark.parametrize("pieces", [False, True])
def test_prepare_buffer_answered_with_prepare_data_data_ack(pieces: bool) -> None:
    # Some terminals answer the buffered read (1503) of a small table the way they answer a
    # piece (1504): PREPARE_DATA with the size, the DATA (in one packet, or in 1024-byte
    # packets as on UDP), then ACK_OK, all with the request's reply id (docs/protocols.md §B.4).
    log = records(60)  # 2404 bytes
    dev = FakeDevice(log=log)

    def answer(p: Packet) -> list[Packet]:
        dataset = codec.encode_attendance(log, 40)
        size = 1024 if pieces else len(dataset)
        return [
            dev.reply(p, Cmd.PREPARE_DATA, codec.encode_prepare_data(len(dataset))),
            *(dev.reply(p, Cmd.DATA, dataset[i : i + size]) for i in range(0, len(dataset), size)),
            dev.reply(p, Reply.ACK_OK),
        ]

    dev.extra[Cmd.PREPARE_BUFFER] = answer
    w = Wire(dev)
    w.proto.connect(0)
    d = w.proto.read_attendance()
    d_time = w.proto.read_time()
    w.pump()
    assert [(r.user_id, r.timestamp) for r in result_of(d)] == [
        (r.user_id, r.timestamp) for r in log
    ]
    assert result_of(d_time) == dev.time  # the trailing ACK_OK was not taken for GET_TIME
    assert Cmd.READ_BUFFER not in [p.command for p in w.sent_packets]


# --------------------------------------------------------------------------- refusals


def test_auth_refused_with_another_code_names_auth() -> None:
    dev = FakeDevice(comm_key=1234)
    dev.extra[Cmd.AUTH] = lambda p: [Packet(Reply.ACK_ERROR, SESSION, p.reply_id)]
    w = Wire(dev)
    d = w.proto.connect(4321)
    w.pump()
    with pytest.raises(CommandFailed) as info:
        result_of(d)
    assert failure_detail(info.value) == "AUTH answered 2001 (ACK_ERROR)"
    dev.extra[Cmd.AUTH] = lambda p: [Packet(Reply.ACK_UNAUTH, SESSION, p.reply_id)]
    w = Wire(dev)
    d = w.proto.connect(4321)
    w.pump()
    with pytest.raises(AuthenticationFailed):
        result_of(d)


@pytest.mark.parametrize(
    ("command", "reply", "key", "detail"),
    [
        # a terminal with a comm key that lets CONNECT through without asking for it and then
        # refuses the commands as not authorised
        (Cmd.GET_VERSION, Reply.ACK_UNAUTH, 0, "GET_VERSION answered 2005 (ACK_UNAUTH)"),
        (Cmd.GET_FREE_SIZES, Reply.ACK_UNAUTH, 0, "GET_FREE_SIZES answered 2005 (ACK_UNAUTH)"),
        # a terminal refusing the comm key with ACK_ERROR instead of ACK_UNAUTH
        (Cmd.AUTH, Reply.ACK_ERROR, 4321, "AUTH answered 2001 (ACK_ERROR)"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_not_authorised_is_auth_failed_without_reconnect_storm(
    world: World, command: int, reply: int, key: int, detail: str
) -> None:
    emu = build_device(users=1, records=2, comm_key=1234 if key else 0)
    emu.faults.replies[command] = reply
    device = await world.add(await world.emulator(emu), comm_key=key)
    manager = world.manager()
    assert await detail_of(world, device.id, "auth_failed") == detail
    await sleep(0.6)  # the backoff of the tests' services is 0.05-0.2 s: no retry meanwhile
    assert manager.devices[device.id].attempts == 1
    assert statuses(world).count(("auth_failed", detail)) == 1
    assert world.recorder.of_type("attendance") == []
