"""One client session with a ZK pull device (binary protocol, port 4370), TCP or UDP.

:class:`ZKSession` holds the whole session logic over :mod:`zkserver.pull.codec`: reply
ids, one request in flight at a time (others queue), a timeout per request (on timeout
the session fails and closes), multi-packet replies (PREPARE_DATA, DATA..., ACK_OK) and
real-time events (command 500), which are ACKed at once and handed to ``on_event``
whenever they arrive, between requests or in the middle of one.

The transports are thin: :class:`ZKClientProtocol` (TCP, framed by
:class:`~zkserver.pull.codec.TcpDeframer`) and :class:`ZKDatagramProtocol` (UDP,
connected to the device) only turn bytes into packets and back.  :func:`open_session`
connects either.  Nothing here blocks the reactor.
"""

from __future__ import annotations

import errno
import ipaddress
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from attrs import define, field
from twisted.internet import error as net_error
from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from zkserver.pull import codec
from zkserver.pull.codec import (
    EF_ATTLOG,
    AttendanceEvent,
    Cmd,
    CodecError,
    FrameError,
    Packet,
    PullRecord,
    Reply,
    Sizes,
)
from zkserver.records import DeviceUser

__all__ = [
    "ZKError",
    "AuthenticationFailed",
    "RequestTimeout",
    "SessionClosed",
    "CommandFailed",
    "ProtocolError",
    "DatasetUnreadable",
    "failure_detail",
    "ZKSession",
    "ZKClientProtocol",
    "ZKDatagramProtocol",
    "open_session",
    "DEFAULT_TIMEOUT",
]

log = Logger()

DEFAULT_TIMEOUT = 10.0
"""Seconds a request may wait for its (next) reply packet before the session fails."""

EventCallback = Callable[[AttendanceEvent], Any]
UnreadableEventCallback = Callable[[int, bytes, str], Any]
"""Called with (event code, payload, reason) for a real-time event that does not decode."""


class ZKError(Exception):
    """Base class of every session error."""


class AuthenticationFailed(ZKError):
    """The device refused the comm key (ACK_UNAUTH after CMD_AUTH)."""


class RequestTimeout(ZKError):
    """The device did not answer in time; the session has been closed."""

    def __init__(self, message: str, seconds: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(message)
        self.seconds = seconds


class SessionClosed(ZKError):
    """The connection is gone (or was never made); pending requests fail with this."""

    #: The connect timeout, when the connection was never made for lack of an answer.
    seconds: float | None = None


class ProtocolError(ZKError):
    """The device sent bytes that do not decode (garbage, wrong magic, absurd length)."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        #: What was wrong, without the peer (for :func:`failure_detail`).
        self.reason = reason or message


class CommandFailed(ZKError):
    """The device answered a command with an error reply code."""

    def __init__(self, command: int, reply: int) -> None:
        super().__init__(f"command {_name(Cmd, command)} answered {_name(Reply, reply)}")
        self.command = command
        self.reply = reply

    @property
    def words(self) -> str:
        """The reply code in words ("not supported by this terminal", ...)."""
        return codec.reply_words(self.reply)


class DatasetUnreadable(ZKError):
    """A bulk-read dataset does not decode in any known layout (docs/protocols.md §B.8).
    The session is still good: the caller keeps ``dataset`` for an operator."""

    def __init__(self, what: str, dataset: bytes, reason: str) -> None:
        super().__init__(f"{what} dataset unreadable: {reason}")
        self.what = what
        self.dataset = dataset
        self.reason = reason


def _seconds(value: float) -> str:
    return f"{value:g} s"


def failure_detail(error: BaseException) -> str:
    """Why a session failed, in a few words for an operator (a device's ``status_detail``):
    ``CONNECT answered 6001``, ``wrong comm key``, ``connection refused``, ``timed out after
    10 s``, ``host unreachable``, ``broken frame: ...``, ``connection reset by the device``."""
    if isinstance(error, AuthenticationFailed):
        return "wrong comm key"
    if isinstance(error, CommandFailed):
        try:
            code = f"{error.reply} ({Reply(error.reply).name})"
        except ValueError:
            code = str(error.reply)
        try:
            command = Cmd(error.command).name
        except ValueError:
            command = f"command {error.command}"
        return f"{command} answered {code}"
    if isinstance(error, RequestTimeout):
        return f"timed out after {_seconds(error.seconds)}"
    if isinstance(error, DatasetUnreadable):
        return f"dataset unreadable: {error.reason}"
    if isinstance(error, ProtocolError):
        return f"broken frame: {error.reason}"
    cause = error.__cause__ if isinstance(error, SessionClosed) else error
    if isinstance(cause, net_error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, net_error.DNSLookupError):
        return "host name not found"
    if isinstance(cause, net_error.NoRouteError) or (
        isinstance(cause, net_error.ConnectError)
        and cause.osError in (errno.EHOSTUNREACH, errno.ENETUNREACH)
    ):
        return "host unreachable"
    if isinstance(cause, net_error.TimeoutError | net_error.TCPTimedOutError | TimeoutError):
        seconds = getattr(error, "seconds", None)
        return f"timed out after {_seconds(seconds)}" if seconds else "timed out"
    if isinstance(cause, net_error.ConnectionLost):
        return "connection reset by the device"
    if isinstance(cause, net_error.ConnectionDone):
        return "connection closed by the device"
    if isinstance(cause, net_error.ConnectError):
        return f"cannot connect: {cause}".rstrip(". ")
    if isinstance(error, SessionClosed):
        return "connection lost"
    return str(error) or type(error).__name__


def _name(enum: Any, value: int) -> str:
    try:
        return f"{enum(value).name}({value})"
    except ValueError:
        return str(value)


# Replies that mean "done" for a request; everything else is an error reply.
_OK_REPLIES = frozenset({Reply.ACK_OK, Reply.ACK_DATA, Cmd.DATA, Cmd.PREPARE_DATA})


@define(eq=False)
class _Request:
    """One command on the wire and the packets collected for it."""

    command: int
    data: bytes
    deferred: Deferred[list[Packet]]
    multi: bool = False  # a chunk read: PREPARE_DATA, DATA..., ACK_OK
    reply_id: int = -1
    packets: list[Packet] = field(factory=list)

    def add(self, p: Packet) -> bool:
        """Collect ``p``; True when the reply is complete."""
        self.packets.append(p)
        if not self.multi:
            return True
        first = self.packets[0].command
        if first != Cmd.PREPARE_DATA:
            return True  # inline DATA, or an error reply
        return len(self.packets) > 1 and p.command != Cmd.DATA


class ZKSession:
    """The session logic shared by the TCP and UDP protocols.

    Subclasses implement :meth:`_write_packet` and :meth:`_close_transport` and call
    :meth:`_packet_received` / :meth:`_session_lost`.  Public methods return Deferreds;
    each multi-request operation (a bulk read, the handshake) runs alone.
    """

    max_chunk: int = codec.TCP_MAX_CHUNK

    def __init__(
        self,
        clock: IReactorTime,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        on_event: EventCallback | None = None,
        peer: str = "",
    ) -> None:
        self.clock = clock
        self.timeout = timeout
        self.on_event = on_event
        #: Called for real-time attendance events that do not decode (else only logged).
        self.on_unreadable_event: UnreadableEventCallback | None = None
        #: Called with (event code, data) for the other real-time events (door, alarm, ...).
        self.on_other_event: Callable[[int, bytes], Any] | None = None
        #: Record sizes this device used before (docs/protocols.md §B.8): tried
        #: when the record count does not divide a dataset; updated by every good read.
        self.attendance_record_size: int | None = None
        self.user_record_size: int | None = None
        self.peer = peer
        self.session_id = 0
        self.reply_id = codec.USHRT_MAX - 1  # the first command carries next_reply_id() == 0
        self.authenticated = False
        self.closed = False
        self.close_reason: ZKError | None = None
        self.last_activity = clock.seconds()
        self._current: _Request | None = None
        self._queue: deque[_Request] = deque()
        self._timer: IDelayedCall | None = None
        self._op_lock = DeferredLock()
        self._close_waiters: list[Deferred[ZKError]] = []

    # ------------------------------------------------------------------ transport hooks

    def _write_packet(self, p: Packet) -> None:
        raise NotImplementedError

    def _close_transport(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ life cycle

    def notify_closed(self) -> Deferred[ZKError]:
        """A Deferred firing (never failing) with the reason (a ZKError) once the session ends."""
        if self.closed and self.close_reason is not None:
            return succeed(self.close_reason)
        d: Deferred[ZKError] = Deferred()
        self._close_waiters.append(d)
        return d

    def abort(self, reason: Exception | Failure | None = None) -> None:
        """Fail every pending request and close the connection now."""
        if reason is None:
            reason = SessionClosed(f"session with {self.peer} closed")
        self._fail(reason)
        self._close_transport()

    def _session_lost(self, reason: Failure | Exception | None = None) -> None:
        """The transport is gone: fail what is pending, tell the waiters."""
        self._fail(reason or SessionClosed(f"connection to {self.peer} lost"))

    def _fail(self, reason: Exception | Failure) -> None:
        failure = reason if isinstance(reason, Failure) else Failure(reason)
        error = failure.value
        if not isinstance(error, ZKError):
            error = SessionClosed(f"connection to {self.peer} lost: {failure.value}")
            error.__cause__ = failure.value
            failure = Failure(error)
        first = not self.closed
        self.closed = True
        if first:
            self.close_reason = error
        self._cancel_timer()
        pending = ([self._current] if self._current else []) + list(self._queue)
        self._current = None
        self._queue.clear()
        for req in pending:
            req.deferred.errback(failure)
        if first:
            waiters, self._close_waiters = self._close_waiters, []
            for d in waiters:
                d.callback(error)

    # ------------------------------------------------------------------ requests

    def request(
        self, command: int, data: bytes = b"", *, multi: bool = False
    ) -> Deferred[list[Packet]]:
        """Queue one command; fires with its reply packet(s) (the first one decides)."""
        d: Deferred[list[Packet]] = Deferred()
        if self.closed:
            d.errback(self.close_reason or SessionClosed(f"session with {self.peer} closed"))
            return d
        self._queue.append(_Request(command, bytes(data), d, multi))
        self._send_next()
        return d

    def _send_next(self) -> None:
        if self._current is not None or not self._queue or self.closed:
            return
        req = self._current = self._queue.popleft()
        self.reply_id = codec.next_reply_id(self.reply_id)
        req.reply_id = self.reply_id
        self._timer = self.clock.callLater(self.timeout, self._timed_out, req)
        self._write_packet(Packet(req.command, self.session_id, req.reply_id, req.data))

    def _timed_out(self, req: _Request) -> None:
        self._timer = None
        log.warn(
            "ZK device {peer}: no reply to {command} within {timeout} s; closing the session",
            peer=self.peer,
            command=_name(Cmd, req.command),
            timeout=self.timeout,
        )
        self.abort(
            RequestTimeout(
                f"{self.peer}: no reply to {_name(Cmd, req.command)} within {self.timeout} s",
                self.timeout,
            )
        )

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _packet_received(self, p: Packet) -> None:
        if self.closed:
            return
        self.last_activity = self.clock.seconds()
        if p.command == Cmd.REG_EVENT:
            self._event_received(p)
            return
        req = self._current
        if req is None or p.reply_id != req.reply_id:
            log.debug(
                "ZK device {peer}: ignoring unexpected {command} (reply id {reply_id})",
                peer=self.peer,
                command=_name(Reply, p.command),
                reply_id=p.reply_id,
            )
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.timeout)
        if not req.add(p):
            return
        self._cancel_timer()
        self._current = None
        req.deferred.callback(req.packets)
        self._send_next()

    def _event_received(self, p: Packet) -> None:
        # ACK first, always: the device waits for it before sending the next event.
        self._write_packet(Packet(Reply.ACK_OK, self.session_id, p.reply_id))
        try:
            event = codec.parse_event(p.session_id, p.data)
        except CodecError as e:
            log.warn(
                "ZK device {peer}: undecodable event ({size} bytes): {error}",
                peer=self.peer,
                size=len(p.data),
                error=str(e),
            )
            self._call(self.on_unreadable_event, p.session_id, p.data, str(e))
            return
        if not isinstance(event, AttendanceEvent):
            log.debug("ZK device {peer}: event code {code}", peer=self.peer, code=event.code)
            self._call(self.on_other_event, event.code, event.data)
            return
        self._call(self.on_event, event)

    def _call(self, handler: Callable[..., Any] | None, *args: Any) -> None:
        if handler is None:
            return
        try:
            result = handler(*args)
        except Exception:
            log.failure("ZK device {peer}: event handler failed", peer=self.peer)
            return
        if isinstance(result, Deferred):
            result.addErrback(
                lambda f: log.failure("ZK device {peer}: event handler failed", f, peer=self.peer)
            )

    async def _command(self, command: int, data: bytes = b"") -> Packet:
        """Send one command and return its reply; error replies raise CommandFailed."""
        (reply,) = await self.request(command, data)
        if reply.command not in _OK_REPLIES:
            raise CommandFailed(command, reply.command)
        return reply

    async def _exclusive(self, fn: Callable[[], Any]) -> Any:
        """Run a (multi-request) operation with no other operation interleaved."""
        await self._op_lock.acquire()
        try:
            return await fn()
        finally:
            self._op_lock.release()

    def _op(self, fn: Callable[[], Any]) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._exclusive(fn))

    # ------------------------------------------------------------------ public API

    def connect(self, comm_key: int = 0) -> Deferred[None]:
        """CONNECT, then AUTH with the comm key if the device asks (AuthenticationFailed)."""

        async def run() -> None:
            (reply,) = await self.request(Cmd.CONNECT)
            self.session_id = reply.session_id
            command = Cmd.CONNECT
            if reply.command == Reply.ACK_UNAUTH:
                command = Cmd.AUTH
                key = codec.make_commkey(comm_key, self.session_id)
                (reply,) = await self.request(Cmd.AUTH, key)
                if reply.command == Reply.ACK_UNAUTH:
                    raise AuthenticationFailed(f"{self.peer} refused the comm key")
            if reply.command != Reply.ACK_OK:
                raise CommandFailed(command, reply.command)
            self.authenticated = True

        return self._op(run)

    def disconnect(self) -> Deferred[None]:
        """EXIT (best effort), then close the connection."""

        async def run() -> None:
            try:
                if not self.closed:
                    await self.request(Cmd.EXIT)
            except ZKError:
                pass
            finally:
                self.abort(SessionClosed(f"session with {self.peer} ended"))

        return Deferred.fromCoroutine(run())

    def read_serial_number(self) -> Deferred[str]:
        async def run() -> str:
            key = codec.encode_option_request("~SerialNumber")
            reply = await self._command(Cmd.OPTIONS_RRQ, key)
            _key, value = codec.parse_option_reply(reply.data)
            return value.replace("=", "").strip()

        return self._op(run)

    def read_firmware(self) -> Deferred[str]:
        async def run() -> str:
            return codec.parse_version((await self._command(Cmd.GET_VERSION)).data)

        return self._op(run)

    def read_time(self) -> Deferred[datetime]:
        async def run() -> datetime:
            return codec.unpack_time((await self._command(Cmd.GET_TIME)).data)

        return self._op(run)

    def set_time(self, when: datetime) -> Deferred[None]:
        async def run() -> None:
            await self._command(Cmd.SET_TIME, codec.pack_time(when))

        return self._op(run)

    def read_sizes(self) -> Deferred[Sizes]:
        return self._op(self._read_sizes)

    async def _read_sizes(self) -> Sizes:
        return codec.parse_free_sizes((await self._command(Cmd.GET_FREE_SIZES)).data)

    def register_events(self, flags: int = EF_ATTLOG) -> Deferred[None]:
        async def run() -> None:
            await self._command(Cmd.REG_EVENT, codec.encode_reg_event(flags))

        return self._op(run)

    def read_users(self) -> Deferred[list[DeviceUser]]:
        """Every user on the device (sizes, then a bulk read); DatasetUnreadable when the
        dataset fits no record size."""

        async def run() -> list[DeviceUser]:
            return await self._read_users()

        return self._op(run)

    async def _read_users(self) -> list[DeviceUser]:
        sizes = await self._read_sizes()
        if sizes.users <= 0:
            return []
        dataset = await self._read_buffer(Cmd.USERTEMP_RRQ, codec.Fct.USER)
        try:
            size = codec.user_record_size(dataset, [sizes.users], hint=self.user_record_size)
            if size is None:
                return []
            users = codec.parse_users(dataset, record_size=size, encoding=self.encoding)
        except CodecError as e:
            raise DatasetUnreadable("users", dataset, str(e)) from e
        self.user_record_size = size
        return users

    def read_attendance(self) -> Deferred[list[PullRecord]]:
        """The whole attendance log: the records that decode (:meth:`read_attendance_dataset`)."""

        async def run() -> list[PullRecord]:
            return (await self._read_attendance()).records

        return self._op(run)

    def read_attendance_dataset(self) -> Deferred[codec.AttendanceDataset]:
        """The whole attendance log (sizes, bulk read; users too for 8-byte records).

        Records of any size are read (docs/protocols.md §B.8): the size is the
        dataset length / the record count; when that does not divide, the count is read
        again (punches during the read), then the size seen before and the documented
        sizes are tried.  Records that do not decode are listed in ``unreadable``; a
        dataset that fits no size raises :class:`DatasetUnreadable` (the session goes on).
        """
        return self._op(self._read_attendance)

    async def _read_attendance(self) -> codec.AttendanceDataset:
        sizes = await self._read_sizes()
        if sizes.records <= 0:
            return codec.AttendanceDataset([], None)
        dataset = await self._read_buffer(Cmd.ATTLOG_RRQ)
        hint = self.attendance_record_size
        try:
            size = codec.attendance_record_size(dataset, [sizes.records], hint=hint)
        except CodecError:
            after = (await self._read_sizes()).records  # the count moved during the read
            low, high = sorted((sizes.records, after))
            try:
                size = codec.attendance_record_size(dataset, range(low, high + 1), hint=hint)
            except CodecError as e:
                raise DatasetUnreadable("attendance", dataset, str(e)) from e
        if size is None:
            return codec.AttendanceDataset([], None)
        users: list[DeviceUser] = []
        if codec.attendance_layout(size) == 8:  # 8-byte records carry only the uid
            try:
                users = await self._read_users()
            except DatasetUnreadable as e:
                log.warn(
                    "ZK device {peer}: users unreadable ({error}); 8-byte records keep"
                    " their uid as user id",
                    peer=self.peer,
                    error=e.reason,
                )
        try:
            read = codec.read_attendance_dataset(dataset, record_size=size, users=users)
        except CodecError as e:
            raise DatasetUnreadable("attendance", dataset, str(e)) from e
        self.attendance_record_size = size
        return read

    async def _read_buffer(self, command: int, fct: int = 0, ext: int = 0) -> bytes:
        """Bulk read (1503, 1504 per chunk, 1502): the dataset bytes."""
        packets = await self.request(
            Cmd.PREPARE_BUFFER, codec.encode_prepare_buffer(command, fct, ext), multi=True
        )
        if packets[0].command == Cmd.PREPARE_DATA:  # the whole table as one piece (§B.4)
            return self._piece(Cmd.PREPARE_BUFFER, packets, 0, None)
        try:
            buffer = codec.parse_prepare_buffer_reply(packets[0])
        except CodecError as e:
            raise CommandFailed(Cmd.PREPARE_BUFFER, packets[0].command) from e
        if buffer.data is not None:
            return buffer.data
        parts = []
        for start, size in codec.chunk_plan(buffer.size, self.max_chunk):
            parts.append(await self._read_chunk(start, size))
        await self._command(Cmd.FREE_DATA)
        return b"".join(parts)

    async def _read_chunk(self, start: int, size: int) -> bytes:
        packets = await self.request(
            Cmd.READ_BUFFER, codec.encode_read_chunk(start, size), multi=True
        )
        return self._piece(Cmd.READ_BUFFER, packets, start, size)

    def _piece(self, command: int, packets: list[Packet], start: int, size: int | None) -> bytes:
        """The bytes of a multi-packet reply: DATA alone, or PREPARE_DATA, DATA..., ACK_OK;
        ``size`` is the length asked for (None: the one PREPARE_DATA announces)."""
        first = packets[0]
        if first.command == Cmd.DATA:
            chunk = first.data
        elif first.command == Cmd.PREPARE_DATA:
            if packets[-1].command != Reply.ACK_OK:
                raise CommandFailed(command, packets[-1].command)
            chunk = b"".join(p.data for p in packets[1:-1])
            if size is None:
                try:
                    size = codec.parse_prepare_data(first.data)
                except CodecError:
                    size = len(chunk)
        else:
            raise CommandFailed(command, first.command)
        if size is not None and len(chunk) != size:
            problem = f"chunk at {start} has {len(chunk)} of {size} bytes"
            raise ProtocolError(f"{self.peer}: {problem}", problem)
        return chunk

    # ------------------------------------------------------------------ device control
    #
    # The write forms of docs/protocols.md §B.7.
    # Each method is one operation (no other operation interleaves); error replies raise
    # CommandFailed (its ``words`` say what the reply code means).

    #: The user layout (28 or 72) writes use, learnt by :meth:`read_users_layout`.
    user_size: int | None = None
    #: Text encoding of the device's names, the device's setting (zkserver.device_text;
    #: docs/protocols.md §B.4): ``""`` reads UTF-8, else GBK, else latin-1 and writes UTF-8.
    encoding: str = ""
    #: ``"tcp"`` or ``"udp"`` (STARTENROLL has a form for each).
    transport_kind: str = "tcp"

    def read_users_layout(self) -> Deferred[tuple[list[DeviceUser], int | None]]:
        """Every user and the user layout (28 or 72) writes use: the layout of the record
        size read (:attr:`user_record_size`), kept in :attr:`user_size` (unchanged when
        the device has no users)."""

        async def run() -> tuple[list[DeviceUser], int | None]:
            users = await self._read_users()
            if users and self.user_record_size is not None:
                self.user_size = codec.user_layout(self.user_record_size)
            return users, self.user_size

        return self._op(run)

    def read_algorithm_versions(self) -> Deferred[dict[str, int]]:
        """``{"fp_version": n, "face_version": n}`` (OPTIONS_RRQ ``~ZKFPVersion`` and
        ``ZKFaceVersion``); a version the device does not answer is left out."""

        async def run() -> dict[str, int]:
            out: dict[str, int] = {}
            for name, key in (
                ("fp_version", codec.FP_VERSION_OPTION),
                ("face_version", codec.FACE_VERSION_OPTION),
            ):
                try:
                    reply = await self._command(Cmd.OPTIONS_RRQ, codec.encode_option_request(key))
                except CommandFailed:
                    continue
                out[name] = codec.parse_algorithm_version(reply.data)
            return out

        return self._op(run)

    def _simple(self, command: int, data: bytes = b"") -> Deferred[None]:
        async def run() -> None:
            await self._command(command, data)

        return self._op(run)

    def disable_device(self) -> Deferred[None]:
        """DISABLEDEVICE: nobody can punch until ENABLEDEVICE."""
        return self._simple(Cmd.DISABLEDEVICE)

    def enable_device(self) -> Deferred[None]:
        return self._simple(Cmd.ENABLEDEVICE)

    def refresh_data(self) -> Deferred[None]:
        """REFRESHDATA: the device reloads users and templates."""
        return self._simple(Cmd.REFRESHDATA)

    def unlock(self, seconds: float = 3) -> Deferred[None]:
        """UNLOCK: open the door for ``seconds``."""
        return self._simple(Cmd.UNLOCK, codec.encode_unlock(seconds))

    def clear_attendance(self) -> Deferred[None]:
        """CLEAR_ATTLOG: empty the attendance log."""
        return self._simple(Cmd.CLEAR_ATTLOG)

    def clear_data(self) -> Deferred[None]:
        """CLEAR_DATA: erase users, templates and the attendance log."""
        return self._simple(Cmd.CLEAR_DATA)

    def delete_user(self, uid: int) -> Deferred[None]:
        """DELETE_USER for the slot ``uid``."""
        return self._simple(Cmd.DELETE_USER, codec.encode_delete_user(uid))

    def write_user(
        self, user: DeviceUser, uid: int, record_size: int | None = None
    ) -> Deferred[None]:
        """USER_WRQ: store ``user`` in slot ``uid`` in the device's layout (``record_size``,
        else :attr:`user_size`, else 28 as pyzk).  Bad fields raise codec.FieldError."""
        size = record_size or self.user_size or 28
        return self._simple(
            Cmd.USER_WRQ, codec.encode_user_wrq(user, size, uid, encoding=self.encoding)
        )

    def start_enroll(self, user_id: str, finger: int) -> Deferred[None]:
        """CANCELCAPTURE, then STARTENROLL: the terminal asks the user for the finger."""
        payload = codec.encode_start_enroll(user_id, finger, transport=self.transport_kind)

        async def run() -> None:
            try:
                await self._command(Cmd.CANCELCAPTURE)
            except CommandFailed:
                pass
            await self._command(Cmd.STARTENROLL, payload)

        return self._op(run)

    def read_templates(self) -> Deferred[list[codec.Template]]:
        """Every fingerprint template (DB_RRQ, fct FINGERTMP); none read when the sizes
        report no fingerprints."""

        async def run() -> list[codec.Template]:
            sizes = await self._read_sizes()
            if sizes.fingers <= 0:
                return []
            return codec.parse_templates(await self._read_buffer(Cmd.DB_RRQ, codec.Fct.FINGERTMP))

        return self._op(run)

    def write_user_templates(
        self,
        user: DeviceUser,
        uid: int,
        templates: list[tuple[int, bytes]],
        record_size: int | None = None,
    ) -> Deferred[None]:
        """Store a user and its (finger, template) pairs in one go: the buffer upload
        (FREE_DATA, PREPARE_DATA ``<I size>``, DATA pieces of 1024 bytes), then command 110."""
        size = record_size or self.user_size or 28
        buffer = codec.encode_user_templates(user, size, uid, templates, encoding=self.encoding)

        async def run() -> None:
            await self._command(Cmd.FREE_DATA)
            await self._command(Cmd.PREPARE_DATA, codec.encode_prepare_upload(len(buffer)))
            for piece in codec.upload_chunks(buffer):
                await self._command(Cmd.DATA, piece)
            await self._command(codec.SAVE_USER_TEMPLATES, codec.encode_save_user_templates())

        return self._op(run)

    def restart(self) -> Deferred[None]:
        """RESTART: the device reboots and drops the link.  Fires once it answered or the
        link went (a reply is not required); the session is closed afterwards."""

        async def run() -> None:
            closed = self.notify_closed()
            sent = self.request(Cmd.RESTART)
            try:
                (reply,) = await sent
            except ZKError:
                return  # the link went first: the restart is under way
            if reply.command not in _OK_REPLIES:
                raise CommandFailed(Cmd.RESTART, reply.command)
            if not self.closed:
                self.abort(SessionClosed(f"{self.peer} restarting"))
            await closed

        return self._op(run)


# ---------------------------------------------------------------------- transports


class ZKClientProtocol(ZKSession, Protocol):
    """The session over TCP (each packet in one frame, written in one call)."""

    transport: ITCPTransport  # (set by connectionMade: every method runs after it)

    def __init__(
        self,
        clock: IReactorTime,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        on_event: EventCallback | None = None,
        peer: str = "",
        max_frame: int = codec.MAX_FRAME_LENGTH,
    ) -> None:
        ZKSession.__init__(self, clock, timeout=timeout, on_event=on_event, peer=peer)
        self._deframer = codec.TcpDeframer(max_frame)

    def connectionMade(self) -> None:  # noqa: N802
        if not self.peer:
            addr = self.transport.getPeer()
            self.peer = f"{getattr(addr, 'host', '?')}:{getattr(addr, 'port', '?')}"

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        try:
            packets = self._deframer.feed(data)
        except FrameError as e:
            log.warn(
                "ZK device {peer}: bad framing ({error}); closing", peer=self.peer, error=str(e)
            )
            self._fail(ProtocolError(f"{self.peer}: {e}", str(e)))
            self.transport.abortConnection()
            return
        for p in packets:
            if self.closed:
                return
            self._packet_received(p)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802
        self._session_lost(reason)

    def _write_packet(self, p: Packet) -> None:
        self.transport.write(codec.encode_tcp(p))

    def _close_transport(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()


class ZKDatagramProtocol(ZKSession, DatagramProtocol):
    """The session over UDP: each datagram is one packet; DATA arrives in 1024-byte pieces."""

    max_chunk = codec.UDP_MAX_CHUNK

    def __init__(
        self,
        clock: IReactorTime,
        host: str,
        port: int,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        on_event: EventCallback | None = None,
    ) -> None:
        ZKSession.__init__(self, clock, timeout=timeout, on_event=on_event, peer=f"{host}:{port}")
        self.transport_kind = "udp"
        self.host = host
        self.port = port
        self.started: Deferred[None] = Deferred()

    def startProtocol(self) -> None:  # noqa: N802
        assert self.transport is not None  # the reactor starts a listening protocol
        self.transport.connect(self.host, self.port)
        self.started.callback(None)

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802
        try:
            p = codec.decode_packet(data)
        except CodecError as e:
            log.warn(
                "ZK device {peer}: bad datagram ({error}); closing", peer=self.peer, error=str(e)
            )
            self.abort(ProtocolError(f"{self.peer}: {e}", str(e)))
            return
        self._packet_received(p)

    def connectionRefused(self) -> None:  # noqa: N802
        refused = SessionClosed(f"{self.peer} refused the datagram (port closed)")
        refused.__cause__ = net_error.ConnectionRefusedError()
        self.abort(refused)

    def stopProtocol(self) -> None:  # noqa: N802
        if self.closed:
            return
        # Not closed by us: on Linux the reactor closes a connected UDP socket when an ICMP
        # error arrives (port unreachable), before connectionRefused could be called.
        refused = SessionClosed(f"{self.peer} refused the datagram (ICMP error)")
        refused.__cause__ = net_error.ConnectionRefusedError()
        self._session_lost(refused)

    def _write_packet(self, p: Packet) -> None:
        if self.transport is not None:
            self.transport.write(codec.encode_packet(p), None)  # connected: no address

    def _close_transport(self) -> None:
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.stopListening()


class _SessionFactory(Factory):
    def __init__(self, make: Callable[[], ZKClientProtocol]) -> None:
        self.make = make

    def buildProtocol(self, addr: Any) -> ZKClientProtocol:  # noqa: N802
        proto = self.make()
        proto.factory = self
        return proto


async def _resolve(reactor: Any, host: str) -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        return await reactor.resolve(host)


def open_session(
    reactor: Any,
    host: str,
    port: int = 4370,
    *,
    transport: str = "tcp",
    timeout: float = DEFAULT_TIMEOUT,
    on_event: EventCallback | None = None,
) -> Deferred[ZKSession]:
    """Open a TCP connection (or a connected UDP socket) to a device; not yet CONNECTed."""
    peer = f"{host}:{port}"

    async def run() -> ZKSession:
        if transport == "udp":
            address = await _resolve(reactor, host)
            udp = ZKDatagramProtocol(reactor, address, port, timeout=timeout, on_event=on_event)
            udp.peer = peer
            reactor.listenUDP(0, udp)
            await udp.started
            return udp
        endpoint = HostnameEndpoint(reactor, host.encode("idna"), port, timeout=timeout)
        factory = _SessionFactory(
            lambda: ZKClientProtocol(reactor, timeout=timeout, on_event=on_event, peer=peer)
        )
        try:
            session = await endpoint.connect(factory)
        except Exception as e:
            closed = SessionClosed(f"cannot connect to {peer}: {e}")
            closed.seconds = timeout
            raise closed from e
        assert isinstance(session, ZKClientProtocol)  # what _SessionFactory builds
        return session

    return Deferred.fromCoroutine(run())
