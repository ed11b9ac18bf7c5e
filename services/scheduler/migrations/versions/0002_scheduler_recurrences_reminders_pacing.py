"""recurrences, occurrence history, event reminders, pacing schedules

Revision ID: 0002_scheduler
Revises: 0001_scheduler
Create Date: 2026-11-22 05:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0002_scheduler"
down_revision: str | None = "0001_scheduler"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "scheduler"


def upgrade() -> None:
    op.alter_column("scheduled_messages", "text", nullable=True, schema=S)
    for column in (
        sa.Column("content", pg.JSONB(), nullable=True),
        sa.Column("fallback_template", pg.JSONB(), nullable=True),
        sa.Column("channel_id", sa.UUID(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False, server_default="one_off"),
        sa.Column("timezone", sa.Text(), nullable=True),
        sa.Column("start_local", sa.DateTime(timezone=False), nullable=True),
        sa.Column("rule", sa.Text(), nullable=True),
        sa.Column("recurrence", pg.JSONB(), nullable=True),
        sa.Column("grace_seconds", sa.Integer(), nullable=True),
        sa.Column("fired_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("missed_count", sa.Integer(), nullable=False, server_default="0"),
    ):
        op.add_column("scheduled_messages", column, schema=S)

    op.create_table(
        "occurrences",
        sa.Column("message_id", sa.UUID(), primary_key=True),
        sa.Column("schedule_id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivery_status", sa.Text(), nullable=True),
        sa.Column("delivery_reason", sa.Text(), nullable=True),
        sa.Column("delivery_updated_at", sa.DateTime(timezone=True), nullable=True),
        schema=S,
    )
    op.create_index(
        "ix_occurrences_schedule", "occurrences", ["schedule_id", sa.literal_column("due_at DESC")], schema=S
    )

    op.create_table(
        "reminder_policies",
        sa.Column("tenant_id", sa.UUID(), primary_key=True),
        sa.Column("reminders", pg.JSONB(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        schema=S,
    )

    op.create_table(
        "event_reminder_policies",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("reminders", pg.JSONB(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "event_id"),
        schema=S,
    )

    op.create_table(
        "reminders",
        sa.Column("id", sa.UUID(), primary_key=True),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_name", sa.Text(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column("rule_name", sa.Text(), nullable=False),
        sa.Column("recipient_enc", sa.Text(), nullable=False),
        sa.Column("recipient_hash", sa.Text(), nullable=False),
        sa.Column("content", pg.JSONB(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivery_status", sa.Text(), nullable=True),
        sa.Column("delivery_reason", sa.Text(), nullable=True),
        sa.Column("delivery_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("message_id"),
        sa.UniqueConstraint("tenant_id", "event_id", "recipient_hash", "rule_name", name="uq_reminder_slot"),
        schema=S,
    )
    op.create_index(
        "ix_reminders_due", "reminders", ["due_at"], schema=S, postgresql_where=sa.text("status = 'pending'")
    )
    op.create_index("ix_reminders_event", "reminders", ["tenant_id", "event_id"], schema=S)

    op.create_table(
        "pacing_schedules",
        sa.Column("id", sa.UUID(), primary_key=True),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("days", pg.JSONB(), nullable=False),
        sa.Column("times", pg.JSONB(), nullable=False),
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("start_local", sa.DateTime(timezone=False), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_slot_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        schema=S,
    )
    op.create_index(
        "ix_pacing_due", "pacing_schedules", ["next_at"], schema=S, postgresql_where=sa.text("active")
    )
    op.create_index("ix_pacing_tenant", "pacing_schedules", ["tenant_id", "user_id"], schema=S)


def downgrade() -> None:
    op.drop_table("pacing_schedules", schema=S)
    op.drop_table("reminders", schema=S)
    op.drop_table("event_reminder_policies", schema=S)
    op.drop_table("reminder_policies", schema=S)
    op.drop_table("occurrences", schema=S)
    for name in (
        "missed_count",
        "fired_count",
        "grace_seconds",
        "recurrence",
        "rule",
        "start_local",
        "timezone",
        "kind",
        "channel_id",
        "fallback_template",
        "content",
    ):
        op.drop_column("scheduled_messages", name, schema=S)
    op.execute("DELETE FROM scheduler.scheduled_messages WHERE text IS NULL")
    op.alter_column("scheduled_messages", "text", nullable=False, schema=S)
