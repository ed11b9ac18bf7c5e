"""Scheduled messages (one-off and recurring): create, edit, cancel, list, detail.

The rules (when the first occurrence is, what may be edited or cancelled) are in ``domain.py``;
this module loads, decides and writes. Every write that can change what is due next wakes the
claim loop (``repo.notify_due``) in the same transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Row

from services.scheduler import repository as repo
from services.scheduler.context import Scheduler
from services.scheduler.domain import (
    Recurrence,
    can_cancel,
    can_edit,
    first_due,
    next_occurrences,
    occurrence_message_id,
    recurrence_of,
)
from shared.events import utcnow


class NotCancellable(Exception):
    pass


class NotEditable(Exception):
    pass


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
        await repo.notify_due(uow.conn)
        await uow.commit()
        row = await repo.get(uow.conn, tenant_id, schedule_id)
    assert row is not None
    return row


def _timing(schedule_id: uuid.UUID, changes: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The columns a new ``recurrence`` or ``send_at`` re-plans (none if neither changes)."""
    if "recurrence" in changes:
        rec: Recurrence = changes["recurrence"]
        due = first_due(None, rec, now)
        return {
            "kind": "recurring",
            "timezone": rec.timezone,
            "start_local": rec.start,
            "rule": rec.rule,
            "recurrence": changes.get("recurrence_spec"),
            "send_at": due,
            "message_id": occurrence_message_id(schedule_id, due),
        }
    if "send_at" in changes:
        due = first_due(changes["send_at"], None, now)
        return {
            "kind": "one_off",
            "timezone": None,
            "start_local": None,
            "rule": None,
            "recurrence": None,
            "send_at": due,
            "message_id": occurrence_message_id(schedule_id, due),
        }
    return {}


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
        values.update(_timing(schedule_id, changes, now))
        await repo.update(uow.conn, schedule_id, **values)
        await repo.notify_due(uow.conn)
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


async def list_schedules(
    sched: Scheduler, tenant_id: uuid.UUID, *, status: str | None, recipient: str | None, limit: int
) -> list[Row[Any]]:
    async with sched.runtime.engine.connect() as conn:
        return await repo.list_for_tenant(
            conn,
            tenant_id,
            status=status,
            limit=limit,
            recipient_hash=sched.hash(recipient) if recipient else None,
        )


@dataclass
class Detail:
    row: Row[Any]
    next_occurrences: list[datetime]
    history: list[Row[Any]]


async def detail(sched: Scheduler, tenant_id: uuid.UUID, schedule_id: uuid.UUID) -> Detail | None:
    """One schedule with its next five occurrences and its past ones (latest first)."""
    async with sched.runtime.engine.connect() as conn:
        row = await repo.get(conn, tenant_id, schedule_id)
        if row is None:
            return None
        past = await repo.history(conn, schedule_id)
    return Detail(row, next_occurrences(row.status, row.send_at, recurrence_of(row)), past)
