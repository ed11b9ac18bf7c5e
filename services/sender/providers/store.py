"""PostgreSQL-backed ``MappingStore`` (table ``sender.provider_mappings``): survives restarts and
is shared by every sender process, so a Chatwoot contact/conversation is created once."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncEngine

from services.sender.models import provider_mappings as t


class PostgresMappingStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, channel_id: uuid.UUID, key: str) -> str | None:
        async with self._engine.connect() as conn:
            return (
                await conn.execute(sa.select(t.c.value).where(t.c.channel_id == channel_id, t.c.key == key))
            ).scalar_one_or_none()

    async def put(self, channel_id: uuid.UUID, key: str, value: str) -> None:
        stmt = pg.insert(t).values(channel_id=channel_id, key=key, value=value)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.channel_id, t.c.key], set_={"value": value, "updated_at": sa.func.now()}
        )
        async with self._engine.begin() as conn:
            await conn.execute(stmt)

    async def delete(self, channel_id: uuid.UUID, key: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.delete(t).where(t.c.channel_id == channel_id, t.c.key == key))
