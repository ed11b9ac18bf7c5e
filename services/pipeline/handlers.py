"""Pipeline use cases."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram

from services.pipeline import repository as repo
from services.pipeline import writer
from services.pipeline.domain import DEFAULT_ORDER_RULE, message_id_for
from shared.crypto import SecretBox, lookup_hash
from shared.events import (
    CloudEvent,
    DraftReady,
    InboundReceived,
    MessageRequested,
    MessageStatusChanged,
    OrderStatusChanged,
    PacingDue,
    UserErased,
    new_event,
)
from shared.service import ServiceRuntime

SOURCE = "/herald/pipeline"
CONSUMER = "order-status-notifier"
NOTIFICATIONS = Counter("herald_pipeline_notifications_total", "Messages requested by rules", ["rule"])


async def notify_order_status(runtime: ServiceRuntime, event: CloudEvent[OrderStatusChanged]) -> bool:
    """Turn an order's status change into a WhatsApp message request, once per event.

    The processed-event record and the outbox row commit together, so a redelivered event
    (at-least-once broker) neither sends twice nor is lost. Returns False for a duplicate.
    """
    rule = DEFAULT_ORDER_RULE

    async def apply() -> bool:
        async with runtime.uow() as uow:
            if not await uow.mark_processed(CONSUMER, f"{event.source}:{event.id}"):
                return False
            request = MessageRequested(
                message_id=message_id_for(event.tenantid, f"{event.source}:{event.id}", rule),
                to=event.data.customer_phone,
                text=rule.render(event.data),
                priority=rule.priority,
                origin="pipeline",
                correlation_id=f"order:{event.data.order_id}",
            )
            uow.add_event(
                new_event(
                    request, tenant_id=event.tenantid, source=SOURCE, subject=f"order/{event.data.order_id}"
                ),
                priority=rule.priority,
            )
            await uow.commit()
            return True

    applied = await runtime.with_db("notify order status", apply)
    if applied:
        NOTIFICATIONS.labels(rule.name).inc()
    return applied


# --- the writer flow ---------------------------------------------------------------------------

NOTE_CONSUMER = "notes"
DRAFT_NAMESPACE = uuid.UUID("0b7c3d4e-2f6a-4c1b-9e8d-7a5f3c2b1d09")
NOTES_STORED = Counter("herald_pipeline_notes_stored_total", "Inbound messages stored as notes", ["source"])
DRAFTS = Counter("herald_pipeline_drafts_total", "Content jobs finished", ["status"])
STEP_SECONDS = Histogram("herald_pipeline_step_seconds", "Time of one agent's step", ["agent"])
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


def _profile_dict(row: Any) -> dict[str, Any]:
    if row is None:
        return {}
    return {
        "platforms": list(row.platforms),
        "tone": row.tone,
        "length": row.length,
        "topics": list(row.topics),
        "language": row.language,
    }


async def run_content_job(
    runtime: ServiceRuntime,
    tenant_id: uuid.UUID,
    user_id: str,
    job_key: str,
    order: Mapping[str, str] | None = None,
) -> uuid.UUID:
    """The four agents in order, each step recorded in its own transaction, so a job that was
    interrupted resumes from its last finished step. The draft turns ``ready`` and ``draft.ready``
    (and the ready notice, when opted in) go out in one transaction. Idempotent on ``job_key``.

    ``order``: what a user's order said (platform, length, tone, topic); it overrides the brief."""
    draft_id = uuid.uuid5(DRAFT_NAMESPACE, f"{tenant_id}:{job_key}")

    async def claim() -> tuple[str, dict[str, Any], dict[str, Any]]:
        async with runtime.uow() as uow:
            row = await repo.claim_draft(
                uow.conn,
                {
                    "id": draft_id,
                    "tenant_id": tenant_id,
                    "user_id": user_id,
                    "job_key": job_key,
                    "status": "running",
                },
            )
            done = {s.agent: s.output for s in await repo.steps(uow.conn, row.id) if s.status == "done"}
            profile = _profile_dict(await repo.get_profile(uow.conn, tenant_id, user_id))
            await uow.commit()
            return row.status, done, profile

    status, done, profile = await runtime.with_db("claim content job", claim)
    if status in ("ready", "failed"):
        return draft_id

    async def step(agent: str, position: int, work: Any) -> Any:
        if agent in done:
            return done[agent]
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        output = await work()
        STEP_SECONDS.labels(agent).observe(time.perf_counter() - t0)

        async def save() -> None:
            async with runtime.uow() as uow:
                await repo.record_step(
                    uow.conn,
                    {
                        "draft_id": draft_id,
                        "agent": agent,
                        "position": position,
                        "status": "done",
                        "started_at": started,
                        "finished_at": datetime.now(UTC),
                        "model": writer.OFFLINE_MODEL,
                        "tokens": 0,
                        "output": output,
                    },
                )
                await uow.commit()

        await runtime.with_db(f"record step {agent}", save)
        done[agent] = output
        return output

    language = profile.get("language", "en")
    config = writer.ts_config(language)

    async def recent() -> list[str]:
        async with runtime.engine.connect() as conn:
            return [n.body for n in await repo.list_notes(conn, tenant_id, user_id, 20)]

    async def order_builder() -> dict[str, Any]:
        brief = writer.build_brief(profile, await recent()).as_dict()
        return brief | {k: v for k, v in (order or {}).items() if k in brief and v}

    brief_d = await step("order_builder", 1, order_builder)
    brief = writer.Brief(**brief_d)

    async def retrieval() -> list[dict[str, Any]]:
        async with runtime.engine.connect() as conn:
            rows = await repo.search_notes(
                conn, tenant_id, user_id, brief.topic.replace(",", " or "), config, 6
            )
        return [{"note_id": str(r.id), "text": r.body} for r in rows]

    citations = await step("retrieval", 2, retrieval)

    async def write_step() -> dict[str, Any]:
        return {"text": writer.write(brief, [c["text"] for c in citations])}

    async def edit_step() -> dict[str, Any]:
        title, text = writer.edit(brief, written["text"])
        return {"title": title, "text": text}

    if not citations:
        await _finish(
            runtime, draft_id, tenant_id, user_id, brief_d, [], None, error="no notes to write from"
        )
        return draft_id
    written = await step("writer", 3, write_step)
    edited = await step("editor", 4, edit_step)
    await _finish(runtime, draft_id, tenant_id, user_id, brief_d, citations, edited)
    return draft_id


async def _finish(
    runtime: ServiceRuntime,
    draft_id: uuid.UUID,
    tenant_id: uuid.UUID,
    user_id: str,
    brief: dict[str, Any],
    citations: list[dict[str, Any]],
    edited: dict[str, Any] | None,
    *,
    error: str | None = None,
) -> None:
    async def apply() -> None:
        async with runtime.uow() as uow:
            current = await repo.get_draft(uow.conn, tenant_id, draft_id)
            if current is None or current.status in ("ready", "failed"):
                return
            if edited is None:
                await repo.update_draft(uow.conn, draft_id, status="failed", brief=brief, error=error)
                await uow.commit()
                DRAFTS.labels("failed").inc()
                return
            profile = await repo.get_profile(uow.conn, tenant_id, user_id)
            phone = secret_box(runtime).decrypt(profile.phone_enc) if profile and profile.phone_enc else None
            values: dict[str, Any] = {
                "status": "ready",
                "title": edited["title"],
                "text": edited["text"],
                "brief": brief,
                "citations": citations,
            }
            subject = f"draft/{draft_id}"
            uow.add_event(
                new_event(
                    DraftReady(draft_id=draft_id, user_id=user_id, title=edited["title"], notify_phone=phone),
                    tenant_id=tenant_id,
                    source=SOURCE,
                    subject=subject,
                )
            )
            if profile is not None and profile.notify_on_ready and phone:
                message_id = uuid.uuid5(DRAFT_NAMESPACE, f"notice:{draft_id}")
                notice = writer.ready_notice(
                    profile.language, brief["platform"], edited["title"], str(draft_id)
                )
                uow.add_event(
                    new_event(
                        MessageRequested(
                            message_id=message_id,
                            to=phone,
                            text=notice,
                            priority=6,
                            origin="pipeline",
                            correlation_id=f"draft:{draft_id}",
                        ),
                        tenant_id=tenant_id,
                        source=SOURCE,
                        subject=subject,
                    ),
                    priority=6,
                )
                values |= {"notice_message_id": message_id, "notice_requested_at": datetime.now(UTC)}
            await repo.update_draft(uow.conn, draft_id, **values)
            await uow.commit()
            DRAFTS.labels("ready").inc()

    await runtime.with_db("finish content job", apply)


async def on_pacing_due(runtime: ServiceRuntime, event: CloudEvent[PacingDue]) -> uuid.UUID:
    """A pacing slot fired: one content job per (schedule, slot), however often it is delivered."""
    d = event.data
    return await run_content_job(
        runtime, event.tenantid, d.user_id, f"pacing:{d.schedule_id}:{d.slot_at.isoformat()}"
    )


async def record_notice_status(runtime: ServiceRuntime, event: CloudEvent[MessageStatusChanged]) -> bool:
    """``message.status`` of a ready notice → the draft shows it. Other messages' statuses (the
    sender reports every message) match no draft and change nothing. Idempotent."""
    d = event.data
    draft_id = None
    if d.correlation_id:
        # the sender reports every message with the correlation id it was requested with: one
        # that does not name a draft is not a notice, and costs no query
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
