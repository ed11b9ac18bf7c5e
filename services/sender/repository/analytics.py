"""Queries of the delivery analytics: one aggregate over a tenant's messages of a period (groups
and totals in one scan of ``ix_messages_analytics``), and the top failure codes; and the same read
from the rollups (migrations 0011 and 0012) for a zone whose offsets are whole hours."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.sender import analytics
from services.sender.models import messages as m

#: histogram resolution: a bucket spans a factor of e^(1/BUCKETS_PER_E) ≈ 5 %
BUCKETS_PER_E = 20


def _key(group_by: str, tz: str) -> sa.ColumnElement[Any]:
    local = sa.func.timezone(sa.literal(tz, sa.Text), m.c.created_at)  # created_at AT TIME ZONE tz
    if group_by == "day":
        return sa.cast(local, sa.Date)
    if group_by == "hour":
        return sa.func.date_trunc("hour", local)
    if group_by == "channel":
        return m.c.channel_id
    if group_by == "origin":
        return m.c.origin
    if group_by == "template":
        # the template that went out (a fallback), else the one requested; null: not a template
        content = sa.func.coalesce(m.c.sent_content, m.c.content)
        return sa.case((content["kind"].astext == "template", content["name"].astext), else_=None)
    raise ValueError(group_by)


def _in_period(tenant_id: uuid.UUID, since: datetime, until: datetime) -> tuple[sa.ColumnElement[bool], ...]:
    return (m.c.tenant_id == tenant_id, m.c.created_at >= since, m.c.created_at < until)


def _ms(later: sa.ColumnElement[Any], earlier: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    # date_part is double precision (EXTRACT is numeric: several times slower per row)
    return sa.func.date_part("epoch", later - earlier) * 1000.0


def _bucket(ms: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """The log-scale histogram bucket of a duration (≥ 1 ms): floor(ln(ms) · BUCKETS_PER_E); null
    when the duration is (not sent, not delivered). GREATEST ignores nulls, so ``greatest(null, 1)``
    would put every message that never went out in the 1 ms bucket and drag the percentiles down."""
    bucket = sa.cast(sa.func.floor(sa.func.ln(sa.func.greatest(ms, 1.0)) * BUCKETS_PER_E), sa.Integer)
    return sa.case((ms.is_(None), sa.null()), else_=bucket)


async def message_figures(
    conn: AsyncConnection, tenant_id: uuid.UUID, since: datetime, until: datetime, group_by: str, tz: str
) -> list[dict[str, Any]]:
    """The tenant's messages created in [since, until), per group key: the counts, the sum of
    the queue times, and the histograms of queue time (``q_buckets``/``q_counts``) and delivery
    time (``d_buckets``/``d_counts``). One scan hashed into (key, queue bucket) and (key,
    delivery bucket) cells, then small aggregates of those: nothing is sorted row by row, and percentiles are read off
    the histograms (services.sender.analytics)."""
    q = _ms(m.c.sent_at, m.c.created_at)
    rows = (
        sa.select(
            _key(group_by, tz).label("key"),
            _bucket(q).label("qb"),
            _bucket(_ms(m.c.delivered_at, m.c.sent_at)).label("db"),
            m.c.status,
            m.c.sent_at,
            q.label("q"),
        )
        .where(*_in_period(tenant_id, since, until))
        .subquery("m")
    )
    r = rows.c
    scan = (
        sa.select(
            r.key,
            r.qb,
            r.db,
            sa.func.count().label("n"),
            sa.func.count(r.sent_at).label("sent"),
            sa.func.count().filter(r.status.in_(("delivered", "read"))).label("delivered"),
            sa.func.count().filter(r.status == "read").label("read"),
            sa.func.count().filter(r.status == "failed").label("failed"),
            sa.func.sum(r.q).label("q_sum"),
            sa.func.count(r.q).label("q_n"),
            sa.func.grouping(r.qb).label("by_db"),  # 1: a (key, db) cell
        )
        # two hashed grouping sets, not their product: every row is in one (key, qb) cell
        # (qb null: not sent), which carries the counts, and in one (key, db) cell
        .group_by(sa.func.grouping_sets(sa.tuple_(r.key, r.qb), sa.tuple_(r.key, r.db)))
        .cte("c")
    )

    def histogram(bucket: sa.ColumnElement[Any], name: str) -> sa.Subquery:
        cells = (
            sa.select(scan.c.key, bucket.label("b"), sa.func.sum(scan.c.n).label("n"))
            .where(bucket.is_not(None), scan.c.by_db == (1 if name == "d" else 0))
            .group_by(scan.c.key, bucket)
            .subquery()
        )
        return (
            sa.select(
                cells.c.key,
                sa.func.array_agg(pg.aggregate_order_by(cells.c.b, cells.c.b)).label(f"{name}_buckets"),
                sa.func.array_agg(pg.aggregate_order_by(cells.c.n, cells.c.b)).label(f"{name}_counts"),
            )
            .group_by(cells.c.key)
            .subquery(name)
        )

    counts = (
        sa.select(
            scan.c.key,
            *(
                sa.func.sum(scan.c[f]).label(f)
                for f in ("n", "sent", "delivered", "read", "failed", "q_sum", "q_n")
            ),
        )
        .where(scan.c.by_db == 0)
        .group_by(scan.c.key)
        .subquery("counts")
    )
    qh, dh = histogram(scan.c.qb, "q"), histogram(scan.c.db, "d")
    stmt = sa.select(counts, qh.c.q_buckets, qh.c.q_counts, dh.c.d_buckets, dh.c.d_counts).select_from(
        counts.outerjoin(qh, qh.c.key.is_not_distinct_from(counts.c.key)).outerjoin(
            dh, dh.c.key.is_not_distinct_from(counts.c.key)
        )
    )
    return [dict(r._mapping) for r in await conn.execute(stmt)]


async def top_failures(
    conn: AsyncConnection, tenant_id: uuid.UUID, since: datetime, until: datetime, limit: int
) -> list[dict[str, Any]]:
    """The commonest failure codes of the period (``ix_messages_failed``): code, count, whether
    Meta gave it, and one reason stored with it."""
    top = (
        sa.select(
            m.c.error_code.label("code"),
            sa.func.count().label("count"),
            sa.func.coalesce(sa.func.bool_or(m.c.provider == "meta"), False).label("meta"),
        )
        .where(*_in_period(tenant_id, since, until), m.c.status == "failed")
        .group_by(m.c.error_code)
        .order_by(sa.func.count().desc(), m.c.error_code)
        .limit(limit)
        .subquery("top")
    )
    reason = (
        sa.select(m.c.status_reason)
        .where(
            *_in_period(tenant_id, since, until),
            m.c.status == "failed",
            m.c.error_code.is_not_distinct_from(top.c.code),
        )
        .limit(1)
        .scalar_subquery()
    )
    stmt = sa.select(top, reason.label("reason")).order_by(top.c.count.desc(), top.c.code)
    return [dict(r._mapping) for r in await conn.execute(stmt)]


# --- the rollup (migration 0011): pre-added figures per (tenant, level, bucket, dim) ---------------

#: a rollup level is granularity * 4 + dimension
HOUR, DAY = 0, 1
DIMS: dict[str, int] = {"none": 0, "channel": 1, "template": 2, "origin": 3}


def level(granularity: int, dim: str) -> int:
    return granularity * 4 + DIMS[dim]


#: the deltas not folded yet, as cells per UTC hour and dimension value (``:dim`` is a column)
_PENDING = """
SELECT date_trunc('hour', created_at, 'UTC') AS hour, {dim} AS dim, qb, db,
       sum(n) AS n, sum(sent) AS sent, sum(delivered) AS delivered, sum(read) AS read,
       sum(failed) AS failed, coalesce(sum(n * q_ms), 0) AS q_sum,
       coalesce(sum(n) FILTER (WHERE q_ms IS NOT NULL), 0) AS q_n
FROM sender.analytics_deltas
WHERE tenant_id = :tenant AND created_at >= :since AND created_at < :until
GROUP BY 1, 2, 3, 4
"""
_DIM_COLUMN = {
    "none": "''",
    "channel": "coalesce(channel_id::text, '')",
    "template": "coalesce(template, '')",
    "origin": "origin",
}

_ROLLED = """
SELECT level, bucket, dim, n, sent, delivered, read, failed, q_sum, q_n, q_bins, q_counts, d_bins, d_counts
FROM sender.analytics_rollup
WHERE tenant_id = :tenant
  AND ((level = :hour_level AND bucket = ANY(:hours)) OR (level = :day_level AND bucket = ANY(:days)))
"""


async def rollup_figures(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    since: datetime,
    until: datetime,
    dim: str,
    pieces: dict[tuple[int, datetime], list[tuple[int, Any]]],
) -> tuple[list[Any], list[Any]]:
    """The rollup rows the ``pieces`` name ((granularity, UTC bucket) → [(sign, key)]) and the
    pending deltas of [since, until) for dimension ``dim``. Run both in one snapshot (REPEATABLE
    READ): a fold commits the deltas' removal and the rollup's change together."""
    hours = [b for g, b in pieces if g == HOUR]
    days = [b for g, b in pieces if g == DAY]
    rolled = (
        await conn.execute(
            sa.text(_ROLLED),
            {
                "tenant": tenant_id,
                "hour_level": level(HOUR, dim),
                "day_level": level(DAY, dim),
                "hours": hours,
                "days": days,
            },
        )
    ).all()
    pending = (
        await conn.execute(
            sa.text(_PENDING.format(dim=_DIM_COLUMN[dim])),
            {"tenant": tenant_id, "since": since, "until": until},
        )
    ).all()
    return rolled, pending


#: the top failure codes of the period from the failures rollup (migration 0012): its rows signed
#: by the period's pieces, plus the failure deltas not folded yet; ordered as ``top_failures``
_ROLLED_FAILURES = """
WITH p AS (
    SELECT * FROM unnest(CAST(:levels AS smallint[]), CAST(:buckets AS timestamptz[]), CAST(:signs AS int[]))
        AS p(level, bucket, sign)
), f AS (
    SELECT r.code, p.sign * r.n AS n, p.sign * r.meta_n AS meta_n, CASE WHEN p.sign > 0 THEN r.reason END AS reason
    FROM sender.analytics_failures r JOIN p ON r.level = p.level AND r.bucket = p.bucket
    WHERE r.tenant_id = :tenant
    UNION ALL
    SELECT code, n, CASE WHEN meta THEN n ELSE 0 END, CASE WHEN n > 0 THEN reason END
    FROM sender.analytics_failure_deltas
    WHERE tenant_id = :tenant AND created_at >= :since AND created_at < :until
)
SELECT code, sum(n) AS count, sum(meta_n) > 0 AS meta, max(reason) AS reason
FROM f
GROUP BY code
HAVING sum(n) > 0
ORDER BY count DESC, code
LIMIT :limit
"""


async def rollup_top_failures(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    since: datetime,
    until: datetime,
    pieces: list[tuple[int, datetime, int]],
    limit: int,
) -> list[dict[str, Any]]:
    """``top_failures`` of [since, until) from the failures rollup: ``pieces`` are the period's
    (granularity, UTC bucket, sign) (``analytics.decompose``). Run it in the snapshot of
    ``rollup_figures``: a fold moves failure deltas into the rollup in one transaction."""
    rows = await conn.execute(
        sa.text(_ROLLED_FAILURES),
        {
            "tenant": tenant_id,
            "since": since,
            "until": until,
            "levels": [g for g, _, _ in pieces],
            "buckets": [b for _, b, _ in pieces],
            "signs": [s for _, _, s in pieces],
            "limit": limit,
        },
    )
    return [dict(r._mapping) for r in rows]


async def read(
    engine: AsyncEngine, tenant_id: uuid.UUID, period: analytics.Period, group_by: str, scan: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``GET /v1/analytics/messages``'s figures (the rows ``analytics.combine`` reads) and top
    failures: from the rollups and pending deltas in one REPEATABLE READ snapshot when the period's
    buckets are whole UTC hours (``analytics.plan``), else (or with ``scan``) from the messages."""
    since, until = period.since, period.until
    pieces = None if scan else analytics.plan(period, group_by)
    async with engine.connect() as conn:
        if pieces is None:  # a zone that cuts hours in two: from the messages themselves
            rows = await message_figures(conn, tenant_id, since, until, group_by, period.tz)
            failures = await top_failures(conn, tenant_id, since, until, analytics.TOP_FAILURES)
            return rows, failures
        # one snapshot: a fold moves deltas into the rollups in one transaction
        await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            rolled, pending = await rollup_figures(
                conn, tenant_id, since, until, analytics.dimension(group_by), pieces
            )
            failures = await rollup_top_failures(
                conn, tenant_id, since, until, analytics.decompose(since, until), analytics.TOP_FAILURES
            )
    return analytics.fold(rolled, pending, pieces, group_by, period.zone), failures
