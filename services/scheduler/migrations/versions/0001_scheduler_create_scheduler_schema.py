"""create scheduler schema

Revision ID: 0001_scheduler
Revises:
Create Date: 2026-11-22 03:58:56.184144
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_scheduler"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("routing_key", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        schema="scheduler",
    )
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["id"],
        unique=False,
        schema="scheduler",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column(
            "processed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("consumer", "event_id"),
        schema="scheduler",
    )
    op.create_table(
        "scheduled_messages",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("recipient_enc", sa.Text(), nullable=False),
        sa.Column("recipient_hash", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
        schema="scheduler",
    )
    op.create_index(
        "ix_scheduled_due",
        "scheduled_messages",
        ["send_at"],
        unique=False,
        schema="scheduler",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_scheduled_tenant_created",
        "scheduled_messages",
        ["tenant_id", sa.literal_column("created_at DESC")],
        unique=False,
        schema="scheduler",
    )


def downgrade() -> None:
    op.drop_index("ix_scheduled_tenant_created", table_name="scheduled_messages", schema="scheduler")
    op.drop_index(
        "ix_scheduled_due",
        table_name="scheduled_messages",
        schema="scheduler",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_table("scheduled_messages", schema="scheduler")
    op.drop_table("processed_events", schema="scheduler")
    op.drop_index(
        "ix_outbox_unpublished",
        table_name="outbox",
        schema="scheduler",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_table("outbox", schema="scheduler")
