"""Benchmark of the Chatwoot, Evolution API and WAHA adapters against their local servers.

Run::

    uv run python -m bench.gateways [--messages 2000] [--concurrency 32] [--transport aiohttp]

For each gateway it sends ``--messages`` text messages through the adapter (the code the sender
runs per message: mapping, HTTP call, classification) with ``--concurrency`` in flight, to the
local server from ``devtools/fake_providers`` in the same process, and prints messages/second and
per-call latency p50/p99. A bare loop of the same HTTP requests with the same client is the
baseline (what the client and server manage without the adapter), and the ratio says what the
adapter costs. Chatwoot is measured twice: all messages to one recipient (the cached
conversation: one request per message) and each to a new recipient (search, create contact, list
and create conversation, post: five requests per message).

A program that prints figures, not a test: it asserts nothing. Both ends share this process and
its CPU, so the figures are a floor for the adapters, not the gateways' real capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
from httpx_aiohttp import AiohttpTransport

from devtools.fake_providers.chatwoot import FakeChatwoot
from devtools.fake_providers.evolution import FakeEvolution
from devtools.fake_providers.waha import FakeWaha
from services.sender.providers.base import ChannelConfig, MemoryMappingStore, Outbound
from services.sender.providers.chatwoot import ChatwootProvider
from services.sender.providers.evolution import EvolutionProvider
from services.sender.providers.waha import WahaProvider
from shared.events import TextContent

TENANT = uuid.uuid4()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(
    count: int, concurrency: int, one: Callable[[int], Awaitable[object]], *, warm_up: bool = False
) -> tuple[float, list[float]]:
    """``count`` calls of ``one`` with ``concurrency`` in flight; a warm-up run first fills the
    connection pool, so the first measurement is not penalised."""
    if warm_up:
        await _run(min(count, 200), concurrency, one)
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            started = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def _line(
    name: str, count: int, elapsed: float, latencies: list[float], baseline: float | None = None
) -> float:
    rate = count / elapsed
    ratio = f"  {rate / baseline:5.2f}× bare loop" if baseline else ""
    print(
        f"  {name:<34} {rate:9.0f} msg/s   p50 {_percentile(latencies, 0.5) * 1000:6.2f} ms"
        f"   p99 {_percentile(latencies, 0.99) * 1000:6.2f} ms{ratio}"
    )
    return rate


def _phone(i: int) -> str:
    return f"+55119{i:08d}"


async def bench(count: int, concurrency: int, transport: str) -> None:
    def client() -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        if transport == "aiohttp":
            return httpx.AsyncClient(transport=AiohttpTransport(), timeout=10)
        return httpx.AsyncClient(timeout=10, limits=limits)

    def outbound(i: int, to: str = "+5511999998888") -> Outbound:
        return Outbound(
            message_id=uuid.uuid4(), tenant_id=TENANT, to=to, content=TextContent(body=f"Order {i} shipped")
        )

    print(f"{count} text messages per run, {concurrency} in flight, {transport} transport")

    async with FakeEvolution(api_key="k", instances={"acme": "t"}) as evolution, client() as http:
        print("Evolution API")
        url = f"{evolution.base_url}/message/sendText/acme"
        elapsed, lat = await _run(
            count,
            concurrency,
            lambda i: http.post(
                url, json={"number": "5511999998888", "text": f"Order {i}"}, headers={"apikey": "k"}
            ),
            warm_up=True,
        )
        base = _line("bare HTTP loop", count, elapsed, lat)
        evolution.clear()
        channel = ChannelConfig(
            uuid.uuid4(), TENANT, "evolution", evolution.base_url, {"instance": "acme"}, {"api_key": "k"}
        )
        adapter = EvolutionProvider(http, MemoryMappingStore())
        elapsed, lat = await _run(count, concurrency, lambda i: adapter.send(channel, outbound(i)))
        _line("adapter", count, elapsed, lat, base)

    async with FakeWaha(api_key="k") as waha, client() as http:
        print("WAHA")
        url = f"{waha.base_url}/api/sendText"
        body = {"session": "default", "chatId": "5511999998888@c.us"}
        elapsed, lat = await _run(
            count,
            concurrency,
            lambda i: http.post(url, json={**body, "text": f"Order {i}"}, headers={"X-Api-Key": "k"}),
            warm_up=True,
        )
        base = _line("bare HTTP loop", count, elapsed, lat)
        channel = ChannelConfig(
            uuid.uuid4(), TENANT, "waha", waha.base_url, {"session": "default"}, {"api_key": "k"}
        )
        adapter = WahaProvider(http, MemoryMappingStore())
        elapsed, lat = await _run(count, concurrency, lambda i: adapter.send(channel, outbound(i)))
        _line("adapter", count, elapsed, lat, base)

    async with FakeChatwoot(api_access_token="k", account_id=1, inbox_ids=(7,)) as chatwoot, client() as http:
        print("Chatwoot")
        contact = chatwoot.add_contact("+5511999998888")
        conversation = chatwoot.add_conversation(contact["id"], 7)
        url = f"{chatwoot.base_url}/api/v1/accounts/1/conversations/{conversation['id']}/messages"
        elapsed, lat = await _run(
            count,
            concurrency,
            lambda i: http.post(
                url,
                json={
                    "content": f"Order {i}",
                    "message_type": "outgoing",
                    "private": False,
                    "content_type": "text",
                },
                headers={"api_access_token": "k"},
            ),
            warm_up=True,
        )
        base = _line("bare HTTP loop (one post)", count, elapsed, lat)
        channel = ChannelConfig(
            uuid.uuid4(),
            TENANT,
            "chatwoot",
            chatwoot.base_url,
            {"account_id": "1", "inbox_id": "7"},
            {"api_access_token": "k"},
        )
        adapter = ChatwootProvider(http, MemoryMappingStore())
        await adapter.send(channel, outbound(0))  # fills the cache
        elapsed, lat = await _run(count, concurrency, lambda i: adapter.send(channel, outbound(i)))
        _line("adapter, cached conversation", count, elapsed, lat, base)
        new_count = max(1, count // 5)
        elapsed, lat = await _run(
            new_count, concurrency, lambda i: adapter.send(channel, outbound(i, _phone(i)))
        )
        _line(f"adapter, new recipient (n={new_count})", new_count, elapsed, lat, base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per run (default 2000)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--transport", choices=["aiohttp", "httpx"], default="aiohttp")
    args = parser.parse_args()
    asyncio.run(bench(args.messages, args.concurrency, args.transport))


if __name__ == "__main__":
    main()
