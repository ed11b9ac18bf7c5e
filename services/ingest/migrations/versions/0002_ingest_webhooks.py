"""webhook sources, raw deliveries, dedupe keys, contacts, keywords, rejections, media jobs

Revision ID: 0002_ingest_webhooks
Revises: 0001_ingest
Create Date: 2026-11-22 05:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0002_ingest_webhooks"
down_revision: str | None = "0001_ingest"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
S = "ingest"


def upgrade() -> None:
    op.create_table(
        "webhook_sources",
        sa.Column("id", sa.UUID(), primary_key=True),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("channel_id", sa.UUID(), nullable=True),
        sa.Column("secrets", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        schema=S,
    )
    op.create_index("ix_ingest_webhook_sources_tenant_id", "webhook_sources", ["tenant_id"], schema=S)
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("source_id", sa.UUID(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("headers", pg.JSONB(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        schema=S,
    )
    op.create_index(
        "ix_webhook_deliveries_tenant_day", "webhook_deliveries", ["tenant_id", "received_at"], schema=S
    )
    op.create_table(
        "webhook_keys",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("dedupe_key", sa.Text(), nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("phone_hash", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "provider", "dedupe_key"),
        schema=S,
    )
    op.create_index("ix_webhook_keys_phone", "webhook_keys", ["tenant_id", "phone_hash"], schema=S)
    op.create_table(
        "contacts",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("phone_hash", sa.Text(), nullable=False),
        sa.Column("phone", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column(
            "first_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("mapped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "phone_hash"),
        schema=S,
    )
    op.create_index("ix_contacts_user", "contacts", ["tenant_id", "user_id"], schema=S)
    op.create_table(
        "keyword_settings",
        sa.Column("tenant_id", sa.UUID(), primary_key=True),
        sa.Column("opt_out", pg.ARRAY(sa.Text()), nullable=False),
        sa.Column("opt_in", pg.ARRAY(sa.Text()), nullable=False),
        schema=S,
    )
    op.create_table(
        "rejections",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "day", "reason"),
        schema=S,
    )
    op.create_table(
        "media_jobs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("source_id", sa.UUID(), nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False, unique=True),
        sa.Column("event", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.Text(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("blob_key", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        schema=S,
    )
    op.create_index(
        "ix_media_jobs_pending",
        "media_jobs",
        ["next_attempt_at"],
        schema=S,
        postgresql_where=sa.text("state = 'pending'"),
    )


def downgrade() -> None:
    for table in (
        "media_jobs",
        "rejections",
        "keyword_settings",
        "contacts",
        "webhook_keys",
        "webhook_deliveries",
        "webhook_sources",
    ):
        op.drop_table(table, schema=S)
