"""One message through every service, as a user drives Herald over HTTP and the broker."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import aio_pika
import httpx
import pytest

from tests.e2e.conftest import Herald, herald_cli, wait_for

pytestmark = pytest.mark.e2e
PHONE = "+5511999998888"


def wait_status(client: httpx.Client, message_id: str, status: str, timeout: float = 10.0) -> dict:
    def check() -> dict | None:
        body = client.get(f"/v1/messages/{message_id}").json()
        return body if body.get("status") == status else None

    return wait_for(check, timeout, f"message {message_id} to be {status}")


def sandbox_for(client: httpx.Client, message_id: str) -> list[dict]:
    return client.get("/v1/sandbox/messages", params={"message_id": message_id}).json()["items"]


@pytest.fixture(scope="module")
def key(herald: Herald) -> str:
    return herald.create_tenant(f"shop-{uuid.uuid4().hex[:6]}")


def test_every_service_is_ready_and_documents_itself(herald: Herald):
    for name, svc in herald.services.items():
        assert httpx.get(f"{svc.url}/livez").json() == {"status": "alive"}
        ready = httpx.get(f"{svc.url}/readyz").json()
        assert ready == {"status": "ready", "checks": {"broker": "ok", "database": "ok"}}
        metrics = httpx.get(f"{svc.url}/metrics").text
        # counted per route template and status, so an operator can alert on one endpoint's errors
        assert (
            f'herald_http_requests_total{{method="GET",route="/readyz",service="{name}",status="200"}}'
            in metrics
        ), metrics[:2000]
        assert httpx.get(f"{svc.url}/openapi.json").json()["info"]["title"] == f"Herald {name}"
        spec = httpx.get(f"{svc.url}/asyncapi.json").json()
        assert spec["asyncapi"].startswith("3.") and spec["channels"], name


def test_message_is_sent_through_the_sandbox_with_its_history(herald: Herald, key: str):
    sender = herald.client("sender", key)
    accepted = sender.post("/v1/messages", json={"to": PHONE, "text": "Payment confirmed", "priority": 9})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "queued"
    message_id = accepted.json()["id"]

    message = wait_status(sender, message_id, "sent", timeout=5)
    assert [h["status"] for h in message["history"]] == ["queued", "sending", "sent"]
    times = [datetime.fromisoformat(h["at"]) for h in message["history"]]
    assert times == sorted(times)
    assert message["provider"] == "sandbox" and message["provider_message_id"].startswith("sandbox.")
    assert message["to"] == PHONE

    received = sandbox_for(sender, message_id)
    assert [(r["to"], r["text"]) for r in received] == [(PHONE, "Payment confirmed")]


def test_same_idempotency_key_returns_the_same_message_and_sends_once(herald: Herald, key: str):
    sender = herald.client("sender", key)
    body = {"to": PHONE, "text": "Your code is 4417", "idempotency_key": f"otp-{uuid.uuid4()}"}
    first = sender.post("/v1/messages", json=body)
    second = sender.post("/v1/messages", json=body)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers.get("idempotent-replayed") == "true"
    wait_status(sender, first.json()["id"], "sent")
    third = sender.post("/v1/messages", json=body)
    assert third.json()["id"] == first.json()["id"]
    assert len(sandbox_for(sender, first.json()["id"])) == 1

    conflict = sender.post("/v1/messages", json={**body, "text": "a different text"})
    assert conflict.status_code == 409
    assert "already used for a different request" in conflict.json()["message"]


def test_a_batch_is_accepted_together_and_each_message_sent_once(herald: Herald, key: str):
    sender = herald.client("sender", key)
    otp = f"otp-{uuid.uuid4()}"
    first = sender.post("/v1/messages", json={"to": PHONE, "text": "code 1", "idempotency_key": otp})
    batch = [
        {"to": f"+55119876543{i:02d}", "text": f"Sale starts today ({i})", "priority": 2} for i in range(40)
    ]
    batch += [
        {"to": PHONE, "text": "code 1", "idempotency_key": otp},  # a retry of the request above
        {"to": PHONE, "text": "code 2", "idempotency_key": otp},  # the key reused for another text
    ]
    accepted = sender.post("/v1/messages/batch", json={"messages": batch})
    assert accepted.status_code == 202, accepted.text
    items = accepted.json()["messages"]
    assert accepted.json()["accepted"] == 40 and len(items) == 42
    assert all(i["created"] and i["error"] is None for i in items[:40])
    assert items[40]["id"] == first.json()["id"] and not items[40]["created"]
    assert "already used for a different request" in items[41]["error"]
    for item in items[:40]:
        wait_status(sender, item["id"], "sent", timeout=20)
        assert len(sandbox_for(sender, item["id"])) == 1

    # one bad item refuses the whole batch, names the item, and stores nothing
    before = sender.get("/v1/messages", params={"limit": 200}).json()
    bad = sender.post(
        "/v1/messages/batch",
        json={"messages": [{"to": PHONE, "text": "fine"}, {"to": "12345", "text": "not a number"}]},
    )
    assert bad.status_code == 422 and "messages.1.to" in bad.text, bad.text
    assert sender.get("/v1/messages", params={"limit": 200}).json() == before
    too_many = sender.post("/v1/messages/batch", json={"messages": [{"to": PHONE, "text": "x"}] * 1001})
    assert too_many.status_code == 422


def test_scheduled_message_is_sent_at_its_time(herald: Herald, key: str):
    scheduler = herald.client("scheduler", key)
    sender = herald.client("sender", key)
    send_at = datetime.now(timezone(timedelta(hours=-3))) + timedelta(seconds=2)
    created = scheduler.post(
        "/v1/scheduled-messages",
        json={"to": PHONE, "text": "Reminder: pickup today", "send_at": send_at.isoformat()},
    )
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["status"] == "pending"

    message = wait_status(sender, schedule["message_id"], "sent", timeout=10)
    queued_at = datetime.fromisoformat(message["history"][0]["at"])
    assert queued_at >= send_at, "fired before its time"
    assert scheduler.get(f"/v1/scheduled-messages/{schedule['id']}").json()["status"] == "published"
    assert [r["text"] for r in sandbox_for(sender, schedule["message_id"])] == ["Reminder: pickup today"]


def test_cancelled_scheduled_message_is_never_sent(herald: Herald, key: str):
    scheduler = herald.client("scheduler", key)
    sender = herald.client("sender", key)
    send_at = datetime.now(UTC) + timedelta(seconds=2)
    schedule = scheduler.post(
        "/v1/scheduled-messages", json={"to": PHONE, "text": "never", "send_at": send_at.isoformat()}
    ).json()
    cancelled = scheduler.delete(f"/v1/scheduled-messages/{schedule['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

    wait_for(lambda: datetime.now(UTC) > send_at + timedelta(seconds=2), 10, "due time to pass")
    assert sender.get(f"/v1/messages/{schedule['message_id']}").status_code == 404
    assert sandbox_for(sender, schedule["message_id"]) == []
    again = scheduler.delete(f"/v1/scheduled-messages/{schedule['id']}")
    assert again.status_code == 409 and "cancelled" in again.json()["message"]


def order_event(order_id: str, status: str, event_id: str | None = None) -> dict:
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": "/shop/orders",
        "type": "order.status_changed",
        "time": datetime.now(UTC).isoformat(),
        "data": {"order_id": order_id, "status": status, "customer_phone": PHONE},
    }


def texts_in_sandbox(sender: httpx.Client) -> list[str]:
    return [r["text"] for r in sender.get("/v1/sandbox/messages", params={"limit": 1000}).json()["items"]]


def test_order_status_posted_to_ingest_reaches_the_customer_once(herald: Herald, key: str):
    ingest = herald.client("ingest", key)
    sender = herald.client("sender", key)
    order_id = f"A{uuid.uuid4().hex[:6]}"
    event = order_event(order_id, "ready_for_pickup")
    first = ingest.post("/v1/events", json=event)
    assert first.status_code == 202, first.text
    assert first.json() == {"id": event["id"], "type": "order.status_changed.v1", "status": "accepted"}
    again = ingest.post("/v1/events", json=event)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"

    expected = f"Your order {order_id} is ready for pickup"
    wait_for(lambda: expected in texts_in_sandbox(sender), 10, "the order notice in the sandbox")
    assert texts_in_sandbox(sender).count(expected) == 1


def test_order_status_published_on_the_broker_by_another_system(herald: Herald, key: str):
    sender = herald.client("sender", key)
    order_id = f"B{uuid.uuid4().hex[:6]}"
    # a system publishing on the broker names its tenant in the CloudEvent's tenantid
    tenant = json.loads(herald_cli(herald.env, "tenant", "create", f"broker-{order_id}", "--json"))
    event = {
        **order_event(order_id, "payment_confirmed"),
        "type": "order.status_changed.v1",
        "tenantid": tenant["tenant_id"],
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
                routing_key="order.status_changed.v1",
            )

    asyncio.run(publish())
    other = herald.client("sender", tenant["api_key"])
    expected = f"Your order {order_id} is payment confirmed"
    wait_for(lambda: expected in texts_in_sandbox(other), 10, "the order notice in the sandbox")
    assert expected not in texts_in_sandbox(sender), "another tenant's message leaked"


def test_a_tenant_sees_only_its_own_messages(herald: Herald, key: str):
    other_key = herald.create_tenant(f"other-{uuid.uuid4().hex[:6]}")
    mine = herald.client("sender", key).post("/v1/messages", json={"to": PHONE, "text": "mine"}).json()["id"]
    other = herald.client("sender", other_key)
    assert other.get(f"/v1/messages/{mine}").status_code == 404
    assert mine not in [m["id"] for m in other.get("/v1/messages").json()["items"]]
    assert other.get("/v1/sandbox/messages", params={"message_id": mine}).json()["items"] == []

    send_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    scheduled = herald.client("scheduler", key).post(
        "/v1/scheduled-messages", json={"to": PHONE, "text": "mine later", "send_at": send_at}
    )
    schedule_id = scheduled.json()["id"]
    other_scheduler = herald.client("scheduler", other_key)
    assert other_scheduler.get(f"/v1/scheduled-messages/{schedule_id}").status_code == 404
    assert other_scheduler.delete(f"/v1/scheduled-messages/{schedule_id}").status_code == 404
    assert schedule_id not in [m["id"] for m in other_scheduler.get("/v1/scheduled-messages").json()["items"]]
    mine_now = herald.client("scheduler", key).get(f"/v1/scheduled-messages/{schedule_id}").json()
    assert mine_now["status"] == "pending", "another tenant's DELETE must not cancel it"


@pytest.mark.parametrize(
    "service, method, path",
    [
        ("sender", "GET", "/v1/messages"),
        ("sender", "POST", "/v1/messages"),
        ("scheduler", "GET", "/v1/scheduled-messages"),
        ("ingest", "POST", "/v1/events"),
        ("pipeline", "GET", "/v1/rules"),
    ],
)
def test_v1_needs_a_valid_api_key(herald: Herald, service: str, method: str, path: str):
    body = {"to": PHONE, "text": "x"} if method == "POST" else None
    missing = herald.client(service, None).request(method, path, json=body)
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["message"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = herald.client(service, "hk_not-a-real-key-at-all").request(method, path, json=body)
    assert wrong.status_code == 401 and "invalid" in wrong.json()["message"]


def _count(client: httpx.Client, path: str) -> int:
    return len(client.get(path, params={"limit": 500}).json()["items"])


def test_bad_input_gets_a_clear_4xx_and_stores_nothing(herald: Herald):
    key = herald.create_tenant(f"bad-{uuid.uuid4().hex[:6]}")
    sender = herald.client("sender", key)
    scheduler = herald.client("scheduler", key)
    ingest = herald.client("ingest", key)

    cases = [
        (
            sender.post(
                "/v1/messages",
                content=b'{"to": "+5511999998888", "text": ',
                headers={"content-type": "application/json"},
            ),
            400,
            "not valid JSON",
        ),
        (
            sender.post("/v1/messages", json={"to": PHONE, "text": "x", "colour": "red"}),
            422,
            "colour: unknown field",
        ),
        (sender.post("/v1/messages", json={"to": "11999998888", "text": "x"}), 422, "to: "),
        (sender.post("/v1/messages", json={"to": "+55119", "text": "x"}), 422, "not a valid phone number"),
        (sender.post("/v1/messages", json={"to": PHONE}), 422, "give exactly one of 'text' or 'content'"),
        (sender.post("/v1/messages", json={"to": PHONE, "text": "x", "priority": 11}), 422, "priority"),
        (
            scheduler.post(
                "/v1/scheduled-messages",
                json={
                    "to": PHONE,
                    "text": "x",
                    "send_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
                },
            ),
            422,
            "in the past",
        ),
        (
            scheduler.post(
                "/v1/scheduled-messages", json={"to": PHONE, "text": "x", "send_at": "2030-01-01T09:00:00"}
            ),
            422,
            "send_at",
        ),
        (
            ingest.post("/v1/events", content=b"{nope", headers={"content-type": "application/json"}),
            400,
            "not valid JSON",
        ),
        (
            ingest.post("/v1/events", json={**order_event("1", "x"), "type": "order.shipped"}),
            422,
            "unknown event type",
        ),
        (ingest.post("/v1/events", content=b"x" * (1_048_576 + 10)), 413, "exceeds"),
        (
            ingest.post(
                "/v1/events",
                json={
                    **order_event("1", "x"),
                    "type": "event.published",
                    "data": {
                        "event_id": "launch",
                        "name": "Launch",
                        "starts_at": (datetime.now(UTC) + timedelta(days=10)).isoformat(),
                        "timezone": "America/Sao_Paolo",
                        "attendees": [{"phone": PHONE}],
                    },
                },
            ),
            422,
            "use an IANA zone such as America/Sao_Paulo",
        ),
        (
            ingest.post(
                "/v1/events",
                content=b"[" * 5000 + b"]" * 5000,
                headers={"content-type": "application/json"},
            ),
            400,
            "JSON",
        ),
    ]
    for response, status, text in cases:
        assert response.status_code == status, (response.request.url, response.text)
        body = response.json()
        assert text in body["message"], body
        assert body["error"]

    assert _count(sender, "/v1/messages") == 0
    assert _count(sender, "/v1/sandbox/messages") == 0
    assert _count(scheduler, "/v1/scheduled-messages") == 0
