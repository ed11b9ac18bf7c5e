"""Sender use cases: accept a request, deliver it once, reconcile what a crash left behind."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from services.sender import repository as repo
from services.sender.domain import Claim, can_move, claim, request_fingerprint
from services.sender.providers.base import ChannelConfig, LookupUnsupported, Outbound, Provider, ProviderError
from shared.crypto import lookup_hash
from shared.db import UnitOfWork
from shared.events import CloudEvent, MessageRequested, MessageStatusChanged, TextContent, new_event, utcnow
from shared.logging import get_logger
from shared.service import ServiceRuntime

log = get_logger(__name__)
SOURCE = "/herald/sender"

SENT = Counter("herald_sender_messages_total", "Messages by final outcome", ["provider", "outcome", "code"])
RECONCILED = Counter(
    "herald_sender_reconciled_total",
    "Messages found in 'sending' after their sender died, by what reconciliation found",
    ["outcome"],
)
REQUEST_TO_PROVIDER = Histogram(
    "herald_sender_request_to_provider_seconds",
    "Time from request to provider call",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


@dataclass
class Sender:
    """The sender's dependencies, given explicitly to every use case."""

    runtime: ServiceRuntime
    provider: Provider
    lease: timedelta

    def hash_phone(self, phone: str) -> str:
        return lookup_hash(self.runtime.settings.secret_key.get_secret_value(), phone)


class IdempotencyConflict(Exception):
    pass


class RetryLater(Exception):
    """The message went back to ``queued``; the broker should deliver it again."""


def _status_event(
    tenant_id: uuid.UUID,
    msg: Row[Any] | dict[str, Any],
    status: str,
    previous: str | None,
    at: datetime,
    reason: str | None = None,
    provider_message_id: str | None = None,
) -> CloudEvent[Any]:
    get = msg.get if isinstance(msg, dict) else msg._mapping.get
    return new_event(
        MessageStatusChanged(
            message_id=get("id"),
            status=status,
            previous_status=previous,
            at=at,
            reason=reason,
            provider=get("provider"),
            provider_message_id=provider_message_id,
            correlation_id=get("correlation_id"),
        ),
        tenant_id=tenant_id,
        source=SOURCE,
        subject=str(get("id")),
    )


def _new_row(sender: Sender, tenant_id: uuid.UUID, req: MessageRequested, now: datetime) -> dict[str, Any]:
    return {
        "id": req.message_id,
        "tenant_id": tenant_id,
        "idempotency_key": req.idempotency_key,
        "request_hash": request_fingerprint(req.to, req.text, req.priority),
        "recipient_enc": sender.runtime.secrets.encrypt(req.to),
        "recipient_hash": sender.hash_phone(req.to),
        "text": req.text,
        "priority": req.priority,
        "origin": req.origin,
        "correlation_id": req.correlation_id,
        "status": "queued",
        "provider": None,
        "created_at": now,
        "updated_at": now,
    }


async def _record_queued(uow: UnitOfWork, tenant_id: uuid.UUID, row: dict[str, Any], now: datetime) -> None:
    await repo.add_history(uow.conn, row["id"], "queued", None, now)
    uow.add_event(_status_event(tenant_id, row, "queued", None, now))


@dataclass(frozen=True)
class Accepted:
    message_id: uuid.UUID
    status: str
    created: bool


async def request_message(sender: Sender, tenant_id: uuid.UUID, req: MessageRequested) -> Accepted:
    """Accept a send request over HTTP: store it and publish ``message.requested`` atomically.

    The same idempotency key with the same request returns the first message (``created`` is
    False); with a different request it raises IdempotencyConflict.
    """

    async def attempt() -> Accepted | None:
        now = utcnow()
        async with sender.runtime.uow() as uow:
            if req.idempotency_key:
                existing = await repo.find_by_idempotency_key(uow.conn, tenant_id, req.idempotency_key)
                if existing is not None:
                    if existing.request_hash != request_fingerprint(req.to, req.text, req.priority):
                        raise IdempotencyConflict(
                            f"idempotency_key {req.idempotency_key!r} was already used for a different "
                            f"request (message {existing.id}); use a new key for a new message"
                        )
                    return Accepted(existing.id, existing.status, created=False)
            row = _new_row(sender, tenant_id, req, now)
            try:
                inserted = await repo.insert_message(uow.conn, row)
            except IntegrityError:
                return None
            if not inserted:
                return None  # a concurrent request with the same key won: read it back
            await _record_queued(uow, tenant_id, row, now)
            uow.add_event(
                new_event(req, tenant_id=tenant_id, source=SOURCE, subject=str(req.message_id)),
                priority=req.priority,
            )
            await uow.commit()
        return Accepted(req.message_id, "queued", created=True)

    result = await attempt()
    if result is None:
        result = await attempt()
    if result is None:
        raise IdempotencyConflict(
            f"idempotency_key {req.idempotency_key!r} is being used concurrently; retry"
        )
    return result


async def on_requested(sender: Sender, event: CloudEvent[MessageRequested]) -> None:
    """Consume ``message.requested``: store it if it came from another service, then deliver."""
    req = event.data
    tenant_id = event.tenantid

    async def store() -> None:
        now = utcnow()
        async with sender.runtime.uow() as uow:
            row = _new_row(sender, tenant_id, req, now)
            if await repo.insert_message(uow.conn, row):
                await _record_queued(uow, tenant_id, row, now)
                await uow.commit()

    await sender.runtime.with_db("store requested message", store)
    await deliver(sender, req.message_id)


async def deliver(sender: Sender, message_id: uuid.UUID) -> None:
    """Send one stored message at most once per claim; see ``domain.claim`` for the rules."""
    runtime = sender.runtime

    async def take() -> tuple[Claim, Row[Any] | None]:
        now = utcnow()
        async with runtime.uow() as uow:
            msg = await repo.lock_message(uow.conn, message_id)
            if msg is None:
                return Claim.DONE, None
            decision = claim(msg.status, msg.sending_started_at, now, sender.lease)
            if decision in (Claim.SEND, Claim.RECONCILE):
                await repo.update_message(
                    uow.conn,
                    message_id,
                    status="sending",
                    sending_started_at=now,
                    updated_at=now,
                    attempts=msg.attempts + 1,
                    provider=sender.provider.name,
                )
                if decision is Claim.SEND:
                    await repo.add_history(uow.conn, message_id, "sending", None, now)
                    uow.add_event(
                        _status_event(
                            msg.tenant_id,
                            {**msg._mapping, "provider": sender.provider.name},
                            "sending",
                            "queued",
                            now,
                        )
                    )
                await uow.commit()
            return decision, msg

    decision, msg = await runtime.with_db("claim message", take)
    if msg is None or decision in (Claim.DONE, Claim.IN_FLIGHT):
        return
    to = runtime.secrets.decrypt(msg.recipient_enc)
    outbound = Outbound(message_id=msg.id, tenant_id=msg.tenant_id, to=to, content=TextContent(body=msg.text))
    channel = ChannelConfig(
        id=msg.tenant_id, tenant_id=msg.tenant_id, provider="sandbox", base_url="sandbox:"
    )

    if decision is Claim.RECONCILE:
        try:
            found = await sender.provider.lookup(channel, outbound)
        except LookupUnsupported:
            found = None
            RECONCILED.labels("resent_unverifiable").inc()
        if found is not None:
            RECONCILED.labels("already_sent").inc()
            log.warning("reconciled orphaned message: provider already had it", message_id=str(msg.id))
            await _finish(sender, msg, "sent", "reconciled after a crash: the provider had it", found)
            return
        RECONCILED.labels("resent").inc()
        log.warning("reconciled orphaned message: sending again", message_id=str(msg.id))

    REQUEST_TO_PROVIDER.observe(max(0.0, (utcnow() - msg.created_at).total_seconds()))
    try:
        result = await sender.provider.send(channel, outbound)
    except ProviderError as exc:
        SENT.labels(sender.provider.name, "failed" if not exc.retryable else "retry", exc.code or "").inc()
        if exc.retryable:
            await _requeue(sender, msg, f"provider error, will retry: {exc}")
            raise RetryLater(str(exc)) from exc
        await _finish(sender, msg, "failed", f"{sender.provider.name} refused the message: {exc}", None)
        return
    SENT.labels(sender.provider.name, "sent", "").inc()
    await _finish(sender, msg, "sent", None, result.provider_message_id)


async def _finish(
    sender: Sender, msg: Row[Any], status: str, reason: str | None, provider_message_id: str | None
) -> None:
    async def write() -> None:
        now = utcnow()
        async with sender.runtime.uow() as uow:
            current = await repo.lock_message(uow.conn, msg.id)
            if current is None or not can_move(current.status, status):
                return
            await repo.update_message(
                uow.conn,
                msg.id,
                status=status,
                status_reason=reason,
                updated_at=now,
                provider_message_id=provider_message_id,
                sending_started_at=None,
            )
            await repo.add_history(uow.conn, msg.id, status, reason, now)
            uow.add_event(
                _status_event(
                    msg.tenant_id,
                    {**current._mapping, "provider": sender.provider.name},
                    status,
                    current.status,
                    now,
                    reason,
                    provider_message_id,
                )
            )
            await uow.commit()

    await sender.runtime.with_db(f"record {status}", write)


async def _requeue(sender: Sender, msg: Row[Any], reason: str) -> None:
    """Give a message back to the queue after a retryable provider error (the broker redelivers)."""

    async def write() -> None:
        now = utcnow()
        async with sender.runtime.uow() as uow:
            current = await repo.lock_message(uow.conn, msg.id)
            if current is None or current.status != "sending":
                return
            await repo.update_message(
                uow.conn,
                msg.id,
                status="queued",
                status_reason=reason,
                sending_started_at=None,
                updated_at=now,
            )
            await repo.add_history(uow.conn, msg.id, "queued", reason, now)
            uow.add_event(_status_event(msg.tenant_id, current, "queued", "sending", now, reason))
            await uow.commit()

    await sender.runtime.with_db("requeue", write)
    await asyncio.sleep(1.0)


async def reconcile_orphans(sender: Sender) -> int:
    """One sweep: deliver (reconcile) messages whose sender died while they were ``sending``."""
    cutoff = utcnow() - sender.lease
    async with sender.runtime.engine.connect() as conn:
        rows = await repo.orphaned_sending(conn, cutoff, 100)
    for row in rows:
        await deliver(sender, row.id)
    return len(rows)


async def sweep_orphans_forever(sender: Sender) -> None:
    interval = max(1.0, sender.lease.total_seconds() / 2)
    while not sender.runtime.stopping.is_set():
        try:
            await reconcile_orphans(sender)
        except Exception as exc:
            log.warning("orphan sweep failed", error=repr(exc)[:200])
        await asyncio.sleep(interval)
