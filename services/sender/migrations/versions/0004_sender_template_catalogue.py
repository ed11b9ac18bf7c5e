"""template_catalogue: the tenant's templates (text, variables, examples) and Meta's review

Revision ID: 0004_sender
Revises: 0003_sender
Create Date: 2026-12-03 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0004_sender"
down_revision: str | None = "0003_sender"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "sender"


def upgrade() -> None:
    op.create_table(
        "template_catalogue",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("channel_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("header", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("footer", sa.Text(), nullable=True),
        sa.Column("buttons", pg.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("variables", pg.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("variable_style", sa.Text(), nullable=False),
        sa.Column("examples", pg.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("meta_template_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        schema=S,
    )
    op.create_index(
        "uq_template_catalogue_name",
        "template_catalogue",
        ["tenant_id", "name", "language"],
        unique=True,
        schema=S,
    )


def downgrade() -> None:
    op.drop_index("uq_template_catalogue_name", table_name="template_catalogue", schema=S)
    op.drop_table("template_catalogue", schema=S)
