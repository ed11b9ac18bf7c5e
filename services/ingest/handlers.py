"""Ingest use cases: events from other systems, webhook sources, contacts, keywords, erasure and
statistics. SQL is in ``repository.py``, pure rules in ``domain.py``; routes translate HTTP."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from sqlalchemy.engine import Row

from services.ingest import repository
from services.ingest.channels import ChannelDirectory
from services.ingest.domain import check_source_secrets, keyword_lists
from services.ingest.media import user_prefix
from services.ingest.webhooks import Directory
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
        if not await repository.remember_event(uow.conn, tenant_id, event.source, event.id, event.type):
            ACCEPTED.labels(event.type, "duplicate").inc()
            return False
        priority = getattr(event.data, "priority", None)
        uow.add_event(event, priority=priority)
        await uow.commit()
    ACCEPTED.labels(event.type, "accepted").inc()
    return True


async def create_source(
    runtime: ServiceRuntime,
    channels: ChannelDirectory,
    tenant_id: uuid.UUID,
    *,
    provider: str,
    name: str | None,
    channel_id: uuid.UUID | None,
    secrets: dict[str, str],
    authorization: str,
) -> Row[Any]:
    """Check the secrets (``SourceRejected``) and that ``channel_id`` is one of the caller's sender
    channels (``UnknownChannel``, ``SenderUnavailable``: nothing is created), then store it."""
    check_source_secrets(provider, secrets)
    if channel_id is not None:
        await channels.require(channel_id, authorization)
    async with runtime.engine.begin() as conn:
        return await repository.insert_source(
            conn,
            tenant_id=tenant_id,
            provider=provider,
            name=name,
            channel_id=channel_id,
            encrypted_secrets=runtime.secrets.encrypt(json.dumps(secrets)),
        )


async def delete_source(
    runtime: ServiceRuntime, directory: Directory, tenant_id: uuid.UUID, source_id: uuid.UUID
) -> bool:
    """False when the tenant has no such source; a deleted one leaves this replica's cache at once."""
    async with runtime.engine.begin() as conn:
        deleted = await repository.delete_source(conn, tenant_id, source_id)
    if deleted:
        directory.sources.drop(source_id)
    return deleted


async def map_contact(
    runtime: ServiceRuntime, directory: Directory, tenant_id: uuid.UUID, e164: str, user_id: str
) -> None:
    """Map a phone (E.164) to the tenant's user id; later events carry ``user_id``."""
    async with runtime.engine.begin() as conn:
        await repository.map_contact(
            conn, tenant_id, directory.phone_hash(e164), runtime.secrets.encrypt(e164), user_id
        )
    directory.forget_tenant(tenant_id)


async def set_keywords(
    runtime: ServiceRuntime,
    directory: Directory,
    tenant_id: uuid.UUID,
    opt_out: list[str],
    opt_in: list[str],
) -> tuple[list[str], list[str]]:
    """Store the tenant's keyword lists (``KeywordClash`` when one word is in both)."""
    outs, ins = keyword_lists(opt_out, opt_in)
    async with runtime.engine.begin() as conn:
        await repository.put_keywords(conn, tenant_id, outs, ins)
    directory.forget_tenant(tenant_id)
    return outs, ins


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
