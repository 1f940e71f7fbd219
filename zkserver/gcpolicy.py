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
"""

from __future__ import annotations

import gc
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["GCGovernor"]


class GCGovernor(Service):
    def __init__(self, clock: IReactorTime, thaw_every: float = 3600.0) -> None:
        self.clock = clock
        self.thaw_every = thaw_every
        self.freezes = 0
        self.thaws = 0
        self._freeze_call: IDelayedCall | None = None
        self._thaw_call: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()
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
        # Nothing is allocated or frozen inside the collector: freeze on the next turn.
        if phase == "stop" and info.get("generation") == 2 and self._freeze_call is None:
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
