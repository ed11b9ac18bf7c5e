"""Firing what is due: scheduled messages, event reminders and pacing slots, and the claim loop.

Invariant of every claim (``fire_due``, ``fire_due_reminders``, ``fire_due_pacing``): the row
lock (``FOR UPDATE SKIP LOCKED``), the outbox rows, the history rows and the move to the next
occurrence commit in ONE transaction. Two replicas never fire the same row (the second skips the
locked row, and once committed the row is no longer due); a crash before the commit leaves the
row due for the next pass, and the message id is derived from the schedule and the occurrence
time, so even a replayed outbox row is the same message to the sender.

What fires and where a schedule goes next is decided in ``domain.py`` (``plan_due``,
``advance``); this module claims, builds the events and writes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from opentelemetry.trace import SpanKind
from pydantic import TypeAdapter

from services.scheduler import repository as repo
from services.scheduler.context import SOURCE, Scheduler
from services.scheduler.domain import (
    Recurrence,
    advance,
    occurrence_message_id,
    plan_due,
    recurrence_of,
)
from services.scheduler.metrics import FIRED, LATENESS, MISSED
from shared import tracing
from shared.events import (
    CloudEvent,
    MessageContent,
    MessageRequested,
    PacingDue,
    TemplateContent,
    new_event,
    utcnow,
)
from shared.logging import get_logger
from shared.notify import Wakeup

log = get_logger(__name__)

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


def _in_own_trace(event: CloudEvent[Any], created_in: str | None, **attributes: str) -> CloudEvent[Any]:
    """``event`` carrying the traceparent of a PRODUCER span of its own, the root of a new trace:
    each firing is a new causal chain (the request that made the schedule is long finished), and
    the consumers' spans (the sender's send, the pipeline's writer flow) join this trace. The span
    links to ``created_in``, the trace context stored with the row when it was created. Unchanged
    at no cost when tracing is off."""
    if not tracing.enabled():
        return event
    with tracing.span(
        f"scheduler fire {event.type}",
        kind=SpanKind.PRODUCER,
        parent=tracing.NEW_TRACE,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "create",
            "messaging.destination.name": event.type,
            "messaging.message.id": event.id,
            **attributes,
        },
    ):
        tracing.link_current(created_in)
        return tracing.inject(event)


@dataclass
class _RowOutcome:
    update: dict[str, Any]
    history: list[dict[str, Any]]
    event: CloudEvent[MessageRequested] | None
    lateness: float | None


def _occurrence(
    row: Any, due_at: datetime, message_id: uuid.UUID, status: str, now: datetime
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "schedule_id": row.id,
        "tenant_id": row.tenant_id,
        "due_at": due_at,
        "status": status,
        "fired_at": now,
    }


def _fire_row(sched: Scheduler, row: Any, now: datetime) -> _RowOutcome:
    """What the claim does with one due schedule (pure apart from decryption)."""
    rec = recurrence_of(row)
    grace = timedelta(seconds=row.grace_seconds) if row.grace_seconds is not None else sched.grace
    plan = plan_due(row.send_at, now, grace, rec)
    step = advance(row.id, row.send_at, row.message_id, plan, recurring=rec is not None)
    history = [
        _occurrence(row, when, occurrence_message_id(row.id, when), "missed", now) for when in plan.missed
    ]
    if plan.missed_uncounted:
        log.warning("occurrences skipped after a long outage", schedule_id=str(row.id))
    event = None
    lateness = None
    if plan.fire is not None and step.fired_id is not None:
        event = new_event(
            _request(sched, row, step.fired_id),
            tenant_id=row.tenant_id,
            source=SOURCE,
            event_id=f"scheduler:{step.fired_id}",
            subject=f"schedule/{row.id}",
        )
        event = _in_own_trace(
            event,
            row.traceparent,
            **{
                "herald.schedule_id": str(row.id),
                "herald.message_id": str(step.fired_id),
                "herald.occurrence_at": plan.fire.isoformat(),
            },
        )
        history.append(_occurrence(row, plan.fire, step.fired_id, "published", now))
        lateness = (now - plan.fire).total_seconds()
    update = {
        "b_id": row.id,
        "b_send_at": step.send_at,
        "b_status": step.status,
        "b_message_id": step.message_id,
        "b_published_at": now if plan.fire is not None else None,
        "b_fired": 1 if plan.fire is not None else 0,
        "b_missed": len(plan.missed),
        "b_now": now,
    }
    return _RowOutcome(update, history, event, lateness)


def _failed(row: Any, now: datetime) -> dict[str, Any]:
    return {
        "b_id": row.id,
        "b_send_at": row.send_at,
        "b_status": "failed",
        "b_message_id": row.message_id,
        "b_published_at": None,
        "b_fired": 0,
        "b_missed": 0,
        "b_now": now,
    }


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
                updates.append(_failed(row, now))
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
                event = new_event(
                    request,
                    tenant_id=row.tenant_id,
                    source=SOURCE,
                    event_id=f"scheduler:{row.message_id}",
                    subject=f"event/{row.event_id}",
                )
                event = _in_own_trace(
                    event,
                    row.traceparent,
                    **{"herald.reminder_id": str(row.id), "herald.message_id": str(row.message_id)},
                )
                uow.add_event(event, priority=row.priority)
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
                event = new_event(
                    PacingDue(user_id=row.user_id, schedule_id=row.id, slot_at=plan.fire),
                    tenant_id=row.tenant_id,
                    source=SOURCE,
                    event_id=f"pacing:{slot_id}",
                    subject=f"pacing/{row.id}",
                )
                uow.add_event(
                    _in_own_trace(
                        event,
                        row.traceparent,
                        **{"herald.pacing_schedule_id": str(row.id), "herald.slot_at": plan.fire.isoformat()},
                    )
                )
                LATENESS.observe(max(0.0, (now - plan.fire).total_seconds()))
                fired += 1
            updates.append({"b_id": row.id, "b_next_at": plan.next_due, "b_slot": plan.fire, "b_now": now})
        await repo.advance_pacing(uow.conn, updates)
        await uow.commit()
    FIRED.labels("pacing").inc(fired)
    return len(rows)


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
    wakeup = Wakeup(runtime.engine, repo.DUE_CHANNEL)
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
