"""Tables of the ``sender`` schema. Phone numbers are stored encrypted, with a keyed hash for look-ups."""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.db import outbox_table, processed_events_table

SCHEMA = "sender"
metadata = sa.MetaData(schema=SCHEMA)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("idempotency_key", sa.Text, nullable=True),
    sa.Column("request_hash", sa.Text, nullable=False),
    sa.Column("recipient_enc", sa.Text, nullable=False),
    sa.Column("recipient_hash", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("correlation_id", sa.Text, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("status_reason", sa.Text, nullable=True),
    sa.Column("provider", sa.Text, nullable=True),
    sa.Column("provider_message_id", sa.Text, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("sending_started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index(
        "uq_messages_tenant_idempotency_key",
        "tenant_id",
        "idempotency_key",
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    ),
    sa.Index("ix_messages_tenant_created", "tenant_id", sa.text("created_at DESC")),
    sa.Index("ix_messages_sending", "sending_started_at", postgresql_where=sa.text("status = 'sending'")),
)

message_history = sa.Table(
    "message_history",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column(
        "message_id", pg.UUID(as_uuid=True), sa.ForeignKey(messages.c.id, ondelete="CASCADE"), nullable=False
    ),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_message_history_message", "message_id", "id"),
)

sandbox_messages = sa.Table(
    "sandbox_messages",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("message_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("provider_message_id", sa.Text, nullable=False),
    sa.Column("recipient_enc", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Index("ix_sandbox_messages_tenant", "tenant_id", sa.text("id DESC")),
    sa.Index("ix_sandbox_messages_message", "message_id"),
)

outbox = outbox_table(metadata, SCHEMA)
processed_events = processed_events_table(metadata, SCHEMA)
