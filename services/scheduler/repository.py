from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.models import scheduled_messages as sm


async def insert(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(sa.insert(sm).values(**values))


async def get(
    conn: AsyncConnection, tenant_id: uuid.UUID, schedule_id: uuid.UUID, *, lock: bool = False
) -> Row[Any] | None:
    q = sa.select(sm).where(sm.c.tenant_id == tenant_id, sm.c.id == schedule_id)
    if lock:
        q = q.with_for_update()
    return (await conn.execute(q)).first()


async def list_for_tenant(
    conn: AsyncConnection, tenant_id: uuid.UUID, *, status: str | None, limit: int
) -> list[Row[Any]]:
    q = sa.select(sm).where(sm.c.tenant_id == tenant_id)
    if status:
        q = q.where(sm.c.status == status)
    return list((await conn.execute(q.order_by(sm.c.send_at).limit(limit))).all())


async def update(conn: AsyncConnection, schedule_id: uuid.UUID, **values: Any) -> None:
    await conn.execute(sa.update(sm).where(sm.c.id == schedule_id).values(**values))


async def claim_due(conn: AsyncConnection, now: datetime, limit: int) -> list[Row[Any]]:
    """Lock due rows; rows another replica holds are skipped, never waited for."""
    return list(
        (
            await conn.execute(
                sa.select(sm)
                .where(sm.c.status == "pending", sm.c.send_at <= now)
                .order_by(sm.c.send_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
    )


async def mark_published(conn: AsyncConnection, ids: list[uuid.UUID], now: datetime) -> None:
    await conn.execute(
        sa.update(sm).where(sm.c.id.in_(ids)).values(status="published", published_at=now, updated_at=now)
    )


async def next_due(conn: AsyncConnection) -> datetime | None:
    return (
        await conn.execute(sa.select(sa.func.min(sm.c.send_at)).where(sm.c.status == "pending"))
    ).scalar_one_or_none()
