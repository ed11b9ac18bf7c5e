"""tenant_events.received_at index: the retention prune deletes the oldest rows first without
scanning the table (PIPELINE_TENANT_EVENTS_RETENTION_DAYS)

Revision ID: 0006_pipeline_event_retention
Revises: 0005_pipeline
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_pipeline_event_retention"
down_revision: str | None = "0005_pipeline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "pipeline"


def upgrade() -> None:
    op.create_index("ix_tenant_events_received_at", "tenant_events", ["received_at"], schema=S)


def downgrade() -> None:
    op.drop_index("ix_tenant_events_received_at", table_name="tenant_events", schema=S)
