"""Accepting send requests: one (HTTP or ``message.requested``) or a batch, with idempotency.

A request is stored ``queued`` with its channel (the tenant's default when none is named) and
``not_before = now``, its history line and ``message.status`` event, in one transaction that
NOTIFYs the dispatchers. The same idempotency key with the same request (its fingerprint) is the
first message again; with a different request it is a conflict.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from services.sender import repository as repo
from services.sender import status, templates
from services.sender.channels import default_channel_id
from services.sender.context import Sender
from services.sender.domain import request_fingerprint
from services.sender.metrics import CHECK_FAILURES
from shared import tracing
from shared.db import UnitOfWork
from shared.events import CloudEvent, MessageRequested, utcnow


class IdempotencyConflict(Exception):
    pass


@dataclass(frozen=True)
class Accepted:
    message_id: uuid.UUID
    status: str
    created: bool


def _fingerprint(req: MessageRequested) -> str:
    content = req.content.model_dump(mode="json") if req.content is not None else None
    fallback = req.fallback_template.model_dump(mode="json") if req.fallback_template is not None else None
    return request_fingerprint(
        req.to, req.text, req.priority, content, fallback, str(req.channel_id) if req.channel_id else None
    )


async def _insert_request(
    sender: Sender,
    uow: UnitOfWork,
    tenant_id: uuid.UUID,
    req: MessageRequested,
    now: datetime,
    *,
    channel_checked: bool = False,
    refusal: tuple[str, str] | None = None,
) -> bool:
    """Insert the message ``queued`` (or ``failed`` when its channel is unknown, or with
    ``refusal`` = (error code, reason): a bad request from the broker) with its history and
    status event; False if it already exists (same id, or same idempotency key)."""
    channel_id = req.channel_id
    failure: str | None = None
    code = "unknown_channel"
    if channel_id is None:
        channel_id = await default_channel_id(sender, uow.conn, tenant_id)
    elif not channel_checked and not await repo.channel_exists(uow.conn, tenant_id, channel_id):
        failure = f"unknown channel {channel_id}: create it with POST /v1/channels or omit channel_id"
    if refusal is not None and failure is None:
        code, failure = refusal
    row = _row(sender, tenant_id, req, channel_id, failure, now)
    row["error_code"] = code if failure else None
    if not await repo.insert_message(uow.conn, row):
        return False
    changes = [status.Change(row, "queued", None, at=now)]
    if failure:
        changes.append(status.Change(row, "failed", "queued", failure, error_code=code, at=now))
        CHECK_FAILURES.labels(code).inc()
    else:
        await repo.notify_due(uow.conn)
    await status.record(uow, changes, inserted=True)
    return True


def _row(
    sender: Sender,
    tenant_id: uuid.UUID,
    req: MessageRequested,
    channel_id: uuid.UUID,
    failure: str | None,
    now: datetime,
) -> dict[str, Any]:
    content = req.resolved_content
    return {
        "id": req.message_id,
        "tenant_id": tenant_id,
        "idempotency_key": req.idempotency_key,
        "request_hash": _fingerprint(req),
        "recipient_enc": sender.runtime.secrets.encrypt(req.to),
        "recipient_hash": sender.hash_phone(req.to),
        "text": content.body if content.kind == "text" else None,
        "content": content.model_dump(mode="json"),
        "fallback_template": req.fallback_template.model_dump(mode="json") if req.fallback_template else None,
        "channel_id": channel_id,
        "priority": req.priority,
        "origin": req.origin,
        "correlation_id": req.correlation_id,
        "traceparent": tracing.traceparent(),
        "status": "failed" if failure else "queued",
        "status_reason": failure,
        "error_code": "unknown_channel" if failure else None,
        "provider": None,
        "not_before": now,
        "created_at": now,
        "updated_at": now,
    }


def campaign_row(
    sender: Sender,
    tenant_id: uuid.UUID,
    req: MessageRequested,
    channel_id: uuid.UUID,
    now: datetime,
    *,
    campaign_id: uuid.UUID,
    not_before: datetime | None,
) -> dict[str, Any]:
    """A campaign recipient's message: the row any accepted message has, with its campaign and,
    for a campaign sent later, ``not_before`` = its send time."""
    row = _row(sender, tenant_id, req, channel_id, None, now)
    row["campaign_id"] = campaign_id
    if not_before is not None and not_before > now:
        row["not_before"] = not_before
    return row


async def store_rows(uow: UnitOfWork, rows: list[dict[str, Any]], now: datetime) -> set[uuid.UUID]:
    """The bulk store of accepted messages, in the caller's unit of work: one multi-row insert
    for the messages, their history and status events (``status.record``), one wake-up. The ids
    actually inserted (an existing id or idempotency key is skipped)."""
    inserted = await repo.insert_messages(uow.conn, rows)
    fresh = [row for row in rows if row["id"] in inserted]
    if fresh:
        await status.record(uow, [status.Change(row, "queued", None, at=now) for row in fresh], inserted=True)
        await repo.notify_due(uow.conn)
    return inserted


async def _accept_at_once(
    sender: Sender, tenant_id: uuid.UUID, req: MessageRequested, *, channel_checked: bool
) -> bool:
    """The common case of one request in one round trip: the message, its history line and its
    status event in one statement (``status.record_accepted``), on a connection in autocommit.
    False when it did not apply (the id or the idempotency key exists, or the named channel
    does not): then nothing was written, and ``request_message`` takes the general path, which
    answers each of those cases."""
    now = utcnow()
    async with sender.runtime.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        channel_id = req.channel_id
        if channel_id is None:
            channel_id = await default_channel_id(sender, conn, tenant_id)
        elif not channel_checked and not await repo.channel_exists(conn, tenant_id, channel_id):
            return False
        row = _row(sender, tenant_id, req, channel_id, None, now)
        try:
            return await status.record_accepted(
                sender.runtime, conn, status.Change(row, "queued", None, at=now), row
            )
        except IntegrityError:
            return False


async def request_message(
    sender: Sender, tenant_id: uuid.UUID, req: MessageRequested, *, channel_checked: bool = False
) -> Accepted:
    """Accept a send request over HTTP. The same idempotency key with the same request returns
    the first message (``created`` False); with a different request it raises IdempotencyConflict."""

    async def attempt() -> Accepted | None:
        now = utcnow()
        async with sender.runtime.uow() as uow:
            if req.idempotency_key:
                existing = await repo.find_by_idempotency_key(uow.conn, tenant_id, req.idempotency_key)
                if existing is not None:
                    if existing.request_hash != _fingerprint(req):
                        raise IdempotencyConflict(
                            f"idempotency_key {req.idempotency_key!r} was already used for a different "
                            f"request (message {existing.id}); use a new key for a new message"
                        )
                    return Accepted(existing.id, existing.status, created=False)
            try:
                inserted = await _insert_request(
                    sender, uow, tenant_id, req, now, channel_checked=channel_checked
                )
            except IntegrityError:
                return None
            if not inserted:
                return None  # a concurrent request with the same key won: read it back
            await uow.commit()
        return Accepted(req.message_id, "queued", created=True)

    if await _accept_at_once(sender, tenant_id, req, channel_checked=channel_checked):
        return Accepted(req.message_id, "queued", created=True)
    result = await attempt()
    if result is None:
        result = await attempt()
    if result is None:
        raise IdempotencyConflict(
            f"idempotency_key {req.idempotency_key!r} is being used concurrently; retry"
        )
    return result


@dataclass(frozen=True)
class BatchItem:
    message_id: uuid.UUID
    status: str
    created: bool
    error: str | None = None


async def request_messages(
    sender: Sender, tenant_id: uuid.UUID, reqs: list[MessageRequested]
) -> list[BatchItem]:
    """Accept many send requests in one transaction (bulk sends): one multi-row insert for the
    messages, one for their history, one outbox write, one wake-up, instead of a transaction per
    message. Same rules as ``request_message``, reported per item: an idempotency key seen before
    returns the first message; one reused for a different request is that item's ``error``."""

    async def store() -> list[BatchItem]:
        now = utcnow()
        async with sender.runtime.uow() as uow:
            default: uuid.UUID | None = None
            if any(r.channel_id is None for r in reqs):
                default = await default_channel_id(sender, uow.conn, tenant_id)
            rows = [_row(sender, tenant_id, req, req.channel_id or default, None, now) for req in reqs]
            inserted = await store_rows(uow, rows, now)
            items = []
            for req, row in zip(reqs, rows, strict=True):
                if row["id"] in inserted:
                    items.append(BatchItem(req.message_id, "queued", created=True))
                    continue
                existing = (
                    await repo.find_by_idempotency_key(uow.conn, tenant_id, req.idempotency_key)
                    if req.idempotency_key
                    else None
                )
                if existing is None:  # same message id twice in one batch: the first one stands
                    items.append(BatchItem(req.message_id, "queued", created=False))
                elif existing.request_hash != row["request_hash"]:
                    items.append(
                        BatchItem(
                            existing.id,
                            existing.status,
                            created=False,
                            error=f"idempotency_key {req.idempotency_key!r} was already used for a "
                            f"different request (message {existing.id}); use a new key for a new message",
                        )
                    )
                else:
                    items.append(BatchItem(existing.id, existing.status, created=False))
            await uow.commit()
        return items

    return await store()


async def on_requested(sender: Sender, event: CloudEvent[MessageRequested]) -> None:
    """Consume ``message.requested`` (scheduler, pipeline, other systems): store it once."""

    async def store() -> None:
        req, refusal = event.data, None
        try:
            req = await templates.resolve(sender, event.tenantid, req)
        except templates.TemplateInvalid as exc:
            refusal = ("template_variables", str(exc))
        async with sender.runtime.uow() as uow:
            if await _insert_request(sender, uow, event.tenantid, req, utcnow(), refusal=refusal):
                await uow.commit()

    await sender.runtime.with_db("store requested message", store)
