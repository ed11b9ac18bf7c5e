"""Benchmark of the pipeline's offline writer flow, in-process on a real PostgreSQL.

Run::

    scripts/uv run --frozen python -m bench.pipeline --drafts 1000 --users 50 --concurrency 32

Infra from ``devtools.infra.resolve_infra`` (or HERALD_TEST_DATABASE_URL + HERALD_TEST_AMQP_URL), a
fresh migrated database. It stores ``--notes-per-user`` inbound notes per user through
``handlers.store_note`` (prints note → stored p50/p99), then runs ``--drafts`` ``pacing.due``
through ``handlers.on_pacing_due`` with ``--concurrency`` at a time (prints drafts/s and per-agent
p50/p99 from the recorded steps) and the RSS of this process. The handlers are called directly, not
through RabbitMQ: it measures the job, not the broker. Prints figures; asserts nothing.

Not covered yet (issue 11): the model stand-in at 300 ms, inbound order → clarification.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from devtools.database import create_migrated_database, drop_database
from devtools.infra import resolve_infra
from services.pipeline import handlers
from services.pipeline.app import build
from services.pipeline.models import draft_steps
from services.pipeline.settings import PipelineSettings
from shared.crypto import SecretBox
from shared.events import InboundReceived, PacingDue, new_event
from shared.tenancy import create_tenant

NOTES = [
    "Our new menu has a vegan feijoada that sold out on Friday",
    "Customers asked for the menu in English",
    "The chef tested twelve desserts before choosing three",
    "Lunch service grew 20% since we opened on Sundays",
    "We now source coffee from a farm in Minas Gerais",
]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


async def run(args: argparse.Namespace, db_url: str, amqp_url: str) -> None:
    settings = PipelineSettings(
        database_url=db_url,
        amqp_url=amqp_url,
        encryption_keys=SecretBox.generate_key(),
        secret_key=uuid.uuid4().hex,
        environment="test",
    )
    runtime, _ = build(settings)
    tenant, _ = await create_tenant(runtime.engine, "bench-pipeline")
    users = [f"user-{i}" for i in range(args.users)]
    note_ms: list[float] = []
    for user in users:
        for i in range(args.notes_per_user):
            data = InboundReceived(
                provider="meta",
                provider_message_id=uuid.uuid4().hex,
                from_phone="+5511999990000",
                kind="text",
                text=NOTES[i % len(NOTES)],
                user_id=user,
                received_at=datetime.now(UTC),
            )
            t0 = time.perf_counter()
            await handlers.store_note(runtime, new_event(data, tenant_id=tenant.id, source="/bench"))
            note_ms.append((time.perf_counter() - t0) * 1000)
    print(f"note -> stored: n={len(note_ms)} p50={pct(note_ms, 50):.1f} ms p99={pct(note_ms, 99):.1f} ms")

    gate = asyncio.Semaphore(args.concurrency)
    base = datetime.now(UTC)

    async def one(i: int) -> None:
        data = PacingDue(
            user_id=users[i % len(users)], schedule_id=uuid.uuid4(), slot_at=base + timedelta(minutes=i)
        )
        async with gate:
            await handlers.on_pacing_due(runtime, new_event(data, tenant_id=tenant.id, source="/bench"))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(args.drafts)))
    elapsed = time.perf_counter() - t0
    print(f"offline writer: {args.drafts} drafts in {elapsed:.2f} s = {args.drafts / elapsed:.0f} drafts/s")
    async with runtime.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(draft_steps.c.agent, draft_steps.c.started_at, draft_steps.c.finished_at)
            )
        ).all()
    for agent in ("order_builder", "retrieval", "writer", "editor"):
        ms = [(r.finished_at - r.started_at).total_seconds() * 1000 for r in rows if r.agent == agent]
        print(f"  {agent:14s} p50={pct(ms, 50):.2f} ms p99={pct(ms, 99):.2f} ms (n={len(ms)})")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"max RSS of the process (pipeline in-process): {rss_mb:.0f} MB")
    await runtime.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--drafts", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--notes-per-user", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="herald-bench-pipeline-") as tmp:
        urls, handle = resolve_infra(Path(tmp) / "infra")
        db_name, db_url = create_migrated_database(urls.database_url, "herald_bench_pipe")
        try:
            asyncio.run(run(args, db_url, urls.amqp_url))
        finally:
            drop_database(urls.database_url, db_name)
            if handle is not None:
                handle.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
