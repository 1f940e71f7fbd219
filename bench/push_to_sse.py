"""Benchmark: push ATTLOG uploads -> commit -> SSE fan-out, against a real server process.

Run by hand (pytest never collects bench/):

    python bench/push_to_sse.py                       # both backends, default sizes
    python bench/push_to_sse.py --backends postgres --punches 20000 --duration 5
    python bench/push_to_sse.py --profile /tmp/prof   # server under cProfile (slower!)

For each backend a fresh ``twistd -n zkserver`` is started from this source tree
(``--auto-approve``, fresh --data-dir, ``--token``; PostgreSQL in a fresh schema of
ZKSERVER_BENCH_POSTGRES, default postgresql://postgres@127.0.0.1:5432/test), then:

(a) ingest throughput: ``--sse-a`` SSE clients, ``--uploaders`` concurrent uploaders POST
    ``--batch``-line ATTLOG batches (unique punches, a handful of serial numbers) until
    ``--punches`` are in. ``--terminals N`` models N terminals instead: N serial numbers,
    one uploader each, every uploader posting only its own terminal's batches one after
    another (as a terminal does: the next batch after the previous ``OK``). Reports
    punches/s ingested (first POST to the last ``OK``) and delivered (to the moment every
    SSE client holds every punch), and checks that each client got every punch exactly
    once.
(b) latency: ``--clients`` SSE clients, ``--rate`` punches/s for ``--duration`` s, one
    punch per upload.  Reports POST-to-SSE-receipt latency over all (punch, client) pairs
    and the POST round trip.  Send and receipt are stamped with time.perf_counter() in
    this process (uploader and readers share one reactor: client-side delays count).

Server RSS (VmRSS) and CPU seconds (utime+stime) are read from /proc after each phase,
with the clients still connected; PostgreSQL backends' CPU and this client process's CPU
are shown too, since all of them share the same cores.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable
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
    percentile,
    postgres_cpu,
    postgres_cpu_since,
    run_backends,
    self_cpu_s,
    table,
)

# The first (top-level) user_id of an event's data; the stream is ?type=attendance only.
USER_ID = re.compile(r'"user_id": ?"([^"]*)"')
# The same, straight from complete frames (phase (a): no per-event parser objects). The
# attendance payload's first fields, as this server writes them (compact JSON, in this
# order); a server writing another form gives no matches, which the exactly-once check
# reports.
FRAME_USER_ID = re.compile(
    rb'data: \{"type":"attendance","device_id":"[^"]*","device_name":"[^"]*",'
    rb'"serial_number":"[^"]*","user_id":"([^"]*)"'
)
RETRY = re.compile(rb"^retry: ?[0-9]+$", re.M)
now = time.perf_counter


# --------------------------------------------------------------------------- SSE reader


def sse_protocol_class() -> Any:
    from twisted.internet.defer import Deferred
    from twisted.internet.protocol import Protocol

    from zkserver.eventsource import EventStreamParser, ServerSentEvent

    class SSEReader(Protocol):
        """A minimal raw-TCP SSE client: one GET; the body goes through the shared
        parser (zkserver.eventsource); only each event's user_id is picked out (a regex,
        no JSON parsing). Without ``stamp`` (phase (a): ten readers of ~10,000 events/s
        each, on the cores the server uses) the events are not parsed one by one: one
        regex picks the user_id of every complete frame (``data: {...}`` lines of this
        server, LF line ends): ~0.6 us an event instead of ~4.5."""

        def __init__(self, path: str, token: str, stamp: bool) -> None:
            self.path = path
            self.token = token
            self.stamp = stamp
            self.buf = b""
            self.tail = b""  # an incomplete frame (without stamp)
            self.headers_done = False
            self.status = 0
            self.chunks = Dechunker()
            self.parser = EventStreamParser()
            self.ready: Deferred[None] = Deferred()
            self.lost: Deferred[None] = Deferred()
            self.pins: list[bytes] = []
            self.times: list[float] = []
            self.waiting_for = 0
            self.on_complete: Callable[[], None] | None = None

        def connectionMade(self) -> None:
            self.transport.write(
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n".encode()
            )

        def dataReceived(self, data: bytes) -> None:
            t = now()
            if not self.headers_done:
                buf = self.buf + data
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    self.buf = buf
                    return
                self.status = int(buf.split(b" ", 2)[1])
                self.headers_done = True
                self.buf = b""
                data = buf[end + 4 :]
                if self.status != 200:
                    self.ready.errback(RuntimeError(f"SSE status {self.status}"))
                    return
            if self.stamp:
                items = self.parser.feed(self.chunks.feed(data))
                if not self.ready.called and self.parser.retry is not None:
                    self.ready.callback(None)
                pins = [
                    m.group(1).encode()
                    for item in items
                    if isinstance(item, ServerSentEvent) and (m := USER_ID.search(item.data))
                ]
            else:
                body = self.tail + self.chunks.feed(data)
                end = body.rfind(b"\n\n")
                if end < 0:
                    self.tail = body
                    return
                frames, self.tail = body[: end + 2], body[end + 2 :]
                if not self.ready.called and RETRY.search(frames):
                    self.ready.callback(None)
                pins = FRAME_USER_ID.findall(frames)
            if pins:
                self.pins.extend(pins)
                if self.stamp:
                    self.times.extend([t] * len(pins))
                if self.waiting_for and len(self.pins) >= self.waiting_for:
                    self.waiting_for = 0
                    if self.on_complete is not None:
                        self.on_complete()

        def connectionLost(self, reason: Any = None) -> None:
            if not self.ready.called:
                self.ready.errback(RuntimeError(f"SSE connection lost: {reason}"))
            self.lost.callback(None)

    return SSEReader


async def open_clients(server: ServerProcess, n: int, stamp: bool) -> list[Any]:
    from twisted.internet import reactor
    from twisted.internet.defer import gatherResults
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    cls = sse_protocol_class()
    clients = [cls("/devices/events?type=attendance", server.token, stamp) for _ in range(n)]
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.web_port, timeout=10)
    for i in range(0, n, 50):  # don't overflow the listen backlog
        batch = clients[i : i + 50]
        await gatherResults([connectProtocol(endpoint, c) for c in batch])
        await gatherResults([c.ready for c in batch])
    return clients


async def close_clients(clients: list[Any]) -> None:
    from twisted.internet.defer import gatherResults

    for c in clients:
        if c.transport is not None:
            c.transport.loseConnection()
    await gatherResults([c.lost for c in clients])


async def wait_all(clients: list[Any], count: int, timeout: float) -> float | None:
    """Wait until every client holds ``count`` punches; returns the time the last one did
    (perf_counter), or None on timeout."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    done: Deferred[None] = Deferred()
    state = {"left": 0, "last": 0.0}

    def one_complete() -> None:
        state["left"] -= 1
        state["last"] = max(state["last"], now())
        if state["left"] == 0 and not done.called:
            done.callback(None)

    for c in clients:
        if len(c.pins) >= count:
            state["last"] = max(state["last"], c.times[count - 1] if c.times else now())
        else:
            state["left"] += 1
            c.waiting_for = count
            c.on_complete = one_complete
    if state["left"] == 0:
        return state["last"]
    timer = reactor.callLater(timeout, lambda: done.called or done.callback(None))
    await done
    if timer.active():
        timer.cancel()
    for c in clients:
        c.waiting_for = 0
        c.on_complete = None
    return state["last"] if state["left"] == 0 else None


# --------------------------------------------------------------------------- uploads


def attlog(pins: range, prefix: str) -> bytes:
    """One ATTLOG body: a unique PIN per line, timestamps a second apart, on the 28 days
    before yesterday: recent, as a terminal's are (fixed dates would in time become
    "suspect": more than --max-past days old, which takes another path in the server)."""
    import datetime as dt

    yesterday = dt.date.today() - dt.timedelta(days=1)
    lines = []
    for i in pins:
        s = i % 86400
        day = yesterday - dt.timedelta(days=(i // 86400) % 28)
        lines.append(
            f"{prefix}{i}\t{day} {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}\t0\t1\t0\t0\t0"
        )
    return ("\n".join(lines) + "\n").encode()


class Uploader:
    def __init__(self, server: ServerProcess, serials: list[str]) -> None:
        import treq
        from twisted.internet import reactor
        from twisted.web.client import HTTPConnectionPool

        self.treq = treq
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 256
        self.pool.retryAutomatically = False
        self.server = server
        self.serials = serials

    async def handshake(self) -> None:
        for sn in self.serials:
            r = await self.treq.get(
                f"{self.server.push_url}/iclock/cdata?SN={sn}&options=all&pushver=2.4.1",
                pool=self.pool,
            )
            text = await r.text()
            if r.code != 200:
                raise RuntimeError(f"handshake {sn}: {r.code} {text}")

    async def post(self, sn: str, body: bytes) -> str:
        r = await self.treq.post(
            f"{self.server.push_url}/iclock/cdata?SN={sn}&table=ATTLOG&Stamp=9999",
            data=body,
            headers={"Content-Type": "text/plain"},
            pool=self.pool,
        )
        text = await r.text()
        if r.code != 200 or not text.startswith("OK"):
            raise RuntimeError(f"upload {sn}: {r.code} {text!r}")
        return text

    async def close(self) -> None:
        await self.pool.closeCachedConnections()


# --------------------------------------------------------------------------- phases


def stats_row(server: ServerProcess, before: dict[str, Any]) -> dict[str, Any]:
    rss, cpu = server.stats()
    return {
        "rss": rss,
        "cpu": cpu,
        "cpu_delta": cpu - before["cpu"],
        "pg_cpu_delta": postgres_cpu_since(before["pg"]),
        "load": loadavg(),
        "client_cpu_delta": self_cpu_s() - before["client"],
    }


def marks(server: ServerProcess) -> dict[str, Any]:
    return {"cpu": server.stats()[1], "pg": postgres_cpu(), "client": self_cpu_s()}


async def phase_throughput(
    server: ServerProcess, args: argparse.Namespace, up: Uploader
) -> dict[str, Any]:
    from twisted.internet.defer import Deferred, gatherResults

    clients = await open_clients(server, args.sse_a, stamp=False)
    n, size = args.punches, args.batch
    batches = [
        (up.serials[k % len(up.serials)], attlog(range(i, min(i + size, n)), "1"))
        for k, i in enumerate(range(0, n, size))
    ]
    before = marks(server)  # after building the bodies: CPU of the uploads alone
    errors: list[str] = []
    last_ok = [0.0]

    async def worker(queue: Any) -> None:
        for sn, body in queue:
            try:
                await up.post(sn, body)
                last_ok[0] = now()
            except Exception as e:
                errors.append(str(e))

    if args.terminals:  # one uploader per terminal, each posting its own batches in turn
        queues = [iter([b for b in batches if b[0] == sn]) for sn in up.serials]
    else:  # any uploader posts the next batch, whatever its serial number
        shared = iter(batches)
        queues = [shared] * args.uploaders
    start = now()
    await gatherResults([Deferred.fromCoroutine(worker(q)) for q in queues])
    ingest_s = last_ok[0] - start
    delivered_at = await wait_all(clients, n, timeout=max(30.0, n / 500))
    result: dict[str, Any] = {
        "punches": n,
        "errors": len(errors),
        "ingest_s": ingest_s,
        "ingest_rate": n / ingest_s if ingest_s > 0 else float("nan"),
        "deliver_s": (delivered_at - start) if delivered_at else float("nan"),
        "deliver_rate": n / (delivered_at - start) if delivered_at else float("nan"),
    }
    expected = {f"1{i}".encode() for i in range(n)}
    exact = sum(1 for c in clients if len(c.pins) == n and set(c.pins) == expected)
    result["exactly_once"] = f"{exact}/{len(clients)}"
    result["received_min"] = min(len(c.pins) for c in clients)
    result.update(stats_row(server, before))
    if errors:
        result["first_error"] = errors[0][:200]
    await close_clients(clients)
    return result


async def phase_latency(
    server: ServerProcess, args: argparse.Namespace, up: Uploader
) -> dict[str, Any]:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, gatherResults
    from twisted.internet.task import LoopingCall, deferLater

    clients = await open_clients(server, args.clients, stamp=True)
    await deferLater(reactor, 0.5, lambda: None)
    before = marks(server)
    total = int(args.rate * args.duration)
    sent: list[float] = [0.0] * total
    rtts: list[float] = []
    errors: list[str] = []
    pending: list[Deferred[None]] = []
    state = {"next": 0}

    async def one(i: int) -> None:
        sn = up.serials[i % len(up.serials)]
        body = attlog(range(i, i + 1), "9")
        t0 = now()
        sent[i] = t0
        try:
            await up.post(sn, body)
            rtts.append(now() - t0)
        except Exception as e:
            errors.append(str(e))

    def tick(count: int) -> None:
        for _ in range(count):
            i = state["next"]
            if i >= total:
                if loop.running:
                    loop.stop()
                return
            state["next"] = i + 1
            pending.append(Deferred.fromCoroutine(one(i)))

    loop = LoopingCall.withCount(tick)
    await loop.start(1.0 / args.rate, now=True)
    await gatherResults(pending)
    await wait_all(clients, total, timeout=15.0)
    latencies: list[float] = []
    missing = 0
    for c in clients:
        got = dict(zip(c.pins, c.times, strict=False))
        for i in range(total):
            t = got.get(f"9{i}".encode())
            if t is None:
                missing += 1
            else:
                latencies.append((t - sent[i]) * 1000)
    latencies.sort()
    rtts_ms = sorted(r * 1000 for r in rtts)
    dupes = sum(len(c.pins) - len(set(c.pins)) for c in clients)
    result: dict[str, Any] = {
        "punches": total,
        "pairs": len(latencies),
        "missing": missing,
        "dupes": dupes,
        "errors": len(errors),
        "lat_p50": percentile(latencies, 50),
        "lat_p99": percentile(latencies, 99),
        "lat_max": latencies[-1] if latencies else float("nan"),
        "rtt_p50": percentile(rtts_ms, 50),
        "rtt_p99": percentile(rtts_ms, 99),
    }
    result.update(stats_row(server, before))
    await close_clients(clients)
    return result


# --------------------------------------------------------------------------- driver


async def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    out: dict[str, Any] = {"backend": backend}
    with tempfile.TemporaryDirectory(prefix="zkbench-db-") as tmp, database(backend, tmp) as db:
        profile = None
        if args.profile:
            os.makedirs(args.profile, exist_ok=True)
            profile = os.path.join(os.path.abspath(args.profile), f"server-{backend}.pstats")
        gc_log = None
        if args.gc_log:
            os.makedirs(args.gc_log, exist_ok=True)
            gc_log = os.path.join(os.path.abspath(args.gc_log), f"gc-{backend}.log")
        server = ServerProcess(db, profile=profile, gc_log=gc_log)
        server.start()
        try:
            server.wait_healthy()
            rss0, cpu0 = server.stats()
            out["rss_idle"] = rss0
            up = Uploader(server, [f"BENCH{k:04d}" for k in range(args.serials)])
            await up.handshake()
            if "a" in args.phases:
                print(f"[{backend}] server pid {server.pid} up; phase (a) ...", file=sys.stderr)
                with PySpy(args.py_spy, server.pid, f"{backend}-a") as spy:
                    out["a"] = await phase_throughput(server, args, up)
                out["a"].update(spy.summary)
            if "b" in args.phases:
                print(f"[{backend}] phase (b) ...", file=sys.stderr)
                with PySpy(args.py_spy, server.pid, f"{backend}-b") as spy:
                    out["b"] = await phase_latency(server, args, up)
                out["b"].update(spy.summary)
            await up.close()
        finally:
            server.stop()
            out["log"] = server.log_path
            if profile:
                out["profile"] = profile
    return out


ROWS_A = [
    ("punches", "punches"),
    ("upload errors", "errors"),
    ("ingest s (to last OK)", "ingest_s"),
    ("ingested punches/s", "ingest_rate"),
    ("delivered s (all clients)", "deliver_s"),
    ("delivered punches/s", "deliver_rate"),
    ("clients got each once", "exactly_once"),
    ("min punches at a client", "received_min"),
    ("server RSS MB", "rss"),
    ("server CPU s (phase)", "cpu_delta"),
    ("postgres CPU s (phase)", "pg_cpu_delta"),
    ("bench client CPU s (phase)", "client_cpu_delta"),
    ("load average after", "load"),
]
ROWS_B = [
    ("punches (1 per POST)", "punches"),
    ("(punch, client) pairs", "pairs"),
    ("missing pairs", "missing"),
    ("duplicates", "dupes"),
    ("upload errors", "errors"),
    ("POST->SSE p50 ms", "lat_p50"),
    ("POST->SSE p99 ms", "lat_p99"),
    ("POST->SSE max ms", "lat_max"),
    ("POST round trip p50 ms", "rtt_p50"),
    ("POST round trip p99 ms", "rtt_p99"),
    ("server RSS MB", "rss"),
    ("server CPU s (phase)", "cpu_delta"),
    ("postgres CPU s (phase)", "pg_cpu_delta"),
    ("bench client CPU s (phase)", "client_cpu_delta"),
    ("load average after", "load"),
]


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    names = [r["backend"] for r in results]
    print()
    print("zkserver push -> SSE benchmark")
    for line in machine_facts():
        print("  " + line)
    print()
    if "a" in args.phases:
        who = (
            f"{args.terminals} terminals (one uploader each)"
            if args.terminals
            else f"{args.uploaders} uploaders, {args.serials} serial numbers"
        )
        print(
            f"(a) ingest throughput: {args.sse_a} SSE clients, {who}, "
            f"{args.batch}-line ATTLOG batches"
        )
        print(
            table(
                ["metric", *names],
                [[label, *(r["a"].get(key, "") for r in results)] for label, key in ROWS_A],
            )
        )
        print()
    if "b" in args.phases:
        print(
            f"(b) latency: {args.clients} SSE clients, {args.rate:g} punches/s for "
            f"{args.duration:g} s, one punch per POST"
        )
        print(
            table(
                ["metric", *names],
                [[label, *(r["b"].get(key, "") for r in results)] for label, key in ROWS_B],
            )
        )
        print()
    print(table(["", *names], [["server RSS MB at start", *(r["rss_idle"] for r in results)]]))
    print()
    print(
        "targets (issue 10, 2 cores): >= 15,000 punches/s ingested on PostgreSQL with"
        " 10 terminals, 100-line batches, 10 SSE clients; "
        "POST->SSE p99 <= 20 ms"
    )
    for r in results:
        for phase in [p for p in ("a", "b") if p in r]:
            if "first_error" in r[phase]:
                print(f"  {r['backend']} ({phase}) first error: {r[phase]['first_error']}")
        for phase in [p for p in ("a", "b") if p in r]:
            if "py_spy" in r[phase]:
                print(f"  {r['backend']} ({phase}) py-spy stacks: {r[phase]['py_spy']}")
        if "profile" in r:
            print(f"  {r['backend']}: server profile in {r['profile']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--punches", type=int, default=50_000, help="(a) punches to upload")
    p.add_argument("--batch", type=int, default=100, help="(a) ATTLOG lines per POST")
    p.add_argument("--uploaders", type=int, default=8, help="(a) concurrent uploaders")
    p.add_argument("--sse-a", type=int, default=10, help="(a) SSE clients")
    p.add_argument("--serials", type=int, default=4, help="push serial numbers used")
    p.add_argument(
        "--terminals",
        type=int,
        default=0,
        metavar="N",
        help="(a) N terminals: N serial numbers, one uploader each posting only its own"
        " batches in turn (sets --serials and --uploaders to N)",
    )
    p.add_argument("--phases", default="ab", help="phases to run: a, b or ab (default)")
    p.add_argument("--clients", type=int, default=100, help="(b) SSE clients")
    p.add_argument("--rate", type=float, default=100.0, help="(b) punches per second")
    p.add_argument("--duration", type=float, default=10.0, help="(b) seconds")
    p.add_argument("--backends", default="sqlite,postgres", help="comma-separated")
    p.add_argument(
        "--py-spy",
        default=None,
        metavar="DIR",
        help="sample the server with py-spy during each phase (raw stacks in DIR)",
    )
    p.add_argument(
        "--gc-log",
        default=None,
        metavar="DIR",
        help="log the server's garbage-collector passes (generation 2, or > 5 ms)"
        " with their durations in DIR/gc-BACKEND.log",
    )
    p.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="run the server under cProfile (twistd --profile); pstats in DIR",
    )
    args = p.parse_args(argv)
    if args.terminals:
        args.serials = args.uploaders = args.terminals
    return args


def main() -> None:
    run_backends(parse_args(), run_backend, report)


if __name__ == "__main__":
    main()
