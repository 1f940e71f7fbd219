"""Send one step of a fan-out on several cores: the reactor thread and helper threads.

Most of what a ``send(2)`` on a TCP socket costs is the kernel's work (the TCP output path
and, over loopback, the receiver's input path too: ~3-6 µs on this project's VM against
~0.5 µs of Python around it), and CPython releases the GIL for the whole system call. So
the ``send`` calls of one sweep step can run on several threads at once: each thread holds
the GIL only for the few bytecodes around its next call. Measured with 9,000 loopback
sockets on the 2-core machine: one thread 62 ms, two threads 33 ms, the same CPU in all.

:meth:`SendPool.send_all` hands the step to the helpers and works on it itself: every
thread claims the next send from one shared counter until none is left, so the sends go
out in list order whoever makes them, and a helper that is slow to wake (no free core)
simply finds less or nothing left to do. The caller (the reactor thread) returns once
every claimed send is done, which is at most one ``send`` per helper after its own last
one: it never waits for a helper to *start*. So no Twisted object is ever touched from
another thread: only ``socket.send`` runs on a helper, on sockets whose transports are
idle (nothing buffered), while the reactor thread is inside the call; whatever a socket
did not take is written by the caller afterwards, on the reactor thread, through the
transport.

A step is small (a few hundred sockets, see ``zkserver.broadcaster.SLICE``); a pool
without helpers (one core, or ``--send-threads 0``) or a step of fewer than two
:data:`MIN_SHARE` sends goes inline, exactly as a plain loop would.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger

__all__ = ["SendPool", "MIN_SHARE"]

log = Logger()

#: Fewest sends per thread worth waking a helper for (a wake-up costs tens of µs on a VM).
MIN_SHARE = 32


class _Job:
    """One step's sends, claimed one at a time by whichever thread is free."""

    __slots__ = ("socks", "datas", "sent", "claims", "busy", "idle")

    def __init__(self, socks: Sequence[Any], datas: Sequence[bytes]) -> None:
        self.socks = socks
        self.datas = datas
        self.sent = [0] * len(socks)
        self.claims = itertools.count()  # next() is atomic under the GIL
        self.busy = 0  # helpers inside work(), guarded by idle's lock
        self.idle = threading.Condition(threading.Lock())

    def work(self) -> None:
        """Claim and make sends until none are left; a send that raises (EAGAIN, or an
        error the transport reports on its next write) counts as 0 bytes taken."""
        socks, datas, sent, claims = self.socks, self.datas, self.sent, self.claims
        n = len(socks)
        while (i := next(claims)) < n:
            try:
                sent[i] = socks[i].send(datas[i])
            except Exception:
                sent[i] = 0

    def help(self) -> None:
        """:meth:`work`, from a helper thread: counted in ``busy`` before its first claim,
        so the caller waits for every claim a helper made."""
        with self.idle:
            self.busy += 1
        try:
            self.work()
        finally:
            with self.idle:
                self.busy -= 1
                if not self.busy:
                    self.idle.notify_all()

    def wait(self) -> None:
        """Return once no helper is inside :meth:`help` (call after :meth:`work`: every
        send is then claimed, so helpers arriving later find nothing to do)."""
        with self.idle:
            while self.busy:
                self.idle.wait()


def _send_inline(socks: Sequence[Any], datas: Sequence[bytes]) -> list[int]:
    """:meth:`SendPool.send_all` on the calling thread alone: one pass of ``zip`` (a send
    that raises counts as 0 bytes taken, and the pass goes on from the next pair)."""
    sent: list[int] = []
    append = sent.append
    pairs = zip(socks, datas, strict=True)
    while True:
        try:
            for sock, data in pairs:
                append(sock.send(data))
            return sent
        except Exception:
            append(0)


class SendPool:
    """Sends on non-blocking sockets in the calling thread and ``helpers`` more.

    ``helpers`` is how many threads besides the caller (0: everything inline); they are
    started at the first step big enough to share (twistd builds the service before it
    forks into the background, and threads do not survive a fork). Not re-entrant: one
    ``send_all`` at a time (the reactor thread's).
    """

    def __init__(self, helpers: int) -> None:
        if helpers < 0:
            raise ValueError(f"helpers must be >= 0, not {helpers}")
        self.helpers = helpers
        self._threads: list[threading.Thread] = []
        self._wake = threading.Semaphore(0)
        self._job: _Job | None = None  # the step under way (or the last one)
        self._stopping = False
        self.batches = 0  # send_all calls shared with helpers

    def send_all(self, socks: Sequence[Any], datas: Sequence[bytes]) -> list[int]:
        """Send ``datas[i]`` on ``socks[i]`` (non-blocking sockets, each at most once in
        the call); return the bytes each took (0 on EAGAIN or error)."""
        wake = min(self.helpers, len(socks) // MIN_SHARE - 1)
        if wake > 0 and len(self._threads) < self.helpers:
            self._start_helpers()
            wake = min(wake, len(self._threads))
        if wake <= 0:
            return _send_inline(socks, datas)
        job = _Job(socks, datas)
        self.batches += 1
        self._job = job
        self._wake.release(wake)
        job.work()
        job.wait()
        return job.sent

    def _start_helpers(self) -> None:
        """Start the missing helpers. One that cannot be started (no thread to be had:
        RLIMIT_NPROC, a cgroup's pids.max) is not asked for again: the pool goes on with
        those it has, or inline. Raising would lose the step: the sweep has already
        counted its streams as having these bytes."""
        while len(self._threads) < self.helpers:
            thread = threading.Thread(
                target=self._help, name=f"zkserver-send-{len(self._threads)}", daemon=True
            )
            try:
                thread.start()
            except RuntimeError as e:
                log.warn(
                    "Cannot start a send helper thread ({error}); going on with {count}",
                    error=str(e),
                    count=len(self._threads),
                )
                self.helpers = len(self._threads)
                return
            self._threads.append(thread)

    def _help(self) -> None:
        while True:
            self._wake.acquire()
            if self._stopping:
                return
            job = self._job  # the latest step; a late wake-up finds it all claimed
            if job is not None:
                job.help()

    def stop(self) -> None:
        """End the helper threads; later calls send inline."""
        self.helpers = 0
        self._stopping = True
        threads, self._threads = self._threads, []
        if threads:
            self._wake.release(len(threads))
        for thread in threads:
            thread.join(5)
        self._job = None
