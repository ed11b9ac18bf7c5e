"""A channel per gateway (Chatwoot, Evolution API, WAHA) created through the sender's API, and a
text and a quick-reply message sent through each to a local server speaking that gateway's
contract, as a user would set Herald up against their own gateway.

Agreed API: ``POST /v1/channels {name, provider, base_url, settings, credentials, is_default}`` →
201 ``{id}``; ``POST /v1/messages {to, text | content, channel_id}`` → 202 ``{id}``;
``GET /v1/messages/{id}`` → ``{status}``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import pytest

from devtools.database import asyncpg_dsn
from devtools.fake_providers._gateway import FakeGateway
from devtools.fake_providers.chatwoot import FakeChatwoot
from devtools.fake_providers.evolution import FakeEvolution
from devtools.fake_providers.waha import FakeWaha
from tests.e2e.conftest import Herald, herald_cli, wait_for

pytestmark = pytest.mark.e2e

BUTTONS = {
    "kind": "buttons",
    "body": "Confirm your appointment?",
    "buttons": [{"id": "confirm:1", "title": "Confirm"}, {"id": "resched:1", "title": "Reschedule"}],
}
NUMBERED = "Confirm your appointment?\n\n1. Confirm\n2. Reschedule\n\nReply with the number of your choice."


class Gateways:
    """The three local gateways, served from their own thread and event loop so that the sync
    HTTP calls of the test never block them."""

    def __init__(self) -> None:
        self.chatwoot = FakeChatwoot(api_access_token="cw-e2e-token", account_id=1, inbox_ids=(7,))
        self.evolution = FakeEvolution(api_key="evo-e2e-key", instances={"acme": "acme-token"})
        self.waha = FakeWaha(api_key="waha-e2e-key", sessions={"sales": "WORKING"})
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-gateways", daemon=True)

    def _all(self) -> list[FakeGateway]:
        return [self.chatwoot, self.evolution, self.waha]

    def start(self) -> None:
        self._thread.start()
        for fake in self._all():
            asyncio.run_coroutine_threadsafe(fake.start(), self._loop).result(10)

    def stop(self) -> None:
        for fake in self._all():
            asyncio.run_coroutine_threadsafe(fake.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def gateways() -> Iterator[Gateways]:
    fakes = Gateways()
    fakes.start()
    try:
        yield fakes
    finally:
        fakes.stop()


@pytest.fixture(scope="module")
def tenant(herald: Herald) -> dict[str, str]:
    return json.loads(
        herald_cli(herald.env, "tenant", "create", f"gateways-{uuid.uuid4().hex[:6]}", "--json")
    )


def _channel_body(provider: str, gateways: Gateways) -> dict[str, Any]:
    if provider == "chatwoot":
        return {
            "base_url": gateways.chatwoot.base_url,
            "settings": {"account_id": "1", "inbox_id": "7"},
            "credentials": {"api_access_token": "cw-e2e-token"},
        }
    if provider == "evolution":
        return {
            "base_url": gateways.evolution.base_url,
            "settings": {"instance": "acme"},
            "credentials": {"api_key": "evo-e2e-key"},
        }
    return {
        "base_url": gateways.waha.base_url,
        "settings": {"session": "sales"},
        "credentials": {"api_key": "waha-e2e-key"},
    }


def _windows(herald: Herald, tenant_id: str, channel_id: str) -> int:
    """How many 24-hour windows the sender has open for the tenant on the channel."""

    async def count() -> int:
        conn = await asyncpg.connect(asyncpg_dsn(herald.infra.database_url))
        try:
            return await conn.fetchval(
                "SELECT count(*) FROM sender.windows WHERE tenant_id = $1 AND channel_key = $2",
                uuid.UUID(tenant_id),
                uuid.UUID(channel_id),
            )
        finally:
            await conn.close()

    return asyncio.run(count())


def _open_window(herald: Herald, tenant_id: str, phone: str, provider: str, channel_id: str) -> None:
    """The recipient writes first (``inbound.received``), so free-form messages are inside the
    24-hour customer-service window. Published on the broker as ingest would."""
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "tests/e2e/sender_gateways",
        "type": "inbound.received.v1",
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "tenantid": tenant_id,
        "data": {
            "provider": provider,
            "provider_message_id": f"in-{uuid.uuid4().hex}",
            "channel_id": channel_id,
            "from_phone": phone,
            "kind": "text",
            "text": "hi",
            "received_at": datetime.now(UTC).isoformat(),
        },
    }

    async def publish() -> None:
        connection = await aio_pika.connect(herald.infra.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange("herald.events")
            await exchange.publish(
                aio_pika.Message(
                    json.dumps(event).encode(),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=event["id"],
                ),
                routing_key="inbound.received.v1",
            )

    asyncio.run(publish())


def _final_status(client: Any, message_id: str) -> dict:
    def check() -> dict | None:
        body = client.get(f"/v1/messages/{message_id}").json()
        return body if body.get("status") in ("sent", "delivered", "read", "failed") else None

    return wait_for(check, 30, f"message {message_id} to be sent or failed")


@pytest.mark.parametrize("provider", ["chatwoot", "evolution", "waha"])
def test_a_gateway_channel_sends_text_and_quick_replies(
    herald: Herald, gateways: Gateways, tenant: dict[str, str], provider: str
) -> None:
    sender = herald.client("sender", tenant["api_key"])
    body = {
        "name": f"{provider} line",
        "provider": provider,
        "is_default": False,
        **_channel_body(provider, gateways),
    }
    created = sender.post("/v1/channels", json=body)
    assert created.status_code == 201, created.text
    channel_id = created.json()["id"]
    secret = next(iter(body["credentials"].values()))
    assert secret not in created.text, "credentials must never be returned"
    assert secret not in sender.get(f"/v1/channels/{channel_id}").text

    phone = {"chatwoot": "+5511999990001", "evolution": "+5511999990002", "waha": "+5511999990003"}[provider]
    _open_window(herald, tenant["tenant_id"], phone, provider, channel_id)
    # the sender records the inbound message (its 24-hour window) before these requests reach it
    wait_for(
        lambda: _windows(herald, tenant["tenant_id"], channel_id) >= 1, 30, "the sender to open the window"
    )

    text = f"Your order ships today ({provider})"
    ids = []
    for payload in ({"to": phone, "text": text}, {"to": phone, "content": BUTTONS}):
        accepted = sender.post("/v1/messages", json={**payload, "channel_id": channel_id})
        assert accepted.status_code == 202, accepted.text
        ids.append(accepted.json()["id"])
    for message_id in ids:
        message = _final_status(sender, message_id)
        assert message["status"] == "sent", message
    # a gateway that cannot send buttons says so in the message's history; Chatwoot can
    sent_reason = next(h["reason"] for h in message["history"] if h["status"] == "sent")
    if provider == "chatwoot":
        assert sent_reason is None, message["history"]
    else:
        assert sent_reason is not None and "numbered" in sent_reason, message["history"]

    if provider == "chatwoot":
        posts = [r.json for r in gateways.chatwoot.requests_to("/messages", "POST")]
        contact = next(c for c in gateways.chatwoot.contacts.values() if c["phone_number"] == phone)
        assert {c["contact_id"] for c in gateways.chatwoot.conversations.values()} >= {contact["id"]}
        assert {
            "message_type": "outgoing",
            "private": False,
            "content": text,
            "content_type": "text",
        } in posts
        assert {
            "message_type": "outgoing",
            "private": False,
            "content": BUTTONS["body"],
            "content_type": "input_select",
            "content_attributes": {
                "items": [
                    {"title": "Confirm", "value": "confirm:1"},
                    {"title": "Reschedule", "value": "resched:1"},
                ]
            },
        } in posts
    elif provider == "evolution":
        sent = [r.json for r in gateways.evolution.requests_to("/message/sendText/acme")]
        assert all(r.headers["apikey"] == "evo-e2e-key" for r in gateways.evolution.received)
        number = phone.lstrip("+")
        assert {"number": number, "text": text, "linkPreview": False} in sent
        assert {"number": number, "text": NUMBERED} in sent
    else:
        sent = [r.json for r in gateways.waha.requests_to("/api/sendText")]
        assert all(r.headers["x-api-key"] == "waha-e2e-key" for r in gateways.waha.received)
        chat_id = f"{phone.lstrip('+')}@c.us"
        assert {"session": "sales", "chatId": chat_id, "text": text} in sent
        assert {"session": "sales", "chatId": chat_id, "text": NUMBERED} in sent
