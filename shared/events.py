"""Herald's public event contract: CloudEvents 1.0 envelopes with one frozen model per type.

Every event travels as a structured-mode CloudEvent (JSON) on the topic exchange
``herald.events``; the routing key is the versioned type (``message.requested.v1``). Consumers
read with ``extra="ignore"`` so that a field added later never breaks an older reader; a
breaking change gets a new version (``…v2``) and both are published during a migration.

Tenancy travels in the CloudEvents extension attribute ``tenantid``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.phone import E164


def utcnow() -> datetime:
    return datetime.now(UTC)


class EventData(BaseModel):
    """Base of every event payload. ``event_type`` is the unversioned name."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    event_type: ClassVar[str]
    version: ClassVar[int] = 1

    @classmethod
    def type_name(cls) -> str:
        return f"{cls.event_type}.v{cls.version}"


# --- requests and facts about outbound messages -------------------------------------------

MessageStatusName = Literal["queued", "sending", "sent", "delivered", "read", "failed"]


class MessageRequested(EventData):
    """A request to send one WhatsApp message (imperative: the sender decides what happens)."""

    event_type: ClassVar[str] = "message.requested"
    message_id: uuid.UUID = Field(description="Idempotency key of the send: one id, one message.")
    to: E164
    text: str = Field(min_length=1, max_length=4096)
    priority: int = Field(default=5, ge=1, le=10)
    channel_id: uuid.UUID | None = None
    idempotency_key: str | None = Field(default=None, max_length=200)
    origin: str = Field(default="api", description="Who asked: api, scheduler, pipeline, …")
    correlation_id: str | None = Field(default=None, max_length=200)


class MessageStatusChanged(EventData):
    event_type: ClassVar[str] = "message.status"
    message_id: uuid.UUID
    status: MessageStatusName
    previous_status: MessageStatusName | None = None
    at: AwareDatetime
    reason: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    correlation_id: str | None = None


# --- inbound, from providers through ingest ---------------------------------------------


class InboundReceived(EventData):
    event_type: ClassVar[str] = "inbound.received"
    provider: str
    provider_message_id: str
    channel_id: uuid.UUID | None = None
    from_phone: E164
    kind: Literal[
        "text",
        "image",
        "audio",
        "voice",
        "video",
        "document",
        "sticker",
        "button",
        "interactive",
        "location",
        "contacts",
        "reaction",
        "unsupported",
    ]
    text: str | None = None
    payload: str | None = Field(default=None, description="Button/list reply id or payload.")
    media: dict[str, Any] | None = None
    reply_to: str | None = None
    received_at: AwareDatetime


class DeliveryStatus(EventData):
    event_type: ClassVar[str] = "delivery.status"
    provider: str
    provider_message_id: str
    status: Literal["sent", "delivered", "read", "played", "failed"]
    recipient: E164 | None = None
    error_code: str | None = None
    error_message: str | None = None
    at: AwareDatetime


class ContactOptedOut(EventData):
    event_type: ClassVar[str] = "contact.opted_out"
    phone: E164
    reason: str | None = Field(default=None, description="Keyword, API, or provider error.")
    at: AwareDatetime


class ContactOptedIn(EventData):
    event_type: ClassVar[str] = "contact.opted_in"
    phone: E164
    reason: str | None = None
    at: AwareDatetime


class TemplateStatusChanged(EventData):
    event_type: ClassVar[str] = "template.status_changed"
    template_name: str
    language: str
    status: str
    reason: str | None = None
    at: AwareDatetime


# --- pacing and content -----------------------------------------------------------------


class PacingDue(EventData):
    event_type: ClassVar[str] = "pacing.due"
    user_id: str
    schedule_id: uuid.UUID
    slot_at: AwareDatetime


class DraftReady(EventData):
    event_type: ClassVar[str] = "draft.ready"
    draft_id: uuid.UUID
    user_id: str
    title: str
    notify_phone: E164 | None = None


# --- domain events from other systems ---------------------------------------------------


class OrderStatusChanged(EventData):
    event_type: ClassVar[str] = "order.status_changed"
    order_id: str = Field(min_length=1, max_length=200)
    status: str = Field(min_length=1, max_length=100, examples=["payment_confirmed", "preparing"])
    customer_phone: E164
    customer_name: str | None = None
    language: str | None = Field(default=None, examples=["pt_BR", "en_US"])


class Attendee(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    phone: E164
    name: str | None = None
    language: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)


class EventPublished(EventData):
    event_type: ClassVar[str] = "event.published"
    event_id: str = Field(min_length=1, max_length=200)
    name: str
    starts_at: AwareDatetime
    timezone: str = Field(examples=["America/Sao_Paulo"])
    attendees: list[Attendee] = Field(default_factory=list)


class EventChanged(EventPublished):
    event_type: ClassVar[str] = "event.changed"


class EventCancelled(EventData):
    event_type: ClassVar[str] = "event.cancelled"
    event_id: str = Field(min_length=1, max_length=200)
    reason: str | None = None


#: every event type Herald knows, by versioned type name
CATALOGUE: dict[str, type[EventData]] = {
    m.type_name(): m
    for m in (
        MessageRequested,
        MessageStatusChanged,
        InboundReceived,
        DeliveryStatus,
        ContactOptedOut,
        ContactOptedIn,
        TemplateStatusChanged,
        PacingDue,
        DraftReady,
        OrderStatusChanged,
        EventPublished,
        EventChanged,
        EventCancelled,
    )
}

#: types other systems may publish (on the broker or via ingest's POST /v1/events). The others
#: are facts only Herald itself states, and accepting them from outside would let a caller forge
#: a delivery receipt or an inbound message.
PUBLIC_INPUT_TYPES: frozenset[str] = frozenset(
    m.type_name()
    for m in (
        OrderStatusChanged,
        EventPublished,
        EventChanged,
        EventCancelled,
        MessageRequested,
        ContactOptedOut,
        ContactOptedIn,
    )
)

D = TypeVar("D", bound=EventData)


class CloudEvent(BaseModel, Generic[D]):
    """CloudEvents 1.0 structured-mode envelope."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=200)
    source: str = Field(min_length=1, max_length=500)
    type: str
    time: AwareDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    subject: str | None = None
    tenantid: uuid.UUID = Field(description="CloudEvents extension: the tenant the event belongs to.")
    data: D

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        return canonical_type(value)


class UnknownEventType(ValueError):
    pass


def canonical_type(value: str) -> str:
    """``order.status_changed`` → ``order.status_changed.v1``: a bare name means its first version."""
    if value in CATALOGUE:
        return value
    if f"{value}.v1" in CATALOGUE:
        return f"{value}.v1"
    raise UnknownEventType(f"unknown event type {value!r}; known types: {', '.join(sorted(CATALOGUE))}")


def new_event(
    data: D, *, tenant_id: uuid.UUID, source: str, event_id: str | None = None, subject: str | None = None
) -> CloudEvent[D]:
    return CloudEvent[type(data)](  # type: ignore[misc]
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=data.type_name(),
        time=utcnow(),
        tenantid=tenant_id,
        subject=subject,
        data=data,
    )


def parse_event(raw: dict[str, Any] | bytes | str) -> CloudEvent[Any]:
    """Validate any known CloudEvent: the envelope first, then ``data`` against its type's model.

    Raises ``UnknownEventType`` or pydantic's ``ValidationError`` with field paths.
    """
    if isinstance(raw, (bytes, str)):
        envelope = CloudEvent[dict[str, Any]].model_validate_json(raw)  # type: ignore[type-var]
    else:
        envelope = CloudEvent[dict[str, Any]].model_validate(raw)  # type: ignore[type-var]
    model = CATALOGUE[envelope.type]
    return CloudEvent[model].model_validate(  # type: ignore[valid-type]
        {**envelope.model_dump(exclude={"data"}), "data": envelope.data}
    )


__all__ = [
    "CATALOGUE",
    "PUBLIC_INPUT_TYPES",
    "Attendee",
    "CloudEvent",
    "ContactOptedIn",
    "ContactOptedOut",
    "DeliveryStatus",
    "DraftReady",
    "EventCancelled",
    "EventChanged",
    "EventData",
    "EventPublished",
    "InboundReceived",
    "MessageRequested",
    "MessageStatusChanged",
    "OrderStatusChanged",
    "PacingDue",
    "TemplateStatusChanged",
    "UnknownEventType",
    "ValidationError",
    "canonical_type",
    "new_event",
    "parse_event",
    "utcnow",
]
