"""Delivery status: one ranking for every service that keeps a copy of a message's status.

Statuses arrive out of order (several sender replicas, provider callbacks racing the send's own
answer): a status only ever moves forward. ``failed`` is final and does not overwrite a message
the recipient already has.
"""

from __future__ import annotations

RANK: dict[str, int] = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "read": 4}
FINAL = frozenset({"failed"})


def delivery_moves(current: str | None, new: str) -> bool:
    """Whether a copy at ``current`` (None: no status yet) should become ``new``."""
    if current is None:
        return True
    if current in FINAL:
        return False
    if new == "failed":
        return current not in ("delivered", "read")
    return RANK.get(new, -1) > RANK.get(current, -1)
