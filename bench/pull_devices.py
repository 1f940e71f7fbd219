"""Benchmark: many pull (port 4370) devices held by one server; punch -> SSE; catch-up.

Run by hand (pytest never collects bench/):

    python bench/pull_devices.py                          # 500 devices, PostgreSQL
    python bench/pull_devices.py --devices 100 --rate 50 --duration 5 --records 20000
    python bench/pull_devices.py --backends sqlite,postgres

One ``twistd -n zkserver`` process (fresh data dir / PostgreSQL schema, as in
push_to_sse.py) and ``--procs`` emulator processes (bench/_pull_farm.py, each serving
devices/procs emulated terminals on consecutive loopback ports).  Devices are added with
POST /api/devices (kind pull, host 127.0.0.1, port ...); then:

(1) hold: time until GET /api/devices?kind=pull shows every device ``online``, and how many
    emulated devices have a live, event-registered session;
(2) real time: ``--rate`` punches/s in total for ``--duration`` s, spread round-robin over
    all devices; each punch has a unique user id and its time is stamped by the emulator
    process (time.perf_counter, CLOCK_MONOTONIC) when the device records it; ``--clients``
    SSE clients stamp receipt the same way; latency = receipt - punch, over all
    (punch, client) pairs;
(3) catch-up: one more device whose log holds ``--records`` records is added; time from its
    POST /api/devices until an SSE client (filtered to that device) has every record, and
    the server's own "caught up N records in X s" log line.
Server RSS (VmRSS) and CPU seconds are read from /proc after each step.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
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
from push_to_sse import close_clients, open_clients, wait_all  # noqa: E402

FARM = str(Path(__file__).resolve().parent / "_pull_farm.py")
now = time.perf_counter


def free_port_range(count: int) -> int:
    """A base port with ``count`` consecutive free loopback ports."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        socks = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


class FarmProcess:
    """One bench/_pull_farm.py process, driven over stdin/stdout."""

    def __init__(self, count: int, prefix: str, records: int = 0, users: int = 10) -> None:
        from twisted.internet import protocol, reactor
        from twisted.internet.defer import Deferred

        self.count = count
        self.prefix = prefix
        self.port_base = free_port_range(count)
        self.lines: list[str] = []
        self.waiters: list[tuple[str, Deferred[str]]] = []
        self.ended: Deferred[None] = Deferred()
        farm = self

        class Proto(protocol.ProcessProtocol):
            buf = b""

            def outReceived(self, data: bytes) -> None:
                self.buf += data
                while b"\n" in self.buf:
                    line, self.buf = self.buf.split(b"\n", 1)
                    farm._line(line.decode())

            def errReceived(self, data: bytes) -> None:
                farm.stderr = (getattr(farm, "stderr", b"") + data)[-4000:]

            def processEnded(self, reason: Any) -> None:
                if not farm.ended.called:
                    farm.ended.callback(None)

        env = dict(os.environ)
        self.proto = Proto()
        self.transport = reactor.spawnProcess(
            self.proto,
            sys.executable,
            [
                sys.executable,
                FARM,
                "--port-base",
                str(self.port_base),
                "--count",
                str(count),
                "--serial-prefix",
                prefix,
                "--records",
                str(records),
                "--users",
                str(users),
            ],
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.transport.pid

    def _line(self, line: str) -> None:
        for i, (prefix, d) in enumerate(self.waiters):
            if line.startswith(prefix):
                del self.waiters[i]
                d.callback(line)
                return
        self.lines.append(line)

    def expect(self, prefix: str) -> Any:
        from twisted.internet.defer import Deferred

        for i, line in enumerate(self.lines):
            if line.startswith(prefix):
                del self.lines[i]
                return _fired(line)
        d: Deferred[str] = Deferred()
        self.waiters.append((prefix, d))
        return d

    def send(self, text: str) -> None:
        self.transport.write(text.encode() + b"\n")

    def devices(self) -> list[tuple[str, int]]:
        return [(f"{self.prefix}{i:04d}", self.port_base + i) for i in range(self.count)]

    async def stop(self) -> None:
        if self.transport.pid is not None:
            self.send("quit")
        from twisted.internet import reactor

        timer = reactor.callLater(
            10, lambda: self.transport.pid and self.transport.signalProcess("KILL")
        )
        await self.ended
        if timer.active():
            timer.cancel()


def _fired(value: Any) -> Any:
    from twisted.internet.defer import succeed

    return succeed(value)


class Api:
    def __init__(self, server: ServerProcess) -> None:
        import treq
        from twisted.internet import reactor
        from twisted.web.client import HTTPConnectionPool

        self.treq = treq
        self.server = server
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 32
        self.headers = {
            "Authorization": f"Bearer {server.token}",
            "Content-Type": "application/json",
        }

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        r = await self.treq.request(
            method, self.server.web_url + path, data=data, headers=self.headers, pool=self.pool
        )
        text = await r.text("utf-8")
        try:
            return r.code, json.loads(text)
        except ValueError:
            return r.code, text

    async def add_pull(self, serial: str, port: int) -> dict[str, Any]:
        code, body = await self.call(
            "POST",
            "/api/devices",
            {
                "kind": "pull",
                "name": serial,
                "serial_number": serial,
                "host": "127.0.0.1",
                "port": port,
            },
        )
        if code != 201:
            raise RuntimeError(f"POST /api/devices {serial}: {code} {body}")
        return body

    async def online(self) -> int:
        code, body = await self.call("GET", "/api/devices?kind=pull")
        if code != 200:
            raise RuntimeError(f"GET /api/devices: {code} {body}")
        return sum(1 for d in body if d.get("status") == "online")

    async def close(self) -> None:
        await self.pool.closeCachedConnections()


async def sleep(seconds: float) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


def marks(server: ServerProcess, farms: list[FarmProcess]) -> dict[str, Any]:
    from _common import proc_cpu_s

    return {
        "cpu": server.stats()[1],
        "pg": postgres_cpu(),
        "client": self_cpu_s(),
        "farms": sum(proc_cpu_s(f.pid) for f in farms if f.pid),
    }


def stats(
    server: ServerProcess, farms: list[FarmProcess], before: dict[str, Any], seconds: float
) -> dict[str, Any]:
    from _common import proc_cpu_s, proc_rss_mb

    rss, cpu = server.stats()
    return {
        "rss": rss,
        "cpu_delta": cpu - before["cpu"],
        "cpu_pct": 100.0 * (cpu - before["cpu"]) / seconds if seconds > 0 else float("nan"),
        "pg_cpu_delta": postgres_cpu_since(before["pg"]),
        "load": loadavg(),
        "client_cpu_delta": self_cpu_s() - before["client"],
        "farm_cpu_delta": sum(proc_cpu_s(f.pid) for f in farms if f.pid) - before["farms"],
        "farm_rss": sum(proc_rss_mb(f.pid) for f in farms if f.pid),
    }


async def gather_limited(coros: list[Any], limit: int) -> list[Any]:
    from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults

    sem = DeferredSemaphore(limit)
    return await gatherResults(
        [sem.run(lambda c=c: Deferred.fromCoroutine(c)) for c in coros], consumeErrors=True
    )


async def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    out: dict[str, Any] = {"backend": backend}
    farms: list[FarmProcess] = []
    with tempfile.TemporaryDirectory(prefix="zkbench-db-") as tmp, database(backend, tmp) as db:
        server = ServerProcess(db)
        server.start()
        api = None
        try:
            server.wait_healthy()
            out["rss_idle"] = server.stats()[0]
            api = Api(server)
            procs = max(1, min(args.procs, args.devices))
            per = [
                args.devices // procs + (1 if i < args.devices % procs else 0) for i in range(procs)
            ]
            farms = [FarmProcess(n, f"BP{i}X") for i, n in enumerate(per) if n]
            for f in farms:
                line = await f.expect("READY")
                if not line.startswith("READY"):
                    raise RuntimeError(line)
            print(
                f"[{backend}] server pid {server.pid}; {len(farms)} emulator processes "
                f"({', '.join(str(f.count) for f in farms)} devices); adding devices ...",
                file=sys.stderr,
            )

            # (1) hold
            before = marks(server, farms)
            t0 = now()
            devices = [d for f in farms for d in f.devices()]
            await gather_limited([api.add_pull(sn, port) for sn, port in devices], 16)
            added_s = now() - t0
            online = 0
            deadline = now() + args.hold_timeout
            while now() < deadline:
                online = await api.online()
                if online >= args.devices:
                    break
                await sleep(0.5)
            hold_s = now() - t0
            await sleep(2.0)  # settle: every service has registered for events
            sessions = 0
            for f in farms:
                f.send("sessions")
                sessions += int((await f.expect("SESSIONS")).split()[1])
            online = await api.online()
            out["hold"] = {
                "devices": args.devices,
                "added_s": added_s,
                "online": online,
                "sessions": sessions,
                "hold_s": hold_s if online >= args.devices else float("nan"),
                **stats(server, farms, before, now() - t0),
            }
            print(
                f"[{backend}] {online}/{args.devices} online after {hold_s:.1f} s; "
                "real-time punches ...",
                file=sys.stderr,
            )

            # (2) real time
            clients = await open_clients(server, args.clients, stamp=True)
            await sleep(0.5)
            before = marks(server, farms)
            t1 = now()
            waits = []
            for i, f in enumerate(farms):
                share = args.rate * f.count / args.devices
                f.send(f"punch {share} {args.duration} 7{i}0")
                waits.append(f.expect("DONE"))
            sent: dict[bytes, float] = {}
            for w in waits:
                line = await w
                path = line.split()[2]
                for row in Path(path).read_text().splitlines():
                    user_id, _serial, t = row.split()
                    sent[user_id.encode()] = float(t)
                os.unlink(path)
            total = len(sent)
            await wait_all(clients, total, timeout=20.0)
            lat: list[float] = []
            missing = dupes = 0
            for c in clients:
                got = dict(zip(c.pins, c.times, strict=False))
                dupes += len(c.pins) - len(got)
                for pin, ts in sent.items():
                    t = got.get(pin)
                    if t is None:
                        missing += 1
                    else:
                        lat.append((t - ts) * 1000)
            lat.sort()
            out["rt"] = {
                "punches": total,
                "pairs": len(lat),
                "missing": missing,
                "dupes": dupes,
                "p50": percentile(lat, 50),
                "p99": percentile(lat, 99),
                "max": lat[-1] if lat else float("nan"),
                "online": await api.online(),
                **stats(server, farms, before, now() - t1),
            }
            await close_clients(clients)

            # (3) catch-up
            print(f"[{backend}] catch-up of {args.records} records ...", file=sys.stderr)
            big = FarmProcess(1, "BPBIGX", records=args.records, users=100)
            farms.append(big)
            await big.expect("READY")
            serial, port = big.devices()[0]
            cls = __import__("push_to_sse").sse_protocol_class()
            from twisted.internet import reactor
            from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

            watcher = cls(
                f"/devices/events?type=attendance&device={serial}", server.token, stamp=True
            )
            await connectProtocol(
                TCP4ClientEndpoint(reactor, "127.0.0.1", server.web_port), watcher
            )
            await watcher.ready
            before = marks(server, farms)
            t2 = now()
            await api.add_pull(serial, port)
            done_at = await wait_all([watcher], args.records, timeout=args.catchup_timeout)
            catch_s = (done_at - t2) if done_at else float("nan")
            await sleep(0.5)
            logged = re.findall(
                rf"{re.escape(serial)} \(127\.0\.0\.1:{port}\): caught up (\d+) records "
                r"\((\d+) new\) in ([\d.]+) s",
                Path(server.log_path).read_text(errors="replace"),
            )
            out["catch"] = {
                "records": args.records,
                "received": len(watcher.pins),
                "seconds": catch_s,
                "rate": args.records / catch_s if done_at else float("nan"),
                "logged": f"{logged[0][0]} rec / {logged[0][2]} s" if logged else "-",
                **stats(server, farms, before, now() - t2),
            }
            await close_clients([watcher])
        finally:
            if api is not None:
                await api.close()
            for f in farms:
                await f.stop()
            server.stop()
            out["log"] = server.log_path
    return out


ROWS = [
    (
        "hold",
        [
            ("devices configured", "devices"),
            ("POST /api/devices, all s", "added_s"),
            ("time until all online s", "hold_s"),
            ("online (API)", "online"),
            ("live event sessions (emulators)", "sessions"),
            ("server RSS MB", "rss"),
            ("server CPU s (step)", "cpu_delta"),
            ("server CPU % of one core", "cpu_pct"),
            ("postgres CPU s (step)", "pg_cpu_delta"),
            ("emulators CPU s / RSS MB", None),
        ],
    ),
    (
        "rt",
        [
            ("punches", "punches"),
            ("(punch, client) pairs", "pairs"),
            ("missing pairs", "missing"),
            ("duplicates", "dupes"),
            ("punch->SSE p50 ms", "p50"),
            ("punch->SSE p99 ms", "p99"),
            ("punch->SSE max ms", "max"),
            ("online after", "online"),
            ("server RSS MB", "rss"),
            ("server CPU s (step)", "cpu_delta"),
            ("server CPU % of one core", "cpu_pct"),
            ("postgres CPU s (step)", "pg_cpu_delta"),
            ("emulators CPU s / RSS MB", None),
            ("bench client CPU s", "client_cpu_delta"),
            ("load average after", "load"),
        ],
    ),
    (
        "catch",
        [
            ("records in the device log", "records"),
            ("received over SSE", "received"),
            ("POST -> all on SSE s", "seconds"),
            ("records/s", "rate"),
            ("server log: caught up", "logged"),
            ("server RSS MB", "rss"),
            ("server CPU s (step)", "cpu_delta"),
            ("postgres CPU s (step)", "pg_cpu_delta"),
            ("load average after", "load"),
        ],
    ),
]
TITLES = {
    "hold": "(1) devices held",
    "rt": "(2) real-time punches",
    "catch": "(3) catch-up of one device's log",
}


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    names = [r["backend"] for r in results]
    print()
    print("zkserver pull devices benchmark")
    for line in machine_facts():
        print("  " + line)
    print(
        f"  {args.devices} devices in {args.procs} emulator processes; {args.clients} SSE "
        f"clients; {args.rate:g} punches/s for {args.duration:g} s; catch-up of "
        f"{args.records} records"
    )
    for step, rows in ROWS:
        print()
        print(TITLES[step])
        body = []
        for label, key in rows:
            if key is None:
                body.append(
                    [
                        label,
                        *(
                            f"{r[step]['farm_cpu_delta']:.1f} / {r[step]['farm_rss']:.0f}"
                            for r in results
                        ),
                    ]
                )
            else:
                body.append([label, *(r[step].get(key, "") for r in results)])
        print(table(["metric", *names], body))
    print()
    print(table(["", *names], [["server RSS MB at start", *(r["rss_idle"] for r in results)]]))
    print()
    print(
        "targets (issue): 500 devices held, punch->SSE p99 <= 50 ms; 100,000-record "
        "catch-up <= 10 s"
    )
    for r in results:
        print(f"  {r['backend']} server log: {r['log']}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=500)
    p.add_argument("--procs", type=int, default=4, help="emulator processes")
    p.add_argument("--rate", type=float, default=100.0, help="punches/s over all devices")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=10, help="SSE clients")
    p.add_argument("--records", type=int, default=100_000, help="catch-up log size")
    p.add_argument("--backends", default="postgres", help="comma-separated: sqlite,postgres")
    p.add_argument("--hold-timeout", type=float, default=180.0)
    p.add_argument("--catchup-timeout", type=float, default=180.0)
    return p.parse_args()


def main() -> None:
    run_backends(parse_args(), run_backend, report)


if __name__ == "__main__":
    main()
