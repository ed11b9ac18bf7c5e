"""Queries of the catalogues admission reads: templates, 24-hour windows, opt-outs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.sender.models import (
    opt_outs,
    templates,
    windows,
)

# --- catalogues: templates, windows, opt-outs --------------------------------------------------------


async def upsert_template(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    name: str,
    language: str,
    status: str,
    reason: str | None,
    at: datetime,
) -> None:
    """Record Meta's word on a template; an older word arriving late changes nothing."""
    stmt = pg.insert(templates).values(
        tenant_id=tenant_id, name=name, language=language, status=status, reason=reason, at=at
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[templates.c.tenant_id, templates.c.name, templates.c.language],
            set_={"status": stmt.excluded.status, "reason": stmt.excluded.reason, "at": stmt.excluded.at},
            where=templates.c.at <= stmt.excluded.at,
        )
    )


async def list_templates(
    conn: AsyncConnection, tenant_id: uuid.UUID, *, name: str | None, status: str | None
) -> list[Row[Any]]:
    q = sa.select(templates).where(templates.c.tenant_id == tenant_id)
    if name:
        q = q.where(templates.c.name == name)
    if status:
        q = q.where(templates.c.status == status)
    return list((await conn.execute(q.order_by(templates.c.name, templates.c.language).limit(1000))).all())


async def open_window(
    conn: AsyncConnection, tenant_id: uuid.UUID, recipient_hash: str, channel_key: uuid.UUID, at: datetime
) -> None:
    stmt = pg.insert(windows).values(
        tenant_id=tenant_id, recipient_hash=recipient_hash, channel_key=channel_key, last_inbound_at=at
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[windows.c.tenant_id, windows.c.recipient_hash, windows.c.channel_key],
            set_={
                "last_inbound_at": sa.func.greatest(windows.c.last_inbound_at, stmt.excluded.last_inbound_at)
            },
        )
    )


async def upsert_opt_out(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    recipient_hash: str,
    recipient_enc: str,
    reason: str | None,
    at: datetime,
) -> None:
    """Add (or refresh) an opt-out; an older one arriving late changes nothing."""
    stmt = pg.insert(opt_outs).values(
        tenant_id=tenant_id, recipient_hash=recipient_hash, recipient_enc=recipient_enc, reason=reason, at=at
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[opt_outs.c.tenant_id, opt_outs.c.recipient_hash],
            set_={"reason": stmt.excluded.reason, "at": stmt.excluded.at},
            where=opt_outs.c.at <= stmt.excluded.at,
        )
    )


async def delete_opt_out(
    conn: AsyncConnection, tenant_id: uuid.UUID, recipient_hash: str, at: datetime | None
) -> bool:
    """Remove an opt-out (one made after ``at`` stays: a late opt-in does not undo a newer opt-out)."""
    q = sa.delete(opt_outs).where(
        opt_outs.c.tenant_id == tenant_id, opt_outs.c.recipient_hash == recipient_hash
    )
    if at is not None:
        q = q.where(opt_outs.c.at <= at)
    return bool((await conn.execute(q)).rowcount)
