"""channels, message kinds, checks, limits, dead letters

Revision ID: 0002_sender
Revises: 0001_sender
Create Date: 2026-11-22 05:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0002_sender"
down_revision: str | None = "0001_sender"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "sender"


def upgrade() -> None:
    op.alter_column("messages", "text", nullable=True, schema=S)
    op.add_column("messages", sa.Column("content", pg.JSONB(), nullable=True), schema=S)
    op.add_column("messages", sa.Column("fallback_template", pg.JSONB(), nullable=True), schema=S)
    op.add_column("messages", sa.Column("channel_id", sa.UUID(), nullable=True), schema=S)
    op.add_column("messages", sa.Column("not_before", sa.DateTime(timezone=True), nullable=True), schema=S)
    op.add_column("messages", sa.Column("error_code", sa.Text(), nullable=True), schema=S)
    op.add_column(
        "messages",
        sa.Column("dead_letter", sa.Boolean(), server_default=sa.false(), nullable=False),
        schema=S,
    )
    op.create_index(
        "ix_messages_due",
        "messages",
        ["channel_id", sa.literal_column("priority DESC"), "not_before"],
        schema=S,
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        "ix_messages_not_before",
        "messages",
        ["not_before"],
        schema=S,
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index("ix_messages_provider_message_id", "messages", ["provider_message_id"], schema=S)
    op.create_index(
        "ix_messages_dead_letters",
        "messages",
        ["tenant_id"],
        schema=S,
        postgresql_where=sa.text("dead_letter"),
    )

    op.create_table(
        "channels",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=True),
        sa.Column("settings", pg.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("credentials_enc", sa.Text(), nullable=True),
        sa.Column("is_default", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("implicit", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("throughput_per_second", sa.Float(), nullable=False),
        sa.Column("portfolio", sa.Text(), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=True),
        sa.Column("pair_interval_seconds", sa.Float(), nullable=False),
        sa.Column("quiet_hours", pg.JSONB(), nullable=True),
        sa.Column("enforce_window", sa.Boolean(), nullable=False),
        sa.Column("next_slot", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("breaker_open_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("pause_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        schema=S,
    )
    op.create_index(
        "uq_channels_tenant_default",
        "channels",
        ["tenant_id"],
        unique=True,
        schema=S,
        postgresql_where=sa.text("is_default AND deleted_at IS NULL"),
    )
    op.create_index("ix_channels_tenant", "channels", ["tenant_id"], schema=S)
    op.create_table(
        "opt_outs",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("recipient_hash", sa.Text(), nullable=False),
        sa.Column("recipient_enc", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "recipient_hash"),
        schema=S,
    )
    op.create_table(
        "windows",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("recipient_hash", sa.Text(), nullable=False),
        sa.Column("channel_key", sa.UUID(), nullable=False),
        sa.Column("last_inbound_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "recipient_hash", "channel_key"),
        schema=S,
    )
    op.create_table(
        "pair_pacing",
        sa.Column("channel_id", sa.UUID(), nullable=False),
        sa.Column("recipient_hash", sa.Text(), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("channel_id", "recipient_hash"),
        schema=S,
    )
    op.create_table(
        "tier_recipients",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("portfolio", sa.Text(), nullable=False),
        sa.Column("recipient_hash", sa.Text(), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "portfolio", "recipient_hash"),
        schema=S,
    )
    op.create_table(
        "provider_mappings",
        sa.Column("channel_id", sa.UUID(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("channel_id", "key"),
        schema=S,
    )
    op.create_table(
        "pending_statuses",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("provider_message_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        schema=S,
    )
    op.create_index("ix_pending_statuses_pmid", "pending_statuses", ["provider_message_id"], schema=S)


def downgrade() -> None:
    for table in (
        "pending_statuses",
        "provider_mappings",
        "tier_recipients",
        "pair_pacing",
        "windows",
        "opt_outs",
        "channels",
    ):
        op.drop_table(table, schema=S)
    for index in (
        "ix_messages_dead_letters",
        "ix_messages_provider_message_id",
        "ix_messages_not_before",
        "ix_messages_due",
    ):
        op.drop_index(index, table_name="messages", schema=S)
    for column in ("dead_letter", "error_code", "not_before", "channel_id", "fallback_template", "content"):
        op.drop_column("messages", column, schema=S)
    op.alter_column("messages", "text", nullable=False, schema=S)
