"""The sender's HTTP API: each route translates HTTP ⇄ a use case (accept, channels,
catalogues, outcomes) or a repository read, and rows into response models."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import AwareDatetime
from sqlalchemy.engine import Row

from services.sender import channels, sessions
from services.sender import repository as repo
from services.sender import templates as catalogue
from services.sender.accept import IdempotencyConflict, request_message, request_messages
from services.sender.api_analytics import routers as analytics_routers
from services.sender.api_campaigns import campaign_router
from services.sender.api_sessions import session_router
from services.sender.api_templates import template_routers
from services.sender.catalogues import opt_in, opt_out
from services.sender.context import Sender
from services.sender.domain import breaker_state, waiting
from services.sender.outcomes import replay
from services.sender.schemas import (
    BatchAccepted,
    BatchAcceptedList,
    ChannelCreate,
    ChannelList,
    ChannelUpdate,
    ChannelView,
    HistoryEntry,
    MessageAccepted,
    MessageList,
    MessageStatus,
    MessageView,
    OptOutList,
    OptOutRequest,
    OptOutView,
    Replayed,
    ReplayFilter,
    SandboxMessageList,
    SandboxMessageView,
    SendBatchRequest,
    SendMessageRequest,
    Waiting,
    normalize_recipient,
)
from shared.api import ERROR_RESPONSES, ApiError
from shared.events import MessageRequested, utcnow
from shared.phone import InvalidPhoneNumber
from shared.tenancy import Tenant

#: statuses at which the provider has had the message
OUT = frozenset({"sent", "delivered", "read"})


def sent_content(row: Row[Any]) -> dict[str, Any] | None:
    """What went out: the fallback template that replaced the content, else the content itself,
    once the provider has the message (a delivery failure after the send included)."""
    if row.status not in OUT and not (row.status == "failed" and row.provider_message_id):
        return None
    return row.sent_content or row.content or {"kind": "text", "body": row.text}


def routers(sender: Sender) -> list[APIRouter]:
    runtime = sender.runtime
    settings = sender.settings

    def view(
        row: Row[Any], history: list[Row[Any]] | None = None, channel: Row[Any] | None = None
    ) -> MessageView:
        waits = waiting(row._mapping, channel._mapping if channel is not None else None, utcnow())
        return MessageView(
            id=row.id,
            to=runtime.secrets.decrypt(row.recipient_enc),
            text=row.text,
            content=row.content,
            channel_id=row.channel_id,
            priority=row.priority,
            status=row.status,
            status_reason=row.status_reason,
            error_code=row.error_code,
            dead_letter=row.dead_letter,
            provider=row.provider,
            provider_message_id=row.provider_message_id,
            idempotency_key=row.idempotency_key,
            origin=row.origin,
            attempts=row.attempts,
            created_at=row.created_at,
            updated_at=row.updated_at,
            sent_at=row.sent_at,
            delivered_at=row.delivered_at,
            waiting=Waiting(reason=waits[0], until=waits[1]) if waits else None,
            sent_content=sent_content(row),
            history=[HistoryEntry(status=h.status, at=h.at, reason=h.reason) for h in history]
            if history is not None
            else None,
        )

    def channel_view(row: Row[Any]) -> ChannelView:
        breaker = breaker_state(
            paused=row.paused,
            open_until=row.breaker_open_until,
            consecutive_failures=row.consecutive_failures,
            threshold=settings.breaker_threshold,
            now=utcnow(),
        )
        credentials = sender.credentials(row)
        return ChannelView(
            id=row.id,
            name=row.name,
            provider=row.provider,
            base_url=row.base_url,
            settings=row.settings or {},
            credentials_set=sorted(credentials),
            is_default=row.is_default,
            throughput_per_second=row.throughput_per_second,
            portfolio=row.portfolio,
            tier=row.tier,
            pair_interval_seconds=row.pair_interval_seconds,
            quiet_hours=row.quiet_hours,
            enforce_window=row.enforce_window,
            breaker=breaker,
            consecutive_failures=row.consecutive_failures,
            breaker_open_until=row.breaker_open_until,
            pause_reason=row.pause_reason,
            session=sessions.brief(row),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    Auth = Depends(runtime.auth)

    async def resolve_variables(
        tenant_id: uuid.UUID, req: MessageRequested, at: str = ""
    ) -> MessageRequested:
        """A catalogue template's named variables as its parameters (422 naming a missing or extra one)."""
        try:
            return await catalogue.resolve(sender, tenant_id, req)
        except catalogue.TemplateInvalid as exc:
            raise ApiError(
                422,
                "invalid_request",
                f"{at}{exc}",
                details=[{"field": at + exc.field, "problem": exc.problem}],
            ) from exc

    # --- messages ---------------------------------------------------------------------------

    api = APIRouter(prefix="/v1", tags=["messages"], responses=ERROR_RESPONSES)

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
            content=body.content,
            fallback_template=body.fallback_template,
            channel_id=body.channel_id,
            priority=body.priority,
            idempotency_key=body.idempotency_key,
            origin="api",
        )
        req = await resolve_variables(tenant.id, req)
        if body.channel_id is not None:
            async with runtime.engine.connect() as conn:
                if not await repo.channel_exists(conn, tenant.id, body.channel_id):
                    raise ApiError(404, "not_found", f"no channel {body.channel_id} for this tenant")
        try:
            accepted = await request_message(
                sender, tenant.id, req, channel_checked=body.channel_id is not None
            )
        except IdempotencyConflict as exc:
            raise ApiError(409, "idempotency_conflict", str(exc)) from exc
        if not accepted.created:
            response.headers["Idempotent-Replayed"] = "true"
        return MessageAccepted(id=accepted.message_id, status=accepted.status)

    @api.post(
        "/messages/batch",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=BatchAcceptedList,
        summary="Send many WhatsApp messages in one request",
        description="For bulk sends: every item is validated first (one bad item gets 422 naming "
        "it, and nothing is stored), then all are stored in one transaction. Limits, priorities and "
        "checks apply to each message exactly as for POST /v1/messages.",
    )
    async def send_batch(body: SendBatchRequest, tenant: Tenant = Auth) -> BatchAcceptedList:
        named = {m.channel_id for m in body.messages if m.channel_id is not None}
        if named:
            async with runtime.engine.connect() as conn:
                for channel_id in named:
                    if not await repo.channel_exists(conn, tenant.id, channel_id):
                        raise ApiError(404, "not_found", f"no channel {channel_id} for this tenant")
        reqs = [
            MessageRequested(
                message_id=uuid.uuid4(),
                to=m.to,
                text=m.text,
                content=m.content,
                fallback_template=m.fallback_template,
                channel_id=m.channel_id,
                priority=m.priority,
                idempotency_key=m.idempotency_key,
                origin="api",
            )
            for m in body.messages
        ]
        try:  # one catalogue look-up for the whole batch
            reqs = await catalogue.resolve_many(
                sender, tenant.id, reqs, prefixes=[f"messages.{i}." for i in range(len(reqs))]
            )
        except catalogue.TemplateInvalid as exc:
            raise ApiError(
                422, "invalid_request", str(exc), details=[{"field": exc.field, "problem": exc.problem}]
            ) from exc
        items = await request_messages(sender, tenant.id, reqs)
        return BatchAcceptedList(
            accepted=sum(1 for i in items if i.created),
            messages=[
                BatchAccepted(id=i.message_id, status=i.status, created=i.created, error=i.error)
                for i in items
            ],
        )

    @api.get(
        "/messages/{message_id}", response_model=MessageView, summary="A message with its status history"
    )
    async def get_message(message_id: uuid.UUID, tenant: Tenant = Auth) -> MessageView:
        async with runtime.engine.connect() as conn:
            row = await repo.get_message(conn, tenant.id, message_id)
            if row is None:
                raise ApiError(404, "not_found", f"no message {message_id} for this tenant")
            channel = await repo.get_channel_any(conn, row.channel_id) if row.channel_id else None
            return view(row, await repo.history(conn, message_id), channel)

    def recipient_hash(to: str | None) -> str | None:
        if to is None:
            return None
        try:
            return sender.hash_phone(normalize_recipient(to))
        except InvalidPhoneNumber as exc:
            raise ApiError(422, "invalid_request", f"to: {exc}") from exc

    @api.get("/messages", response_model=MessageList, summary="List messages, newest first")
    async def list_messages(
        tenant: Tenant = Auth,
        status_: MessageStatus | None = Query(default=None, alias="status"),
        channel_id: uuid.UUID | None = None,
        to: str | None = Query(default=None, description="Recipient, E.164"),
        created_after: AwareDatetime | None = None,
        created_before: AwareDatetime | None = None,
        limit: int = Query(default=50, ge=1, le=500),
    ) -> MessageList:
        async with runtime.engine.connect() as conn:
            rows = await repo.list_messages(
                conn,
                tenant.id,
                status=status_,
                recipient_hash=recipient_hash(to),
                channel_id=channel_id,
                created_before=created_before,
                created_after=created_after,
                limit=limit,
            )
            chans = {c.id: c for c in await repo.list_channels(conn, tenant.id)} if rows else {}
        return MessageList(items=[view(r, channel=chans.get(r.channel_id)) for r in rows])

    # --- dead letters -----------------------------------------------------------------------

    dead = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"], responses=ERROR_RESPONSES)

    @dead.get("", response_model=MessageList, summary="Messages that failed after their last attempt")
    async def list_dead_letters(
        tenant: Tenant = Auth,
        channel_id: uuid.UUID | None = None,
        created_after: AwareDatetime | None = None,
        created_before: AwareDatetime | None = None,
        limit: int = Query(default=50, ge=1, le=500),
    ) -> MessageList:
        async with runtime.engine.connect() as conn:
            rows = await repo.list_messages(
                conn,
                tenant.id,
                status=None,
                recipient_hash=None,
                channel_id=channel_id,
                dead_letter=True,
                created_before=created_before,
                created_after=created_after,
                limit=limit,
            )
        return MessageList(items=[view(r) for r in rows])

    @dead.post("/{message_id}/replay", response_model=Replayed, summary="Send one dead letter again")
    async def replay_one(message_id: uuid.UUID, tenant: Tenant = Auth) -> Replayed:
        replayed = await replay(sender, tenant.id, [message_id])
        if not replayed:
            raise ApiError(404, "not_found", f"no dead letter {message_id} for this tenant")
        return Replayed(replayed=replayed)

    @dead.post("/replay", response_model=Replayed, summary="Send every dead letter matching a filter again")
    async def replay_filter(body: ReplayFilter, tenant: Tenant = Auth) -> Replayed:
        async with runtime.engine.connect() as conn:
            ids = await repo.dead_letter_ids(
                conn,
                tenant.id,
                channel_id=body.channel_id,
                error_code=body.error_code,
                created_after=body.created_after,
                created_before=body.created_before,
                limit=body.limit,
            )
        return Replayed(replayed=await replay(sender, tenant.id, ids) if ids else [])

    # --- channels ---------------------------------------------------------------------------

    chan = APIRouter(prefix="/v1/channels", tags=["channels"], responses=ERROR_RESPONSES)

    @chan.post("", status_code=201, response_model=ChannelView, summary="Add a WhatsApp number on a provider")
    async def create_channel(body: ChannelCreate, tenant: Tenant = Auth) -> ChannelView:
        row = await channels.create_channel(sender, tenant.id, body.model_dump(), body.model_fields_set)
        return channel_view(row)

    @chan.get("", response_model=ChannelList, summary="The tenant's channels")
    async def list_channels(tenant: Tenant = Auth) -> ChannelList:
        async with runtime.engine.connect() as conn:
            return ChannelList(items=[channel_view(r) for r in await repo.list_channels(conn, tenant.id)])

    @chan.get("/{channel_id}", response_model=ChannelView, summary="A channel with its breaker state")
    async def get_channel(channel_id: uuid.UUID, tenant: Tenant = Auth) -> ChannelView:
        async with runtime.engine.connect() as conn:
            row = await repo.get_channel(conn, tenant.id, channel_id)
        if row is None:
            raise ApiError(404, "not_found", f"no channel {channel_id} for this tenant")
        return channel_view(row)

    @chan.patch("/{channel_id}", response_model=ChannelView, summary="Change a channel; resume a paused one")
    async def update_channel(
        channel_id: uuid.UUID, body: ChannelUpdate, tenant: Tenant = Auth
    ) -> ChannelView:
        try:
            row = await channels.update_channel(
                sender, tenant.id, channel_id, body.model_dump(exclude_unset=True)
            )
        except channels.ChannelNotFound as exc:
            raise ApiError(404, "not_found", str(exc)) from exc
        return channel_view(row)

    @chan.delete("/{channel_id}", status_code=204, summary="Remove a channel; its queued messages fail")
    async def delete_channel(channel_id: uuid.UUID, tenant: Tenant = Auth) -> Response:
        try:
            await channels.delete_channel(sender, tenant.id, channel_id)
        except channels.ChannelNotFound as exc:
            raise ApiError(404, "not_found", str(exc)) from exc
        return Response(status_code=204)

    # --- opt-outs ---------------------------------------------------------------------------

    opts = APIRouter(prefix="/v1/opt-outs", tags=["opt-outs"], responses=ERROR_RESPONSES)

    @opts.post("", status_code=201, response_model=OptOutView, summary="Stop sending to a recipient")
    async def add_opt_out(body: OptOutRequest, tenant: Tenant = Auth) -> OptOutView:
        now = utcnow()
        await opt_out(sender, tenant.id, body.phone, body.reason or "api", now)
        return OptOutView(phone=body.phone, reason=body.reason or "api", at=now)

    @opts.get("", response_model=OptOutList, summary="The tenant's opt-out list")
    async def list_opt_outs(
        tenant: Tenant = Auth, limit: int = Query(default=100, ge=1, le=1000)
    ) -> OptOutList:
        async with runtime.engine.connect() as conn:
            rows = await repo.list_opt_outs(conn, tenant.id, limit)
        return OptOutList(
            items=[
                OptOutView(phone=runtime.secrets.decrypt(r.recipient_enc), reason=r.reason, at=r.at)
                for r in rows
            ]
        )

    @opts.delete("/{phone}", status_code=204, summary="Send to a recipient again (opt back in)")
    async def remove_opt_out(phone: str, tenant: Tenant = Auth) -> Response:
        try:
            normalized = normalize_recipient(phone)
        except InvalidPhoneNumber as exc:
            raise ApiError(422, "invalid_request", f"phone: {exc}") from exc
        if not await opt_in(sender, tenant.id, normalized):
            raise ApiError(404, "not_found", f"{normalized} is not on the opt-out list")
        return Response(status_code=204)

    # --- sandbox ----------------------------------------------------------------------------

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

    return [
        api,
        dead,
        chan,
        opts,
        *template_routers(sender),
        campaign_router(sender),
        sandbox,
        session_router(sender),
        *analytics_routers(sender),
    ]
