"""The scheduler's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

FIRED = Counter("herald_scheduler_fired_total", "Scheduled occurrences published", ["kind"])
MISSED = Counter("herald_scheduler_missed_total", "Occurrences older than their grace period", ["kind"])
LATENESS = Histogram(
    "herald_scheduler_lateness_seconds",
    "How late an occurrence was published after it was due",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 60, 600),
)
