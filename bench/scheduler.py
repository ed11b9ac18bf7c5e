"""Benchmark of the scheduler: a burst of occurrences due at the same instant, and a steady load.

Run::

    scripts/uv run --frozen python -m bench.scheduler --occurrences 100000
    scripts/uv run --frozen python -m bench.scheduler --occurrences 2000 --steady-minutes 0.5   # a quick check

It sets everything up itself, like the end-to-end tests: RabbitMQ + PostgreSQL from
``devtools.infra.resolve_infra`` under a temporary folder (or the servers named by
HERALD_TEST_DATABASE_URL + HERALD_TEST_AMQP_URL), a fresh migrated database and ``--processes``
real ``herald run scheduler`` processes. A queue bound to ``herald.events`` records every
``message.requested`` the scheduler publishes.

1. **Burst**: ``--occurrences`` daily recurring schedules, all due at the same instant T (written
   straight into the table with COPY before T). Prints the time from T until every occurrence was
   claimed (outbox rows committed), relayed (outbox rows confirmed by the broker) and received on
   the queue, and the number of duplicates (deliveries of an occurrence beyond its first) and of
   occurrences lost. Target: all published within 30 s, 0 duplicates.
2. **Steady**: ``--per-minute`` occurrences a minute, evenly spread, for ``--steady-minutes``.
   Prints the lateness (received on the queue − due time) p50/p99/max. Target: p99 <= 1 s.

A program that prints figures, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import tempfile
import time
import traceback
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import asyncpg

from devtools.database import asyncpg_dsn, create_migrated_database, drop_database
from devtools.infra import resolve_infra
from devtools.processes import ServiceProcess, free_port, herald_env
from services.scheduler.domain import occurrence_message_id
from shared.crypto import SecretBox


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


class Recorder:
    """Every ``message.requested`` delivery: message id → wall-clock arrival times."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}

    @property
    def distinct(self) -> int:
        return len(self.arrivals)

    @property
    def deliveries(self) -> int:
        return sum(len(v) for v in self.arrivals.values())

    async def wait(self, ids: set[str], within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if ids <= self.arrivals.keys():
                return True
            await asyncio.sleep(0.05)
        return False


@contextlib.asynccontextmanager
async def recording(amqp_url: str):  # type: ignore[no-untyped-def]
    recorder = Recorder()
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=2000)
        exchange = await channel.get_exchange("herald.events", ensure=True)
        queue = await channel.declare_queue(
            f"bench.scheduler.{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True
        )
        await queue.bind(exchange, routing_key="message.requested.v1")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            # the observer shares the 2 cores with what it measures: no ack round trip, and the
            # AMQP message id (the relay sets the CloudEvent id, "scheduler:<message id>")
            # instead of parsing the body, unless the id is missing
            now = time.time()
            event_id = message.message_id or ""
            if event_id.startswith("scheduler:"):
                message_id = event_id[len("scheduler:") :]
            else:
                message_id = json.loads(message.body)["data"]["message_id"]
            recorder.arrivals.setdefault(message_id, []).append(now)

        await queue.consume(on_message, no_ack=True)
        yield recorder
    finally:
        await connection.close()


async def insert_schedules(dsn: str, key: str, due_times: list[datetime]) -> dict[str, datetime]:
    """One daily recurring schedule per due time, straight into the table (COPY)."""
    box = SecretBox(key)
    recipient = box.encrypt("+5511999990009")
    tenant = uuid.uuid4()
    records = []
    expected: dict[str, datetime] = {}
    for due in due_times:
        sid = uuid.uuid4()
        mid = occurrence_message_id(sid, due)
        expected[str(mid)] = due
        records.append(
            (
                sid,
                tenant,
                recipient,
                "bench",
                "bench occurrence",
                5,
                due,
                "pending",
                mid,
                "recurring",
                "UTC",
                due.replace(tzinfo=None),
                "FREQ=DAILY",
                due,
                due,
            )
        )
    conn = await asyncpg.connect(dsn)
    try:
        for start in range(0, len(records), 50_000):
            await conn.copy_records_to_table(
                "scheduled_messages",
                schema_name="scheduler",
                columns=[
                    "id",
                    "tenant_id",
                    "recipient_enc",
                    "recipient_hash",
                    "text",
                    "priority",
                    "send_at",
                    "status",
                    "message_id",
                    "kind",
                    "timezone",
                    "start_local",
                    "rule",
                    "created_at",
                    "updated_at",
                ],
                records=records[start : start + 50_000],
            )
        await conn.execute("ANALYZE scheduler.scheduled_messages")
        await conn.execute("NOTIFY scheduler_due")
    finally:
        await conn.close()
    return expected


async def burst(dsn: str, amqp_url: str, key: str, n: int, lines: list[str]) -> None:
    lead = 4.0 + n / 20_000  # time to write the rows before they are due
    due = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
    async with recording(amqp_url) as recorder:
        say(f"burst: writing {n} schedules due at {due.isoformat()}")
        expected = await insert_schedules(dsn, key, [due] * n)
        wait_s = max(0.0, (due - datetime.now(UTC)).total_seconds())
        say(f"burst: rows written, {wait_s:.1f} s before they are due")
        done = await recorder.wait(set(expected), within=wait_s + 300)
        await asyncio.sleep(2)  # late duplicates
        conn = await asyncpg.connect(dsn)
        try:
            claimed, relayed, rows = await conn.fetchrow(
                "SELECT max(created_at), max(published_at), count(*) FROM scheduler.outbox "
                "WHERE routing_key = 'message.requested.v1' AND created_at >= $1",
                due - timedelta(seconds=1),
            )
        finally:
            await conn.close()
    t0 = due.timestamp()
    received = [min(recorder.arrivals[m]) for m in expected if m in recorder.arrivals]
    lost = len(set(expected) - recorder.arrivals.keys())
    duplicates = sum(len(v) - 1 for m, v in recorder.arrivals.items() if m in expected)
    lines.append(f"burst: {n} occurrences due at the same instant")
    if claimed is not None:
        lines.append(
            f"  claimed (outbox committed):   {claimed.timestamp() - t0:7.2f} s after due  ({rows} outbox rows)"
        )
    if relayed is not None:
        lines.append(f"  relayed (broker confirmed):   {relayed.timestamp() - t0:7.2f} s after due")
    if received:
        lines.append(
            f"  all received on the queue:    {max(received) - t0:7.2f} s after due "
            f"(first at {min(received) - t0:.2f} s; {len(received) / max(1e-9, max(received) - t0):,.0f}/s)"
        )
    lines.append(f"  duplicates: {duplicates}   lost: {lost}   {'complete' if done else 'INCOMPLETE'}")


async def steady(
    dsn: str, amqp_url: str, key: str, per_minute: int, minutes: float, lines: list[str]
) -> None:
    count = int(per_minute * minutes)
    if count <= 0:
        return
    gap = 60.0 / per_minute
    start = datetime.now(UTC) + timedelta(seconds=5)
    dues = [start + timedelta(seconds=i * gap) for i in range(count)]
    async with recording(amqp_url) as recorder:
        say(f"steady: {count} occurrences, one every {gap * 1000:.0f} ms for {minutes} min")
        expected = await insert_schedules(dsn, key, dues)
        await recorder.wait(set(expected), within=(dues[-1] - datetime.now(UTC)).total_seconds() + 60)
        await asyncio.sleep(2)
    lateness = [
        min(recorder.arrivals[m]) - due.timestamp() for m, due in expected.items() if m in recorder.arrivals
    ]
    lost = len(set(expected) - recorder.arrivals.keys())
    duplicates = sum(len(v) - 1 for m, v in recorder.arrivals.items() if m in expected)
    lines.append(f"steady: {per_minute}/min for {minutes} min ({count} occurrences)")
    lines.append(
        f"  lateness (received - due): p50 {pct(lateness, 50) * 1000:.0f} ms, p99 {pct(lateness, 99) * 1000:.0f} ms, "
        f"max {max(lateness, default=float('nan')) * 1000:.0f} ms"
    )
    lines.append(f"  duplicates: {duplicates}   lost: {lost}")


async def claim_cost(
    db_url: str, key: str, sizes: list[int], due: int, repeats: int, lines: list[str]
) -> None:
    """The scheduler's own claim (``repository.claim_due``: lock up to ``due`` due rows, skipping
    locked ones) timed with ``due`` rows due and each of ``sizes`` schedules pending in the future,
    in a database of its own with no scheduler running. Each claim is rolled back, so every
    repetition claims the same rows. Target: the same cost at 1,000,000 pending as at 1,000."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from services.scheduler import repository as repo

    dsn = asyncpg_dsn(db_url)
    now = datetime.now(UTC)
    await insert_schedules(dsn, key, [now - timedelta(minutes=1)] * due)
    engine = create_async_engine(db_url)
    pending = 0
    results: list[tuple[int, float, float, int]] = []
    try:
        for size in sorted(sizes):
            if size > pending:
                say(f"claim cost: writing {size - pending:,} future schedules ({size:,} pending)")
                step = timedelta(days=365) / max(1, size - pending)
                base = now + timedelta(days=1)
                await insert_schedules(dsn, key, [base + i * step for i in range(size - pending)])
                pending = size
            timings = []
            claimed = 0
            for i in range(repeats + 2):  # the first two warm the connection and the cache up
                # a collection of this process's own heap (every few claims, ~100 ms) is not
                # the claim's cost: collect before each one instead of during it
                gc.collect()
                async with engine.connect() as conn:
                    t = time.perf_counter()
                    async with conn.begin() as tx:
                        claimed = len(await repo.claim_due(conn, datetime.now(UTC), due))
                        if i >= 2:
                            timings.append((time.perf_counter() - t) * 1000)
                        await tx.rollback()
            results.append((size, pct(timings, 50), pct(timings, 95), claimed))
    finally:
        await engine.dispose()
    lines.append(f"claim cost: {due:,} due rows, {repeats} claims each (rolled back), no scheduler running")
    base_p50 = results[0][1] if results else float("nan")
    for size, p50, p95, claimed in results:
        lines.append(
            f"  with {size:>9,} pending: claim p50 {p50:6.2f} ms, p95 {p95:6.2f} ms "
            f"({claimed:,} rows claimed; p50 {p50 / base_p50:.2f}x the smallest)"
        )


async def run(args: argparse.Namespace, db_url: str, amqp_url: str, logs: Path, lines: list[str]) -> None:
    env = herald_env(
        db_url,
        amqp_url,
        SCHEDULER_CLAIM_BATCH_SIZE=str(args.claim_batch),
        HERALD_OUTBOX_BATCH_SIZE=str(args.outbox_batch),
        HERALD_LOG_LEVEL="WARNING",
    )
    for extra in args.env:
        k, _, v = extra.partition("=")
        env[k] = v
    procs = [
        ServiceProcess("scheduler", free_port(), env, logs / f"scheduler-{i}.log")
        for i in range(args.processes)
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            await asyncio.to_thread(p.wait_ready)
        lines.append(
            f"{args.processes} scheduler process(es), claim batch {args.claim_batch}, outbox batch {args.outbox_batch}"
        )
        dsn = asyncpg_dsn(db_url)
        await burst(dsn, amqp_url, env["HERALD_ENCRYPTION_KEYS"], args.occurrences, lines)
        await steady(
            dsn, amqp_url, env["HERALD_ENCRYPTION_KEYS"], args.per_minute, args.steady_minutes, lines
        )
    finally:
        for p in procs:
            p.terminate(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scheduler", description=__doc__.split("\n\n")[0])
    parser.add_argument("--occurrences", type=int, default=100_000, help="burst size (default 100000)")
    parser.add_argument("--per-minute", type=int, default=1000, help="steady load per minute (default 1000)")
    parser.add_argument("--steady-minutes", type=float, default=3.0, help="steady phase length (default 3)")
    parser.add_argument("--processes", type=int, default=1, help="scheduler processes (default 1)")
    parser.add_argument(
        "--claim-batch", type=int, default=1000, help="SCHEDULER_CLAIM_BATCH_SIZE (default 1000)"
    )
    parser.add_argument(
        "--outbox-batch", type=int, default=500, help="HERALD_OUTBOX_BATCH_SIZE (default 500)"
    )
    parser.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for the processes")
    parser.add_argument(
        "--pending-sizes",
        default="1000,1000000",
        help="claim cost with this many future schedules pending, comma-separated; '' skips (default 1000,1000000)",
    )
    parser.add_argument("--claim-repeats", type=int, default=30, help="claims timed per size (default 30)")
    args = parser.parse_args(argv)

    state = Path(tempfile.mkdtemp(prefix="herald-bench-scheduler-"))
    logs = state / "logs"
    logs.mkdir()
    lines: list[str] = []
    handle = None
    db_name = server_url = None
    try:
        say("starting RabbitMQ and PostgreSQL")
        urls, handle = resolve_infra(state / "infra")
        server_url = urls.database_url
        db_name, db_url = create_migrated_database(urls.database_url, "herald_bench_sched")
        asyncio.run(run(args, db_url, urls.amqp_url, logs, lines))
        if args.pending_sizes:
            # a database of its own: the burst's schedules are pending again (tomorrow's
            # occurrences) and would count among the pending rows
            drop_database(server_url, db_name)
            db_name, db_url = create_migrated_database(urls.database_url, "herald_bench_sched")
            sizes = [int(x) for x in args.pending_sizes.split(",") if x]
            key = SecretBox.generate_key()
            asyncio.run(claim_cost(db_url, key, sizes, args.claim_batch, args.claim_repeats, lines))
    except KeyboardInterrupt:
        say("interrupted")
    except Exception:
        traceback.print_exc()
        lines.append("the benchmark failed: see the traceback above")
    finally:
        with contextlib.suppress(Exception):
            if db_name and server_url:
                drop_database(server_url, db_name)
        if handle is not None:
            handle.stop()
    print("\n".join(["", "Herald scheduler benchmark", *lines, f"service logs: {logs}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
