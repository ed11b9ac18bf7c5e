"""SQL of notification rules, their decisions and order progress. Never commits."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.pipeline.models_rules import order_notices as on
from services.pipeline.models_rules import order_progress as op
from services.pipeline.models_rules import rule_decisions as rd
from services.pipeline.models_rules import rules as rl


class NameTaken(Exception):
    """The tenant already has a rule of that name."""


# --- rules -------------------------------------------------------------------------------------


async def list_rules(
    conn: AsyncConnection, tenant_id: uuid.UUID, event_type: str | None = None
) -> list[Row[Any]]:
    q = sa.select(rl).where(rl.c.tenant_id == tenant_id)
    if event_type is not None:
        q = q.where(rl.c.event_type == event_type)
    return list((await conn.execute(q.order_by(rl.c.priority.desc(), rl.c.name))).all())


async def get_rule(conn: AsyncConnection, tenant_id: uuid.UUID, rule_id: uuid.UUID) -> Row[Any] | None:
    q = sa.select(rl).where(rl.c.tenant_id == tenant_id, rl.c.id == rule_id)
    return (await conn.execute(q)).first()


async def insert_rule(conn: AsyncConnection, values: dict[str, Any]) -> None:
    q = pg.insert(rl).values(**values).on_conflict_do_nothing(constraint="uq_rules_name")
    if not (await conn.execute(q)).rowcount:
        raise NameTaken(values["name"])


async def update_rule(
    conn: AsyncConnection, tenant_id: uuid.UUID, rule_id: uuid.UUID, values: dict[str, Any]
) -> None:
    clash = sa.select(rl.c.id).where(
        rl.c.tenant_id == tenant_id, rl.c.name == values["name"], rl.c.id != rule_id
    )
    if (await conn.execute(clash)).first() is not None:
        raise NameTaken(values["name"])
    await conn.execute(
        sa.update(rl)
        .where(rl.c.tenant_id == tenant_id, rl.c.id == rule_id)
        .values(**values, updated_at=sa.func.now())
    )


async def delete_rule(conn: AsyncConnection, tenant_id: uuid.UUID, rule_id: uuid.UUID) -> bool:
    res = await conn.execute(sa.delete(rl).where(rl.c.tenant_id == tenant_id, rl.c.id == rule_id))
    return bool(res.rowcount)


# --- decisions ---------------------------------------------------------------------------------


async def insert_decisions(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(sa.insert(rd), rows)


async def list_decisions(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    *,
    event_id: str | None,
    order_id: str | None,
    limit: int,
) -> list[Row[Any]]:
    q = sa.select(rd).where(rd.c.tenant_id == tenant_id)
    if event_id is not None:
        q = q.where(rd.c.event_id == event_id)
    if order_id is not None:
        q = q.where(rd.c.order_id == order_id)
    return list((await conn.execute(q.order_by(rd.c.created_at.desc(), rd.c.id).limit(limit))).all())


# --- order progress ----------------------------------------------------------------------------


async def lock_order(conn: AsyncConnection, tenant_id: uuid.UUID, order_id: str) -> Row[Any]:
    """The order's progress row, created if new and locked until the transaction ends: the
    statuses of one order are decided one at a time, whichever replica handles them."""
    await conn.execute(pg.insert(op).values(tenant_id=tenant_id, order_id=order_id).on_conflict_do_nothing())
    q = sa.select(op).where(op.c.tenant_id == tenant_id, op.c.order_id == order_id).with_for_update()
    return (await conn.execute(q)).one()


async def advance_order(
    conn: AsyncConnection, tenant_id: uuid.UUID, order_id: str, status: str, rank: int
) -> None:
    await conn.execute(
        sa.update(op)
        .where(op.c.tenant_id == tenant_id, op.c.order_id == order_id)
        .values(status=status, rank=rank, updated_at=sa.func.now())
    )


async def claim_notice(conn: AsyncConnection, values: dict[str, Any]) -> bool:
    """False when this order's status was already notified by this rule (a duplicate report)."""
    q = pg.insert(on).values(**values).on_conflict_do_nothing()
    return bool((await conn.execute(q)).rowcount)
