"""Pacing schedules: a user's slots (days × local times in a zone), each published as
``pacing.due`` by ``firing.fire_due_pacing``. Create, list, read, edit, delete.

The rule a schedule becomes, how times are stored and which slots come next are in
``domain.py`` (``pacing_plan``, ``pacing_times``, ``pacing_slots``).
"""

from __future__ import annotations

import uuid
from datetime import time
from typing import Any

from sqlalchemy.engine import Row

from services.scheduler import repository as repo
from services.scheduler.context import Scheduler
from services.scheduler.domain import pacing_plan, pacing_times
from shared.events import utcnow


async def create(
    sched: Scheduler,
    tenant_id: uuid.UUID,
    *,
    user_id: str,
    days: list[str],
    times: list[time],
    timezone: str,
    active: bool,
) -> Row[Any]:
    """Raises ScheduleError (naming ``timezone`` or ``times``) for a rule that cannot be built."""
    now = utcnow()
    rec = pacing_plan(timezone, days, times, now)
    pacing_id = uuid.uuid4()
    async with sched.runtime.uow() as uow:
        await repo.insert_pacing(
            uow.conn,
            {
                "id": pacing_id,
                "tenant_id": tenant_id,
                "user_id": user_id,
                "days": days,
                "times": pacing_times(times),
                "timezone": timezone,
                "active": active,
                "start_local": rec.start,
                "rule": rec.rule,
                "next_at": rec.next_after(now),
                "created_at": now,
                "updated_at": now,
            },
        )
        await repo.notify_due(uow.conn)
        await uow.commit()
        row = await repo.get_pacing(uow.conn, tenant_id, pacing_id)
    assert row is not None
    return row


async def get(sched: Scheduler, tenant_id: uuid.UUID, pacing_id: uuid.UUID) -> Row[Any] | None:
    async with sched.runtime.engine.connect() as conn:
        return await repo.get_pacing(conn, tenant_id, pacing_id)


async def list_pacing(
    sched: Scheduler, tenant_id: uuid.UUID, *, user_id: str | None, limit: int
) -> list[Row[Any]]:
    async with sched.runtime.engine.connect() as conn:
        return await repo.list_pacing(conn, tenant_id, user_id, limit)


async def edit(
    sched: Scheduler,
    tenant_id: uuid.UUID,
    pacing_id: uuid.UUID,
    *,
    days: list[str] | None = None,
    times: list[time] | None = None,
    timezone: str | None = None,
    active: bool | None = None,
) -> Row[Any] | None:
    """Change what is given (None: keep it) and re-plan the next slot; None if there is no such
    schedule. Raises ScheduleError (naming the field) for a rule that cannot be built."""
    async with sched.runtime.uow() as uow:
        row = await repo.get_pacing(uow.conn, tenant_id, pacing_id, lock=True)
        if row is None:
            return None
        days = days if days is not None else list(row.days)
        times = times if times is not None else [time.fromisoformat(t) for t in row.times]
        timezone = timezone if timezone is not None else row.timezone
        active = active if active is not None else row.active
        now = utcnow()
        rec = pacing_plan(timezone, days, times, now)
        await repo.update_pacing(
            uow.conn,
            pacing_id,
            days=days,
            times=pacing_times(times),
            timezone=timezone,
            active=active,
            start_local=rec.start,
            rule=rec.rule,
            next_at=rec.next_after(now),
            updated_at=now,
        )
        await repo.notify_due(uow.conn)
        await uow.commit()
        return await repo.get_pacing(uow.conn, tenant_id, pacing_id)


async def delete(sched: Scheduler, tenant_id: uuid.UUID, pacing_id: uuid.UUID) -> bool:
    async with sched.runtime.uow() as uow:
        deleted = await repo.delete_pacing(uow.conn, tenant_id, pacing_id)
        await uow.commit()
    return deleted
