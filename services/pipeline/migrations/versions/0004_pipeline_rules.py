"""notification rules, their decisions per event, order progress and notices

Revision ID: 0004_pipeline
Revises: 0003_pipeline
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0004_pipeline"
down_revision: str | None = "0003_pipeline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "pipeline"


def _now() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "rules",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("filter", pg.JSONB(), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("language_field", sa.Text(), nullable=True),
        sa.Column("messages", pg.JSONB(), nullable=False),
        sa.Column("fallback_language", sa.Text(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("channel_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _now(),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_rules_name"),
        schema=S,
    )
    op.create_index("ix_rules_type", "rules", ["tenant_id", "event_type"], schema=S)
    op.create_table(
        "rule_decisions",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_source", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("rule_name", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=True),
        sa.Column("message_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("content", pg.JSONB(), nullable=True),
        _now(),
        schema=S,
    )
    op.create_index("ix_rule_decisions_event", "rule_decisions", ["tenant_id", "event_id"], schema=S)
    op.create_index("ix_rule_decisions_order", "rule_decisions", ["tenant_id", "order_id"], schema=S)
    op.create_table(
        "order_progress",
        sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("order_id", sa.Text(), primary_key=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("rank", sa.SmallInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        schema=S,
    )
    op.create_table(
        "order_notices",
        sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("order_id", sa.Text(), primary_key=True),
        sa.Column("status", sa.Text(), primary_key=True),
        sa.Column("rule_name", sa.Text(), primary_key=True),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("message_id", pg.UUID(as_uuid=True), nullable=False),
        _now(),
        schema=S,
    )


def downgrade() -> None:
    op.drop_table("order_notices", schema=S)
    op.drop_table("order_progress", schema=S)
    op.drop_index("ix_rule_decisions_order", table_name="rule_decisions", schema=S)
    op.drop_index("ix_rule_decisions_event", table_name="rule_decisions", schema=S)
    op.drop_table("rule_decisions", schema=S)
    op.drop_index("ix_rules_type", table_name="rules", schema=S)
    op.drop_table("rules", schema=S)
