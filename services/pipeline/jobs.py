"""The content job: the four agents in order, each step recorded, resumable, retryable.

Invariants:
- one draft per ``job_key`` (``uuid5`` of tenant and key; ``(tenant, job_key)`` unique);
- each step is saved in its own transaction with status, start/end, model, tokens and error, so a
  job interrupted by a crash, or retried after a failed step, starts at the first step not ``done``;
- a step that fails is saved ``failed`` with its error and the draft ends ``failed`` with the same
  error; ``retry_content_job`` reopens a failed draft and runs it from that step;
- ``ready`` and ``draft.ready`` (and the ready notice, when opted in) commit in one transaction.
"""

from __future__ import annotations

import logging
import time
import uuid
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram

from services.pipeline import agents as ag
from services.pipeline import repository as repo
from services.pipeline import writer
from services.pipeline.llm import ChatClient, LLMError
from services.pipeline.settings import PipelineSettings
from shared.events import DraftReady, MessageRequested, new_event
from shared.service import ServiceRuntime

SOURCE = "/herald/pipeline"
DRAFT_NAMESPACE = uuid.UUID("0b7c3d4e-2f6a-4c1b-9e8d-7a5f3c2b1d09")
DRAFTS = Counter("herald_pipeline_drafts_total", "Content jobs finished", ["status"])
STEP_SECONDS = Histogram("herald_pipeline_step_seconds", "Time of one agent's step", ["agent"])
STEP_FAILURES = Counter("herald_pipeline_step_failures_total", "Steps that failed", ["agent"])
log = logging.getLogger("herald.pipeline")

#: each runtime's agents, built once from its settings (``use_agents`` replaces them)
_AGENTS: weakref.WeakKeyDictionary[ServiceRuntime, list[ag.Agent]] = weakref.WeakKeyDictionary()
#: each runtime's model client, shared by its agents and its order parser (None: offline)
_CLIENTS: weakref.WeakKeyDictionary[ServiceRuntime, ChatClient | None] = weakref.WeakKeyDictionary()
_PARSERS: weakref.WeakKeyDictionary[ServiceRuntime, ag.ModelOrderParser | None] = weakref.WeakKeyDictionary()


def _settings(runtime: ServiceRuntime) -> PipelineSettings:
    settings = runtime.settings
    assert isinstance(settings, PipelineSettings)
    return settings


def _client(runtime: ServiceRuntime) -> ChatClient | None:
    if runtime not in _CLIENTS:
        _CLIENTS[runtime] = ag.client_from(_settings(runtime))
    return _CLIENTS[runtime]


def agents_of(runtime: ServiceRuntime) -> list[ag.Agent]:
    found = _AGENTS.get(runtime)
    if found is None:
        found = _AGENTS[runtime] = ag.build_agents(_settings(runtime), _client(runtime))
    return found


def order_parser_of(runtime: ServiceRuntime) -> ag.ModelOrderParser | None:
    """The model order parser when one is configured; None: the rule-based parser."""
    if runtime not in _PARSERS:
        _PARSERS[runtime] = ag.build_order_parser(_settings(runtime), _client(runtime))
    return _PARSERS[runtime]


def use_agents(runtime: ServiceRuntime, agents: list[ag.Agent]) -> None:
    _AGENTS[runtime] = agents


async def close_agents(runtime: ServiceRuntime) -> None:
    """Close the model clients of a runtime's agents and order parser (they share one)."""
    held = [*_AGENTS.pop(runtime, []), _PARSERS.pop(runtime, None)]
    clients = {id(c): c for a in held if (c := getattr(a, "client", None)) is not None}
    if (shared := _CLIENTS.pop(runtime, None)) is not None:
        clients[id(shared)] = shared
    for client in clients.values():
        await client.aclose()
        log.info("model client closed")


def draft_id_for(tenant_id: uuid.UUID, job_key: str) -> uuid.UUID:
    return uuid.uuid5(DRAFT_NAMESPACE, f"{tenant_id}:{job_key}")


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


class DbNotes:
    """``agents.NoteSource`` over the pipeline's notes table."""

    def __init__(self, runtime: ServiceRuntime, tenant_id: uuid.UUID, user_id: str) -> None:
        self.runtime, self.tenant_id, self.user_id = runtime, tenant_id, user_id

    async def recent(self, limit: int) -> list[str]:
        async with self.runtime.engine.connect() as conn:
            return [n.body for n in await repo.list_notes(conn, self.tenant_id, self.user_id, limit)]

    async def search(self, query: str, config: str, limit: int) -> list[dict[str, str]]:
        async with self.runtime.engine.connect() as conn:
            rows = await repo.search_notes(conn, self.tenant_id, self.user_id, query, config, limit)
        return [{"note_id": str(r.id), "text": r.body} for r in rows]


async def run_content_job(
    runtime: ServiceRuntime,
    tenant_id: uuid.UUID,
    user_id: str,
    job_key: str,
    order: Mapping[str, str | None] | None = None,
) -> uuid.UUID:
    """Run (or resume) the job of ``job_key``; a ``ready`` or ``failed`` draft is left as it is.

    ``order``: what a user's order said (platform, length, tone, topic); it overrides the brief."""
    draft_id = draft_id_for(tenant_id, job_key)

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
    job = ag.Job(
        profile=profile,
        notes=DbNotes(runtime, tenant_id, user_id),
        outputs=done,
        brief_override=dict(order) if order else None,
    )
    for position, agent in enumerate(agents_of(runtime), start=1):
        if agent.name in job.outputs:
            continue
        error = await _run_step(runtime, draft_id, position, agent, job)
        if error is not None:
            brief = job.outputs.get("order_builder")
            await _finish(runtime, draft_id, tenant_id, user_id, brief, [], None, error=error)
            return draft_id
    await _finish(
        runtime,
        draft_id,
        tenant_id,
        user_id,
        job.outputs["order_builder"],
        job.citations,
        job.outputs["editor"],
    )
    return draft_id


async def _run_step(
    runtime: ServiceRuntime, draft_id: uuid.UUID, position: int, agent: ag.Agent, job: ag.Job
) -> str | None:
    """Run one agent and save its step; returns the error when it failed (saved ``failed``)."""
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    error: str | None = None
    try:
        result = await agent.run(job)
    except (ag.StepFailed, LLMError) as exc:
        error = str(exc)
        result = ag.StepResult(None, agent.model, getattr(exc, "tokens", 0))
        STEP_FAILURES.labels(agent.name).inc()
    STEP_SECONDS.labels(agent.name).observe(time.perf_counter() - t0)

    async def save() -> None:
        async with runtime.uow() as uow:
            await repo.record_step(
                uow.conn,
                {
                    "draft_id": draft_id,
                    "agent": agent.name,
                    "position": position,
                    "status": "failed" if error else "done",
                    "started_at": started,
                    "finished_at": datetime.now(UTC),
                    "model": result.model,
                    "tokens": result.tokens,
                    "output": result.output,
                    "error": error,
                },
            )
            await uow.commit()

    await runtime.with_db(f"record step {agent.name}", save)
    if error is None:
        job.outputs[agent.name] = result.output
    else:
        log.warning("content job step failed", extra={"agent": agent.name, "draft_id": str(draft_id)})
    return error


async def retry_content_job(runtime: ServiceRuntime, tenant_id: uuid.UUID, draft_id: uuid.UUID) -> str | None:
    """Reopen a ``failed`` draft and run it from its failed step (finished steps are kept).

    Returns None when it ran, else why it cannot be retried (no such draft, or not failed)."""

    async def reopen() -> tuple[str | None, Any]:
        async with runtime.uow() as uow:
            row = await repo.get_draft(uow.conn, tenant_id, draft_id)
            if row is None:
                return "no such draft", None
            # the row lock makes two retries of one draft run it once
            row = await repo.claim_draft(
                uow.conn,
                {
                    "id": row.id,
                    "tenant_id": tenant_id,
                    "user_id": row.user_id,
                    "job_key": row.job_key,
                    "status": "running",
                },
            )
            if row.status != "failed":
                return f"the draft is {row.status}: only a failed draft can be retried", row
            await repo.update_draft(uow.conn, draft_id, status="running", error=None)
            await uow.commit()
            return None, row

    problem, row = await runtime.with_db("reopen content job", reopen)
    if problem is None:
        await run_content_job(runtime, tenant_id, row.user_id, row.job_key)
    return problem


async def _finish(
    runtime: ServiceRuntime,
    draft_id: uuid.UUID,
    tenant_id: uuid.UUID,
    user_id: str,
    brief: dict[str, Any] | None,
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
            assert brief is not None
            profile = await repo.get_profile(uow.conn, tenant_id, user_id)
            phone = runtime.secrets.decrypt(profile.phone_enc) if profile and profile.phone_enc else None
            values: dict[str, Any] = {
                "status": "ready",
                "title": edited["title"],
                "text": edited["text"],
                "brief": brief,
                "citations": citations,
                "error": None,
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
