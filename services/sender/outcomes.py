"""After the send: delivery statuses from providers (forward only) and dead-letter replay."""

from __future__ import annotations

import uuid
from datetime import datetime

from services.sender import domain, status
from services.sender import repository as repo
from services.sender.catalogues import record_opt_out
from services.sender.context import Sender
from shared import tracing
from shared.events import CloudEvent, DeliveryStatus, utcnow


async def apply_delivery_status(
    sender: Sender,
    provider_message_id: str,
    delivery: str,
    at: datetime,
    error_code: str | None,
    error_message: str | None,
    *,
    pending_id: int | None = None,
) -> bool:
    """Move a message forward by its provider id (never backwards). Returns False when no message
    has that id yet (the status is kept and applied when the send is recorded)."""
    new = domain.DELIVERY_STATUS[delivery]

    async def write() -> bool:
        async with sender.runtime.uow() as uow:
            row = await repo.lock_by_provider_message_id(uow.conn, provider_message_id)
            if pending_id is not None:
                await repo.drop_pending(uow.conn, pending_id)
            if row is None:
                if pending_id is None:
                    await repo.keep_pending(
                        uow.conn,
                        provider_message_id=provider_message_id,
                        status=new,
                        error_code=error_code,
                        reason=error_message,
                        at=at,
                    )
                await uow.commit()
                return False
            if domain.can_move(row.status, new):
                # the status event continues the message's trace (status.Change); the webhook's
                # trace, where this runs, keeps a link to it
                tracing.link_current(row.traceparent)
                failed = new == "failed"
                reason = None
                if failed:
                    reason = f"{row.provider} reported failure {error_code or ''}: {error_message or 'no details'}".strip()
                await status.record(
                    uow,
                    [
                        status.Change(
                            row._mapping,
                            new,
                            row.status,
                            reason,
                            error_code=error_code if failed else row.error_code,
                            provider_message_id=provider_message_id,
                            at=at,
                        )
                    ],
                )
                if failed and error_code == domain.OPTED_OUT_ERROR:
                    phone = sender.runtime.secrets.decrypt(row.recipient_enc)
                    await record_opt_out(
                        sender, uow.conn, row.tenant_id, phone, f"provider error {error_code}", at
                    )
            await uow.commit()
            return True

    return await sender.runtime.with_db("apply delivery status", write)


async def on_delivery_status(sender: Sender, event: CloudEvent[DeliveryStatus]) -> None:
    d = event.data
    await apply_delivery_status(sender, d.provider_message_id, d.status, d.at, d.error_code, d.error_message)


async def replay(sender: Sender, tenant_id: uuid.UUID, ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Send dead letters again: back to ``queued`` with fresh attempts. Returns the ids replayed."""

    async def write() -> list[uuid.UUID]:
        now = utcnow()
        async with sender.runtime.uow() as uow:
            rows = await repo.lock_dead_letters(uow.conn, tenant_id, ids)
            await status.record(
                uow,
                [
                    status.Change(
                        r._mapping,
                        "queued",
                        r.status,
                        "replayed from the dead letters",
                        values={"attempts": 0, "ambiguous_attempts": 0, "not_before": now},
                    )
                    for r in rows
                ],
            )
            if rows:
                await repo.notify_due(uow.conn)
            await uow.commit()
            return [r.id for r in rows]

    return await sender.runtime.with_db("replay dead letters", write)
