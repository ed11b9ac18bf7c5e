"""Event reminders: planned on ``event.published`` / ``event.changed``, cancelled on
``event.cancelled``, listed for the API. Firing them is in ``firing.py``; the tenant's and the
event's policies are in ``policies.py``.

Which attendee gets which reminder, when, with what content, and what re-planning does with a
row that already exists are pure rules in ``domain.py`` (``reminder_pairs``, ``ReminderRule``,
``reminder_action``, ``is_stale``); this module loads, decides and writes.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.engine import Row

from services.scheduler import repository as repo
from services.scheduler.context import EVENTS_CONSUMER, Scheduler
from services.scheduler.domain import (
    event_fields,
    is_stale,
    policy_rules,
    reminder_action,
    reminder_message_id,
    reminder_pairs,
    render_param,
    zone,
)
from shared.events import CloudEvent, EventCancelled, EventPublished, TemplateContent, utcnow
from shared.logging import get_logger

log = get_logger(__name__)


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
            if is_stale(event.time, [r.event_time for r in rows], cancelled_at):
                # an older event arriving late: it must not undo a newer change or a cancellation
                log.info("older event ignored", event_id=data.event_id, type=event.type)
                await uow.commit()  # keep the processed mark: a redelivery is ignored at once
                return False
            existing = {(r.recipient_hash, r.rule_name): r for r in rows}
            fields = event_fields(data.event_id, data.name, data.starts_at, data.timezone)
            hashes = [sched.hash(a.phone) for a in data.attendees]
            pairs = reminder_pairs(
                [(h, a.attributes) for h, a in zip(hashes, data.attendees, strict=True)], rules
            )
            wanted = {(hashes[i], rule.name) for i, rule in pairs}
            inserts: list[dict[str, Any]] = []
            for index, rule in pairs:
                attendee, phone_hash = data.attendees[index], hashes[index]
                due = rule.due_at(data.starts_at, tz)
                current = existing.get((phone_hash, rule.name))
                action = reminder_action(current.status if current else None, due, now, sched.grace)
                if action in ("skip", "keep"):
                    continue
                if action == "cancel":
                    assert current is not None
                    await repo.update_reminder(uow.conn, current.id, status="cancelled", updated_at=now)
                    continue
                person = attendee.model_dump(exclude={"phone"})
                content = TemplateContent(
                    name=rule.template_name,
                    language=rule.template_language or attendee.language or sched.default_language,
                    body_params=[render_param(p, fields, person) for p in rule.body_params],
                ).model_dump(mode="json", exclude_none=True)
                common = {
                    "event_name": data.name,
                    "starts_at": data.starts_at,
                    "timezone": data.timezone,
                    "content": content,
                    "due_at": due,
                    "message_id": reminder_message_id(
                        event.tenantid, data.event_id, phone_hash, rule.name, due
                    ),
                    "status": "pending",
                    "updated_at": now,
                    "recipient_enc": runtime.secrets.encrypt(attendee.phone),
                    "event_time": event.time,
                }
                if action == "update":
                    assert current is not None
                    await repo.update_reminder(uow.conn, current.id, **common)
                    continue
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
            for key, current in existing.items():
                if key not in wanted and current.status == "pending":
                    await repo.update_reminder(
                        uow.conn, current.id, status="cancelled", updated_at=now, event_time=event.time
                    )
            await repo.insert_reminders(uow.conn, inserts)
            await repo.notify_due(uow.conn)
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
            if is_stale(event.time, [r.event_time for r in rows], None):
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


async def list_reminders(
    sched: Scheduler, tenant_id: uuid.UUID, *, event_id: str | None, status: str | None, limit: int
) -> list[Row[Any]]:
    async with sched.runtime.engine.connect() as conn:
        return await repo.list_reminders(conn, tenant_id, event_id=event_id, status=status, limit=limit)
