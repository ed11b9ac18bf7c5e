"""The analytics rollup gives the very figures a scan of the messages gives: for every grouping,
in zones with and without daylight saving, with the deltas folded, half folded or not at all, and
after messages change status, template and channel again (migration 0011, services.sender.rollup);
and the top failure codes of the failures rollup are the scan's (migration 0012)."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from services.sender import analytics, rollup
from services.sender.models import messages
from services.sender.repository import analytics as queries
from shared.db import create_engine
from tests.conftest import Infra

pytestmark = pytest.mark.integration

START = datetime(2026, 10, 12, tzinfo=UTC)  # the period holds the EU's switch from summer time (Oct 25)
DAYS = 40
CHANNELS = [uuid.uuid4() for _ in range(3)] + [None]
TEMPLATES = ["order_update", "receipt", "reminder"]
ORIGINS = ["api", "scheduler", "pipeline"]
#: failure codes, the provider that gives each, and the reason stored with it (one per code, so
#: the scan's "one reason" and the rollup's agree); None: a failure without a code
FAILURES = {
    "131026": ("meta", "meta: message undeliverable"),
    "131047": ("meta", "meta: re-engagement message"),
    "131049": ("meta", "meta: healthy ecosystem"),
    "session_not_connected": ("waha", "waha: the session is not connected"),
    "window_closed": (None, "the customer service window is closed"),
    None: (None, "no channel can send it"),
}


def failed(rng: random.Random, codes: tuple[str | None, ...] = tuple(FAILURES)) -> dict[str, Any]:
    code = rng.choice(codes)
    provider, reason = FAILURES[code]
    return {"status": "failed", "error_code": code, "provider": provider, "status_reason": reason}


@pytest.fixture
async def engine(infra: Infra):
    engine = create_engine(infra.database_url, pool_size=4)
    yield engine
    await engine.dispose()


def content(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.2:
        return {"kind": "text", "body": "hello"}
    return {"kind": "template", "name": rng.choice(TEMPLATES), "language": "en_US"}


async def seed(engine, tenant: uuid.UUID, n: int, rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        created = START + timedelta(seconds=rng.uniform(0, DAYS * 86400))
        rows.append(
            {
                "id": uuid.uuid4(),
                "tenant_id": tenant,
                "request_hash": "h",
                "recipient_enc": "enc",
                "recipient_hash": f"r{i}",
                "content": content(rng),
                "channel_id": rng.choice(CHANNELS),
                "priority": 5,
                "origin": rng.choice(ORIGINS),
                "status": "queued",
                "created_at": created,
                "updated_at": created,
            }
        )
    async with engine.begin() as conn:
        for i in range(0, n, 500):
            await conn.execute(sa.insert(messages), rows[i : i + 500])
    return rows


async def move(engine, rows: list[dict[str, Any]], rng: random.Random) -> None:
    """Statuses as the sender writes them, one statement per message: sending (no figure moves),
    sent with a queue time, then delivered / read / failed; some fail before any send."""
    async with engine.begin() as conn:
        for r in rows:
            fate = rng.random()
            await conn.execute(sa.update(messages).where(messages.c.id == r["id"]).values(status="sending"))
            if fate < 0.08:
                await conn.execute(sa.update(messages).where(messages.c.id == r["id"]).values(**failed(rng)))
                continue
            if fate < 0.12:
                continue  # still sending
            sent = r["created_at"] + timedelta(milliseconds=rng.lognormvariate(6, 1.5))
            await conn.execute(
                sa.update(messages).where(messages.c.id == r["id"]).values(status="sent", sent_at=sent)
            )
            if fate < 0.25:
                continue
            if fate < 0.32:
                await conn.execute(
                    sa.update(messages)
                    .where(messages.c.id == r["id"])
                    .values(**failed(rng, ("131026", "131047", "131049", "session_not_connected")))
                )
                continue
            delivered = sent + timedelta(milliseconds=rng.lognormvariate(7, 1))
            await conn.execute(
                sa.update(messages)
                .where(messages.c.id == r["id"])
                .values(status="delivered", delivered_at=delivered)
            )
            if fate > 0.6:
                await conn.execute(sa.update(messages).where(messages.c.id == r["id"]).values(status="read"))


async def change_again(engine, rows: list[dict[str, Any]], rng: random.Random) -> None:
    """A fallback template went out, a channel was changed, a failed message was replayed (queued
    again clears its times) and sent, another failed again with another code."""
    async with engine.begin() as conn:
        for r in rng.sample(rows, 60):
            await conn.execute(
                sa.update(messages)
                .where(messages.c.id == r["id"])
                .values(sent_content={"kind": "template", "name": "fallback_hello", "language": "en"})
            )
        for r in rng.sample(rows, 40):
            await conn.execute(
                sa.update(messages).where(messages.c.id == r["id"]).values(channel_id=rng.choice(CHANNELS))
            )
        gone = (
            await conn.execute(
                sa.select(messages.c.id, messages.c.created_at).where(
                    messages.c.tenant_id == rows[0]["tenant_id"], messages.c.status == "failed"
                )
            )
        ).all()
        for mid, _ in gone[30:70]:  # a reconciliation learnt the real cause
            await conn.execute(
                sa.update(messages).where(messages.c.id == mid).values(**failed(rng, ("131049", None)))
            )
        for mid, created in gone[:30]:
            await conn.execute(sa.update(messages).where(messages.c.id == mid).values(status="queued"))
            await conn.execute(
                sa.update(messages)
                .where(messages.c.id == mid)
                .values(status="sent", sent_at=created + timedelta(hours=3))
            )


def rounded(result: tuple[dict[Any, Any], dict[str, Any]], approx: bool = False) -> Any:
    by_key, totals = result

    def one(figures: dict[str, Any]) -> dict[str, Any]:  # the mean is a float sum: added in another order
        return {
            k: (pytest.approx(v, rel=1e-9) if approx and k == "q_mean" and v is not None else v)
            for k, v in figures.items()
        }

    return {k: one(v) for k, v in by_key.items()}, one(totals)


async def scanned(engine, tenant, period: analytics.Period, group_by: str) -> Any:
    async with engine.connect() as conn:
        rows = await queries.message_figures(conn, tenant, period.since, period.until, group_by, period.tz)
    return rounded(analytics.combine(rows), approx=True)


async def rolled_up(engine, tenant, period: analytics.Period, group_by: str) -> Any:
    pieces = analytics.plan(period, group_by)
    assert pieces is not None
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            rolled, pending = await queries.rollup_figures(
                conn, tenant, period.since, period.until, analytics.dimension(group_by), pieces
            )
    return rounded(analytics.combine(analytics.fold(rolled, pending, pieces, group_by, period.zone)))


CASES = [
    ("UTC", date(2026, 10, 12), date(2026, 11, 20), "day"),
    ("Europe/Lisbon", date(2026, 10, 12), date(2026, 11, 20), "day"),
    ("Europe/Lisbon", date(2026, 10, 13), date(2026, 11, 12), "hour"),  # 23 and 25 hour days
    ("America/Sao_Paulo", date(2026, 10, 12), date(2026, 11, 20), "day"),
    ("America/Sao_Paulo", date(2026, 10, 20), date(2026, 10, 30), "hour"),
    ("Pacific/Auckland", date(2026, 10, 15), date(2026, 11, 1), "day"),
    *(
        (tz, date(2026, 10, 14), date(2026, 11, 19), g)
        for tz in ("UTC", "Europe/Lisbon", "America/New_York")
        for g in ("channel", "template", "origin")
    ),
    ("Europe/Lisbon", date(2026, 10, 25), date(2026, 10, 25), "template"),  # one 25-hour day
]


async def failures_both_ways(engine, tenant, period: analytics.Period, limit: int) -> tuple[Any, Any]:
    """The top failure codes from the messages and from the failures rollup (one snapshot)."""
    async with engine.connect() as conn:
        scan = await queries.top_failures(conn, tenant, period.since, period.until, limit)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            rolled = await queries.rollup_top_failures(
                conn,
                tenant,
                period.since,
                period.until,
                analytics.decompose(period.since, period.until),
                limit,
            )
    return rolled, scan


async def assert_same(engine, tenant) -> int:
    compared = 0
    for tz, first, last, group_by in CASES:
        period = analytics.Period(first, last, tz)
        for limit in (analytics.TOP_FAILURES, 3):  # all of them, and the first three (ties broken alike)
            got_failures, want_failures = await failures_both_ways(engine, tenant, period, limit)
            assert got_failures == want_failures, (tz, first, last, limit)
            assert want_failures, (tz, first, last)
        want = await scanned(engine, tenant, period, group_by)
        got = await rolled_up(engine, tenant, period, group_by)
        diff = {
            k: {
                f: (v, (want[0].get(k) or {}).get(f))
                for f, v in (got[0].get(k) or {}).items()
                if v != (want[0].get(k) or {}).get(f)
            }
            or (got[0].get(k), want[0].get(k))
            for k in set(got[0]) | set(want[0])
            if got[0].get(k) != want[0].get(k)
        }
        assert not diff, (tz, first, last, group_by, diff)
        assert got[1] == want[1], (tz, first, last, group_by, got[1], want[1])
        compared += len(want[0])
    return compared


async def pending_deltas(engine) -> int:
    async with engine.connect() as conn:
        return await conn.scalar(sa.text("SELECT count(*) FROM sender.analytics_deltas"))


async def test_the_rollup_gives_the_figures_of_the_messages_folded_or_not(engine):
    rng = random.Random(14)
    tenant = uuid.uuid4()
    rows = await seed(engine, tenant, 2500, rng)
    await move(engine, rows, rng)

    assert await pending_deltas(engine) > 0
    assert await assert_same(engine, tenant) > 100  # nothing folded: the deltas alone

    assert await rollup.fold_once(engine, batch=3000)  # part folded, part pending
    assert await pending_deltas(engine) > 0
    await assert_same(engine, tenant)

    await rollup.fold_all(engine, batch=5000)
    assert await pending_deltas(engine) == 0
    await assert_same(engine, tenant)  # the rollup alone

    await change_again(engine, rows, rng)  # old buckets change after they were folded
    await assert_same(engine, tenant)
    await rollup.fold_all(engine)
    await assert_same(engine, tenant)

    gone = [r["id"] for r in rng.sample(rows, 200)]  # an operator's manual purge
    async with engine.begin() as conn:
        await conn.execute(sa.delete(messages).where(messages.c.id.in_(gone)))
    await assert_same(engine, tenant)
    await rollup.fold_all(engine)
    await assert_same(engine, tenant)


async def test_a_claim_or_a_lease_writes_no_delta(engine):
    rng = random.Random(3)
    rows = await seed(engine, uuid.uuid4(), 50, rng)
    await rollup.fold_all(engine)
    ids = [r["id"] for r in rows]
    async with engine.begin() as conn:
        await conn.execute(sa.update(messages).where(messages.c.id.in_(ids)).values(status="sending"))
        await conn.execute(
            sa.update(messages).where(messages.c.id.in_(ids)).values(sending_started_at=datetime.now(UTC))
        )
    assert await pending_deltas(engine) == 0
    async with engine.begin() as conn:
        await conn.execute(sa.update(messages).where(messages.c.id.in_(ids)).values(status="sent"))
    assert await pending_deltas(engine) == 2 * len(ids)  # the old state out, the new one in


async def test_two_folds_at_once_fold_each_delta_once(engine):
    rng = random.Random(7)
    tenant = uuid.uuid4()
    rows = await seed(engine, tenant, 1500, rng)
    await move(engine, rows, rng)
    results = await asyncio.gather(*(rollup.fold_all(engine, batch=500) for _ in range(3)))
    await rollup.fold_all(engine)
    assert await pending_deltas(engine) == 0
    assert sum(results) > 0
    await assert_same(engine, tenant)


def test_a_zone_that_cuts_hours_in_two_reads_the_messages():
    assert (
        analytics.plan(analytics.Period(date(2026, 11, 1), date(2026, 11, 7), "Asia/Kolkata"), "day") is None
    )
    assert (
        analytics.plan(analytics.Period(date(2026, 11, 1), date(2026, 11, 7), "Asia/Kolkata"), "hour") is None
    )
    lisbon = analytics.plan(analytics.Period(date(2026, 11, 1), date(2026, 11, 30), "Europe/Lisbon"), "day")
    assert lisbon is not None and len(lisbon) == 30  # winter: every local day is one UTC day
