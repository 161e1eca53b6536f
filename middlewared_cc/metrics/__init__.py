"""Metrics for /metrics (Prometheus, with the official prometheus_client): one registry per app.

``Metrics`` (recorder.py) is what the layers record into through ``Services.metrics``; tally.py is the
call runner's lock-free hot path; live.py reads sessions, connections and the like at scrape time.
"""

from middlewared_cc.metrics.recorder import Metrics

__all__ = ["Metrics"]
