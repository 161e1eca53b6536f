"""One app's metrics: a prometheus_client registry of its own, what the layers record into it, and the
scrape's rendering.

Never the library's global ``REGISTRY``: two apps in one test process (or a daemon and a bench reference)
would otherwise share and double-count, and a second registration of a name would raise.

Who records what (each a line or two at the place it happens, through ``Services.metrics``):

- the call runner: every call (``calls``, see tally.py);
- cloudsync.credentials.verify: every verify, by provider type and reason (``verified``);
- the batch writer: every committed batch, its size and how long it took (``committed``);
- the garbage collector's collections and their time, by generation, timed through gc.callbacks while
  the app runs (gc_time.py);
- the rest (sessions, connections, rclone restarts, event subscribers cut, stored credentials, jobs and
  audit records) is read from the live state at scrape time (live.py): the jobs and audit rooms keep
  their own counts.

No label carries a secret or a credential's name: label values are method names from the registry,
provider type ids, reason keys, job states and errno names.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector

from middlewared_cc.metrics.gc_time import GcTimes
from middlewared_cc.metrics.live import GuardCounts, LiveCollector
from middlewared_cc.metrics.tally import UNKNOWN, CallTally

if TYPE_CHECKING:
    from middlewared_cc.context import Services

PREFIX = "middlewared_cc"
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # the writer's max_batch is 256
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Reason keys verify answers (rclone/scrub.py's rules and rclone/verify.py); anything else is "other".
VERIFY_REASONS = frozenset({"invalid_auth", "cannot_connect", "not_found", "timeout", "discontinued",
                            "unsupported"})


class _Calls:
    """The registry-facing side of the call tally (a collector renders it at scrape time)."""

    def __init__(self, tally: CallTally) -> None:
        self.tally = tally

    def collect(self) -> Iterator[Metric]:
        return self.tally.families(PREFIX)


class Metrics:
    """Everything one app exposes at /metrics. Made with its Services; ``bind`` at start-up."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = CallTally()
        self.live = LiveCollector(PREFIX)
        self.registry.register(_Calls(self.calls))
        self.registry.register(self.live)
        self.gc = GcTimes(PREFIX)  # started with the app (web.ops), stopped at its cleanup
        self.registry.register(self.gc)
        # CPU seconds, resident memory, open descriptors of this process (read from /proc at scrape).
        ProcessCollector(namespace=PREFIX, registry=self.registry)
        r = self.registry
        self._verifies = Counter(f"{PREFIX}_verifies", "Credential verifies, by provider type and outcome "
                                 "(valid, or the failure's reason key; other when no rule matched).",
                                 ["provider", "outcome"], registry=r)
        self._batch_size = Histogram(f"{PREFIX}_write_batch_size", "Writes committed together in one "
                                     "transaction by the batch writer (group commit).",
                                     buckets=BATCH_BUCKETS, registry=r)
        self._commit_seconds = Histogram(f"{PREFIX}_write_commit_duration_seconds", "Time from the start "
                                         "of a batch's transaction to its writes being settled.",
                                         buckets=COMMIT_BUCKETS, registry=r)
        self._providers: frozenset[str] = frozenset()

    def bind(self, services: Services, guard: GuardCounts | None) -> None:
        """Wire this app's live state in: run once its Services exist (web.ops does, on start-up)."""
        self._providers = frozenset(provider.type for provider in services.providers)
        self.calls.know(method.name for method in services.methods)
        self.live.services, self.live.guard = services, guard
        services.writer.committed = self.committed

    def render(self, accept: str) -> tuple[bytes, str]:
        """The scrape's body and content type: OpenMetrics when the scraper asks for it, else the text
        format."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    # -- recorded where it happens -------------------------------------------------------------------

    def verified(self, provider: str, valid: bool, reason: str | None) -> None:
        """One verify ended; ``provider`` is a registry type id, ``reason`` the outcome's reason key."""
        outcome = "valid" if valid else (reason if reason in VERIFY_REASONS else "other")
        self._verifies.labels(provider if provider in self._providers else UNKNOWN, outcome).inc()

    def committed(self, size: int, seconds: float) -> None:
        """The batch writer settled a batch of ``size`` writes in ``seconds``."""
        self._batch_size.observe(size)
        self._commit_seconds.observe(seconds)
