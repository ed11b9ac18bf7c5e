"""Folding the analytics deltas into the rollup (migrations 0011 and 0012).

Every ``analytics_rollup_seconds`` a sender takes the oldest deltas (at most
``analytics_rollup_batch`` a round, until none are left), adds them up per (tenant, level, bucket,
dim) and writes the sums into ``analytics_rollup``, deleting the deltas in the same transaction.
One process at a time: the round holds a transaction-level advisory lock, and another sender's
round simply skips. The failure deltas (0012) are folded into ``analytics_failures`` in the
same round and transaction. The figures are exact whether a round has run or not (a query adds the
deltas still pending), so a slow or stopped fold only makes queries read more rows.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.sender.analytics import FIELDS, add_cell, add_row, blank, histograms
from services.sender.metrics import ROLLUP_FOLDED, ROLLUP_SECONDS
from services.sender.repository.analytics import DAY, DIMS, HOUR, level

log = structlog.get_logger()

#: pg_try_advisory_xact_lock key of the fold ("herald rollup")
LOCK = 0x6865_7261_6C64_7275

_TAKE = """
WITH gone AS (
    DELETE FROM sender.analytics_deltas
    WHERE id IN (SELECT id FROM sender.analytics_deltas ORDER BY id LIMIT :batch)
    RETURNING *
)
SELECT tenant_id, date_trunc('hour', created_at, 'UTC') AS hour, channel_id, template, origin, qb, db,
       sum(n) AS n, sum(sent) AS sent, sum(delivered) AS delivered, sum(read) AS read,
       sum(failed) AS failed, coalesce(sum(n * q_ms), 0) AS q_sum,
       coalesce(sum(n) FILTER (WHERE q_ms IS NOT NULL), 0) AS q_n, count(*) AS deltas
FROM gone
GROUP BY 1, 2, 3, 4, 5, 6, 7
"""

_CURRENT = """
SELECT r.tenant_id, r.level, r.bucket, r.dim, r.n, r.sent, r.delivered, r.read, r.failed, r.q_sum, r.q_n,
       r.q_bins, r.q_counts, r.d_bins, r.d_counts
FROM sender.analytics_rollup r
JOIN unnest(CAST(:tenants AS uuid[]), CAST(:levels AS smallint[]), CAST(:buckets AS timestamptz[]),
            CAST(:dims AS text[])) AS k(tenant_id, level, bucket, dim)
  ON r.tenant_id = k.tenant_id AND r.level = k.level AND r.bucket = k.bucket AND r.dim = k.dim
"""

_UPSERT = """
INSERT INTO sender.analytics_rollup (tenant_id, level, bucket, dim, n, sent, delivered, read, failed, q_sum,
    q_n, q_bins, q_counts, d_bins, d_counts)
VALUES (:tenant_id, :level, :bucket, :dim, :n, :sent, :delivered, :read, :failed, :q_sum, :q_n, :q_bins,
    :q_counts, :d_bins, :d_counts)
ON CONFLICT (tenant_id, level, bucket, dim) DO UPDATE SET
    n = EXCLUDED.n, sent = EXCLUDED.sent, delivered = EXCLUDED.delivered, read = EXCLUDED.read,
    failed = EXCLUDED.failed, q_sum = EXCLUDED.q_sum, q_n = EXCLUDED.q_n, q_bins = EXCLUDED.q_bins,
    q_counts = EXCLUDED.q_counts, d_bins = EXCLUDED.d_bins, d_counts = EXCLUDED.d_counts
"""

_DELETE = """
DELETE FROM sender.analytics_rollup
WHERE (tenant_id, level, bucket, dim) IN (
    SELECT * FROM unnest(CAST(:tenants AS uuid[]), CAST(:levels AS smallint[]),
                         CAST(:buckets AS timestamptz[]), CAST(:dims AS text[])))
"""

#: the oldest failure deltas added into their hour and day rows; the rows left at 0 are returned
_FAILURES = """
WITH gone AS (
    DELETE FROM sender.analytics_failure_deltas
    WHERE id IN (SELECT id FROM sender.analytics_failure_deltas ORDER BY id LIMIT :batch)
    RETURNING tenant_id, created_at, code, meta, reason, n
), cells AS (
    SELECT tenant_id, g.level, date_trunc(CASE g.level WHEN 0 THEN 'hour' ELSE 'day' END, created_at, 'UTC')
               AS bucket,
           code, sum(n)::int AS n, coalesce(sum(n) FILTER (WHERE meta), 0)::int AS meta_n,
           max(reason) FILTER (WHERE n > 0) AS reason, count(*) AS deltas
    FROM gone CROSS JOIN (VALUES (0::smallint), (1::smallint)) AS g(level)
    GROUP BY 1, 2, 3, 4
), up AS (
    INSERT INTO sender.analytics_failures AS f (tenant_id, level, bucket, code, n, meta_n, reason)
    SELECT tenant_id, level, bucket, code, n, meta_n, reason FROM cells
    ON CONFLICT (tenant_id, level, bucket, code) DO UPDATE SET
        n = f.n + EXCLUDED.n, meta_n = f.meta_n + EXCLUDED.meta_n,
        reason = coalesce(EXCLUDED.reason, f.reason)
    RETURNING f.tenant_id, f.level, f.bucket, f.code, f.n
)
SELECT (SELECT coalesce(sum(deltas), 0) FROM cells WHERE level = 0) AS folded,
       (SELECT coalesce(json_agg(json_build_object('tenant_id', tenant_id, 'level', level, 'bucket', bucket,
                                                   'code', code)), '[]')
        FROM up WHERE n = 0) AS empty
"""

_FAILURES_EMPTY = """
DELETE FROM sender.analytics_failures f
USING unnest(CAST(:tenants AS uuid[]), CAST(:levels AS smallint[]), CAST(:buckets AS timestamptz[]),
             CAST(:codes AS text[])) AS k(tenant_id, level, bucket, code)
WHERE f.tenant_id = k.tenant_id AND f.level = k.level AND f.bucket = k.bucket
  AND f.code IS NOT DISTINCT FROM k.code AND f.n = 0
"""

Key = tuple[Any, int, datetime, str]


def _keys(cell: Any) -> list[Key]:
    """The eight rollup rows one delta cell adds to: per hour and per day, for the totals and for
    its channel, template and origin."""
    day = cell.hour.replace(hour=0)
    values = {
        "none": "",
        "channel": "" if cell.channel_id is None else str(cell.channel_id),
        "template": cell.template or "",
        "origin": cell.origin,
    }
    return [
        (cell.tenant_id, level(granularity, dim), bucket, values[dim])
        for granularity, bucket in ((HOUR, cell.hour), (DAY, day))
        for dim in DIMS
    ]


async def _fold_failures(conn: AsyncConnection, batch: int) -> int:
    """Fold at most ``batch`` failure deltas (0012); the number folded."""
    folded, empty = (await conn.execute(sa.text(_FAILURES), {"batch": batch})).one()
    if empty:
        await conn.execute(
            sa.text(_FAILURES_EMPTY),
            {
                "tenants": [uuid.UUID(e["tenant_id"]) for e in empty],
                "levels": [e["level"] for e in empty],
                "buckets": [datetime.fromisoformat(e["bucket"]) for e in empty],
                "codes": [e["code"] for e in empty],
            },
        )
    return int(folded)


async def fold_once(engine: AsyncEngine, batch: int = 20_000) -> int | None:
    """One round: fold at most ``batch`` deltas of each kind (figures and failures). The number
    folded, or None when another process holds the fold."""
    async with engine.begin() as conn:
        if not await conn.scalar(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": LOCK}):
            return None
        failures = await _fold_failures(conn, batch)
        cells = (await conn.execute(sa.text(_TAKE), {"batch": batch})).all()
        if not cells:
            return failures
        sums: dict[Key, dict[str, Any]] = {}
        for cell in cells:
            for key in _keys(cell):
                a = sums.get(key)
                if a is None:
                    a = sums[key] = blank()
                add_cell(a, cell)
        keys = list(sums)
        columns = {
            "tenants": [k[0] for k in keys],
            "levels": [k[1] for k in keys],
            "buckets": [k[2] for k in keys],
            "dims": [k[3] for k in keys],
        }
        for r in (await conn.execute(sa.text(_CURRENT), columns)).all():
            add_row(sums[(r.tenant_id, r.level, r.bucket.astimezone(UTC), r.dim)], r)
        upserts, empty = [], []
        for key, a in sums.items():
            if a["n"] == 0:  # every message of it moved elsewhere
                empty.append(key)
                continue
            q, d = histograms(a)
            upserts.append(
                {
                    "tenant_id": key[0],
                    "level": key[1],
                    "bucket": key[2],
                    "dim": key[3],
                    **{f: a[f] for f in FIELDS},
                    "q_sum": a["q_sum"],
                    "q_bins": [b for b, _ in q],
                    "q_counts": [n for _, n in q],
                    "d_bins": [b for b, _ in d],
                    "d_counts": [n for _, n in d],
                }
            )
        if upserts:
            await conn.execute(sa.text(_UPSERT), upserts)
        if empty:
            await conn.execute(
                sa.text(_DELETE),
                {
                    "tenants": [k[0] for k in empty],
                    "levels": [k[1] for k in empty],
                    "buckets": [k[2] for k in empty],
                    "dims": [k[3] for k in empty],
                },
            )
        return failures + sum(int(c.deltas) for c in cells)


async def fold_all(engine: AsyncEngine, batch: int = 20_000) -> int:
    """Rounds until no delta is left (or another process holds the fold): the number folded."""
    total = 0
    while True:
        folded = await fold_once(engine, batch)
        if not folded:
            return total
        total += folded
        if folded < batch:
            return total


async def fold_forever(engine: AsyncEngine, stopping: asyncio.Event, interval: float, batch: int) -> None:
    """The sender's loop: ``fold_all`` every ``interval`` seconds (0: never; queries stay exact,
    reading the pending deltas)."""
    if interval <= 0:
        return
    while not stopping.is_set():
        started = time.perf_counter()
        try:
            folded = await fold_all(engine, batch)
            if folded:
                ROLLUP_FOLDED.inc(folded)
                ROLLUP_SECONDS.observe(time.perf_counter() - started)
        except Exception as exc:  # the database is away: the next round tries again
            log.warning("analytics fold failed", error=repr(exc)[:300])
        try:
            await asyncio.wait_for(stopping.wait(), timeout=interval)
        except TimeoutError:
            pass
