"""``message.status`` is routed by the origin of its message: the scheduler's queue gets the
statuses of the messages the scheduler asked for, and never those of an API message."""

from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker

from devtools.database import asyncpg_dsn
from devtools.processes import wait_for
from shared.events import MessageStatusChanged
from shared.topology import declare_shared, subscription
from tests.e2e.sender.conftest import SenderSystem, wait_status

pytestmark = pytest.mark.e2e

TEMPLATE = {"kind": "template", "name": "otp", "language": "en"}


async def declare_scheduler_queue(amqp_url: str) -> str:
    """The scheduler's queue with its bindings, as the scheduler declares them at start: its
    subscriber binds ``sub.routing_key``, ``declare_shared`` the extra ones."""
    sub = subscription("scheduler", MessageStatusChanged)
    broker = RabbitBroker(amqp_url)
    await broker.connect()
    try:
        queue = await broker.declare_queue(sub.queue)
        await queue.bind("herald.events", routing_key=sub.routing_key)
        await declare_shared(broker, "scheduler")
    finally:
        await broker.stop()
    return sub.queue_name


async def all_published(database_url: str, message_ids: list[str]) -> bool:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        waiting = await conn.fetchval(
            """SELECT count(*) FROM sender.outbox
               WHERE published_at IS NULL AND convert_from(body, 'UTF8')::jsonb ->> 'subject' = ANY($1::text[])""",
            message_ids,
        )
        return waiting == 0
    finally:
        await conn.close()


async def statuses_in_queue(
    amqp_url: str, queue_name: str, until: tuple[str, str], within: float = 60.0
) -> list[tuple[str, str, str | None]]:
    """(message_id, status, origin) of every message.status in the queue, read until ``until``
    (message_id, status) arrives. Other messages (another module's) are put back at the end."""
    connection = await aio_pika.connect(amqp_url)
    seen: list[tuple[str, str, str | None]] = []
    held: list[aio_pika.abc.AbstractIncomingMessage] = []
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while until not in [(m, s) for m, s, _ in seen] and loop.time() < deadline:
            message = await queue.get(fail=False, no_ack=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            held.append(message)
            data = json.loads(message.body)["data"]
            seen.append((data["message_id"], data["status"], data.get("origin")))
        for message in held:
            await message.nack(requeue=True)
    finally:
        await connection.close()
    return seen


def test_the_scheduler_queue_gets_scheduler_statuses_and_never_api_ones(system: SenderSystem):
    amqp, database = system.infra.amqp_url, system.infra.database_url
    queue_name = asyncio.run(declare_scheduler_queue(amqp))
    tenant_id, key = system.tenant("routing")
    client = system.client(key)
    channel = system.meta_channel(client)

    api = client.post("/v1/messages", json={"to": "+5511988880001", "content": TEMPLATE}).json()
    wait_status(client, api["id"], "sent", timeout=30)
    scheduled = str(uuid.uuid4())
    system.publish(
        "message.requested.v1",
        tenant_id,
        {
            "message_id": scheduled,
            "to": "+5511988880002",
            "content": TEMPLATE,
            "channel_id": channel["id"],
            "origin": "scheduler",
            "correlation_id": f"schedule:{uuid.uuid4()}",
        },
    )
    wait_status(client, scheduled, "sent", timeout=30)
    # the API message's statuses were confirmed by the broker (routed somewhere) before we look
    wait_for(
        lambda: asyncio.run(all_published(database, [api["id"], scheduled])),
        60,
        "the sender's outbox to publish both messages' statuses",
    )

    seen = asyncio.run(statuses_in_queue(amqp, queue_name, until=(scheduled, "sent")))
    mine = [s for s in seen if s[0] in (api["id"], scheduled)]
    assert [(s, o) for m, s, o in mine if m == scheduled] == [
        ("queued", "scheduler"),
        ("sending", "scheduler"),
        ("sent", "scheduler"),
    ]
    assert [s for s in mine if s[0] == api["id"]] == []
