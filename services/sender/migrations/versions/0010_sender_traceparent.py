"""messages.traceparent: the W3C trace context of the span that accepted a message, so the send
the dispatcher makes later (claimed from the table, not consumed from the broker) continues the
request's trace. NULL when tracing is off.

Revision ID: 0010_sender
Revises: 0009_sender
Create Date: 2026-12-04 21:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_sender"
down_revision: str | None = "0009_sender"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "sender"


def upgrade() -> None:
    op.add_column("messages", sa.Column("traceparent", sa.Text(), nullable=True), schema=S)


def downgrade() -> None:
    op.drop_column("messages", "traceparent", schema=S)
