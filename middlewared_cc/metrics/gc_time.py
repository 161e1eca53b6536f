"""The interpreter's garbage collections and the time they took, by generation.

A collection runs on the thread that allocated when a threshold was crossed, almost always the event
loop's, and nothing else runs on it meanwhile. A full collection (generation 2) walks every object the
collector tracks, the credential index's included: with a few hundred thousand credentials one takes
about 200 ms (bench/audit_cost.py's create load). ``prometheus_client``'s own GCCollector counts
collections but does not time them, so this collector times each one through ``gc.callbacks`` (two
clock reads per collection) and exposes both counts.

Collections are the process's, not one app's: each app's collector counts all of them while it is
started (web.ops starts it with the app and stops it at cleanup, so no callback outlives its app).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric

GENERATIONS = (0, 1, 2)


class GcTimes:
    """A gc.callbacks hook that counts and times collections, and a collector that exposes them."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.total = 0.0  # seconds in collections of every generation (read per call by bench.audit_steps)
        self._began: float | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        began, self._began = self._began, None
        generation = info.get("generation")
        if began is None or generation not in GENERATIONS:  # started before this hook was added
            return
        spent = time.perf_counter() - began
        self.collections[generation] += 1
        self.seconds[generation] += spent
        self.total += spent

    def start(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def stop(self) -> None:
        while self in gc.callbacks:
            gc.callbacks.remove(self)

    def collect(self) -> Iterator[Metric]:
        p = self.prefix
        count = CounterMetricFamily(f"{p}_gc_collections", "Garbage collections since the daemon started, by "
                                    "generation (2: a full collection, which walks every tracked object).",
                                    labels=["generation"])
        spent = CounterMetricFamily(f"{p}_gc_seconds", "Time spent in garbage collections, by generation: the "
                                    "thread that ran one (almost always the event loop's) did nothing else "
                                    "meanwhile.", labels=["generation"])
        for generation in GENERATIONS:
            count.add_metric([str(generation)], self.collections[generation])
            spent.add_metric([str(generation)], self.seconds[generation])
        yield count
        yield spent
