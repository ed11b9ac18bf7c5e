"""Benchmark of the sender's delivery analytics on a large table.

Run::

    scripts/uv run --frozen python -m bench.analytics [--messages 1000000] [--days 90] [--runs 30] [--hot-rounds 3]

It starts its own PostgreSQL (``devtools.infra``, or the server named by HERALD_TEST_DATABASE_URL),
a migrated database, and seeds ``sender.messages`` with ``--messages`` rows over ``--days`` days in
one ``INSERT … SELECT FROM generate_series`` (5 tenants holding 40/25/15/10/10 %, 3 channels each,
8 templates, origins api/scheduler/pipeline; statuses 45 % read, 30 % delivered, 12 % sent,
8 % failed with six codes, 5 % queued/sending; queue and delivery times drawn per row), then
``VACUUM ANALYZE``. It runs the queries of ``GET /v1/analytics/messages``
(``services.sender.repository.analytics``: the figures with groups and totals, and the top
failures) for the biggest tenant, Europe/Lisbon, ``--runs`` times each:

1. the last 30 days by day, 2. the last 30 days by template, 3. the 90 days by day (for scale);

and prints p50/p95 of each, **with** the 0005 index (``ix_messages_analytics``) and, in the same
run, **without** it (dropped inside a transaction that is rolled back, so the planner falls back
to the older ``ix_messages_tenant_created``), with the ratio. Target: p95 ≤ 100 ms.

4. **hot path** (``--hot-rounds``): what 0005 costs the sender's writes — 4,000 messages inserted
   100 per transaction, then moved queued → sending → sent → delivered 100 per statement, with the
   0005 trigger and indexes and without them (dropped), alternately: ms per message at PostgreSQL.

A program that prints figures, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from devtools.database import create_migrated_database, drop_database
from devtools.infra import resolve_infra
from services.sender import analytics
from services.sender.repository import analytics as queries

TENANTS = [uuid.UUID(int=i + 1) for i in range(5)]
TZ = "Europe/Lisbon"

SEED = """
INSERT INTO sender.messages (
    id, tenant_id, request_hash, recipient_enc, recipient_hash, content, channel_id, priority, origin,
    status, status_reason, provider, provider_message_id, attempts, not_before, error_code, dead_letter,
    created_at, updated_at, sent_at, delivered_at)
SELECT
    gen_random_uuid(), tenant, 'h' || g, 'enc', 'r' || (g % 50000),
    jsonb_build_object('kind', 'template', 'language', 'en_US',
                       'name', (ARRAY['order_update','receipt','reminder','welcome','otp','shipping',
                                      'feedback','promo'])[1 + (g % 8)]),
    ('00000000-0000-0000-0000-' || lpad(to_hex(t * 16 + (g % 3)), 12, '0'))::uuid,
    5, (ARRAY['api','scheduler','pipeline'])[1 + (g % 3)],
    status, CASE WHEN status = 'failed' THEN 'meta: error ' || code END,
    'meta', CASE WHEN status IN ('sent','delivered','read') THEN 'wamid.' || g END,
    1, created, code, status = 'failed' AND code = '131026',
    created, created, sent, CASE WHEN status IN ('delivered','read') THEN sent + d END
FROM (
    SELECT g, t, tenant, created,
        CASE WHEN s < 0.45 THEN 'read' WHEN s < 0.75 THEN 'delivered' WHEN s < 0.87 THEN 'sent'
             WHEN s < 0.95 THEN 'failed' WHEN s < 0.98 THEN 'queued' ELSE 'sending' END AS status,
        CASE WHEN s >= 0.87 AND s < 0.95
             THEN (ARRAY['131026','131049','130472','131047','window_closed','opted_out'])[1 + (g % 6)]
        END AS code,
        CASE WHEN s < 0.87 THEN created + make_interval(secs => 0.05 + 8 * power(q, 3)) END AS sent,
        make_interval(secs => 0.5 + 5 * power(q2, 2)) AS d
    FROM (
        SELECT g, random() AS s, random() AS q, random() AS q2,
            CASE WHEN u < 0.40 THEN 0 WHEN u < 0.65 THEN 1 WHEN u < 0.80 THEN 2 WHEN u < 0.90 THEN 3 ELSE 4 END AS t,
            now() - make_interval(secs => random() * :seconds) AS created
        FROM (SELECT g, random() AS u FROM generate_series(1, :n) AS g) AS r
    ) AS x
    CROSS JOIN LATERAL (SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(x.t + 1), 12, '0'))::uuid AS tenant) AS tt
) AS y
ORDER BY created
"""


HOT_TENANT = uuid.UUID(int=99)
HOT_INSERT = """
INSERT INTO sender.messages (id, tenant_id, request_hash, recipient_enc, recipient_hash, priority, origin,
    status, created_at, updated_at, not_before)
SELECT gen_random_uuid(), :t, 'h', 'e', 'r' || g, 5, 'api', 'queued', now(), now(), now()
FROM generate_series(1, :n) AS g
"""
HOT_UPDATE = "UPDATE sender.messages SET status = :s, updated_at = now() WHERE id = ANY(:ids) AND status = :p"
ZERO_FIVE_DROP = (
    "DROP TRIGGER messages_stamp_status_times ON sender.messages",
    "DROP INDEX sender.ix_messages_analytics",
    "DROP INDEX sender.ix_messages_failed",
)


async def hot_round(engine: AsyncEngine) -> tuple[float, float]:
    """(ms per message inserted, ms per message for its three status updates)."""
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM sender.messages WHERE tenant_id = :t"), {"t": HOT_TENANT})
    started = time.perf_counter()
    for _ in range(40):
        async with engine.begin() as conn:
            await conn.execute(text(HOT_INSERT), {"t": HOT_TENANT, "n": 100})
    inserted = time.perf_counter() - started
    async with engine.connect() as conn:
        ids = list(
            (
                await conn.execute(
                    text("SELECT id FROM sender.messages WHERE tenant_id = :t"), {"t": HOT_TENANT}
                )
            ).scalars()
        )
    started = time.perf_counter()
    for new, previous in (("sending", "queued"), ("sent", "sending"), ("delivered", "sent")):
        for i in range(0, len(ids), 100):
            async with engine.begin() as conn:
                await conn.execute(text(HOT_UPDATE), {"s": new, "p": previous, "ids": ids[i : i + 100]})
    return inserted * 1000 / len(ids), (time.perf_counter() - started) * 1000 / len(ids)


async def hot_path(engine: AsyncEngine, rounds: int) -> None:
    async with engine.connect() as conn:  # the definitions to restore, as the migration made them
        restore = list(
            (
                await conn.execute(
                    text(
                        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'messages_stamp_status_times' "
                        "UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'sender' "
                        "AND indexname IN ('ix_messages_analytics', 'ix_messages_failed')"
                    )
                )
            ).scalars()
        )
    await hot_round(engine)  # warm-up
    results: dict[str, list[tuple[float, float]]] = {"with": [], "without": []}
    for _ in range(rounds):
        results["with"].append(await hot_round(engine))
        async with engine.begin() as conn:
            for q in ZERO_FIVE_DROP:
                await conn.execute(text(q))
        results["without"].append(await hot_round(engine))
        async with engine.begin() as conn:
            for q in restore:
                await conn.execute(text(q))
    w = [statistics.median(x) for x in zip(*results["with"], strict=True)]
    wo = [statistics.median(x) for x in zip(*results["without"], strict=True)]
    print(f"hot path at PostgreSQL (median of {rounds} rounds, 4,000 messages each), with / without 0005:")
    print(
        f"  insert (100 per transaction)      {w[0]:.3f} / {wo[0]:.3f} ms per message   ratio {w[0] / wo[0]:.2f}"
    )
    print(
        f"  three status updates (100 each)   {w[1]:.3f} / {wo[1]:.3f} ms per message   ratio {w[1] / wo[1]:.2f}"
    )


def say(message: str) -> None:
    print(f"[bench.analytics {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


async def one(conn: AsyncConnection, period: analytics.Period, group_by: str) -> float:
    started = time.perf_counter()
    await queries.message_figures(conn, TENANTS[0], period.since, period.until, group_by, TZ)
    await queries.top_failures(conn, TENANTS[0], period.since, period.until, analytics.TOP_FAILURES)
    return (time.perf_counter() - started) * 1000


async def measure(conn: AsyncConnection, cases: dict[str, tuple[analytics.Period, str]], runs: int) -> dict:
    out: dict[str, list[float]] = {name: [] for name in cases}
    for period, group_by in cases.values():
        await one(conn, period, group_by)  # warm the cache
    for _ in range(runs):
        for name, (period, group_by) in cases.items():
            out[name].append(await one(conn, period, group_by))
    return out


async def run(db_url: str, n: int, days: int, runs: int, hot_rounds: int) -> None:
    engine = create_async_engine(db_url)
    try:
        started = time.monotonic()
        async with engine.begin() as conn:
            await conn.execute(text(SEED), {"n": n, "seconds": days * 86400})
        say(f"seeded {n:,} messages over {days} days in {time.monotonic() - started:.0f} s")
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE sender.messages"))
            count = (
                await conn.execute(
                    text("SELECT count(*) FROM sender.messages WHERE tenant_id = :t"), {"t": TENANTS[0]}
                )
            ).scalar()
        today = datetime.now(ZoneInfo(TZ)).date()

        def period(d: int) -> analytics.Period:
            return analytics.Period(today - timedelta(days=d - 1), today, TZ)

        cases = {
            "30 days by day": (period(30), "day"),
            "30 days by template": (period(30), "template"),
            f"{days} days by day": (period(days), "day"),
        }
        async with engine.connect() as conn:
            with_index = await measure(conn, cases, runs)
        async with engine.connect() as conn:
            async with conn.begin() as tx:
                await conn.execute(text("DROP INDEX sender.ix_messages_analytics, sender.ix_messages_failed"))
                without = await measure(conn, cases, runs)
                await tx.rollback()
        print(f"messages {n:,} over {days} days; biggest tenant {count:,}; {runs} runs per query, tz {TZ}")
        print(
            "query (figures + top failures)     with 0005 index p50 / p95     without p50 / p95    p95 ratio"
        )
        for name in cases:
            a, b = with_index[name], without[name]
            print(
                f"  {name:<30} {statistics.median(a):8.1f} / {pct(a, 0.95):6.1f} ms"
                f"      {statistics.median(b):8.1f} / {pct(b, 0.95):6.1f} ms"
                f"    {pct(a, 0.95) / pct(b, 0.95):5.2f}"
            )
        if hot_rounds:
            await hot_path(engine, hot_rounds)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Sender analytics on a large table")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--hot-rounds", type=int, default=3, help="rounds of the hot-path phase (0: skip)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="herald-bench-analytics-"))
    handle = None
    server_url = db_name = None
    try:
        urls, handle = resolve_infra(root / "infra")
        server_url = urls.database_url
        db_name, db_url = create_migrated_database(server_url, "herald_bench_analytics")
        asyncio.run(run(db_url, args.messages, args.days, args.runs, args.hot_rounds))
    finally:
        if server_url and db_name:
            drop_database(server_url, db_name)
        if handle is not None:
            handle.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
