"""Queries of the sender schema. Functions take the unit of work's connection and never commit."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.sender.models import (
    channels,
    message_history,
    messages,
    opt_outs,
    pair_pacing,
    sandbox_messages,
)


async def insert_message(conn: AsyncConnection, values: dict[str, Any]) -> bool:
    """Insert unless the id or the tenant's idempotency key exists; True if inserted."""
    stmt = pg.insert(messages).values(**values).on_conflict_do_nothing().returning(messages.c.id)
    return (await conn.execute(stmt)).first() is not None


async def insert_messages(conn: AsyncConnection, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
    """Insert many; the ids actually inserted (an existing id or idempotency key is skipped)."""
    if not rows:
        return set()
    stmt = pg.insert(messages).values(rows).on_conflict_do_nothing().returning(messages.c.id)
    return {r.id for r in await conn.execute(stmt)}


async def add_histories(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await conn.execute(sa.insert(message_history), rows)


async def find_by_idempotency_key(conn: AsyncConnection, tenant_id: uuid.UUID, key: str) -> Row[Any] | None:
    return (
        await conn.execute(
            sa.select(messages).where(messages.c.tenant_id == tenant_id, messages.c.idempotency_key == key)
        )
    ).first()


async def get_message(conn: AsyncConnection, tenant_id: uuid.UUID, message_id: uuid.UUID) -> Row[Any] | None:
    return (
        await conn.execute(
            sa.select(messages).where(messages.c.tenant_id == tenant_id, messages.c.id == message_id)
        )
    ).first()


async def lock_message(conn: AsyncConnection, message_id: uuid.UUID) -> Row[Any] | None:
    return (
        await conn.execute(sa.select(messages).where(messages.c.id == message_id).with_for_update())
    ).first()


async def pair_next_at(conn: AsyncConnection, channel_id: uuid.UUID, recipient_hash: str) -> datetime | None:
    """When the channel may next send to this recipient (the pair interval), if it has sent to them."""
    return (
        await conn.execute(
            sa.select(pair_pacing.c.next_at).where(
                pair_pacing.c.channel_id == channel_id, pair_pacing.c.recipient_hash == recipient_hash
            )
        )
    ).scalar()


async def update_message(conn: AsyncConnection, message_id: uuid.UUID, **values: Any) -> None:
    await conn.execute(sa.update(messages).where(messages.c.id == message_id).values(**values))


async def add_history(
    conn: AsyncConnection, message_id: uuid.UUID, status: str, reason: str | None, at: datetime
) -> None:
    await conn.execute(
        sa.insert(message_history).values(message_id=message_id, status=status, reason=reason, at=at)
    )


async def history(conn: AsyncConnection, message_id: uuid.UUID) -> list[Row[Any]]:
    return list(
        (
            await conn.execute(
                sa.select(message_history.c.status, message_history.c.reason, message_history.c.at)
                .where(message_history.c.message_id == message_id)
                .order_by(message_history.c.id)
            )
        ).all()
    )


async def list_messages(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    *,
    status: str | None,
    recipient_hash: str | None,
    channel_id: uuid.UUID | None = None,
    dead_letter: bool | None = None,
    created_before: datetime | None,
    created_after: datetime | None,
    limit: int,
) -> list[Row[Any]]:
    q = sa.select(messages).where(messages.c.tenant_id == tenant_id)
    if status:
        q = q.where(messages.c.status == status)
    if recipient_hash:
        q = q.where(messages.c.recipient_hash == recipient_hash)
    if channel_id:
        q = q.where(messages.c.channel_id == channel_id)
    if dead_letter is not None:
        q = q.where(messages.c.dead_letter.is_(dead_letter))
    if created_before:
        q = q.where(messages.c.created_at < created_before)
    if created_after:
        q = q.where(messages.c.created_at >= created_after)
    return list((await conn.execute(q.order_by(messages.c.created_at.desc()).limit(limit))).all())


async def orphaned_sending(conn: AsyncConnection, cutoff: datetime, limit: int) -> list[Row[Any]]:
    """Messages stuck in ``sending`` since before ``cutoff``, locked (``SKIP LOCKED``: two
    replicas sweeping at once split the orphans instead of reconciling one twice)."""
    return list(
        (
            await conn.execute(
                sa.select(messages)
                .where(messages.c.status == "sending", messages.c.sending_started_at < cutoff)
                .order_by(messages.c.sending_started_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
    )


async def list_sandbox(
    conn: AsyncConnection, tenant_id: uuid.UUID, *, message_id: uuid.UUID | None, limit: int
) -> list[Row[Any]]:
    q = sa.select(sandbox_messages).where(sandbox_messages.c.tenant_id == tenant_id)
    if message_id:
        q = q.where(sandbox_messages.c.message_id == message_id)
    return list((await conn.execute(q.order_by(sandbox_messages.c.id.desc()).limit(limit))).all())


# --- channels ----------------------------------------------------------------------------------


async def default_channel(conn: AsyncConnection, tenant_id: uuid.UUID) -> uuid.UUID | None:
    return (
        await conn.execute(
            sa.select(channels.c.id).where(
                channels.c.tenant_id == tenant_id, channels.c.is_default, channels.c.deleted_at.is_(None)
            )
        )
    ).scalar_one_or_none()


async def channel_exists(conn: AsyncConnection, tenant_id: uuid.UUID, channel_id: uuid.UUID) -> bool:
    return (await get_channel(conn, tenant_id, channel_id)) is not None


async def get_channel(conn: AsyncConnection, tenant_id: uuid.UUID, channel_id: uuid.UUID) -> Row[Any] | None:
    return (
        await conn.execute(
            sa.select(channels).where(
                channels.c.tenant_id == tenant_id,
                channels.c.id == channel_id,
                channels.c.deleted_at.is_(None),
            )
        )
    ).first()


async def get_channel_any(conn: AsyncConnection, channel_id: uuid.UUID) -> Row[Any] | None:
    return (await conn.execute(sa.select(channels).where(channels.c.id == channel_id))).first()


async def list_channels(conn: AsyncConnection, tenant_id: uuid.UUID) -> list[Row[Any]]:
    return list(
        (
            await conn.execute(
                sa.select(channels)
                .where(channels.c.tenant_id == tenant_id, channels.c.deleted_at.is_(None))
                .order_by(channels.c.created_at)
            )
        ).all()
    )


async def list_opt_outs(conn: AsyncConnection, tenant_id: uuid.UUID, limit: int) -> list[Row[Any]]:
    return list(
        (
            await conn.execute(
                sa.select(opt_outs)
                .where(opt_outs.c.tenant_id == tenant_id)
                .order_by(opt_outs.c.at.desc())
                .limit(limit)
            )
        ).all()
    )
