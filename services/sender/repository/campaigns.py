"""Queries of campaigns: the campaign row, its pages' answers, and its messages by campaign_id."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.sender.models import campaign_pages, campaigns, messages

__all__ = [
    "add_campaign_counts",
    "campaign_by_idempotency_key",
    "campaign_page",
    "campaign_recipients_among",
    "campaign_status_counts",
    "get_campaign",
    "hold_campaign",
    "insert_campaign",
    "insert_campaign_page",
    "list_campaigns",
    "lock_campaign",
    "lock_campaign_unsent",
    "release_campaign",
    "set_campaign_state",
]


async def insert_campaign(conn: AsyncConnection, values: dict[str, Any]) -> bool:
    """Insert unless the tenant's idempotency key exists; True if inserted."""
    stmt = pg.insert(campaigns).values(**values).on_conflict_do_nothing().returning(campaigns.c.id)
    return (await conn.execute(stmt)).first() is not None


async def campaign_by_idempotency_key(
    conn: AsyncConnection, tenant_id: uuid.UUID, key: str
) -> Row[Any] | None:
    return (
        await conn.execute(
            sa.select(campaigns).where(campaigns.c.tenant_id == tenant_id, campaigns.c.idempotency_key == key)
        )
    ).first()


async def get_campaign(
    conn: AsyncConnection, tenant_id: uuid.UUID, campaign_id: uuid.UUID
) -> Row[Any] | None:
    return (
        await conn.execute(
            sa.select(campaigns).where(campaigns.c.tenant_id == tenant_id, campaigns.c.id == campaign_id)
        )
    ).first()


async def lock_campaign(
    conn: AsyncConnection, tenant_id: uuid.UUID, campaign_id: uuid.UUID
) -> Row[Any] | None:
    """The campaign row, locked: pages, pause, resume and cancel of one campaign run one at a time."""
    return (
        await conn.execute(
            sa.select(campaigns)
            .where(campaigns.c.tenant_id == tenant_id, campaigns.c.id == campaign_id)
            .with_for_update()
        )
    ).first()


async def list_campaigns(conn: AsyncConnection, tenant_id: uuid.UUID, limit: int) -> list[Row[Any]]:
    return list(
        (
            await conn.execute(
                sa.select(campaigns)
                .where(campaigns.c.tenant_id == tenant_id)
                .order_by(campaigns.c.created_at.desc())
                .limit(limit)
            )
        ).all()
    )


async def set_campaign_state(
    conn: AsyncConnection, campaign_id: uuid.UUID, state: str, now: datetime
) -> None:
    await conn.execute(
        sa.update(campaigns).where(campaigns.c.id == campaign_id).values(state=state, updated_at=now)
    )


async def add_campaign_counts(
    conn: AsyncConnection, campaign_id: uuid.UUID, accepted: int, refused: int, now: datetime
) -> None:
    await conn.execute(
        sa.update(campaigns)
        .where(campaigns.c.id == campaign_id)
        .values(
            accepted=campaigns.c.accepted + accepted, refused=campaigns.c.refused + refused, updated_at=now
        )
    )


async def campaign_page(conn: AsyncConnection, campaign_id: uuid.UUID, key: str) -> Row[Any] | None:
    return (
        await conn.execute(
            sa.select(campaign_pages).where(
                campaign_pages.c.campaign_id == campaign_id, campaign_pages.c.idempotency_key == key
            )
        )
    ).first()


async def insert_campaign_page(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(sa.insert(campaign_pages).values(**values))


async def campaign_recipients_among(
    conn: AsyncConnection, campaign_id: uuid.UUID, hashes: list[str]
) -> set[str]:
    """Which of these recipients the campaign already has (a duplicate across pages)."""
    if not hashes:
        return set()
    return set(
        (
            await conn.execute(
                sa.select(messages.c.recipient_hash).where(
                    messages.c.campaign_id == campaign_id, messages.c.recipient_hash.in_(hashes)
                )
            )
        ).scalars()
    )


async def campaign_status_counts(conn: AsyncConnection, campaign_id: uuid.UUID) -> dict[str, int]:
    """The campaign's messages by status; a cancelled one is counted as ``cancelled``."""
    status = sa.case(
        (messages.c.error_code == "campaign_cancelled", sa.literal("cancelled")), else_=messages.c.status
    ).label("s")
    rows = await conn.execute(
        sa.select(status, sa.func.count()).where(messages.c.campaign_id == campaign_id).group_by(status)
    )
    return {s: n for s, n in rows.all()}


async def hold_campaign(conn: AsyncConnection, campaign_id: uuid.UUID, now: datetime) -> int:
    """Pause: park the campaign's queued messages as ``held``, which no claim reads. A message a
    dispatcher has locked is waited for and, once ``sending``, left to finish. How many."""
    result = await conn.execute(
        sa.update(messages)
        .where(messages.c.campaign_id == campaign_id, messages.c.status == "queued")
        .values(status="held", updated_at=now)
    )
    return result.rowcount or 0


async def release_campaign(conn: AsyncConnection, campaign_id: uuid.UUID, now: datetime) -> int:
    """Resume: the campaign's held messages are ``queued`` again, due as they were. How many."""
    result = await conn.execute(
        sa.update(messages)
        .where(messages.c.campaign_id == campaign_id, messages.c.status == "held")
        .values(status="queued", updated_at=now)
    )
    return result.rowcount or 0


async def lock_campaign_unsent(conn: AsyncConnection, campaign_id: uuid.UUID) -> list[Row[Any]]:
    """Cancel: the campaign's messages not yet handed to a dispatcher (queued or held), locked.
    Not SKIP LOCKED: a row a claim holds is waited for, then re-checked (sending ones drop out)."""
    return list(
        (
            await conn.execute(
                sa.select(messages)
                .where(messages.c.campaign_id == campaign_id, messages.c.status.in_(("queued", "held")))
                .with_for_update()
            )
        ).all()
    )
