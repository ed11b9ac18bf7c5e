from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import HeraldSettings


class SenderSettings(HeraldSettings):
    model_config = SettingsConfigDict(env_prefix="SENDER_", extra="ignore")
    service_name: ClassVar[str] = "sender"

    port: int = 8004
    default_provider: str = Field(
        default="sandbox", description="Provider used when a message names no channel."
    )
    sending_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A message left in 'sending' longer than this is presumed orphaned by a crash and reconciled.",
    )
    max_attempts: int = Field(default=5, ge=1, le=50, description="Provider attempts before a dead letter.")
    backoff_base_seconds: float = Field(default=1.0, gt=0)
    backoff_cap_seconds: float = Field(default=30.0, gt=0)
    claim_horizon_seconds: float = Field(
        default=0.25,
        gt=0,
        le=5,
        description="How far ahead a process reserves a channel's send slots; bounds how long a "
        "priority-10 request waits behind already-claimed priority-1 messages.",
    )
    claim_interval_seconds: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Minimum time between two claim passes of one process: arrivals are claimed in "
        "batches instead of one transaction per message (adds at most this much latency).",
    )
    pacing_margin: float = Field(
        default=0.015,
        ge=0,
        lt=0.5,
        description="Channels are paced at their throughput x (1 - margin): the room that lets a send "
        "start up to pacing_late_seconds after its slot (and reach the provider a few ms later) "
        "without any one-second window at the provider holding more than the throughput.",
    )
    pacing_late_seconds: float = Field(
        default=0.008,
        gt=0,
        le=1,
        description="A send that would start more than this after its slot (a busy event loop) takes "
        "a fresh slot instead of going out late beside its on-time successors. Keep "
        "(1 + late + provider jitter) x (1 - margin) < 1.",
    )
    claim_batch: int = Field(default=500, ge=1, le=5000, description="Messages claimed per channel per tick.")
    max_in_flight: int = Field(default=2000, ge=1, description="Provider calls in flight per process.")
    breaker_threshold: int = Field(
        default=5, ge=1, description="Consecutive transient failures that open a channel's breaker."
    )
    breaker_cooldown_seconds: float = Field(default=30.0, gt=0)
    implicit_sandbox_throughput: float = Field(
        default=1000.0,
        gt=0,
        description="Messages/second of the sandbox channel created for a tenant that has no channel.",
    )
    session_poll_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How often the session of each WAHA/Evolution channel is asked from its gateway "
        "(catches missed session webhooks); 0 disables the poll.",
    )
    http_timeout_seconds: float = Field(default=15.0, gt=0)
    max_ambiguous_resends: int = Field(
        default=1,
        ge=0,
        le=10,
        description="How many times a message is sent again after a provider call got no answer once "
        "the request may have reached the provider (each such resend can arrive twice); past it the "
        "message becomes a dead letter. 0: never risk a duplicate.",
    )
    http_max_connections: int = Field(default=256, ge=1)
    analytics_rollup_seconds: float = Field(
        default=2.0,
        ge=0,
        description="Every this many seconds, fold the analytics deltas into the rollup (one sender "
        "at a time); 0 = never (the figures stay exact, queries read the pending deltas and slow down).",
    )
    analytics_rollup_batch: int = Field(
        default=20_000, ge=100, description="Analytics deltas folded per transaction."
    )
    template_sync_seconds: float = Field(
        default=0.0,
        ge=0,
        description="Every this many seconds, read the templates of every Meta channel's WABA "
        "(statuses of Meta's review, templates made elsewhere); 0 = only on POST /v1/templates/sync.",
    )
