"""The built-in sandbox provider: delivers into a table instead of WhatsApp.

It behaves like an external system: it records each call in its own transaction, independent of
the sender's bookkeeping, so a crash between "sandbox received" and "sender recorded sent" is as
real here as with Meta. Every call is recorded, duplicates included: the sandbox shows what a
recipient would have seen.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.sender.models import sandbox_messages
from services.sender.providers.base import ChannelConfig, Outbound, SendResult
from shared.crypto import SecretBox


class SandboxProvider:
    name = "sandbox"

    def __init__(self, engine: AsyncEngine, secrets: SecretBox) -> None:
        self._engine = engine
        self._secrets = secrets

    async def send(self, channel: ChannelConfig, message: Outbound) -> SendResult:
        provider_message_id = f"sandbox.{uuid.uuid4().hex}"
        # one INSERT is its own transaction: autocommit saves the BEGIN and COMMIT round trips
        async with self._engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(
                sa.insert(sandbox_messages).values(
                    tenant_id=message.tenant_id,
                    message_id=message.message_id,
                    provider_message_id=provider_message_id,
                    recipient_enc=self._secrets.encrypt(message.to),
                    text=getattr(message.content, "body", None) or message.content.model_dump_json(),
                )
            )
        return SendResult(provider_message_id=provider_message_id)

    async def lookup(self, channel: ChannelConfig, message: Outbound) -> str | None:
        async with self._engine.connect() as conn:
            return (
                await conn.execute(
                    sa.select(sandbox_messages.c.provider_message_id)
                    .where(sandbox_messages.c.message_id == message.message_id)
                    .order_by(sandbox_messages.c.id)
                    .limit(1)
                )
            ).scalar_one_or_none()
