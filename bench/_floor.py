"""The floor: the least a Python process can do to fan an event out over loopback TCP.

``bench/sse_fanout.py --backends floor`` runs this instead of zkserver, with the same
readers, the same POSTs and the same figures, to show what this machine allows: no
database, no framework, no JSON per event; one ``epoll`` loop that

- answers ``GET /devices/events`` with the same response head and ``retry:`` chunk as
  zkserver, ``GET /healthz`` and ``GET /api/stats`` (``{"clients": n}``);
- answers each ``POST /iclock/cdata`` (one ATTLOG line) ``OK: 1`` at once and builds an
  event frame of the same shape and size as zkserver's;
- fans frames out by the same sweep as zkserver's broadcaster: a cursor visits the
  streams, up to 256 per loop turn (epoll is polled between slices), and writes each
  stream, as one HTTP chunk with one ``send(2)``, every frame after the last one it has;
  frames that arrive meanwhile join the writes of streams not yet visited. A socket that
  does not take it all keeps the rest and is written when epoll says it is writable.

What zkserver adds on top of this (its database commit, twisted.web, the broadcaster's
bookkeeping) is the difference between the two columns.
"""

from __future__ import annotations

import argparse
import json
import resource
import select
import socket

HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def reply(status: str, body: bytes, content_type: str = "text/plain") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


def event_frame(event_id: int, serial: str, pin: str, when: str) -> bytes:
    data = {
        "type": "attendance",
        "device_id": 1,
        "device_name": serial,
        "serial_number": serial,
        "user_id": pin,
        "timestamp": when,
        "action": "check_in",
        "method": "fingerprint",
        "raw_data": {"pin": pin, "status": 0, "verify": 1, "workcode": "0"},
        "timestamp_utc": when.replace(" ", "T") + "Z",
        "time_ambiguous": False,
        "suspect_time": False,
    }
    text = json.dumps(data, separators=(",", ":"))
    return f"id: {event_id}\ndata: {text}\n\n".encode()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--push-port", type=int, required=True)
    p.add_argument("--web-port", type=int, required=True)
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    poller = select.epoll()
    listeners: dict[int, socket.socket] = {}
    for port in (args.push_port, args.web_port):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(4096)
        s.setblocking(False)
        listeners[s.fileno()] = s
        poller.register(s.fileno(), select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    inbuf: dict[int, bytes] = {}
    streams: dict[int, socket.socket] = {}
    outbuf: dict[int, bytes] = {}  # what a full socket has not taken yet
    frames: list[bytes] = []  # the log: frames some stream may still need, ids log_first..
    log_first = 1
    next_id = 0
    seen: dict[int, int] = {}  # stream fd -> last event id it has
    order: list[int] = []  # the sweep's visiting order (fds)
    cursor = 0
    visits_left = 0
    memo: dict[int, bytes] = {}  # last id -> bytes for a stream that has it

    def drop(fd: int) -> None:
        seen.pop(fd, None)
        s = conns.pop(fd, None) or streams.pop(fd, None)
        inbuf.pop(fd, None)
        outbuf.pop(fd, None)
        if s is not None:
            try:
                poller.unregister(fd)
            except OSError:
                pass
            s.close()

    def write(fd: int, s: socket.socket, data: bytes) -> None:
        if fd in outbuf:
            outbuf[fd] += data
            return
        try:
            sent = s.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            drop(fd)
            return
        if sent < len(data):
            outbuf[fd] = data[sent:]
            poller.modify(fd, select.EPOLLIN | select.EPOLLOUT)

    def request(fd: int, s: socket.socket, head: bytes, body: bytes) -> None:
        nonlocal next_id, visits_left
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, target = line.split(" ")[:2]
        path, _, query = target.partition("?")
        if method == "GET" and path == "/devices/events":
            conns.pop(fd)
            streams[fd] = s
            seen[fd] = next_id
            order.append(fd)
            write(fd, s, HEAD + chunk(b"retry: 3000\n\n"))
        elif method == "GET" and path == "/healthz":
            write(fd, s, reply("200 OK", b'{"status":"ok"}', "application/json"))
        elif method == "GET" and path == "/api/stats":
            body = json.dumps({"clients": len(streams)}).encode()
            write(fd, s, reply("200 OK", body, "application/json"))
        elif method == "POST" and path == "/iclock/cdata":
            serial = dict(kv.partition("=")[::2] for kv in query.split("&")).get("SN", "")
            saved = 0
            for row in body.decode().splitlines():
                fields = row.split("\t")
                if len(fields) >= 2:
                    next_id += 1
                    saved += 1
                    frames.append(event_frame(next_id, serial, fields[0], fields[1]))
            write(fd, s, reply("200 OK", f"OK: {saved}".encode()))
            if saved:
                memo.clear()
                visits_left = len(order)  # a new pass: everyone once more
        else:
            write(fd, s, reply("404 Not Found", b"not found"))

    def readable(fd: int, s: socket.socket) -> None:
        try:
            data = s.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            drop(fd)
            return
        if fd in streams:
            return  # a stream client sends nothing after its request
        buf = inbuf.get(fd, b"") + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            length = 0
            for h in head.split(b"\r\n")[1:]:
                name, _, value = h.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(buf) < end + 4 + length:
                break
            body, buf = buf[end + 4 : end + 4 + length], buf[end + 4 + length :]
            request(fd, s, head, body)
            if fd in streams:
                break
        inbuf[fd] = buf

    while True:
        for fd, mask in poller.poll(0 if visits_left else -1):
            listener = listeners.get(fd)
            if listener is not None:
                while True:
                    try:
                        c, _ = listener.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    conns[c.fileno()] = c
                    poller.register(c.fileno(), select.EPOLLIN)
                continue
            s = conns.get(fd) or streams.get(fd)
            if s is None:
                continue
            if mask & select.EPOLLOUT:
                rest = outbuf.pop(fd, b"")
                if rest:
                    poller.modify(fd, select.EPOLLIN)
                    write(fd, s, rest)
            if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                readable(fd, s)
        budget = 256  # one slice of the sweep
        while visits_left and budget:
            if cursor >= len(order):  # wrap: forget streams that left
                order[:] = [fd for fd in order if fd in seen]
                cursor = 0
                if not order:
                    visits_left = 0
                    break
                continue
            fd = order[cursor]
            cursor += 1
            visits_left -= 1
            budget -= 1
            last = seen.get(fd)
            if last is None or last >= next_id:
                continue
            data = memo.get(last)
            if data is None:
                data = memo[last] = chunk(b"".join(frames[last + 1 - log_first :]))
            seen[fd] = next_id
            write(fd, streams[fd], data)
        if not visits_left and frames:  # everyone has everything
            log_first += len(frames)
            frames.clear()
            memo.clear()


if __name__ == "__main__":
    main()
