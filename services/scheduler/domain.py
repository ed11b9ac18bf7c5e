"""Pure rules of one-off scheduled messages."""

from __future__ import annotations

from datetime import datetime, timedelta

#: a send_at this close to now is accepted as "now" (clock skew between client and server)
PAST_TOLERANCE = timedelta(seconds=5)


class ScheduleError(ValueError):
    pass


def check_send_at(send_at: datetime, now: datetime) -> None:
    if send_at.tzinfo is None:
        raise ScheduleError("send_at needs a UTC offset, e.g. 2026-12-01T09:00:00-03:00")
    if send_at < now - PAST_TOLERANCE:
        raise ScheduleError(
            f"send_at {send_at.isoformat()} is in the past (server time {now.isoformat(timespec='seconds')}); "
            "use a future time, or POST /v1/messages on the sender to send now"
        )


def can_cancel(status: str) -> bool:
    return status == "pending"
