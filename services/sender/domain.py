"""Pure rules of the sender: the status machine and what to do with a message on delivery.

No I/O here. Invariants:
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
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import Enum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.delivery import delivery_moves

#: the ranking is shared with every other copy of a message's status (the scheduler's reminders)
can_move = delivery_moves


class Claim(Enum):
    SEND = "send"  # queued: this consumer sends it
    RECONCILE = "reconcile"  # sending, lease expired: its sender died mid-call
    IN_FLIGHT = "in_flight"  # sending, lease alive: another consumer is sending it right now
    DONE = "done"  # already sent/delivered/read/failed: a duplicate request


def claim(status: str, sending_started_at: datetime | None, now: datetime, lease: timedelta) -> Claim:
    if status == "queued":
        return Claim.SEND
    if status == "sending":
        if sending_started_at is None or now - sending_started_at >= lease:
            return Claim.RECONCILE
        return Claim.IN_FLIGHT
    return Claim.DONE


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
