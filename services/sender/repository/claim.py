"""Queries of the claim: due channels and messages (locked), the facts admission reads, what it writes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.sender.models import (
    channels,
    messages,
    opt_outs,
    pair_pacing,
    templates,
    tier_recipients,
    windows,
)
from services.sender.repository.messages import NIL

# --- the claim -----------------------------------------------------------------------------------


def _has_due_messages(now: datetime) -> sa.Exists:
    """Correlated EXISTS: the channel row has a queued message whose time has come."""
    return (
        sa.select(sa.literal(1))
        .where(
            messages.c.channel_id == channels.c.id,
            messages.c.status == "queued",
            messages.c.not_before <= now,
        )
        .exists()
    )


async def lock_due_channels(conn: AsyncConnection, now: datetime, horizon: float) -> list[Row[Any]]:
    """Channels with due messages that may send now (live, not paused, breaker not cooling down,
    a slot inside the horizon), locked ``SKIP LOCKED``: each is claimed by one process at a time."""
    return list(
        (
            await conn.execute(
                sa.select(channels)
                .where(
                    channels.c.deleted_at.is_(None),
                    channels.c.paused.is_(False),
                    sa.or_(channels.c.breaker_open_until.is_(None), channels.c.breaker_open_until <= now),
                    sa.or_(
                        channels.c.next_slot.is_(None),
                        channels.c.next_slot < now + timedelta(seconds=horizon),
                    ),
                    _has_due_messages(now),
                )
                .order_by(channels.c.id)
                .with_for_update(skip_locked=True, of=channels)
            )
        ).all()
    )


async def next_due(conn: AsyncConnection, now: datetime, horizon: float) -> list[datetime]:
    """When a claim pass is next useful: the earliest future ``not_before``, and the earliest time a
    channel with due messages gets a slot inside the horizon or ends its cool-down."""
    future = (
        await conn.execute(
            sa.select(sa.func.min(messages.c.not_before)).where(
                messages.c.status == "queued", messages.c.not_before > now
            )
        )
    ).scalar()
    ahead = timedelta(seconds=horizon)
    busy = (
        await conn.execute(
            sa.select(
                sa.func.min(
                    sa.func.greatest(
                        sa.func.coalesce(channels.c.next_slot, now) - ahead,
                        sa.func.coalesce(channels.c.breaker_open_until, now),
                    )
                )
            ).where(channels.c.deleted_at.is_(None), channels.c.paused.is_(False), _has_due_messages(now))
        )
    ).scalar()
    return [t for t in (future, busy) if t is not None]


async def hold_queued_until(conn: AsyncConnection, channel_id: uuid.UUID, until: datetime) -> int:
    """Quiet hours: the channel's queued messages due before ``until`` wait for it; how many."""
    result = await conn.execute(
        sa.update(messages)
        .where(
            messages.c.channel_id == channel_id, messages.c.status == "queued", messages.c.not_before < until
        )
        .values(not_before=until, wait_reason="quiet_hours", wait_until=until)
    )
    return result.rowcount or 0


async def lock_due_messages(
    conn: AsyncConnection, channel_id: uuid.UUID, now: datetime, limit: int
) -> list[Row[Any]]:
    return list(
        (
            await conn.execute(
                sa.select(messages)
                .where(
                    messages.c.channel_id == channel_id,
                    messages.c.status == "queued",
                    messages.c.not_before <= now,
                )
                .order_by(messages.c.priority.desc(), messages.c.not_before)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
    )


async def opted_out_among(conn: AsyncConnection, tenant_id: uuid.UUID, hashes: list[str]) -> set[str]:
    return set(
        (
            await conn.execute(
                sa.select(opt_outs.c.recipient_hash).where(
                    opt_outs.c.tenant_id == tenant_id, opt_outs.c.recipient_hash.in_(hashes)
                )
            )
        ).scalars()
    )


async def templates_with_status(
    conn: AsyncConnection, tenant_id: uuid.UUID, names: set[str], statuses: frozenset[str]
) -> dict[tuple[str, str], Row[Any]]:
    """The tenant's templates among ``names`` whose status is one of ``statuses``, by (name, language)."""
    if not names:
        return {}
    found = await conn.execute(
        sa.select(templates).where(
            templates.c.tenant_id == tenant_id,
            templates.c.name.in_(sorted(names)),
            templates.c.status.in_(sorted(statuses)),
        )
    )
    return {(t.name, t.language): t for t in found}


async def open_windows_among(
    conn: AsyncConnection, tenant_id: uuid.UUID, channel_id: uuid.UUID, hashes: list[str], since: datetime
) -> set[str]:
    """Recipients who wrote (on this channel, or on one ingest could not tell) since ``since``."""
    return set(
        (
            await conn.execute(
                sa.select(windows.c.recipient_hash).where(
                    windows.c.tenant_id == tenant_id,
                    windows.c.recipient_hash.in_(hashes),
                    windows.c.channel_key.in_([channel_id, NIL]),
                    windows.c.last_inbound_at > since,
                )
            )
        ).scalars()
    )


async def pair_next_among(
    conn: AsyncConnection, channel_id: uuid.UUID, hashes: list[str]
) -> dict[str, datetime]:
    return dict(
        (
            await conn.execute(
                sa.select(pair_pacing.c.recipient_hash, pair_pacing.c.next_at).where(
                    pair_pacing.c.channel_id == channel_id, pair_pacing.c.recipient_hash.in_(hashes)
                )
            )
        ).all()
    )


async def tier_usage(
    conn: AsyncConnection, tenant_id: uuid.UUID, portfolio: str, since: datetime, hashes: list[str]
) -> tuple[int, datetime | None, set[str]]:
    """The portfolio's unique recipients since ``since``: (count, oldest last send, those among
    ``hashes``). Takes the portfolio's advisory lock until the transaction ends, so two channels
    of one portfolio never count the same tier twice."""
    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"{tenant_id}:{portfolio}"))))
    scope = (
        tier_recipients.c.tenant_id == tenant_id,
        tier_recipients.c.portfolio == portfolio,
        tier_recipients.c.last_at > since,
    )
    count, oldest = (
        await conn.execute(sa.select(sa.func.count(), sa.func.min(tier_recipients.c.last_at)).where(*scope))
    ).one()
    known = set(
        (
            await conn.execute(
                sa.select(tier_recipients.c.recipient_hash).where(
                    *scope, tier_recipients.c.recipient_hash.in_(hashes)
                )
            )
        ).scalars()
    )
    return count, oldest, known


async def set_not_before_each(conn: AsyncConnection, rows: list[tuple[uuid.UUID, datetime, str]]) -> None:
    """Delayed messages: their new ``not_before`` and why they wait (the same statement)."""
    if rows:
        await conn.execute(
            sa.update(messages)
            .where(messages.c.id == sa.bindparam("_id"))
            .values(
                not_before=sa.bindparam("nb"), wait_reason=sa.bindparam("why"), wait_until=sa.bindparam("nb")
            ),
            [{"_id": i, "nb": t, "why": why} for i, t, why in rows],
        )


async def set_contents(conn: AsyncConnection, rows: list[tuple[uuid.UUID, dict[str, Any]]]) -> None:
    """What was really sent (the fallback template instead of free-form text)."""
    if rows:
        await conn.execute(
            sa.update(messages)
            .where(messages.c.id == sa.bindparam("_id"))
            .values(content=sa.bindparam("c"), sent_content=sa.bindparam("c")),
            [{"_id": i, "c": c} for i, c in rows],
        )


async def upsert_pair_next(
    conn: AsyncConnection, channel_id: uuid.UUID, next_at: dict[str, datetime]
) -> None:
    if next_at:
        stmt = pg.insert(pair_pacing)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[pair_pacing.c.channel_id, pair_pacing.c.recipient_hash],
                set_={"next_at": stmt.excluded.next_at},
            ),
            [{"channel_id": channel_id, "recipient_hash": h, "next_at": t} for h, t in next_at.items()],
        )


async def push_pair_next(conn: AsyncConnection, channel_id: uuid.UUID, next_at: dict[str, datetime]) -> None:
    """No message to these recipients before ``next_at`` (a later time already set stays)."""
    if next_at:
        stmt = pg.insert(pair_pacing)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[pair_pacing.c.channel_id, pair_pacing.c.recipient_hash],
                set_={"next_at": sa.func.greatest(pair_pacing.c.next_at, stmt.excluded.next_at)},
            ),
            [{"channel_id": channel_id, "recipient_hash": h, "next_at": t} for h, t in next_at.items()],
        )


async def upsert_tier_recipients(
    conn: AsyncConnection, tenant_id: uuid.UUID, portfolio: str, hashes: list[str], at: datetime
) -> None:
    if hashes:
        stmt = pg.insert(tier_recipients)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[
                    tier_recipients.c.tenant_id,
                    tier_recipients.c.portfolio,
                    tier_recipients.c.recipient_hash,
                ],
                set_={"last_at": stmt.excluded.last_at},
            ),
            [
                {"tenant_id": tenant_id, "portfolio": portfolio, "recipient_hash": h, "last_at": at}
                for h in hashes
            ],
        )


async def renew_leases(conn: AsyncConnection, ids: list[uuid.UUID], now: datetime) -> None:
    """Move the lease of those of ``ids`` still ``sending`` to ``now``. A row another transaction
    holds locked right now (its result being recorded, a claim, a sweep) is skipped, not waited
    for: waiting on rows locked in another order made PostgreSQL abort the renewal as a deadlock,
    and two failed rounds let the lease run out under a live call, which a sweeper then sent a
    second time. A skipped row is renewed next round, if it is still ``sending`` then."""
    free = (
        sa.select(messages.c.id)
        .where(messages.c.id.in_(ids), messages.c.status == "sending")
        .order_by(messages.c.id)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    await conn.execute(sa.update(messages).where(messages.c.id.in_(free)).values(sending_started_at=now))


async def still_sending(conn: AsyncConnection, ids: list[uuid.UUID]) -> list[Row[Any]]:
    """Those of ``ids`` still ``sending``, locked (what a release or a reconciliation may change)."""
    return list(
        (
            await conn.execute(
                sa.select(messages)
                .where(messages.c.id.in_(ids), messages.c.status == "sending")
                .with_for_update()
            )
        ).all()
    )
