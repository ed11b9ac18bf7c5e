"""Reminder policies: the tenant's (or the built-in default) and one event's override.

A policy applies to events planned (or re-planned) after it is set; ``reminders.py`` reads it
when it plans. The built-in default and the parsing of a stored policy are in ``domain.py``
(``default_policy``, ``policy_rules``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from services.scheduler import repository as repo
from services.scheduler.context import Scheduler
from services.scheduler.domain import default_policy
from shared.events import utcnow


@dataclass
class Policy:
    builtin: bool
    reminders: list[dict[str, Any]]


async def tenant_policy(sched: Scheduler, tenant_id: uuid.UUID) -> Policy:
    async with sched.runtime.engine.connect() as conn:
        row = await repo.get_policy(conn, tenant_id)
    if row is None:
        return Policy(builtin=True, reminders=default_policy())
    return Policy(builtin=False, reminders=row.reminders)


async def set_tenant_policy(
    sched: Scheduler, tenant_id: uuid.UUID, reminders: list[dict[str, Any]]
) -> Policy:
    async with sched.runtime.uow() as uow:
        await repo.put_policy(uow.conn, tenant_id, reminders, utcnow())
        await uow.commit()
    return Policy(builtin=False, reminders=reminders)


async def reset_tenant_policy(sched: Scheduler, tenant_id: uuid.UUID) -> Policy:
    """Back to the built-in default."""
    async with sched.runtime.uow() as uow:
        await repo.delete_policy(uow.conn, tenant_id)
        await uow.commit()
    return Policy(builtin=True, reminders=default_policy())


async def event_policy(sched: Scheduler, tenant_id: uuid.UUID, event_id: str) -> Policy:
    """What applies to one event: its own policy, else the tenant's, else the default."""
    async with sched.runtime.engine.connect() as conn:
        row = await repo.get_event_policy(conn, tenant_id, event_id)
    if row is None:
        return await tenant_policy(sched, tenant_id)
    return Policy(builtin=False, reminders=row.reminders)


async def set_event_policy(
    sched: Scheduler, tenant_id: uuid.UUID, event_id: str, reminders: list[dict[str, Any]]
) -> Policy:
    async with sched.runtime.uow() as uow:
        await repo.put_event_policy(uow.conn, tenant_id, event_id, reminders, utcnow())
        await uow.commit()
    return Policy(builtin=False, reminders=reminders)


async def delete_event_policy(sched: Scheduler, tenant_id: uuid.UUID, event_id: str) -> bool:
    """Remove one event's override; False if it had none."""
    async with sched.runtime.uow() as uow:
        deleted = await repo.delete_event_policy(uow.conn, tenant_id, event_id)
        await uow.commit()
    return deleted
