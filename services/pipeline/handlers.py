"""Pipeline use cases."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from prometheus_client import Counter

from services.pipeline import repository as repo
from services.pipeline import rules
from services.pipeline.jobs import run_content_job
from shared.crypto import SecretBox, lookup_hash
from shared.events import (
    CloudEvent,
    InboundReceived,
    MessageStatusChanged,
    OrderStatusChanged,
    PacingDue,
    UserErased,
)
from shared.service import ServiceRuntime

SOURCE = rules.SOURCE


async def notify_order_status(runtime: ServiceRuntime, event: CloudEvent[OrderStatusChanged]) -> bool:
    """Turn an order's status change into the messages the tenant's rules say (``rules.py``).

    The processed-event record, the decisions and the outbox rows commit together, so a
    redelivered event (at-least-once broker) neither sends twice nor is lost. Returns False for a
    redelivery."""
    verdicts = await rules.on_event(
        runtime,
        event.tenantid,
        event_type=event.type,
        event_id=event.id,
        source=event.source,
        data=event.data.model_dump(mode="json"),
    )
    return verdicts is not None


# --- the writer flow ---------------------------------------------------------------------------
# the content job itself (agents, steps, retry, finish) is in jobs.py; ``run_content_job`` is
# re-exported here for the callers that know it as ``handlers.run_content_job``

NOTE_CONSUMER = "notes"
NOTES_STORED = Counter("herald_pipeline_notes_stored_total", "Inbound messages stored as notes", ["source"])
log = logging.getLogger("herald.pipeline")


def phone_hash(runtime: ServiceRuntime, phone: str) -> str:
    return lookup_hash(runtime.settings.secret_key.get_secret_value(), phone)


def secret_box(runtime: ServiceRuntime) -> SecretBox:
    return SecretBox(runtime.settings.encryption_keys.get_secret_value())


def note_body(data: InboundReceived) -> str | None:
    """The words of an inbound message: its text, a voice note's transcript; None for the rest."""
    body = data.transcript if data.kind in ("audio", "voice") else data.text
    if data.kind not in ("text", "audio", "voice") or not body or not body.strip():
        return None
    return body.strip()


async def save_note(
    runtime: ServiceRuntime,
    conn: Any,
    tenant_id: uuid.UUID,
    data: InboundReceived,
    *,
    language: str | None = None,
) -> bool:
    """Insert the message as a note inside the caller's transaction (the contact's earlier notes
    become the user's). ``language``: the user's, when the caller has read the profile already.
    False when there is nothing to store or it was stored before."""
    body = note_body(data)
    if body is None:
        return False
    contact = phone_hash(runtime, data.from_phone)
    if data.user_id:
        if language is None:
            profile = await repo.get_profile(conn, tenant_id, data.user_id)
            language = profile.language if profile else "en"
        await repo.adopt_contact_notes(conn, tenant_id, contact, data.user_id)
    language = language or "en"
    stored = await repo.insert_note(
        conn,
        {
            "id": uuid.uuid4(),
            "tenant_id": tenant_id,
            "user_id": data.user_id,
            "contact_hash": contact,
            "body": body,
            "language": language,
            "source": "voice" if data.kind != "text" else "whatsapp",
            "source_id": f"{data.provider}:{data.provider_message_id}",
        },
    )
    if stored:
        NOTES_STORED.labels("voice" if data.kind != "text" else "text").inc()
    return stored


async def store_note(runtime: ServiceRuntime, event: CloudEvent[InboundReceived]) -> bool:
    """A message that is not an order is a note: stored silently, a voice note by its transcript.

    Returns False when there was nothing to store or it was stored before (a redelivery)."""
    if note_body(event.data) is None:
        return False

    async def apply() -> bool:
        async with runtime.uow() as uow:
            stored = await save_note(runtime, uow.conn, event.tenantid, event.data)
            await uow.commit()
            return stored

    return await runtime.with_db("store note", apply)


async def on_pacing_due(runtime: ServiceRuntime, event: CloudEvent[PacingDue]) -> uuid.UUID:
    """A pacing slot fired: one content job per (schedule, slot), however often it is delivered."""
    d = event.data
    return await run_content_job(
        runtime, event.tenantid, d.user_id, f"pacing:{d.schedule_id}:{d.slot_at.isoformat()}"
    )


async def record_notice_status(runtime: ServiceRuntime, event: CloudEvent[MessageStatusChanged]) -> bool:
    """``message.status`` of a ready notice → the draft shows it. The queue is bound to statuses of
    messages the pipeline asked for (origin ``pipeline``, see ``shared.topology``); those that are
    not notices (clarifications, failure messages) match no draft and change nothing. Idempotent."""
    d = event.data
    draft_id = None
    if d.correlation_id:
        # the sender reports a message with the correlation id it was requested with: one that
        # does not name a draft is not a notice, and costs no query
        if not d.correlation_id.startswith("draft:"):
            return False
        try:
            draft_id = uuid.UUID(d.correlation_id.removeprefix("draft:"))
        except ValueError:
            return False

    async def apply() -> bool:
        async with runtime.uow() as uow:
            found = await repo.record_notice_status(
                uow.conn, event.tenantid, d.message_id, draft_id, d.status, d.at
            )
            await uow.commit()
            return found

    return await runtime.with_db("record notice status", apply)


async def erase_user(runtime: ServiceRuntime, event: CloudEvent[UserErased]) -> int:
    """``user.erased``: the user's notes (also those kept under their phones), drafts, open
    conversation and profile."""
    hashes = [phone_hash(runtime, p) for p in event.data.phones]

    async def apply() -> int:
        async with runtime.uow() as uow:
            n = await repo.erase_user(uow.conn, event.data.user_id, hashes)
            await uow.commit()
            return n

    n = await runtime.with_db("erase user", apply)
    log.info("erased pipeline data of a user", extra={"rows": n})
    return n
