import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.db import outbox_table, processed_events_table

SCHEMA = "ingest"
metadata = sa.MetaData(schema=SCHEMA)

#: every CloudEvent accepted over HTTP, once: CloudEvents identifies an event by (source, id)
received_events = sa.Table(
    "received_events",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

outbox = outbox_table(metadata, SCHEMA)
processed_events = processed_events_table(metadata, SCHEMA)

#: where a provider delivers its webhooks; secrets are one Fernet token (JSON inside)
webhook_sources = sa.Table(
    "webhook_sources",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False, index=True),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("channel_id", pg.UUID(as_uuid=True), nullable=True),
    sa.Column("secrets", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

#: every verified webhook body, verbatim, with its headers. ``outcome`` is ``accepted`` or
#: ``unrecognised`` (verified, stored, but Herald did not understand all of it: see ``note``).
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("source_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("headers", pg.JSONB, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("event_count", sa.Integer, nullable=False),
    sa.Column("note", sa.Text, nullable=True),
)
sa.Index("ix_webhook_deliveries_tenant_day", webhook_deliveries.c.tenant_id, webhook_deliveries.c.received_at)

#: one row per provider fact (a message, or a status of a message): the dedupe key
webhook_keys = sa.Table(
    "webhook_keys",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("provider", sa.Text, primary_key=True),
    sa.Column("dedupe_key", sa.Text, primary_key=True),
    sa.Column("delivery_id", sa.BigInteger, nullable=False),
    sa.Column("phone_hash", sa.Text, nullable=True),
)
sa.Index("ix_webhook_keys_phone", webhook_keys.c.tenant_id, webhook_keys.c.phone_hash)

#: contacts seen, and the tenant's user id for each when the tenant mapped one
contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("phone_hash", sa.Text, primary_key=True),
    sa.Column("phone", sa.Text, nullable=False),  # encrypted
    sa.Column("user_id", sa.Text, nullable=True),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("mapped_at", sa.DateTime(timezone=True), nullable=True),
)
sa.Index("ix_contacts_user", contacts.c.tenant_id, contacts.c.user_id)

#: per-tenant opt-out / opt-in keywords (absent row: the defaults)
keyword_settings = sa.Table(
    "keyword_settings",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("opt_out", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("opt_in", pg.ARRAY(sa.Text), nullable=False),
)

#: requests refused at verification, counted per day (the requests themselves are not stored)
rejections = sa.Table(
    "rejections",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("reason", sa.Text, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)

#: media to download outside the webhook request. The inbound.received event waits here and is
#: written to the outbox in the same transaction that records the download (or its final failure).
media_jobs = sa.Table(
    "media_jobs",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("source_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("delivery_id", sa.BigInteger, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False, unique=True),
    sa.Column("event", sa.LargeBinary, nullable=False),
    sa.Column("state", sa.Text, nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("blob_key", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)
sa.Index(
    "ix_media_jobs_pending", media_jobs.c.next_attempt_at, postgresql_where=media_jobs.c.state == "pending"
)
