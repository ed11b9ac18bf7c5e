"""traceparent on schedules, reminders and pacing schedules: the W3C trace context of the span
that created the row (the API request, or the event.published consumer that planned a reminder).
Each firing still starts a trace of its own; its span links to this one, so an on-call engineer
can go from a message that fired to the request that scheduled it. NULL when tracing was off.

Revision ID: 0004_scheduler
Revises: 0003_scheduler
Create Date: 2026-12-06 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_scheduler"
down_revision: str | None = "0003_scheduler"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "scheduler"
TABLES = ("scheduled_messages", "reminders", "pacing_schedules")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("traceparent", sa.Text(), nullable=True), schema=S)


def downgrade() -> None:
    for table in TABLES:
        op.drop_column(table, "traceparent", schema=S)
