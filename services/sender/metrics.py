"""The sender's Prometheus metrics (one place, so every use case counts the same way)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SENT = Counter(
    "herald_sender_messages_total",
    "Provider call outcomes by channel, provider and error code",
    ["channel", "provider", "outcome", "code"],
)
RECONCILED = Counter(
    "herald_sender_reconciled_total",
    "Messages found in 'sending' after their sender died, by what reconciliation found",
    ["outcome"],
)
LEASE_LATE = Counter(
    "herald_sender_lease_late_total",
    "Messages whose lease ran out while this process still had them in a call (renewal was late); "
    "renewed by the sweeper instead of being reconciled and sent again",
)
LEASE_RENEWAL_SECONDS = Histogram(
    "herald_sender_lease_renewal_seconds",
    "How long after its due time a lease renewal round finished (waiting for the event loop, a "
    "database connection and the update)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
REQUEST_TO_PROVIDER = Histogram(
    "herald_sender_request_to_provider_seconds",
    "Time from request to provider call",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RATE_WAITS = Counter(
    "herald_sender_limit_waits_total",
    "Messages delayed by a limit or check, by which (pair, tier, quiet_hours, throughput; late: a send that would have started late took a fresh slot)",
    ["channel", "limit"],
)
CHECK_FAILURES = Counter(
    "herald_sender_check_failures_total", "Messages failed before any provider call", ["reason"]
)
DEAD_LETTERS = Counter("herald_sender_dead_letters_total", "Messages that became dead letters", ["channel"])
BREAKER = Gauge(
    "herald_sender_channel_breaker_state",
    "Circuit breaker per channel: 0 closed, 1 open, 2 half-open (probing), 3 paused by an operator-level error",
    ["channel"],
)
AMBIGUOUS = Counter(
    "herald_sender_ambiguous_sends_total",
    "Provider calls with no answer after the request may have reached the provider (a resend can "
    "arrive twice), by what the sender did: resent, or gave up (dead letter) past SENDER_MAX_AMBIGUOUS_RESENDS",
    ["channel", "provider", "decision"],
)
ROLLUP_FOLDED = Counter(
    "herald_sender_analytics_deltas_folded_total",
    "Analytics deltas (a message's change of figures) folded into the rollup",
)
ROLLUP_SECONDS = Histogram(
    "herald_sender_analytics_fold_seconds",
    "How long a fold of the pending analytics deltas took (rounds that folded any)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
