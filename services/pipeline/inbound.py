"""``inbound.received``: a note, an order, or the answer to a clarification (see ``conversation``).

Invariants:
- One inbound message, one decision: the decision's writes (note, context), its outbox rows
  (the question, the short message) and the processed-message record commit together, so a
  redelivery sends nothing twice and a crash loses nothing.
- An order that runs is marked processed in the transaction that ends its content job: a crash
  in between rolls the mark back and the redelivery resumes the same job (keyed on the order's
  message: no second draft); the failure message goes out once (its id is derived from the draft).
- An order whose job raises (not a database outage, which is waited out) still gets its one
  failure message: its draft is marked failed, and nothing goes to the dead letters unheard.
- Unmapped contacts (no user id) only keep notes; their orders are stored as notes.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from services.pipeline import conversation as policy
from services.pipeline import handlers, jobs, writer
from services.pipeline import repository as repo
from services.pipeline.orders import Choice, is_order
from shared.db import is_transient_db_error
from shared.events import CloudEvent, InboundReceived, MessageRequested, new_event
from shared.service import ServiceRuntime

CONSUMER = "conversation"
#: namespace of the ids of the messages the conversation sends: one inbound message, one reply
REPLY_NAMESPACE = uuid.UUID("9d4a8e21-6c3f-4b7a-a0d5-2e8f1c6b3a74")
#: a question is part of a conversation the user is having right now: ahead of bulk sends
PRIORITY = 7
DECISIONS = Counter("herald_pipeline_inbound_total", "Inbound messages by decision", ["decision"])
log = logging.getLogger("herald.pipeline.inbound")
#: orders running at once in this process (each holds a connection while its job runs)
ORDER_SLOTS = 4
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _order_slots() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    if loop not in _slots:
        _slots[loop] = asyncio.Semaphore(ORDER_SLOTS)
    return _slots[loop]


def _context(row: Any) -> policy.Context | None:
    if row is None:
        return None
    return policy.Context(
        field=row.field,
        known=dict(row.known),
        choices=[Choice(**c) for c in row.choices],
        language=row.language,
        attempts=row.attempts,
        order_ref=row.order_ref,
        expires_at=row.expires_at,
    )


def _profile(row: Any) -> policy.Profile | None:
    if row is None:
        return None
    return policy.Profile(language=row.language, platforms=tuple(row.platforms), topics=tuple(row.topics))


def _reply(data: InboundReceived) -> policy.Reply:
    text = handlers.note_body(data) or data.title or data.text
    return policy.Reply(
        ref=f"{data.provider}:{data.provider_message_id}", text=text, payload=data.payload, title=data.title
    )


def _message(
    event: CloudEvent[InboundReceived], key: str, *, text: str | None = None, content: Any = None
) -> CloudEvent[MessageRequested]:
    """A reply to the user; its id is derived from ``key``, so it is requested once."""
    data = event.data
    ref = f"{data.provider}:{data.provider_message_id}"
    request = MessageRequested(
        message_id=uuid.uuid5(REPLY_NAMESPACE, f"{event.tenantid}:{key}"),
        to=data.from_phone,
        text=text,
        content=content,
        priority=PRIORITY,
        origin="pipeline",
        correlation_id=f"conversation:{ref}"[:200],
        channel_id=data.channel_id,
    )
    return new_event(
        request, tenant_id=event.tenantid, source=handlers.SOURCE, subject=f"user/{data.user_id}"
    )


async def on_inbound(runtime: ServiceRuntime, event: CloudEvent[InboundReceived]) -> str:
    """Carry out the policy's decision for one inbound message; returns the decision's name
    (``duplicate`` for a redelivery)."""
    data = event.data
    if not data.user_id:
        return "note" if await handlers.store_note(runtime, event) else "duplicate"
    user_id = data.user_id
    reply = _reply(data)
    now = datetime.now(UTC)
    # the model reads an order before the transaction (no connection held while it answers);
    # a failed or invalid answer gives the rule-based reading, and a note costs no model call
    parser = jobs.order_parser_of(runtime)
    order = await parser.parse(reply.text or "") if parser is not None else None

    async def decide_and_apply() -> policy.Decision | None:
        async with runtime.uow() as uow:
            if not await uow.mark_processed(CONSUMER, reply.ref):
                return None
            ctx = _context(await repo.get_conversation(uow.conn, event.tenantid, user_id))
            profile = _profile(await repo.get_profile(uow.conn, event.tenantid, user_id))
            keywords: list[str] = []
            if (ctx is not None or is_order(reply.text or "")) and not (profile and profile.topics):
                recent = await repo.list_notes(uow.conn, event.tenantid, user_id, 20)
                keywords = writer.keywords([n.body for n in recent], 3)
            decision = policy.decide(reply, ctx, profile, keywords, now, order)
            if isinstance(decision, policy.Run):
                return decision  # rolled back: ``_run_order`` marks it processed with the job
            if isinstance(decision, policy.Note):
                if decision.drop_context:
                    await repo.delete_conversation(uow.conn, event.tenantid, user_id)
                language = profile.language if profile else "en"
                await handlers.save_note(runtime, uow.conn, event.tenantid, data, language=language)
            elif isinstance(decision, policy.Ask):
                c = decision.context
                await repo.save_conversation(
                    uow.conn,
                    {
                        "tenant_id": event.tenantid,
                        "user_id": user_id,
                        "field": c.field,
                        "known": c.known,
                        "choices": [{"id": x.id, "title": x.title, "value": x.value} for x in c.choices],
                        "language": c.language,
                        "attempts": c.attempts,
                        "order_ref": c.order_ref,
                        "expires_at": c.expires_at,
                    },
                )
                uow.add_event(
                    _message(event, f"{reply.ref}:question", content=policy.question(decision)),
                    priority=PRIORITY,
                )
            elif isinstance(decision, policy.GiveUp):
                await repo.delete_conversation(uow.conn, event.tenantid, user_id)
                text = policy.words(decision.language)["dropped"]
                uow.add_event(_message(event, f"{reply.ref}:dropped", text=text), priority=PRIORITY)
            await uow.commit()
            return decision

    decision = await runtime.with_db("decide inbound", decide_and_apply)
    if decision is None:
        return "duplicate"
    if isinstance(decision, policy.Run):
        await _run_order(runtime, event, decision)
    name = type(decision).__name__.lower()
    DECISIONS.labels(name).inc()
    return name


async def _run_order(runtime: ServiceRuntime, event: CloudEvent[InboundReceived], run: policy.Run) -> None:
    """The complete order as a content job (its fields override the profile's brief); the ready
    notice comes from the job when opted in; a failed job gets one short message.

    The processed-message record is inserted first and committed only with the end of the job:
    a concurrent redelivery waits on it and then finds it (no second job, no second message); a
    crash rolls it back, so the redelivery resumes the same job (keyed on the order's message).
    Holding the transaction costs a connection per running order: ``ORDER_SLOTS`` bounds them."""
    user_id = event.data.user_id
    assert user_id is not None
    ref = f"{event.data.provider}:{event.data.provider_message_id}"

    async def run_and_close() -> None:
        async with _order_slots(), runtime.uow() as uow:
            if not await uow.mark_processed(CONSUMER, ref):
                return
            # the user's next message waits for the job: it then finds the question closed
            await repo.get_conversation(uow.conn, event.tenantid, user_id)
            job_key = f"order:{run.order_ref}"
            error: str | None = None
            try:
                draft_id = await handlers.run_content_job(
                    runtime, event.tenantid, user_id, job_key, order=run.fields
                )
            except Exception as exc:
                if is_transient_db_error(exc):
                    raise  # with_db waits the database out and runs this again
                # rejected, the message would go to the dead letters and the user hear nothing
                log.exception("the content job of an order stopped")
                error = f"the job stopped: {type(exc).__name__}"
                draft_id = jobs.draft_id_for(event.tenantid, job_key)
                stuck = await repo.get_draft(uow.conn, event.tenantid, draft_id)
                if stuck is not None and stuck.status == "running":
                    await repo.update_draft(uow.conn, draft_id, status="failed", error=error)
            await repo.delete_conversation(uow.conn, event.tenantid, user_id, run.order_ref)
            if error is None:
                draft = await repo.get_draft(uow.conn, event.tenantid, draft_id)
                if draft is not None and draft.status == "failed":
                    error = draft.error or "failed"
            if error is not None:
                text = policy.failure_text(run.language, error)
                # one failure message per draft, whichever message completed the order
                uow.add_event(_message(event, f"failed:{draft_id}", text=text), priority=PRIORITY)
                log.info("order failed", extra={"draft_id": str(draft_id), "error": error})
            await uow.commit()

    await runtime.with_db("run order", run_and_close)
