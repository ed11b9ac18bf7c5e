"""analytics failures rollup: the top failure codes read pre-added counts, like the other figures

The analytics' top failures (the commonest error codes of a period, whether Meta gave each, and a
reason stored with it) were still counted from the period's failed messages on every query: on a
big tenant nearly all of the query's time. They are now kept the way 0011 keeps the figures:

- ``analytics_failure_deltas``: a signed row per failed message entering or leaving the figures,
  written by triggers in the statement that changes the message — +1 of (tenant, created_at,
  code, meta, reason) when a message is inserted failed or becomes failed, -1 of its old state when
  it stops being failed (a replay) or its code, provider, tenant or created_at changes while
  failed, -1 when it is deleted. A message that is not failed writes nothing here.
- ``analytics_failures``: a row per (tenant, level, bucket, code), level 0 a UTC hour and 1 a
  UTC day, with the count, how many of them Meta gave (``meta_n``) and one reason (a sample: the
  newest folded in; it is not taken back when its message stops being failed). The code may be
  null (a failure without one), so the key is unique with NULLS NOT DISTINCT (PostgreSQL 15+).

The sender folds these deltas in the same transaction as 0011's (services.sender.rollup); a query
adds the rollup rows of its period to the deltas not folded yet, in one snapshot.

The messages failed already are entered as deltas here and folded by the first sender to start.

Revision ID: 0012_sender
Revises: 0011_sender
Create Date: 2026-12-06 04:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012_sender"
down_revision: str | None = "0011_sender"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = "tenant_id, created_at, code, meta, reason, n"


def _state(r: str, sign: str) -> str:
    """The failure delta columns of a message row ``r`` (OLD, NEW, or a transition table's alias)."""
    return (
        f"{r}.tenant_id, {r}.created_at, {r}.error_code, coalesce({r}.provider = 'meta', false), "
        f"{r}.status_reason, {sign}"
    )


FUNCTIONS = [
    *(
        f"""
CREATE OR REPLACE FUNCTION sender.analytics_failures_{name}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sender.analytics_failure_deltas ({COLUMNS})
    SELECT {_state("r", sign)} FROM {table} r WHERE r.status = 'failed';
    RETURN NULL;
END
$$;
"""
        for name, table, sign in (("inserts", "inserted", "1"), ("deletes", "deleted", "-1"))
    ),
    f"""
CREATE OR REPLACE FUNCTION sender.analytics_failures_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'failed' THEN
        INSERT INTO sender.analytics_failure_deltas ({COLUMNS}) VALUES ({_state("OLD", "-1")});
    END IF;
    IF NEW.status = 'failed' THEN
        INSERT INTO sender.analytics_failure_deltas ({COLUMNS}) VALUES ({_state("NEW", "1")});
    END IF;
    RETURN NULL;
END
$$;
""",
]

# only a change that involves a failed message and moves its failure's key fires the function
CHANGED = (
    "(OLD.status = 'failed' OR NEW.status = 'failed') AND ("
    + " OR ".join(
        f"OLD.{c} IS DISTINCT FROM NEW.{c}"
        for c in ("status", "error_code", "provider", "created_at", "tenant_id")
    )
    + ")"
)


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE sender.analytics_failure_deltas (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tenant_id uuid NOT NULL,
            created_at timestamptz NOT NULL,
            code text,
            meta boolean NOT NULL,
            reason text,
            n smallint NOT NULL
        )
        """
    )
    op.execute(
        """
        CREATE TABLE sender.analytics_failures (
            tenant_id uuid NOT NULL,
            level smallint NOT NULL,
            bucket timestamptz NOT NULL,
            code text,
            n integer NOT NULL,
            meta_n integer NOT NULL,
            reason text,
            CONSTRAINT uq_analytics_failures UNIQUE NULLS NOT DISTINCT (tenant_id, level, bucket, code)
        )
        """
    )
    for statement in FUNCTIONS:
        op.execute(statement)
    op.execute(
        "CREATE TRIGGER messages_analytics_failures_inserts AFTER INSERT ON sender.messages "
        "REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT "
        "EXECUTE FUNCTION sender.analytics_failures_inserts()"
    )
    op.execute(
        "CREATE TRIGGER messages_analytics_failures_deletes AFTER DELETE ON sender.messages "
        "REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT "
        "EXECUTE FUNCTION sender.analytics_failures_deletes()"
    )
    op.execute(
        "CREATE TRIGGER messages_analytics_failures_change AFTER UPDATE ON sender.messages "
        f"FOR EACH ROW WHEN ({CHANGED}) EXECUTE FUNCTION sender.analytics_failures_change()"
    )
    op.execute(
        f"INSERT INTO sender.analytics_failure_deltas ({COLUMNS}) "
        f"SELECT {_state('r', '1')} FROM sender.messages r WHERE r.status = 'failed'"
    )


def downgrade() -> None:
    for event in ("change", "deletes", "inserts"):
        op.execute(f"DROP TRIGGER IF EXISTS messages_analytics_failures_{event} ON sender.messages")
        op.execute(f"DROP FUNCTION IF EXISTS sender.analytics_failures_{event}()")
    op.execute("DROP TABLE IF EXISTS sender.analytics_failures")
    op.execute("DROP TABLE IF EXISTS sender.analytics_failure_deltas")
