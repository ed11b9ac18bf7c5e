"""Composition root of the sender: routes, subscribers and loops on top of the shared runtime."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Response, status
from faststream.exceptions import NackMessage
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy.engine import Row

from services.sender import handlers
from services.sender import repository as repo
from services.sender.models import SCHEMA, metadata
from services.sender.providers.sandbox import SandboxProvider
from services.sender.settings import SenderSettings
from shared.api import ERROR_RESPONSES, ApiError, RequestModel
from shared.events import CloudEvent, MessageRequested, MessageStatusChanged
from shared.phone import E164, InvalidPhoneNumber, normalize_e164
from shared.service import ServiceRuntime
from shared.tenancy import Tenant
from shared.topology import EVENTS, subscription

MessageStatus = Literal["queued", "sending", "sent", "delivered", "read", "failed"]


class SendMessageRequest(RequestModel):
    to: E164 = Field(description="Recipient in E.164 form, e.g. +5511999998888", examples=["+5511999998888"])
    text: str = Field(
        min_length=1, max_length=4096, description="Message text (WhatsApp allows 4,096 characters)."
    )
    priority: int = Field(
        default=5, ge=1, le=10, description="1 (bulk) … 10 (urgent, e.g. a payment confirmation)."
    )
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Send once per key: a repeated request with the same key returns the same message.",
    )


class MessageAccepted(BaseModel):
    id: uuid.UUID
    status: MessageStatus


class HistoryEntry(BaseModel):
    status: str
    at: datetime
    reason: str | None = None


class MessageView(BaseModel):
    id: uuid.UUID
    to: str
    text: str
    priority: int
    status: MessageStatus
    status_reason: str | None
    provider: str | None
    provider_message_id: str | None
    idempotency_key: str | None
    origin: str
    attempts: int
    created_at: datetime
    updated_at: datetime
    history: list[HistoryEntry] | None = None


class MessageList(BaseModel):
    items: list[MessageView]


class SandboxMessageView(BaseModel):
    id: int
    message_id: uuid.UUID
    provider_message_id: str
    to: str
    text: str
    received_at: datetime


class SandboxMessageList(BaseModel):
    items: list[SandboxMessageView]


def build(settings: SenderSettings | None = None) -> tuple[ServiceRuntime, Any]:
    settings = settings or SenderSettings()
    runtime = ServiceRuntime(
        settings,
        schema=SCHEMA,
        metadata=metadata,
        title="Herald sender",
        description="Delivers every requested WhatsApp message once, and says what happened to it.",
    )
    sender = handlers.Sender(
        runtime=runtime,
        provider=SandboxProvider(runtime.engine, runtime.secrets),
        lease=timedelta(seconds=settings.sending_lease_seconds),
    )
    runtime.add_loop("orphan-sweeper", lambda: handlers.sweep_orphans_forever(sender))

    sub = subscription("sender", MessageRequested)

    @runtime.broker.subscriber(
        sub.queue,
        EVENTS,
        title=sub.queue_name,
        description="Send one WhatsApp message (priority queue 1–10).",
    )
    async def on_message_requested(event: CloudEvent[MessageRequested]) -> None:
        try:
            await handlers.on_requested(sender, event)
        except handlers.RetryLater:
            raise NackMessage(requeue=True) from None

    def view(row: Row[Any], history: list[Row[Any]] | None = None) -> MessageView:
        return MessageView(
            id=row.id,
            to=runtime.secrets.decrypt(row.recipient_enc),
            text=row.text,
            priority=row.priority,
            status=row.status,
            status_reason=row.status_reason,
            provider=row.provider,
            provider_message_id=row.provider_message_id,
            idempotency_key=row.idempotency_key,
            origin=row.origin,
            attempts=row.attempts,
            created_at=row.created_at,
            updated_at=row.updated_at,
            history=[HistoryEntry(status=h.status, at=h.at, reason=h.reason) for h in history]
            if history is not None
            else None,
        )

    api = APIRouter(prefix="/v1", tags=["messages"], responses=ERROR_RESPONSES)
    Auth = Depends(runtime.auth)

    @api.post(
        "/messages",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=MessageAccepted,
        summary="Send a WhatsApp message",
        responses={409: {"description": "idempotency_key reused for a different request"}},
    )
    async def send_message(
        body: SendMessageRequest, response: Response, tenant: Tenant = Auth
    ) -> MessageAccepted:
        req = MessageRequested(
            message_id=uuid.uuid4(),
            to=body.to,
            text=body.text,
            priority=body.priority,
            idempotency_key=body.idempotency_key,
            origin="api",
        )
        try:
            accepted = await handlers.request_message(sender, tenant.id, req)
        except handlers.IdempotencyConflict as exc:
            raise ApiError(409, "idempotency_conflict", str(exc)) from exc
        if not accepted.created:
            response.headers["Idempotent-Replayed"] = "true"
        return MessageAccepted(id=accepted.message_id, status=accepted.status)

    @api.get(
        "/messages/{message_id}", response_model=MessageView, summary="A message with its status history"
    )
    async def get_message(message_id: uuid.UUID, tenant: Tenant = Auth) -> MessageView:
        async with runtime.engine.connect() as conn:
            row = await repo.get_message(conn, tenant.id, message_id)
            if row is None:
                raise ApiError(404, "not_found", f"no message {message_id} for this tenant")
            return view(row, await repo.history(conn, message_id))

    @api.get("/messages", response_model=MessageList, summary="List messages, newest first")
    async def list_messages(
        tenant: Tenant = Auth,
        status_: MessageStatus | None = Query(default=None, alias="status"),
        to: str | None = Query(default=None, description="Recipient, E.164"),
        created_after: AwareDatetime | None = None,
        created_before: AwareDatetime | None = None,
        limit: int = Query(default=50, ge=1, le=500),
    ) -> MessageList:
        recipient_hash = None
        if to is not None:
            try:
                recipient_hash = sender.hash_phone(normalize_e164(to))
            except InvalidPhoneNumber as exc:
                raise ApiError(422, "invalid_request", f"to: {exc}") from exc
        async with runtime.engine.connect() as conn:
            rows = await repo.list_messages(
                conn,
                tenant.id,
                status=status_,
                recipient_hash=recipient_hash,
                created_before=created_before,
                created_after=created_after,
                limit=limit,
            )
        return MessageList(items=[view(r) for r in rows])

    sandbox = APIRouter(prefix="/v1/sandbox", tags=["sandbox"], responses=ERROR_RESPONSES)

    @sandbox.get(
        "/messages",
        response_model=SandboxMessageList,
        summary="What the built-in sandbox provider received (what a recipient would have seen)",
    )
    async def list_sandbox(
        tenant: Tenant = Auth,
        message_id: uuid.UUID | None = None,
        limit: int = Query(default=50, ge=1, le=1000),
    ) -> SandboxMessageList:
        async with runtime.engine.connect() as conn:
            rows = await repo.list_sandbox(conn, tenant.id, message_id=message_id, limit=limit)
        return SandboxMessageList(
            items=[
                SandboxMessageView(
                    id=r.id,
                    message_id=r.message_id,
                    provider_message_id=r.provider_message_id,
                    to=runtime.secrets.decrypt(r.recipient_enc),
                    text=r.text,
                    received_at=r.received_at,
                )
                for r in rows
            ]
        )

    runtime.declare_publishes(MessageStatusChanged)
    app = runtime.create_app([api, sandbox])
    return runtime, app
