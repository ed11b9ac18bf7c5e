"""The claim: load → decide → write, for one locked channel.

Loads the facts admission needs (opt-outs, windows, blocked templates, pair pacing, tier usage)
for the channel's due messages, lets ``domain.admit`` decide each one, and writes the decision —
admitted ones ``sending`` with a reserved slot (a ``Job`` each), delayed ones a later
``not_before``, refused ones ``failed`` — in the claim pass's transaction, so two processes never
exceed a limit together.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Row

from services.sender import domain, status
from services.sender import repository as repo
from services.sender.context import CONTENT, Sender
from services.sender.metrics import BREAKER, CHECK_FAILURES, DEAD_LETTERS, RATE_WAITS
from services.sender.providers.base import ChannelConfig, Outbound, ProviderError, SendResult
from shared.db import UnitOfWork
from shared.events import MessageContent
from shared.logging import get_logger

log = get_logger(__name__)


@dataclass
class Job:
    """One claimed message on its way to the provider."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    channel: ChannelConfig
    provider: str
    outbound: Outbound
    slot: float  # time.time() at which it may be sent
    created_at: datetime
    attempts: int
    correlation_id: str | None
    origin: str
    pair_interval: float
    recipient_hash: str
    traceparent: str | None = None  # of the span that accepted the message (shared.tracing)
    send_traceparent: str | None = None  # of this attempt's "sender send" span (its status events)
    rate: float = 0.0  # the channel's paced rate (slots 1/rate apart); 0: not paced
    note: str | None = None
    answered_at: datetime | None = None  # when the provider answered the send
    result: SendResult | None = None
    error: ProviderError | None = None

    @property
    def message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "provider": self.provider,
            "channel_id": self.channel.id,
            "correlation_id": self.correlation_id,
            "origin": self.origin,
            # status.Change: the result's message.status event continues the send's span
            "traceparent": self.send_traceparent or self.traceparent,
        }


def _refusal(r: Row[Any], refuse: domain.Refuse) -> status.Change:
    return status.Change(
        r._mapping,
        "failed",
        r.status,
        refuse.reason,
        error_code=refuse.code,
        dead_letter=refuse.dead_letter,
    )


async def claim_channel(sender: Sender, uow: UnitOfWork, ch: Row[Any], now: datetime) -> list[Job]:
    """Load → decide → write, for one locked channel."""
    s = sender.settings
    conn = uow.conn
    label = str(ch.id)
    if ch.quiet_hours:
        until = domain.QuietHours.parse(ch.quiet_hours).quiet_until(now)
        if until is not None:
            RATE_WAITS.labels(label, "quiet_hours").inc(await repo.hold_queued_until(conn, ch.id, until))
            return []
    try:
        config = sender.channel_config(ch)
    except Exception as exc:  # e.g. credentials encrypted with a key no longer configured
        reason = f"the channel's credentials cannot be read ({type(exc).__name__}): PATCH them again"
        await repo.update_channel(conn, ch.id, paused=True, pause_reason=reason)
        BREAKER.labels(label).set(3)
        log.warning("channel paused: unreadable credentials", channel_id=label)
        return []
    # paced a little under the provider's limit: see SenderSettings.pacing_margin
    rate = ch.throughput_per_second * (1 - s.pacing_margin)
    quota = domain.claim_quota(
        consecutive_failures=ch.consecutive_failures,
        breaker_threshold=s.breaker_threshold,
        rate=rate,
        next_slot=ch.next_slot,
        now=now,
        horizon=s.claim_horizon_seconds,
        cap=s.claim_batch,
    )
    if quota <= 0:
        return []
    rows = await repo.lock_due_messages(conn, ch.id, now, quota)
    if not rows:
        return []

    # load
    candidates, decoded = _candidates(sender, rows)
    hashes = list({r.recipient_hash for r in rows})
    facts = domain.Facts(
        opted_out=await repo.opted_out_among(conn, ch.tenant_id, hashes),
        blocked_templates=await repo.templates_with_status(
            conn,
            ch.tenant_id,
            domain.template_names([c for r in rows for c in (r.content, r.fallback_template)]),
            domain.UNSENDABLE_TEMPLATE_STATUSES,
        ),
    )
    if ch.enforce_window:
        facts.open_window = await repo.open_windows_among(
            conn, ch.tenant_id, ch.id, hashes, now - domain.WINDOW
        )
    if ch.pair_interval_seconds > 0:
        facts.pair_next = await repo.pair_next_among(conn, ch.id, hashes)
    if ch.tier is not None:
        facts.tier_count, facts.tier_oldest, facts.tier_known = await repo.tier_usage(
            conn, ch.tenant_id, ch.portfolio, now - domain.TIER_PERIOD, hashes
        )
    limits = domain.ChannelLimits(
        rate=rate,
        next_slot=ch.next_slot,
        pair_interval=ch.pair_interval_seconds,
        tier=ch.tier,
        enforce_window=ch.enforce_window,
    )

    # decide
    decision = domain.admit(candidates, limits, facts, now)

    # write
    by_id = {r.id: r for r in rows}
    await repo.set_not_before_each(
        conn, [(d.candidate.id, d.until, domain.WAIT_REASONS[d.limit]) for d in decision.delayed]
    )
    for d in decision.delayed:
        RATE_WAITS.labels(label, d.limit).inc()
    if decision.refused:
        await status.record(uow, [_refusal(by_id[f.candidate.id], f) for f in decision.refused])
        for f in decision.refused:
            CHECK_FAILURES.labels(f.code).inc()
            if f.dead_letter:
                DEAD_LETTERS.labels(label).inc()
    await repo.upsert_pair_next(conn, ch.id, decision.pair_next)
    await repo.upsert_tier_recipients(conn, ch.tenant_id, ch.portfolio, decision.tier_new, now)
    if not decision.admitted:
        return []
    channel_values: dict[str, Any] = {"next_slot": decision.next_slot(limits, now)}
    if ch.consecutive_failures >= s.breaker_threshold:
        # one probe at a time: nobody else probes until this one answers or the cool-down ends
        channel_values["breaker_open_until"] = now + timedelta(seconds=s.breaker_cooldown_seconds)
        BREAKER.labels(label).set(2)
    await repo.update_channel(conn, ch.id, **channel_values)
    await repo.set_contents(conn, [(a.candidate.id, a.content) for a in decision.admitted if a.used_fallback])
    changes = []
    jobs = []
    for a in decision.admitted:
        r = by_id[a.candidate.id]
        to, content, fallback = decoded[r.id]
        reason = a.note or (f"attempt {r.attempts + 1}" if r.attempts else None)
        changes.append(
            status.Change(
                r._mapping,
                "sending",
                "queued",
                reason,
                # the error of an earlier attempt stays visible until this one's result
                error_code=r.error_code,
                values={
                    "sending_started_at": now,
                    "attempts": r.attempts + 1,
                    "provider": ch.provider,
                },
            )
        )
        jobs.append(
            Job(
                id=r.id,
                tenant_id=r.tenant_id,
                channel=config,
                provider=ch.provider,
                outbound=Outbound(
                    message_id=r.id,
                    tenant_id=r.tenant_id,
                    to=to,
                    content=fallback if a.used_fallback else content,  # type: ignore[arg-type]
                ),
                slot=a.slot.timestamp(),
                created_at=r.created_at,
                attempts=r.attempts + 1,
                correlation_id=r.correlation_id,
                origin=r.origin,
                pair_interval=ch.pair_interval_seconds,
                recipient_hash=r.recipient_hash,
                traceparent=r.traceparent,
                rate=rate,
                note=a.note,
            )
        )
    await status.record(uow, changes)
    return jobs


def _candidates(
    sender: Sender, rows: Sequence[Row[Any]]
) -> tuple[list[domain.Candidate], dict[uuid.UUID, tuple[str, MessageContent | None, MessageContent | None]]]:
    """Each row as admission sees it, and its decrypted recipient and parsed contents."""
    candidates = []
    decoded: dict[uuid.UUID, tuple[str, MessageContent | None, MessageContent | None]] = {}
    for r in rows:
        content = r.content or {"kind": "text", "body": r.text}
        fallback = r.fallback_template or None
        unreadable = None
        try:  # one unreadable row must not stop the channel
            to = sender.runtime.secrets.decrypt(r.recipient_enc)
            decoded[r.id] = (
                to,
                CONTENT.validate_python(content),
                CONTENT.validate_python(fallback) if fallback else None,
            )
        except Exception as exc:
            unreadable = f"the stored message cannot be read ({type(exc).__name__}: {exc})"
        candidates.append(domain.Candidate(r.id, r.recipient_hash, content, fallback, unreadable))
    return candidates, decoded
