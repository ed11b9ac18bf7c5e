"""templates: Meta's status of each message template, from template.status_changed

Revision ID: 0003_sender
Revises: 0002_sender
Create Date: 2026-12-02 12:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_sender"
down_revision: str | None = "0002_sender"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "sender"


def upgrade() -> None:
    op.create_table(
        "templates",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", "language"),
        schema=S,
    )


def downgrade() -> None:
    op.drop_table("templates", schema=S)
