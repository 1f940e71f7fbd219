"""Benchmark: the SSE stream at scale (thousands of dashboards on one server).

Run by hand (pytest never collects bench/):

    python bench/sse_fanout.py                                  # 1,000/5,000/10,000, both DBs
    python bench/sse_fanout.py --clients 1000 --backends sqlite --duration 10
    python bench/sse_fanout.py --server-arg=--workers --server-arg=2 --backends postgres

For each backend a fresh ``twistd -n zkserver`` is started from this source tree (as in
bench/push_to_sse.py); the SSE readers run in ``--per-reader``-sized groups in separate
processes (plain non-blocking sockets and epoll, no JSON parsing), each raising its
RLIMIT_NOFILE. For each client count:

- connect: all readers start connecting at once; the time until every stream has its
  first bytes (``retry:``), and the server's RSS growth per connected client;
- one event to all: ``--single`` punches one second apart, each one POST; latency from
  the POST to its receipt at the first and the last client, and p50/p99/max over all
  (punch, client) pairs;
- sustained: ``--rates`` punches/s (one punch per POST) for ``--duration`` s each;
  POST-to-receipt p50/p99/max over all pairs, missing/duplicate/out-of-order counts, the
  number of clients the server dropped, and the server's CPU (utime+stime from /proc) per
  delivered event.

Each receipt has two stamps. **Arrival** is the kernel's receive time of the bytes at the
client's socket (``SO_TIMESTAMPNS``, read with ``recvmsg``; for a read that takes several
segments, the last one's time, so an earlier event can only look later): when the server's
bytes reached the client, whatever the reader process was doing then. **Wake** is when
``epoll_wait`` returned the socket as readable in the reader, before it parses anything:
it adds the time these co-located readers wait for a core and for their turn in their own
loop. Dashboards on other machines see the first; both are printed.
Every figure is printed with the load average when it was taken: this machine is shared,
and the readers compete with the server for the same cores. Times come from
``time.perf_counter()`` (CLOCK_MONOTONIC, the same clock in every process); a reader turns
the kernel's CLOCK_REALTIME stamps into it with an offset it measures once at start.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from array import array
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # zkserver from this tree

from _common import (  # noqa: E402
    Dechunker,
    PySpy,
    ServerProcess,
    database,
    loadavg,
    machine_facts,
    postgres_cpu,
    postgres_cpu_since,
    proc_cpu_s,
    table,
)

from zkserver.eventsource import EventStreamParser, ServerSentEvent  # noqa: E402

now = time.perf_counter
# The first (top-level) user_id of an event's data; the stream is ?type=attendance only.
USER_ID = re.compile(r'"user_id": ?"(\d+)"')
BUCKET_MS = 0.1
#: setsockopt option for nanosecond receive stamps (asm-generic/socket.h), and room for the
#: one ``struct timespec`` control message it adds to a read.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
ANC_SIZE = socket.CMSG_SPACE(16)
TIMESPEC = struct.Struct("@qq")


def realtime_offset() -> float:
    """CLOCK_REALTIME minus perf_counter (CLOCK_MONOTONIC), from the tightest of 20 reads."""
    best = (math.inf, 0.0)
    for _ in range(20):
        a = now()
        r = time.time()
        b = now()
        best = min(best, (b - a, r - (a + b) / 2))
    return best[1]


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft
    return hard


# --------------------------------------------------------------------------- reader process


class Conn:
    """One stream. Until its ``retry:`` line arrives, the HTTP head is skipped and the
    chunked body goes through the shared parser (zkserver.eventsource, the one every client
    of this repository uses); from then on :func:`scan` reads the event ids and PINs."""

    __slots__ = ("sock", "head", "chunks", "parser", "up", "last_id", "index", "tail")

    def __init__(self, sock: socket.socket, index: int) -> None:
        self.sock = sock
        self.head: bytes | None = b""  # the response head until its blank line, then None
        self.chunks = Dechunker()
        self.parser = EventStreamParser()
        self.up = False
        self.last_id = 0
        self.index = index
        self.tail = b""  # bytes after the last complete event (a split read)


#: One complete attendance event in the raw (chunk-framed) stream: its id and first PIN.
#: The server writes whole events into each HTTP chunk, so chunk headers only ever sit
#: between events (``\n\n\r\n<hex>\r\nid: ...``), never inside one.
EVENT = re.compile(rb'id: (\d+)\ndata: [^\n]*?"user_id": ?"(\d+)"[^\n]*\n\n')


def scan(tail: bytes, data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """(id, PIN) of every complete event in ``tail + data``, and the incomplete rest.

    A regular-expression pass in C per read instead of the chunk decoder and SSE parser
    in Python per event: at 10,000 streams the readers share this machine's two cores
    with the server, and what they spend per event is taken from the server."""
    buf = tail + data if tail else data
    end = buf.rfind(b"\n\n")
    if end < 0:
        return [], buf
    return EVENT.findall(buf, 0, end + 2), buf[end + 2 :]


def reader_main(args: argparse.Namespace) -> None:
    raise_nofile()
    out = sys.stdout
    poller = select.epoll()
    request = (
        f"GET /devices/events?type=attendance HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {args.token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    conns: list[Conn] = []
    by_fd: dict[int, Conn] = {}
    connecting: set[int] = set()
    times: dict[int, array[float]] = {}  # arrival stamps, per PIN per stream
    wakes: dict[int, array[float]] = {}  # wake stamps, the same shape
    offset = realtime_offset()
    received: dict[int, int] = {}  # streams that have each PIN
    state = {"up": 0, "t_last": 0.0, "dupes": 0, "disorder": 0, "closed": 0}
    stdin = sys.stdin.buffer
    os.set_blocking(stdin.fileno(), False)
    stdin_fd = stdin.fileno()
    poller.register(stdin_fd, select.EPOLLIN)
    pending = b""

    def say(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    def got(c: Conn, event_id: int, pin: int, t: float, woke: float) -> None:
        if event_id <= c.last_id:
            state["disorder"] += 1
        c.last_id = event_id
        slots = times.get(pin)
        if slots is None:
            slots = times[pin] = array("d", bytes(8 * len(conns)))
            wakes[pin] = array("d", bytes(8 * len(conns)))
        if slots[c.index]:
            state["dupes"] += 1
        else:
            slots[c.index] = t
            wakes[pin][c.index] = woke
            received[pin] = received.get(pin, 0) + 1

    def closed(c: Conn) -> None:
        fd = c.sock.fileno()
        poller.unregister(fd)
        by_fd.pop(fd, None)
        c.sock.close()
        state["closed"] += 1

    # One receive buffer for every stream: recv(262144) would allocate (and, being above
    # malloc's mmap threshold, map and unmap) 256 KB per call.
    buffer = bytearray(262144)
    view = memoryview(buffer)

    def on_data(c: Conn, woke: float) -> None:
        t = woke
        try:
            n, anc, _flags, _addr = c.sock.recvmsg_into([buffer], ANC_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n, anc = 0, []
        for level, kind, stamp in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, ns = TIMESPEC.unpack_from(stamp)
                t = sec + ns * 1e-9 - offset
        data = bytes(view[:n])
        if not data:
            closed(c)
            return
        if c.up:  # the hot path
            found, c.tail = scan(c.tail, data)
            for event_id, pin in found:
                got(c, int(event_id), int(pin), t, woke)
            return
        if c.head is not None:
            head = c.head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                c.head = head
                return
            if not head.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")):
                status = head.split(b"\r\n", 1)[0].decode("latin-1")
                print(f"reader: stream refused: {status}", file=sys.stderr)
                closed(c)  # a refused stream (503 while starting, 401...) never opens
                return
            c.head, data = None, head[end + 4 :]
        items = c.parser.feed(c.chunks.feed(data))
        if c.parser.retry is not None:
            c.up = True
            state["up"] += 1
            state["t_last"] = t
        for item in items:
            if not isinstance(item, ServerSentEvent):
                continue  # a comment (the server's ping)
            m = USER_ID.search(item.data)
            if m is not None:
                got(c, int(item.id), int(m.group(1)), t, woke)

    def connect_all() -> float:
        t0 = now()
        for i in range(args.count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.connect_ex(("127.0.0.1", args.port))
            c = Conn(s, i)
            conns.append(c)
            by_fd[s.fileno()] = c
            connecting.add(s.fileno())
            poller.register(s.fileno(), select.EPOLLOUT)
        return t0

    def latencies(stamps: dict[int, array[float]], sent: dict[str, float]) -> dict[str, Any]:
        hist: dict[int, int] = {}
        firsts: dict[str, float] = {}
        lasts: dict[str, float] = {}
        missing = 0
        for pin_s, t_sent in sent.items():
            slots = stamps.get(int(pin_s))
            if slots is None:
                missing += len(conns)
                continue
            lo, hi = math.inf, 0.0
            for t in slots:
                if not t:
                    missing += 1
                    continue
                ms = max(0.0, (t - t_sent) * 1000)
                lo = min(lo, ms)
                hi = max(hi, ms)
                b = int(ms / BUCKET_MS)
                hist[b] = hist.get(b, 0) + 1
            firsts[pin_s] = lo
            lasts[pin_s] = hi
        return {"hist": hist, "first": firsts, "last": lasts, "missing": missing}

    def report(cmd: dict[str, Any]) -> None:
        sent: dict[str, float] = cmd["sent"]
        say(
            {
                **latencies(times, sent),
                "wake": latencies(wakes, sent),
                "dupes": state["dupes"],
                "disorder": state["disorder"],
                "closed": state["closed"],
            }
        )

    def complete(pins: list[int]) -> bool:
        live = args.count - state["closed"]
        return all(received.get(pin, 0) >= live for pin in pins)

    say({"ready": True, "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]})
    waiting: dict[str, Any] | None = None
    t0 = 0.0
    while True:
        ready = poller.poll(0.05)
        t = now()  # when the kernel had these bytes for us (parsing them comes after)
        for fd, _mask in ready:
            if fd == stdin_fd:
                chunk = stdin.read()
                if chunk is None:
                    continue
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    cmd = json.loads(line)
                    if cmd["cmd"] == "connect":
                        t0 = connect_all()
                    elif cmd["cmd"] == "report":
                        waiting = cmd
                        waiting["deadline"] = now() + cmd.get("timeout", 30)
                    elif cmd["cmd"] == "quit":
                        for c in conns:
                            c.sock.close()
                        return
                continue
            c = by_fd.get(fd)
            if c is None:
                continue
            if fd in connecting:
                connecting.discard(fd)
                try:
                    c.sock.send(request)
                except OSError:
                    closed(c)
                    continue
                poller.modify(fd, select.EPOLLIN)
            else:
                on_data(c, t)
        if ready and args.nap:
            # Let more streams become readable before the next epoll_wait: one wake-up
            # per batch instead of one per stream. Receipts are stamped when epoll_wait
            # returns, so this can only make a latency look longer (by up to the nap).
            time.sleep(args.nap)
        if t0 and state["up"] + state["closed"] >= args.count:
            say({"connected": state["up"], "t0": t0, "t_last": state["t_last"]})
            t0 = 0.0
        if waiting is not None:
            pins = [int(p) for p in waiting["sent"]]
            if complete(pins) or now() > waiting["deadline"]:
                report(waiting)
                waiting = None


# --------------------------------------------------------------------------- parent


class Reader:
    def __init__(self, server: ServerProcess, count: int, nap: float) -> None:
        self.count = count
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--reader",
                "--port",
                str(server.web_port),
                "--token",
                server.token,
                "--count",
                str(count),
                "--nap",
                str(nap),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.lines: list[dict[str, Any]] = []

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a reader process exited")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.send({"cmd": "quit"})
        except OSError:
            pass
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Poster:
    """POSTs one-punch ATTLOG uploads on schedule from a few threads (keep-alive)."""

    def __init__(self, server: ServerProcess, serial: str, threads: int = 4) -> None:
        self.server = server
        self.serial = serial
        self.lock = threading.Lock()
        self.errors = 0
        self.rtts: list[float] = []
        self.local = threading.local()
        self.threads = threads

    def _conn(self) -> Any:
        import http.client

        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(
                "127.0.0.1", self.server.push_port, timeout=30
            )
        return conn

    def post(self, pin: int) -> float:
        # The terminal's clock reading now (its local time is this machine's): a real-time
        # punch, as a terminal uploads one. A fixed old date would be "suspect" (over
        # --max-past days old), a slower path than a real punch's.
        when = time.strftime("%Y-%m-%d %H:%M:%S")
        body = f"{pin}\t{when}\t0\t1\t0\t0\t0".encode()
        t0 = now()
        try:
            conn = self._conn()
            conn.request("POST", f"/iclock/cdata?SN={self.serial}&table=ATTLOG", body)
            reply = conn.getresponse().read()
            if reply != b"OK: 1":
                raise RuntimeError(reply)
        except Exception:
            self.local.conn = None
            with self.lock:
                self.errors += 1
        with self.lock:
            self.rtts.append(now() - t0)
        return t0

    def run(self, pins: list[int], rate: float) -> dict[str, float]:
        """POST ``pins`` at ``rate`` per second; returns pin -> send time."""
        import queue

        jobs: queue.Queue[int | None] = queue.Queue()
        sent: dict[str, float] = {}

        def worker() -> None:
            while (pin := jobs.get()) is not None:
                sent[str(pin)] = self.post(pin)

        workers = [threading.Thread(target=worker) for _ in range(self.threads)]
        for w in workers:
            w.start()
        start = now()
        for k, pin in enumerate(pins):
            delay = start + k / rate - now()
            if delay > 0:
                time.sleep(delay)
            jobs.put(pin)
        for _ in workers:
            jobs.put(None)
        for w in workers:
            w.join()
        return sent


def api_stats(server: ServerProcess) -> dict[str, Any]:
    req = urllib.request.Request(
        server.web_url + "/api/stats", headers={"Authorization": f"Bearer {server.token}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def percentile_hist(hist: dict[int, int], p: float) -> float:
    total = sum(hist.values())
    if not total:
        return float("nan")
    rank = max(1, math.ceil(total * p / 100))
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return (b + 1) * BUCKET_MS
    return float("nan")


def merge(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """One latency summary from the readers' histograms and first/last maps."""
    hist: dict[int, int] = {}
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for rep in reps:
        for b, n in rep["hist"].items():
            hist[int(b)] = hist.get(int(b), 0) + n
        for pin, ms in rep["first"].items():
            first[pin] = min(first.get(pin, math.inf), ms)
        for pin, ms in rep["last"].items():
            last[pin] = max(last.get(pin, 0.0), ms)
    return {
        "pairs": sum(hist.values()),
        "p50": percentile_hist(hist, 50),
        "p99": percentile_hist(hist, 99),
        "max": (max(hist) + 1) * BUCKET_MS if hist else float("nan"),
        "first_ms": max(first.values()) if first else float("nan"),
        "last_ms": max(last.values()) if last else float("nan"),
        # each event's last client, in punch order: one slow event stands out
        "last_each": [round(last[pin]) for pin in sorted(last, key=int)],
    }


def collect(readers: list[Reader], sent: dict[str, float], timeout: float) -> dict[str, Any]:
    """Arrival latencies (the kernel's stamps) at the top level, wake latencies under
    ``"wake"``, and the loss/order counts summed over the readers."""
    for r in readers:
        r.send({"cmd": "report", "sent": sent, "timeout": timeout})
    reps = [r.read() for r in readers]
    totals = {k: sum(rep[k] for rep in reps) for k in ("missing", "dupes", "disorder", "closed")}
    return {**merge(reps), "wake": merge([rep["wake"] for rep in reps]), **totals}


def server_clients(server: ServerProcess) -> int:
    """Streams the server holds. With ``--workers`` /api/stats answers for whichever
    process accepted that request alone: count the web port's connections per process."""
    if server.workers > 1:
        return sum(server.clients_by_process())
    return int(api_stats(server)["clients"])


def server_cpu(server: ServerProcess) -> float:
    return server.stats()[1]  # summed over the processes (--workers)


def readers_cpu(readers: list[Reader]) -> float:
    return sum(proc_cpu_s(r.proc.pid) for r in readers)


def server_rss(server: ServerProcess) -> float:
    return server.stats()[0]


def run_clients(server: ServerProcess, n: int, args: argparse.Namespace, pin_base: int) -> dict:
    out: dict[str, Any] = {"clients": n}
    groups = [args.per_reader] * (n // args.per_reader)
    if n % args.per_reader:
        groups.append(n % args.per_reader)
    readers = [Reader(server, g, args.nap) for g in groups]
    try:
        for r in readers:
            r.read()  # ready
        rss0 = server_rss(server)
        with PySpy(args.py_spy, server.pid, f"fanout-{n}-connect"):
            for r in readers:
                r.send({"cmd": "connect"})
            ups = [r.read() for r in readers]
        out["connected"] = sum(u["connected"] for u in ups)
        out["connect_s"] = max(u["t_last"] for u in ups) - min(u["t0"] for u in ups)
        out["connect_load"] = loadavg()
        out["split"] = server.clients_by_process()
        time.sleep(2)
        out["rss_per_client_kb"] = (server_rss(server) - rss0) * 1024 / n
        out["rss_mb"] = server_rss(server)
        poster = Poster(server, args.serial)
        pin = pin_base
        # one event to all, --single times, one second apart
        singles = {}
        for _ in range(args.single):
            singles.update(poster.run([pin], 1.0))
            pin += 1
            time.sleep(1.0)
        out["single"] = collect(readers, singles, 30)
        out["single"]["load"] = loadavg()
        for rate in args.rates:
            seconds = args.rate_seconds.get(rate, args.duration)
            pins = list(range(pin, pin + int(rate * seconds)))
            pin += len(pins)
            cpu0, pg0, t0 = server_cpu(server), postgres_cpu(), now()
            rcpu0 = readers_cpu(readers)
            dropped0 = server_clients(server)
            with PySpy(args.py_spy, server.pid, f"fanout-{n}-{rate:g}"):
                sent = poster.run(pins, rate)
            res = collect(readers, sent, 30)
            cpu = server_cpu(server) - cpu0
            res["server_cpu_s"] = cpu
            res["pg_cpu_s"] = postgres_cpu_since(pg0)
            res["us_per_delivery"] = cpu * 1e6 / max(1, res["pairs"])
            res["reader_us_per_delivery"] = (
                (readers_cpu(readers) - rcpu0) * 1e6 / max(1, res["pairs"])
            )
            res["seconds"] = now() - t0
            res["dropped"] = dropped0 - server_clients(server)
            res["load"] = loadavg()
            res["post_errors"] = poster.errors
            out[f"rate{rate:g}"] = res
            print(
                f"    {n} clients, {rate:g}/s: p50 {res['p50']:.1f} p99 {res['p99']:.1f} "
                f"max {res['max']:.1f} ms (at wake p99 {res['wake']['p99']:.1f}), "
                f"{res['us_per_delivery']:.2f} us/delivery, "
                f"missing {res['missing']}, load {res['load']}",
                file=sys.stderr,
            )
    finally:
        for r in readers:
            r.close()
    deadline = now() + 30
    while now() < deadline and server_clients(server) > 0:
        time.sleep(0.2)
    return out


class FloorProcess(ServerProcess):
    """bench/_floor.py in place of zkserver: the same endpoints, no database, no framework."""

    def __init__(self) -> None:
        super().__init__("none")
        self.args = [
            sys.executable,
            str(Path(__file__).resolve().parent / "_floor.py"),
            "--push-port",
            str(self.push_port),
            "--web-port",
            str(self.web_port),
        ]


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    import contextlib
    import tempfile

    result: dict[str, Any] = {"backend": backend, "runs": []}
    floor = backend == "floor"
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="zkbench-db-"))
        db = "" if floor else stack.enter_context(database(backend, tmp))
        gc_log = None
        if args.gc_log and not floor:
            os.makedirs(args.gc_log, exist_ok=True)
            gc_log = os.path.join(os.path.abspath(args.gc_log), f"gc-fanout-{backend}.log")
        server = (
            FloorProcess()
            if floor
            else ServerProcess(
                db, extra=["--sse-buffer", str(args.sse_buffer), *args.server_arg], gc_log=gc_log
            )
        )
        server.start()
        try:
            server.wait_healthy()
            result["rss_idle"] = server_rss(server)
            Poster(server, args.serial).post(1)  # the device is created (auto-approve)
            for k, n in enumerate(args.clients):
                print(f"[{backend}] {n} clients ...", file=sys.stderr)
                result["runs"].append(run_clients(server, n, args, 1_000_000 * (k + 1)))
        finally:
            server.stop()
            try:
                log = Path(server.log_path).read_text(errors="replace")
                result["log_drops"] = log.count("Dropping")
                result["log_errors"] = log.count("Traceback")
            except OSError:
                pass
            print(f"[{backend}] server log: {server.log_path}", file=sys.stderr)
    return result


ROWS = [
    ("connected", lambda r: r["connected"]),
    ("connect s (all streams open)", lambda r: r["connect_s"]),
    ("  load average", lambda r: r["connect_load"]),
    ("clients per server process", lambda r: " / ".join(str(n) for n in r["split"])),
    ("server RSS KB per client", lambda r: r["rss_per_client_kb"]),
    ("server RSS MB", lambda r: r["rss_mb"]),
    ("one event to all (arrival): first client ms (worst)", lambda r: r["single"]["first_ms"]),
    ("one event to all: last client ms (worst)", lambda r: r["single"]["last_ms"]),
    (
        "  each event's last client ms",
        lambda r: " ".join(str(v) for v in r["single"]["last_each"]),
    ),
    (
        "one event to all: p50 / p99 ms",
        lambda r: f"{r['single']['p50']:.1f} / {r['single']['p99']:.1f}",
    ),
    (
        "  at wake: first / last client, p50 / p99 ms",
        lambda r: "{first_ms:.0f} / {last_ms:.0f}, {p50:.1f} / {p99:.1f}".format(
            **r["single"]["wake"]
        ),
    ),
    ("  load average", lambda r: r["single"]["load"]),
]


def rate_rows(rate: float) -> list[tuple[str, Any]]:
    key = f"rate{rate:g}"
    return [
        (
            f"{rate:g}/s (arrival): p50 / p99 / max ms",
            lambda r: f"{r[key]['p50']:.1f} / {r[key]['p99']:.1f} / {r[key]['max']:.0f}",
        ),
        (
            "  at wake: p50 / p99 / max ms",
            lambda r: "{p50:.1f} / {p99:.1f} / {max:.0f}".format(**r[key]["wake"]),
        ),
        (
            f"{rate:g}/s: missing / dup / disorder / dropped",
            lambda r: " / ".join(
                str(r[key][k]) for k in ("missing", "dupes", "disorder", "dropped")
            ),
        ),
        (f"{rate:g}/s: server CPU us per delivery", lambda r: r[key]["us_per_delivery"]),
        (
            f"{rate:g}/s: readers' CPU us per delivery",
            lambda r: r[key]["reader_us_per_delivery"],
        ),
        (f"{rate:g}/s: postgres CPU s", lambda r: r[key]["pg_cpu_s"]),
        ("  load average", lambda r: r[key]["load"]),
    ]


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print("zkserver SSE fan-out benchmark")
    for line in machine_facts():
        print("  " + line)
    print(
        f"  readers: {args.per_reader} connections per process, nap {args.nap * 1000:g} ms; "
        f"{args.single} single events; "
        f"rates {args.rates} punches/s for {args.duration:g} s each (overrides: "
        f"{args.rate_seconds or 'none'}); server args "
        f"{args.server_arg or 'none'}"
    )
    rows = ROWS + [row for rate in args.rates for row in rate_rows(rate)]
    for k, n in enumerate(args.clients):
        print()
        print(f"{n} clients")
        body = []
        for label, get in rows:
            cells = []
            for res in results:
                try:
                    value = get(res["runs"][k])
                except (KeyError, IndexError):
                    value = ""
                cells.append(f"{value:.2f}" if isinstance(value, float) else str(value))
            body.append([label, *cells])
        print(table(["metric", *(r["backend"] for r in results)], body))
    print()
    print(
        "targets (issue): 10,000 clients connected < 3 s, <= 12 KB RSS each, one event to all "
        "p99 <= 100 ms, 20/s p99 <= 200 ms; <= 6 us server CPU per delivery; "
        "1,000 clients at 20/s p99 <= 10 ms"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--token", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument(
        "--nap",
        type=float,
        default=0.0005,
        help="seconds a reader sleeps after a busy epoll_wait, to take streams in batches "
        "(receipts can only be stamped later by it, never earlier); 0: never",
    )
    p.add_argument("--clients", default="1000,5000,10000", help="client counts, comma-separated")
    p.add_argument("--per-reader", type=int, default=2500, help="connections per reader process")
    p.add_argument(
        "--rates",
        default="1,5,20",
        help="punches/s, comma-separated; RATE:SECONDS overrides"
        " --duration for one rate (1,5,20:60)",
    )
    p.add_argument("--duration", type=float, default=20.0, help="seconds per rate")
    p.add_argument("--single", type=int, default=5, help="one-event-to-all samples")
    p.add_argument(
        "--backends",
        default="sqlite,postgres,floor",
        help="comma-separated: sqlite, postgres, floor (bench/_floor.py: no database, "
        "no framework, one send per stream; what this machine allows)",
    )
    p.add_argument("--serial", default="FANOUT001")
    p.add_argument("--sse-buffer", type=int, default=1 << 20)
    p.add_argument("--server-arg", action="append", default=[], help="extra server option")
    p.add_argument("--py-spy", default=None, metavar="DIR", help="sample the server (rates)")
    p.add_argument("--gc-log", default=None, metavar="DIR", help="log the server's GC passes")
    args = p.parse_args(argv)
    if not args.reader:
        args.clients = [int(x) for x in str(args.clients).split(",") if x.strip()]
        # "1,5,20:60": 20 punches/s for 60 s, the others for --duration
        args.rate_seconds = {}
        rates = []
        for item in str(args.rates).split(","):
            if not item.strip():
                continue
            rate, _, seconds = item.partition(":")
            rates.append(float(rate))
            if seconds:
                args.rate_seconds[float(rate)] = float(seconds)
        args.rates = rates
    return args


def main() -> None:
    args = parse_args()
    if args.reader:
        reader_main(args)
        return
    print(f"RLIMIT_NOFILE raised to {raise_nofile()}", file=sys.stderr)
    results = [run_backend(b.strip(), args) for b in args.backends.split(",") if b.strip()]
    report(results, args)


if __name__ == "__main__":
    main()
