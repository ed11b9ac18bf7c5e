import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.db import outbox_table, processed_events_table

SCHEMA = "scheduler"
metadata = sa.MetaData(schema=SCHEMA)

scheduled_messages = sa.Table(
    "scheduled_messages",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("recipient_enc", sa.Text, nullable=False),
    sa.Column("recipient_hash", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("send_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("message_id", pg.UUID(as_uuid=True), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_scheduled_due", "send_at", postgresql_where=sa.text("status = 'pending'")),
    sa.Index("ix_scheduled_tenant_created", "tenant_id", sa.text("created_at DESC")),
)

outbox = outbox_table(metadata, SCHEMA)
processed_events = processed_events_table(metadata, SCHEMA)
