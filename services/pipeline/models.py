"""Tables of the pipeline's own schema: profiles, notes, drafts, the recorded steps of each job and
the open conversation (clarification) of each user."""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.db import outbox_table, processed_events_table

SCHEMA = "pipeline"
metadata = sa.MetaData(schema=SCHEMA)

outbox = outbox_table(metadata, SCHEMA)
processed_events = processed_events_table(metadata, SCHEMA)

profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("user_id", sa.Text(), primary_key=True),
    sa.Column("platforms", pg.ARRAY(sa.Text()), nullable=False),
    sa.Column("tone", sa.Text(), nullable=False),
    sa.Column("length", sa.Text(), nullable=False),
    sa.Column("topics", pg.ARRAY(sa.Text()), nullable=False),
    sa.Column("language", sa.Text(), nullable=False),
    sa.Column("phone_enc", sa.Text(), nullable=True),
    sa.Column("phone_hash", sa.Text(), nullable=True, index=True),
    sa.Column("notify_on_ready", sa.Boolean(), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
)

notes = sa.Table(
    "notes",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
    # a note from an unmapped contact is kept under the contact's phone hash until it is mapped
    sa.Column("user_id", sa.Text(), nullable=True),
    sa.Column("contact_hash", sa.Text(), nullable=True),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("language", sa.Text(), nullable=False),
    sa.Column("source", sa.Text(), nullable=False),
    sa.Column("source_id", sa.Text(), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Index("ix_notes_user", "tenant_id", "user_id", "created_at"),
    sa.Index("ix_notes_contact", "tenant_id", "contact_hash"),
    sa.UniqueConstraint("tenant_id", "source_id", name="uq_notes_source"),
)

drafts = sa.Table(
    "drafts",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("user_id", sa.Text(), nullable=False),
    sa.Column("job_key", sa.Text(), nullable=False),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("title", sa.Text(), nullable=True),
    sa.Column("text", sa.Text(), nullable=True),
    sa.Column("brief", pg.JSONB(), nullable=True),
    sa.Column("citations", pg.JSONB(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("notice_message_id", pg.UUID(as_uuid=True), nullable=True),
    sa.Column("notice_requested_at", sa.DateTime(timezone=True), nullable=True),
    # the ready notice's delivery status as the sender reports it (message.status)
    sa.Column("notice_status", sa.Text(), nullable=True),
    sa.Column("notice_status_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.UniqueConstraint("tenant_id", "job_key", name="uq_drafts_job"),
    sa.Index("ix_drafts_user", "tenant_id", "user_id", "created_at"),
    sa.Index("ix_drafts_notice", "notice_message_id"),
)

draft_steps = sa.Table(
    "draft_steps",
    metadata,
    sa.Column(
        "draft_id", pg.UUID(as_uuid=True), sa.ForeignKey(drafts.c.id, ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("agent", sa.Text(), primary_key=True),
    sa.Column("position", sa.SmallInteger(), nullable=False),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("model", sa.Text(), nullable=False),
    sa.Column("tokens", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("output", pg.JSONB(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
)

#: one open clarification per user: which field was asked, what the order already says, the
#: choices offered (to match the answer), how often it was asked, and until when it is open
conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("user_id", sa.Text(), primary_key=True),
    sa.Column("field", sa.Text(), nullable=False),
    sa.Column("known", pg.JSONB(), nullable=False),
    sa.Column("choices", pg.JSONB(), nullable=False),
    sa.Column("language", sa.Text(), nullable=False),
    sa.Column("attempts", sa.SmallInteger(), nullable=False),
    sa.Column("order_ref", sa.Text(), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
)
