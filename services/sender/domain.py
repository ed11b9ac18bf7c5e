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
from datetime import datetime, timedelta
from enum import Enum

RANK = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "read": 4}
FINAL = frozenset({"failed"})


def can_move(current: str, new: str) -> bool:
    """Whether ``current`` may become ``new``. Later-arriving older news is ignored, not an error."""
    if current in FINAL:
        return False
    if new == "failed":
        return current in ("queued", "sending", "sent")
    return RANK[new] > RANK[current]


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


def request_fingerprint(to: str, text: str, priority: int) -> str:
    """What an idempotency key promises: the same key with a different request is a mistake."""
    canonical = json.dumps({"to": to, "text": text, "priority": priority}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
