"""Loaded by a benchmarked server when ``ZKBENCH_GC_LOG`` names a file (bench/*.py
``--gc-log``): logs every garbage-collector pass of generation 2, and any pass over 5 ms,
with its duration, so stalls can be matched to collections. Not part of zkserver."""

import gc
import os
import time

_path = os.environ.get("ZKBENCH_GC_LOG")
if _path:
    _out = open(_path, "a", buffering=1)  # noqa: SIM115 (lives as long as the process)
    _started = [0.0]

    def _on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - _started[0]) * 1000
        if ms > 5 or info["generation"] == 2:
            tracked = len(gc.get_objects(2)) if info["generation"] == 2 else -1
            _out.write(
                f"{time.time():.3f} gen{info['generation']} {ms:.1f} ms "
                f"collected={info['collected']} gen2_objects={tracked}\n"
            )

    gc.callbacks.append(_on_gc)
