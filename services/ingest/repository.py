"""SQL of ingest's use cases (erasure and statistics); handlers call these inside a transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ingest.models import contacts, media_jobs, rejections, webhook_deliveries, webhook_keys


@dataclass(frozen=True)
class ErasedRows:
    phone_hashes: list[str]
    encrypted_phones: list[Any]
    deliveries: int


async def erase_user(conn: AsyncConnection, tenant_id: uuid.UUID, user_id: str) -> ErasedRows | None:
    """Delete the user's contacts, inbound deliveries and pending media jobs; None if no contact
    is mapped to the user."""
    mapped = (
        await conn.execute(
            sa.select(contacts.c.phone_hash, contacts.c.phone).where(
                contacts.c.tenant_id == tenant_id, contacts.c.user_id == user_id
            )
        )
    ).all()
    if not mapped:
        return None
    hashes = [r.phone_hash for r in mapped]
    deliveries = sa.select(webhook_keys.c.delivery_id).where(
        webhook_keys.c.tenant_id == tenant_id, webhook_keys.c.phone_hash.in_(hashes)
    )
    erased = (
        (
            await conn.execute(
                sa.delete(webhook_deliveries)
                .where(webhook_deliveries.c.tenant_id == tenant_id, webhook_deliveries.c.id.in_(deliveries))
                .returning(webhook_deliveries.c.id)
            )
        )
        .scalars()
        .all()
    )
    # pending jobs too: their event (text included) is never published, and a download under way
    # finds its job gone and deletes what it stored (MediaWorker.handle)
    await conn.execute(
        sa.delete(media_jobs).where(media_jobs.c.tenant_id == tenant_id, media_jobs.c.delivery_id.in_(erased))
    )
    await conn.execute(
        webhook_keys.update()
        .where(webhook_keys.c.tenant_id == tenant_id, webhook_keys.c.phone_hash.in_(hashes))
        .values(phone_hash=None)
    )
    await conn.execute(
        sa.delete(contacts).where(contacts.c.tenant_id == tenant_id, contacts.c.phone_hash.in_(hashes))
    )
    return ErasedRows(hashes, [r.phone for r in mapped], len(erased))


async def daily_counts(
    conn: AsyncConnection, tenant_id: uuid.UUID, since: date
) -> dict[date, dict[str, int]]:
    """Per-UTC-day webhook counts (received, duplicates, unrecognised, rejected) from ``since``."""
    day = sa.cast(sa.func.timezone("UTC", webhook_deliveries.c.received_at), sa.Date).label("day")
    rows = await conn.execute(
        sa.select(
            day,
            sa.func.count().label("received"),
            sa.func.count().filter(webhook_deliveries.c.outcome == "duplicate").label("duplicates"),
            sa.func.count().filter(webhook_deliveries.c.outcome == "unrecognised").label("unrecognised"),
        )
        .where(webhook_deliveries.c.tenant_id == tenant_id, webhook_deliveries.c.received_at >= since)
        .group_by(day)
    )
    by_day: dict[date, dict[str, int]] = {
        r.day: {
            "received": r.received,
            "duplicates": r.duplicates,
            "unrecognised": r.unrecognised,
            "rejected": 0,
        }
        for r in rows
    }
    for r in await conn.execute(
        sa.select(rejections.c.day, sa.func.sum(rejections.c.count).label("n"))
        .where(rejections.c.tenant_id == tenant_id, rejections.c.day >= since)
        .group_by(rejections.c.day)
    ):
        by_day.setdefault(r.day, {"received": 0, "duplicates": 0, "unrecognised": 0, "rejected": 0})[
            "rejected"
        ] = int(r.n)
    return by_day
