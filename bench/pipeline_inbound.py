"""Benchmark of the pipeline's inbound conversation policy, the four services as processes.

Run::

    uv run --frozen python -m bench.pipeline_inbound [--notes 500] [--orders 200] [--concurrency 8]

Sets everything up like the end-to-end tests (``bench.first_slice.herald_stack``: RabbitMQ +
PostgreSQL, a fresh migrated database, ``herald run`` for each service, a tenant), a Meta webhook
source in ingest, and ``--users`` users (contact mapped in ingest, profile in the pipeline). Then:

- **inbound note → stored**: ``--notes`` signed Meta text webhooks, ``--concurrency`` at a time;
  from just before the POST to the note's row in ``pipeline.notes`` (its ``created_at``);
- **inbound order → clarification at the provider**: ``--orders`` orders without a platform
  ("write me a post about …"), one per user at a time (the sender paces one recipient to one
  message every few seconds); from just before the POST to the question's row in the sandbox
  provider (``sender.sandbox_messages.received_at``).

Both clocks are this machine's. Prints p50/p99/max; asserts nothing, but says what never arrived.

Where an order's time goes (2026-12-03, 2 shared cores at load average ~8, ``--notes 50 --orders 40
--users 40 --in-process 50``): ingest's hop "→ confirmed by the broker" is its relay's coalescing
window, a wait: p50 143 / p99 248 ms with the default 0.25 s, 18 / 65 ms with
``--ingest-coalesce 0`` (a leading-edge waker did not help: 40 orders in flight keep every window
busy). The largest share is after the question is confirmed, in the sender (question confirmed →
at the provider: ~700 ms p50 of 907 ms end to end with coalescing off) — not changed here.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import math
import sys
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx

from bench.first_slice import Stack, herald_stack, proc_cpu_seconds
from devtools.database import asyncpg_dsn
from services.pipeline import inbound
from services.pipeline.app import build
from services.pipeline.inbound import REPLY_NAMESPACE
from services.pipeline.settings import PipelineSettings
from shared.events import InboundReceived, new_event

SECRET = "bench-app-secret"


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def dist(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"p50 {pct(values, 50) * 1000:.1f} ms, p99 {pct(values, 99) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"


def webhook(phone: str, wamid: str, text: str) -> bytes:
    message = {"from": phone.lstrip("+"), "id": wamid, "timestamp": str(int(time.time())), "type": "text"}
    message["text"] = {"body": text}
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Bench"}, "wa_id": phone.lstrip("+")}],
        "messages": [message],
    }
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(body).encode()


async def post(client: httpx.AsyncClient, url: str, phone: str, wamid: str, text: str) -> float:
    body = webhook(phone, wamid, text)
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    sent = time.time()
    r = await client.post(url, content=body, headers={"X-Hub-Signature-256": f"sha256={signature}"})
    if r.status_code != 200:
        say(f"webhook answered {r.status_code}: {r.text[:200]}")
    return sent


async def until_rows(
    db: asyncpg.Pool, query: str, args: list[object], want: int, within: float
) -> dict[str, datetime]:
    """Poll ``query`` (key, timestamp) until ``want`` keys are there or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    found: dict[str, datetime] = {}
    while time.monotonic() < deadline:
        found = {str(r[0]): r[1] for r in await db.fetch(query, *args)}
        if len(found) >= want:
            break
        await asyncio.sleep(0.2)
    return found


async def stages(
    db: asyncpg.Pool,
    sent_at: dict[str, float],
    *,
    then: str | None = None,
    stored: dict[str, datetime] | None = None,
) -> dict[str, list[float]]:
    """Where the time went, from the outbox rows: webhook → ingest's ``inbound.received`` row
    committed → confirmed by the broker → the note stored (``stored``), or → the pipeline's
    question committed → confirmed (``then``: its outbox; keyed by the correlation id)."""
    rows = await db.fetch(
        "SELECT convert_from(body, 'UTF8')::jsonb #>> '{data,provider_message_id}', created_at, published_at"
        " FROM ingest.outbox WHERE routing_key = 'inbound.received.v1'"
    )
    out: dict[str, list[float]] = {
        "webhook → inbound.received committed": [],
        "→ confirmed by the broker": [],
    }
    confirmed: dict[str, datetime] = {}
    for mid, created, published in rows:
        sent = sent_at.get(f"meta:{mid}")
        if sent is not None and published is not None:
            out["webhook → inbound.received committed"].append(created.timestamp() - sent)
            out["→ confirmed by the broker"].append((published - created).total_seconds())
            confirmed[f"meta:{mid}"] = published
    if stored is not None:
        out["→ note stored (the pipeline)"] = [
            (stored[k] - at).total_seconds() for k, at in confirmed.items() if k in stored
        ]
    if then:
        rows = await db.fetch(
            "SELECT convert_from(body, 'UTF8')::jsonb #>> '{data,correlation_id}', created_at, published_at"
            f" FROM {then}.outbox WHERE routing_key = 'message.requested.v1'"
        )
        out["→ question committed (the pipeline)"] = []
        out["→ question confirmed by the broker"] = []
        question_confirmed: dict[str, datetime] = {}
        for corr, created, published in rows:
            inbound = confirmed.get((corr or "").removeprefix("conversation:"))
            if inbound is not None and published is not None:
                out["→ question committed (the pipeline)"].append((created - inbound).total_seconds())
                out["→ question confirmed by the broker"].append((published - created).total_seconds())
                question_confirmed[corr.removeprefix("conversation:")] = published
        # the sender's share: the request stored (its row's created_at), then at the sandbox
        rows = await db.fetch(
            "SELECT m.correlation_id, m.created_at, s.received_at FROM sender.messages m"
            " JOIN sender.sandbox_messages s ON s.message_id = m.id"
            " WHERE m.correlation_id LIKE 'conversation:%'"
        )
        out["→ stored by the sender"] = []
        out["→ at the provider (the sender's claim and send)"] = []
        for corr, created, received in rows:
            confirmed_at = question_confirmed.get(corr.removeprefix("conversation:"))
            if confirmed_at is not None:
                out["→ stored by the sender"].append((created - confirmed_at).total_seconds())
                out["→ at the provider (the sender's claim and send)"].append(
                    (received - created).total_seconds()
                )
    return out


async def handler_share(stack: Stack, users: list[tuple[str, str]], n: int) -> dict[str, list[float]]:
    """The pipeline's own share, in this process on the same database: ``inbound.on_inbound``
    (decide, write, commit with its outbox rows) for ``n`` notes and ``n`` orders, one at a time."""
    settings = PipelineSettings(
        database_url=stack.database_url,
        amqp_url=stack.amqp_url,
        encryption_keys=stack.env["HERALD_ENCRYPTION_KEYS"],
        secret_key=stack.env["HERALD_SECRET_KEY"],
        environment="test",
    )
    runtime, _ = build(settings)
    out: dict[str, list[float]] = {"note": [], "order → question": []}
    try:
        for i in range(n):
            user, phone = users[i % len(users)]
            for kind, text in (
                ("note", f"in-process note {i}"),
                ("order → question", "write a post about lunch"),
            ):
                data = InboundReceived(
                    provider="meta",
                    provider_message_id=f"wamid.inproc.{uuid.uuid4().hex}",
                    from_phone=phone,
                    kind="text",
                    text=text,
                    user_id=user,
                    received_at=datetime.now(UTC),
                )
                event = new_event(data, tenant_id=stack.tenant_id, source="/herald/ingest")
                t = time.perf_counter()
                await inbound.on_inbound(runtime, event)
                out[kind].append(time.perf_counter() - t)
    finally:
        await runtime.engine.dispose()
    return out


async def run(args: argparse.Namespace, stack: Stack) -> None:
    auth = {"Authorization": f"Bearer {stack.api_key}"}
    ingest, pipeline = stack.services["ingest"].url, stack.services["pipeline"].url
    db = await asyncpg.create_pool(asyncpg_dsn(stack.database_url), min_size=1, max_size=2)
    async with httpx.AsyncClient(timeout=30) as client:
        source = await client.post(
            f"{ingest}/v1/webhook-sources",
            json={"provider": "meta", "secrets": {"app_secret": SECRET, "verify_token": "v"}},
            headers=auth,
        )
        source.raise_for_status()
        url = (
            f"{ingest}{source.json()['url']}"
            if source.json()["url"].startswith("/")
            else source.json()["url"]
        )
        users = [(f"bench-{i}", f"+55119{80_000_000 + i:08d}") for i in range(args.users)]
        for user, phone in users:
            (
                await client.put(f"{ingest}/v1/contacts/{phone}", json={"user_id": user}, headers=auth)
            ).raise_for_status()
            profile = {"phone": phone, "platforms": ["linkedin"], "topics": ["our new menu"]}
            (
                await client.put(f"{pipeline}/v1/profiles/{user}", json=profile, headers=auth)
            ).raise_for_status()
        say(f"{len(users)} users mapped in ingest with pipeline profiles")

        # --- inbound note → stored -------------------------------------------------------
        gate = asyncio.Semaphore(args.concurrency)
        sent_at: dict[str, float] = {}

        async def note(i: int) -> None:
            _, phone = users[i % len(users)]
            wamid = f"wamid.note.{uuid.uuid4().hex}"
            async with gate:
                sent_at[f"meta:{wamid}"] = await post(
                    client, url, phone, wamid, f"Bench note {i}: the lunch rush grew again today"
                )

        pid = stack.services["pipeline"].proc.pid  # type: ignore[union-attr]
        cpu0 = proc_cpu_seconds(pid)
        t0 = time.monotonic()
        await asyncio.gather(*(note(i) for i in range(args.notes)))
        posted = time.monotonic() - t0
        stored = await until_rows(
            db,
            "SELECT source_id, created_at FROM pipeline.notes WHERE tenant_id = $1",
            [stack.tenant_id],
            len(sent_at),
            120,
        )
        note_lat = [stored[k].timestamp() - s for k, s in sent_at.items() if k in stored]
        note_cpu = (proc_cpu_seconds(pid) - cpu0) / max(1, len(stored))
        stored_span = (max(stored.values()) - min(stored.values())).total_seconds() if stored else math.nan
        hops = await stages(db, sent_at, stored=stored)
        say(f"notes: {len(stored)}/{len(sent_at)} stored")

        # --- inbound order → clarification at the provider ------------------------------
        expected: dict[str, float] = {}
        order_wamids: dict[str, float] = {}
        rounds = math.ceil(args.orders / len(users))
        for r in range(rounds):
            batch = users[: min(len(users), args.orders - r * len(users))]

            async def order(user_phone: tuple[str, str]) -> None:
                _, phone = user_phone
                wamid = f"wamid.order.{uuid.uuid4().hex}"
                async with gate:
                    sent = await post(client, url, phone, wamid, "write me a post about our new menu")
                mid = uuid.uuid5(REPLY_NAMESPACE, f"{stack.tenant_id}:meta:{wamid}:question")
                expected[str(mid)] = sent
                order_wamids[wamid] = sent

            if args.order_gap is None:
                await asyncio.gather(*(order(u) for u in batch))
            else:  # one at a time, a gap between them: the latency of one order, not of a burst
                for u in batch:
                    await order(u)
                    await asyncio.sleep(args.order_gap)
            # the sender paces one recipient to about one message every 6 s: the next round
            # starts once this round's questions are at the provider
            await until_rows(
                db,
                "SELECT message_id, received_at FROM sender.sandbox_messages WHERE message_id = ANY($1::uuid[])",
                [list(expected)],
                len(expected),
                60,
            )
            if r < rounds - 1:
                await asyncio.sleep(6.5)
        at_provider = await until_rows(
            db,
            "SELECT message_id, received_at FROM sender.sandbox_messages WHERE message_id = ANY($1::uuid[])",
            [list(expected)],
            len(expected),
            60,
        )
        order_lat = [at_provider[k].timestamp() - s for k, s in expected.items() if k in at_provider]
    own = await handler_share(stack, users, args.in_process)
    order_hops = await stages(db, {f"meta:{w}": s for w, s in order_wamids.items()}, then="pipeline")
    await db.close()

    print(f"pipeline inbound ({stack.kind} infra, {args.users} users, concurrency {args.concurrency})")
    print(f"  inbound note → stored     : {len(note_lat)}/{args.notes} stored; {dist(note_lat)}")
    print(
        f"                              ({args.notes / posted:.0f} webhooks/s posted, "
        f"{len(note_lat) / stored_span:.0f} notes/s stored; pipeline process {note_cpu * 1000:.1f} ms CPU per note)"
    )
    for name, values in hops.items():
        print(f"      {name:<40}: {dist(values)}")
    print(
        f"  inbound order → question at the provider: {len(order_lat)}/{len(expected)} arrived; {dist(order_lat)}"
        " (target p99 ≤ 100 ms)"
    )
    for name, values in order_hops.items():
        print(f"      {name:<40}: {dist(values)}")
    print(f"  the pipeline's handler alone, in-process, one at a time ({args.in_process} each):")
    for name, values in own.items():
        print(f"      {name:<40}: {dist(values)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline_inbound", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--notes", type=int, default=500)
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--ingest-coalesce",
        type=float,
        default=None,
        help="INGEST_RELAY_COALESCE_SECONDS for this run (ingest's default: 0.25 s)",
    )
    parser.add_argument(
        "--order-gap",
        type=float,
        default=None,
        help="post the orders one at a time, this many seconds apart (default: each round at once)",
    )
    parser.add_argument(
        "--in-process", type=int, default=200, help="notes and orders through the handler alone"
    )
    args = parser.parse_args(argv)
    extra = {}
    if args.ingest_coalesce is not None:
        extra["INGEST_RELAY_COALESCE_SECONDS"] = str(args.ingest_coalesce)
    with herald_stack(log_level="WARNING", extra_env=extra) as stack:  # it runs its own event loops to set up
        asyncio.run(run(args, stack))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
