"""SQL of ingest: webhook sources, contacts, keywords, rejections, events from other systems, media
jobs, erasure and statistics. Callers pass a connection they opened; nothing here commits.
(The webhook hot path's one statement, raw asyncpg, is ``webhooks.py`` ``STORE_SQL``.)"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ingest.models import (
    contacts,
    keyword_settings,
    media_jobs,
    received_events,
    rejections,
    webhook_deliveries,
    webhook_keys,
    webhook_sources,
)
from shared.db import notify_channel

# --- webhook sources --------------------------------------------------------------------------


async def insert_source(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID,
    provider: str,
    name: str | None,
    channel_id: uuid.UUID | None,
    encrypted_secrets: Any,
) -> Row[Any]:
    return (
        await conn.execute(
            sa.insert(webhook_sources)
            .values(
                id=uuid.uuid4(),
                tenant_id=tenant_id,
                provider=provider,
                name=name,
                channel_id=channel_id,
                secrets=encrypted_secrets,
            )
            .returning(webhook_sources)
        )
    ).one()


async def list_sources(conn: AsyncConnection, tenant_id: uuid.UUID) -> list[Row[Any]]:
    return list(
        await conn.execute(
            sa.select(webhook_sources)
            .where(webhook_sources.c.tenant_id == tenant_id)
            .order_by(webhook_sources.c.created_at)
        )
    )


async def get_source(conn: AsyncConnection, tenant_id: uuid.UUID, source_id: uuid.UUID) -> Row[Any] | None:
    return (
        await conn.execute(
            sa.select(webhook_sources).where(
                webhook_sources.c.id == source_id, webhook_sources.c.tenant_id == tenant_id
            )
        )
    ).first()


async def find_source(conn: AsyncConnection, source_id: uuid.UUID) -> Row[Any] | None:
    """A source by id, whoever's (the webhook URL names only the source)."""
    return (await conn.execute(sa.select(webhook_sources).where(webhook_sources.c.id == source_id))).first()


async def delete_source(conn: AsyncConnection, tenant_id: uuid.UUID, source_id: uuid.UUID) -> bool:
    """True when the tenant had that source."""
    gone = (
        await conn.execute(
            sa.delete(webhook_sources)
            .where(webhook_sources.c.id == source_id, webhook_sources.c.tenant_id == tenant_id)
            .returning(webhook_sources.c.id)
        )
    ).first()
    return gone is not None


# --- contacts and keywords --------------------------------------------------------------------


async def list_contacts(
    conn: AsyncConnection, tenant_id: uuid.UUID, *, unmapped: bool, limit: int, offset: int
) -> list[Row[Any]]:
    query = sa.select(contacts).where(contacts.c.tenant_id == tenant_id)
    if unmapped:
        query = query.where(contacts.c.user_id.is_(None))
    return list(
        (
            await conn.execute(
                query.order_by(contacts.c.first_seen_at, contacts.c.phone_hash).limit(limit).offset(offset)
            )
        ).all()
    )


async def map_contact(
    conn: AsyncConnection, tenant_id: uuid.UUID, phone_hash: str, encrypted_phone: Any, user_id: str
) -> None:
    """Insert the contact mapped to ``user_id``, or map the one already seen."""
    stmt = pg.insert(contacts).values(
        tenant_id=tenant_id,
        phone_hash=phone_hash,
        phone=encrypted_phone,
        user_id=user_id,
        mapped_at=sa.func.now(),
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[contacts.c.tenant_id, contacts.c.phone_hash],
            set_={"user_id": user_id, "mapped_at": sa.func.now()},
        )
    )


async def user_ids(conn: AsyncConnection, tenant_id: uuid.UUID) -> dict[str, str]:
    """phone hash → user id of the tenant's mapped contacts."""
    rows = await conn.execute(
        sa.select(contacts.c.phone_hash, contacts.c.user_id).where(
            contacts.c.tenant_id == tenant_id, contacts.c.user_id.is_not(None)
        )
    )
    return {r.phone_hash: r.user_id for r in rows}


async def contact_user_id(conn: AsyncConnection, tenant_id: Any, phone_hash: str) -> str | None:
    return (
        await conn.execute(
            sa.select(contacts.c.user_id).where(
                contacts.c.tenant_id == tenant_id, contacts.c.phone_hash == phone_hash
            )
        )
    ).scalar()


async def get_keywords(conn: AsyncConnection, tenant_id: uuid.UUID) -> Row[Any] | None:
    """The tenant's own keyword lists (``opt_out``, ``opt_in``), or None for the defaults."""
    return (
        await conn.execute(sa.select(keyword_settings).where(keyword_settings.c.tenant_id == tenant_id))
    ).first()


async def put_keywords(
    conn: AsyncConnection, tenant_id: uuid.UUID, opt_out: list[str], opt_in: list[str]
) -> None:
    stmt = pg.insert(keyword_settings).values(tenant_id=tenant_id, opt_out=opt_out, opt_in=opt_in)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[keyword_settings.c.tenant_id], set_={"opt_out": opt_out, "opt_in": opt_in}
        )
    )


async def count_rejection(conn: AsyncConnection, tenant_id: uuid.UUID, reason: str) -> None:
    """One more webhook refused at verification today (per tenant and reason)."""
    stmt = pg.insert(rejections).values(
        tenant_id=tenant_id, day=datetime.now(UTC).date(), reason=reason, count=1
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[rejections.c.tenant_id, rejections.c.day, rejections.c.reason],
            set_={"count": rejections.c.count + 1},
        )
    )


# --- media jobs -------------------------------------------------------------------------------


async def claim_media_jobs(conn: AsyncConnection, batch: int, lease: timedelta) -> list[Row[Any]]:
    """Due pending jobs, locked (others skip them) and leased: pushed ``lease`` into the future
    so that another replica does not take them while this one works."""
    rows = (
        await conn.execute(
            sa.select(media_jobs)
            .where(media_jobs.c.state == "pending", media_jobs.c.next_attempt_at <= sa.func.now())
            .order_by(media_jobs.c.next_attempt_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
    ).all()
    if rows:
        await conn.execute(
            media_jobs.update()
            .where(media_jobs.c.id.in_([r.id for r in rows]))
            .values(next_attempt_at=sa.func.now() + lease)
        )
    return list(rows)


async def retry_media_job(
    conn: AsyncConnection, job_id: Any, attempts: int, error: str, at: datetime
) -> None:
    await conn.execute(
        media_jobs.update()
        .where(media_jobs.c.id == job_id)
        .values(attempts=attempts, last_error=error[:500], next_attempt_at=at)
    )


async def lock_media_job(conn: AsyncConnection, job_id: Any) -> bool:
    """Lock the job's row for the transaction; False when it is gone (its user was erased)."""
    row = (
        await conn.execute(sa.select(media_jobs.c.id).where(media_jobs.c.id == job_id).with_for_update())
    ).first()
    return row is not None


async def finish_media_job(
    conn: AsyncConnection,
    outbox: sa.Table,
    schema: str,
    job_id: Any,
    *,
    event_id: Any,
    routing_key: str,
    body: bytes,
    error: str | None,
    blob_key: str | None,
    attempts: int,
) -> None:
    """Queue the finished event in the outbox (waking the relay) and close the job."""
    await conn.execute(sa.insert(outbox).values(event_id=event_id, routing_key=routing_key, body=body))
    await conn.execute(sa.select(sa.func.pg_notify(notify_channel(schema), "")))
    await conn.execute(
        media_jobs.update()
        .where(media_jobs.c.id == job_id)
        .values(
            state="failed" if error else "done",
            last_error=error,
            blob_key=blob_key,
            attempts=attempts,
            event=b"",
        )
    )


# --- events from other systems ----------------------------------------------------------------


async def remember_event(
    conn: AsyncConnection, tenant_id: uuid.UUID, source: str, event_id: str, type_: str
) -> bool:
    """Record an event's identity; False when the tenant sent that (source, id) before."""
    inserted = (
        await conn.execute(
            pg.insert(received_events)
            .values(tenant_id=tenant_id, source=source, event_id=event_id, type=type_)
            .on_conflict_do_nothing()
            .returning(received_events.c.event_id)
        )
    ).first()
    return inserted is not None


# --- erasure and statistics -------------------------------------------------------------------


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
