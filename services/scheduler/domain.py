"""Pure decisions of the scheduler: when a schedule fires (the grace rule) and where it goes
next, what an edit may change, which reminders an event gets, pacing slots, which delivery
statuses are ours. Facts in, decision out; no I/O. The recurrences themselves (time zones,
RRULEs, DST) are in ``recurrence.py``; their names are importable from here too.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from services.scheduler.recurrence import WEEKDAYS, Recurrence, zone
from services.scheduler.recurrence import ScheduleError as ScheduleError
from services.scheduler.recurrence import build_recurrence as build_recurrence
from services.scheduler.recurrence import to_instant as to_instant
from shared.delivery import delivery_moves as _delivery_moves

#: a send_at this close to now is accepted as "now" (clock skew between client and server)
PAST_TOLERANCE = timedelta(seconds=5)
#: an occurrence missed by less than this fires once after downtime; an older one is ``missed``
DEFAULT_GRACE = timedelta(hours=1)
#: missed occurrences recorded one by one after a long downtime; beyond this they are summarised
MAX_MISSED_RECORDED = 50

NAMESPACE = uuid.UUID("5c6f1d0e-6a2b-4b8e-9a53-3c1f0b7e2d11")


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


def can_edit(status: str) -> bool:
    return status == "pending"


#: the fields an edit may set to null (every other one must keep a value)
NULLABLE_ON_EDIT = frozenset({"channel_id", "fallback_template", "grace_seconds"})


def refused_null(changes: dict[str, Any]) -> str | None:
    """The first field an edit sets to null although it must keep a value, if any."""
    return next((k for k, v in changes.items() if v is None and k not in NULLABLE_ON_EDIT), None)


def occurrence_message_id(schedule_id: uuid.UUID, due_at: datetime) -> uuid.UUID:
    """The sender's idempotency key for one occurrence: the same occurrence can never send twice."""
    return uuid.uuid5(NAMESPACE, f"{schedule_id}@{due_at.astimezone(UTC).isoformat()}")


def recurrence_of(row: Any) -> Recurrence | None:
    """The recurrence stored on a schedule row (``timezone``, ``start_local``, ``rule``), if any."""
    if row.rule is None:
        return None
    return Recurrence(timezone=row.timezone, start=row.start_local, rule=row.rule)


def first_due(send_at: datetime | None, recurrence: Recurrence | None, now: datetime) -> datetime:
    """The first occurrence of a new (or re-timed) schedule: its ``send_at``, or the recurrence's
    first occurrence from now on."""
    if recurrence is not None:
        first = recurrence.next_after(now - timedelta(seconds=1))
        if first is None:
            raise ScheduleError("the recurrence has no occurrence after now: check start, until and count")
        return first
    assert send_at is not None
    check_send_at(send_at, now)
    return send_at


def next_occurrences(
    status: str, send_at: datetime, recurrence: Recurrence | None, n: int = 5
) -> list[datetime]:
    """The next ``n`` occurrences of a schedule (none once it is no longer pending)."""
    if status != "pending":
        return []
    if recurrence is None:
        return [send_at]
    return [send_at, *recurrence.next_n(send_at, n - 1)]


# --- firing after downtime -----------------------------------------------------------------


@dataclass(frozen=True)
class FirePlan:
    """What the claim does with one due schedule: fire ``fire`` (or nothing), record ``missed``
    occurrences, and wait for ``next_due`` (None: the schedule is finished)."""

    fire: datetime | None
    missed: list[datetime]
    missed_uncounted: bool
    next_due: datetime | None


def plan_due(due_at: datetime, now: datetime, grace: timedelta, recurrence: Recurrence | None) -> FirePlan:
    """The grace rule, for a schedule due at ``due_at`` (<= ``now``).

    An occurrence missed by more than ``grace`` is recorded missed and never fires; the first one
    within grace fires once, and ``next_due`` is the occurrence after it (already due again when
    several fell inside the grace window during an outage: each of those fires once, in order).
    """
    missed: list[datetime] = []
    uncounted = False
    current: datetime | None = due_at
    while current is not None and now - current > grace:
        if len(missed) < MAX_MISSED_RECORDED:
            missed.append(current)
            current = recurrence.next_after(current) if recurrence is not None else None
            continue
        # a long outage: jump over the rest instead of walking every occurrence
        assert recurrence is not None
        uncounted = True
        current = recurrence.next_after(now - grace - timedelta(microseconds=1))
    if current is None or current > now:
        return FirePlan(fire=None, missed=missed, missed_uncounted=uncounted, next_due=current)
    following = recurrence.next_after(current) if recurrence is not None else None
    return FirePlan(fire=current, missed=missed, missed_uncounted=uncounted, next_due=following)


@dataclass(frozen=True)
class Advance:
    """Where a claimed schedule goes after ``plan``: its status, its next ``send_at`` and that
    occurrence's ``message_id``; ``fired_id`` is the message id of the occurrence fired now."""

    status: str
    send_at: datetime
    message_id: uuid.UUID
    fired_id: uuid.UUID | None


def advance(
    schedule_id: uuid.UUID, send_at: datetime, message_id: uuid.UUID, plan: FirePlan, recurring: bool
) -> Advance:
    """A recurring schedule waits for its next occurrence or is ``completed``; a one-off one is
    ``published`` when it fired, ``missed`` when it was too late."""
    fired_id = None
    if plan.fire is not None:
        fired_id = message_id if plan.fire == send_at else occurrence_message_id(schedule_id, plan.fire)
        message_id = fired_id
    if plan.next_due is not None:
        return Advance("pending", plan.next_due, occurrence_message_id(schedule_id, plan.next_due), fired_id)
    last = plan.fire or (plan.missed[-1] if plan.missed else send_at)
    if recurring:
        return Advance("completed", last, message_id, fired_id)
    return Advance("published" if plan.fire is not None else "missed", last, message_id, fired_id)


# --- event reminders -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReminderRule:
    """One reminder of a policy: ``days_before`` the event's day at local ``at`` (e.g. 09:00 on
    the day), or ``minutes_before`` the event's start; sent as ``template`` to the attendees that
    match ``attendee_filter`` (attribute → value, all must match)."""

    name: str
    template_name: str
    template_language: str | None
    body_params: tuple[str, ...]
    days_before: int | None = None
    at: time | None = None
    minutes_before: int | None = None
    attendee_filter: tuple[tuple[str, str], ...] = ()

    def due_at(self, starts_at: datetime, tz: ZoneInfo) -> datetime:
        if self.minutes_before is not None:
            return starts_at - timedelta(minutes=self.minutes_before)
        local_start = starts_at.astimezone(tz)
        day: date = local_start.date() - timedelta(days=self.days_before or 0)
        at = self.at if self.at is not None else local_start.time().replace(tzinfo=None)
        return to_instant(datetime.combine(day, at), tz)

    def matches(self, attributes: dict[str, str]) -> bool:
        return all(attributes.get(k) == v for k, v in self.attendee_filter)


DEFAULT_BODY_PARAMS = ("{attendee.name}", "{event.name}", "{event.start_local}")


def default_reminder_rules(template_name: str = "event_reminder") -> list[ReminderRule]:
    """7 days before and 1 day before at the event's local start time, and 09:00 on the day."""
    return [
        ReminderRule("7d", template_name, None, DEFAULT_BODY_PARAMS, days_before=7),
        ReminderRule("1d", template_name, None, DEFAULT_BODY_PARAMS, days_before=1),
        ReminderRule("day_of", template_name, None, DEFAULT_BODY_PARAMS, days_before=0, at=time(9, 0)),
    ]


_PLACEHOLDER = re.compile(r"\{(event|attendee)\.([a-zA-Z0-9_]+)\}")


def render_param(template: str, event: dict[str, Any], attendee: dict[str, Any]) -> str:
    """``{event.name}``, ``{attendee.name}``, ``{attendee.ticket_type}`` (an attribute) → values.
    An unknown placeholder renders empty rather than failing a reminder at send time."""

    def value(m: re.Match[str]) -> str:
        source = event if m.group(1) == "event" else attendee
        key = m.group(2)
        found = source.get(key)
        if found is None and m.group(1) == "attendee":
            found = (attendee.get("attributes") or {}).get(key)
        return "" if found is None else str(found)

    rendered = _PLACEHOLDER.sub(value, template).strip()
    return rendered or "-"


def reminder_message_id(
    tenant_id: uuid.UUID, event_id: str, phone: str, rule: str, due_at: datetime
) -> uuid.UUID:
    return uuid.uuid5(
        NAMESPACE, f"reminder:{tenant_id}:{event_id}:{phone}:{rule}:{due_at.astimezone(UTC).isoformat()}"
    )


def policy_rules(stored: list[dict[str, Any]] | None) -> list[ReminderRule]:
    """A stored policy (as the API accepted it) as rules; none stored: the built-in default."""
    if not stored:
        return default_reminder_rules()
    return [
        ReminderRule(
            name=r["name"],
            template_name=r["template"]["name"],
            template_language=r["template"].get("language"),
            body_params=tuple(r["template"].get("body_params") or DEFAULT_BODY_PARAMS),
            days_before=r.get("days_before"),
            at=time.fromisoformat(r["at"]) if r.get("at") else None,
            minutes_before=r.get("minutes_before"),
            attendee_filter=tuple(sorted((r.get("attendee_filter") or {}).items())),
        )
        for r in stored
    ]


def default_policy() -> list[dict[str, Any]]:
    """The built-in policy as the API shows it."""
    return [
        {
            "name": r.name,
            "days_before": r.days_before,
            "at": r.at.isoformat(timespec="minutes") if r.at else None,
            "template": {"name": r.template_name, "language": None, "body_params": list(r.body_params)},
            "attendee_filter": {},
        }
        for r in default_reminder_rules()
    ]


def event_fields(event_id: str, name: str, starts_at: datetime, timezone: str) -> dict[str, Any]:
    """What ``{event.…}`` placeholders render to (times local to the event)."""
    local = starts_at.astimezone(zone(timezone))
    return {
        "id": event_id,
        "name": name,
        "start_local": local.strftime("%Y-%m-%d %H:%M"),
        "date": local.strftime("%Y-%m-%d"),
        "time": local.strftime("%H:%M"),
        "timezone": timezone,
    }


def reminder_pairs(
    attendees: list[tuple[str, dict[str, str]]], rules: list[ReminderRule]
) -> list[tuple[int, ReminderRule]]:
    """Which reminder each attendee (phone hash, attributes) gets: every rule whose filter
    matches, once per phone (the same phone twice in one event gets one reminder)."""
    wanted: set[tuple[str, str]] = set()
    pairs = []
    for index, (phone_hash, attributes) in enumerate(attendees):
        for rule in rules:
            if rule.matches(attributes) and (phone_hash, rule.name) not in wanted:
                wanted.add((phone_hash, rule.name))
                pairs.append((index, rule))
    return pairs


def is_stale(event_time: datetime, planned: list[datetime], cancelled_at: datetime | None) -> bool:
    """An event older than what last planned (``planned``: the rows' event times) or cancelled
    the reminders: arriving late, it must not undo the newer change or cancellation."""
    return any(t > event_time for t in planned) or (cancelled_at is not None and cancelled_at >= event_time)


ReminderAction = Literal["insert", "skip", "update", "cancel", "keep"]


def reminder_action(current: str | None, due: datetime, now: datetime, grace: timedelta) -> ReminderAction:
    """What (re-)planning does with one wanted reminder whose row is in status ``current``
    (None: no row yet). A reminder past its time by more than ``grace`` is never planned (and a
    pending one is cancelled); one already published or missed is kept as it is."""
    late = now - due > grace
    if current is None:
        return "skip" if late else "insert"
    if current in ("pending", "cancelled"):
        return "cancel" if late else "update"
    return "keep"


# --- pacing ----------------------------------------------------------------------------------


def pacing_recurrence(timezone: str, days: list[str], times: list[time], created: datetime) -> Recurrence:
    """Slots on ``days`` at each of ``times`` (local), as a weekly rule."""
    tz = zone(timezone)
    if not days:
        raise ScheduleError("days needs at least one of MO, TU, WE, TH, FR, SA, SU")
    if not times:
        raise ScheduleError("times needs at least one local time such as 09:00")
    codes = []
    for d in days:
        code = d.upper()[:2]
        if code not in WEEKDAYS:
            raise ScheduleError(f"days: {d!r} is not one of {', '.join(WEEKDAYS)}")
        codes.append(code)
    start = created.astimezone(tz).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    byday = ",".join(dict.fromkeys(codes))
    rule = "\n".join(
        f"FREQ=WEEKLY;BYDAY={byday};BYHOUR={t.hour};BYMINUTE={t.minute}"
        for t in sorted({t.replace(second=0, microsecond=0, tzinfo=None) for t in times})
    )
    return Recurrence(timezone=timezone, start=start, rule=rule)


def pacing_plan(timezone: str, days: list[str], times: list[time], now: datetime) -> Recurrence:
    """A pacing schedule's rule as the API receives it; a problem names ``timezone`` or ``times``."""
    try:
        zone(timezone)
    except ScheduleError as exc:
        raise ScheduleError(str(exc), "timezone") from exc
    try:
        return pacing_recurrence(timezone, days, times, now)
    except ScheduleError as exc:
        raise ScheduleError(str(exc), "times") from exc


def pacing_times(times: list[time]) -> list[str]:
    """Times as stored: ``HH:MM``, sorted, each once."""
    return sorted({t.strftime("%H:%M") for t in times})


def pacing_slots(
    active: bool, next_at: datetime | None, recurrence: Recurrence, n: int = 5
) -> list[datetime]:
    """The next ``n`` slots of a pacing schedule (none while it is paused)."""
    if not active or next_at is None:
        return []
    return [next_at, *recurrence.next_n(next_at, n - 1)]


# --- delivery status ----------------------------------------------------------------------------

# one ranking for every copy of a message's status: shared.delivery
delivery_moves = _delivery_moves


def is_scheduler_message(correlation_id: str | None) -> bool:
    """A ``message.status`` about a message the scheduler requested (the sender echoes the
    request's correlation id: ``schedule:…`` or ``event:…``; none given: look it up)."""
    return correlation_id is None or correlation_id.startswith(("schedule:", "event:"))
