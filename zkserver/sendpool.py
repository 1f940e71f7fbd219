"""Send one step of a fan-out on several cores: the reactor thread and helper threads.

Most of what a ``send(2)`` on a TCP socket costs is the kernel's work (the TCP output path
and, over loopback, the receiver's input path too: ~3-6 µs on this project's VM against
~0.5 µs of Python around it), and CPython releases the GIL for the whole system call. So
the ``send`` calls of one sweep step can run on several threads at once: each thread holds
the GIL only for the few bytecodes around its next call. Measured with 9,000 loopback
sockets on the 2-core machine: one thread 62 ms, two threads 33 ms, the same CPU in all.

:meth:`SendPool.send_all` is a fork-join: the caller (the reactor thread) keeps the first
share, helper threads take the others, and the call returns when all are done, so no
Twisted object is ever touched from another thread. Only ``socket.send`` runs on a helper,
on sockets whose transports are idle (nothing buffered), and the reactor thread waits
meanwhile; whatever a socket did not take is written by the caller afterwards, on the
reactor thread, through the transport.

A step is small (a few hundred sockets, see ``zkserver.broadcaster.SLICE``), so the wait
is bounded by one share of it; a pool without helpers (one core, or ``--send-threads 0``)
sends inline, exactly as before.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger

__all__ = ["SendPool", "MIN_SHARE"]

log = Logger()

#: Fewest sends worth handing to a helper (waking a thread costs tens of µs on a VM).
MIN_SHARE = 32


class _Helper:
    """One helper thread: waits for a share, sends it, reports done."""

    def __init__(self, pool: SendPool, index: int) -> None:
        self.go = threading.Semaphore(0)
        self.job: tuple[Sequence[Any], Sequence[bytes], list[int], int, int] | None = None
        self.thread = threading.Thread(
            target=self._run, args=(pool,), name=f"zkserver-send-{index}", daemon=True
        )
        self.thread.start()

    def _run(self, pool: SendPool) -> None:
        while True:
            self.go.acquire()
            job = self.job
            if job is None:
                return
            socks, datas, sent, lo, hi = job
            try:
                _send_range(socks, datas, sent, lo, hi)
            finally:
                self.job = None
                pool._done.release()


def _send_range(
    socks: Sequence[Any], datas: Sequence[bytes], sent: list[int], lo: int, hi: int
) -> None:
    """``sent[i] = socks[i].send(datas[i])`` for ``lo <= i < hi``; 0 where it raised
    (EAGAIN, or an error the transport reports on its own next write)."""
    for i in range(lo, hi):
        try:
            sent[i] = socks[i].send(datas[i])
        except Exception:
            sent[i] = 0


class SendPool:
    """Sends on non-blocking sockets in the calling thread and ``helpers`` more.

    ``helpers`` is how many threads besides the caller (0: everything inline). A share
    is at least :data:`MIN_SHARE` sends, so a small step stays on the caller alone.
    Not re-entrant: one ``send_all`` at a time (the reactor thread's).
    """

    def __init__(self, helpers: int) -> None:
        if helpers < 0:
            raise ValueError(f"helpers must be >= 0, not {helpers}")
        self.helpers = helpers
        self._done = threading.Semaphore(0)
        # Started at the first step that needs them, not here: twistd builds the service
        # before it forks into the background, and threads do not survive a fork.
        self._helpers: list[_Helper] = []
        self.batches = 0  # send_all calls that used helpers
        self.sends = 0

    def send_all(self, socks: Sequence[Any], datas: Sequence[bytes]) -> list[int]:
        """Send ``datas[i]`` on ``socks[i]`` (non-blocking sockets, each at most once in
        the call); return the bytes each took (0 on EAGAIN or error). Blocks the caller
        until every share is done."""
        n = len(socks)
        sent = [0] * n
        self.sends += n
        shares = min(self.helpers + 1, n // MIN_SHARE)
        if shares <= 1:
            _send_range(socks, datas, sent, 0, n)
            return sent
        while len(self._helpers) < shares - 1:
            self._helpers.append(_Helper(self, len(self._helpers)))
        self.batches += 1
        bounds = [n * k // shares for k in range(shares + 1)]
        for k in range(1, shares):
            helper = self._helpers[k - 1]
            helper.job = (socks, datas, sent, bounds[k], bounds[k + 1])
            helper.go.release()
        try:
            _send_range(socks, datas, sent, 0, bounds[1])
        finally:
            for _ in range(1, shares):
                self._done.acquire()
        return sent

    def stop(self) -> None:
        """End the helper threads; later calls send inline."""
        self.helpers = 0
        helpers, self._helpers = self._helpers, []
        for helper in helpers:
            helper.job = None
            helper.go.release()
        for helper in helpers:
            helper.thread.join(5)
