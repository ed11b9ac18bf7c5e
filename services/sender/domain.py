"""Pure rules of the sender: which message may go now, what a failure means, what a status is.

No I/O here: every rule takes facts already loaded and returns a decision; the dispatcher loads,
calls the rule, and writes what it decided. Invariants:
- a status never moves backwards (queued → sending → sent → delivered → read); ``failed`` is final;
- a message is handed to a provider only after ``sending`` is committed, so a crash during the
  provider call leaves a visible ``sending`` row, never a silent gap;
- a ``sending`` row older than the lease belongs to a process that died: it is reconciled (the
  provider is asked whether it has the message; if it does, the message is ``sent``; if it cannot
  tell or does not have it, the message is sent again). Each case is counted in a metric.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.sender.providers.base import Failure
from shared.delivery import delivery_moves

#: the ranking is shared with every other copy of a message's status (the scheduler's reminders)
can_move = delivery_moves


def request_fingerprint(
    to: str,
    text: str | None,
    priority: int,
    content: dict | None = None,
    fallback: dict | None = None,
    channel_id: str | None = None,
) -> str:
    """What an idempotency key promises: the same key with a different request is a mistake.

    A plain text request hashes exactly as before issue 3 (keys stored earlier stay valid)."""
    fields: dict[str, object] = {"to": to, "text": text, "priority": priority}
    if content is not None:
        fields["content"] = content
    if fallback is not None:
        fields["fallback"] = fallback
    if channel_id is not None:
        fields["channel_id"] = channel_id
    canonical = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- retries ---------------------------------------------------------------------------------


def backoff_seconds(
    attempt: int, *, base: float = 1.0, cap: float = 30.0, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter (AWS architecture blog): a uniform draw in
    [0, min(cap, base * 2**(attempt-1))]. ``attempt`` is the attempt that just failed (1-based)."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(0, ceiling)


# --- quiet hours -----------------------------------------------------------------------------


@dataclass(frozen=True)
class QuietHours:
    """A daily span in a time zone during which the channel sends nothing (e.g. 22:00–08:00)."""

    start: time
    end: time
    timezone: str

    @classmethod
    def parse(cls, raw: dict) -> QuietHours:
        try:
            ZoneInfo(raw["timezone"])
        except ZoneInfoNotFoundError as exc:
            raise ValueError(f"quiet_hours: unknown time zone {raw.get('timezone')!r}") from exc
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(
                'quiet_hours needs {"start": "HH:MM", "end": "HH:MM", "timezone": "<IANA zone>"}'
            ) from exc
        try:
            start = time.fromisoformat(raw["start"])
            end = time.fromisoformat(raw["end"])
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(
                'quiet_hours needs {"start": "HH:MM", "end": "HH:MM", "timezone": "<IANA zone>"}'
            ) from exc
        if start == end:
            raise ValueError("quiet_hours: start and end must differ")
        return cls(start=start, end=end, timezone=raw["timezone"])

    def as_dict(self) -> dict[str, str]:
        return {
            "start": self.start.strftime("%H:%M"),
            "end": self.end.strftime("%H:%M"),
            "timezone": self.timezone,
        }

    def quiet_until(self, now: datetime) -> datetime | None:
        """When the quiet span that contains ``now`` ends, or None when ``now`` is not quiet."""
        zone = ZoneInfo(self.timezone)
        local = now.astimezone(zone)
        t = local.time().replace(tzinfo=None)
        if self.start < self.end:
            quiet = self.start <= t < self.end
            end_day = local.date()
        else:  # spans midnight
            quiet = t >= self.start or t < self.end
            end_day = local.date() + timedelta(days=1) if t >= self.start else local.date()
        if not quiet:
            return None
        return datetime.combine(end_day, self.end, tzinfo=zone)


# --- limits ----------------------------------------------------------------------------------

TIERS = (250, 2_000, 10_000, 100_000)
WINDOW = timedelta(hours=24)
TIER_PERIOD = timedelta(hours=24)


def slot_quota(rate: float, next_slot: datetime | None, now: datetime, horizon: float, cap: int) -> int:
    """How many messages a channel may reserve now: the slots that start before ``now + horizon``.

    Slots are 1/rate apart from ``max(next_slot, now)``; at least one when the next slot is due."""
    start = max(next_slot or now, now)
    room = (now + timedelta(seconds=horizon) - start).total_seconds()
    if room <= 0:
        return 0
    return max(1, min(cap, math.ceil(room * rate)))


FREE_FORM_KINDS = frozenset({"text", "image", "document", "audio", "video", "buttons", "list"})


def is_free_form(content: dict) -> bool:
    """Everything except a template is free-form: allowed only inside the 24-hour window."""
    return content.get("kind", "text") in FREE_FORM_KINDS


def claim_quota(
    *,
    consecutive_failures: int,
    breaker_threshold: int,
    rate: float,
    next_slot: datetime | None,
    now: datetime,
    horizon: float,
    cap: int,
) -> int:
    """How many due messages a channel takes in one claim pass: one probe while its breaker is
    half-open (failures at the threshold, cool-down over), else the slots inside the horizon."""
    if consecutive_failures >= breaker_threshold:
        return 1
    return slot_quota(rate, next_slot, now, horizon, cap)


# --- the template catalogue ------------------------------------------------------------------

#: Meta's template statuses (message_template_status_update ``event``) under which a send fails at
#: Meta (132001 not approved, 132015 paused, 132016 disabled): Herald does not call the provider.
#: APPROVED, REINSTATED and FLAGGED (quality dropping, still sendable) are sendable.
UNSENDABLE_TEMPLATE_STATUSES = frozenset(
    {"PENDING", "REJECTED", "PAUSED", "DISABLED", "IN_APPEAL", "PENDING_DELETION", "DELETED", "ARCHIVED"}
)

#: Meta send errors that tell a template's status (error-codes.json: 132015 paused, 132016 disabled)
TEMPLATE_ERROR_STATUS = {"132015": "PAUSED", "132016": "DISABLED"}


class TemplateStatus(Protocol):
    name: str
    language: str
    status: str
    reason: str | None
    at: datetime


def template_names(contents: Sequence[Any]) -> set[str]:
    """The template names among ``contents`` (stored contents and fallback templates)."""
    return {
        str(c["name"])
        for c in contents
        if isinstance(c, dict) and c.get("kind") == "template" and c.get("name")
    }


def template_block(content: Any, blocked: Mapping[tuple[str, str], TemplateStatus]) -> tuple[str, str] | None:
    """(error code, reason) when ``content`` is a template Meta will not send, else None."""
    if not blocked or not isinstance(content, dict) or content.get("kind") != "template":
        return None
    t = blocked.get((str(content.get("name")), str(content.get("language"))))
    if t is None:
        return None
    why = f": {t.reason}" if t.reason else ""
    return (
        f"template_{t.status.lower()}",
        f"template {t.name!r} ({t.language}) is {t.status} at Meta since {t.at.isoformat()}{why}; "
        "not sent. Replay the dead letter once Meta approves or reinstates it "
        "(GET /v1/templates shows the status)",
    )


# --- admission: which due messages go now ------------------------------------------------------


@dataclass(frozen=True)
class ChannelLimits:
    rate: float  # sends per second (slots 1/rate apart)
    next_slot: datetime | None  # the channel's next free slot
    pair_interval: float  # seconds between two sends to one recipient (0: none)
    tier: int | None  # unique recipients per 24 h over the portfolio (None: unlimited)
    enforce_window: bool  # free-form messages only inside the 24-hour window


@dataclass(frozen=True)
class Candidate:
    """A due message as admission sees it. ``unreadable`` says why its stored recipient or content
    cannot be read (it fails; the rest of the channel carries on)."""

    id: uuid.UUID
    recipient_hash: str
    content: dict[str, Any]
    fallback: dict[str, Any] | None = None
    unreadable: str | None = None


@dataclass
class Facts:
    """What admission needs about one channel's batch, loaded in the claim's transaction."""

    opted_out: set[str] = field(default_factory=set)
    open_window: set[str] = field(default_factory=set)
    blocked_templates: Mapping[tuple[str, str], TemplateStatus] = field(default_factory=dict)
    pair_next: Mapping[str, datetime] = field(default_factory=dict)
    tier_count: int = 0  # unique recipients in the last 24 h
    tier_oldest: datetime | None = None  # when the oldest of them was last sent to
    tier_known: set[str] = field(default_factory=set)  # recipients of this batch among them


@dataclass(frozen=True)
class Admit:
    candidate: Candidate
    content: dict[str, Any]
    slot: datetime
    used_fallback: bool = False
    note: str | None = None


@dataclass(frozen=True)
class Delay:
    candidate: Candidate
    until: datetime
    limit: str  # "pair" or "tier"


@dataclass(frozen=True)
class Refuse:
    candidate: Candidate
    code: str
    reason: str
    dead_letter: bool = False


@dataclass
class Admission:
    admitted: list[Admit] = field(default_factory=list)
    delayed: list[Delay] = field(default_factory=list)
    refused: list[Refuse] = field(default_factory=list)
    pair_next: dict[str, datetime] = field(default_factory=dict)  # new next send per recipient
    tier_new: list[str] = field(default_factory=list)  # recipients this batch adds to the tier

    def next_slot(self, limits: ChannelLimits, now: datetime) -> datetime:
        start = max(limits.next_slot or now, now)
        return start + timedelta(seconds=len(self.admitted) / limits.rate)


OPTED_OUT_REASON = "the recipient opted out: POST /v1/opt-outs … DELETE to opt them back in"
WINDOW_CLOSED_REASON = (
    "the recipient's 24-hour customer-service window is closed (no inbound message "
    "in the last 24 h): send a template, or give a fallback_template"
)
FALLBACK_NOTE = "24-hour window closed: sent the fallback template instead"


def admit(candidates: Sequence[Candidate], limits: ChannelLimits, facts: Facts, now: datetime) -> Admission:
    """Decide each due message of a channel, in order (highest priority first):

    1. opted out → refused; 2. free-form outside the 24-hour window → its fallback template, or
    refused; 3. a template Meta will not send → refused as a dead letter; 4. unreadable → refused;
    5. the recipient's pair interval not over → delayed until it is; 6. a new recipient over the
    tier → delayed until the oldest of the 24 h leaves it; else admitted in the next slot
    (slots 1/rate apart from the channel's next free slot)."""
    out = Admission()
    start = max(limits.next_slot or now, now)
    pair = timedelta(seconds=limits.pair_interval)
    tier_count = facts.tier_count
    tier_known = set(facts.tier_known)
    for c in candidates:
        h = c.recipient_hash
        if h in facts.opted_out:
            out.refused.append(Refuse(c, "opted_out", OPTED_OUT_REASON))
            continue
        content, used_fallback, note = c.content, False, None
        if limits.enforce_window and is_free_form(content) and h not in facts.open_window:
            if c.fallback is None:
                out.refused.append(Refuse(c, "window_closed", WINDOW_CLOSED_REASON))
                continue
            content, used_fallback, note = c.fallback, True, FALLBACK_NOTE
        blocked = template_block(content, facts.blocked_templates)
        if blocked is not None:
            out.refused.append(Refuse(c, *blocked, dead_letter=True))
            continue
        if c.unreadable is not None:
            out.refused.append(Refuse(c, "unreadable", c.unreadable))
            continue
        slot = start + timedelta(seconds=len(out.admitted) / limits.rate)
        if pair:
            busy_until = out.pair_next.get(h) or facts.pair_next.get(h)
            if busy_until is not None and busy_until > slot:
                out.delayed.append(Delay(c, busy_until, "pair"))
                continue
        if limits.tier is not None and h not in tier_known:
            if tier_count >= limits.tier:
                out.delayed.append(Delay(c, (facts.tier_oldest or now) + TIER_PERIOD, "tier"))
                continue
            tier_count += 1
            tier_known.add(h)
            out.tier_new.append(h)
        if pair:
            out.pair_next[h] = slot + pair
        out.admitted.append(Admit(c, content, slot, used_fallback, note))
    return out


# --- what a failed send means ------------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    delay: float  # seconds until the message is due again
    note: str  # the history line: which attempt failed, why, and when the retry really is


@dataclass(frozen=True)
class GiveUp:
    reason: str
    dead_letter: bool  # a dead letter can be replayed; an opt-out is not one


@dataclass(frozen=True)
class FailureOutcome:
    decision: Retry | GiveUp
    record_opt_out: bool = False  # the provider says the recipient opted out
    template_status: str | None = None  # Meta's refusal tells the template's status
    pause_channel: bool = False  # token or policy error: nothing on this channel can go
    counts_against_channel: bool = False  # a transient failure: one step towards the breaker
    slow_channel: bool = False  # the provider's throughput limit: the channel's next slot moves back


def after_failure(
    failure: Failure,
    *,
    code: str,
    reason: str,
    attempts: int,
    max_attempts: int,
    backoff: float,
    retry_after: float | None = None,
    pair_interval: float = 0.0,
    pair_wait: float | None = None,
    provider: str = "",
    is_template: bool = False,
    ambiguous_attempts: int = 0,
    max_ambiguous_resends: int = 1,
) -> FailureOutcome:
    """What to do after attempt ``attempts`` failed with ``failure``.

    Retryable failures retry while attempts remain: after ``backoff`` (full jitter), at least
    the provider's ``retry_after``, a pair-limit refusal (131056) at least max(6 s, the pair
    interval) doubling per attempt, and never before the pair interval lets the claim send to
    this recipient again (``pair_wait``), so the history says when the retry really happens.
    Otherwise the message fails: a dead letter (replayable) unless the recipient opted out.

    ``ambiguous_attempts`` counts this message's attempts that got no answer after the request
    may have reached the provider (this one included, 0 when this one is not such): past
    ``max_ambiguous_resends`` it is not sent again, so one message is duplicated by lost answers
    at most that many times; it becomes a dead letter an operator can replay."""
    retryable = failure in (Failure.RETRY, Failure.RETRY_RECIPIENT, Failure.THROTTLED)
    if ambiguous_attempts > max_ambiguous_resends:
        return FailureOutcome(
            GiveUp(
                f"not sent again: {reason}, after the request may have reached {provider or 'the provider'} "
                f"({ambiguous_attempts} time(s) with no answer), so it may already have the message; "
                "replay this dead letter if the recipient did not get it",
                dead_letter=True,
            ),
            counts_against_channel=failure is Failure.RETRY,
        )
    counts = failure is Failure.RETRY
    # 130429 is the provider's pace, not a fault: it slows the channel (one window) instead of
    # counting towards the breaker, whose 30 s stop it would otherwise trigger in a burst
    slow = failure is Failure.THROTTLED
    if retryable and attempts < max_attempts:
        delay = backoff
        if failure is Failure.RETRY_RECIPIENT:
            delay = max(delay, max(6.0, pair_interval) * (2 ** (attempts - 1)))
        if retry_after:
            delay = max(delay, retry_after)
        if pair_wait is not None:
            delay = max(delay, pair_wait)
        note = f"attempt {attempts}/{max_attempts} failed ({code}), retry in {delay:.1f} s: {reason}"
        if ambiguous_attempts:
            note += "; the provider may already have it, so the resend may arrive twice"
        return FailureOutcome(Retry(delay, note), counts_against_channel=counts, slow_channel=slow)
    if retryable:
        reason = f"gave up after {attempts} attempts: {reason}"
    return FailureOutcome(
        GiveUp(reason, dead_letter=failure is not Failure.OPTED_OUT),
        record_opt_out=failure is Failure.OPTED_OUT,
        template_status=TEMPLATE_ERROR_STATUS.get(code) if provider == "meta" and is_template else None,
        pause_channel=failure is Failure.PAUSE_CHANNEL,
        counts_against_channel=counts,
        slow_channel=slow,
    )


# --- the breaker -------------------------------------------------------------------------------


def breaker_state(
    *, paused: bool, open_until: datetime | None, consecutive_failures: int, threshold: int, now: datetime
) -> str:
    """closed, open (cooling down), half_open (one probe at a time) or paused (an operator must act)."""
    if paused:
        return "paused"
    if open_until is not None and open_until > now:
        return "open"
    if consecutive_failures >= threshold:
        return "half_open"
    return "closed"


def breaker_opens(consecutive_failures: int, threshold: int) -> bool:
    """The transient failure that brings a channel to the threshold opens its breaker."""
    return consecutive_failures >= threshold


# --- delivery statuses -------------------------------------------------------------------------

#: a provider's delivery status → the message status it means (a played voice note was read)
DELIVERY_STATUS = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "played": "read",
    "failed": "failed",
}

#: Meta's "user opted out of marketing messages" (error-codes.json): the failure records an opt-out
OPTED_OUT_ERROR = "131050"


# --- why a queued message waits (issue 13) -------------------------------------------------------

#: a Delay's limit → the reason a message's view gives
WAIT_REASONS = {"pair": "pair_interval", "tier": "tier"}


def retry_wait_reason(failure: Failure) -> str:
    """Why a retried message waits: the provider's pace, the recipient's pair limit, or a backoff."""
    return {Failure.THROTTLED: "throughput", Failure.RETRY_RECIPIENT: "pair_interval"}.get(failure, "retry")


def waiting(
    msg: Mapping[str, Any], channel: Mapping[str, Any] | None, now: datetime
) -> tuple[str, datetime | None] | None:
    """(reason, until) for a ``queued`` message that cannot go in the next claim pass, else None.

    The channel's own state comes first (paused: until someone resumes it; breaker cooling down),
    then what the statement that deferred the message recorded (valid while its ``wait_until``
    is still the ``not_before``), then the channel's quiet hours and throughput slots now."""
    if msg["status"] != "queued" or channel is None:
        return None
    if channel["paused"]:
        return "paused", None
    if channel["breaker_open_until"] is not None and channel["breaker_open_until"] > now:
        return "breaker", channel["breaker_open_until"]
    not_before = msg["not_before"]
    if not_before is not None and not_before > now:
        if msg["wait_reason"] and msg["wait_until"] == not_before:
            return msg["wait_reason"], not_before
    if channel["quiet_hours"]:
        until = QuietHours.parse(channel["quiet_hours"]).quiet_until(now)
        if until is not None:
            return "quiet_hours", until
    if not_before is not None and not_before > now:
        return "not_before", not_before
    if channel["next_slot"] is not None and channel["next_slot"] > now:
        return "throughput", channel["next_slot"]
    return None
