import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.db import outbox_table, processed_events_table

SCHEMA = "scheduler"
metadata = sa.MetaData(schema=SCHEMA)

#: one row per schedule; ``send_at`` is its NEXT occurrence (the only one materialised) and
#: ``message_id`` that occurrence's idempotency key. The claim that fires an occurrence moves
#: both forward in the same transaction as the outbox row.
scheduled_messages = sa.Table(
    "scheduled_messages",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("recipient_enc", sa.Text, nullable=False),
    sa.Column("recipient_hash", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=True),
    sa.Column("content", pg.JSONB, nullable=True),
    sa.Column("fallback_template", pg.JSONB, nullable=True),
    sa.Column("channel_id", pg.UUID(as_uuid=True), nullable=True),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("send_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("message_id", pg.UUID(as_uuid=True), nullable=False, unique=True),
    sa.Column("kind", sa.Text, nullable=False, server_default="one_off"),
    sa.Column("timezone", sa.Text, nullable=True),
    sa.Column("start_local", sa.DateTime(timezone=False), nullable=True),
    sa.Column("rule", sa.Text, nullable=True),
    sa.Column("recurrence", pg.JSONB, nullable=True),
    sa.Column("grace_seconds", sa.Integer, nullable=True),
    sa.Column("fired_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("missed_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
    #: the trace context of the span that created the row; a firing's span links to it
    sa.Column("traceparent", sa.Text, nullable=True),
    sa.Index("ix_scheduled_due", "send_at", postgresql_where=sa.text("status = 'pending'")),
    sa.Index("ix_scheduled_tenant_created", "tenant_id", sa.text("created_at DESC")),
)

#: history: one row per past occurrence of a scheduled message, fired or missed, with the
#: delivery status followed from ``message.status``
occurrences = sa.Table(
    "occurrences",
    metadata,
    sa.Column("message_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("schedule_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.Text, nullable=False),  # published | missed
    sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("delivery_status", sa.Text, nullable=True),
    sa.Column("delivery_reason", sa.Text, nullable=True),
    sa.Column("delivery_updated_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_occurrences_schedule", "schedule_id", sa.text("due_at DESC")),
)

#: the tenant's reminder policy (none: the built-in default)
reminder_policies = sa.Table(
    "reminder_policies",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("reminders", pg.JSONB, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

#: a policy for one event, overriding the tenant's (set before the event is published or changed)
event_reminder_policies = sa.Table(
    "event_reminder_policies",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("reminders", pg.JSONB, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

#: one row per (event, attendee, reminder of the policy)
reminders = sa.Table(
    "reminders",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("event_name", sa.Text, nullable=False),
    sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("timezone", sa.Text, nullable=False),
    sa.Column("rule_name", sa.Text, nullable=False),
    sa.Column("recipient_enc", sa.Text, nullable=False),
    sa.Column("recipient_hash", sa.Text, nullable=False),
    sa.Column("content", pg.JSONB, nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.Text, nullable=False),  # pending | published | missed | cancelled
    sa.Column("message_id", pg.UUID(as_uuid=True), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("delivery_status", sa.Text, nullable=True),
    sa.Column("delivery_reason", sa.Text, nullable=True),
    sa.Column("delivery_updated_at", sa.DateTime(timezone=True), nullable=True),
    #: the CloudEvent time of the event.* that last planned or cancelled this row: an older event
    #: arriving late (redelivery, several publishers) never undoes a newer one
    sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
    #: the trace context of the span that created the row; a firing's span links to it
    sa.Column("traceparent", sa.Text, nullable=True),
    sa.UniqueConstraint("tenant_id", "event_id", "recipient_hash", "rule_name", name="uq_reminder_slot"),
    sa.Index("ix_reminders_due", "due_at", postgresql_where=sa.text("status = 'pending'")),
    sa.Index("ix_reminders_event", "tenant_id", "event_id"),
)

#: an event.cancelled, remembered by its CloudEvent time: an event.published / event.changed that
#: is not newer plans nothing (it arrived late); a newer one (the event is on again) plans afresh
cancelled_events = sa.Table(
    "cancelled_events",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=False),
)

pacing_schedules = sa.Table(
    "pacing_schedules",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("days", pg.JSONB, nullable=False),
    sa.Column("times", pg.JSONB, nullable=False),
    sa.Column("timezone", sa.Text, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("start_local", sa.DateTime(timezone=False), nullable=False),
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("next_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_slot_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    #: the trace context of the span that created the row; a firing's span links to it
    sa.Column("traceparent", sa.Text, nullable=True),
    sa.Index("ix_pacing_due", "next_at", postgresql_where=sa.text("active")),
    sa.Index("ix_pacing_tenant", "tenant_id", "user_id"),
)

outbox = outbox_table(metadata, SCHEMA)
processed_events = processed_events_table(metadata, SCHEMA)
