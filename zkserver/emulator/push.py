"""A push (ADMS / iclock) terminal emulator on the Twisted reactor, using treq.

It behaves like a real terminal: handshake, upload its users, upload each punch at once
(real-time), keep every batch the server did not answer ``200 OK`` with and resend it after
``ErrorDelay``, poll ``getrequest`` every ``Delay`` seconds, run the commands it gets and post
the results to ``devicecmd``. The protocol text itself comes from :mod:`zkserver.push.iclock`.

Run ``python -m zkserver.emulator push --server http://127.0.0.1:8081 --sn SN``.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from attrs import define, field, frozen
from treq import content
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool

from zkserver.push import iclock
from zkserver.push.timezones import timezone_minutes
from zkserver.records import TIMESTAMP_FORMAT, DeviceUser, Punch

__all__ = ["PushTerminal", "RunSummary", "ServerRefused", "main"]

log = Logger()

USER_AGENT = b"iClock Proxy/1.09"
#: Terminals post form-encoded bodies (which is why the server must not use request.args).
CONTENT_TYPE = b"application/x-www-form-urlencoded"
_VERIFY_METHODS = (1, 15, 4)  # fingerprint, face, card


class ServerRefused(Exception):
    """The server did not answer ``200`` + ``OK``; a terminal keeps the data and retries."""

    def __init__(self, what: str, code: int, body: str) -> None:
        super().__init__(f"{what}: HTTP {code} {body[:200]!r}")
        self.code = code
        self.body = body


@frozen
class RunSummary:
    """What :meth:`PushTerminal.run` did."""

    generated: int
    uploaded: int
    pending: int
    commands: int
    connected: bool  # the handshake and the user upload succeeded


#: Template tables of DATA UPDATE/DELETE (docs/protocols.md §A.7).
TEMPLATE_TABLES = ("FINGERTMP", "FACE", "BIODATA", "USERPIC")


def _coro(coro: Coroutine[Any, Any, Any]) -> Deferred[Any]:
    return Deferred.fromCoroutine(coro)


@define
class PushTerminal:
    """An emulated push terminal talking to ``server`` (``http://host:port``).

    ``reactor`` provides time and TCP; ``client`` defaults to a treq client on a
    non-persistent connection pool (terminals open one connection per request).
    """

    server: str
    serial_number: str
    reactor: Any
    users: int = 10
    rate: float = 1.0
    client: HTTPClient | None = None
    push_version: str = "2.4.1"
    firmware: str = "Ver 8.0.4-zkserver-emulator"
    ip: str = "127.0.0.1"
    timeout: float = 30.0

    # Learned from the handshake.
    delay: float = 10.0
    error_delay: float = 30.0
    timezone_minutes: int | None = None
    options: dict[str, str] = field(factory=dict)

    # The terminal's memory.
    user_list: dict[str, DeviceUser] = field(factory=dict)
    attlog: list[Punch] = field(factory=list)
    pending: list[Punch] = field(factory=list)
    generated: int = 0
    uploaded: int = 0
    commands_done: list[tuple[str, str, int]] = field(factory=list)
    #: Templates: (kind, PIN, index) -> the command's key=value fields (kind is the
    #: table: FINGERTMP, FACE, BIODATA, USERPIC).
    templates: dict[tuple[str, str, str], dict[str, str]] = field(factory=dict)
    #: Commands to leave unanswered (never reported): an id, or a command's start.
    silent: set[str] = field(factory=set)
    #: Options set by SET OPTION (DateTime is also applied to the clock).
    options_set: dict[str, str] = field(factory=dict)
    clock_offset: float = 0.0  # seconds added to the reactor's time (SET OPTION DateTime)
    doors_opened: int = 0
    enrolling: tuple[str, str] | None = None
    reboots: int = 0
    reboot_seconds: float = 0.5
    rebooting: bool = False

    _pool: HTTPConnectionPool | None = field(default=None, init=False)
    _last_time: dict[str, datetime] = field(factory=dict, init=False)
    _stopping: bool = field(default=False, init=False)
    _stopped: Deferred[None] | None = field(default=None, init=False)
    _sleep: tuple[Deferred[None], IDelayedCall] | None = field(default=None, init=False)
    _flushing: Deferred[None] | None = field(default=None, init=False)
    _retry: IDelayedCall | None = field(default=None, init=False)
    _count: int | None = field(default=None, init=False)
    _connected: bool = field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        self.server = self.server.rstrip("/")
        if self.client is None:
            self._pool = HTTPConnectionPool(self.reactor, persistent=False)
            self.client = HTTPClient(Agent(self.reactor, pool=self._pool))
        if not self.user_list:
            for n in range(1, self.users + 1):
                user = DeviceUser(str(n), name=f"Emulated User {n}", group="1")
                self.user_list[user.user_id] = user

    # ------------------------------------------------------------------ HTTP

    def _url(self, path: str, **params: str) -> str:
        query = urlencode({"SN": self.serial_number, **params}, quote_via=quote)
        return f"{self.server}/iclock/{path}?{query}"

    async def _request(
        self, method: str, path: str, params: dict[str, str], body: str | None = None
    ) -> tuple[int, str]:
        assert self.client is not None
        headers: dict[bytes | str, list[bytes | str]] = {b"User-Agent": [USER_AGENT]}
        if body is not None:
            headers[b"Content-Type"] = [CONTENT_TYPE]
        response = await self.client.request(
            method,
            self._url(path, **params),
            headers=headers,
            data=body.encode() if body is not None else None,
            allow_redirects=False,  # terminals do not follow redirects
            timeout=self.timeout,
        )
        text = iclock.decode_text(await content(response))
        return response.code, text

    # ------------------------------------------------------------------ protocol steps

    def handshake(self) -> Deferred[dict[str, str]]:
        """``GET /iclock/cdata?options=all``; adopts Delay, ErrorDelay and TimeZone."""
        return _coro(self._handshake())

    async def _handshake(self) -> dict[str, str]:
        params = {
            "options": "all",
            "pushver": self.push_version,
            "language": "69",
            "DeviceType": "att",
            "PushOptionsFlag": "1",
        }
        code, text = await self._request("GET", "cdata", params)
        if code != 200:
            raise ServerRefused("handshake", code, text)
        try:
            options = iclock.parse_handshake_reply(text)
        except ValueError:
            raise ServerRefused("handshake", code, text) from None
        self.options = options
        self.delay = _positive(options.get("Delay"), self.delay)
        self.error_delay = _positive(options.get("ErrorDelay"), self.error_delay)
        tz = options.get("TimeZone", "")
        if tz.lstrip("-").isdigit():
            self.timezone_minutes = timezone_minutes(int(tz))
        log.info(
            "{serial}: handshake OK (Delay={delay}, ErrorDelay={error_delay}, TimeZone={tz})",
            serial=self.serial_number,
            delay=self.delay,
            error_delay=self.error_delay,
            tz=tz,
        )
        return options

    def upload_attlog(self, punches: Sequence[Punch]) -> Deferred[int]:
        """POST punches as ATTLOG; fires with the server's ``n``, fails with ServerRefused."""
        body = "".join(iclock.format_attlog_line(p) + "\n" for p in punches)
        return _coro(self._upload("ATTLOG", body))

    def upload_rtlog(
        self, event: int = 200, door: int = 1, pin: str = "0", when: datetime | None = None
    ) -> Deferred[int]:
        """POST one push 3.x ``table=rtlog`` line (docs/protocols.md §A.5b): by default
        event 200, door 1 opened, no user."""
        stamp = (when or self._local_now()).strftime("%Y-%m-%d %H:%M:%S")
        line = (
            f"time={stamp}\tpin={pin}\tcardno=0\teventaddr={door}\tevent={event}"
            "\tinoutstatus=0\tverifytype=0\n"
        )
        return _coro(self._upload("rtlog", line))

    def upload_users(self) -> Deferred[int]:
        """POST every user as OPERLOG ``USER`` lines."""
        body = "".join(iclock.format_user_line(u) + "\n" for u in self.user_list.values())
        return _coro(self._upload("OPERLOG", body))

    def enroll_at_keypad(
        self, user: DeviceUser, fingers: Sequence[tuple[int, bytes]] = ()
    ) -> Deferred[int]:
        """A person enrolled (or changed) at this terminal's keypad: kept in its memory
        and uploaded as OPERLOG ``USER`` and ``FP`` lines, as terminals report it."""
        self.user_list[user.user_id] = user
        lines = [iclock.format_user_line(user)]
        for finger, data in fingers:
            tmp = base64.b64encode(data).decode()
            fields = {
                "PIN": user.user_id,
                "FID": str(finger),
                "Size": str(len(tmp)),
                "Valid": "1",
                "TMP": tmp,
            }
            self.templates[("FINGERTMP", user.user_id, str(finger))] = fields
            lines.append("FP " + "\t".join(f"{k}={v}" for k, v in fields.items()))
        return _coro(self._upload("OPERLOG", "".join(line + "\n" for line in lines)))

    async def _upload(self, table: str, body: str) -> int:
        code, text = await self._request("POST", "cdata", {"table": table, "Stamp": "9999"}, body)
        n = iclock.parse_ok(text) if code == 200 else None
        if n is None:
            raise ServerRefused(f"upload {table}", code, text)
        return n

    def ping(self) -> Deferred[bool]:
        """``GET /iclock/ping``: True when the server answered 200 OK."""
        return _coro(self._ping())

    async def _ping(self) -> bool:
        code, text = await self._request("GET", "ping", {})
        return code == 200 and iclock.parse_ok(text) is not None

    def info(self) -> str:
        """The ``INFO=`` value this terminal reports on getrequest."""
        fields = [self.firmware, len(self.user_list), 0, len(self.attlog), self.ip, 10, 7, 12, 0]
        return ",".join(str(f) for f in fields) + ",111"

    def poll(self) -> Deferred[list[tuple[str, str, int]]]:
        """``GET /iclock/getrequest``, run each ``C:id:cmd``, POST results to devicecmd.

        Fires with ``(id, command, return code)`` for every command run.
        """
        return _coro(self._poll())

    async def _poll(self) -> list[tuple[str, str, int]]:
        code, text = await self._request("GET", "getrequest", {"INFO": self.info()})
        if code != 200:
            raise ServerRefused("getrequest", code, text)
        if iclock.parse_ok(text) is not None:
            return []
        done: list[tuple[str, str, int]] = []
        results: list[str] = []
        for line in iclock.split_lines(text):
            prefix, _, rest = line.partition(":")
            cmd_id, sep, command = rest.partition(":")
            if prefix != "C" or not sep:
                log.warn(
                    "{serial}: ignored reply line {line!r}", serial=self.serial_number, line=line
                )
                continue
            if cmd_id in self.silent or any(command.startswith(x) for x in self.silent):
                log.info(
                    "{serial}: leaving command {id} unanswered",
                    serial=self.serial_number,
                    id=cmd_id,
                )
                continue
            return_code, cmd_type, result = await self._execute(command)
            log.info(
                "{serial}: command {id} {command!r} -> {code}",
                serial=self.serial_number,
                id=cmd_id,
                command=command[:80],
                code=return_code,
            )
            done.append((cmd_id, command, return_code))
            results.append(iclock.format_devicecmd_result(cmd_id, return_code, cmd_type, result))
        if results:
            code, text = await self._request("POST", "devicecmd", {}, "\n".join(results) + "\n")
            if code != 200 or iclock.parse_ok(text) is None:
                raise ServerRefused("devicecmd", code, text)
        self.commands_done.extend(done)
        if any(c.strip().upper() == "REBOOT" and code == 0 for _, c, code in done):
            await self.reboot()
        return done

    async def close(self) -> None:
        """Close the HTTP connections (for a terminal driven step by step, not by run())."""
        if self._pool is not None:
            await self._pool.closeCachedConnections()

    async def reboot(self) -> None:
        """Drop every connection, stay away ``reboot_seconds``, then handshake again."""
        self.rebooting = True
        self.reboots += 1
        log.info("{serial}: rebooting", serial=self.serial_number)
        try:
            if self._pool is not None:
                await self._pool.closeCachedConnections()
            d: Deferred[None] = Deferred()
            self.reactor.callLater(self.reboot_seconds, d.callback, None)
            await d
            await self._retrying("handshake after reboot", self.handshake)
        finally:
            self.rebooting = False

    async def _execute(self, command: str) -> tuple[int, str, str]:
        """Run one command; return (return code, CMD type, result text)."""
        words = command.split(" ", 3)
        head = words[0].upper()
        if head == "DATA" and len(words) >= 3:
            return await self._data_command(words[1].upper(), words[2].upper(), command), "DATA", ""
        if head in ("CLEAR", "SET", "RELOAD") and len(words) > 1:
            cmd_type = f"{head}_{words[1].upper()}"
        else:
            cmd_type = head
        if cmd_type == "INFO":
            return 0, "INFO", self._info_result()
        if cmd_type == "CLEAR_LOG":
            self.attlog.clear()
            return 0, cmd_type, ""
        if cmd_type == "CLEAR_DATA":
            self.attlog.clear()
            self.user_list.clear()
            self.templates.clear()
            return 0, cmd_type, ""
        if cmd_type == "SET_OPTION":
            rest = command.split(" ", 2)
            key, sep, value = (rest[2] if len(rest) > 2 else "").partition("=")
            if not sep or not key:
                return -1, cmd_type, ""
            self.options_set[key] = value
            if key == "DateTime":
                if not value.isdigit():
                    return -1, cmd_type, ""
                self._set_clock(int(value))
            return 0, cmd_type, ""
        if cmd_type == "AC_UNLOCK":
            self.doors_opened += 1
            return 0, cmd_type, ""
        if cmd_type == "ENROLL_FP":
            fields = iclock.parse_key_values(command.partition(" ")[2])
            pin = fields.get("PIN", "")
            if pin not in self.user_list:
                return -10, cmd_type, ""
            self.enrolling = (pin, fields.get("FID", ""))
            return 0, cmd_type, ""
        if cmd_type in ("CHECK", "REBOOT", "RELOAD_OPTIONS", "LOG"):
            return 0, cmd_type, ""
        return -1002, cmd_type, ""

    def _set_clock(self, zk_seconds: int) -> None:
        """SET OPTION DateTime=<ZK time>: the terminal's local clock is set to it."""
        from zkserver.pull.codec import decode_time

        wanted = decode_time(zk_seconds)
        self.clock_offset = 0.0
        self.clock_offset = (wanted - self._local_now()).total_seconds()

    async def _data_command(self, verb: str, table: str, command: str) -> int:
        args = command.split(" ", 3)[3] if command.count(" ") >= 3 else ""
        if table == "USERINFO" and verb == "UPDATE":
            try:
                user = iclock.parse_user_fields(args)
            except ValueError:
                return -1
            self.user_list[user.user_id] = user
            return 0
        if table == "USERINFO" and verb == "DELETE":
            pin = iclock.parse_key_values(args).get("PIN", "")
            if self.user_list.pop(pin, None) is None:
                return -10
            for key in [k for k in self.templates if k[1] == pin]:
                del self.templates[key]
            return 0
        if table == "USERINFO" and verb == "QUERY":
            pin = iclock.parse_key_values(args).get("PIN", "")
            users = [u for u in self.user_list.values() if not pin or u.user_id == pin]
            if pin and not users:
                return -10
            lines = [iclock.format_user_line(u) for u in users]
            lines += [
                f"{'FP' if kind == 'FINGERTMP' else kind} "
                + "\t".join(f"{k}={v}" for k, v in fields.items())
                for (kind, who, _), fields in self.templates.items()
                if who in {u.user_id for u in users}
            ]
            try:
                await self._upload("OPERLOG", "".join(line + "\n" for line in lines))
            except Exception:
                log.failure("{serial}: user query upload failed", serial=self.serial_number)
                return -3
            return 0
        if table in TEMPLATE_TABLES and verb == "UPDATE":
            return self._template_update(table, args)
        if table in TEMPLATE_TABLES and verb == "DELETE":
            fields = iclock.parse_key_values(args)
            key = (table, fields.get("PIN", ""), fields.get("FID", ""))
            return 0 if self.templates.pop(key, None) is not None else -10
        if table == "ATTLOG" and verb == "QUERY":
            fields = iclock.parse_key_values(args)
            start = fields.get("StartTime", "")
            end = fields.get("EndTime", "9999")
            found = [p for p in self.attlog if start <= p.timestamp <= end]
            if found:
                try:
                    await self.upload_attlog(found)
                except Exception:
                    log.failure("{serial}: query re-upload failed", serial=self.serial_number)
                    return -3
            return 0
        return -1002

    def _template_update(self, table: str, args: str) -> int:
        """DATA UPDATE FINGERTMP/FACE/BIODATA/USERPIC: Size= must be the data's length
        (else -1), the user must exist (else -10)."""
        fields = iclock.parse_key_values(args)
        pin = fields.get("PIN", fields.get("Pin", ""))
        data_key = {"FINGERTMP": "TMP", "FACE": "TMP", "BIODATA": "Tmp", "USERPIC": "Content"}[
            table
        ]
        data = fields.get(data_key, "")
        if not data:
            return -1
        if table != "BIODATA" and fields.get("Size", "") != str(len(data)):
            return -1
        if pin not in self.user_list:
            return -10
        index = fields.get("FID", fields.get("No", ""))
        self.templates[(table, pin, index)] = fields
        return 0

    def _info_result(self) -> str:
        return "\n".join(
            [
                f"~SerialNumber={self.serial_number}",
                f"FirmVer={self.firmware}",
                f"UserCount={len(self.user_list)}",
                f"TransactionCount={len(self.attlog)}",
                f"IPAddress={self.ip}",
            ]
        )

    # ------------------------------------------------------------------ punches

    def _local_now(self) -> datetime:
        now = datetime.fromtimestamp(self.reactor.seconds() + self.clock_offset, UTC)
        if self.timezone_minutes is None:
            return now.astimezone().replace(tzinfo=None)
        return (now + timedelta(minutes=self.timezone_minutes)).replace(tzinfo=None)

    def make_punch(self) -> Punch:
        """A new punch for the next user (unique per user and second), added to the log."""
        users = list(self.user_list) or ["1"]
        pin = users[self.generated % len(users)]
        moment = self._local_now().replace(microsecond=0)
        last = self._last_time.get(pin)
        if last is not None and moment <= last:
            moment = last + timedelta(seconds=1)
        self._last_time[pin] = moment
        turn = self.generated // len(users)
        punch = Punch(
            user_id=pin,
            timestamp=moment.strftime(TIMESTAMP_FORMAT),
            status=turn % 2,
            verify=_VERIFY_METHODS[turn % len(_VERIFY_METHODS)],
            workcode="0",
        )
        self.generated += 1
        self.attlog.append(punch)
        return punch

    # ------------------------------------------------------------------ run loop

    def run(self, count: int | None = None, duration: float | None = None) -> Deferred[RunSummary]:
        """Handshake, upload users, punch at ``rate``/s and poll every Delay, until stopped.

        Stops after ``count`` punches were generated *and* acknowledged, after ``duration``
        seconds, or on :meth:`stop`. Fires with a :class:`RunSummary`.
        """
        return _coro(self._run(count, duration))

    def stop(self) -> None:
        """Ask :meth:`run` to finish: stop punching and polling, try a last upload."""
        if self._stopping:
            return
        self._stopping = True
        if self._sleep is not None:
            d, call = self._sleep
            self._sleep = None
            if call.active():
                call.cancel()
            d.callback(None)
        # Resume run() from a fresh stack, never from inside an upload callback.
        self.reactor.callLater(0, self._fire_stopped)

    def _fire_stopped(self) -> None:
        if self._stopped is not None and not self._stopped.called:
            self._stopped.callback(None)

    async def _pause(self, seconds: float) -> None:
        d: Deferred[None] = Deferred()
        call = self.reactor.callLater(seconds, d.callback, None)
        self._sleep = (d, call)
        try:
            await d
        finally:
            self._sleep = None

    async def _retrying(self, what: str, step: Any) -> bool:
        """Run ``step()`` until it succeeds (True) or the terminal stops (False)."""
        while not self._stopping:
            try:
                await step()
                return True
            except Exception as e:
                log.warn(
                    "{serial}: {what} failed ({error}); retrying in {delay}s",
                    serial=self.serial_number,
                    what=what,
                    error=e,
                    delay=self.error_delay,
                )
                await self._pause(self.error_delay)
        return False

    async def _run(self, count: int | None, duration: float | None) -> RunSummary:
        self._stopping = False
        self._stopped = Deferred()
        self._count = count
        deadline = self.reactor.callLater(duration, self.stop) if duration else None
        loops: list[tuple[LoopingCall, Deferred[Any]]] = []
        try:
            if await self._retrying("handshake", self.handshake) and await self._retrying(
                "user upload", self.upload_users
            ):
                self._connected = True
                log.info(
                    "{serial}: uploaded {n} users; punching at {rate}/s",
                    serial=self.serial_number,
                    n=len(self.user_list),
                    rate=self.rate,
                )
                for work, interval in (
                    (self._tick, 1.0 / self.rate),
                    (self._poll_logged, self.delay),
                ):
                    loop = LoopingCall(work)
                    loop.clock = self.reactor
                    loops.append((loop, loop.start(interval, now=True)))
                await self._stopped
        finally:
            await self._shut_down(loops, deadline)
        summary = self._summary()
        log.info(
            "{serial}: stopped; {generated} punches made, {uploaded} uploaded, "
            "{pending} not acknowledged",
            serial=self.serial_number,
            generated=summary.generated,
            uploaded=summary.uploaded,
            pending=summary.pending,
        )
        return summary

    async def _shut_down(
        self, loops: list[tuple[LoopingCall, Deferred[Any]]], deadline: IDelayedCall | None
    ) -> None:
        """Stop the loops and timers, wait for requests in flight, try a last upload."""
        self._stopping = True
        for loop, _ in loops:
            if loop.running:
                loop.stop()
        for call in (deadline, self._retry):
            if call is not None and call.active():
                call.cancel()
        self._retry = None
        # A stopped LoopingCall's deferred fires once its current call has finished.
        for _, finished in loops:
            try:
                await finished
            except Exception:
                log.failure("{serial}: loop crashed", serial=self.serial_number)
        if self._flushing is not None:
            await self._flushing
        if self.pending and self._connected:
            await self._flush(final=True)
        if self._pool is not None:
            await self._pool.closeCachedConnections()

    def _summary(self) -> RunSummary:
        return RunSummary(
            self.generated,
            self.uploaded,
            len(self.pending),
            len(self.commands_done),
            self._connected,
        )

    def _tick(self) -> None:
        if self._count is None or self.generated < self._count:
            punch = self.make_punch()
            self.pending.append(punch)
            log.debug("{serial}: punch {punch}", serial=self.serial_number, punch=punch)
        self._kick()

    def _kick(self) -> None:
        """Start an upload of the pending queue unless one runs or we are backing off."""
        if self._flushing is not None or self._retry is not None:
            return
        if not self.pending:
            if self._count is not None and self.generated >= self._count:
                self.stop()
            return
        d = _coro(self._flush())
        d.addErrback(
            lambda f: log.failure("{serial}: upload crashed", f, serial=self.serial_number)
        )
        if not d.called:
            self._flushing = d

    async def _flush(self, final: bool = False) -> None:
        batch = list(self.pending)
        try:
            n = await self.upload_attlog(batch)
        except Exception as e:
            log.warn(
                "{serial}: upload of {count} punches failed ({error}); kept for resend",
                serial=self.serial_number,
                count=len(batch),
                error=e,
            )
            if not final and not self._stopping:
                self._retry = self.reactor.callLater(self.error_delay, self._retry_now)
            return
        finally:
            if not final:
                self._flushing = None
        del self.pending[: len(batch)]
        self.uploaded += len(batch)
        log.info(
            "{serial}: uploaded {count} punches (server accepted {n})",
            serial=self.serial_number,
            count=len(batch),
            n=n,
        )
        if not final and not self._stopping:
            self._kick()

    def _retry_now(self) -> None:
        self._retry = None
        self._kick()

    async def _poll_logged(self) -> None:
        try:
            await self.poll()
        except Exception as e:
            log.warn("{serial}: getrequest failed ({error})", serial=self.serial_number, error=e)


def _positive(value: str | None, default: float) -> float:
    try:
        number = float(value) if value is not None else default
    except ValueError:
        return default
    return number if number > 0 else default


# ---------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zkserver.emulator push", description="Emulate a ZKTeco push terminal."
    )
    parser.add_argument("--server", default="http://127.0.0.1:8081", help="push listener URL")
    parser.add_argument("--sn", required=True, help="serial number to report")
    parser.add_argument("--rate", type=float, default=1.0, help="punches per second")
    parser.add_argument("--users", type=int, default=10, help="number of enrolled users")
    parser.add_argument("--count", type=int, default=None, help="stop after N punches")
    parser.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the push emulator until --count/--duration or Ctrl-C."""
    from twisted.internet.task import react
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    args = _parser().parse_args(argv)
    if args.rate <= 0 or args.users <= 0:
        raise SystemExit("--rate and --users must be positive")
    # Keep the HTTP client's per-request "Starting factory" chatter out of the output.
    levels = LogLevelFilterPredicate(LogLevel.info)
    levels.setLogLevelForNamespace("twisted.web.client", LogLevel.warn)
    observer = FilteringLogObserver(textFileLogObserver(sys.stdout), [levels])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

    async def run(reactor: Any) -> None:
        terminal = PushTerminal(
            server=args.server,
            serial_number=args.sn,
            reactor=reactor,
            users=args.users,
            rate=args.rate,
        )
        done = terminal.run(count=args.count, duration=args.duration)

        def on_shutdown() -> Deferred[None]:
            # Ctrl-C: stop, and hold the reactor until the last upload attempt is over.
            terminal.stop()
            finished: Deferred[None] = Deferred()

            def release(result: object) -> object:
                finished.callback(None)
                return result

            done.addBoth(release)
            return finished

        trigger = reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
        try:
            summary = await done
        finally:
            reactor.removeSystemEventTrigger(trigger)
        if summary.pending or not summary.connected:
            raise SystemExit(1)

    react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
