"""create sender schema

Revision ID: 0001_sender
Revises:
Create Date: 2026-11-22 03:59:00.339981
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_sender"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("request_hash", sa.Text(), nullable=False),
        sa.Column("recipient_enc", sa.Text(), nullable=False),
        sa.Column("recipient_hash", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("correlation_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("provider", sa.Text(), nullable=True),
        sa.Column("provider_message_id", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("sending_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        schema="sender",
    )
    op.create_index(
        "ix_messages_sending",
        "messages",
        ["sending_started_at"],
        unique=False,
        schema="sender",
        postgresql_where=sa.text("status = 'sending'"),
    )
    op.create_index(
        "ix_messages_tenant_created",
        "messages",
        ["tenant_id", sa.literal_column("created_at DESC")],
        unique=False,
        schema="sender",
    )
    op.create_index(
        "uq_messages_tenant_idempotency_key",
        "messages",
        ["tenant_id", "idempotency_key"],
        unique=True,
        schema="sender",
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
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
        schema="sender",
    )
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["id"],
        unique=False,
        schema="sender",
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
        schema="sender",
    )
    op.create_table(
        "sandbox_messages",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("provider_message_id", sa.Text(), nullable=False),
        sa.Column("recipient_enc", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        schema="sender",
    )
    op.create_index(
        "ix_sandbox_messages_message", "sandbox_messages", ["message_id"], unique=False, schema="sender"
    )
    op.create_index(
        "ix_sandbox_messages_tenant",
        "sandbox_messages",
        ["tenant_id", sa.literal_column("id DESC")],
        unique=False,
        schema="sender",
    )
    op.create_table(
        "message_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["sender.messages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        schema="sender",
    )
    op.create_index(
        "ix_message_history_message", "message_history", ["message_id", "id"], unique=False, schema="sender"
    )


def downgrade() -> None:
    op.drop_index("ix_message_history_message", table_name="message_history", schema="sender")
    op.drop_table("message_history", schema="sender")
    op.drop_index("ix_sandbox_messages_tenant", table_name="sandbox_messages", schema="sender")
    op.drop_index("ix_sandbox_messages_message", table_name="sandbox_messages", schema="sender")
    op.drop_table("sandbox_messages", schema="sender")
    op.drop_table("processed_events", schema="sender")
    op.drop_index(
        "ix_outbox_unpublished",
        table_name="outbox",
        schema="sender",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_table("outbox", schema="sender")
    op.drop_index(
        "uq_messages_tenant_idempotency_key",
        table_name="messages",
        schema="sender",
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_index("ix_messages_tenant_created", table_name="messages", schema="sender")
    op.drop_index(
        "ix_messages_sending",
        table_name="messages",
        schema="sender",
        postgresql_where=sa.text("status = 'sending'"),
    )
    op.drop_table("messages", schema="sender")
