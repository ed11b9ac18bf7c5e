"""Crashes and outages lose no accepted message and send none twice."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import datetime, timezone

import aio_pika
import httpx
import pytest

from tests.e2e.conftest import Herald, herald_cli, wait_for

pytestmark = pytest.mark.e2e
PHONE = "+5511999998888"


def sandbox_counts(client: httpx.Client) -> Counter[str]:
    items = client.get("/v1/sandbox/messages", params={"limit": 1000}).json()["items"]
    return Counter(item["message_id"] for item in items)


def statuses(client: httpx.Client) -> Counter[str]:
    items = client.get("/v1/messages", params={"limit": 500}).json()["items"]
    return Counter(item["status"] for item in items)


async def publish_requests(amqp_url: str, tenant_id: str, count: int) -> list[str]:
    """Another system asks for ``count`` messages directly on the broker (as pipeline/scheduler do)."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("herald.events")
        for message_id in ids:
            event = {
                "specversion": "1.0", "id": str(uuid.uuid4()), "source": "/tests/load",
                "type": "message.requested.v1", "time": datetime.now(timezone.utc).isoformat(),
                "tenantid": tenant_id,
                "data": {"message_id": message_id, "to": PHONE, "text": f"load {message_id[:8]}", "origin": "test"},
            }
            await exchange.publish(
                aio_pika.Message(json.dumps(event).encode(), content_type="application/json",
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT, priority=5),
                routing_key="message.requested.v1",
            )
    return ids


def test_sigkill_of_the_sender_mid_stream_loses_nothing_and_sends_nothing_twice(herald: Herald):
    tenant = json.loads(herald_cli(herald.env, "tenant", "create", f"kill-{uuid.uuid4().hex[:6]}", "--json"))
    client = herald.client("sender", tenant["api_key"])
    sender = herald.services["sender"]
    total = 400

    ids = asyncio.run(publish_requests(herald.infra.amqp_url, tenant["tenant_id"], total))
    wait_for(lambda: sum(sandbox_counts(client).values()) >= 20, 30, "the sender to start delivering", sender,
             interval=0.01)
    sender.kill()
    sender.start()
    sender.wait_ready()
    before = statuses(client)
    assert before["sent"] < total, f"the kill came too late to interrupt anything: {before}"

    # messages left in 'sending' by the kill are reconciled after the lease (3 s in this test)
    wait_for(lambda: statuses(client)["sent"] == total, 90, f"all {total} messages to be sent", sender, interval=0.2)
    counts = sandbox_counts(client)
    assert set(counts) == set(ids), "a message was lost"
    assert [m for m, n in counts.items() if n > 1] == [], "a message was sent twice"


def test_broker_outage_readiness_and_reconnect_deliver_what_was_accepted_meanwhile(herald: Herald):
    if not herald.infra.can_stop_broker:
        pytest.skip("the broker comes from HERALD_TEST_AMQP_URL: this run cannot stop it")
    key = herald.create_tenant(f"outage-{uuid.uuid4().hex[:6]}")
    sender = herald.client("sender", key)
    ingest = herald.client("ingest", key)

    herald.infra.handle.stop_broker()  # type: ignore[union-attr]
    try:
        for svc in herald.services.values():
            wait_for(lambda s=svc: s.readyz() == 503, 30, f"{svc.name} /readyz 503", svc)
        accepted = []
        for i in range(10):
            response = sender.post("/v1/messages", json={"to": PHONE, "text": f"during outage {i}"})
            assert response.status_code == 202, response.text
            accepted.append(response.json()["id"])
        order_id = f"O{uuid.uuid4().hex[:6]}"
        posted = ingest.post("/v1/events", json={
            "specversion": "1.0", "id": str(uuid.uuid4()), "source": "/shop/orders", "type": "order.status_changed",
            "time": datetime.now(timezone.utc).isoformat(),
            "data": {"order_id": order_id, "status": "preparing", "customer_phone": PHONE},
        })
        assert posted.status_code == 202, posted.text
    finally:
        herald.infra.handle.start_broker()  # type: ignore[union-attr]

    for svc in herald.services.values():
        wait_for(lambda s=svc: s.readyz() == 200, 60, f"{svc.name} /readyz 200 after the broker returns", svc)

    def all_sent() -> bool:
        return all(sender.get(f"/v1/messages/{m}").json()["status"] == "sent" for m in accepted)

    wait_for(all_sent, 60, "messages accepted during the outage to be sent", herald.services["sender"], interval=0.2)
    counts = sandbox_counts(sender)
    assert all(counts[m] == 1 for m in accepted)
    wait_for(lambda: f"Your order {order_id} is preparing" in
             [i["text"] for i in sender.get("/v1/sandbox/messages").json()["items"]],
             60, "the order event posted during the outage to be delivered", herald.services["pipeline"])
