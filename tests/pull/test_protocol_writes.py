"""The client session's device-control operations against the emulator's session logic,
in memory: ZKClientProtocol on a StringTransport, the emulator's Session as the device."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from zkserver.emulator.pull import PullDevice, Session, build_device
from zkserver.pull import codec
from zkserver.pull.codec import Cmd, FieldError, Packet, Reply, TcpDeframer, Template
from zkserver.pull.protocol import CommandFailed, ZKClientProtocol
from zkserver.records import DeviceUser


class Pipe:
    """A client session wired to an emulated device (the device is the Link)."""

    def __init__(self, device: PullDevice) -> None:
        self.device = device
        self.clock = Clock()
        self.client = ZKClientProtocol(self.clock, timeout=5, peer="emu:4370")
        self.transport = StringTransport()
        self.client.makeConnection(self.transport)
        self.session = Session(device, self)
        self.deframer = TcpDeframer()
        self.to_client: list[bytes] = []
        self.closed = False

    # Link (device -> client)
    def send(self, packet: Packet) -> None:
        self.to_client.append(codec.encode_tcp(packet))

    def send_raw(self, data: bytes) -> None:
        self.to_client.append(data)

    def close(self) -> None:
        self.closed = True

    def run(self, d: Deferred[Any]) -> Any:
        for _ in range(100_000):
            out = self.transport.value()
            self.transport.clear()
            for p in self.deframer.feed(out):
                self.session.handle(p)
            if self.to_client:
                data = b"".join(self.to_client)
                self.to_client.clear()
                self.client.dataReceived(data)
                continue
            if self.closed and not self.client.closed:
                self.client.connectionLost(Failure(ConnectionDone()))
            if not out:
                break
        results: list[Any] = []
        d.addBoth(results.append)
        assert results, "operation did not finish"
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]


def connected(device: PullDevice) -> Pipe:
    pipe = Pipe(device)
    pipe.run(pipe.client.connect(0))
    return pipe


@pytest.mark.parametrize("size", [28, 72])
def test_user_layout_learnt_and_users_written_in_it(size: int) -> None:
    pipe = connected(build_device(users=3, user_size=size))
    users, layout = pipe.run(pipe.client.read_users_layout())
    assert (len(users), layout, pipe.client.user_size) == (3, size, size)
    pipe.run(pipe.client.write_user(DeviceUser("44", "Ann", 14, "99", "1", "2"), 4))
    assert pipe.device.commands[-1] == Cmd.USER_WRQ
    users, _ = pipe.run(pipe.client.read_users_layout())
    ann = next(u for u in users if u.user_id == "44")
    assert (ann.uid, ann.name, ann.privilege, ann.card, ann.group) == (4, "Ann", 14, "99", "2")


def test_no_users_leaves_the_layout_unknown() -> None:
    pipe = connected(PullDevice())
    assert pipe.run(pipe.client.read_users_layout()) == ([], None)


def test_a_user_that_does_not_fit_is_refused_before_sending() -> None:
    pipe = connected(build_device(users=1, user_size=28))
    pipe.run(pipe.client.read_users_layout())
    with pytest.raises(FieldError):
        pipe.client.write_user(DeviceUser("A1", "Ann"), 2)


def test_delete_user_and_error_reply_in_words() -> None:
    pipe = connected(build_device(users=2))
    pipe.run(pipe.client.delete_user(2))
    assert [u.user_id for u in pipe.device.users] == ["1"]
    with pytest.raises(CommandFailed) as e:
        pipe.run(pipe.client.delete_user(9))
    assert (e.value.reply, e.value.words) == (Reply.ACK_ERROR, "refused by the terminal")


def test_unknown_command_is_not_supported() -> None:
    pipe = connected(PullDevice())
    with pytest.raises(CommandFailed) as e:
        pipe.run(pipe.client._simple(Cmd.WRITE_LCD))
    assert e.value.words == "not supported by this terminal"


def test_templates_written_in_one_buffer_and_read_back() -> None:
    pipe = connected(build_device(users=2))
    assert pipe.run(pipe.client.read_templates()) == []
    big = bytes(range(256)) * 6  # 1536 bytes: the upload takes two DATA pieces
    user = pipe.device.users[1]
    pipe.run(pipe.client.write_user_templates(user, 2, [(4, big), (5, b"x" * 10)]))
    got = pipe.run(pipe.client.read_templates())
    assert got == [Template(2, 4, 1, big), Template(2, 5, 1, b"x" * 10)]
    data = [c for c in pipe.device.commands if c == Cmd.DATA]
    assert len(data) == 2
    seq = list(pipe.device.commands)
    assert seq.index(codec.SAVE_USER_TEMPLATES) == seq.index(Cmd.DATA) + 2


def test_small_operations() -> None:
    pipe = connected(build_device(users=2, records=5))
    c = pipe.client
    pipe.run(c.disable_device())
    assert not pipe.device.enabled
    pipe.run(c.enable_device())
    pipe.run(c.refresh_data())
    pipe.run(c.unlock(4))
    pipe.run(c.start_enroll("2", 6))
    pipe.run(c.clear_attendance())
    assert pipe.device.records == []
    assert (pipe.device.enabled, pipe.device.refreshes) == (True, 1)
    assert (pipe.device.unlocks, pipe.device.enrollments) == ([4.0], [("2", 6)])
    with pytest.raises(CommandFailed):  # no such user on the terminal
        pipe.run(c.start_enroll("77", 1))
    assert pipe.run(c.read_algorithm_versions()) == {"fp_version": 10, "face_version": 0}
    pipe.run(c.clear_data())
    assert (pipe.device.users, pipe.device.records) == ([], [])


class NoFaceVersion(PullDevice):
    def option(self, key: str) -> str | None:
        return None if key == "ZKFaceVersion" else super().option(key)


def test_algorithm_versions_left_out_when_not_answered() -> None:
    pipe = connected(NoFaceVersion(options={"~ZKFPVersion": "12"}))
    assert pipe.run(pipe.client.read_algorithm_versions()) == {"fp_version": 12}


def test_restart_fires_and_the_session_ends() -> None:
    pipe = connected(PullDevice())
    pipe.run(pipe.client.restart())
    assert pipe.client.closed and pipe.device.restarts == 1


def test_restart_without_a_reply_still_fires() -> None:
    pipe = connected(PullDevice())

    def drop(session: Session, p: Packet) -> None:
        session._close()  # reboots at once, no ACK

    handlers = dict(Session._handlers)
    Session._handlers[Cmd.RESTART] = drop
    try:
        assert pipe.run(pipe.client.restart()) is None
    finally:
        Session._handlers.clear()
        Session._handlers.update(handlers)
    assert pipe.client.closed
