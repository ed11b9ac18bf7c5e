"""Benchmark of the sender's delivery analytics on a large table.

Run::

    scripts/uv run --frozen python -m bench.analytics [--messages 1000000] [--days 90] [--runs 30] [--hot-rounds 3]

It starts its own PostgreSQL (``devtools.infra``, or the server named by HERALD_TEST_DATABASE_URL),
a migrated database, and seeds ``sender.messages`` with ``--messages`` rows over ``--days`` days in
one ``INSERT … SELECT FROM generate_series`` (5 tenants holding 40/25/15/10/10 %, 3 channels each,
8 templates, origins api/scheduler/pipeline; statuses 45 % read, 30 % delivered, 12 % sent,
8 % failed with six codes, 5 % queued/sending; queue and delivery times drawn per row), then
``VACUUM ANALYZE``; the 0011 and 0012 triggers write the seed's analytics and failure deltas, and
it times folding them into the rollups (``services.sender.rollup.fold_all``, what a sender does in
the background).

It then runs ``GET /v1/analytics/messages``'s two paths for the biggest tenant, ``--runs`` times
each, in the same run, through the API's own read (``repository.analytics.read``) and ``combine``:
the **rollup** path (``analytics.plan`` → ``rollup_figures`` + ``rollup_top_failures`` in one
REPEATABLE READ snapshot → ``fold``: what the API does for a zone whose offsets are whole hours)
and the **scan** of the messages (``message_figures`` + ``top_failures``, what it does for a zone
such as Asia/Kolkata), with the 0005 indexes:

1. the last 30 days by day, 2. the last 30 days by template, 3. the 90 days by day, all in
Europe/Lisbon; 4. the last 30 days by day in America/Sao_Paulo (a local day is not a UTC day);
5. case 1 again with 10,000 fresh messages' deltas not folded yet (a fold that is behind).

It prints p50/p95 of each path and the p95 ratio rollup / scan. Target: p95 ≤ 100 ms.

6. **hot path** (``--hot-rounds``): what the analytics cost the sender's writes — 4,000 messages
   inserted 100 per transaction, then moved queued → sending → sent → delivered 100 per statement,
   with everything as migrated, without the 0012 triggers, without 0011 and 0012, and without
   0011, 0012 and 0005 (dropped), in turn: ms per message at PostgreSQL. (These messages do not
   fail: 0012 writes rows only for failed ones, so its cost here is its statement trigger.)

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
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from devtools.database import create_migrated_database, drop_database
from devtools.infra import resolve_infra
from services.sender import analytics, rollup
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
ZERO_ELEVEN_DROP = (
    "DROP TRIGGER messages_analytics_inserts ON sender.messages",
    "DROP TRIGGER messages_analytics_change ON sender.messages",
    "DROP TRIGGER messages_analytics_deletes ON sender.messages",
)
ZERO_TWELVE_DROP = (
    "DROP TRIGGER messages_analytics_failures_inserts ON sender.messages",
    "DROP TRIGGER messages_analytics_failures_change ON sender.messages",
    "DROP TRIGGER messages_analytics_failures_deletes ON sender.messages",
)
ZERO_FIVE_DROP = (
    "DROP TRIGGER messages_stamp_status_times ON sender.messages",
    "DROP INDEX sender.ix_messages_analytics",
    "DROP INDEX sender.ix_messages_failed",
)
HOT_VARIANTS = {
    "as migrated": (),
    "without 0012": ZERO_TWELVE_DROP,
    "without 0011, 0012": ZERO_ELEVEN_DROP + ZERO_TWELVE_DROP,
    "without 0011, 0012, 0005": ZERO_ELEVEN_DROP + ZERO_TWELVE_DROP + ZERO_FIVE_DROP,
}


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
    async with engine.connect() as conn:  # the definitions to restore, as the migrations made them
        restore = list(
            (
                await conn.execute(
                    text(
                        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname IN "
                        "('messages_stamp_status_times', 'messages_analytics_inserts', 'messages_analytics_change', "
                        "'messages_analytics_deletes', 'messages_analytics_failures_inserts', "
                        "'messages_analytics_failures_change', 'messages_analytics_failures_deletes') "
                        "UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'sender' "
                        "AND indexname IN ('ix_messages_analytics', 'ix_messages_failed')"
                    )
                )
            ).scalars()
        )
    await hot_round(engine)  # warm-up
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in HOT_VARIANTS}
    for _ in range(rounds):
        for name, drops in HOT_VARIANTS.items():
            async with engine.begin() as conn:
                for q in drops:
                    await conn.execute(text(q))
            results[name].append(await hot_round(engine))
            if drops:
                async with engine.begin() as conn:
                    for q in drops:  # put back what was dropped, as migrated
                        name_of = q.split()[2].split(".")[-1]
                        for definition in restore:
                            if f" {name_of} " in definition:
                                await conn.execute(text(definition))
    await rollup.fold_all(engine)  # the hot rounds' deltas
    med = {name: [statistics.median(x) for x in zip(*r, strict=True)] for name, r in results.items()}
    base = med["without 0011, 0012, 0005"]
    print(f"hot path at PostgreSQL (median of {rounds} rounds, 4,000 messages each), ms per message:")
    print("                                   " + "".join(f"{name:>26}" for name in HOT_VARIANTS))
    for i, what in enumerate(("insert (100 per transaction)", "three status updates (100 each)")):
        cells = "".join(f"{med[name][i]:>19.3f} ({med[name][i] / base[i]:4.2f})" for name in HOT_VARIANTS)
        print(f"  {what:<33}{cells}")
    print("  (ratio to the last column: no analytics triggers or indexes at all)")


def say(message: str) -> None:
    print(f"[bench.analytics {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


async def timed(
    engine: AsyncEngine, tenant: uuid.UUID, period: analytics.Period, group_by: str, scan: bool
) -> float:
    """The API's read (``repository.analytics.read``: figures and top failures) and ``combine``,
    in ms: the rollups, or with ``scan`` the messages themselves (a zone that cuts hours in two)."""
    started = time.perf_counter()
    rows, _ = await queries.read(engine, tenant, period, group_by, scan=scan)
    analytics.combine(rows)
    return (time.perf_counter() - started) * 1000


async def measure(engine: AsyncEngine, cases: dict[str, tuple[analytics.Period, str]], runs: int) -> dict:
    """``runs`` timings of each path of each case, the paths and cases interleaved."""
    out: dict[tuple[str, str], list[float]] = {}
    for period, group_by in cases.values():  # warm the cache
        await timed(engine, TENANTS[0], period, group_by, scan=True)
        await timed(engine, TENANTS[0], period, group_by, scan=False)
    for _ in range(runs):
        for name, (period, group_by) in cases.items():
            out.setdefault((name, "rollup"), []).append(
                await timed(engine, TENANTS[0], period, group_by, False)
            )
            out.setdefault((name, "scan"), []).append(await timed(engine, TENANTS[0], period, group_by, True))
    return out


def report(results: dict, names: list[str]) -> None:
    print("query (figures + top failures)            rollup p50 / p95        scan p50 / p95     p95 ratio")
    for name in names:
        a, b = results[(name, "rollup")], results[(name, "scan")]
        print(
            f"  {name:<40} {statistics.median(a):7.1f} / {pct(a, 0.95):6.1f} ms"
            f"   {statistics.median(b):7.1f} / {pct(b, 0.95):6.1f} ms"
            f"    {pct(a, 0.95) / pct(b, 0.95):5.2f}"
        )


async def run(db_url: str, n: int, days: int, runs: int, hot_rounds: int) -> None:
    engine = create_async_engine(db_url, pool_size=2)
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
        started = time.monotonic()
        folded = await rollup.fold_all(engine)
        fold_seconds = time.monotonic() - started
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(
                text(
                    "VACUUM ANALYZE sender.analytics_rollup, sender.analytics_deltas, "
                    "sender.analytics_failures, sender.analytics_failure_deltas"
                )
            )
            rows = (await conn.execute(text("SELECT count(*) FROM sender.analytics_rollup"))).scalar()
        say(f"folded {folded:,} deltas into {rows:,} rollup rows in {fold_seconds:.1f} s")

        def period(d: int, tz: str = TZ) -> analytics.Period:
            return analytics.Period(
                datetime.now(ZoneInfo(tz)).date() - timedelta(days=d - 1),
                datetime.now(ZoneInfo(tz)).date(),
                tz,
            )

        cases = {
            "30 days by day": (period(30), "day"),
            "30 days by template": (period(30), "template"),
            f"{days} days by day": (period(days), "day"),
            "30 days by day, America/Sao_Paulo": (period(30, "America/Sao_Paulo"), "day"),
        }
        agree = [
            (await queries.read(engine, TENANTS[0], p, g, scan=False))[1]
            == (await queries.read(engine, TENANTS[0], p, g, scan=True))[1]
            for p, g in cases.values()
        ]
        results = await measure(engine, cases, runs)
        async with engine.begin() as conn:  # a fold that is behind: 10,000 new messages' deltas
            await conn.execute(text(HOT_INSERT), {"t": TENANTS[0], "n": 10_000})
        behind = {"30 days by day, 10,000 deltas pending": (period(30), "day")}
        results |= await measure(engine, behind, runs)
        await rollup.fold_all(engine)
        print(f"messages {n:,} over {days} days; biggest tenant {count:,}; {runs} runs per query")
        print(
            f"fold of the seed: {folded:,} deltas in {fold_seconds:.1f} s ({folded / fold_seconds:,.0f} deltas/s)"
            f" into {rows:,} rollup rows"
        )
        print(f"top failures, rollup == scan: {sum(agree)} of {len(agree)} cases")
        report(results, [*cases, *behind])
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
