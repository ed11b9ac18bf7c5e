"""create pipeline schema

Revision ID: 0001_pipeline
Revises:
Create Date: 2026-11-22 03:58:58.312822
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_pipeline"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
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
        schema="pipeline",
    )
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["id"],
        unique=False,
        schema="pipeline",
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
        schema="pipeline",
    )


def downgrade() -> None:
    op.drop_table("processed_events", schema="pipeline")
    op.drop_index(
        "ix_outbox_unpublished",
        table_name="outbox",
        schema="pipeline",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_table("outbox", schema="pipeline")
