"""Queries of the pipeline's own schema. Never commits: the unit of work does."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.pipeline.models import conversations as cv
from services.pipeline.models import draft_steps as ds
from services.pipeline.models import drafts as dr
from services.pipeline.models import notes as nt
from services.pipeline.models import profiles as pf

# --- profiles ----------------------------------------------------------------------------------


async def upsert_profile(conn: AsyncConnection, values: dict[str, Any]) -> None:
    q = pg.insert(pf).values(**values)
    changes = {k: v for k, v in values.items() if k not in ("tenant_id", "user_id")}
    await conn.execute(
        q.on_conflict_do_update(
            index_elements=[pf.c.tenant_id, pf.c.user_id], set_={**changes, "updated_at": sa.func.now()}
        )
    )


async def get_profile(conn: AsyncConnection, tenant_id: uuid.UUID, user_id: str) -> Row[Any] | None:
    return (
        await conn.execute(sa.select(pf).where(pf.c.tenant_id == tenant_id, pf.c.user_id == user_id))
    ).first()


async def list_profiles(conn: AsyncConnection, tenant_id: uuid.UUID, limit: int) -> list[Row[Any]]:
    q = sa.select(pf).where(pf.c.tenant_id == tenant_id).order_by(pf.c.user_id).limit(limit)
    return list((await conn.execute(q)).all())


async def delete_profile(conn: AsyncConnection, tenant_id: uuid.UUID, user_id: str) -> bool:
    res = await conn.execute(sa.delete(pf).where(pf.c.tenant_id == tenant_id, pf.c.user_id == user_id))
    return bool(res.rowcount)


# --- notes -------------------------------------------------------------------------------------


async def insert_note(conn: AsyncConnection, values: dict[str, Any]) -> bool:
    """False when the note was stored before (same source id: a redelivered inbound message)."""
    q = pg.insert(nt).values(**values).on_conflict_do_nothing(constraint="uq_notes_source")
    return bool((await conn.execute(q)).rowcount)


async def list_notes(conn: AsyncConnection, tenant_id: uuid.UUID, user_id: str, limit: int) -> list[Row[Any]]:
    q = (
        sa.select(nt)
        .where(nt.c.tenant_id == tenant_id, nt.c.user_id == user_id)
        .order_by(nt.c.created_at.desc())
        .limit(limit)
    )
    return list((await conn.execute(q)).all())


async def search_notes(
    conn: AsyncConnection, tenant_id: uuid.UUID, user_id: str, query: str, config: str, limit: int
) -> list[Row[Any]]:
    """Notes ranked by full-text relevance (``ts_rank_cd``) boosted by recency (half-life 30 days).

    With an empty query, or when nothing matches, the most recent notes are the ranking."""
    vector = sa.func.to_tsvector(sa.literal_column(f"'{config}'::regconfig"), nt.c.body)
    tsq = sa.func.websearch_to_tsquery(sa.literal_column(f"'{config}'::regconfig"), query)
    age_days = sa.func.extract("epoch", sa.func.now() - nt.c.created_at) / 86400.0
    recency = 1.0 / (1.0 + age_days / 30.0)
    rank = (sa.func.ts_rank_cd(vector, tsq) + 0.1 * recency).label("rank")
    base = sa.select(nt, rank).where(nt.c.tenant_id == tenant_id, nt.c.user_id == user_id)
    if query.strip():
        matched = list(
            (await conn.execute(base.where(vector.op("@@")(tsq)).order_by(rank.desc()).limit(limit))).all()
        )
        if matched:
            return matched
    return list((await conn.execute(base.order_by(nt.c.created_at.desc()).limit(limit))).all())


async def delete_note(conn: AsyncConnection, tenant_id: uuid.UUID, note_id: uuid.UUID) -> bool:
    res = await conn.execute(sa.delete(nt).where(nt.c.tenant_id == tenant_id, nt.c.id == note_id))
    return bool(res.rowcount)


async def adopt_contact_notes(
    conn: AsyncConnection, tenant_id: uuid.UUID, contact_hash: str, user_id: str
) -> None:
    """Notes kept under an unmapped contact become the user's once the contact is mapped."""
    await conn.execute(
        sa.update(nt)
        .where(nt.c.tenant_id == tenant_id, nt.c.contact_hash == contact_hash, nt.c.user_id.is_(None))
        .values(user_id=user_id)
    )


# --- drafts ------------------------------------------------------------------------------------


async def claim_draft(conn: AsyncConnection, values: dict[str, Any]) -> Row[Any]:
    """The job's draft: created on first delivery, the same row on every redelivery."""
    await conn.execute(pg.insert(dr).values(**values).on_conflict_do_nothing(constraint="uq_drafts_job"))
    q = sa.select(dr).where(dr.c.tenant_id == values["tenant_id"], dr.c.job_key == values["job_key"])
    return (await conn.execute(q.with_for_update())).one()


async def get_draft(conn: AsyncConnection, tenant_id: uuid.UUID, draft_id: uuid.UUID) -> Row[Any] | None:
    return (await conn.execute(sa.select(dr).where(dr.c.tenant_id == tenant_id, dr.c.id == draft_id))).first()


async def list_drafts(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    *,
    user_id: str | None,
    status: str | None,
    since: datetime | None,
    limit: int,
) -> list[Row[Any]]:
    q = sa.select(dr).where(dr.c.tenant_id == tenant_id)
    if user_id:
        q = q.where(dr.c.user_id == user_id)
    if status:
        q = q.where(dr.c.status == status)
    if since:
        q = q.where(dr.c.created_at >= since)
    return list((await conn.execute(q.order_by(dr.c.created_at.desc()).limit(limit))).all())


async def update_draft(conn: AsyncConnection, draft_id: uuid.UUID, **values: Any) -> None:
    await conn.execute(sa.update(dr).where(dr.c.id == draft_id).values(**values, updated_at=sa.func.now()))


async def delete_draft(conn: AsyncConnection, tenant_id: uuid.UUID, draft_id: uuid.UUID) -> bool:
    res = await conn.execute(sa.delete(dr).where(dr.c.tenant_id == tenant_id, dr.c.id == draft_id))
    return bool(res.rowcount)


async def steps(conn: AsyncConnection, draft_id: uuid.UUID) -> list[Row[Any]]:
    return list(
        (await conn.execute(sa.select(ds).where(ds.c.draft_id == draft_id).order_by(ds.c.position))).all()
    )


async def record_step(conn: AsyncConnection, values: dict[str, Any]) -> None:
    q = pg.insert(ds).values(**values)
    set_ = {k: v for k, v in values.items() if k not in ("draft_id", "agent")}
    await conn.execute(q.on_conflict_do_update(index_elements=[ds.c.draft_id, ds.c.agent], set_=set_))


async def record_notice_status(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    message_id: uuid.UUID,
    draft_id: uuid.UUID | None,
    status: str,
    at: datetime,
) -> bool:
    """The ready notice's delivery status, found by its message id (or the draft named by the
    correlation id). Statuses arrive out of order: only a later one replaces what is shown."""
    match = dr.c.notice_message_id == message_id
    if draft_id is not None:
        match = sa.or_(match, sa.and_(dr.c.id == draft_id, dr.c.notice_message_id.is_not(None)))
    q = (
        sa.update(dr)
        .where(dr.c.tenant_id == tenant_id, match)
        .where(sa.or_(dr.c.notice_status_at.is_(None), dr.c.notice_status_at <= at))
        .values(notice_status=status, notice_status_at=at)
    )
    return bool((await conn.execute(q)).rowcount)


# --- conversation context ----------------------------------------------------------------------


async def get_conversation(conn: AsyncConnection, tenant_id: uuid.UUID, user_id: str) -> Row[Any] | None:
    """The user's open clarification, locked: two messages of one user are decided one at a time."""
    q = sa.select(cv).where(cv.c.tenant_id == tenant_id, cv.c.user_id == user_id).with_for_update()
    return (await conn.execute(q)).first()


async def save_conversation(conn: AsyncConnection, values: dict[str, Any]) -> None:
    q = pg.insert(cv).values(**values)
    changes = {k: v for k, v in values.items() if k not in ("tenant_id", "user_id")}
    await conn.execute(
        q.on_conflict_do_update(
            index_elements=[cv.c.tenant_id, cv.c.user_id], set_={**changes, "updated_at": sa.func.now()}
        )
    )


async def delete_conversation(
    conn: AsyncConnection, tenant_id: uuid.UUID, user_id: str, order_ref: str | None = None
) -> None:
    """Close the user's clarification (only the one of ``order_ref`` when given)."""
    q = sa.delete(cv).where(cv.c.tenant_id == tenant_id, cv.c.user_id == user_id)
    if order_ref is not None:
        q = q.where(cv.c.order_ref == order_ref)
    await conn.execute(q)


# --- erasure -----------------------------------------------------------------------------------


async def erase_user(conn: AsyncConnection, user_id: str, contact_hashes: list[str]) -> int:
    """Every note, draft (with its steps), conversation and profile of the user, in every tenant.
    Idempotent."""
    n = 0
    cond = nt.c.user_id == user_id
    if contact_hashes:
        cond = sa.or_(cond, nt.c.contact_hash.in_(contact_hashes))
    n += (await conn.execute(sa.delete(nt).where(cond))).rowcount or 0
    n += (await conn.execute(sa.delete(dr).where(dr.c.user_id == user_id))).rowcount or 0
    n += (await conn.execute(sa.delete(cv).where(cv.c.user_id == user_id))).rowcount or 0
    n += (await conn.execute(sa.delete(pf).where(pf.c.user_id == user_id))).rowcount or 0
    return n
