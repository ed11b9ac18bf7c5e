"""channel_sessions: the WhatsApp Web session of each gateway channel (WAHA, Evolution API)

Revision ID: 0006_sender
Revises: 0005_sender
Create Date: 2026-12-03 17:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_sender"
down_revision: str | None = "0005_sender"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "sender"


def upgrade() -> None:
    op.create_table(
        "channel_sessions",
        sa.Column("channel_id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pause_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("channel_id"),
        schema=S,
    )


def downgrade() -> None:
    op.drop_table("channel_sessions", schema=S)
