"""The sender's HTTP request and response models (the API's contract, in one place)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, model_validator

from services.sender.domain import TIERS, QuietHours
from shared.api import RequestModel
from shared.events import MessageContent, TemplateContent
from shared.phone import normalize_e164

MessageStatus = Literal["queued", "held", "sending", "sent", "delivered", "read", "failed"]
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


class Waiting(BaseModel):
    reason: str = Field(
        description="quiet_hours, pair_interval, tier, throughput, breaker, paused, retry (a backoff) "
        "or not_before",
        examples=["quiet_hours"],
    )
    until: datetime | None = Field(description="When it may go; null: until someone resumes the channel")


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
    sent_at: datetime | None = Field(
        default=None, description="When Herald recorded the message as sent; the start of its delivery time"
    )
    delivered_at: datetime | None = Field(
        default=None,
        description="When Herald recorded the delivery; delivered_at − sent_at is the delivery time",
    )
    waiting: Waiting | None = Field(
        default=None, description="Why a queued message is not going out now, and until when; null otherwise"
    )
    sent_content: dict[str, Any] | None = Field(
        default=None,
        description="What actually went out (the fallback template when one replaced the content); "
        "null until the provider has it",
    )
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


class SessionQr(BaseModel):
    image: str = Field(description="The QR code to scan with WhatsApp, as a data:image/png;base64 URL.")


class SessionView(BaseModel):
    """A WAHA/Evolution channel's WhatsApp Web session."""

    state: Literal["connected", "connecting", "qr", "disconnected", "unknown"] = Field(
        description="connected: sending; connecting: coming back by itself; qr: scan the QR code; "
        "disconnected: restart the session on the gateway; unknown: no word from the gateway yet. "
        "The channel is paused while the session is not connected and resumes when it is."
    )
    since: datetime | None = Field(description="When the session entered this state (as far as Herald saw).")
    qr: SessionQr | None = Field(default=None, description="Set while the session waits for a scan.")


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
    session: SessionView | None = Field(
        default=None,
        description="WAHA/Evolution channels: the WhatsApp session (QR code at GET /v1/channels/{id}/session).",
    )
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
