"""Scheduler use cases: schedules, reminders and pacing slots, each fired exactly once.

Invariant of every claim (``fire_due``, ``fire_due_reminders``, ``fire_due_pacing``): the row
lock (``FOR UPDATE SKIP LOCKED``), the outbox rows, the history rows and the move to the next
occurrence commit in ONE transaction. Two replicas never fire the same row (the second skips the
locked row, and once committed the row is no longer due); a crash before the commit leaves the
row due for the next pass, and the message id is derived from the schedule and the occurrence
time, so even a replayed outbox row is the same message to the sender.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import Counter, Histogram
from pydantic import TypeAdapter
from sqlalchemy.engine import Row

from services.scheduler import repository as repo
from services.scheduler.domain import (
    DEFAULT_BODY_PARAMS,
    Recurrence,
    ReminderRule,
    ScheduleError,
    can_cancel,
    can_edit,
    check_send_at,
    default_reminder_rules,
    delivery_moves,
    occurrence_message_id,
    plan_due,
    reminder_message_id,
    render_param,
    zone,
)
from shared.crypto import lookup_hash
from shared.events import (
    CloudEvent,
    EventCancelled,
    EventPublished,
    MessageContent,
    MessageRequested,
    MessageStatusChanged,
    PacingDue,
    TemplateContent,
    new_event,
    utcnow,
)
from shared.logging import get_logger
from shared.notify import Wakeup
from shared.service import ServiceRuntime

log = get_logger(__name__)
SOURCE = "/herald/scheduler"
DUE_CHANNEL = "scheduler_due"
EVENTS_CONSUMER = "event-reminders"

FIRED = Counter("herald_scheduler_fired_total", "Scheduled occurrences published", ["kind"])
MISSED = Counter("herald_scheduler_missed_total", "Occurrences older than their grace period", ["kind"])
LATENESS = Histogram(
    "herald_scheduler_lateness_seconds",
    "How late an occurrence was published after it was due",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 60, 600),
)


@dataclass
class Scheduler:
    runtime: ServiceRuntime
    batch_size: int
    max_sleep: float
    grace: timedelta = timedelta(hours=1)
    default_language: str = "en_US"

    def hash(self, phone: str) -> str:
        return lookup_hash(self.runtime.settings.secret_key.get_secret_value(), phone)


class NotCancellable(Exception):
    pass


class NotEditable(Exception):
    pass


def recurrence_of(row: Any) -> Recurrence | None:
    if row.rule is None:
        return None
    return Recurrence(timezone=row.timezone, start=row.start_local, rule=row.rule)


async def _notify(uow: Any) -> None:
    await uow.conn.exec_driver_sql(f"NOTIFY {DUE_CHANNEL}")


# --- scheduled messages -----------------------------------------------------------------------


def first_due(send_at: datetime | None, recurrence: Recurrence | None, now: datetime) -> datetime:
    if recurrence is not None:
        first = recurrence.next_after(now - timedelta(seconds=1))
        if first is None:
            raise ScheduleError("the recurrence has no occurrence after now: check start, until and count")
        return first
    assert send_at is not None
    check_send_at(send_at, now)
    return send_at


async def create(
    sched: Scheduler,
    tenant_id: uuid.UUID,
    *,
    to: str,
    text: str | None = None,
    content: dict[str, Any] | None = None,
    fallback_template: dict[str, Any] | None = None,
    channel_id: uuid.UUID | None = None,
    priority: int = 5,
    send_at: datetime | None = None,
    recurrence: Recurrence | None = None,
    recurrence_spec: dict[str, Any] | None = None,
    grace_seconds: int | None = None,
) -> Row[Any]:
    now = utcnow()
    due = first_due(send_at, recurrence, now)
    schedule_id = uuid.uuid4()
    values = {
        "id": schedule_id,
        "tenant_id": tenant_id,
        "recipient_enc": sched.runtime.secrets.encrypt(to),
        "recipient_hash": sched.hash(to),
        "text": text,
        "content": content,
        "fallback_template": fallback_template,
        "channel_id": channel_id,
        "priority": priority,
        "send_at": due,
        "status": "pending",
        "message_id": occurrence_message_id(schedule_id, due),
        "kind": "recurring" if recurrence is not None else "one_off",
        "timezone": recurrence.timezone if recurrence else None,
        "start_local": recurrence.start if recurrence else None,
        "rule": recurrence.rule if recurrence else None,
        "recurrence": recurrence_spec,
        "grace_seconds": grace_seconds,
        "created_at": now,
        "updated_at": now,
    }
    async with sched.runtime.uow() as uow:
        await repo.insert(uow.conn, values)
        await _notify(uow)
        await uow.commit()
        row = await repo.get(uow.conn, tenant_id, schedule_id)
    assert row is not None
    return row


async def edit(
    sched: Scheduler, tenant_id: uuid.UUID, schedule_id: uuid.UUID, changes: dict[str, Any]
) -> Row[Any] | None:
    """Apply ``changes`` to a pending schedule. Timing changes (``send_at`` or ``recurrence``)
    re-plan the next occurrence; a text replaces content and the other way round."""
    async with sched.runtime.uow() as uow:
        row = await repo.get(uow.conn, tenant_id, schedule_id, lock=True)
        if row is None:
            return None
        if not can_edit(row.status):
            raise NotEditable(f"scheduled message {schedule_id} is {row.status} and can no longer be edited")
        now = utcnow()
        values: dict[str, Any] = {"updated_at": now}
        if "to" in changes:
            values["recipient_enc"] = sched.runtime.secrets.encrypt(changes["to"])
            values["recipient_hash"] = sched.hash(changes["to"])
        if "text" in changes:
            values.update(text=changes["text"], content=None)
        if "content" in changes:
            values.update(content=changes["content"], text=None)
        for key in ("fallback_template", "channel_id", "priority", "grace_seconds"):
            if key in changes:
                values[key] = changes[key]
        if "recurrence" in changes:
            rec: Recurrence = changes["recurrence"]
            due = first_due(None, rec, now)
            values.update(
                kind="recurring",
                timezone=rec.timezone,
                start_local=rec.start,
                rule=rec.rule,
                recurrence=changes.get("recurrence_spec"),
                send_at=due,
                message_id=occurrence_message_id(schedule_id, due),
            )
        elif "send_at" in changes:
            due = first_due(changes["send_at"], None, now)
            values.update(
                kind="one_off",
                timezone=None,
                start_local=None,
                rule=None,
                recurrence=None,
                send_at=due,
                message_id=occurrence_message_id(schedule_id, due),
            )
        await repo.update(uow.conn, schedule_id, **values)
        await _notify(uow)
        await uow.commit()
        return await repo.get(uow.conn, tenant_id, schedule_id)


async def cancel(sched: Scheduler, tenant_id: uuid.UUID, schedule_id: uuid.UUID) -> Row[Any] | None:
    async with sched.runtime.uow() as uow:
        row = await repo.get(uow.conn, tenant_id, schedule_id, lock=True)
        if row is None:
            return None
        if not can_cancel(row.status):
            raise NotCancellable(
                f"scheduled message {schedule_id} is {row.status} and can no longer be cancelled"
            )
        now = utcnow()
        await repo.update(uow.conn, schedule_id, status="cancelled", cancelled_at=now, updated_at=now)
        await uow.commit()
        return await repo.get(uow.conn, tenant_id, schedule_id)


_CONTENT: TypeAdapter[Any] = TypeAdapter(MessageContent)


def _request(sched: Scheduler, row: Any, message_id: uuid.UUID) -> MessageRequested:
    """The request for one occurrence. Built without re-validating the phone number: it was
    validated (E.164) when the schedule was accepted, and re-parsing it with ``phonenumbers`` was
    a fifth of the claim's CPU time. The content is validated again (cheap): the outbox row
    must match the contract."""
    return MessageRequested.model_construct(
        message_id=message_id,
        to=sched.runtime.secrets.decrypt(row.recipient_enc),
        text=row.text,
        content=_CONTENT.validate_python(row.content) if row.content is not None else None,
        fallback_template=TemplateContent.model_validate(row.fallback_template)
        if row.fallback_template is not None
        else None,
        channel_id=row.channel_id,
        priority=row.priority,
        idempotency_key=None,
        origin="scheduler",
        correlation_id=f"schedule:{row.id}",
    )


@dataclass
class _RowOutcome:
    update: dict[str, Any]
    history: list[dict[str, Any]]
    event: CloudEvent[MessageRequested] | None
    lateness: float | None


def _fire_row(sched: Scheduler, row: Any, now: datetime) -> _RowOutcome:
    """What the claim does with one due schedule (pure apart from decryption)."""
    rec = recurrence_of(row)
    grace = timedelta(seconds=row.grace_seconds) if row.grace_seconds is not None else sched.grace
    plan = plan_due(row.send_at, now, grace, rec)
    history = [
        {
            "message_id": occurrence_message_id(row.id, when),
            "schedule_id": row.id,
            "tenant_id": row.tenant_id,
            "due_at": when,
            "status": "missed",
            "fired_at": now,
        }
        for when in plan.missed
    ]
    if plan.missed_uncounted:
        log.warning("occurrences skipped after a long outage", schedule_id=str(row.id))
    event = None
    lateness = None
    message_id = row.message_id
    if plan.fire is not None:
        if plan.fire != row.send_at:
            message_id = occurrence_message_id(row.id, plan.fire)
        event = new_event(
            _request(sched, row, message_id),
            tenant_id=row.tenant_id,
            source=SOURCE,
            event_id=f"scheduler:{message_id}",
            subject=f"schedule/{row.id}",
        )
        history.append(
            {
                "message_id": message_id,
                "schedule_id": row.id,
                "tenant_id": row.tenant_id,
                "due_at": plan.fire,
                "status": "published",
                "fired_at": now,
            }
        )
        lateness = (now - plan.fire).total_seconds()
    if plan.next_due is not None:
        status, send_at, message_id = "pending", plan.next_due, occurrence_message_id(row.id, plan.next_due)
    else:
        send_at = plan.fire or (plan.missed[-1] if plan.missed else row.send_at)
        if rec is not None:
            status = "completed"
        else:
            status = "published" if plan.fire is not None else "missed"
    update = {
        "b_id": row.id,
        "b_send_at": send_at,
        "b_status": status,
        "b_message_id": message_id,
        "b_published_at": now if plan.fire is not None else None,
        "b_fired": 1 if plan.fire is not None else 0,
        "b_missed": len(plan.missed),
        "b_now": now,
    }
    return _RowOutcome(update, history, event, lateness)


async def fire_due(sched: Scheduler, now: datetime | None = None) -> int:
    """Claim one batch of due schedules; fire, record and advance each, all in one transaction.

    A row that cannot be fired at all (its content no longer matches the contract, its recipient
    cannot be decrypted with the configured keys) is marked ``failed`` and logged, instead of
    failing the batch: one bad row must not stall every row due after it.

    Returns how many rows were claimed (a full batch means: call again at once)."""
    now = now or utcnow()
    lateness: list[float] = []
    fired = missed = 0
    async with sched.runtime.uow() as uow:
        rows = await repo.claim_due(uow.conn, now, sched.batch_size)
        if not rows:
            return 0
        updates: list[dict[str, Any]] = []
        history: list[dict[str, Any]] = []
        for row in rows:
            try:
                outcome = _fire_row(sched, row, now)
            except Exception as exc:
                log.error(
                    "scheduled message cannot be fired: marked failed",
                    schedule_id=str(row.id),
                    error=repr(exc)[:300],
                )
                updates.append(
                    {
                        "b_id": row.id,
                        "b_send_at": row.send_at,
                        "b_status": "failed",
                        "b_message_id": row.message_id,
                        "b_published_at": None,
                        "b_fired": 0,
                        "b_missed": 0,
                        "b_now": now,
                    }
                )
                continue
            updates.append(outcome.update)
            history.extend(outcome.history)
            missed += outcome.update["b_missed"]
            if outcome.event is not None:
                uow.add_event(outcome.event, priority=row.priority)
                fired += 1
            if outcome.lateness is not None:
                lateness.append(outcome.lateness)
        await repo.record_occurrences(uow.conn, history)
        await repo.advance(uow.conn, updates)
        await uow.commit()
    FIRED.labels("scheduled").inc(fired)
    MISSED.labels("scheduled").inc(missed)
    for seconds in lateness:
        LATENESS.observe(max(0.0, seconds))
    return len(rows)


# --- event reminders --------------------------------------------------------------------------


def policy_rules(stored: list[dict[str, Any]] | None) -> list[ReminderRule]:
    if not stored:
        return default_reminder_rules()
    rules = []
    for r in stored:
        template = r["template"]
        rules.append(
            ReminderRule(
                name=r["name"],
                template_name=template["name"],
                template_language=template.get("language"),
                body_params=tuple(template.get("body_params") or DEFAULT_BODY_PARAMS),
                days_before=r.get("days_before"),
                at=time.fromisoformat(r["at"]) if r.get("at") else None,
                minutes_before=r.get("minutes_before"),
                attendee_filter=tuple(sorted((r.get("attendee_filter") or {}).items())),
            )
        )
    return rules


def _event_fields(data: EventPublished, tz: ZoneInfo) -> dict[str, Any]:
    local = data.starts_at.astimezone(tz)
    return {
        "id": data.event_id,
        "name": data.name,
        "start_local": local.strftime("%Y-%m-%d %H:%M"),
        "date": local.strftime("%Y-%m-%d"),
        "time": local.strftime("%H:%M"),
        "timezone": data.timezone,
    }


async def plan_event_reminders(sched: Scheduler, event: CloudEvent[EventPublished]) -> bool:
    """``event.published`` / ``event.changed``: (re-)plan every reminder that has not fired yet.

    One row per (event, attendee, reminder of the policy); a row already published or missed is
    left alone (a moved event does not repeat the 7-day reminder it already sent); a pending row
    moves with the event; a reminder whose time has passed by more than the grace period when it
    is first planned is not created. Attendees who left (or no longer match a filter) lose their
    pending reminders. Returns False for a redelivered event."""
    data = event.data
    tz = zone(data.timezone)
    runtime = sched.runtime

    async def apply() -> bool:
        async with runtime.uow() as uow:
            if not await uow.mark_processed(EVENTS_CONSUMER, f"{event.source}:{event.id}"):
                return False
            now = utcnow()
            policy = await repo.get_event_policy(uow.conn, event.tenantid, data.event_id)
            if policy is None:
                policy = await repo.get_policy(uow.conn, event.tenantid)
            rules = policy_rules(policy.reminders if policy is not None else None)
            rows = await repo.reminders_for_event(uow.conn, event.tenantid, data.event_id)
            cancelled_at = await repo.cancellation_time(uow.conn, event.tenantid, data.event_id)
            if any(r.event_time > event.time for r in rows) or (
                cancelled_at is not None and cancelled_at >= event.time
            ):
                # an older event arriving late: it must not undo a newer change or a cancellation
                log.info("older event ignored", event_id=data.event_id, type=event.type)
                await uow.commit()  # keep the processed mark: a redelivery is ignored at once
                return False
            existing = {(r.recipient_hash, r.rule_name): r for r in rows}
            fields = _event_fields(data, tz)
            wanted: set[tuple[str, str]] = set()
            inserts: list[dict[str, Any]] = []
            for attendee in data.attendees:
                phone_hash = sched.hash(attendee.phone)
                person = attendee.model_dump(exclude={"phone"})
                for rule in rules:
                    if not rule.matches(attendee.attributes):
                        continue
                    key = (phone_hash, rule.name)
                    if key in wanted:
                        continue  # the same phone twice in one event: one reminder
                    wanted.add(key)
                    due = rule.due_at(data.starts_at, tz)
                    content = TemplateContent(
                        name=rule.template_name,
                        language=rule.template_language or attendee.language or sched.default_language,
                        body_params=[render_param(p, fields, person) for p in rule.body_params],
                    ).model_dump(mode="json", exclude_none=True)
                    message_id = reminder_message_id(
                        event.tenantid, data.event_id, phone_hash, rule.name, due
                    )
                    current = existing.get(key)
                    common = {
                        "event_name": data.name,
                        "starts_at": data.starts_at,
                        "timezone": data.timezone,
                        "content": content,
                        "due_at": due,
                        "message_id": message_id,
                        "status": "pending",
                        "updated_at": now,
                        "recipient_enc": runtime.secrets.encrypt(attendee.phone),
                        "event_time": event.time,
                    }
                    if current is None:
                        if now - due > sched.grace:
                            continue  # already past when planned: never a reminder for a past time
                        inserts.append(
                            {
                                **common,
                                "id": uuid.uuid4(),
                                "tenant_id": event.tenantid,
                                "event_id": data.event_id,
                                "rule_name": rule.name,
                                "recipient_hash": phone_hash,
                                "priority": 5,
                                "created_at": now,
                            }
                        )
                    elif current.status in ("pending", "cancelled"):
                        if now - due > sched.grace:
                            await repo.update_reminder(
                                uow.conn, current.id, status="cancelled", updated_at=now
                            )
                        else:
                            await repo.update_reminder(uow.conn, current.id, **common)
            for key, current in existing.items():
                if key not in wanted and current.status == "pending":
                    await repo.update_reminder(
                        uow.conn, current.id, status="cancelled", updated_at=now, event_time=event.time
                    )
            await repo.insert_reminders(uow.conn, inserts)
            await _notify(uow)
            await uow.commit()
            return True

    return await runtime.with_db("plan event reminders", apply)


async def cancel_event_reminders(sched: Scheduler, event: CloudEvent[EventCancelled]) -> int:
    runtime = sched.runtime

    async def apply() -> int:
        async with runtime.uow() as uow:
            if not await uow.mark_processed(EVENTS_CONSUMER, f"{event.source}:{event.id}"):
                return 0
            now = utcnow()
            event_id = event.data.event_id
            rows = await repo.reminders_for_event(uow.conn, event.tenantid, event_id)
            if any(r.event_time > event.time for r in rows):
                # the event was published or changed after this cancellation was issued: it is on
                log.info("older event ignored", event_id=event_id, type=event.type)
                await uow.commit()
                return 0
            # remembered even when nothing is planned yet: an event.published that arrives after
            # its cancellation (several publishers, a redelivery) must plan nothing
            await repo.remember_cancellation(uow.conn, event.tenantid, event_id, event.time, now)
            count = await repo.cancel_pending_reminders(uow.conn, event.tenantid, event_id, now, event.time)
            await uow.commit()
            return count

    return await runtime.with_db("cancel event reminders", apply)


async def fire_due_reminders(sched: Scheduler, now: datetime | None = None) -> int:
    now = now or utcnow()
    fired = 0
    async with sched.runtime.uow() as uow:
        rows = await repo.claim_due_reminders(uow.conn, now, sched.batch_size)
        if not rows:
            return 0
        updates = []
        for row in rows:
            plan = plan_due(row.due_at, now, sched.grace, None)
            if plan.fire is not None:
                request = MessageRequested(
                    message_id=row.message_id,
                    to=sched.runtime.secrets.decrypt(row.recipient_enc),
                    content=row.content,
                    priority=row.priority,
                    origin="scheduler",
                    correlation_id=f"event:{row.event_id}:{row.rule_name}",
                )
                uow.add_event(
                    new_event(
                        request,
                        tenant_id=row.tenant_id,
                        source=SOURCE,
                        event_id=f"scheduler:{row.message_id}",
                        subject=f"event/{row.event_id}",
                    ),
                    priority=row.priority,
                )
                LATENESS.observe(max(0.0, (now - row.due_at).total_seconds()))
                fired += 1
            updates.append(
                {
                    "b_id": row.id,
                    "b_status": "published" if plan.fire is not None else "missed",
                    "b_published_at": now if plan.fire is not None else None,
                    "b_now": now,
                }
            )
        await repo.finish_reminders(uow.conn, updates)
        await uow.commit()
    FIRED.labels("reminder").inc(fired)
    MISSED.labels("reminder").inc(len(rows) - fired)
    return len(rows)


# --- pacing -----------------------------------------------------------------------------------


async def fire_due_pacing(sched: Scheduler, now: datetime | None = None) -> int:
    now = now or utcnow()
    fired = 0
    async with sched.runtime.uow() as uow:
        rows = await repo.claim_due_pacing(uow.conn, now, sched.batch_size)
        if not rows:
            return 0
        updates = []
        for row in rows:
            rec = Recurrence(timezone=row.timezone, start=row.start_local, rule=row.rule)
            plan = plan_due(row.next_at, now, sched.grace, rec)
            if plan.fire is not None:
                slot_id = occurrence_message_id(row.id, plan.fire)
                uow.add_event(
                    new_event(
                        PacingDue(user_id=row.user_id, schedule_id=row.id, slot_at=plan.fire),
                        tenant_id=row.tenant_id,
                        source=SOURCE,
                        event_id=f"pacing:{slot_id}",
                        subject=f"pacing/{row.id}",
                    )
                )
                LATENESS.observe(max(0.0, (now - plan.fire).total_seconds()))
                fired += 1
            updates.append({"b_id": row.id, "b_next_at": plan.next_due, "b_slot": plan.fire, "b_now": now})
        await repo.advance_pacing(uow.conn, updates)
        await uow.commit()
    FIRED.labels("pacing").inc(fired)
    return len(rows)


# --- delivery status --------------------------------------------------------------------------


async def follow_status(sched: Scheduler, event: CloudEvent[MessageStatusChanged]) -> bool:
    """Record a ``message.status`` on the occurrence or reminder it belongs to (matched by
    message_id). Messages the scheduler did not request are ignored. Idempotent: a status is
    only ever moved forward."""
    data = event.data
    if data.correlation_id is not None and not data.correlation_id.startswith(("schedule:", "event:")):
        return False  # the sender echoes the request's correlation id: not one of ours

    async def apply() -> bool:
        async with sched.runtime.uow() as uow:
            changed = False
            for table, current in await repo.delivery_targets(uow.conn, data.message_id):
                if delivery_moves(current.delivery_status, data.status):
                    await repo.set_delivery(
                        uow.conn, table, data.message_id, data.status, data.reason, data.at
                    )
                    changed = True
            await uow.commit()
            return changed

    return await sched.runtime.with_db("follow message status", apply)


# --- the loop ---------------------------------------------------------------------------------


async def fire_everything_due(sched: Scheduler) -> bool:
    """One pass over every kind; True when a kind filled its batch (more is waiting)."""
    full = False
    for fire in (fire_due, fire_due_reminders, fire_due_pacing):
        claimed = await fire(sched)
        full = full or claimed >= sched.batch_size
    return full


async def run_claim_loop(sched: Scheduler) -> None:
    """Fire due rows; sleep exactly until the next one is due, or until a change notifies."""
    runtime = sched.runtime
    wakeup = Wakeup(runtime.engine, DUE_CHANNEL)
    try:
        while not runtime.stopping.is_set():
            try:
                await wakeup.ensure_listening()
                if await fire_everything_due(sched):
                    continue
                async with runtime.engine.connect() as conn:
                    upcoming = await repo.next_due(conn)
                sleep = sched.max_sleep
                if upcoming is not None:
                    # a due row we could not claim is locked by another replica: look again soon,
                    # without spinning on it
                    sleep = min(sleep, max(0.05, (upcoming - utcnow()).total_seconds()))
                await wakeup.wait(sleep)
            except Exception as exc:
                log.warning("claim loop pass failed", error=repr(exc)[:200])
                await wakeup.close()
                await wakeup.wait(1.0)
    finally:
        await wakeup.close()


def next_five(row: Any, recurrence: Recurrence | None) -> list[datetime]:
    if row.status != "pending":
        return []
    if recurrence is None:
        return [row.send_at]
    return [row.send_at, *recurrence.next_n(row.send_at, 4)]


def utc(value: datetime) -> datetime:
    return value.astimezone(UTC)
