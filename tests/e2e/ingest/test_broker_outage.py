"""RabbitMQ stops while signed webhooks keep arriving: every webhook answered 200 is published
once the broker is back, exactly once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid

import aio_pika
import httpx
import pytest

from devtools.processes import ServiceProcess, wait_for
from tests.conftest import Infra

pytestmark = pytest.mark.e2e
SECRET = "outage-app-secret"


def webhook(wamid: str) -> bytes:
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
                                "contacts": [{"profile": {"name": "Ana"}, "wa_id": "5511999998888"}],
                                "messages": [
                                    {
                                        "from": "5511999998888",
                                        "id": wamid,
                                        "timestamp": "1780394400",
                                        "type": "text",
                                        "text": {"body": wamid},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    ).encode()


def post(client: httpx.Client, url: str, wamid: str) -> int:
    body = webhook(wamid)
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return client.post(url, content=body, headers={"X-Hub-Signature-256": f"sha256={signature}"}).status_code


async def bind_probe(amqp_url: str, name: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind("herald.events", routing_key="inbound.received.v1")


def test_webhooks_accepted_while_the_broker_is_down_are_published_once_it_is_back(
    infra: Infra, ingest_process: tuple[ServiceProcess, dict[str, str]]
):
    if not infra.can_stop_broker:
        pytest.skip("the broker comes from HERALD_TEST_AMQP_URL: this run cannot stop it")
    service, tenant = ingest_process
    api_key = tenant["api_key"]
    client = httpx.Client(base_url=service.url, timeout=10)
    source = client.post(
        "/v1/webhook-sources",
        json={"provider": "meta", "secrets": {"app_secret": SECRET, "verify_token": "v"}},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert source.status_code == 201, source.text
    url = source.json()["url"]
    probe = f"test.ingest-outage.{uuid.uuid4().hex[:8]}"
    asyncio.run(bind_probe(infra.amqp_url, probe))

    accepted = [w for w in (f"wamid.before.{i}" for i in range(10)) if post(client, url, w) == 200]
    infra.handle.stop_broker()  # type: ignore[union-attr]
    try:
        wait_for(lambda: service.readyz() == 503, 30, "ingest /readyz 503", service)
        during = [f"wamid.during.{i}" for i in range(40)]
        statuses = [post(client, url, w) for w in during]
        assert statuses == [200] * len(during), "webhooks are answered while the broker is away"
        accepted += during
    finally:
        infra.handle.start_broker()  # type: ignore[union-attr]
    wait_for(lambda: service.readyz() == 200, 60, "ingest /readyz 200 again", service)
    accepted += [w for w in (f"wamid.after.{i}" for i in range(10)) if post(client, url, w) == 200]
    assert len(accepted) == 60
    assert post(client, url, "wamid.during.0") == 200  # a redelivery during recovery stays one event

    published = asyncio.run(collect(infra.amqp_url, probe, tenant["tenant_id"], len(accepted), 60))
    assert sorted(published) == sorted(accepted), "every accepted webhook published exactly once"


async def collect(amqp_url: str, name: str, tenant_id: str, want: int, within: float) -> list[str]:
    connection = await aio_pika.connect_robust(amqp_url)
    got: list[str] = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True)
        deadline = asyncio.get_running_loop().time() + within
        idle = 0.0
        while asyncio.get_running_loop().time() < deadline:
            message = await queue.get(fail=False)
            if message is None:
                if len(got) >= want:
                    idle += 0.1
                    if idle > 2.0:  # a late duplicate would have shown up by now
                        break
                await asyncio.sleep(0.1)
                continue
            idle = 0.0
            await message.ack()
            event = json.loads(message.body)
            if event["tenantid"] == tenant_id:
                got.append(event["data"]["provider_message_id"])
        await queue.delete(if_unused=False, if_empty=False)
    return got
