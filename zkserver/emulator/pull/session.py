"""One client session of the emulated terminal: the request/reply state machine, the same
for TCP connections and UDP peers."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol as _Interface

from twisted.logger import Logger

from zkserver.emulator.pull.device import PullDevice
from zkserver.pull.codec import (
    SAVE_USER_TEMPLATES,
    UDP_DATA_SIZE,
    USER_RECORD_SIZES,
    Cmd,
    CodecError,
    EventFlag,
    Fct,
    Packet,
    Reply,
    check_commkey,
    encode_free_sizes,
    encode_option_reply,
    encode_prepare_buffer_ack,
    encode_prepare_data,
    encode_tcp,
    encode_version,
    pack_time,
    parse_delete_user,
    parse_option_request,
    parse_prepare_buffer,
    parse_prepare_data,
    parse_read_chunk,
    parse_reg_event,
    parse_start_enroll,
    parse_unlock,
    parse_user_record,
    parse_user_templates,
    unpack_time,
)

__all__ = ["Link", "Session"]

log = Logger(namespace="zkserver.emulator.pull")

# --------------------------------------------------------------------------- sessions


class Link(_Interface):
    """What a :class:`Session` needs from its transport."""

    def send(self, packet: Packet) -> None: ...

    def send_raw(self, data: bytes) -> None: ...

    def close(self) -> None: ...


_ALWAYS_OK = {Cmd.CANCELCAPTURE, Cmd.STARTVERIFY, Cmd.REFRESHOPTION}
_NO_AUTH = {Cmd.CONNECT, Cmd.AUTH, Cmd.EXIT}


class Session:
    """One client session: the request/reply state machine, independent of the transport."""

    def __init__(self, device: PullDevice, link: Link, transport: str = "tcp") -> None:
        self.device = device
        self.link = link
        self.transport = transport
        self.session_id = 0
        self.connected = False
        self.authed = False
        self.flags = EventFlag(0)
        self.buffer: bytes | None = None
        self.chunks_sent = 0
        #: A buffer the client is uploading (PREPARE_DATA, DATA...), and its announced size.
        self.upload: bytearray | None = None
        self.upload_size = 0
        self.closed = False
        self._events: deque[Packet] = deque()
        self._awaiting_ack = False

    # ----------------------------------------------------------------- input

    def handle(self, p: Packet) -> None:
        """Answer one client packet."""
        if self.closed or self.device.faults.mute:
            return
        cmd = p.command
        if cmd == Reply.ACK_OK:  # the client's event ACK: never answered
            self._event_acked()
            return
        forced = self.device.faults.replies.get(cmd)
        if forced is not None:  # fault: an unexpected reply code to this command
            self._reply(p, forced)
            return
        if cmd == Cmd.CONNECT:
            self._connect(p)
            return
        if not self.connected or (not self.authed and cmd not in _NO_AUTH):
            self._reply(p, Reply.ACK_UNAUTH)
            return
        self.device.commands.append(cmd)
        handler = self._handlers.get(cmd)
        if handler is None:
            if cmd in _ALWAYS_OK:
                self._reply(p, Reply.ACK_OK)
            else:
                log.debug("unknown command {cmd} from {sid}", cmd=cmd, sid=self.session_id)
                self._reply(p, Reply.ACK_UNKNOWN)
            return
        try:
            handler(self, p)
        except CodecError as e:
            log.debug("bad command {cmd}: {e}", cmd=cmd, e=e)
            self._reply(p, Reply.ACK_ERROR)

    def lost(self) -> None:
        """The transport is gone: forget the session."""
        self.closed = True
        self._events.clear()
        self.device.sessions.discard(self)

    # ----------------------------------------------------------------- output

    def _reply(self, p: Packet, code: int, data: bytes = b"") -> None:
        self.link.send(Packet(code, self.session_id, p.reply_id, data))

    def _close(self) -> None:
        self.lost()
        self.link.close()

    def queue_event(self, code: int, data: bytes) -> None:
        """Send an event now, or after the client has ACKed the previous one."""
        self._events.append(Packet(Cmd.REG_EVENT, code, 0, data))
        self._pump()

    def _pump(self) -> None:
        coalesce = self.device.faults.coalesce
        while self._events and not self.closed and (coalesce or not self._awaiting_ack):
            self._awaiting_ack = True
            self.link.send(self._events.popleft())

    def _event_acked(self) -> None:
        if self._awaiting_ack:
            self._awaiting_ack = False
            self._pump()

    # ----------------------------------------------------------------- commands

    def _connect(self, p: Packet) -> None:
        dev = self.device
        self.session_id = dev.new_session_id()
        self.connected = True
        self.authed = not dev.comm_key
        self.flags = EventFlag(0)
        self.buffer = None
        dev.sessions.add(self)
        log.info(
            "{transport} session {sid} connected{auth}",
            transport=self.transport,
            sid=self.session_id,
            auth="" if self.authed else " (auth required)",
        )
        self._reply(p, Reply.ACK_OK if self.authed else Reply.ACK_UNAUTH)

    def _auth(self, p: Packet) -> None:
        key = self.device.comm_key
        if not key or check_commkey(p.data, key, self.session_id):
            self.authed = True
            self._reply(p, Reply.ACK_OK)
        else:
            log.info("session {sid}: wrong comm key", sid=self.session_id)
            self._reply(p, Reply.ACK_UNAUTH)

    def _exit(self, p: Packet) -> None:
        self._reply(p, Reply.ACK_OK)
        log.info("session {sid} exit", sid=self.session_id)
        self._close()

    def _restart(self, p: Packet) -> None:
        self._reply(p, Reply.ACK_OK)
        log.info("session {sid}: restart", sid=self.session_id)
        self._close()
        self.device.restart()

    def _enable(self, p: Packet) -> None:
        self.device.enabled = p.command == Cmd.ENABLEDEVICE
        if not self.device.enabled and self.device.faults.disable_drops_events:
            self.flags = EventFlag(0)
        self._reply(p, Reply.ACK_OK)

    def _refresh(self, p: Packet) -> None:
        self.device.refreshes += 1
        self._reply(p, Reply.ACK_OK)

    # ----------------------------------------------------------------- writes

    def _user_wrq(self, p: Packet) -> None:
        size = len(p.data)
        if size not in USER_RECORD_SIZES:
            self._reply(p, Reply.ACK_ERROR)
            return
        user = parse_user_record(p.data, size, self.device.encoding)
        if not user.uid:
            self._reply(p, Reply.ACK_ERROR)
            return
        self.device.upsert_user(user)
        self._reply(p, Reply.ACK_OK)

    def _delete_user(self, p: Packet) -> None:
        found = self.device.delete_user(parse_delete_user(p.data))
        self._reply(p, Reply.ACK_OK if found else Reply.ACK_ERROR)

    def _unlock(self, p: Packet) -> None:
        self.device.unlocks.append(parse_unlock(p.data))
        self._reply(p, Reply.ACK_OK)

    def _clear_data(self, p: Packet) -> None:
        self.device.clear_data()
        self._reply(p, Reply.ACK_OK)

    def _start_enroll(self, p: Packet) -> None:
        user_id, finger = parse_start_enroll(p.data)
        if self.device.uid_of(user_id) is None:
            self._reply(p, Reply.ACK_ERROR)
            return
        self.device.enrollments.append((user_id, finger))
        self._reply(p, Reply.ACK_OK)

    def _prepare_upload(self, p: Packet) -> None:
        self.upload_size = parse_prepare_data(p.data)
        self.upload = bytearray()
        self._reply(p, Reply.ACK_OK)

    def _upload_data(self, p: Packet) -> None:
        if self.upload is None or len(self.upload) + len(p.data) > self.upload_size:
            self._reply(p, Reply.ACK_ERROR)
            return
        self.upload += p.data
        self._reply(p, Reply.ACK_OK)

    def _save_user_templates(self, p: Packet) -> None:
        upload, self.upload = self.upload, None
        if upload is None or len(upload) != self.upload_size:
            self._reply(p, Reply.ACK_ERROR)
            return
        user, _size, templates = parse_user_templates(bytes(upload), self.device.encoding)
        if not user.uid:
            self._reply(p, Reply.ACK_ERROR)
            return
        self.device.upsert_user(user)
        self.device.save_templates(user.uid, templates)
        self._reply(p, Reply.ACK_OK)

    def _version(self, p: Packet) -> None:
        self._reply(p, Reply.ACK_OK, encode_version(self.device.firmware_version))

    def _options(self, p: Packet) -> None:
        key = parse_option_request(p.data)
        value = self.device.option(key)
        if value is None:
            self._reply(p, Reply.ACK_ERROR)
        else:
            self._reply(p, Reply.ACK_OK, encode_option_reply(key, value))

    def _get_time(self, p: Packet) -> None:
        self._reply(p, Reply.ACK_OK, pack_time(self.device.now()))

    def _set_time(self, p: Packet) -> None:
        self.device.set_time(unpack_time(p.data))
        self._reply(p, Reply.ACK_OK)

    def _free_sizes(self, p: Packet) -> None:
        self._reply(p, Reply.ACK_OK, encode_free_sizes(self.device.sizes()))

    def _reg_event(self, p: Packet) -> None:
        self.flags = parse_reg_event(p.data)
        log.info("session {sid}: events {flags!r}", sid=self.session_id, flags=self.flags)
        self._reply(p, Reply.ACK_OK)

    def _clear_attlog(self, p: Packet) -> None:
        self.device.records.clear()
        self._reply(p, Reply.ACK_OK)

    def _prepare_buffer(self, p: Packet) -> None:
        dev = self.device
        command, fct, _ext = parse_prepare_buffer(p.data)
        if command == Cmd.USERTEMP_RRQ and fct == Fct.USER:
            dataset = dev.users_dataset()
        elif command == Cmd.ATTLOG_RRQ:
            dataset = dev.attendance_dataset()
        elif command in (Cmd.DB_RRQ, Cmd.USERTEMP_RRQ) and fct == Fct.FINGERTMP:
            dataset = dev.templates_dataset()
        else:
            self._reply(p, Reply.ACK_ERROR)
            return
        if len(dataset) <= dev.inline_max:
            self.buffer = None
            self._reply(p, Cmd.DATA, dataset)
        else:
            self.buffer = dataset
            self.chunks_sent = 0
            self._reply(p, Reply.ACK_OK, encode_prepare_buffer_ack(len(dataset)))

    def _read_buffer(self, p: Packet) -> None:
        start, size = parse_read_chunk(p.data)
        buf = self.buffer
        if buf is None or start < 0 or size <= 0 or start >= len(buf):
            self._reply(p, Reply.ACK_ERROR)
            return
        chunk = buf[start : start + size]
        self._reply(p, Cmd.PREPARE_DATA, encode_prepare_data(len(chunk)))
        limit = self.device.faults.close_after_chunks
        if limit is not None and self.chunks_sent >= limit:
            log.info("session {sid}: fault, closing mid-transfer", sid=self.session_id)
            if self.transport == "tcp":
                self.link.send_raw(
                    encode_tcp(Packet(Cmd.DATA, self.session_id, p.reply_id, chunk))[
                        : 16 + len(chunk) // 2
                    ]
                )
            else:
                self._reply(p, Cmd.DATA, chunk[:UDP_DATA_SIZE])
            self._close()
            return
        if self.transport == "tcp":
            self._reply(p, Cmd.DATA, chunk)
        else:
            for i in range(0, len(chunk), UDP_DATA_SIZE):
                self._reply(p, Cmd.DATA, chunk[i : i + UDP_DATA_SIZE])
        self._reply(p, Reply.ACK_OK)
        self.chunks_sent += 1

    def _free_data(self, p: Packet) -> None:
        self.buffer = None
        self.upload = None
        self._reply(p, Reply.ACK_OK)

    _handlers: dict[int, Callable[[Session, Packet], None]] = {
        Cmd.AUTH: _auth,
        Cmd.EXIT: _exit,
        Cmd.RESTART: _restart,
        Cmd.ENABLEDEVICE: _enable,
        Cmd.DISABLEDEVICE: _enable,
        Cmd.GET_VERSION: _version,
        Cmd.OPTIONS_RRQ: _options,
        Cmd.GET_TIME: _get_time,
        Cmd.SET_TIME: _set_time,
        Cmd.GET_FREE_SIZES: _free_sizes,
        Cmd.REG_EVENT: _reg_event,
        Cmd.CLEAR_ATTLOG: _clear_attlog,
        Cmd.PREPARE_BUFFER: _prepare_buffer,
        Cmd.READ_BUFFER: _read_buffer,
        Cmd.FREE_DATA: _free_data,
        Cmd.REFRESHDATA: _refresh,
        Cmd.USER_WRQ: _user_wrq,
        Cmd.DELETE_USER: _delete_user,
        Cmd.UNLOCK: _unlock,
        Cmd.CLEAR_DATA: _clear_data,
        Cmd.STARTENROLL: _start_enroll,
        Cmd.PREPARE_DATA: _prepare_upload,
        Cmd.DATA: _upload_data,
        SAVE_USER_TEMPLATES: _save_user_templates,
    }
