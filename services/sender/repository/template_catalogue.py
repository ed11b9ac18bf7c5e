"""Queries of the template catalogue (``template_catalogue``). Imported as ``trepo`` (its names
would clash with the status table's in ``repository.catalogues``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.sender.models import channels
from services.sender.models import template_catalogue as tc


async def insert(conn: AsyncConnection, row: dict[str, Any]) -> Row[Any] | None:
    """Insert a template; None when (tenant, name, language) exists already."""
    stmt = pg.insert(tc).values(**row).on_conflict_do_nothing().returning(tc)
    return (await conn.execute(stmt)).first()


async def get(conn: AsyncConnection, tenant_id: uuid.UUID, template_id: uuid.UUID) -> Row[Any] | None:
    return (
        await conn.execute(sa.select(tc).where(tc.c.tenant_id == tenant_id, tc.c.id == template_id))
    ).first()


async def find(conn: AsyncConnection, tenant_id: uuid.UUID, name: str, language: str) -> Row[Any] | None:
    """The one indexed look-up of the accept path (uq_template_catalogue_name)."""
    q = sa.select(tc).where(tc.c.tenant_id == tenant_id, tc.c.name == name, tc.c.language == language)
    return (await conn.execute(q)).first()


async def find_many(
    conn: AsyncConnection, tenant_id: uuid.UUID, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], Row[Any]]:
    if not keys:
        return {}
    q = sa.select(tc).where(
        tc.c.tenant_id == tenant_id, sa.tuple_(tc.c.name, tc.c.language).in_(sorted(keys))
    )
    return {(r.name, r.language): r for r in (await conn.execute(q)).all()}


async def list_(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    *,
    name: str | None = None,
    language: str | None = None,
    status: str | None = None,
    channel_id: uuid.UUID | None = None,
) -> list[Row[Any]]:
    q = sa.select(tc).where(tc.c.tenant_id == tenant_id)
    if name:
        q = q.where(tc.c.name == name)
    if language:
        q = q.where(tc.c.language == language)
    if status:
        q = q.where(tc.c.status == status)
    if channel_id:
        q = q.where(tc.c.channel_id == channel_id)
    return list((await conn.execute(q.order_by(tc.c.name, tc.c.language).limit(1000))).all())


async def update(conn: AsyncConnection, template_id: uuid.UUID, **values: Any) -> Row[Any] | None:
    q = sa.update(tc).where(tc.c.id == template_id).values(**values).returning(tc)
    return (await conn.execute(q)).first()


async def set_status_by_name(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    name: str,
    language: str,
    status: str,
    reason: str | None,
    at: datetime,
) -> None:
    """Meta's word on a template (webhook or send error); an older word changes nothing."""
    await conn.execute(
        sa.update(tc)
        .where(
            tc.c.tenant_id == tenant_id,
            tc.c.name == name,
            tc.c.language == language,
            tc.c.updated_at <= at,
        )
        .values(status=status, reason=reason, updated_at=at)
    )


async def delete(conn: AsyncConnection, template_id: uuid.UUID) -> None:
    await conn.execute(sa.delete(tc).where(tc.c.id == template_id))


async def meta_channels(conn: AsyncConnection, tenant_id: uuid.UUID | None) -> list[Row[Any]]:
    """Live Meta channels with a WABA id (of one tenant, or of all when ``tenant_id`` is None)."""
    q = sa.select(channels).where(
        channels.c.provider == "meta",
        channels.c.deleted_at.is_(None),
        channels.c.settings.has_key("waba_id"),
    )
    if tenant_id is not None:
        q = q.where(channels.c.tenant_id == tenant_id)
    return list((await conn.execute(q.order_by(channels.c.created_at))).all())
