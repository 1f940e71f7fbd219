"""Shared helpers for the hand-run benchmarks in bench/ (not collected by pytest).

- start a real ``twistd zkserver`` in a separate process from this source tree,
- a fresh PostgreSQL schema per run (created and dropped with psycopg2),
- /proc readings (RSS, CPU seconds) of the server and of other processes,
- machine facts and a plain text table.
"""

from __future__ import annotations

import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "ZKSERVER_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
CLK_TCK = os.sysconf("SC_CLK_TCK")

TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine_facts() -> list[str]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return [
        "command: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        f"nproc: {os.cpu_count()} ({cpu or platform.machine()})",
        f"python: {platform.python_version()} ({platform.python_implementation()})",
        f"kernel: {platform.release()}; load average now: {loadavg()} "
        "(the machine is shared: other processes compete for the same cores)",
        f"git: {_git_head()}",
    ]


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "zkserver"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip()[:80] + (" (zkserver/ has uncommitted changes)" if dirty else "")
    except Exception:
        return "?"


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def proc_cpu_s(pid: int, reaped_children: bool = False) -> float:
    """utime + stime of a process, in seconds; with ``reaped_children``, plus those of
    its children that have exited and been waited for (cutime + cstime)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants that are alive now (children of any of its threads)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def established_by_process(pids: Sequence[int], port: int) -> dict[int, int]:
    """For each of ``pids``, how many established TCP connections to local ``port`` it
    holds (its socket descriptors matched with /proc/net/tcp{,6} by inode)."""
    inodes: set[str] = set()
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table_path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT, st 01 is ESTABLISHED, inode is field 9
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    counts = {}
    for pid in pids:
        n = 0
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                n += 1
        counts[pid] = n
    return counts


def postgres_cpu() -> dict[int, float]:
    """CPU seconds of every process named postgres (the local server's backends), by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(entry, "comm").read_text().strip() == "postgres":
                found[int(entry.name)] = proc_cpu_s(int(entry.name))
        except OSError:
            continue
    return found


def postgres_cpu_since(before: dict[int, float]) -> float:
    """CPU seconds used by PostgreSQL processes since ``before`` (backends that exited in
    between are not counted)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in postgres_cpu().items())


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


@contextmanager
def postgres_schema(prefix: str = "zkbench") -> Iterator[str]:
    """A fresh schema in ZKSERVER_BENCH_POSTGRES; yields the --db URL; drops it after."""
    import psycopg2

    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(POSTGRES_URL, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in POSTGRES_URL else "?"
        yield f"{POSTGRES_URL}{sep}options={quote('-csearch_path=' + schema)}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.close()


@contextmanager
def database(backend: str, data_dir: str) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:{data_dir}/zkserver.sqlite3"
    elif backend in ("postgres", "postgresql"):
        with postgres_schema() as url:
            yield url
    else:
        raise SystemExit(f"unknown backend {backend!r} (sqlite, postgres)")


class ServerProcess:
    """``twistd -n --pidfile= zkserver`` from this source tree, in its own process."""

    def __init__(
        self,
        db: str,
        extra: Sequence[str] = (),
        profile: str | None = None,
        gc_log: str | None = None,
    ) -> None:
        self.gc_log = gc_log
        self.tmp = tempfile.mkdtemp(prefix="zkbench-")
        self.data_dir = os.path.join(self.tmp, "data")
        self.push_port = free_port()
        self.web_port = free_port()
        self.token = "bench-" + uuid.uuid4().hex
        self.log_path = os.path.join(self.tmp, "server.log")
        self.db = db
        twistd_opts = ["-n", "--pidfile=", "--logfile", self.log_path]
        if profile:
            twistd_opts += ["--profile", profile, "--profiler", "cprofile", "--savestats"]
        self.args = [
            sys.executable,
            "-c",
            TWISTD,
            *twistd_opts,
            "zkserver",
            "--data-dir",
            self.data_dir,
            "--db",
            db,
            "--push",
            f"tcp:{self.push_port}:interface=127.0.0.1",
            "--web",
            # thousands of dashboards connect at once: Twisted's default listen backlog
            # (50) would drop SYNs and make clients retry after 1 s, 3 s, ...
            f"tcp:{self.web_port}:interface=127.0.0.1:backlog=4096",
            "--token",
            self.token,
            "--auto-approve",
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def push_url(self) -> str:
        return f"http://127.0.0.1:{self.push_port}"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZKSERVER_")}
        env["PYTHONPATH"] = str(REPO) + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        if self.gc_log:  # bench/_gcmon/sitecustomize.py logs the server's GC passes
            env["ZKBENCH_GC_LOG"] = self.gc_log
            env["PYTHONPATH"] = str(REPO / "bench" / "_gcmon") + os.pathsep + env["PYTHONPATH"]
        self.proc = subprocess.Popen(
            self.args,
            cwd=self.tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=open(os.path.join(self.tmp, "stdout.log"), "wb"),
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Block until GET /healthz answers 200 (plain sockets, before the reactor runs)
        and, with ``--workers``, every worker serves too (``wait_workers``)."""
        import http.client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited ({self.proc.returncode}); see {self.log_path}\n" + self.tail()
                )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    self.wait_workers(max(1.0, deadline - time.monotonic()))
                    return
                conn.close()
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server not healthy in time\n" + self.tail())

    @property
    def workers(self) -> int:
        """The ``--workers`` count given in the server's arguments (1 without it)."""
        for k, arg in enumerate(self.args):
            if arg == "--workers" and k + 1 < len(self.args):
                return int(self.args[k + 1])
            if arg.startswith("--workers="):
                return int(arg.split("=", 1)[1])
        return 1

    def wait_workers(self, timeout: float = 60.0) -> None:
        """With ``--workers N``, block until the N-1 other processes serve the web
        listener too (each logs "Serving inherited web" through the first process once its
        database is ready); until then the first process accepts every client alone."""
        if self.workers <= 1:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                serving = (
                    Path(self.log_path).read_text(errors="replace").count("Serving inherited web")
                )
            except OSError:
                serving = 0
            if serving >= self.workers - 1:
                return
            time.sleep(0.1)
        raise RuntimeError("workers not serving in time\n" + self.tail())

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text().splitlines()[-n:])
        except OSError:
            return ""

    def pids(self) -> list[int]:
        """The server's processes: the first one and, with ``--workers``, the others."""
        return process_tree(self.pid)

    def stats(self) -> tuple[float, float]:
        """(RSS MB, CPU seconds) of the server now, summed over all its processes (with
        ``--workers``, the first one and its workers; the CPU of workers that exited and
        were restarted is counted too)."""
        rss = cpu = 0.0
        for pid in self.pids():
            try:
                rss += proc_rss_mb(pid)
                cpu += proc_cpu_s(pid, reaped_children=pid == self.pid)
            except OSError:  # a worker that just exited
                continue
        return rss, cpu

    def clients_by_process(self) -> list[int]:
        """Established connections on the web port held by each server process (the
        first process first): how ``--workers`` split the clients."""
        pids = self.pids()
        counts = established_by_process(pids, self.web_port)
        return [counts.get(pid, 0) for pid in pids]

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # SIGTERM: twistd stops services (and writes the profile)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * (len(sorted_values) - 1)))))
    return sorted_values[k]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain, aligned text table; the first column left-aligned, the rest right."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        rest = zip(row[1:], widths[1:], strict=False)
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in rest]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def py_spy_command() -> str:
    """py-spy from PATH, else beside this Python (a venv's bin/ that is not on PATH)."""
    import shutil

    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or str(beside)


class PySpy:
    """``py-spy record`` of a process for the duration of a ``with`` block (optional)."""

    def __init__(self, directory: str | None, pid: int, name: str, rate: int = 200) -> None:
        self.directory = directory
        self.pid = pid
        self.name = name
        self.rate = rate
        self.proc: subprocess.Popen[bytes] | None = None
        self.summary: dict[str, Any] = {}

    def __enter__(self) -> PySpy:
        if self.directory:
            os.makedirs(self.directory, exist_ok=True)
            self.path = os.path.join(os.path.abspath(self.directory), f"{self.name}.txt")
            self.proc = subprocess.Popen(
                [
                    py_spy_command(),
                    "record",
                    "--pid",
                    str(self.pid),
                    "--rate",
                    str(self.rate),
                    "--format",
                    "raw",
                    "--threads",
                    "--nonblocking",
                    "-o",
                    self.path,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            import signal

            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.summary = {"py_spy": self.path}


def collapsed_top(path: str, n: int = 25, exclude_idle: bool = True) -> str:
    """Top functions (self and inclusive samples) of a py-spy raw (collapsed) file."""
    from collections import Counter

    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        frames = stack.split(";")
        total += count
        self_c[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    rows = [[f[:110], c, 100.0 * c / total] for f, c in self_c.most_common(n)]
    out = [f"{path}: {total} samples", "self:", table(["function", "samples", "%"], rows)]
    rows = [[f[:110], c, 100.0 * c / total] for f, c in incl.most_common(n)]
    out += ["inclusive:", table(["function", "samples", "%"], rows)]
    return "\n".join(out)


def run_backends(args: Any, run_backend: Any, report: Any) -> None:
    """Run ``run_backend(backend, args)`` for each of ``args.backends`` on the reactor, in
    turn, then print ``report(results, args)``."""
    from twisted.internet import task
    from twisted.internet.defer import Deferred

    async def run(reactor: Any) -> None:
        results = []
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            results.append(await run_backend(backend, args))
        report(results, args)

    task.react(lambda reactor: Deferred.fromCoroutine(run(reactor)))


class Dechunker:
    """The body of an HTTP/1.1 chunked response, incrementally (no trailers)."""

    def __init__(self) -> None:
        self.buf = b""
        self.left = 0  # data bytes left in the current chunk
        self.skip = 0  # bytes of the CRLF after a chunk still to drop

    def feed(self, data: bytes) -> bytes:
        buf, out = self.buf + data, []
        while buf:
            if self.skip:
                n = min(self.skip, len(buf))
                buf, self.skip = buf[n:], self.skip - n
            elif self.left:
                part = buf[: self.left]
                out.append(part)
                buf, self.left = buf[len(part) :], self.left - len(part)
                self.skip = 0 if self.left else 2
            else:
                end = buf.find(b"\r\n")
                if end < 0:
                    break
                self.left = int(buf[:end].split(b";")[0], 16)
                buf = buf[end + 2 :]
                if not self.left:  # the last chunk
                    buf = b""
        self.buf = buf
        return b"".join(out)
