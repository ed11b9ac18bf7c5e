"""messages.ambiguous_attempts: provider calls that got no answer after the request may have
reached the provider, so the resends that can arrive twice are bounded per message

Revision ID: 0007_sender
Revises: 0006_sender
Create Date: 2026-12-03 17:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_sender"
down_revision: str | None = "0006_sender"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "sender"


def upgrade() -> None:
    op.add_column(
        "messages",
        sa.Column("ambiguous_attempts", sa.SmallInteger(), nullable=False, server_default="0"),
        schema=S,
    )


def downgrade() -> None:
    op.drop_column("messages", "ambiguous_attempts", schema=S)
