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
    sa.Column("text", sa.Text, nullable=True),
    sa.Column("content", pg.JSONB, nullable=True),
    sa.Column("fallback_template", pg.JSONB, nullable=True),
    sa.Column("channel_id", pg.UUID(as_uuid=True), nullable=True),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("correlation_id", sa.Text, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("status_reason", sa.Text, nullable=True),
    sa.Column("provider", sa.Text, nullable=True),
    sa.Column("provider_message_id", sa.Text, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("sending_started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
    sa.Column("error_code", sa.Text, nullable=True),
    #: attempts that got no answer after the request may have reached the provider
    sa.Column("ambiguous_attempts", sa.SmallInteger, nullable=False, server_default="0"),
    sa.Column("dead_letter", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # issue 13 (0005): stamped by the trigger sender.stamp_status_times when the status changes
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    # why a queued message waits (quiet_hours, pair_interval, tier, retry): valid while
    # wait_until = not_before; written by the statement that defers it
    sa.Column("wait_reason", sa.Text, nullable=True),
    sa.Column("wait_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("sent_content", pg.JSONB, nullable=True),  # the fallback template that went out instead
    # issue 12 §3 (0008): the campaign the message is one recipient of
    sa.Column("campaign_id", pg.UUID(as_uuid=True), nullable=True),
    # 0010: the trace context of the span that accepted the message (shared.tracing); NULL when off
    sa.Column("traceparent", sa.Text, nullable=True),
    sa.Index(
        "ix_messages_due",
        "channel_id",
        sa.text("priority DESC"),
        "not_before",
        postgresql_where=sa.text("status = 'queued'"),
    ),
    sa.Index("ix_messages_not_before", "not_before", postgresql_where=sa.text("status = 'queued'")),
    sa.Index("ix_messages_provider_message_id", "provider_message_id"),
    sa.Index(
        "ix_messages_campaign",
        "campaign_id",
        "recipient_hash",
        postgresql_where=sa.text("campaign_id IS NOT NULL"),
    ),
    sa.Index("ix_messages_dead_letters", "tenant_id", postgresql_where=sa.text("dead_letter")),
    sa.Index(
        "uq_messages_tenant_idempotency_key",
        "tenant_id",
        "idempotency_key",
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    ),
    sa.Index("ix_messages_tenant_created", "tenant_id", sa.text("created_at DESC")),
    sa.Index("ix_messages_sending", "sending_started_at", postgresql_where=sa.text("status = 'sending'")),
    sa.Index(
        "ix_messages_analytics",
        "tenant_id",
        "created_at",
        postgresql_include=["status", "channel_id", "origin", "error_code", "sent_at", "delivered_at"],
    ),
    sa.Index(
        "ix_messages_failed",
        "tenant_id",
        "created_at",
        postgresql_include=["error_code", "provider"],
        postgresql_where=sa.text("status = 'failed'"),
    ),
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

# --- issue 3: channels, checks, limits ---------------------------------------------------------

channels = sa.Table(
    "channels",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("base_url", sa.Text, nullable=True),
    sa.Column("settings", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("credentials_enc", sa.Text, nullable=True),
    sa.Column("is_default", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("implicit", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("throughput_per_second", sa.Float, nullable=False),
    sa.Column("portfolio", sa.Text, nullable=False),
    sa.Column("tier", sa.Integer, nullable=True),  # unique recipients per rolling 24 h; NULL = unlimited
    sa.Column("pair_interval_seconds", sa.Float, nullable=False),
    sa.Column("quiet_hours", pg.JSONB, nullable=True),
    sa.Column("enforce_window", sa.Boolean, nullable=False),
    # limits and breaker state, shared by every sender process through this row (locked on claim)
    sa.Column("next_slot", sa.DateTime(timezone=True), nullable=True),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("breaker_open_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("pause_reason", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index(
        "uq_channels_tenant_default",
        "tenant_id",
        unique=True,
        postgresql_where=sa.text("is_default AND deleted_at IS NULL"),
    ),
    sa.Index("ix_channels_tenant", "tenant_id"),
)

opt_outs = sa.Table(
    "opt_outs",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("recipient_hash", sa.Text, primary_key=True),
    sa.Column("recipient_enc", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

#: Meta's view of the tenant's message templates, from template.status_changed: a template Meta
#: has paused, disabled or not approved is not sent (the message is a replayable dead letter)
templates = sa.Table(
    "templates",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("language", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

windows = sa.Table(
    "windows",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("recipient_hash", sa.Text, primary_key=True),
    # the channel the recipient wrote to; the nil UUID when the inbound event named none
    sa.Column("channel_key", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("last_inbound_at", sa.DateTime(timezone=True), nullable=False),
)

pair_pacing = sa.Table(
    "pair_pacing",
    metadata,
    sa.Column("channel_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("recipient_hash", sa.Text, primary_key=True),
    sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
)

tier_recipients = sa.Table(
    "tier_recipients",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("portfolio", sa.Text, primary_key=True),
    sa.Column("recipient_hash", sa.Text, primary_key=True),
    sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
)

provider_mappings = sa.Table(
    "provider_mappings",
    metadata,
    sa.Column("channel_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

pending_statuses = sa.Table(
    "pending_statuses",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("provider_message_id", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("error_code", sa.Text, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_pending_statuses_pmid", "provider_message_id"),
)

#: issue 12: the tenant's template catalogue (what a template says, its variables, Meta's review);
#: one per (tenant, name, language), as at Meta. Its status is mirrored into ``templates`` above,
#: which admission reads.
template_catalogue = sa.Table(
    "template_catalogue",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("channel_id", pg.UUID(as_uuid=True), nullable=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("language", sa.Text, nullable=False),
    sa.Column("category", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("header", sa.Text, nullable=True),
    #: TEXT (``header``), IMAGE, VIDEO or DOCUMENT (the link comes with each message); None: no header
    sa.Column("header_format", sa.Text, nullable=True),
    #: the sample of a media header Meta reviews (a Resumable Upload handle)
    sa.Column("header_handle", sa.Text, nullable=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("footer", sa.Text, nullable=True),
    sa.Column("buttons", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("variables", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("variable_style", sa.Text, nullable=False),
    #: Meta's parameter_format: POSITIONAL (sent in order) or NAMED (sent with parameter_name)
    sa.Column("parameter_format", sa.Text, nullable=False, server_default=sa.text("'POSITIONAL'")),
    sa.Column("examples", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("meta_template_id", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("uq_template_catalogue_name", "tenant_id", "name", "language", unique=True),
)

#: issue 12 §3: one catalogue template to many recipients; each recipient is a message with
#: ``campaign_id``. ``state``: active | paused | cancelled (completed is derived from the
#: messages: active with nothing queued, held or sending). A paused campaign's
#: queued messages are ``held`` (the claim reads only ``queued``), back to ``queued`` on resume.
campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("template_name", sa.Text, nullable=False),
    sa.Column("template_language", sa.Text, nullable=False),
    sa.Column("channel_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("send_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("accepted", sa.Integer, nullable=False, server_default="0"),
    sa.Column("refused", sa.Integer, nullable=False, server_default="0"),
    sa.Column("idempotency_key", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_campaigns_tenant", "tenant_id", sa.text("created_at DESC")),
    sa.Index(
        "uq_campaigns_tenant_idempotency_key",
        "tenant_id",
        "idempotency_key",
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    ),
)

#: a recipients page sent with an Idempotency-Key, and what it answered: a repeat is that answer
campaign_pages = sa.Table(
    "campaign_pages",
    metadata,
    sa.Column("campaign_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("idempotency_key", sa.Text, primary_key=True),
    sa.Column("request_hash", sa.Text, nullable=False),
    sa.Column("result", pg.JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
