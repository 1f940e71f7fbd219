"""Keep CPython's full garbage collections short while thousands of streams are open.

Measured (bench/sse_fanout.py --gc-log): a server holding 5,000 event streams has about
550,000 tracked objects, and every full (generation 2) collection walks all of them with
the reactor stopped: 0.3-1.3 s each, several during a connect burst (the heap grows by a
quarter again and again) and again later whenever enough objects have been promoted.
Almost all of those objects are long-lived (connections, requests, subscribers) and are
freed by reference counting when a client leaves; a full pass finds little to collect.

:class:`GCGovernor` therefore moves every object that survived a full collection to the
permanent generation (``gc.freeze()``, right after the collection): the next full pass
walks only what was promoted since, so its length no longer grows with the number of
clients. Objects that die in a reference cycle after they were frozen are not collected
until the next *thaw* (``gc.unfreeze()`` every ``--gc-thaw`` seconds, default one hour):
the next full collection then walks everything once, frees those cycles and the survivors
are frozen again. ``--gc-thaw 0`` turns the governor off (plain CPython collection).
Stopping the service unfreezes everything.

A collection runs in whichever thread allocated when it became due: with SQLite that is
often a database thread of the pool. The callback then hands the freeze to the reactor
thread with ``callFromThread`` (``callLater`` is not thread-safe: from another thread it
can be lost, and freezing would stop for good).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["GCGovernor"]


class GCGovernor(Service):
    def __init__(
        self,
        clock: IReactorTime,
        thaw_every: float = 3600.0,
        call_from_thread: Callable[..., None] | None = None,
    ) -> None:
        """``clock`` schedules on the reactor thread (the one that starts the service);
        ``call_from_thread`` is the reactor's ``callFromThread`` (default: the global
        reactor's), for collections that run in other threads."""
        self.clock = clock
        self.thaw_every = thaw_every
        if call_from_thread is None:
            from twisted.internet import reactor

            call_from_thread = reactor.callFromThread  # type: ignore[attr-defined]
        self._call_from_thread = call_from_thread
        self._thread: threading.Thread | None = None
        self.freezes = 0
        self.thaws = 0
        self._freeze_call: IDelayedCall | None = None
        self._thaw_call: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()
        self._thread = threading.current_thread()
        gc.callbacks.append(self._on_gc)
        self._schedule_thaw()

    def stopService(self) -> None:
        super().stopService()
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        for call in (self._freeze_call, self._thaw_call):
            if call is not None and call.active():
                call.cancel()
        self._freeze_call = self._thaw_call = None
        gc.unfreeze()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # Nothing is frozen inside the collector: freeze on the reactor's next turn.
        if phase == "stop" and info.get("generation") == 2:
            if threading.current_thread() is self._thread:
                self._collected()
            else:
                self._call_from_thread(self._collected)

    def _collected(self) -> None:
        """A full collection ended (on the reactor thread now)."""
        if self._freeze_call is None and self.running:
            self._freeze_call = self.clock.callLater(0, self._freeze)

    def _freeze(self) -> None:
        self._freeze_call = None
        gc.freeze()
        self.freezes += 1

    def _schedule_thaw(self) -> None:
        if self.thaw_every > 0:
            self._thaw_call = self.clock.callLater(self.thaw_every, self._thaw)

    def _thaw(self) -> None:
        gc.unfreeze()
        self.thaws += 1
        self._schedule_thaw()
