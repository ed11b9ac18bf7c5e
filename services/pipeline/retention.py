"""Retention of ``tenant_events``: every tenant event the pipeline received or refused is kept
``PIPELINE_TENANT_EVENTS_RETENTION_DAYS`` (default 30), then deleted by a periodic prune.

Invariants:
- a prune deletes only rows whose ``received_at`` is older than the window, oldest first, in
  batches of ``PIPELINE_TENANT_EVENTS_PRUNE_BATCH`` rows, each batch its own short transaction
  (a long backlog never holds one big lock or one huge WAL burst);
- a row is also the dedupe record of its event (``uq_tenant_events_key``): the same event
  redelivered after the window is recorded again as new;
- the prune runs in every pipeline replica; concurrent prunes skip each other's rows
  (``FOR UPDATE SKIP LOCKED``), so two replicas never wait on or delete the same batch.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.pipeline.event_types import tenant_events as te
from services.pipeline.settings import PipelineSettings
from shared.events import utcnow
from shared.logging import get_logger
from shared.service import ServiceRuntime

log = get_logger(__name__)

PRUNED = Counter("herald_pipeline_tenant_events_pruned_total", "Tenant events deleted by the retention prune")


async def delete_batch(conn: AsyncConnection, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` of the oldest tenant events received before ``before``."""
    doomed = (
        sa.select(te.c.id)
        .where(te.c.received_at < before)
        .order_by(te.c.received_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = await conn.execute(sa.delete(te).where(te.c.id.in_(doomed)))
    return result.rowcount or 0


async def prune(engine: AsyncEngine, retention_days: int, batch: int, *, now: datetime | None = None) -> int:
    """Delete every tenant event older than ``retention_days``, ``batch`` rows per transaction;
    the number deleted."""
    before = (now or utcnow()) - timedelta(days=retention_days)
    total = 0
    while True:
        async with engine.begin() as conn:
            deleted = await delete_batch(conn, before, batch)
        total += deleted
        PRUNED.inc(deleted)
        if deleted < batch:
            return total


async def prune_forever(runtime: ServiceRuntime) -> None:
    """Every ``tenant_events_prune_seconds`` (0: never), prune what the window no longer keeps."""
    settings = runtime.settings
    assert isinstance(settings, PipelineSettings)
    interval = settings.tenant_events_prune_seconds
    if interval <= 0:
        return
    while not runtime.stopping.is_set():
        try:
            deleted = await prune(
                runtime.engine, settings.tenant_events_retention_days, settings.tenant_events_prune_batch
            )
            if deleted:
                log.info(
                    "tenant events pruned",
                    deleted=deleted,
                    retention_days=settings.tenant_events_retention_days,
                )
        except Exception as exc:  # the database is away: the next round tries again
            log.warning("tenant events prune failed", error=repr(exc)[:300])
        try:
            await asyncio.wait_for(runtime.stopping.wait(), timeout=interval)
        except TimeoutError:
            pass
