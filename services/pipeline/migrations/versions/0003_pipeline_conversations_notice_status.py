"""conversation context per user, the ready notice's delivery status on drafts

Revision ID: 0003_pipeline
Revises: 0002_pipeline
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0003_pipeline"
down_revision: str | None = "0002_pipeline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "pipeline"


def upgrade() -> None:
    op.create_table(
        "conversations",
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
        schema=S,
    )
    op.add_column("drafts", sa.Column("notice_status", sa.Text(), nullable=True), schema=S)
    op.add_column(
        "drafts", sa.Column("notice_status_at", sa.DateTime(timezone=True), nullable=True), schema=S
    )
    op.create_index("ix_drafts_notice", "drafts", ["notice_message_id"], schema=S)


def downgrade() -> None:
    op.drop_index("ix_drafts_notice", table_name="drafts", schema=S)
    op.drop_column("drafts", "notice_status_at", schema=S)
    op.drop_column("drafts", "notice_status", schema=S)
    op.drop_table("conversations", schema=S)
