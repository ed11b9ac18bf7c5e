"""analytics and waiting: sent/delivered times, why a queued message waits, what went out

- ``sent_at`` / ``delivered_at``: stamped by a row trigger in the very statement that changes the
  status (whichever path records it: the dispatcher, a delivery status, reconciliation), so queue
  time (accepted → sent) and delivery time (sent → delivered) are read from the message row,
  exactly matching its status; a message queued again (retry, replay) clears them.
- ``wait_reason`` / ``wait_until``: written by the claim's statement that defers a message (quiet
  hours, pair interval, tier, a retry's backoff); meaningful while ``wait_until = not_before``.
- ``sent_content``: the fallback template when one replaced the free-form content.
- ``ix_messages_analytics``: (tenant, created_at) with the columns the analytics read, so a
  period's figures come from an index-only scan; ``ix_messages_failed`` (partial) for the top
  failure codes.

Revision ID: 0005_sender
Revises: 0004_sender
Create Date: 2026-12-03 16:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0005_sender"
down_revision: str | None = "0004_sender"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "sender"

STAMP = """
CREATE OR REPLACE FUNCTION sender.stamp_status_times() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'queued' THEN
        NEW.sent_at := NULL;
        NEW.delivered_at := NULL;
    ELSIF NEW.status IN ('sent', 'delivered', 'read') AND NEW.sent_at IS NULL THEN
        NEW.sent_at := statement_timestamp();
    END IF;
    IF NEW.status = 'delivered' AND NEW.delivered_at IS NULL THEN
        NEW.delivered_at := statement_timestamp();
    END IF;
    RETURN NEW;
END
$$;
"""


def upgrade() -> None:
    op.add_column("messages", sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True), schema=S)
    op.add_column("messages", sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True), schema=S)
    op.add_column("messages", sa.Column("wait_reason", sa.Text(), nullable=True), schema=S)
    op.add_column("messages", sa.Column("wait_until", sa.DateTime(timezone=True), nullable=True), schema=S)
    op.add_column("messages", sa.Column("sent_content", pg.JSONB(), nullable=True), schema=S)
    op.execute(STAMP)
    op.execute(
        "CREATE TRIGGER messages_stamp_status_times BEFORE UPDATE OF status ON sender.messages "
        "FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status) "
        "EXECUTE FUNCTION sender.stamp_status_times()"
    )
    # messages sent before this revision: their times from the history (once)
    op.execute(
        """
        UPDATE sender.messages m SET
            sent_at = (SELECT min(h.at) FROM sender.message_history h
                       WHERE h.message_id = m.id AND h.status = 'sent'),
            delivered_at = (SELECT min(h.at) FROM sender.message_history h
                            WHERE h.message_id = m.id AND h.status = 'delivered')
        WHERE m.status IN ('sent', 'delivered', 'read')
        """
    )
    op.create_index(
        "ix_messages_analytics",
        "messages",
        ["tenant_id", "created_at"],
        postgresql_include=["status", "channel_id", "origin", "error_code", "sent_at", "delivered_at"],
        schema=S,
    )
    op.create_index(
        "ix_messages_failed",
        "messages",
        ["tenant_id", "created_at"],
        postgresql_include=["error_code", "provider"],
        postgresql_where=sa.text("status = 'failed'"),
        schema=S,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_failed", table_name="messages", schema=S)
    op.drop_index("ix_messages_analytics", table_name="messages", schema=S)
    op.execute("DROP TRIGGER IF EXISTS messages_stamp_status_times ON sender.messages")
    op.execute("DROP FUNCTION IF EXISTS sender.stamp_status_times()")
    for column in ("sent_content", "wait_until", "wait_reason", "delivered_at", "sent_at"):
        op.drop_column("messages", column, schema=S)
