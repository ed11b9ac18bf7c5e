"""campaigns (issue 12 §3): one catalogue template to many recipients. Each recipient is an
ordinary message carrying ``campaign_id``; a paused campaign's queued messages are parked as
``held`` (the claim only ever reads ``queued``), and its pages are kept by idempotency key.

Revision ID: 0008_sender
Revises: 0007_sender
Create Date: 2026-12-04 17:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0008_sender"
down_revision: str | None = "0007_sender"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "sender"


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("template_name", sa.Text(), nullable=False),
        sa.Column("template_language", sa.Text(), nullable=False),
        sa.Column("channel_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("refused", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        schema=S,
    )
    op.create_index("ix_campaigns_tenant", "campaigns", ["tenant_id", sa.text("created_at DESC")], schema=S)
    op.create_index(
        "uq_campaigns_tenant_idempotency_key",
        "campaigns",
        ["tenant_id", "idempotency_key"],
        unique=True,
        schema=S,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_table(
        "campaign_pages",
        sa.Column("campaign_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("idempotency_key", sa.Text(), primary_key=True),
        sa.Column("request_hash", sa.Text(), nullable=False),
        sa.Column("result", pg.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        schema=S,
    )
    op.add_column("messages", sa.Column("campaign_id", pg.UUID(as_uuid=True), nullable=True), schema=S)
    op.create_index(
        "ix_messages_campaign",
        "messages",
        ["campaign_id", "recipient_hash"],
        schema=S,
        postgresql_where=sa.text("campaign_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_campaign", table_name="messages", schema=S)
    op.drop_column("messages", "campaign_id", schema=S)
    op.drop_table("campaign_pages", schema=S)
    op.drop_table("campaigns", schema=S)
