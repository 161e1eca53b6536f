"""Latency statistics and the result record every load mode prints as JSON."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def median(values: list[float]) -> float:
    """Median, 0.0 for an empty list."""
    return statistics.median(values) if values else 0.0


@dataclass
class LoadResult:
    """One measurement window. Latencies in milliseconds, memory in KiB, CPU in microseconds per call."""

    mode: str
    target: str
    method: str
    connections: int
    inflight: int
    duration_s: float
    calls: int = 0
    calls_per_s: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    errors: int = 0
    id_mismatches: int = 0
    server_cpu_us_per_call: float | None = None
    # Of that, the server's main thread (the daemon's event loop); the rest is its other threads.
    server_loop_cpu_us_per_call: float | None = None
    server_rss_kib: int | None = None
    server_peak_rss_kib: int | None = None
    client_cpu_us_per_call: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    def set_latencies(self, latencies_ns: list[int]) -> None:
        """Fill the percentile fields from raw nanosecond latencies."""
        values = sorted(value / 1e6 for value in latencies_ns)
        self.p50_ms = round(percentile(values, 0.50), 3)
        self.p90_ms = round(percentile(values, 0.90), 3)
        self.p99_ms = round(percentile(values, 0.99), 3)
        self.max_ms = round(values[-1], 3) if values else 0.0

    def note_error(self, text: str) -> None:
        """Count an error and keep the first few texts for the report."""
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text[:300])

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)
