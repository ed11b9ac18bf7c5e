"""The pipeline's HTTP API: profiles, notes and drafts, tenant-scoped."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel, Field

from services.pipeline import handlers, jobs, writer
from services.pipeline import repository as repo
from shared.api import ERROR_RESPONSES
from shared.events import E164
from shared.service import ServiceRuntime
from shared.tenancy import Tenant

Platform = Literal["linkedin", "instagram", "x", "blog"]
Tone = Literal["professional", "casual", "friendly", "authoritative"]
Length = Literal["short", "medium", "long"]
Language = Literal["pt_BR", "en"]


class ProfileIn(BaseModel):
    platforms: list[Platform] = Field(default_factory=lambda: ["linkedin"], min_length=1, max_length=4)
    tone: Tone = "professional"
    length: Length = "medium"
    topics: list[str] = Field(default_factory=list, max_length=20)
    language: Language = "en"
    phone: E164 | None = None
    notify_on_ready: bool = False


class ProfileView(BaseModel):
    user_id: str
    platforms: list[str]
    tone: str
    length: str
    topics: list[str]
    language: str
    has_phone: bool
    notify_on_ready: bool


class NoteIn(BaseModel):
    body: str = Field(min_length=1, max_length=10000)


class NoteView(BaseModel):
    id: uuid.UUID
    body: str
    source: str
    created_at: datetime


class StepView(BaseModel):
    agent: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    model: str
    tokens: int
    error: str | None


class DraftView(BaseModel):
    id: uuid.UUID
    user_id: str
    status: str
    title: str | None
    text: str | None
    brief: dict[str, Any] | None
    citations: list[dict[str, Any]] | None
    error: str | None
    notice_message_id: uuid.UUID | None
    notice_requested_at: datetime | None
    notice_status: str | None = Field(
        default=None, description="The ready notice's delivery status: queued, sent, delivered, read, failed."
    )
    notice_status_at: datetime | None = None
    created_at: datetime
    steps: list[StepView] = Field(default_factory=list)


class DraftEdit(BaseModel):
    title: str | None = Field(default=None, min_length=1, max_length=200)
    text: str | None = Field(default=None, min_length=1, max_length=20000)


def _profile_view(row: Any) -> ProfileView:
    return ProfileView(
        user_id=row.user_id,
        platforms=list(row.platforms),
        tone=row.tone,
        length=row.length,
        topics=list(row.topics),
        language=row.language,
        has_phone=row.phone_enc is not None,
        notify_on_ready=row.notify_on_ready,
    )


def _draft_view(row: Any, steps: list[Any] | None = None) -> DraftView:
    return DraftView(
        id=row.id,
        user_id=row.user_id,
        status=row.status,
        title=row.title,
        text=row.text,
        brief=row.brief,
        citations=row.citations,
        error=row.error,
        notice_message_id=row.notice_message_id,
        notice_requested_at=row.notice_requested_at,
        notice_status=row.notice_status,
        notice_status_at=row.notice_status_at,
        created_at=row.created_at,
        steps=[StepView.model_validate(s, from_attributes=True) for s in steps or []],
    )


def routers(runtime: ServiceRuntime) -> list[APIRouter]:
    auth = Depends(runtime.auth)
    profiles = APIRouter(prefix="/v1/profiles", tags=["profiles"], responses=ERROR_RESPONSES)
    notes = APIRouter(prefix="/v1/users/{user_id}/notes", tags=["notes"], responses=ERROR_RESPONSES)
    drafts = APIRouter(prefix="/v1/drafts", tags=["drafts"], responses=ERROR_RESPONSES)

    @profiles.put("/{user_id}", response_model=ProfileView, summary="Create or replace a user's profile")
    async def put_profile(user_id: str, body: ProfileIn, tenant: Tenant = auth) -> ProfileView:
        values: dict[str, Any] = {
            "tenant_id": tenant.id,
            "user_id": user_id,
            "platforms": list(body.platforms),
            "tone": body.tone,
            "length": body.length,
            "topics": body.topics,
            "language": body.language,
            "notify_on_ready": body.notify_on_ready,
            "phone_enc": handlers.secret_box(runtime).encrypt(body.phone) if body.phone else None,
            "phone_hash": handlers.phone_hash(runtime, body.phone) if body.phone else None,
        }
        async with runtime.uow() as uow:
            await repo.upsert_profile(uow.conn, values)
            if body.phone:
                await repo.adopt_contact_notes(uow.conn, tenant.id, values["phone_hash"], user_id)
            row = await repo.get_profile(uow.conn, tenant.id, user_id)
            await uow.commit()
        return _profile_view(row)

    @profiles.get("/{user_id}", response_model=ProfileView, summary="A user's profile")
    async def get_profile(user_id: str, tenant: Tenant = auth) -> ProfileView:
        async with runtime.engine.connect() as conn:
            row = await repo.get_profile(conn, tenant.id, user_id)
        if row is None:
            raise HTTPException(404, "no such profile")
        return _profile_view(row)

    @profiles.get("", response_model=list[ProfileView], summary="Profiles of this tenant")
    async def list_profiles(
        limit: int = Query(100, ge=1, le=1000), tenant: Tenant = auth
    ) -> list[ProfileView]:
        async with runtime.engine.connect() as conn:
            return [_profile_view(r) for r in await repo.list_profiles(conn, tenant.id, limit)]

    @profiles.delete("/{user_id}", status_code=204, summary="Delete a user's profile")
    async def delete_profile(user_id: str, tenant: Tenant = auth) -> Response:
        async with runtime.uow() as uow:
            found = await repo.delete_profile(uow.conn, tenant.id, user_id)
            await uow.commit()
        if not found:
            raise HTTPException(404, "no such profile")
        return Response(status_code=204)

    @notes.get(
        "", response_model=list[NoteView], summary="A user's notes, newest first, or ranked by a search"
    )
    async def list_notes(
        user_id: str,
        q: str | None = Query(None, max_length=500, description="Full-text search in the user's language"),
        limit: int = Query(50, ge=1, le=500),
        tenant: Tenant = auth,
    ) -> list[NoteView]:
        async with runtime.engine.connect() as conn:
            if q:
                profile = await repo.get_profile(conn, tenant.id, user_id)
                config = writer.ts_config(profile.language if profile else "en")
                rows = await repo.search_notes(conn, tenant.id, user_id, q, config, limit)
            else:
                rows = await repo.list_notes(conn, tenant.id, user_id, limit)
        return [NoteView.model_validate(r, from_attributes=True) for r in rows]

    @notes.post("", response_model=NoteView, status_code=201, summary="Add a note")
    async def add_note(user_id: str, body: NoteIn, tenant: Tenant = auth) -> NoteView:
        note_id = uuid.uuid4()
        async with runtime.uow() as uow:
            profile = await repo.get_profile(uow.conn, tenant.id, user_id)
            await repo.insert_note(
                uow.conn,
                {
                    "id": note_id,
                    "tenant_id": tenant.id,
                    "user_id": user_id,
                    "body": body.body,
                    "language": profile.language if profile else "en",
                    "source": "api",
                },
            )
            await uow.commit()
        async with runtime.engine.connect() as conn:
            rows = await repo.list_notes(conn, tenant.id, user_id, 500)
        return NoteView.model_validate(next(r for r in rows if r.id == note_id), from_attributes=True)

    @notes.delete("/{note_id}", status_code=204, summary="Delete a note")
    async def delete_note(user_id: str, note_id: uuid.UUID, tenant: Tenant = auth) -> Response:
        async with runtime.uow() as uow:
            found = await repo.delete_note(uow.conn, tenant.id, note_id)
            await uow.commit()
        if not found:
            raise HTTPException(404, "no such note")
        return Response(status_code=204)

    @drafts.get("", response_model=list[DraftView], summary="Drafts, newest first")
    async def list_drafts(
        user_id: str | None = None,
        status: Literal["running", "ready", "failed"] | None = None,
        since: datetime | None = None,
        limit: int = Query(50, ge=1, le=500),
        tenant: Tenant = auth,
    ) -> list[DraftView]:
        async with runtime.engine.connect() as conn:
            rows = await repo.list_drafts(
                conn, tenant.id, user_id=user_id, status=status, since=since, limit=limit
            )
        return [_draft_view(r) for r in rows]

    @drafts.get(
        "/{draft_id}", response_model=DraftView, summary="A draft with its brief, citations and steps"
    )
    async def get_draft(draft_id: uuid.UUID, tenant: Tenant = auth) -> DraftView:
        async with runtime.engine.connect() as conn:
            row = await repo.get_draft(conn, tenant.id, draft_id)
            if row is None:
                raise HTTPException(404, "no such draft")
            return _draft_view(row, await repo.steps(conn, draft_id))

    @drafts.patch("/{draft_id}", response_model=DraftView, summary="Edit a draft's title or text")
    async def edit_draft(draft_id: uuid.UUID, body: DraftEdit, tenant: Tenant = auth) -> DraftView:
        async with runtime.uow() as uow:
            if await repo.get_draft(uow.conn, tenant.id, draft_id) is None:
                raise HTTPException(404, "no such draft")
            await repo.update_draft(uow.conn, draft_id, **body.model_dump(exclude_none=True))
            row = await repo.get_draft(uow.conn, tenant.id, draft_id)
            await uow.commit()
        return _draft_view(row)

    @drafts.post(
        "/{draft_id}/regenerate", response_model=DraftView, status_code=201, summary="Write it again"
    )
    async def regenerate(draft_id: uuid.UUID, tenant: Tenant = auth) -> DraftView:
        async with runtime.engine.connect() as conn:
            row = await repo.get_draft(conn, tenant.id, draft_id)
        if row is None:
            raise HTTPException(404, "no such draft")
        new_id = await handlers.run_content_job(runtime, tenant.id, row.user_id, f"regenerate:{uuid.uuid4()}")
        async with runtime.engine.connect() as conn:
            new = await repo.get_draft(conn, tenant.id, new_id)
            return _draft_view(new, await repo.steps(conn, new_id))

    @drafts.post(
        "/{draft_id}/retry",
        response_model=DraftView,
        summary="Run a failed draft again from its failed step",
        description="The steps that finished are kept; the failed one and those after it run again. "
        "409 when the draft did not fail (use regenerate to write a ready draft again).",
    )
    async def retry(draft_id: uuid.UUID, tenant: Tenant = auth) -> DraftView:
        problem = await jobs.retry_content_job(runtime, tenant.id, draft_id)
        if problem == "no such draft":
            raise HTTPException(404, problem)
        if problem:
            raise HTTPException(
                409, f"{problem} (use POST /v1/drafts/{draft_id}/regenerate to write it again)"
            )
        async with runtime.engine.connect() as conn:
            row = await repo.get_draft(conn, tenant.id, draft_id)
            return _draft_view(row, await repo.steps(conn, draft_id))

    @drafts.delete("/{draft_id}", status_code=204, summary="Delete a draft")
    async def delete_draft(draft_id: uuid.UUID, tenant: Tenant = auth) -> Response:
        async with runtime.uow() as uow:
            found = await repo.delete_draft(uow.conn, tenant.id, draft_id)
            await uow.commit()
        if not found:
            raise HTTPException(404, "no such draft")
        return Response(status_code=204)

    return [profiles, notes, drafts]
