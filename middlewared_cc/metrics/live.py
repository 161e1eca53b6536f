"""What is read from the daemon's state when /metrics is scraped rather than counted as it happens:
sessions, connections, calls in flight, rclone restarts, event subscribers cut, stored credentials, jobs
(jobs.JobManager's counts) and audit records (audit.Auditor's count).

Reading at scrape time costs the serving paths nothing. Every label value comes from a fixed set (the
protocol names, the guard's three actions, the registry's provider types, the job states), never from a
caller.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from middlewared_cc.context import Services


class GuardCounts(Protocol):
    """What is read of the wire's connection guard (rpc.guard.ConnectionGuard): metrics stay below the wire."""

    @property
    def unauthenticated(self) -> int: ...

    @property
    def totals(self) -> Mapping[str, int]: ...


class LiveCollector:
    """A prometheus_client collector over one app's Services (and its connection guard)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.services: Services | None = None
        self.guard: GuardCounts | None = None

    def collect(self) -> Iterator[Metric]:
        services, p = self.services, self.prefix
        if services is None:
            return
        sessions: dict[tuple[str, str], int] = {}
        inflight = 0
        for session in list(services.sessions):
            key = (session.protocol, "true" if session.principal is not None else "false")
            sessions[key] = sessions.get(key, 0) + 1
            inflight += session.inflight
        family = GaugeMetricFamily(f"{p}_sessions", "Open websocket sessions, by protocol and login.",
                                   labels=["protocol", "authenticated"])
        for (protocol, authenticated), count in sorted(sessions.items()):
            family.add_metric([protocol, authenticated], count)
        yield family
        yield GaugeMetricFamily(f"{p}_calls_in_flight", "Calls running now, over every session.", value=inflight)
        if self.guard is not None:
            yield GaugeMetricFamily(f"{p}_unauthenticated_connections",
                                    "Connections accepted that have not logged in (root on the unix "
                                    "socket is never one).", value=self.guard.unauthenticated)
            cut = CounterMetricFamily(f"{p}_connections_refused",
                                      "Unauthenticated connections refused at accept (a cap reached), cut "
                                      "(no websocket upgrade in time) or closed (no login in time).",
                                      labels=["action"])
            for action in ("refused", "cut", "closed"):
                cut.add_metric([action], self.guard.totals.get(action, 0))
            yield cut
        rcd = services.rclone
        yield GaugeMetricFamily(f"{p}_rclone_running", "1 while the supervised rclone rcd is started.",
                                value=1 if rcd is not None else 0)
        yield CounterMetricFamily(f"{p}_rclone_restarts", "Times rclone rcd died and was restarted.",
                                  value=rcd.restarts if rcd is not None else 0)
        yield CounterMetricFamily(f"{p}_event_subscribers_dropped",
                                  "Sessions cut because an event overflowed their outgoing queue (a slow "
                                  "subscriber is dropped, never waited for).", value=services.events.dropped)
        stored = GaugeMetricFamily(f"{p}_credentials", "Stored cloud credentials, by provider type.",
                                   labels=["provider"])
        by_provider: dict[str, int] = {}
        for cred in services.credentials:
            # A row's type was validated when stored; one whose plugin is gone now counts as unavailable.
            provider = cred.provider if cred.provider in services.providers else "unavailable"
            by_provider[provider] = by_provider.get(provider, 0) + 1
        for provider, count in sorted(by_provider.items()):
            stored.add_metric([provider], count)
        yield stored
        held = GaugeMetricFamily(f"{p}_jobs", "Jobs kept now (running, waiting, or finished and not yet "
                                 "trimmed), by state.", labels=["state"])
        for state, count in sorted(services.jobs.counts().items()):
            held.add_metric([state], count)
        yield held
        ended = CounterMetricFamily(f"{p}_jobs_finished", "Jobs ended since start, by final state.",
                                    labels=["state"])
        for state, count in sorted(services.jobs.ended.items()):
            ended.add_metric([state], count)
        yield ended
        audit = services.audit
        yield CounterMetricFamily(f"{p}_audit_records", "Audit records stored since start.",
                                  value=audit.stored if audit is not None else 0)
