"""Calls by method and outcome, with their latencies: the one tally every call passes through.

The bench measures calls per second, so this path is kept to a dict lookup, a bisect and two additions
(about 0.1 µs; prometheus_client's labelled Counter and Histogram cost about 2 µs a call on the same
machine). Everything runs on the event loop's thread, so no lock is needed. The counts are turned into
metric families only when /metrics is scraped.

Label values are bounded: a method label is a name from the registry (``know``), and any other name the
caller sent is counted under ``UNKNOWN``, never under its own string. An outcome is ``success``,
``invalid`` (arguments refused), ``incident`` (a bug, logged with an id), ``not_found`` (no such method)
or the errno name of a refusal (``EACCES``, ``ENOENT``, ``EBUSY``...), from errors.errname's fixed table.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from middlewared_cc.errors import CallError, ValidationErrors, errname

# Seconds. Most calls answer in well under a millisecond; verifies and listings may take up to
# verify_timeout (45 s by default).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0)
UNKNOWN = "unknown"


def outcome_of(failure: BaseException | None) -> str:
    """The outcome label of a call that ended in ``failure`` (None: it succeeded)."""
    if failure is None:
        return "success"
    if isinstance(failure, ValidationErrors):
        return "invalid"
    if isinstance(failure, CallError):
        return errname(failure.errno)
    return "incident"


class _MethodTally:
    __slots__ = ("buckets", "outcomes", "seconds")

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.seconds = 0.0


class CallTally:
    """Counts and latency buckets per registered method (plus one ``UNKNOWN`` for every other name)."""

    def __init__(self) -> None:
        self._methods: dict[str, _MethodTally] = {}
        self._unknown = _MethodTally()

    def know(self, names: Iterable[str]) -> None:
        """Methods that get a label of their own: the registry's names, once, at start-up."""
        for name in names:
            self._methods.setdefault(name, _MethodTally())

    def done(self, method: str, failure: BaseException | None, started: float) -> None:
        """One call of ``method`` ended (``failure`` None: it succeeded); ``started`` is its
        time.perf_counter() when it began."""
        seconds = time.perf_counter() - started
        tally = self._methods.get(method)
        if tally is None:
            tally, outcome = self._unknown, "not_found"
        else:
            outcome = "success" if failure is None else outcome_of(failure)
        tally.outcomes[outcome] = tally.outcomes.get(outcome, 0) + 1
        tally.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        tally.seconds += seconds

    def families(self, prefix: str) -> Iterator[Metric]:
        """``<prefix>_calls_total{method, outcome}`` and ``<prefix>_call_duration_seconds{method}``."""
        calls = CounterMetricFamily(f"{prefix}_calls", "Method calls answered, by method and outcome.",
                                    labels=["method", "outcome"])
        latency = HistogramMetricFamily(f"{prefix}_call_duration_seconds",
                                        "Time from a call's arrival to its answer, by method.",
                                        labels=["method"])
        for name, tally in [*self._methods.items(), (UNKNOWN, self._unknown)]:
            for outcome, count in tally.outcomes.items():
                calls.add_metric([name, outcome], count)
            if not tally.outcomes:
                continue  # a method never called has no histogram yet (keeps the scrape small)
            cumulative, buckets = 0, []
            for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], tally.buckets, strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            latency.add_metric([name], buckets, sum_value=tally.seconds)
        yield calls
        yield latency
