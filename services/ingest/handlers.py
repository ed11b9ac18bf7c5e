"""Ingest use cases."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from sqlalchemy.dialects import postgresql as pg

from services.ingest import repository
from services.ingest.media import user_prefix
from services.ingest.models import received_events
from shared.events import CloudEvent, UserErased, new_event, utcnow
from shared.service import ServiceRuntime

if TYPE_CHECKING:
    from services.ingest.pipeline import WebhookPipeline

ACCEPTED = Counter("herald_ingest_events_total", "Events posted by other systems", ["type", "outcome"])


async def accept_event(runtime: ServiceRuntime, tenant_id: uuid.UUID, event: CloudEvent[Any]) -> bool:
    """Store the event's identity and queue it for publishing in one transaction.

    Returns False for a duplicate (same tenant, source and id): it is acknowledged, not published again.
    """
    async with runtime.uow() as uow:
        inserted = (
            await uow.conn.execute(
                pg.insert(received_events)
                .values(tenant_id=tenant_id, source=event.source, event_id=event.id, type=event.type)
                .on_conflict_do_nothing()
                .returning(received_events.c.event_id)
            )
        ).first()
        if inserted is None:
            ACCEPTED.labels(event.type, "duplicate").inc()
            return False
        priority = getattr(event.data, "priority", None)
        uow.add_event(event, priority=priority)
        await uow.commit()
    ACCEPTED.labels(event.type, "accepted").inc()
    return True


class NothingToErase(Exception):
    """No contact of the tenant is mapped to the user."""


@dataclass(frozen=True)
class Erasure:
    user_id: str
    webhooks_erased: int
    media_erased: int


async def erase_user(
    runtime: ServiceRuntime, pipeline: WebhookPipeline, tenant_id: uuid.UUID, user_id: str
) -> Erasure:
    """Delete the user's inbound data and publish ``user.erased`` in the same transaction, then
    delete their media. A repeated erase finds nothing mapped and raises ``NothingToErase``: the
    event is published once per erasure that deleted something."""
    async with runtime.uow() as uow:
        rows = await repository.erase_user(uow.conn, tenant_id, user_id)
        if rows is None:
            raise NothingToErase(user_id)
        phones = sorted(runtime.secrets.decrypt(p) for p in rows.encrypted_phones)
        uow.add_event(
            new_event(
                UserErased(user_id=user_id, phones=phones, at=utcnow()),
                tenant_id=tenant_id,
                source="/ingest/users",
                subject=user_id,
            )
        )
        await uow.commit()
    blobs = pipeline.blobs
    media = await blobs.delete_prefix(user_prefix(tenant_id, user_id, None))
    for ph in rows.phone_hashes:
        media += await blobs.delete_prefix(user_prefix(tenant_id, None, ph))
    pipeline.directory.forget_tenant(tenant_id)
    return Erasure(user_id=user_id, webhooks_erased=rows.deliveries, media_erased=media)


async def inbound_stats(runtime: ServiceRuntime, tenant_id: uuid.UUID, days: int) -> list[dict[str, Any]]:
    """Per-day webhook counts for the last ``days`` UTC days (today included)."""
    since = datetime.now(UTC).date() - timedelta(days=days - 1)
    async with runtime.engine.connect() as conn:
        by_day = await repository.daily_counts(conn, tenant_id, since)
    return [{"day": d.isoformat(), **v} for d, v in sorted(by_day.items())]
