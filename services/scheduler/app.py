"""Composition root of the scheduler."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, status
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy.engine import Row

from services.scheduler import handlers
from services.scheduler import repository as repo
from services.scheduler.domain import ScheduleError
from services.scheduler.models import SCHEMA, metadata
from services.scheduler.settings import SchedulerSettings
from shared.api import ERROR_RESPONSES, ApiError, RequestModel
from shared.events import MessageRequested
from shared.phone import E164
from shared.service import ServiceRuntime
from shared.tenancy import Tenant

ScheduleStatus = Literal["pending", "published", "cancelled"]


class ScheduleMessageRequest(RequestModel):
    to: E164 = Field(examples=["+5511999998888"])
    text: str = Field(min_length=1, max_length=4096)
    send_at: AwareDatetime = Field(description="ISO 8601 with a UTC offset, e.g. 2026-12-01T09:00:00-03:00")
    priority: int = Field(default=5, ge=1, le=10)


class ScheduledMessageView(BaseModel):
    id: uuid.UUID
    to: str
    text: str
    priority: int
    send_at: datetime
    status: ScheduleStatus = Field(description="pending → published (handed to the sender), or cancelled")
    message_id: uuid.UUID = Field(description="The sender's message id once published: GET /v1/messages/{id}")
    created_at: datetime
    published_at: datetime | None
    cancelled_at: datetime | None


class ScheduledMessageList(BaseModel):
    items: list[ScheduledMessageView]


def build(settings: SchedulerSettings | None = None) -> tuple[ServiceRuntime, Any]:
    settings = settings or SchedulerSettings()
    runtime = ServiceRuntime(
        settings,
        schema=SCHEMA,
        metadata=metadata,
        title="Herald scheduler",
        description="Fires every scheduled message once, on time.",
    )
    sched = handlers.Scheduler(
        runtime=runtime, batch_size=settings.claim_batch_size, max_sleep=settings.max_sleep_seconds
    )
    runtime.add_loop("claim-loop", lambda: handlers.run_claim_loop(sched))

    def view(row: Row[Any]) -> ScheduledMessageView:
        return ScheduledMessageView(
            id=row.id,
            to=runtime.secrets.decrypt(row.recipient_enc),
            text=row.text,
            priority=row.priority,
            send_at=row.send_at,
            status=row.status,
            message_id=row.message_id,
            created_at=row.created_at,
            published_at=row.published_at,
            cancelled_at=row.cancelled_at,
        )

    api = APIRouter(prefix="/v1/scheduled-messages", tags=["scheduled messages"], responses=ERROR_RESPONSES)
    Auth = Depends(runtime.auth)

    @api.post(
        "",
        status_code=status.HTTP_201_CREATED,
        response_model=ScheduledMessageView,
        summary="Schedule a message for a given time",
    )
    async def create(body: ScheduleMessageRequest, tenant: Tenant = Auth) -> ScheduledMessageView:
        try:
            row = await handlers.create(
                sched, tenant.id, to=body.to, text=body.text, priority=body.priority, send_at=body.send_at
            )
        except ScheduleError as exc:
            raise ApiError(
                422, "invalid_request", f"send_at: {exc}", [{"field": "send_at", "problem": str(exc)}]
            ) from exc
        return view(row)

    @api.get("", response_model=ScheduledMessageList, summary="List this tenant's scheduled messages")
    async def list_(
        tenant: Tenant = Auth,
        status_: ScheduleStatus | None = Query(default=None, alias="status"),
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> ScheduledMessageList:
        async with runtime.engine.connect() as conn:
            rows = await repo.list_for_tenant(conn, tenant.id, status=status_, limit=limit)
        return ScheduledMessageList(items=[view(r) for r in rows])

    @api.get("/{schedule_id}", response_model=ScheduledMessageView, summary="One scheduled message")
    async def get(schedule_id: uuid.UUID, tenant: Tenant = Auth) -> ScheduledMessageView:
        async with runtime.engine.connect() as conn:
            row = await repo.get(conn, tenant.id, schedule_id)
        if row is None:
            raise ApiError(404, "not_found", f"no scheduled message {schedule_id} for this tenant")
        return view(row)

    @api.delete(
        "/{schedule_id}",
        response_model=ScheduledMessageView,
        summary="Cancel a pending scheduled message",
        responses={409: {"description": "Already published or cancelled"}},
    )
    async def cancel(schedule_id: uuid.UUID, tenant: Tenant = Auth) -> ScheduledMessageView:
        try:
            row = await handlers.cancel(sched, tenant.id, schedule_id)
        except handlers.NotCancellable as exc:
            raise ApiError(409, "not_cancellable", str(exc)) from exc
        if row is None:
            raise ApiError(404, "not_found", f"no scheduled message {schedule_id} for this tenant")
        return view(row)

    runtime.declare_publishes(MessageRequested)
    app = runtime.create_app([api])
    return runtime, app
