"""cancelled events: an event.cancelled is remembered, so an older event.published or
event.changed arriving after it (redelivery, another publisher, out-of-order queues) plans nothing

Revision ID: 0003_scheduler
Revises: 0002_scheduler
Create Date: 2026-12-02 11:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_scheduler"
down_revision: str | None = "0002_scheduler"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "scheduler"


def upgrade() -> None:
    op.create_table(
        "cancelled_events",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "event_id"),
        schema=S,
    )


def downgrade() -> None:
    op.drop_table("cancelled_events", schema=S)
