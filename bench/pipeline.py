"""Benchmark of the pipeline's writer flow, in-process on a real PostgreSQL: offline, then with
a model stand-in.

Run::

    scripts/uv run --frozen python -m bench.pipeline --drafts 1000 --users 50 --concurrency 32 \
        --model-latency 0.3 --model-concurrency 64

Infra from ``devtools.infra.resolve_infra`` (or HERALD_TEST_DATABASE_URL + HERALD_TEST_AMQP_URL), a
fresh migrated database. It stores ``--notes-per-user`` inbound notes per user through
``handlers.store_note`` (prints note → stored p50/p99), then runs ``--drafts`` ``pacing.due``
through ``handlers.on_pacing_due`` with ``--concurrency`` at a time (prints drafts/s and per-agent
p50/p99 from the recorded steps) and the RSS of this process. Then the same ``--drafts`` with the
language model configured: ``devtools.fake_llm`` in its own process answers every call after
``--model-latency`` seconds, ``PIPELINE_LLM_CONCURRENCY`` = ``--model-concurrency``, and
``--model-jobs`` jobs in flight (default: as many; a job also spends time in the database, so
more jobs than model slots keep the semaphore fuller); it prints drafts/s beside the bound
concurrency ÷ (calls per draft × latency), per-agent p50/p99 and the RSS again (``--model-latency 0`` skips it). The database pool is ``--db-pool``
(``PIPELINE_DB_POOL_SIZE``; the engine may overflow it by as many again). The handlers are called
directly, not through RabbitMQ: it measures the job, not the broker. Prints figures; asserts nothing.

Inbound order → clarification at the provider is measured by ``bench.pipeline_inbound``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa

from devtools.database import create_migrated_database, drop_database
from devtools.infra import resolve_infra
from services.pipeline import handlers, jobs
from services.pipeline.app import build
from services.pipeline.models import draft_steps, drafts
from services.pipeline.settings import PipelineSettings
from shared.crypto import SecretBox
from shared.events import InboundReceived, PacingDue, new_event
from shared.service import ServiceRuntime
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
        db_pool_size=args.db_pool,
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

    offline = await pacing_run(runtime, tenant.id, users, args.drafts, args.concurrency)
    report("offline writer", args.drafts, offline)
    await runtime.engine.dispose()

    if args.model_latency <= 0:
        return
    with fake_model(args.model_latency) as base_url:
        model_runtime, _ = build(
            settings.model_copy(
                update={
                    "llm_base_url": base_url,
                    "llm_model": "stand-in",
                    "llm_concurrency": args.model_concurrency,
                    "llm_timeout_seconds": 30.0,
                }
            )
        )
        try:
            agents = jobs.agents_of(model_runtime)
            calls = sum(1 for a in agents if a.model not in ("offline", "postgres-fts"))
            in_flight = args.model_jobs or args.model_concurrency
            result = await pacing_run(model_runtime, tenant.id, users, args.drafts, in_flight)
            report(
                f"model stand-in at {args.model_latency * 1000:.0f} ms, model concurrency "
                f"{args.model_concurrency}, {in_flight} jobs in flight",
                args.drafts,
                result,
            )
            bound = args.model_concurrency / (calls * args.model_latency)
            print(
                f"  bound: concurrency {args.model_concurrency} / ({calls} calls per draft x "
                f"{args.model_latency:g} s) = {bound:.0f} drafts/s; reached {result[0] / bound:.0%}"
            )
        finally:
            await jobs.close_agents(model_runtime)
            await model_runtime.engine.dispose()


async def pacing_run(
    runtime: ServiceRuntime, tenant_id: uuid.UUID, users: list[str], n: int, concurrency: int
) -> tuple[float, dict[str, list[float]], int]:
    """``n`` pacing slots, ``concurrency`` at a time: (drafts/s, step ms per agent, failed drafts)."""
    gate = asyncio.Semaphore(concurrency)
    base = datetime.now(UTC)
    ids: list[uuid.UUID] = []

    async def one(i: int) -> None:
        data = PacingDue(
            user_id=users[i % len(users)], schedule_id=uuid.uuid4(), slot_at=base + timedelta(minutes=i)
        )
        async with gate:
            ids.append(
                await handlers.on_pacing_due(runtime, new_event(data, tenant_id=tenant_id, source="/bench"))
            )

    t0, cpu0 = time.perf_counter(), cpu_seconds()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - t0
    print(f"  CPU of the pipeline process: {(cpu_seconds() - cpu0) / n * 1000:.1f} ms per draft")
    async with runtime.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(draft_steps.c.agent, draft_steps.c.started_at, draft_steps.c.finished_at).where(
                    draft_steps.c.draft_id.in_(ids)
                )
            )
        ).all()
        failed = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(drafts)
                .where(drafts.c.id.in_(ids), drafts.c.status != "ready")
            )
        ).scalar_one()
    ms: dict[str, list[float]] = {}
    for r in rows:
        ms.setdefault(r.agent, []).append((r.finished_at - r.started_at).total_seconds() * 1000)
    return n / elapsed, ms, failed


def report(label: str, n: int, result: tuple[float, dict[str, list[float]], int]) -> None:
    rate, ms, failed = result
    print(f"{label}: {n} drafts, {rate:.1f} drafts/s, not ready: {failed}")
    for agent in ("order_builder", "retrieval", "writer", "editor"):
        values = ms.get(agent, [])
        print(f"  {agent:14s} p50={pct(values, 50):.2f} ms p99={pct(values, 99):.2f} ms (n={len(values)})")
    print(f"  RSS of the process (pipeline in-process): now {rss_mb():.0f} MB, max {max_rss_mb():.0f} MB")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class fake_model:
    """``devtools.fake_llm`` in its own process, so its event loop does not share the pipeline's."""

    def __init__(self, latency: float) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.latency = latency
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devtools.fake_llm",
                "--port",
                str(self.port),
                "--latency",
                str(self.latency),
            ]
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        return f"http://127.0.0.1:{self.port}/v1"

    def __exit__(self, *_: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--drafts", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--notes-per-user", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--model-latency", type=float, default=0.3, help="seconds per model answer; 0 skips")
    parser.add_argument("--model-concurrency", type=int, default=64)
    parser.add_argument(
        "--model-jobs",
        type=int,
        default=0,
        help="jobs in flight in the model run (the consumer's prefetch); default: the model concurrency",
    )
    parser.add_argument("--db-pool", type=int, default=10, help="PIPELINE_DB_POOL_SIZE")
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
