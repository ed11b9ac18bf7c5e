"""Request and response bodies of the scheduler's HTTP API (pydantic; the tables are in models.py)."""

from __future__ import annotations

import uuid
from datetime import datetime, time
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, model_validator

from services.scheduler.recurrence import Recurrence, build_recurrence
from shared.api import RequestModel
from shared.events import MessageContent, TemplateContent
from shared.phone import E164

ScheduleStatus = Literal["pending", "published", "completed", "missed", "cancelled", "failed"]
Weekday = Literal["MO", "TU", "WE", "TH", "FR", "SA", "SU"]


class RecurrenceSpec(RequestModel):
    """A recurring schedule: a rule expanded on local wall-clock times in ``timezone``."""

    timezone: str = Field(examples=["America/Sao_Paulo"], description="IANA time zone")
    start: datetime = Field(
        examples=["2026-12-01T09:00:00"],
        description="Local date and time of the first occurrence, without offset; its time of day "
        "is the time of every occurrence of a preset.",
    )
    preset: (
        Literal["daily", "weekly", "monthly", "weekdays", "first_weekday_of_month", "last_weekday_of_month"]
        | None
    ) = None
    days: list[Weekday] | None = Field(
        default=None, description="weekly: the days (default: start's weekday)"
    )
    day_of_month: int | None = Field(default=None, ge=1, le=31, description="monthly (default: start's day)")
    weekday: Weekday | None = Field(default=None, description="first/last_weekday_of_month")
    rrule: str | None = Field(
        default=None, max_length=500, examples=["FREQ=MONTHLY;BYDAY=1MO"], description="Any RFC 5545 RRULE"
    )
    until: datetime | None = Field(default=None, description="Last local time (inclusive); or use count")
    count: int | None = Field(default=None, ge=1, le=100_000)

    def build(self) -> Recurrence:
        return build_recurrence(
            timezone=self.timezone,
            start=self.start,
            preset=self.preset,
            days=list(self.days) if self.days else None,
            day_of_month=self.day_of_month,
            weekday=self.weekday,
            rrule=self.rrule,
            until=self.until,
            count=self.count,
        )


class ScheduleMessageRequest(RequestModel):
    to: E164 = Field(examples=["+5511999998888"])
    channel_id: uuid.UUID | None = None
    text: str | None = Field(
        default=None, min_length=1, max_length=4096, description="Shorthand for text content"
    )
    content: MessageContent | None = Field(
        default=None, description="text, media, template (with body_params), buttons or list"
    )
    fallback_template: TemplateContent | None = Field(
        default=None, description="Sent instead when the recipient's 24-hour window is closed"
    )
    priority: int = Field(default=5, ge=1, le=10)
    send_at: AwareDatetime | None = Field(
        default=None, description="One-off: ISO 8601 with a UTC offset, e.g. 2026-12-01T09:00:00-03:00"
    )
    recurrence: RecurrenceSpec | None = None
    grace_seconds: int | None = Field(
        default=None, ge=0, le=7 * 86400, description="Default: the server's (1 hour)"
    )

    @model_validator(mode="after")
    def _one_of_each(self) -> ScheduleMessageRequest:
        if (self.text is None) == (self.content is None):
            raise ValueError("give exactly one of 'text' or 'content'")
        if (self.send_at is None) == (self.recurrence is None):
            raise ValueError("give exactly one of 'send_at' (one-off) or 'recurrence'")
        return self


class EditScheduleRequest(RequestModel):
    to: E164 | None = None
    channel_id: uuid.UUID | None = None
    text: str | None = Field(default=None, min_length=1, max_length=4096)
    content: MessageContent | None = None
    fallback_template: TemplateContent | None = None
    priority: int | None = Field(default=None, ge=1, le=10)
    send_at: AwareDatetime | None = None
    recurrence: RecurrenceSpec | None = None
    grace_seconds: int | None = Field(default=None, ge=0, le=7 * 86400)

    @model_validator(mode="after")
    def _not_both(self) -> EditScheduleRequest:
        if self.text is not None and self.content is not None:
            raise ValueError("give 'text' or 'content', not both")
        if self.send_at is not None and self.recurrence is not None:
            raise ValueError("give 'send_at' or 'recurrence', not both")
        return self


class OccurrenceView(BaseModel):
    due_at: datetime
    status: Literal["published", "missed"]
    message_id: uuid.UUID
    fired_at: datetime
    delivery_status: str | None = Field(description="Followed from message.status: queued … read, or failed")
    delivery_reason: str | None
    delivery_updated_at: datetime | None


class ScheduledMessageView(BaseModel):
    id: uuid.UUID
    to: str
    kind: Literal["one_off", "recurring"]
    text: str | None
    content: dict[str, Any] | None
    fallback_template: dict[str, Any] | None
    channel_id: uuid.UUID | None
    priority: int
    send_at: datetime = Field(description="The next occurrence (or the last one, once finished)")
    recurrence: dict[str, Any] | None
    rule: str | None = Field(description="The RRULE the recurrence expands to")
    grace_seconds: int | None
    status: ScheduleStatus = Field(
        description="pending (an occurrence is coming) → published (one-off sent to the sender), "
        "completed (recurrence ended), missed (one-off older than its grace period), cancelled, or "
        "failed (could not be fired: see the scheduler's log)"
    )
    message_id: uuid.UUID = Field(
        description="The next (or last) occurrence's message id: GET /v1/messages/{id}"
    )
    fired_count: int
    missed_count: int
    created_at: datetime
    published_at: datetime | None
    cancelled_at: datetime | None


class ScheduledMessageDetail(ScheduledMessageView):
    next_occurrences: list[datetime] = Field(description="The next five occurrences (UTC)")
    history: list[OccurrenceView] = Field(description="Past occurrences, latest first (up to 50)")


class ScheduledMessageList(BaseModel):
    items: list[ScheduledMessageView]


class ReminderTemplate(RequestModel):
    name: str = Field(pattern=r"^[a-z0-9_]+$", max_length=512)
    language: str | None = Field(default=None, description="Default: the attendee's language")
    body_params: list[str] = Field(
        default_factory=lambda: ["{attendee.name}", "{event.name}", "{event.start_local}"],
        max_length=100,
        description="Placeholders: {event.name|id|start_local|date|time|timezone}, {attendee.name|language}, "
        "{attendee.<attribute>}",
    )


class ReminderRuleSpec(RequestModel):
    name: str = Field(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_-]+$")
    days_before: int | None = Field(default=None, ge=0, le=365)
    at: time | None = Field(
        default=None, description="Local time on that day; default: the event's start time"
    )
    minutes_before: int | None = Field(default=None, ge=0, le=525_600)
    template: ReminderTemplate
    attendee_filter: dict[str, str] = Field(
        default_factory=dict,
        examples=[{"ticket_type": "VIP"}],
        description="Attendee attributes that must match",
    )

    @model_validator(mode="after")
    def _one_offset(self) -> ReminderRuleSpec:
        if (self.days_before is None) == (self.minutes_before is None):
            raise ValueError("give exactly one of 'days_before' (with optional 'at') or 'minutes_before'")
        if self.minutes_before is not None and self.at is not None:
            raise ValueError("'at' goes with days_before, not with minutes_before")
        return self


class ReminderPolicy(RequestModel):
    reminders: list[ReminderRuleSpec] = Field(min_length=1, max_length=20)

    @model_validator(mode="after")
    def _unique(self) -> ReminderPolicy:
        names = [r.name for r in self.reminders]
        if len(set(names)) != len(names):
            raise ValueError("reminder names must be unique")
        return self


class ReminderPolicyView(BaseModel):
    builtin: bool
    reminders: list[dict[str, Any]]


class ReminderView(BaseModel):
    id: uuid.UUID
    event_id: str
    event_name: str
    starts_at: datetime
    reminder: str
    to: str
    due_at: datetime
    status: Literal["pending", "published", "missed", "cancelled"]
    message_id: uuid.UUID
    content: dict[str, Any]
    delivery_status: str | None
    delivery_updated_at: datetime | None


class ReminderList(BaseModel):
    items: list[ReminderView]


class PacingRequest(RequestModel):
    user_id: str = Field(min_length=1, max_length=200)
    days: list[Weekday] = Field(min_length=1, max_length=7)
    times: list[time] = Field(min_length=1, max_length=48, examples=[["09:00", "17:30"]])
    timezone: str = Field(examples=["Europe/Lisbon"])
    active: bool = True


class PacingEdit(RequestModel):
    days: list[Weekday] | None = Field(default=None, min_length=1, max_length=7)
    times: list[time] | None = Field(default=None, min_length=1, max_length=48)
    timezone: str | None = None
    active: bool | None = None


class PacingView(BaseModel):
    id: uuid.UUID
    user_id: str
    days: list[str]
    times: list[str]
    timezone: str
    active: bool
    next_slots: list[datetime]
    last_slot_at: datetime | None
    created_at: datetime


class PacingList(BaseModel):
    items: list[PacingView]
