"""analytics rollup: the delivery analytics read pre-added figures instead of every message

A message's contribution to the figures (requested, sent, delivered, read, failed, its queue and
delivery times) is kept as signed rows in ``analytics_deltas``, written by triggers in the very
statement that inserts or changes the message: +1 of its state on insert, and on a change that
moves a figure, -1 of the old state and +1 of the new. Nothing is updated in place, so no two
transactions ever wait on one another for it (a counter row per hour would be a hot row that
every send of a tenant locks until commit).

The sender folds the deltas into ``analytics_rollup`` every couple of seconds (one process at a
time, ``services.sender.rollup``): a row per (tenant, level, bucket, dim) where the level is the
granularity (a UTC hour or a UTC day) times the dimension (none, channel, template, origin), with
the counts, the queue-time sum and the two log-scale histograms as sparse arrays. A query adds the
rollup rows of its period to the deltas not folded yet, in one snapshot: the figures are exact
at any moment, whether the folding is behind or not.

The messages already stored are entered as deltas here and folded by the first sender to start.

Revision ID: 0011_sender
Revises: 0010_sender
Create Date: 2026-12-05 12:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011_sender"
down_revision: str | None = "0010_sender"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    "tenant_id, created_at, channel_id, template, origin, n, sent, delivered, read, failed, q_ms, qb, db"
)


def _state(r: str, sign: str) -> str:
    """The delta columns of a message row ``r`` (OLD, NEW, or a transition table's alias)."""
    q = f"sender.analytics_ms({r}.sent_at, {r}.created_at)"
    return (
        f"{r}.tenant_id, {r}.created_at, {r}.channel_id, "
        f"sender.analytics_template({r}.content, {r}.sent_content), {r}.origin, {sign}, "
        f"{sign} * ({r}.sent_at IS NOT NULL)::int, {sign} * ({r}.status IN ('delivered', 'read'))::int, "
        f"{sign} * ({r}.status = 'read')::int, {sign} * ({r}.status = 'failed')::int, "
        f"{q}, sender.analytics_bucket({q}), "
        f"sender.analytics_bucket(sender.analytics_ms({r}.delivered_at, {r}.sent_at))"
    )


FUNCTIONS = [
    """
CREATE OR REPLACE FUNCTION sender.analytics_ms(later timestamptz, earlier timestamptz)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT date_part('epoch', later - earlier) * 1000.0 $$;
""",
    """
-- floor(ln(ms) * 20): the histogram bucket of services.sender.repository.analytics (BUCKETS_PER_E)
CREATE OR REPLACE FUNCTION sender.analytics_bucket(ms double precision)
RETURNS smallint LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN ms IS NULL THEN NULL ELSE floor(ln(greatest(ms, 1.0)) * 20)::smallint END $$;
""",
    """
-- the template that went out (a fallback), else the one requested; null: not a template
CREATE OR REPLACE FUNCTION sender.analytics_template(content jsonb, sent_content jsonb)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN coalesce(sent_content, content)->>'kind' = 'template'
                  THEN coalesce(sent_content, content)->>'name' END $$;
""",
    *(
        f"""
CREATE OR REPLACE FUNCTION sender.analytics_record_{name}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sender.analytics_deltas ({COLUMNS}) SELECT {_state("r", sign)} FROM {table} r;
    RETURN NULL;
END
$$;
"""
        for name, table, sign in (("inserts", "inserted", "1"), ("deletes", "deleted", "-1"))
    ),
    f"""
CREATE OR REPLACE FUNCTION sender.analytics_record_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sender.analytics_deltas ({COLUMNS})
    VALUES ({_state("OLD", "-1")}), ({_state("NEW", "1")});
    RETURN NULL;
END
$$;
""",
]

# a change that moves none of the figures (queued -> sending, a retry's backoff, a lease) writes nothing
CHANGED = " OR ".join(
    [
        f"OLD.{c} IS DISTINCT FROM NEW.{c}"
        for c in ("sent_at", "delivered_at", "channel_id", "origin", "created_at", "tenant_id")
    ]
    + [
        "(OLD.status IN ('delivered', 'read')) IS DISTINCT FROM (NEW.status IN ('delivered', 'read'))",
        "(OLD.status = 'read') IS DISTINCT FROM (NEW.status = 'read')",
        "(OLD.status = 'failed') IS DISTINCT FROM (NEW.status = 'failed')",
        "sender.analytics_template(OLD.content, OLD.sent_content) IS DISTINCT FROM "
        "sender.analytics_template(NEW.content, NEW.sent_content)",
    ]
)


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE sender.analytics_deltas (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tenant_id uuid NOT NULL,
            created_at timestamptz NOT NULL,
            channel_id uuid,
            template text,
            origin text NOT NULL,
            n smallint NOT NULL,
            sent smallint NOT NULL,
            delivered smallint NOT NULL,
            read smallint NOT NULL,
            failed smallint NOT NULL,
            q_ms double precision,
            qb smallint,
            db smallint
        )
        """
    )
    op.execute(
        """
        CREATE TABLE sender.analytics_rollup (
            tenant_id uuid NOT NULL,
            level smallint NOT NULL,
            bucket timestamptz NOT NULL,
            dim text NOT NULL,
            n integer NOT NULL,
            sent integer NOT NULL,
            delivered integer NOT NULL,
            read integer NOT NULL,
            failed integer NOT NULL,
            q_sum double precision NOT NULL,
            q_n integer NOT NULL,
            q_bins smallint[] NOT NULL,
            q_counts integer[] NOT NULL,
            d_bins smallint[] NOT NULL,
            d_counts integer[] NOT NULL,
            PRIMARY KEY (tenant_id, level, bucket, dim)
        )
        """
    )
    for statement in FUNCTIONS:
        op.execute(statement)
    op.execute(
        "CREATE TRIGGER messages_analytics_inserts AFTER INSERT ON sender.messages "
        "REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT "
        "EXECUTE FUNCTION sender.analytics_record_inserts()"
    )
    op.execute(  # Herald deletes no message; an operator's manual purge leaves the figures exact
        "CREATE TRIGGER messages_analytics_deletes AFTER DELETE ON sender.messages "
        "REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT "
        "EXECUTE FUNCTION sender.analytics_record_deletes()"
    )
    op.execute(
        "CREATE TRIGGER messages_analytics_change AFTER UPDATE ON sender.messages "
        f"FOR EACH ROW WHEN ({CHANGED}) EXECUTE FUNCTION sender.analytics_record_change()"
    )
    op.execute(
        f"INSERT INTO sender.analytics_deltas ({COLUMNS}) SELECT {_state('r', '1')} FROM sender.messages r"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS messages_analytics_change ON sender.messages")
    op.execute("DROP TRIGGER IF EXISTS messages_analytics_deletes ON sender.messages")
    op.execute("DROP TRIGGER IF EXISTS messages_analytics_inserts ON sender.messages")
    for fn in (
        "analytics_record_change()",
        "analytics_record_deletes()",
        "analytics_record_inserts()",
        "analytics_template(jsonb, jsonb)",
        "analytics_bucket(double precision)",
        "analytics_ms(timestamptz, timestamptz)",
    ):
        op.execute(f"DROP FUNCTION IF EXISTS sender.{fn}")
    op.execute("DROP TABLE IF EXISTS sender.analytics_rollup")
    op.execute("DROP TABLE IF EXISTS sender.analytics_deltas")
