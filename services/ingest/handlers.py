"""Ingest use cases."""

from __future__ import annotations

import uuid
from typing import Any

from prometheus_client import Counter
from sqlalchemy.dialects import postgresql as pg

from services.ingest.models import received_events
from shared.events import CloudEvent
from shared.service import ServiceRuntime

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
