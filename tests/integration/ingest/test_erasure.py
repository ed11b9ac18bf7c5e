"""Erasing a user's data publishes ``user.erased`` through ingest's outbox, once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aio_pika
import pytest
import sqlalchemy as sa

from services.ingest.models import contacts
from tests.conftest import Infra
from tests.integration.ingest.conftest import Ingest
from tests.integration.ingest.test_events_and_media import meta_text

pytestmark = pytest.mark.integration


async def _erased_events(
    queue: aio_pika.abc.AbstractQueue, tenant: str, *, want: int, within: float
) -> list[Any]:
    got: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while len(got) < want and loop.time() < deadline:
        message = await queue.get(fail=False)
        if message is None:
            await asyncio.sleep(0.02)
            continue
        await message.ack()
        event = json.loads(message.body)
        if event.get("tenantid") == tenant:
            got.append(event)
    return got


async def test_erasing_a_user_publishes_user_erased_once_with_their_phones(ingest: Ingest, infra: Infra):
    connection = await aio_pika.connect(infra.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(await channel.get_exchange("herald.events"), routing_key="user.erased.v1")

        await ingest.post("meta", meta_text("hello", "wamid.x1", "5511966665555"))
        await ingest.events(1)
        for phone in ("+5511966665555", "+5511955554444"):
            put = await ingest.client.put(
                f"/v1/contacts/{phone}", json={"user_id": "user-99"}, headers=ingest.auth
            )
            assert put.status_code == 200, put.text

        erased = await ingest.client.delete("/v1/users/user-99/data", headers=ingest.auth)
        assert erased.status_code == 200, erased.text
        assert erased.json()["webhooks_erased"] == 1

        events = await _erased_events(queue, str(ingest.tenant_id), want=1, within=20)
        assert len(events) == 1, "user.erased never reached the broker"
        event = events[0]
        assert event["type"] == "user.erased.v1"
        assert event["data"]["user_id"] == "user-99"
        assert event["data"]["phones"] == ["+5511955554444", "+5511966665555"]
        assert event["data"]["at"]
        async with ingest.runtime.engine.connect() as conn:
            left = (
                await conn.execute(
                    sa.select(sa.func.count()).where(
                        contacts.c.tenant_id == ingest.tenant_id, contacts.c.user_id == "user-99"
                    )
                )
            ).scalar()
        assert left == 0

        again = await ingest.client.delete("/v1/users/user-99/data", headers=ingest.auth)
        assert again.status_code == 404
        # a marker erasure after it: the outbox relays in order, so a second user-99 event would come first
        put = await ingest.client.put(
            "/v1/contacts/+5511944443333", json={"user_id": "user-100"}, headers=ingest.auth
        )
        assert put.status_code == 200, put.text
        assert (await ingest.client.delete("/v1/users/user-100/data", headers=ingest.auth)).status_code == 200
        after = await _erased_events(queue, str(ingest.tenant_id), want=1, within=20)
        assert [e["data"]["user_id"] for e in after] == ["user-100"], (
            "a repeated erase published user.erased again"
        )
    finally:
        await connection.close()
