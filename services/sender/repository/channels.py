"""Queries of channels: the tenant's channels, the default one, portfolio tiers, the breaker counters."""

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
)
from services.sender.repository.sessions import channel_sessions

#: a channel with its gateway session's state (``session_state``/``session_since``: NULL when none)
_WITH_SESSION = sa.select(
    channels, channel_sessions.c.state.label("session_state"), channel_sessions.c.since.label("session_since")
).select_from(channels.outerjoin(channel_sessions, channel_sessions.c.channel_id == channels.c.id))

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
            _WITH_SESSION.where(
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
                _WITH_SESSION.where(
                    channels.c.tenant_id == tenant_id, channels.c.deleted_at.is_(None)
                ).order_by(channels.c.created_at)
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


async def insert_channel(conn: AsyncConnection, values: dict[str, Any], *, if_absent: bool = False) -> None:
    stmt = pg.insert(channels).values(**values)
    await conn.execute(stmt.on_conflict_do_nothing() if if_absent else stmt)


async def update_channel(conn: AsyncConnection, channel_id: uuid.UUID, **values: Any) -> None:
    await conn.execute(sa.update(channels).where(channels.c.id == channel_id).values(**values))


async def push_next_slot(conn: AsyncConnection, channel_id: uuid.UUID, at: datetime) -> None:
    """No slot of the channel before ``at`` (slots already later stay)."""
    await conn.execute(
        sa.update(channels)
        .where(channels.c.id == channel_id)
        .values(next_slot=sa.func.greatest(sa.func.coalesce(channels.c.next_slot, at), at))
    )


async def take_slot(conn: AsyncConnection, channel_id: uuid.UUID, now: datetime, step: float) -> datetime:
    """Reserve the channel's next free slot (at or after ``now``) for one message; returns it."""
    start = sa.func.greatest(sa.func.coalesce(channels.c.next_slot, now), now)
    following = (
        await conn.execute(
            sa.update(channels)
            .where(channels.c.id == channel_id)
            .values(next_slot=start + timedelta(seconds=step))
            .returning(channels.c.next_slot)
        )
    ).scalar_one()
    return following - timedelta(seconds=step)


async def unset_other_defaults(conn: AsyncConnection, tenant_id: uuid.UUID, keep: uuid.UUID) -> None:
    await conn.execute(
        sa.update(channels)
        .where(channels.c.tenant_id == tenant_id, channels.c.id != keep, channels.c.is_default)
        .values(is_default=False)
    )


def _portfolio_peers(tenant_id: uuid.UUID, channel_id: uuid.UUID, portfolio: str) -> tuple[Any, ...]:
    return (
        channels.c.tenant_id == tenant_id,
        channels.c.portfolio == portfolio,
        channels.c.id != channel_id,
        channels.c.deleted_at.is_(None),
    )


async def set_portfolio_tier(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    channel_id: uuid.UUID,
    portfolio: str,
    tier: int | None,
    at: datetime,
) -> None:
    """The tier on every other live channel of the portfolio."""
    await conn.execute(
        sa.update(channels)
        .where(*_portfolio_peers(tenant_id, channel_id, portfolio))
        .values(tier=tier, updated_at=at)
    )


async def portfolio_tier(
    conn: AsyncConnection, tenant_id: uuid.UUID, channel_id: uuid.UUID, portfolio: str
) -> tuple[bool, int | None]:
    """(whether another live channel is in the portfolio, its tier)."""
    row = (
        await conn.execute(
            sa.select(channels.c.tier).where(*_portfolio_peers(tenant_id, channel_id, portfolio)).limit(1)
        )
    ).first()
    return (row is not None, row.tier if row is not None else None)


async def lock_queued_on_channel(conn: AsyncConnection, channel_id: uuid.UUID) -> list[Row[Any]]:
    return list(
        (
            await conn.execute(
                sa.select(messages)
                .where(messages.c.channel_id == channel_id, messages.c.status == "queued")
                .with_for_update()
            )
        ).all()
    )


# --- the breaker ---------------------------------------------------------------------------------


async def close_breaker(conn: AsyncConnection, channel_id: uuid.UUID) -> bool:
    """A success resets the failure count; True when the breaker was open or counting."""
    result = await conn.execute(
        sa.update(channels)
        .where(
            channels.c.id == channel_id,
            sa.or_(channels.c.consecutive_failures > 0, channels.c.breaker_open_until.is_not(None)),
        )
        .values(consecutive_failures=0, breaker_open_until=None)
    )
    return bool(result.rowcount)


async def count_channel_failure(conn: AsyncConnection, channel_id: uuid.UUID) -> int | None:
    """One more transient failure in a row; the new count (None if the channel is gone)."""
    row = (
        await conn.execute(
            sa.update(channels)
            .where(channels.c.id == channel_id)
            .values(consecutive_failures=channels.c.consecutive_failures + 1)
            .returning(channels.c.consecutive_failures)
        )
    ).first()
    return row.consecutive_failures if row is not None else None
