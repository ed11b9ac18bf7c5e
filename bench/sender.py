"""Benchmark of the sender against a local WhatsApp Cloud API server.

Run::

    scripts/uv run --frozen python -m bench.sender [--messages 20000] [--processes 1]
        [--concurrency 64] [--baseline-messages 2000] [--apprise-messages 20]
        [--paced-messages 800] [--paced-rate 80]

It starts its own RabbitMQ + PostgreSQL (``devtools.infra``, or the servers named by
HERALD_TEST_DATABASE_URL + HERALD_TEST_AMQP_URL), a migrated database, the fake Cloud API
(``devtools.fake_providers.meta``) as a separate process, and ``--processes`` sender processes, then:

1. **through the sender** — ``--messages`` template messages over ``POST /v1/messages`` on a Meta
   channel with limits set high (10,000 msg/s, no pair interval, no tier), one recipient each;
   prints msg/s (first request → last arrival at the provider, and at the provider alone) and
   request → provider-call latency p50/p99 (client clock vs the fake server's arrival clock; both
   on this machine);
2. **bare aiohttp** — the same server driven by a plain aiohttp loop (``--concurrency`` in flight):
   what this machine can push through that server at all;
3. **Apprise** — Apprise's WhatsApp plugin (``NotifyWhatsApp``, its ``notify_url`` class attribute
   pointed at the local server): as shipped (it throttles itself to one request per 0.2 s) on
   ``--apprise-messages`` messages, and with ``request_rate_per_sec = 0`` on ten times as many;
4. ratios of 1 to 2 and 3;
5. **paced** — one channel at ``--paced-rate`` msg/s with a backlog of ``--paced-messages``
   (queued while the channel is paused, then resumed): the rate achieved at the provider.

A program that prints figures, not a test: it asserts nothing, but says when a message was lost.
"""

from __future__ import annotations

import argparse
import asyncio
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

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from devtools.database import create_migrated_database, drop_database
from devtools.infra import resolve_infra
from devtools.processes import REPO, ServiceProcess, free_port, herald_cli, herald_env, wait_for

TOKEN = "benchtoken"
TEMPLATE = {"kind": "template", "name": "order_update", "language": "en_US", "body_params": ["A123"]}


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def phone(run: int, i: int) -> str:
    return f"+55119{run:02d}{i:06d}"


def fitted_rate(times: list[float]) -> float:
    """Messages per second as the least-squares slope of arrival index over arrival time: one
    late first (or last) arrival does not skew it the way a first-to-last span does."""
    n = len(times)
    if n < 2:
        return 0.0
    mean_t = sum(times) / n
    mean_i = (n - 1) / 2
    cov = sum((t - mean_t) * (i - mean_i) for i, t in enumerate(times))
    var = sum((t - mean_t) ** 2 for t in times)
    return cov / var if var else 0.0


class FakeMetaProcess:
    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "devtools.fake_providers.meta",
                    "--port",
                    str(self.port),
                    "--token",
                    TOKEN,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                start_new_session=True,
            )

        def up() -> bool:
            try:
                return httpx.get(f"{self.url}/_fake/stats", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 20, "the fake Cloud API")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def reset(self) -> None:
        httpx.post(f"{self.url}/_fake/reset").raise_for_status()

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_fake/stats", timeout=30).json()

    def times(self) -> dict[str, float]:
        return {to: at for to, at in httpx.get(f"{self.url}/_fake/times", timeout=60).json()["items"]}


async def post_all(
    base_urls: list[str], api_key: str, channel_id: str, recipients: list[str], concurrency: int
) -> dict[str, float]:
    """POST one message per recipient, spread over every sender process; returns recipient →
    time the request was made."""
    sent_at: dict[str, float] = {}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for r in recipients:
        queue.put_nowait(r)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clients = [
        httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {api_key}"},
            transport=AiohttpTransport(limits=limits),
            timeout=60,
        )
        for url in base_urls
    ]

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            to = queue.get_nowait()
            sent_at[to.lstrip("+")] = time.time()
            r = await client.post(
                "/v1/messages", json={"to": to, "content": TEMPLATE, "channel_id": channel_id}
            )
            if r.status_code != 202:
                say(f"POST failed: {r.status_code} {r.text[:200]}")

    try:
        await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(concurrency)))
    finally:
        for client in clients:
            await client.aclose()
    return sent_at


async def post_batches(
    base_urls: list[str], api_key: str, channel_id: str, recipients: list[str], concurrency: int, batch: int
) -> dict[str, float]:
    """POST ``batch`` messages per request to /v1/messages/batch, ``concurrency`` requests in
    flight, spread over every sender process; returns recipient → time its request was made."""
    sent_at: dict[str, float] = {}
    chunks: asyncio.Queue[list[str]] = asyncio.Queue()
    for i in range(0, len(recipients), batch):
        chunks.put_nowait(recipients[i : i + batch])
    clients = [
        httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=120)
        for url in base_urls
    ]

    async def worker(client: httpx.AsyncClient) -> None:
        while not chunks.empty():
            chunk = chunks.get_nowait()
            now = time.time()
            for to in chunk:
                sent_at[to.lstrip("+")] = now
            body = {"messages": [{"to": to, "content": TEMPLATE, "channel_id": channel_id} for to in chunk]}
            r = await client.post("/v1/messages/batch", json=body)
            if r.status_code != 202:
                say(f"POST batch failed: {r.status_code} {r.text[:200]}")

    try:
        await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(concurrency)))
    finally:
        for client in clients:
            await client.aclose()
    return sent_at


async def bare_aiohttp(url: str, n: int, concurrency: int) -> float:
    body = {
        "messaging_product": "whatsapp",
        "to": "5511999998888",
        "type": "template",
        "template": {"name": "x", "language": {"code": "en_US"}},
    }
    counter = iter(range(n))
    started = time.perf_counter()
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, headers={"Authorization": f"Bearer {TOKEN}"}) as session:

        async def worker() -> None:
            for _ in counter:
                async with session.post(f"{url}/v23.0/123/messages", json=body) as r:
                    await r.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


def apprise_rate(url: str, n: int, throttled: bool) -> float:
    from apprise.plugins.whatsapp import NotifyWhatsApp

    NotifyWhatsApp.notify_url = url + "/{fb_ver}/{phone_id}/messages"
    notifier = NotifyWhatsApp(token=TOKEN, from_phone_id="123456789012345", targets=["+5511999998888"])
    if not throttled:
        notifier.request_rate_per_sec = 0
    started = time.perf_counter()
    ok = 0
    for i in range(n):
        ok += bool(notifier.send(body=f"apprise {i}"))
    elapsed = time.perf_counter() - started
    if ok != n:
        say(f"apprise: {n - ok} of {n} sends failed")
    return n / elapsed


def create_channel(base_url: str, api_key: str, meta_url: str, **extra: Any) -> dict[str, Any]:
    body = {
        "name": "bench",
        "provider": "meta",
        "base_url": meta_url,
        "settings": {"phone_number_id": uuid.uuid4().hex[:15]},
        "credentials": {"access_token": TOKEN},
        "throughput_per_second": 10_000,
        "pair_interval_seconds": 0,
        **extra,
    }
    r = httpx.post(f"{base_url}/v1/channels", json=body, headers={"Authorization": f"Bearer {api_key}"})
    r.raise_for_status()
    return r.json()


def wait_count(meta: FakeMetaProcess, expected: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = -1
    stall = time.monotonic()
    while time.monotonic() < deadline:
        stats = meta.stats()
        if stats["count"] >= expected:
            return stats
        if stats["count"] != last:
            last, stall = stats["count"], time.monotonic()
        elif time.monotonic() - stall > 30:
            say(f"no progress for 30 s at {last}/{expected}")
            return stats
        time.sleep(0.2)
    return meta.stats()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Sender benchmark against a local Cloud API server")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=1, help="sender processes")
    parser.add_argument("--concurrency", type=int, default=64, help="HTTP requests in flight")
    parser.add_argument(
        "--batch",
        type=int,
        default=0,
        help="messages per POST /v1/messages/batch (0: one POST /v1/messages per message)",
    )
    parser.add_argument("--baseline-messages", type=int, default=2_000)
    parser.add_argument("--apprise-messages", type=int, default=20)
    parser.add_argument("--paced-messages", type=int, default=800)
    parser.add_argument("--paced-rate", type=float, default=80.0)
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="herald-bench-sender-"))
    state_dir, logs = root / "infra", root / "logs"
    logs.mkdir(parents=True)
    handle = None
    db_name = server_url = None
    senders: list[ServiceProcess] = []
    meta = FakeMetaProcess(logs / "fake-meta.log")
    out: list[str] = []
    try:
        say(f"infra under {state_dir}")
        urls, handle = resolve_infra(state_dir)
        server_url = urls.database_url
        db_name, db_url = create_migrated_database(urls.database_url, "herald_bench")
        env = herald_env(db_url, urls.amqp_url, HERALD_LOG_LEVEL="WARNING")
        meta.start()
        senders = [
            ServiceProcess("sender", free_port(), env, logs / f"sender-{i}.log")
            for i in range(args.processes)
        ]
        for s in senders:
            s.start()
        for s in senders:
            s.wait_ready(90)
        tenant = json.loads(herald_cli(env, "tenant", "create", f"bench-{uuid.uuid4().hex[:6]}", "--json"))
        key = tenant["api_key"]
        base = senders[0].url
        urls_all = [s.url for s in senders]

        # warm-up
        warm = create_channel(base, key, meta.url)
        asyncio.run(post_all(urls_all, key, warm["id"], [phone(1, i) for i in range(200)], args.concurrency))
        wait_count(meta, 200, 60)
        meta.reset()

        # 1. through the sender
        channel = create_channel(base, key, meta.url)
        recipients = [phone(3, i) for i in range(args.messages)]
        say(f"through the sender: {args.messages} messages, {args.processes} process(es)")
        t0 = time.time()
        if args.batch:
            sent_at = asyncio.run(
                post_batches(urls_all, key, channel["id"], recipients, min(args.concurrency, 4), args.batch)
            )
        else:
            sent_at = asyncio.run(post_all(urls_all, key, channel["id"], recipients, args.concurrency))
        accepted_s = time.time() - t0
        stats = wait_count(meta, args.messages, 600)
        arrived = meta.times()
        latencies = [arrived[to] - at for to, at in sent_at.items() if to in arrived]
        lost = args.messages - len(latencies)
        end_to_end = stats["count"] / (stats["last"] - t0) if stats["count"] else 0.0
        at_provider = (stats["count"] - 1) / (stats["last"] - stats["first"]) if stats["count"] > 1 else 0.0
        how = f"batches of {args.batch}" if args.batch else "one POST per message"
        out.append(f"sender ({args.processes} process(es), {args.messages} messages, {how}, limits high)")
        out.append(f"  accepted over HTTP      {args.messages / accepted_s:8.0f} msg/s")
        out.append(f"  request → provider      {end_to_end:8.0f} msg/s (first request to last arrival)")
        out.append(f"  at the provider         {at_provider:8.0f} msg/s (first to last arrival)")
        out.append(
            f"  request→provider p50    {pct(latencies, 50) * 1000:8.1f} ms   p99 {pct(latencies, 99) * 1000:.1f} ms"
        )
        out.append(f"  not delivered           {lost}")

        # 2. bare aiohttp
        meta.reset()
        say("bare aiohttp loop")
        bare = asyncio.run(bare_aiohttp(meta.url, args.baseline_messages, args.concurrency))
        out.append(
            f"bare aiohttp loop         {bare:8.0f} msg/s ({args.baseline_messages} messages, {args.concurrency} in flight)"
        )

        # 3. apprise
        meta.reset()
        say("apprise")
        throttled = apprise_rate(meta.url, args.apprise_messages, throttled=True)
        unthrottled = apprise_rate(meta.url, args.apprise_messages * 10, throttled=False)
        out.append(f"apprise (as shipped)      {throttled:8.1f} msg/s ({args.apprise_messages} messages)")
        out.append(
            f"apprise (throttle off)    {unthrottled:8.1f} msg/s ({args.apprise_messages * 10} messages)"
        )
        out.append(
            f"ratios: sender/bare {end_to_end / bare:.2f}   sender/apprise {end_to_end / throttled:.0f}× "
            f"(as shipped), {end_to_end / unthrottled:.1f}× (throttle off)"
        )

        # 5. paced channel
        meta.reset()
        paced = create_channel(base, key, meta.url, throughput_per_second=args.paced_rate)
        httpx.patch(
            f"{base}/v1/channels/{paced['id']}",
            json={"paused": True},
            headers={"Authorization": f"Bearer {key}"},
        ).raise_for_status()
        asyncio.run(
            post_all(
                urls_all,
                key,
                paced["id"],
                [phone(5, i) for i in range(args.paced_messages)],
                args.concurrency,
            )
        )
        say(f"paced: {args.paced_messages} messages at {args.paced_rate} msg/s")
        httpx.patch(
            f"{base}/v1/channels/{paced['id']}",
            json={"paused": False},
            headers={"Authorization": f"Bearer {key}"},
        ).raise_for_status()
        stats = wait_count(meta, args.paced_messages, args.paced_messages / args.paced_rate * 3 + 60)
        span = (stats["count"] - 1) / (stats["last"] - stats["first"]) if stats["count"] > 1 else 0.0
        slope = fitted_rate(sorted(meta.times().values()))
        out.append(
            f"paced channel at {args.paced_rate:g} msg/s: achieved {slope:.2f} msg/s "
            f"({(slope / args.paced_rate - 1) * 100:+.2f} %, least-squares over all arrivals; "
            f"first-to-last span {span:.2f} msg/s), {stats['count']}/{args.paced_messages} delivered"
        )
        print("\n".join(out))
        return 0
    finally:
        for s in senders:
            s.terminate()
        meta.stop()
        if server_url is not None and db_name is not None:
            try:
                drop_database(server_url, db_name)
            except Exception as exc:
                say(f"could not drop {db_name}: {exc!r}")
        if handle is not None:
            handle.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
        say(f"logs kept in {logs}")


if __name__ == "__main__":
    raise SystemExit(main())
