"""Benchmark of ingest's webhook hot path, against the machine's limit.

    scripts/uv run --frozen python -m bench.ingest --webhooks 20000 --concurrency 32

Starts RabbitMQ + PostgreSQL (``devtools.infra``), a fresh migrated database and ``herald run
ingest`` as a process, creates a tenant and a Meta webhook source, then:

1. sends ``--webhooks`` signed Meta webhooks (each a distinct inbound text message from one of
   1,000 senders) from ``--concurrency`` concurrent connections and reports requests/second and
   p50/p99/max latency;
2. sends the same load to a *bare app* — uvicorn + a raw ASGI function that INSERTs the body into
   a table with asyncpg — the fastest way this machine can durably accept a POST; reports the same
   figures and the ratio ingest / bare;
3. waits until ingest's outbox is published and counts stored webhooks, dedupe keys, outbox rows
   and the events that reached a RabbitMQ queue: ``loss`` and ``duplicates`` must be 0.

A warm-up (``--warmup`` requests) precedes each measured phase; warm-up webhooks are included in
the zero-loss counts. Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx

from devtools.database import asyncpg_dsn, create_migrated_database, drop_database
from devtools.infra import resolve_infra
from devtools.processes import REPO, ServiceProcess, free_port, herald_cli, herald_env, wait_for

SECRET = "bench-app-secret"


def say(message: str) -> None:
    print(f"[bench.ingest {time.strftime('%H:%M:%S')}] {message}", flush=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def webhook(run: str, i: int) -> bytes:
    phone = f"55119{(i % 1000):08d}"
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "419561257915477",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550783881",
                                    "phone_number_id": "106540352242922",
                                },
                                "contacts": [{"profile": {"name": f"Contact {i % 1000}"}, "wa_id": phone}],
                                "messages": [
                                    {
                                        "from": phone,
                                        "id": f"wamid.{run}.{i}",
                                        "timestamp": str(int(time.time())),
                                        "type": "text",
                                        "text": {"body": f"message number {i} of the benchmark"},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    ).encode()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (0 where /proc is not there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def signed(body: bytes) -> dict[str, str]:
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={signature}", "Content-Type": "application/json"}


# --- the bare app: the machine's limit for "durably accept a POST" -------------------------------

BARE_TABLE = "bench_bare_webhooks"


def bare_app(dsn: str, pool_size: int) -> Any:
    pool: asyncpg.Pool | None = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal pool
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if pool is not None:
                        await pool.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, answer = 200, b'{"status":"ok"}'
        if scope["path"] != "/livez":
            assert pool is not None
            await pool.execute(f"INSERT INTO {BARE_TABLE} (body) VALUES ($1)", body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    return app


def run_bare(port: int, dsn: str, pool_size: int) -> None:
    """One bare process; several share the port through SO_REUSEPORT, as ingest's do."""
    import socket

    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(bare_app(dsn, pool_size), log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


# --- load ----------------------------------------------------------------------------------------


async def load(
    base_url: str, path: str, bodies: list[bytes], concurrency: int
) -> tuple[float, list[float], dict[int, int]]:
    """``concurrency`` keep-alive connections, each posting the next body as soon as its previous
    answer is in. The client is plain aiohttp: it shares the 2 cores with what it measures, and
    httpx on top of it cost about twice the client CPU per request."""
    import aiohttp

    headers = [signed(b) for b in bodies]
    latencies: list[float] = []
    codes: dict[int, int] = {}
    next_index = 0
    url = base_url + path
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(bodies):
                i = next_index
                next_index += 1
                started = time.perf_counter()
                async with http.post(url, data=bodies[i], headers=headers[i]) as response:
                    await response.read()
                    status = response.status
                latencies.append(time.perf_counter() - started)
                codes[status] = codes.get(status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, codes


def figures(label: str, n: int, elapsed: float, latencies: list[float], codes: dict[int, int]) -> float:
    rate = n / elapsed
    say(
        f"{label}: {n} webhooks in {elapsed:.2f} s = {rate:,.0f} req/s; latency p50 {pct(latencies, 50) * 1000:.1f} ms, "
        f"p99 {pct(latencies, 99) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms; status codes {codes}"
    )
    return rate


async def probe_queue(amqp_url: str, name: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind("herald.events", routing_key="inbound.received.v1")


async def count_published(amqp_url: str, name: str, tenant: str) -> tuple[int, int]:
    """Events in the probe queue for this tenant: (distinct ids, copies beyond the first)."""
    connection = await aio_pika.connect(amqp_url)
    seen: dict[str, int] = {}
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True)
        while True:
            message = await queue.get(fail=False, no_ack=True)
            if message is None:
                break
            event = json.loads(message.body)
            if event.get("tenantid") == tenant:
                seen[event["id"]] = seen.get(event["id"], 0) + 1
        await queue.delete(if_unused=False, if_empty=False)
    return len(seen), sum(n - 1 for n in seen.values())


async def bench(
    args: argparse.Namespace, db_url: str, amqp_url: str, env: dict[str, str], logs: Path
) -> None:
    dsn = asyncpg_dsn(db_url)
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {BARE_TABLE} (id bigserial PRIMARY KEY, body bytea NOT NULL, received_at timestamptz NOT NULL DEFAULT now())"
    )
    ingest_port = free_port()
    ingest_env = {**env, "INGEST_WEBHOOK_POOL_SIZE": str(args.pool), "INGEST_REUSE_PORT": "true"}
    ingests = [
        ServiceProcess("ingest", ingest_port, ingest_env, logs / f"ingest-{i}.log")
        for i in range(args.processes)
    ]
    ingest = ingests[0]
    bare_port = free_port()
    bares = [
        await asyncio.to_thread(
            subprocess.Popen,
            [
                sys.executable,
                "-m",
                "bench.ingest",
                "--serve-bare",
                str(bare_port),
                "--dsn",
                dsn,
                "--pool",
                str(args.pool),
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            start_new_session=True,
        )
        for _ in range(args.processes)
    ]
    try:
        for process in ingests:
            process.start()
        for process in ingests:
            process.wait_ready(90)
        wait_for(lambda: _up(bare_port), 30, "the bare app to answer", None)
        tenant = json.loads(herald_cli(env, "tenant", "create", f"bench-{uuid.uuid4().hex[:6]}", "--json"))
        async with httpx.AsyncClient() as http:
            # no channel_id: this bench runs no sender (where a channel_id would be checked), and
            # the channel plays no part in the hot path measured here
            answer = await http.post(
                f"{ingest.url}/v1/webhook-sources",
                json={"provider": "meta", "secrets": {"app_secret": SECRET, "verify_token": "bench"}},
                headers={"Authorization": f"Bearer {tenant['api_key']}"},
            )
        path = answer.json()["url"]
        probe = f"bench.ingest.{uuid.uuid4().hex[:8]}"
        await probe_queue(amqp_url, probe)
        run = uuid.uuid4().hex[:8]
        warm = [webhook(run + "w", i) for i in range(args.warmup)]
        bodies = [webhook(run, i) for i in range(args.webhooks)]
        say(
            f"{args.webhooks} webhooks at {args.concurrency} concurrent connections (warm-up {args.warmup} each)"
        )

        ingest_pids = [p.proc.pid for p in ingests if p.proc is not None]
        bare_pids = [b.pid for b in bares]
        await load(ingest.url, path, warm, args.concurrency)
        cpu = sum(cpu_seconds(pid) for pid in ingest_pids)
        elapsed, lat, codes = await load(ingest.url, path, bodies, args.concurrency)
        ingest_rate = figures("ingest   ", args.webhooks, elapsed, lat, codes)
        ingest_cpu = (sum(cpu_seconds(pid) for pid in ingest_pids) - cpu) / args.webhooks
        ingest_p99 = pct(lat, 99)

        bare_url = f"http://127.0.0.1:{bare_port}"
        await load(bare_url, "/bare", warm, args.concurrency)
        cpu = sum(cpu_seconds(pid) for pid in bare_pids)
        elapsed, lat, codes = await load(bare_url, "/bare", bodies, args.concurrency)
        bare_rate = figures("bare app ", args.webhooks, elapsed, lat, codes)
        bare_cpu = (sum(cpu_seconds(pid) for pid in bare_pids) - cpu) / args.webhooks
        load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        say(
            f"CPU per webhook: ingest {ingest_cpu * 1000:.2f} ms (HTTP, verification, normalisation, "
            f"the outbox relay's publishing), bare app {bare_cpu * 1000:.2f} ms; "
            f"{args.processes} process(es) each; "
            f"machine load average {load_avg:.1f} on {os.cpu_count()} CPUs"
        )
        ratio = ingest_rate / bare_rate
        say(
            f"ratio ingest/bare: {ratio:.2f} (target >= 0.80: {'met' if ratio >= 0.8 else 'NOT met'}); "
            f"ingest p99 {ingest_p99 * 1000:.1f} ms (target <= 50 ms: {'met' if ingest_p99 <= 0.05 else 'NOT met'})"
        )

        sent = args.webhooks + args.warmup
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if await conn.fetchval("SELECT count(*) FROM ingest.outbox WHERE published_at IS NULL") == 0:
                break
            await asyncio.sleep(0.5)
        tenant_id = uuid.UUID(tenant["tenant_id"])
        stored = await conn.fetchval(
            "SELECT count(*) FROM ingest.webhook_deliveries WHERE tenant_id = $1 AND outcome = 'accepted'",
            tenant_id,
        )
        keys = await conn.fetchval("SELECT count(*) FROM ingest.webhook_keys WHERE tenant_id = $1", tenant_id)
        outbox = await conn.fetchval(
            "SELECT count(*) FROM ingest.outbox WHERE position(convert_to($1::text, 'UTF8') in body) > 0",
            str(tenant_id),
        )
        unpublished = await conn.fetchval("SELECT count(*) FROM ingest.outbox WHERE published_at IS NULL")
        published, copies = await count_published(amqp_url, probe, str(tenant_id))
        loss = sent - published
        say(
            f"zero loss: sent {sent}, stored {stored}, dedupe keys {keys}, outbox rows {outbox} "
            f"({unpublished} unpublished), events on RabbitMQ {published}; loss: {loss}, duplicates: {copies}"
        )
    finally:
        for process in ingests:
            process.terminate()
        for bare in bares:
            bare.terminate()
            try:
                bare.wait(10)
            except subprocess.TimeoutExpired:
                bare.kill()
        await conn.close()


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--webhooks", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--pool", type=int, default=20, help="database connections of each app process")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="processes of each app sharing its port (SO_REUSEPORT), like replicas on one machine",
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra setting for ingest"
    )
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare:
        run_bare(args.serve_bare, args.dsn, args.pool)
        return 0
    root = Path(tempfile.mkdtemp(prefix="herald-bench-ingest-"))
    state_dir, logs = root / "infra", root / "logs"
    handle = None
    server_url = db_name = None
    try:
        urls, handle = resolve_infra(state_dir)
        server_url = urls.database_url
        db_name, db_url = create_migrated_database(urls.database_url, "herald_bench_ingest")
        env = herald_env(
            db_url, urls.amqp_url, HERALD_LOG_LEVEL="WARNING", INGEST_BLOB_DIR=str(root / "blobs")
        )
        asyncio.run(bench(args, db_url, urls.amqp_url, env, logs))
    finally:
        if server_url and db_name:
            try:
                drop_database(server_url, db_name)
            except Exception as exc:
                say(f"could not drop {db_name}: {exc!r}")
        if handle is not None:
            handle.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
        say(f"logs kept in {logs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
