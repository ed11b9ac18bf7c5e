"""Benchmark of Herald's first slice: HTTP accept, end-to-end delivery, one-message latency, an order
event through all four services, memory, and a zero-loss check.

Run::

    uv run python -m bench.first_slice [--messages 2000] [--concurrency 32]

It sets everything up itself, like the end-to-end tests: RabbitMQ + PostgreSQL from
``devtools.infra.resolve_infra`` under a temporary folder (or the servers named by
HERALD_TEST_DATABASE_URL + HERALD_TEST_AMQP_URL), a fresh database migrated with the real
migrations, the four services as real ``herald run <service>`` processes on free ports and a
tenant from ``herald tenant create``. It measures, prints a report and stops everything it started.
The service logs are kept (their folder is printed); the broker and database data are removed.

This is a program that prints figures, not a test: it asserts nothing, but it says when a message
was lost, duplicated or not delivered in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from devtools.database import asyncpg_dsn, create_migrated_database, drop_database
from devtools.infra import resolve_infra
from devtools.processes import ServiceProcess, free_port, herald_cli, herald_env, ingest_env, pipeline_env
from herald.services import SERVICES

CLK_TCK = os.sysconf("SC_CLK_TCK")
ORDER_STATUSES = ("payment_confirmed", "preparing", "ready_for_pickup")


def say(message: str) -> None:
    """Progress goes to stderr; the report goes to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Small statistics and /proc helpers
# ------------------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """Percentile with linear interpolation between closest ranks (``nan`` for no values)."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.2f} s"


def dist(values: list[float]) -> str:
    return (
        f"p50 {ms(pct(values, 50))}, p99 {ms(pct(values, 99))}, max {ms(max(values) if values else math.nan)}"
    )


def proc_cpu_seconds(pid: int, reaped_children: bool = False) -> float:
    """User + system CPU seconds of one process (0 if it is gone); with ``reaped_children``, plus
    the CPU of its children that already exited (a PostgreSQL backend that closed, for example)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = data[data.rindex(")") + 2 :].split()
    own = int(fields[11]) + int(fields[12])
    children = int(fields[13]) + int(fields[14]) if reaped_children else 0
    return (own + children) / CLK_TCK


def proc_memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of one process in MiB: resident now, and its peak."""
    values = {"VmRSS": math.nan, "VmHWM": math.nan}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) / 1024  # kB
    except OSError:
        pass
    return values["VmRSS"], values["VmHWM"]


def machine_cpu() -> tuple[float, float, float]:
    """(busy, total, interrupts) CPU seconds of the whole machine since boot, summed over all cores;
    ``interrupts`` is irq + softirq + steal time, which no process is charged for (loopback TCP
    between the services and the servers is mostly softirq)."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(parts[:8])  # user nice system idle iowait irq softirq steal
    idle = parts[3] + parts[4]
    return (total - idle) / CLK_TCK, total / CLK_TCK, (parts[5] + parts[6] + parts[7]) / CLK_TCK


def _procs() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, comm, cmdline) of every live process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = (
                Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        out[int(entry)] = (int(stat[stat.rindex(")") + 2 :].split()[1]), comm, cmdline)
    return out


def server_cpu(state_dir: Path | None) -> dict[str, float]:
    """CPU seconds of this run's own PostgreSQL and RabbitMQ: the servers whose command line names
    our state folder, with all their descendants (backends, Erlang helpers). Other servers on the
    machine (a concurrent test run) are not counted. Empty when the servers are not ours (env, Docker).
    Kernel threads (ksoftirqd, kworker: loopback networking) are counted apart."""
    if state_dir is None:
        return {}
    procs = _procs()
    marker = str(state_dir)
    roots = {
        "postgres": {pid for pid, (_, comm, cmd) in procs.items() if comm == "postgres" and marker in cmd},
        "rabbitmq": {pid for pid, (_, comm, cmd) in procs.items() if comm == "beam.smp" and marker in cmd},
    }
    totals = {
        "kernel threads": sum(proc_cpu_seconds(pid) for pid, (ppid, _, _) in procs.items() if ppid == 2)
    }
    for group, members in roots.items():
        top = set(members)
        grew = True
        while grew:
            grew = False
            for pid, (ppid, _, _) in procs.items():
                if pid not in members and ppid in members:
                    members.add(pid)
                    grew = True
        totals[group] = sum(proc_cpu_seconds(pid, reaped_children=pid in top) for pid in members)
    return totals


@dataclass
class CpuSnapshot:
    wall: float
    services: dict[str, float]
    servers: dict[str, float]
    bench: float
    machine_busy: float
    machine_total: float
    interrupts: float


def cpu_snapshot(services: dict[str, ServiceProcess], state_dir: Path | None) -> CpuSnapshot:
    busy, total, interrupts = machine_cpu()
    return CpuSnapshot(
        wall=time.monotonic(),
        services={n: proc_cpu_seconds(s.proc.pid) for n, s in services.items() if s.proc is not None},
        servers=server_cpu(state_dir),
        bench=time.process_time(),
        machine_busy=busy,
        machine_total=total,
        interrupts=interrupts,
    )


def cpu_line(before: CpuSnapshot, after: CpuSnapshot, per: int, unit: str) -> list[str]:
    """Where the CPU went during a phase: each service, this client, and everything else
    (PostgreSQL, RabbitMQ, the OS), in seconds and in CPU milliseconds per ``unit``."""
    wall = after.wall - before.wall
    svc = {n: after.services.get(n, 0.0) - before.services.get(n, 0.0) for n in before.services}
    svc = {n: v for n, v in svc.items() if v >= 0.05}  # idle services are left out
    srv = {n: max(0.0, after.servers.get(n, 0.0) - before.servers.get(n, 0.0)) for n in before.servers}
    bench = after.bench - before.bench
    busy = after.machine_busy - before.machine_busy
    total = after.machine_total - before.machine_total
    interrupts = after.interrupts - before.interrupts
    other = max(0.0, busy - sum(svc.values()) - sum(srv.values()) - bench - interrupts)
    cores = os.cpu_count() or 1
    parts = ", ".join(f"{n} {v:.1f}" for n, v in {**svc, **srv}.items())
    per_unit = ", ".join(f"{n} {1000 * v / per:.1f}" for n, v in {**svc, **srv}.items())
    lines = [
        f"CPU during phase ({wall:.1f} s wall, machine {100 * busy / total if total else 0:.0f}% busy of "
        f"{cores} cores), CPU s: {parts}, bench client {bench:.1f}, irq/softirq {interrupts:.1f}, "
        f"other processes {other:.1f}",
        f"CPU ms per {unit}: {per_unit}, bench client {1000 * bench / per:.1f}",
    ]
    if other > 0.1 * busy and before.servers:
        lines.append(
            f"WARNING: {other:.1f} CPU s ({100 * other / (wall * cores):.0f}% of the machine) went to processes "
            "outside this benchmark (another workload?): the figures above are pessimistic"
        )
    return lines


# ------------------------------------------------------------------------------------------------
# HTTP clients
# ------------------------------------------------------------------------------------------------


def make_client(base_url: str, api_key: str, concurrency: int, transport_name: str) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    transport: httpx.AsyncBaseTransport
    if transport_name == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits)
    else:
        transport = httpx.AsyncHTTPTransport(limits=limits)
    return httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60, transport=transport
    )


async def pick_transport(base_url: str, api_key: str, wanted: str) -> tuple[str, str]:
    """The transport to use and a sentence saying which and why."""
    if wanted == "httpx":
        return "httpx", "httpx.AsyncClient, plain httpx transport (asked for)"
    try:
        client = make_client(base_url, api_key, 1, "aiohttp")
        async with client:
            response = await client.get("/livez")
            response.raise_for_status()
            await client.get("/v1/messages", params={"limit": 1})
        return "aiohttp", "httpx.AsyncClient over httpx_aiohttp.AiohttpTransport"
    except Exception as exc:
        if wanted == "aiohttp":
            raise
        return "httpx", f"httpx.AsyncClient, plain httpx transport (aiohttp transport failed: {exc!r:.120})"


async def run_concurrent(n: int, concurrency: int, fn: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """Call ``fn(0..n-1)`` with ``concurrency`` workers, each taking the next index when it is free."""
    results: list[Any] = [None] * n
    indices = iter(range(n))

    async def worker() -> None:
        for i in indices:
            results[i] = await fn(i)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    return results


@dataclass
class Post:
    started: float  # wall clock (time.time) when the request was sent: compared with DB timestamps
    latency: float  # seconds until the whole answer was read
    status: int  # HTTP status, 0 for a transport error
    body: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


async def timed_post(client: httpx.AsyncClient, path: str, payload: dict[str, Any]) -> Post:
    started = time.time()
    t0 = time.perf_counter()
    try:
        response = await client.post(path, json=payload)
        body = response.json() if response.content else {}
        return Post(started, time.perf_counter() - t0, response.status_code, body)
    except (httpx.HTTPError, ValueError) as exc:
        return Post(started, time.perf_counter() - t0, 0, {}, repr(exc)[:200])


# ------------------------------------------------------------------------------------------------
# Waiting for delivery, from the sender's tables
# ------------------------------------------------------------------------------------------------


async def wait_count(
    conn: asyncpg.Connection, query: str, args: tuple[Any, ...], target: int, limit: float, what: str
) -> tuple[int, bool]:
    """Poll ``query`` (a count) every 200 ms until it reaches ``target``. Completion times come
    from the database's own timestamps, so the poll interval does not blur the figures."""
    deadline = time.monotonic() + limit
    last_report = time.monotonic()
    while True:
        count = int(await conn.fetchval(query, *args))
        if count >= target:
            return count, True
        if time.monotonic() > deadline:
            say(f"TIMEOUT waiting for {what}: {count}/{target} after {limit:.0f} s")
            return count, False
        if time.monotonic() - last_report > 5:
            say(f"  waiting for {what}: {count}/{target}")
            last_report = time.monotonic()
        await asyncio.sleep(0.2)


#: Cheap completion poll (index on tenant_id, created_at): the phases run one after the other, so
#: every message of ``origin`` created since the phase began belongs to the phase.
POLL_SENT = """
SELECT count(*) FROM sender.messages
WHERE tenant_id = $1 AND created_at >= $2 AND origin = $3 AND status = 'sent'
"""

HISTORY_BY_ID = """
SELECT h.message_id,
       min(h.at) FILTER (WHERE h.status = 'queued')  AS queued_at,
       min(h.at) FILTER (WHERE h.status = 'sending') AS sending_at,
       min(h.at) FILTER (WHERE h.status = 'sent')    AS sent_at
FROM sender.message_history h
WHERE h.message_id = ANY($1::uuid[])
GROUP BY h.message_id
"""

LOSS_BY_ID = """
SELECT (SELECT count(*) FROM sender.messages WHERE id = ANY($1::uuid[]))                          AS stored,
       (SELECT count(*) FROM sender.messages WHERE id = ANY($1::uuid[]) AND status = 'sent')      AS sent,
       (SELECT count(*) FROM sender.messages WHERE id = ANY($1::uuid[]) AND status = 'failed')    AS failed,
       (SELECT count(*) FROM sender.sandbox_messages WHERE message_id = ANY($1::uuid[]))          AS sandbox_rows,
       (SELECT count(DISTINCT message_id) FROM sender.sandbox_messages
         WHERE message_id = ANY($1::uuid[]))                                                      AS sandbox_ids,
       (SELECT count(*) FROM (SELECT message_id FROM sender.sandbox_messages
         WHERE message_id = ANY($1::uuid[]) GROUP BY message_id HAVING count(*) > 1) d)           AS duplicated_ids
"""


async def outbox_times(
    conn: asyncpg.Connection, schema: str, routing_key: str, since: Any, key: str
) -> dict[str, tuple[float, float | None]]:
    """(created, published) epoch seconds of one service's outbox rows of one type since ``since``,
    keyed by a JSON path of the CloudEvent body (``key`` is SQL on the jsonb ``b``). ``published_at``
    is ``now()`` of the relay's transaction, i.e. when the relay claimed the batch (its publishes
    and their confirms follow within that transaction)."""
    rows = await conn.fetch(
        f"""SELECT {key} AS k, created_at, published_at
            FROM (SELECT convert_from(body, 'UTF8')::jsonb AS b, created_at, published_at
                  FROM {schema}.outbox WHERE routing_key = $1 AND created_at >= $2) o""",
        routing_key,
        since,
    )
    return {
        r["k"]: (r["created_at"].timestamp(), r["published_at"].timestamp() if r["published_at"] else None)
        for r in rows
    }


async def relay_line(conn: asyncpg.Connection, schemas: tuple[str, ...], since: Any) -> str:
    """Outbox rows each service wrote during the phase, and how fast its relay published them."""
    parts = []
    for schema in schemas:
        row = await conn.fetchrow(
            f"""SELECT count(*) AS n, count(published_at) AS published, max(published_at) AS last,
                       count(*) FILTER (WHERE routing_key LIKE 'message.status.v1%') AS status_events
                FROM {schema}.outbox WHERE created_at >= $1""",
            since,
        )
        if not row["n"]:
            continue
        span = (row["last"] - since).total_seconds() if row["last"] else math.nan
        parts.append(
            f"{schema} {row['n']} rows ({row['status_events']} message.status), "
            f"{row['published']} published by +{span:.1f} s = {row['published'] / span:.0f}/s"
        )
    return "outbox relays during the phase: " + "; ".join(parts)


async def pg_sessions(conn: asyncpg.Connection) -> int:
    """Sessions ever opened on this database (PostgreSQL 14+; -1 before). Pools that keep their
    connections open none during a phase; SQLAlchemy's overflow connections (beyond db_pool_size)
    are closed when returned, so a pool that overflows keeps opening new backends."""
    try:
        return int(
            await conn.fetchval("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        )
    except asyncpg.PostgresError:
        return -1


def stage(values: list[float]) -> str:
    return f"{ms(pct(values, 50))} (p99 {ms(pct(values, 99))})"


@dataclass
class LossCheck:
    flow: str
    accepted: int
    stored: int
    sent: int
    failed: int
    sandbox_rows: int
    sandbox_ids: int
    duplicated_ids: int

    @property
    def loss(self) -> int:
        return self.accepted - self.sandbox_ids

    @property
    def duplicates(self) -> int:
        return self.sandbox_rows - self.sandbox_ids

    def line(self) -> str:
        return (
            f"{self.flow}: accepted {self.accepted}, stored {self.stored}, sent {self.sent}, failed {self.failed}, "
            f"sandbox rows {self.sandbox_rows} ({self.sandbox_ids} distinct messages, {self.duplicated_ids} "
            f"with >1 row) -> loss: {self.loss}, duplicates: {self.duplicates}"
        )


async def loss_check(conn: asyncpg.Connection, flow: str, ids: list[uuid.UUID]) -> LossCheck:
    row = await conn.fetchrow(LOSS_BY_ID, ids)
    return LossCheck(
        flow,
        len(ids),
        row["stored"],
        row["sent"],
        row["failed"],
        row["sandbox_rows"],
        row["sandbox_ids"],
        row["duplicated_ids"],
    )


# ------------------------------------------------------------------------------------------------
# The measurements
# ------------------------------------------------------------------------------------------------


@dataclass
class Context:
    services: dict[str, ServiceProcess]
    api_key: str
    tenant_id: uuid.UUID
    dsn: str
    amqp_url: str
    messages: int
    concurrency: int
    singles: int
    orders: int
    timeout: float
    state_dir: Path | None = None
    transport: str = "httpx"
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    report: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    losses: list[LossCheck] = field(default_factory=list)

    def out(self, line: str = "") -> None:
        self.report.append(line)

    def url(self, service: str) -> str:
        return self.services[service].url


def phone(block: int, i: int) -> str:
    """A valid Brazilian mobile number, distinct per (block, i): no two messages of a run share a
    recipient, so per-recipient pacing would never be what is measured."""
    return f"+55119{block}{i:07d}"


def order_event(run: str, i: int) -> tuple[dict[str, Any], str, str]:
    order_id = f"{run}-{i:05d}"
    status = ORDER_STATUSES[i % len(ORDER_STATUSES)]
    event = {
        "specversion": "1.0",
        "id": f"bench-{run}-{i}",
        "source": "/bench/orders",
        "type": "order.status_changed",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": {"order_id": order_id, "status": status, "customer_phone": phone(7, i)},
    }
    return event, f"order:{order_id}", f"Your order {order_id} is {status.replace('_', ' ')}"


async def warm_up(ctx: Context, conn: asyncpg.Connection) -> None:
    """A few messages and events through every path, so that the measured phases do not pay for
    first connections, lazy imports, queue declarations or the API-key cache."""
    say("warm-up: 50 messages and 10 order events (not measured)")
    async with (
        make_client(ctx.url("sender"), ctx.api_key, 8, ctx.transport) as sender,
        make_client(ctx.url("ingest"), ctx.api_key, 8, ctx.transport) as ingest,
    ):
        posts = await run_concurrent(
            50, 8, lambda i: timed_post(sender, "/v1/messages", {"to": phone(1, i), "text": f"warm-up {i}"})
        )
        events = [order_event(f"w{ctx.run}", i) for i in range(10)]
        eposts = await run_concurrent(10, 8, lambda i: timed_post(ingest, "/v1/events", events[i][0]))
    bad = [p for p in posts + eposts if p.status not in (200, 202)]
    if bad:
        raise RuntimeError(f"warm-up requests failed: {bad[:3]}")
    ids = [uuid.UUID(p.body["id"]) for p in posts]
    await wait_count(
        conn,
        "SELECT count(*) FROM sender.messages WHERE id = ANY($1::uuid[]) AND status = 'sent'",
        (ids,),
        len(ids),
        ctx.timeout,
        "warm-up messages",
    )
    corr = [e[1] for e in events]
    await wait_count(
        conn,
        "SELECT count(*) FROM sender.messages WHERE correlation_id = ANY($1::text[]) "
        "AND tenant_id = $2 AND status = 'sent'",
        (corr, ctx.tenant_id),
        len(corr),
        ctx.timeout,
        "warm-up order messages",
    )
    ctx.losses.append(await loss_check(conn, "warm-up messages", ids))


async def bench_accept_and_delivery(ctx: Context, conn: asyncpg.Connection) -> None:
    n, c = ctx.messages, ctx.concurrency
    say(f"1+2. accept + end-to-end: {n} POST /v1/messages with {c} concurrent clients")
    before = cpu_snapshot(ctx.services, ctx.state_dir)
    phase_start = await conn.fetchval("SELECT now()")
    sessions_before = await pg_sessions(conn)
    sampler = BacklogSampler(ctx)
    sampler.start()
    async with make_client(ctx.url("sender"), ctx.api_key, c, ctx.transport) as client:
        t0 = time.perf_counter()
        posts: list[Post] = await run_concurrent(
            n,
            c,
            lambda i: timed_post(
                client,
                "/v1/messages",
                {"to": phone(2, i), "text": f"bench {ctx.run} message {i}", "priority": 5},
            ),
        )
        accept_wall = time.perf_counter() - t0
    ok = [p for p in posts if p.status == 202]
    statuses = Counter(p.status for p in posts)
    first_start = min(p.started for p in posts)
    last_end = max(p.started + p.latency for p in posts)
    ids = [uuid.UUID(p.body["id"]) for p in ok]
    started_by_id = {uuid.UUID(p.body["id"]): p.started for p in ok}
    lat = [p.latency for p in ok]

    ctx.out("1. Accept throughput — POST /v1/messages")
    ctx.out(
        f"   {n} requests, {c} concurrent: {n / accept_wall:.0f} requests/s ({accept_wall:.2f} s); "
        f"202: {len(ok)}"
        + ("" if len(ok) == n else f", other: {dict((k, v) for k, v in statuses.items() if k != 202)}")
    )
    ctx.out(
        f"   POST latency: p50 {ms(pct(lat, 50))}, p99 {ms(pct(lat, 99))}, max {ms(max(lat) if lat else math.nan)}"
    )
    errors = [p.error or p.body for p in posts if p.status != 202][:3]
    if errors:
        ctx.out(f"   first errors: {errors}")

    _, complete = await wait_count(
        conn, POLL_SENT, (ctx.tenant_id, phase_start, "api"), len(ids), ctx.timeout, "messages to be sent"
    )
    after = cpu_snapshot(ctx.services, ctx.state_dir)
    await sampler.stop()
    rows = await conn.fetch(HISTORY_BY_ID, ids)
    sent_rows = [r for r in rows if r["sent_at"] is not None]
    last_sent = max((r["sent_at"].timestamp() for r in sent_rows), default=math.nan)
    e2e_wall = last_sent - first_start
    queued_to_sent = [(r["sent_at"] - r["queued_at"]).total_seconds() for r in sent_rows if r["queued_at"]]
    queued_to_sending = [
        (r["sending_at"] - r["queued_at"]).total_seconds() for r in sent_rows if r["sending_at"]
    ]
    sending_to_sent = [(r["sent_at"] - r["sending_at"]).total_seconds() for r in sent_rows if r["sending_at"]]
    post_to_sent = [r["sent_at"].timestamp() - started_by_id[r["message_id"]] for r in sent_rows]

    ctx.out("2. End-to-end delivery — first POST until all sent (sandbox provider)")
    ctx.out(
        f"   {len(sent_rows)}/{len(ids)} sent{'' if complete else ' (TIMED OUT)'} in {e2e_wall:.2f} s: "
        f"{len(sent_rows) / e2e_wall:.0f} delivered messages/s; last sent {last_sent - last_end:.2f} s after the last POST answered"
    )
    ctx.out(f"   per message, queued -> sent (history): {dist(queued_to_sent)}")
    ctx.out(
        f"     of which queued -> sending {dist(queued_to_sending)}; sending -> sent {dist(sending_to_sent)}"
    )
    ctx.out(f"   per message, client POST -> sent: {dist(post_to_sent)}")
    relay = await outbox_times(conn, "sender", "message.requested.v1", phase_start, "b->>'subject'")
    hist = {str(r["message_id"]): r for r in sent_rows}
    to_relay, to_consumer = [], []
    for mid, (_created, published) in relay.items():
        r = hist.get(mid)
        if r is None or published is None or r["sending_at"] is None:
            continue
        to_relay.append(published - r["queued_at"].timestamp())
        to_consumer.append(r["sending_at"].timestamp() - published)
    ctx.out(
        f"   stages, p50 (p99): queued -> message.requested claimed by the sender's outbox relay {stage(to_relay)}; "
        f"-> consumed (sending) {stage(to_consumer)}; -> sent {stage(sending_to_sent)}"
    )
    ctx.out("   " + await relay_line(conn, ("sender",), phase_start))
    ctx.out("   " + sampler.line())
    ctx.results["_sessions"] = sessions_before
    for line in cpu_line(before, after, max(1, len(ids)), "message"):
        ctx.out("   " + line)
    ctx.results["accept"] = {
        "requests": n,
        "concurrency": c,
        "rps": n / accept_wall,
        "ok": len(ok),
        "statuses": {str(k): v for k, v in statuses.items()},
        "p50_ms": 1000 * pct(lat, 50),
        "p99_ms": 1000 * pct(lat, 99),
    }
    ctx.results["delivery"] = {
        "sent": len(sent_rows),
        "complete": complete,
        "seconds": e2e_wall,
        "msgs_per_s": len(sent_rows) / e2e_wall,
        "queued_to_sent_p50_ms": 1000 * pct(queued_to_sent, 50),
        "queued_to_sent_p99_ms": 1000 * pct(queued_to_sent, 99),
        "post_to_sent_p50_ms": 1000 * pct(post_to_sent, 50),
        "post_to_sent_p99_ms": 1000 * pct(post_to_sent, 99),
    }
    ctx.losses.append(await loss_check(conn, f"{n} concurrent messages", ids))
    ctx.results["_bulk_ids"] = ids


async def bench_single(ctx: Context, conn: asyncpg.Connection) -> None:
    n = ctx.singles
    say(f"3. single-message latency: {n} sequential POST, then GET every 5 ms until sent")
    latencies: list[float] = []
    post_lat: list[float] = []
    polls: list[int] = []
    ids: list[uuid.UUID] = []
    server: list[float] = []
    phase_start = await conn.fetchval("SELECT now()")
    async with make_client(ctx.url("sender"), ctx.api_key, 2, ctx.transport) as client:
        for i in range(n):
            t0 = time.perf_counter()
            response = await client.post(
                "/v1/messages", json={"to": phone(3, i), "text": f"single {i}", "priority": 9}
            )
            post_lat.append(time.perf_counter() - t0)
            if response.status_code != 202:
                ctx.out(f"   single message {i}: POST answered {response.status_code} {response.text[:200]}")
                continue
            message_id = response.json()["id"]
            ids.append(uuid.UUID(message_id))
            count = 0
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                count += 1
                body = (await client.get(f"/v1/messages/{message_id}")).json()
                if body.get("status") == "sent":
                    latencies.append(time.perf_counter() - t0)
                    hist = {h["status"]: h["at"] for h in body["history"]}
                    server.append(
                        (
                            datetime.fromisoformat(hist["sent"]) - datetime.fromisoformat(hist["queued"])
                        ).total_seconds()
                    )
                    break
                if body.get("status") == "failed":
                    ctx.out(f"   single message {i} failed: {body.get('status_reason')}")
                    break
                await asyncio.sleep(0.005)
            polls.append(count)
    ctx.out(f"3. Single-message latency — {n} sequential messages, POST then poll GET every 5 ms")
    ctx.out(
        f"   client POST -> seen sent: p50 {ms(pct(latencies, 50))}, p99 {ms(pct(latencies, 99))}, "
        f"max {ms(max(latencies) if latencies else math.nan)} ({len(latencies)}/{n} seen sent)"
    )
    ctx.out(
        f"   of which POST answered: p50 {ms(pct(post_lat, 50))}; server queued -> sent: p50 {ms(pct(server, 50))}, "
        f"p99 {ms(pct(server, 99))}; GET polls per message: p50 {pct([float(p) for p in polls], 50):.0f}"
    )
    rows = {str(r["message_id"]): r for r in await conn.fetch(HISTORY_BY_ID, ids)}
    relay = await outbox_times(conn, "sender", "message.requested.v1", phase_start, "b->>'subject'")
    to_relay, to_consumer, to_sent = [], [], []
    for mid, (_created, published) in relay.items():
        r = rows.get(mid)
        if r is None or published is None or r["sending_at"] is None or r["sent_at"] is None:
            continue
        to_relay.append(published - r["queued_at"].timestamp())
        to_consumer.append(r["sending_at"].timestamp() - published)
        to_sent.append((r["sent_at"] - r["sending_at"]).total_seconds())
    ctx.out(
        f"   stages, p50 (p99): queued -> claimed by outbox relay {stage(to_relay)}; -> sending {stage(to_consumer)}; "
        f"-> sent {stage(to_sent)}"
    )
    slow = sorted(((s, i) for i, s in enumerate(server)), reverse=True)[:3]
    ctx.out("   slowest (server queued -> sent): " + ", ".join(f"#{i} {ms(v)}" for v, i in slow))
    ctx.results["single"] = {
        "n": n,
        "seen_sent": len(latencies),
        "p50_ms": 1000 * pct(latencies, 50),
        "p99_ms": 1000 * pct(latencies, 99),
        "max_ms": 1000 * (max(latencies) if latencies else math.nan),
        "server_p50_ms": 1000 * pct(server, 50),
    }
    ctx.losses.append(await loss_check(conn, f"{n} sequential messages", ids))


async def bench_orders(ctx: Context, conn: asyncpg.Connection) -> None:
    n, c = ctx.orders, ctx.concurrency
    say(f"4. order events: {n} order.status_changed POST /v1/events (ingest) with {c} concurrent clients")
    events = [order_event(ctx.run, i) for i in range(n)]
    before = cpu_snapshot(ctx.services, ctx.state_dir)
    phase_start = await conn.fetchval("SELECT now()")
    ctx.results["_sessions"] = await pg_sessions(conn)
    sampler = BacklogSampler(ctx)
    sampler.start()
    async with make_client(ctx.url("ingest"), ctx.api_key, c, ctx.transport) as client:
        t0 = time.perf_counter()
        posts: list[Post] = await run_concurrent(
            n, c, lambda i: timed_post(client, "/v1/events", events[i][0])
        )
        post_wall = time.perf_counter() - t0
    ok = [i for i, p in enumerate(posts) if p.status == 202]
    statuses = Counter(p.status for p in posts)
    corr = [events[i][1] for i in ok]
    started = {events[i][1]: posts[i].started for i in ok}
    expected_text = {events[i][1]: events[i][2] for i in ok}
    first_start = min(p.started for p in posts)
    lat = [posts[i].latency for i in ok]

    _, complete = await wait_count(
        conn,
        POLL_SENT,
        (ctx.tenant_id, phase_start, "pipeline"),
        len(corr),
        ctx.timeout,
        "order messages to be sent",
    )
    after = cpu_snapshot(ctx.services, ctx.state_dir)
    await sampler.stop()
    rows = await conn.fetch(
        """SELECT m.id, m.correlation_id, m.status,
                  min(h.at) FILTER (WHERE h.status = 'queued') AS queued_at,
                  min(h.at) FILTER (WHERE h.status = 'sent')   AS sent_at
           FROM sender.messages m JOIN sender.message_history h ON h.message_id = m.id
           WHERE m.correlation_id = ANY($1::text[]) AND m.tenant_id = $2
           GROUP BY m.id, m.correlation_id, m.status""",
        corr,
        ctx.tenant_id,
    )
    sent_rows = [r for r in rows if r["sent_at"] is not None]
    last_sent = max((r["sent_at"].timestamp() for r in sent_rows), default=math.nan)
    wall = last_sent - first_start
    e2e = [r["sent_at"].timestamp() - started[r["correlation_id"]] for r in sent_rows]
    to_sender = [
        r["queued_at"].timestamp() - started[r["correlation_id"]] for r in sent_rows if r["queued_at"]
    ]
    texts = await conn.fetch(
        """SELECT m.correlation_id, s.text FROM sender.sandbox_messages s JOIN sender.messages m ON m.id = s.message_id
           WHERE m.correlation_id = ANY($1::text[]) AND m.tenant_id = $2""",
        corr,
        ctx.tenant_id,
    )
    wrong_text = sum(1 for t in texts if expected_text.get(t["correlation_id"]) != t["text"])
    corr_count = Counter(r["correlation_id"] for r in rows)

    ctx.out(f"4. Order event through ingest -> pipeline -> sender — {n} order.status_changed, {c} concurrent")
    ctx.out(
        f"   ingest POST /v1/events: {n / post_wall:.0f} requests/s, p50 {ms(pct(lat, 50))}, p99 {ms(pct(lat, 99))}; "
        f"202: {len(ok)}"
        + ("" if len(ok) == n else f", other: {dict((k, v) for k, v in statuses.items() if k != 202)}")
    )
    ctx.out(
        f"   {len(sent_rows)}/{len(corr)} sandbox messages{'' if complete else ' (TIMED OUT)'} in {wall:.2f} s "
        f"from the first POST: {len(sent_rows) / wall:.0f} events/s delivered"
    )
    ctx.out(f"   per event, ingest POST -> sent: {dist(e2e)}")
    ctx.out(f"     of which ingest POST -> stored by sender (queued): {dist(to_sender)}")
    ingest_rows = await outbox_times(
        conn, "ingest", "order.status_changed.v1", phase_start, "b->'data'->>'order_id'"
    )
    pipeline_rows = await outbox_times(conn, "pipeline", "message.requested.v1", phase_start, "b->>'subject'")
    hops: dict[str, list[float]] = {
        k: [] for k in ("post", "ingest relay", "to pipeline", "pipeline relay", "to sender", "sender")
    }
    for r in sent_rows:
        order_id = r["correlation_id"].removeprefix("order:")
        i_row, p_row = ingest_rows.get(order_id), pipeline_rows.get(f"order/{order_id}")
        if not i_row or not p_row or i_row[1] is None or p_row[1] is None:
            continue
        hops["post"].append(i_row[0] - started[r["correlation_id"]])
        hops["ingest relay"].append(i_row[1] - i_row[0])
        hops["to pipeline"].append(p_row[0] - i_row[1])
        hops["pipeline relay"].append(p_row[1] - p_row[0])
        hops["to sender"].append(r["queued_at"].timestamp() - p_row[1])
        hops["sender"].append(r["sent_at"].timestamp() - r["queued_at"].timestamp())
    ctx.out(
        f"   hops, p50 (p99): POST -> ingest tx {stage(hops['post'])}; -> claimed by ingest relay "
        f"{stage(hops['ingest relay'])}; -> pipeline handler tx {stage(hops['to pipeline'])}; -> claimed by "
        f"pipeline relay {stage(hops['pipeline relay'])}; -> sender queued {stage(hops['to sender'])}; "
        f"-> sent {stage(hops['sender'])}"
    )
    ctx.out(
        "     (a relay's claim time is the start of its batch; publishing the batch falls in the next hop)"
    )
    ctx.out("   " + await relay_line(conn, ("ingest", "pipeline", "sender"), phase_start))
    ctx.out("   " + sampler.line())
    ctx.out(
        f'   texts as expected ("Your order {{id}} is {{status}}"): {len(texts) - wrong_text}/{len(texts)}; '
        f"orders with more than one message: {sum(1 for v in corr_count.values() if v > 1)}"
    )
    for line in cpu_line(before, after, max(1, len(corr)), "event"):
        ctx.out("   " + line)
    ctx.results["orders"] = {
        "n": n,
        "ok": len(ok),
        "ingest_rps": n / post_wall,
        "ingest_p50_ms": 1000 * pct(lat, 50),
        "ingest_p99_ms": 1000 * pct(lat, 99),
        "sent": len(sent_rows),
        "complete": complete,
        "events_per_s": len(sent_rows) / wall,
        "e2e_p50_ms": 1000 * pct(e2e, 50),
        "e2e_p99_ms": 1000 * pct(e2e, 99),
        "wrong_text": wrong_text,
    }
    ctx.losses.append(await loss_check(conn, f"{n} order events", [r["id"] for r in rows]))
    if len(rows) != len(corr):
        ctx.out(f"   LOSS: {len(corr) - len(rows)} accepted order events never became a sender message")
        ctx.losses[-1].accepted = len(corr)


class BacklogSampler:
    """Samples, every 200 ms during a phase, the unpublished rows of each outbox and the ready
    messages of each work queue, and keeps the maxima: where the work piles up is the bottleneck."""

    QUEUES = ("pipeline.order.status_changed", "sender.message.requested")

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.peaks: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task

    async def _run(self) -> None:
        import aio_pika

        conn = await asyncpg.connect(self.ctx.dsn)
        amqp = await aio_pika.connect(self.ctx.amqp_url)
        try:
            channel = await amqp.channel()
            query = "SELECT " + ", ".join(
                f"(SELECT count(*) FROM {s}.outbox WHERE published_at IS NULL) AS {s}" for s in SERVICES
            )
            while True:
                row = await conn.fetchrow(query)
                for schema in SERVICES:
                    key = f"{schema} outbox"
                    self.peaks[key] = max(self.peaks.get(key, 0), int(row[schema]))
                for name in self.QUEUES:
                    queue = await channel.declare_queue(name, passive=True)  # its current depth
                    depth = queue.declaration_result.message_count or 0
                    self.peaks[name] = max(self.peaks.get(name, 0), depth)
                await asyncio.sleep(0.2)
        finally:
            await conn.close()
            await amqp.close()

    def line(self) -> str:
        return (
            "peak backlog during the phase (unpublished outbox rows; ready messages in queue): "
            + ", ".join(f"{k} {v}" for k, v in self.peaks.items() if v or "outbox" not in k)
        )


async def settle(ctx: Context, conn: asyncpg.Connection, after: str, quiet: bool = False) -> None:
    """Wait until every outbox is published, so that the next phase starts on an idle system (and
    say how long the relays still needed after the phase's last message was sent)."""
    query = " + ".join(f"(SELECT count(*) FROM {s}.outbox WHERE published_at IS NULL)" for s in SERVICES)
    t0 = time.monotonic()
    pending = int(await conn.fetchval(f"SELECT {query}"))
    first = pending
    while pending and time.monotonic() - t0 < ctx.timeout:
        await asyncio.sleep(0.05)
        pending = int(await conn.fetchval(f"SELECT {query}"))
    if first and not quiet:
        ctx.out(
            f"   after {after}: {first} outbox rows were still unpublished; the relays needed "
            f"{time.monotonic() - t0:.2f} s more" + (f" ({pending} LEFT)" if pending else "")
        )
    before = ctx.results.pop("_sessions", None)
    if before is not None and before >= 0 and not quiet:
        await asyncio.sleep(1.2)  # backends report their statistics at most once a second
        opened = await pg_sessions(conn) - before
        ctx.out(
            f"   PostgreSQL sessions opened during the phase: {opened}"
            + (" (pool overflow connections, opened and closed under load)" if opened > 20 else "")
        )


async def queue_depths(amqp_url: str) -> dict[str, int | str]:
    """Messages left in Herald's queues (passive declares; a missing queue is reported as such)."""
    import aio_pika

    names = [
        "sender.message.requested",
        "pipeline.order.status_changed",
        "herald.unrouted",
        *(f"{s}.dead-letters" for s in SERVICES),
    ]
    depths: dict[str, int | str] = {}
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for name in names:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
                depths[name] = queue.declaration_result.message_count
            except Exception as exc:
                depths[name] = f"({type(exc).__name__})"
            finally:
                if not channel.is_closed:
                    await channel.close()
    return depths


async def measure(ctx: Context) -> None:
    conn = await asyncpg.connect(ctx.dsn)
    try:
        ctx.transport, transport_note = await pick_transport(ctx.url("sender"), ctx.api_key, ctx.transport)
        ctx.out(f"HTTP client: {transport_note}")
        pg_version = await conn.fetchval("SHOW server_version")
        fsync = await conn.fetchval("SHOW fsync")
        sync_commit = await conn.fetchval("SHOW synchronous_commit")
        ctx.out(f"PostgreSQL {pg_version.split()[0]} (fsync={fsync}, synchronous_commit={sync_commit})")
        before = cpu_snapshot(ctx.services, ctx.state_dir)
        await asyncio.sleep(2.0)
        after = cpu_snapshot(ctx.services, ctx.state_dir)
        busy = (after.machine_busy - before.machine_busy) / (after.machine_total - before.machine_total)
        ctx.out(
            f"machine before the run (Herald idle): {100 * busy:.0f}% busy, load average "
            f"{os.getloadavg()[0]:.2f}"
            + ("  <- WARNING: something else is using the machine" if busy > 0.15 else "")
        )
        ctx.out("")
        await warm_up(ctx, conn)
        await settle(ctx, conn, "the warm-up", quiet=True)
        await bench_accept_and_delivery(ctx, conn)
        await settle(ctx, conn, "the last message was sent")
        ctx.out("")
        await bench_single(ctx, conn)
        await settle(ctx, conn, "the last message was sent")
        ctx.out("")
        await bench_orders(ctx, conn)
        await settle(ctx, conn, "the last message was sent")
        ctx.out("")

        ctx.out("5. Memory of the service processes after the run (RSS now / peak)")
        mem = {}
        for name, svc in ctx.services.items():
            assert svc.proc is not None
            rss, hwm = proc_memory_mib(svc.proc.pid)
            alive = svc.proc.poll() is None
            mem[name] = {"rss_mib": rss, "peak_mib": hwm, "alive": alive}
        ctx.out(
            "   "
            + ", ".join(
                f"{n} {m['rss_mib']:.0f} / {m['peak_mib']:.0f} MiB" + ("" if m["alive"] else " (EXITED)")
                for n, m in mem.items()
            )
            + f"; total {sum(m['rss_mib'] for m in mem.values()):.0f} MiB"
        )
        ctx.results["memory"] = mem
        ctx.out("")

        ctx.out("6. Zero-loss check (sender.messages and sender.sandbox_messages, per flow)")
        for check in ctx.losses:
            ctx.out("   " + check.line())
        loss = sum(c.loss for c in ctx.losses)
        dup = sum(c.duplicates for c in ctx.losses)
        failed = sum(c.failed for c in ctx.losses)
        ctx.out(
            f"   TOTAL {sum(c.accepted for c in ctx.losses)} accepted -> loss: {loss}, duplicates: {dup}"
            + (f", failed: {failed}" if failed else "")
        )
        ctx.results["loss"] = {"loss": loss, "duplicates": dup, "failed": failed}
        pending = {}
        for schema in SERVICES:
            pending[schema] = await conn.fetchval(
                f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL"
            )
        ctx.out("   outbox rows not yet published: " + ", ".join(f"{k} {v}" for k, v in pending.items()))
        try:
            depths = await queue_depths(ctx.amqp_url)
            ctx.out("   queue depths: " + ", ".join(f"{k} {v}" for k, v in depths.items()))
            ctx.results["queues"] = depths
        except Exception as exc:
            ctx.out(f"   queue depths: unavailable ({exc!r:.120})")
    finally:
        await conn.close()


# ------------------------------------------------------------------------------------------------
# Set-up and tear-down (like tests/conftest.py and tests/e2e/conftest.py)
# ------------------------------------------------------------------------------------------------


def stop_services(services: dict[str, ServiceProcess], timeout: float = 30.0) -> None:
    """SIGTERM to all at once (each drains), then wait; SIGKILL whatever outlives ``timeout``."""
    running = [s for s in services.values() if s.proc is not None and s.proc.poll() is None]
    for svc in running:
        svc.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    for svc in running:
        assert svc.proc is not None
        try:
            svc.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{svc.name} did not stop within {timeout:.0f} s: SIGKILL")
            svc.proc.kill()
            svc.proc.wait(5)


def scan_logs(services: dict[str, ServiceProcess]) -> list[str]:
    """Warnings and errors per service log (JSON lines), most frequent first."""
    lines = []
    for name, svc in services.items():
        levels: Counter[str] = Counter()
        notable: Counter[str] = Counter()
        total = 0
        try:
            text = svc.log_path.read_text(errors="replace")
        except OSError:
            continue
        for raw in text.splitlines():
            total += 1
            try:
                entry = json.loads(raw)
            except ValueError:
                if "Traceback" in raw or "Error" in raw:
                    notable[f"(non-JSON) {raw[:140]}"] += 1
                continue
            level = str(entry.get("level", "?")).lower()
            levels[level] += 1
            if level in ("warning", "error", "critical", "exception"):
                notable[
                    f"{level}: {str(entry.get('event'))[:100]} {str(entry.get('error', ''))[:100]}".strip()
                ] += 1
        summary = ", ".join(f"{k} {v}" for k, v in sorted(levels.items()))
        lines.append(f"{name}: {total} lines ({summary})")
        for what, count in notable.most_common(4):
            lines.append(f"    {count}x {what}")
    return lines


def machine_lines() -> list[str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return [
        f"machine: nproc {os.cpu_count()} ({model}), {mem_gib:.0f} GiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    ]


@dataclass
class Stack:
    """Everything one run started: the servers, a fresh migrated database, the four services, a tenant."""

    kind: str
    infra_seconds: float
    database_url: str
    amqp_url: str
    env: dict[str, str]
    services: dict[str, ServiceProcess]
    api_key: str
    tenant_id: uuid.UUID
    state_dir: Path
    logs: Path


@contextlib.contextmanager
def herald_stack(
    *, durable: bool = False, log_level: str = "INFO", extra_env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """Set Herald up like the end-to-end tests do, and tear down whatever was started, always.
    The service logs are kept (in ``stack.logs``); the servers' data folder is removed."""
    root = Path(tempfile.mkdtemp(prefix="herald-bench-"))
    state_dir, logs = root / "infra", root / "logs"
    services: dict[str, ServiceProcess] = {}
    handle = None
    db_name: str | None = None
    server_url: str | None = None
    try:
        say(f"infra: resolving RabbitMQ + PostgreSQL under {state_dir}")
        t = time.monotonic()
        urls, handle = resolve_infra(state_dir, durable=durable)
        server_url = urls.database_url
        infra_s = time.monotonic() - t
        db_name, db_url = create_migrated_database(urls.database_url, "herald_bench")
        say(f"infra: {urls.kind} ready in {infra_s:.1f} s; database {db_name} (migrated)")
        env = herald_env(db_url, urls.amqp_url, HERALD_LOG_LEVEL=log_level, **(extra_env or {}))
        ports = {name: free_port() for name in SERVICES}
        # ingest checks a webhook source's channel_id with the sender and a tenant's own event
        # types with the pipeline; the pipeline a rule's template with the sender: tell them where
        beside = {
            "ingest": ingest_env(ports["sender"], pipeline_port=ports["pipeline"]),
            "pipeline": pipeline_env(ports["sender"]),
        }
        envs = {name: {**env, **beside.get(name, {})} for name in SERVICES}
        services = {
            name: ServiceProcess(name, ports[name], envs[name], logs / f"{name}.log") for name in SERVICES
        }
        say("services: starting " + ", ".join(f"{n} :{s.port}" for n, s in services.items()))
        for svc in services.values():
            svc.start()
        for svc in services.values():
            svc.wait_ready(90)
        tenant = json.loads(herald_cli(env, "tenant", "create", f"bench-{uuid.uuid4().hex[:6]}", "--json"))
        yield Stack(
            kind=urls.kind,
            infra_seconds=infra_s,
            database_url=db_url,
            amqp_url=urls.amqp_url,
            env=env,
            services=services,
            api_key=tenant["api_key"],
            tenant_id=uuid.UUID(tenant["tenant_id"]),
            state_dir=state_dir,
            logs=logs,
        )
    except Exception:
        for svc in services.values():
            if svc.proc is not None and svc.proc.poll() is not None:
                say(f"{svc.name} exited with {svc.proc.returncode}; log tail:\n{svc.log_tail(20)}")
        raise
    finally:
        try:
            say("tear-down: stopping services")
            stop_services(services)
            if server_url is not None and db_name is not None:
                try:
                    drop_database(server_url, db_name)
                except Exception as exc:
                    say(f"could not drop {db_name}: {exc!r}")
        finally:
            if handle is not None:
                say("tear-down: stopping RabbitMQ + PostgreSQL")
                handle.stop()
            shutil.rmtree(state_dir, ignore_errors=True)
            say(f"service logs kept in {logs}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.first_slice", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages", type=int, default=2000, help="messages POSTed concurrently (default 2000)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent HTTP clients (default 32)")
    parser.add_argument("--singles", type=int, default=50, help="sequential single messages (default 50)")
    parser.add_argument("--orders", type=int, default=500, help="order.status_changed events (default 500)")
    parser.add_argument(
        "--transport",
        choices=("auto", "aiohttp", "httpx"),
        default="auto",
        help="HTTP client transport (auto: httpx-aiohttp if it works)",
    )
    parser.add_argument(
        "--durable", action="store_true", help="local PostgreSQL with fsync on (default off, like the tests)"
    )
    parser.add_argument("--log-level", default="INFO", help="services' HERALD_LOG_LEVEL (default INFO)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the four services, e.g. SENDER_DB_POOL_SIZE=20 (repeatable)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="max seconds to wait for a phase's deliveries"
    )
    parser.add_argument("--json", dest="json_path", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.env)

    started = time.monotonic()
    ctx: Context | None = None
    stack: Stack | None = None
    exit_code = 0
    try:
        with herald_stack(durable=args.durable, log_level=args.log_level, extra_env=extra_env) as stack:
            say(f"set-up done in {time.monotonic() - started:.1f} s")
            ctx = Context(
                services=stack.services,
                api_key=stack.api_key,
                tenant_id=stack.tenant_id,
                dsn=asyncpg_dsn(stack.database_url),
                amqp_url=stack.amqp_url,
                messages=args.messages,
                concurrency=args.concurrency,
                singles=args.singles,
                orders=args.orders,
                timeout=args.timeout,
                transport=args.transport,
                state_dir=stack.state_dir if stack.kind == "local" else None,
            )
            ctx.out("Herald first-slice benchmark")
            for line in machine_lines():
                ctx.out(line)
            ctx.out(
                f"parameters: --messages {args.messages} --concurrency {args.concurrency} --singles {args.singles} "
                f"--orders {args.orders}; services' log level {args.log_level}"
                + (f", extra env {' '.join(args.env)}" if args.env else "")
                + f"; infra {stack.kind} ({'durable' if args.durable else 'not durable: fsync off'}), "
                f"started in {stack.infra_seconds:.1f} s"
            )
            asyncio.run(measure(ctx))
    except KeyboardInterrupt:
        say("interrupted")
        exit_code = 130
    except Exception as exc:
        traceback.print_exc()
        say(f"FAILED: {exc!r}")
        exit_code = 1
    if ctx is not None and stack is not None:
        ctx.out("")
        ctx.out(f"service logs ({stack.logs}):")
        for line in scan_logs(stack.services):
            ctx.out("   " + line)
        ctx.out(f"total run time {time.monotonic() - started:.0f} s")
        print("\n".join(ctx.report), flush=True)
        if args.json_path:
            results = {k: v for k, v in ctx.results.items() if not k.startswith("_")}
            Path(args.json_path).write_text(json.dumps(results, indent=2, default=str))
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
