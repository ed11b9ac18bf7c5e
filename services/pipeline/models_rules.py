"""Tables of notification rules: the tenant's rules, each decision taken for an event, and where
each order stands (its latest lifecycle status, the statuses already notified)."""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from services.pipeline.models import metadata

rules = sa.Table(
    "rules",
    metadata,
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
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.UniqueConstraint("tenant_id", "name", name="uq_rules_name"),
    sa.Index("ix_rules_type", "tenant_id", "event_type"),
)

#: one row per (event, rule) decision: sent / filtered / stale / duplicate / no_rule / unsendable
rule_decisions = sa.Table(
    "rule_decisions",
    metadata,
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
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Index("ix_rule_decisions_event", "tenant_id", "event_id"),
    sa.Index("ix_rule_decisions_order", "tenant_id", "order_id"),
)

#: the latest lifecycle status of each order (a lower one arriving later is stale); locked per
#: event so two replicas decide one order's statuses one at a time
order_progress = sa.Table(
    "order_progress",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("order_id", sa.Text(), primary_key=True),
    sa.Column("status", sa.Text(), nullable=True),
    sa.Column("rank", sa.SmallInteger(), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
)

#: what was already sent for an order: the primary key makes "once per order, status and rule"
#: hold across replicas (the second insert conflicts), not a read-then-write
order_notices = sa.Table(
    "order_notices",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("order_id", sa.Text(), primary_key=True),
    sa.Column("status", sa.Text(), primary_key=True),
    sa.Column("rule_name", sa.Text(), primary_key=True),
    sa.Column("event_id", sa.Text(), nullable=False),
    sa.Column("message_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
)
