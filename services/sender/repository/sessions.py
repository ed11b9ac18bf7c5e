"""Queries of gateway sessions: the last known state of each WAHA/Evolution channel's WhatsApp
Web session, and the pause that state put on its channel (``pause_reason``: the exact text the
session wrote on the channel; NULL when the session holds no pause)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.sender.models import channels, metadata

channel_sessions = sa.Table(
    "channel_sessions",
    metadata,
    sa.Column("channel_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # connected | connecting | qr | disconnected
    sa.Column("detail", sa.Text, nullable=True),  # the gateway's own word (SCAN_QR_CODE, close (401))
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),  # when it entered this state
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),  # the latest observation applied
    sa.Column("pause_reason", sa.Text, nullable=True),
)

#: providers whose channels are WhatsApp Web sessions someone must keep connected
GATEWAY_PROVIDERS = ("waha", "evolution")


async def get_session(conn: AsyncConnection, channel_id: uuid.UUID) -> Row[Any] | None:
    return (
        await conn.execute(sa.select(channel_sessions).where(channel_sessions.c.channel_id == channel_id))
    ).first()


async def sessions_of(conn: AsyncConnection, channel_ids: list[uuid.UUID]) -> dict[uuid.UUID, Row[Any]]:
    if not channel_ids:
        return {}
    rows = await conn.execute(
        sa.select(channel_sessions).where(channel_sessions.c.channel_id.in_(channel_ids))
    )
    return {r.channel_id: r for r in rows}


async def lock_session(conn: AsyncConnection, channel_id: uuid.UUID) -> Row[Any] | None:
    return (
        await conn.execute(
            sa.select(channel_sessions).where(channel_sessions.c.channel_id == channel_id).with_for_update()
        )
    ).first()


async def save_session(conn: AsyncConnection, values: dict[str, Any]) -> None:
    stmt = pg.insert(channel_sessions).values(**values)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[channel_sessions.c.channel_id],
            set_={k: stmt.excluded[k] for k in values if k != "channel_id"},
        )
    )


async def lock_channel(conn: AsyncConnection, channel_id: uuid.UUID) -> Row[Any] | None:
    return (
        await conn.execute(
            sa.select(channels)
            .where(channels.c.id == channel_id, channels.c.deleted_at.is_(None))
            .with_for_update()
        )
    ).first()


async def find_gateway_channel(
    conn: AsyncConnection, tenant_id: uuid.UUID, provider: str, name: str
) -> uuid.UUID | None:
    """The tenant's live channel of ``provider`` whose session (WAHA) or instance (Evolution) is ``name``."""
    key = "session" if provider == "waha" else "instance"
    return (
        await conn.execute(
            sa.select(channels.c.id)
            .where(
                channels.c.tenant_id == tenant_id,
                channels.c.provider == provider,
                channels.c.deleted_at.is_(None),
                channels.c.settings[key].astext == name,
            )
            .order_by(channels.c.created_at)
            .limit(1)
        )
    ).scalar_one_or_none()


async def gateway_channels(conn: AsyncConnection) -> list[Row[Any]]:
    """Every live WAHA/Evolution channel (all tenants), for the session poll."""
    return list(
        (
            await conn.execute(
                sa.select(channels).where(
                    channels.c.provider.in_(GATEWAY_PROVIDERS), channels.c.deleted_at.is_(None)
                )
            )
        ).all()
    )


async def set_channel_pause(
    conn: AsyncConnection, channel_id: uuid.UUID, paused: bool, reason: str | None, at: datetime
) -> None:
    await conn.execute(
        sa.update(channels)
        .where(channels.c.id == channel_id)
        .values(paused=paused, pause_reason=reason, updated_at=at)
    )
