"""profiles, notes (with a full-text index per language), drafts and draft steps

Revision ID: 0002_pipeline
Revises: 0001_pipeline
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0002_pipeline"
down_revision: str | None = "0001_pipeline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "pipeline"


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("user_id", sa.Text(), primary_key=True),
        sa.Column("platforms", pg.ARRAY(sa.Text()), nullable=False),
        sa.Column("tone", sa.Text(), nullable=False),
        sa.Column("length", sa.Text(), nullable=False),
        sa.Column("topics", pg.ARRAY(sa.Text()), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("phone_enc", sa.Text(), nullable=True),
        sa.Column("phone_hash", sa.Text(), nullable=True),
        sa.Column("notify_on_ready", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        schema=S,
    )
    op.create_index("ix_pipeline_profiles_phone_hash", "profiles", ["phone_hash"], schema=S)
    op.create_table(
        "notes",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("contact_hash", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.UniqueConstraint("tenant_id", "source_id", name="uq_notes_source"),
        schema=S,
    )
    op.create_index("ix_notes_user", "notes", ["tenant_id", "user_id", "created_at"], schema=S)
    op.create_index("ix_notes_contact", "notes", ["tenant_id", "contact_hash"], schema=S)
    # one expression index per text-search configuration the retrieval uses
    for config in ("portuguese", "english", "simple"):
        op.execute(
            f"CREATE INDEX ix_notes_fts_{config} ON {S}.notes "
            f"USING gin (to_tsvector('{config}'::regconfig, body))"
        )
    op.create_table(
        "drafts",
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
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.UniqueConstraint("tenant_id", "job_key", name="uq_drafts_job"),
        schema=S,
    )
    op.create_index("ix_drafts_user", "drafts", ["tenant_id", "user_id", "created_at"], schema=S)
    op.create_table(
        "draft_steps",
        sa.Column(
            "draft_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey(f"{S}.drafts.id", ondelete="CASCADE"),
            primary_key=True,
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
        schema=S,
    )


def downgrade() -> None:
    op.drop_table("draft_steps", schema=S)
    op.drop_table("drafts", schema=S)
    op.drop_table("notes", schema=S)
    op.drop_table("profiles", schema=S)
