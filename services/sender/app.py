"""Composition root of the sender: routes, subscribers and loops on top of the shared runtime."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Query, Response, status
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, model_validator
from sqlalchemy.engine import Row

from services.sender import handlers
from services.sender import repository as repo
from services.sender.domain import TIERS, QuietHours
from services.sender.models import SCHEMA, channels, messages, metadata, templates
from services.sender.providers.registry import SPECS
from services.sender.settings import SenderSettings
from shared.api import ERROR_RESPONSES, ApiError, RequestModel
from shared.events import (
    CloudEvent,
    ContactOptedIn,
    ContactOptedOut,
    DeliveryStatus,
    InboundReceived,
    MessageContent,
    MessageRequested,
    MessageStatusChanged,
    TemplateContent,
    TemplateStatusChanged,
    utcnow,
)
from shared.phone import InvalidPhoneNumber, normalize_e164
from shared.service import ServiceRuntime
from shared.tenancy import Tenant
from shared.topology import EVENTS, subscription

MessageStatus = Literal["queued", "sending", "sent", "delivered", "read", "failed"]
ProviderName = Literal["meta", "chatwoot", "evolution", "waha", "sandbox"]


#: one normalisation for every service (shared.phone): a Brazilian mobile without its ninth digit
#: is the same person as with it, and shares one opt-out, window and pair limit
normalize_recipient = normalize_e164


Recipient = Annotated[str, AfterValidator(normalize_recipient)]


class SendMessageRequest(RequestModel):
    to: Recipient = Field(
        description="Recipient in E.164 form, e.g. +5511999998888", examples=["+5511999998888"]
    )
    text: str | None = Field(
        default=None, min_length=1, max_length=4096, description="Shorthand for a text message."
    )
    content: MessageContent | None = Field(
        default=None,
        description="A message of any kind: text, image/document/audio/video, template, buttons, list.",
    )
    fallback_template: TemplateContent | None = Field(
        default=None, description="Sent instead of free-form content when the 24-hour window is closed."
    )
    channel_id: uuid.UUID | None = Field(
        default=None, description="The channel; the tenant's default if omitted."
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

    @model_validator(mode="after")
    def _one_body(self) -> SendMessageRequest:
        if (self.text is None) == (self.content is None):
            raise ValueError("give exactly one of 'text' or 'content'")
        return self


class MessageAccepted(BaseModel):
    id: uuid.UUID
    status: MessageStatus


MAX_BATCH = 1000


class SendBatchRequest(RequestModel):
    messages: list[SendMessageRequest] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=f"1–{MAX_BATCH} messages, accepted together in one transaction (all or none).",
    )


class BatchAccepted(BaseModel):
    id: uuid.UUID
    status: MessageStatus
    created: bool = Field(description="False when an idempotency key matched an earlier message.")
    error: str | None = Field(default=None, description="Why this item was not accepted.")


class BatchAcceptedList(BaseModel):
    accepted: int = Field(description="Messages newly queued by this request.")
    messages: list[BatchAccepted] = Field(description="One entry per request item, in order.")


class HistoryEntry(BaseModel):
    status: str
    at: datetime
    reason: str | None = None


class MessageView(BaseModel):
    id: uuid.UUID
    to: str
    text: str | None
    content: dict[str, Any] | None
    channel_id: uuid.UUID | None
    priority: int
    status: MessageStatus
    status_reason: str | None
    error_code: str | None
    dead_letter: bool
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


class QuietHoursModel(RequestModel):
    start: str = Field(examples=["22:00"])
    end: str = Field(examples=["08:00"])
    timezone: str = Field(examples=["America/Sao_Paulo"])

    @model_validator(mode="after")
    def _valid(self) -> QuietHoursModel:
        QuietHours.parse(self.model_dump())
        return self


def _tier(value: int | None) -> int | None:
    if value is not None and value not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(map(str, TIERS))} or null (unlimited)")
    return value


Tier = Annotated[int | None, AfterValidator(_tier)]


class ChannelCreate(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    provider: ProviderName
    base_url: str | None = Field(default=None, max_length=500, pattern=r"^https?://")
    settings: dict[str, str] = Field(default_factory=dict)
    credentials: dict[str, str] = Field(default_factory=dict)
    is_default: bool = False
    throughput_per_second: float = Field(
        default=80.0, gt=0, le=10_000, description="80, 1,000 or 20 in practice"
    )
    portfolio: str | None = Field(
        default=None, max_length=200, description="Business portfolio; shares the tier"
    )
    tier: Tier = Field(
        default=None, description="Unique recipients per rolling 24 h: 250, 2000, 10000, 100000 or null"
    )
    pair_interval_seconds: float = Field(default=6.0, ge=0, le=3600)
    quiet_hours: QuietHoursModel | None = None


class ChannelUpdate(RequestModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    base_url: str | None = Field(default=None, max_length=500, pattern=r"^https?://")
    settings: dict[str, str] | None = None
    credentials: dict[str, str] | None = None
    is_default: bool | None = None
    throughput_per_second: float | None = Field(default=None, gt=0, le=10_000)
    portfolio: str | None = Field(default=None, max_length=200)
    tier: Tier = None
    pair_interval_seconds: float | None = Field(default=None, ge=0, le=3600)
    quiet_hours: QuietHoursModel | None = None
    paused: bool | None = Field(default=None, description="false resumes a channel paused by an error")


class ChannelView(BaseModel):
    id: uuid.UUID
    name: str
    provider: str
    base_url: str | None
    settings: dict[str, Any]
    credentials_set: list[str] = Field(
        description="Names of the stored credentials; values are never returned."
    )
    is_default: bool
    throughput_per_second: float
    portfolio: str
    tier: int | None
    pair_interval_seconds: float
    quiet_hours: dict[str, Any] | None
    enforce_window: bool
    breaker: Literal["closed", "open", "half_open", "paused"]
    consecutive_failures: int
    breaker_open_until: datetime | None
    pause_reason: str | None
    created_at: datetime
    updated_at: datetime


class ChannelList(BaseModel):
    items: list[ChannelView]


class OptOutRequest(RequestModel):
    phone: Recipient
    reason: str | None = Field(default=None, max_length=500)


class OptOutView(BaseModel):
    phone: str
    reason: str | None
    at: datetime


class OptOutList(BaseModel):
    items: list[OptOutView]


class TemplateView(BaseModel):
    name: str
    language: str
    status: str = Field(description="Meta's word: APPROVED, PAUSED, DISABLED, REJECTED, PENDING, …")
    reason: str | None
    at: datetime = Field(description="When Meta said so")
    sendable: bool = Field(description="false: messages with this template fail without a provider call")


class TemplateList(BaseModel):
    items: list[TemplateView]


class ReplayFilter(RequestModel):
    channel_id: uuid.UUID | None = None
    error_code: str | None = None
    created_after: AwareDatetime | None = None
    created_before: AwareDatetime | None = None
    limit: int = Field(default=1000, ge=1, le=10_000)


class Replayed(BaseModel):
    replayed: list[uuid.UUID]


class SandboxMessageView(BaseModel):
    id: int
    message_id: uuid.UUID
    provider_message_id: str
    to: str
    text: str
    received_at: datetime


class SandboxMessageList(BaseModel):
    items: list[SandboxMessageView]


def validate_channel_fields(
    provider: str, settings: dict[str, str], credentials: dict[str, str]
) -> dict[str, str]:
    """Settings with defaults filled in; raises ApiError naming what is missing or unknown."""
    spec = SPECS[provider]
    merged = {**dict(spec.setting_defaults), **settings}
    unknown = sorted(set(settings) - set(spec.settings))
    if unknown:
        raise ApiError(
            422,
            "invalid_request",
            f"settings: {provider} has no {', '.join(unknown)} (allowed: {', '.join(spec.settings) or 'none'})",
        )
    unknown = sorted(set(credentials) - set(spec.credentials))
    if unknown:
        raise ApiError(
            422,
            "invalid_request",
            f"credentials: {provider} has no {', '.join(unknown)} (allowed: {', '.join(spec.credentials) or 'none'})",
        )
    missing = [k for k in spec.settings if not merged.get(k)]
    missing += [k for k in spec.credentials if not credentials.get(k)]
    if missing:
        raise ApiError(422, "invalid_request", f"a {provider} channel needs {', '.join(missing)}")
    return merged


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
        runtime=runtime, settings=settings, lease=timedelta(seconds=settings.sending_lease_seconds)
    )
    dispatcher = handlers.Dispatcher(sender)
    runtime.add_loop("dispatcher", dispatcher.run)
    runtime.add_loop("result-recorder", dispatcher.flush_forever)
    runtime.add_loop("lease-renewer", dispatcher.renew_leases_forever)
    runtime.add_loop("orphan-sweeper", lambda: handlers.sweep_orphans_forever(sender))

    def subscriber(event: type, description: str) -> Any:
        sub = subscription("sender", event)
        return runtime.broker.subscriber(sub.queue, EVENTS, title=sub.queue_name, description=description)

    @subscriber(MessageRequested, "Store a send request (priority queue 1–10); the dispatcher sends it.")
    async def on_message_requested(event: CloudEvent[MessageRequested]) -> None:
        await handlers.on_requested(sender, event)

    @subscriber(DeliveryStatus, "Move a message forward (sent → delivered → read, or failed) by provider id.")
    async def on_delivery_status(event: CloudEvent[DeliveryStatus]) -> None:
        await handlers.on_delivery_status(sender, event)

    @subscriber(InboundReceived, "The recipient wrote: open their 24-hour customer-service window.")
    async def on_inbound_received(event: CloudEvent[InboundReceived]) -> None:
        await handlers.on_inbound(sender, event)

    @subscriber(ContactOptedOut, "Add the recipient to the tenant's opt-out list.")
    async def on_contact_opted_out(event: CloudEvent[ContactOptedOut]) -> None:
        await handlers.on_opted_out(sender, event)

    @subscriber(ContactOptedIn, "Remove the recipient from the tenant's opt-out list.")
    async def on_contact_opted_in(event: CloudEvent[ContactOptedIn]) -> None:
        await handlers.on_opted_in(sender, event)

    @subscriber(TemplateStatusChanged, "Record Meta's status of a template; unsendable ones are not sent.")
    async def on_template_status_changed(event: CloudEvent[TemplateStatusChanged]) -> None:
        await handlers.on_template_status(sender, event)

    def view(row: Row[Any], history: list[Row[Any]] | None = None) -> MessageView:
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
            history=[HistoryEntry(status=h.status, at=h.at, reason=h.reason) for h in history]
            if history is not None
            else None,
        )

    def channel_view(row: Row[Any]) -> ChannelView:
        now = utcnow()
        if row.paused:
            breaker = "paused"
        elif row.breaker_open_until is not None and row.breaker_open_until > now:
            breaker = "open"
        elif row.consecutive_failures >= settings.breaker_threshold:
            breaker = "half_open"
        else:
            breaker = "closed"
        credentials = json.loads(runtime.secrets.decrypt(row.credentials_enc)) if row.credentials_enc else {}
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
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    Auth = Depends(runtime.auth)

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
        if body.channel_id is not None:
            async with runtime.engine.connect() as conn:
                if not await repo.channel_exists(conn, tenant.id, body.channel_id):
                    raise ApiError(404, "not_found", f"no channel {body.channel_id} for this tenant")
        try:
            accepted = await handlers.request_message(
                sender, tenant.id, req, channel_checked=body.channel_id is not None
            )
        except handlers.IdempotencyConflict as exc:
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
        items = await handlers.request_messages(sender, tenant.id, reqs)
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
            return view(row, await repo.history(conn, message_id))

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
        return MessageList(items=[view(r) for r in rows])

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
        replayed = await handlers.replay(sender, tenant.id, [message_id])
        if not replayed:
            raise ApiError(404, "not_found", f"no dead letter {message_id} for this tenant")
        return Replayed(replayed=replayed)

    @dead.post("/replay", response_model=Replayed, summary="Send every dead letter matching a filter again")
    async def replay_filter(body: ReplayFilter, tenant: Tenant = Auth) -> Replayed:
        q = sa.select(messages.c.id).where(
            messages.c.tenant_id == tenant.id, messages.c.dead_letter.is_(True)
        )
        if body.channel_id:
            q = q.where(messages.c.channel_id == body.channel_id)
        if body.error_code:
            q = q.where(messages.c.error_code == body.error_code)
        if body.created_after:
            q = q.where(messages.c.created_at >= body.created_after)
        if body.created_before:
            q = q.where(messages.c.created_at < body.created_before)
        async with runtime.engine.connect() as conn:
            ids = list((await conn.execute(q.limit(body.limit))).scalars())
        return Replayed(replayed=await handlers.replay(sender, tenant.id, ids) if ids else [])

    # --- channels ---------------------------------------------------------------------------

    chan = APIRouter(prefix="/v1/channels", tags=["channels"], responses=ERROR_RESPONSES)

    async def _unset_other_defaults(conn: Any, tenant_id: uuid.UUID, keep: uuid.UUID) -> None:
        await conn.execute(
            sa.update(channels)
            .where(channels.c.tenant_id == tenant_id, channels.c.id != keep, channels.c.is_default)
            .values(is_default=False)
        )
        handlers.forget_default(sender, tenant_id)

    async def _share_tier(
        conn: Any, tenant_id: uuid.UUID, channel_id: uuid.UUID, portfolio: str, tier: int | None, given: bool
    ) -> int | None:
        """The messaging tier belongs to the portfolio (WhatsApp counts unique recipients over all
        of its numbers): a tier given for one channel is set on every channel of its portfolio; a
        channel that joins a portfolio without giving one takes the portfolio's."""
        scope = (
            channels.c.tenant_id == tenant_id,
            channels.c.portfolio == portfolio,
            channels.c.id != channel_id,
            channels.c.deleted_at.is_(None),
        )
        if given:
            await conn.execute(sa.update(channels).where(*scope).values(tier=tier, updated_at=utcnow()))
            return tier
        others = (await conn.execute(sa.select(channels.c.tier).where(*scope).limit(1))).first()
        return others.tier if others is not None else tier

    @chan.post("", status_code=201, response_model=ChannelView, summary="Add a WhatsApp number on a provider")
    async def create_channel(body: ChannelCreate, tenant: Tenant = Auth) -> ChannelView:
        merged = validate_channel_fields(body.provider, body.settings, body.credentials)
        channel_id = uuid.uuid4()
        async with runtime.engine.begin() as conn:
            if body.is_default:
                await _unset_other_defaults(conn, tenant.id, channel_id)
            tier = await _share_tier(
                conn,
                tenant.id,
                channel_id,
                body.portfolio or str(channel_id),
                body.tier,
                "tier" in body.model_fields_set,
            )
            await conn.execute(
                sa.insert(channels).values(
                    id=channel_id,
                    tenant_id=tenant.id,
                    name=body.name,
                    provider=body.provider,
                    base_url=body.base_url,
                    settings=merged,
                    credentials_enc=runtime.secrets.encrypt(json.dumps(body.credentials))
                    if body.credentials
                    else None,
                    is_default=body.is_default,
                    throughput_per_second=body.throughput_per_second,
                    portfolio=body.portfolio or str(channel_id),
                    tier=tier,
                    pair_interval_seconds=body.pair_interval_seconds,
                    quiet_hours=body.quiet_hours.model_dump() if body.quiet_hours else None,
                    enforce_window=SPECS[body.provider].enforce_window,
                )
            )
            row = await repo.get_channel(conn, tenant.id, channel_id)
        assert row is not None
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
        async with runtime.engine.begin() as conn:
            row = await repo.get_channel(conn, tenant.id, channel_id)
            if row is None:
                raise ApiError(404, "not_found", f"no channel {channel_id} for this tenant")
            fields = body.model_dump(exclude_unset=True)
            values: dict[str, Any] = {"updated_at": utcnow()}
            if "settings" in fields or "credentials" in fields:
                current_creds = (
                    json.loads(runtime.secrets.decrypt(row.credentials_enc)) if row.credentials_enc else {}
                )
                new_settings = {**(row.settings or {}), **(body.settings or {})}
                new_creds = {**current_creds, **(body.credentials or {})}
                values["settings"] = validate_channel_fields(row.provider, new_settings, new_creds)
                values["credentials_enc"] = (
                    runtime.secrets.encrypt(json.dumps(new_creds)) if new_creds else None
                )
            for name in (
                "name",
                "base_url",
                "throughput_per_second",
                "pair_interval_seconds",
            ):
                if name in fields:
                    values[name] = fields[name]
            if "portfolio" in fields:  # null: back to a portfolio of its own
                values["portfolio"] = fields["portfolio"] or str(channel_id)
            if "tier" in fields or "portfolio" in fields:
                values["tier"] = await _share_tier(
                    conn,
                    tenant.id,
                    channel_id,
                    values.get("portfolio", row.portfolio),
                    fields["tier"] if "tier" in fields else row.tier,
                    "tier" in fields,
                )
            if "quiet_hours" in fields:
                values["quiet_hours"] = body.quiet_hours.model_dump() if body.quiet_hours else None
            if fields.get("paused") is False:
                values.update(
                    paused=False, pause_reason=None, consecutive_failures=0, breaker_open_until=None
                )
            elif fields.get("paused") is True:
                values.update(paused=True, pause_reason="paused by an operator")
            if fields.get("is_default") is True:
                await _unset_other_defaults(conn, tenant.id, channel_id)
                values["is_default"] = True
            elif fields.get("is_default") is False:
                values["is_default"] = False
                handlers.forget_default(sender, tenant.id)
            await conn.execute(sa.update(channels).where(channels.c.id == channel_id).values(**values))
            await conn.execute(sa.select(sa.func.pg_notify(handlers.DUE_CHANNEL, "")))
            row = await repo.get_channel(conn, tenant.id, channel_id)
        assert row is not None
        return channel_view(row)

    @chan.delete("/{channel_id}", status_code=204, summary="Remove a channel; its queued messages fail")
    async def delete_channel(channel_id: uuid.UUID, tenant: Tenant = Auth) -> Response:
        now = utcnow()
        async with runtime.uow() as uow:
            row = await repo.get_channel(uow.conn, tenant.id, channel_id)
            if row is None:
                raise ApiError(404, "not_found", f"no channel {channel_id} for this tenant")
            await uow.conn.execute(
                sa.update(channels)
                .where(channels.c.id == channel_id)
                .values(deleted_at=now, is_default=False)
            )
            queued = (
                await uow.conn.execute(
                    sa.select(messages)
                    .where(messages.c.channel_id == channel_id, messages.c.status == "queued")
                    .with_for_update()
                )
            ).all()
            reason = f"channel {channel_id} was deleted before the message was sent"
            for m in queued:
                await repo.update_message(
                    uow.conn,
                    m.id,
                    status="failed",
                    status_reason=reason,
                    error_code="channel_deleted",
                    updated_at=now,
                )
                await repo.add_history(uow.conn, m.id, "failed", reason, now)
                uow.add_event(
                    handlers._status_event(
                        tenant.id, m, "failed", "queued", now, reason, error_code="channel_deleted"
                    )
                )
            await uow.commit()
        handlers.forget_default(sender, tenant.id)
        return Response(status_code=204)

    # --- opt-outs ---------------------------------------------------------------------------

    opts = APIRouter(prefix="/v1/opt-outs", tags=["opt-outs"], responses=ERROR_RESPONSES)

    @opts.post("", status_code=201, response_model=OptOutView, summary="Stop sending to a recipient")
    async def add_opt_out(body: OptOutRequest, tenant: Tenant = Auth) -> OptOutView:
        now = utcnow()
        await handlers.opt_out(sender, tenant.id, body.phone, body.reason or "api", now)
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
        if not await handlers.opt_in(sender, tenant.id, normalized):
            raise ApiError(404, "not_found", f"{normalized} is not on the opt-out list")
        return Response(status_code=204)

    # --- templates --------------------------------------------------------------------------

    tmpl = APIRouter(prefix="/v1/templates", tags=["templates"], responses=ERROR_RESPONSES)

    @tmpl.get(
        "",
        response_model=TemplateList,
        summary="Meta's status of the tenant's templates (from template.status_changed)",
    )
    async def list_templates(
        tenant: Tenant = Auth,
        name: str | None = Query(default=None, max_length=512),
        status: str | None = Query(default=None, max_length=40),
    ) -> TemplateList:
        q = sa.select(templates).where(templates.c.tenant_id == tenant.id)
        if name:
            q = q.where(templates.c.name == name)
        if status:
            q = q.where(templates.c.status == status.upper())
        async with runtime.engine.connect() as conn:
            rows = (await conn.execute(q.order_by(templates.c.name, templates.c.language).limit(1000))).all()
        return TemplateList(
            items=[
                TemplateView(
                    name=r.name,
                    language=r.language,
                    status=r.status,
                    reason=r.reason,
                    at=r.at,
                    sendable=r.status not in handlers.UNSENDABLE_TEMPLATE_STATUSES,
                )
                for r in rows
            ]
        )

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

    runtime.declare_publishes(MessageStatusChanged)
    app = runtime.create_app([api, dead, chan, opts, tmpl, sandbox])

    # drain on shutdown: stop claiming, let in-flight sends finish and be recorded, then let the
    # runtime stop the broker and the loops (a message is never left 'sending' by a clean stop)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        async with inner(application) as state:
            try:
                yield state
            finally:
                runtime.stopping.set()
                await dispatcher.drain(settings.graceful_timeout_seconds)
                await sender.close()

    app.router.lifespan_context = lifespan
    return runtime, app
