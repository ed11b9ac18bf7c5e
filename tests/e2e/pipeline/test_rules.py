"""A tenant's own notification rules, end to end: order events posted to ingest, decided in the
pipeline, received by the sender's sandbox provider — in the customer's language, once per order
and status, never out of order, the preview matching what is then sent; bad rules refused."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Herald, wait_for

pytestmark = pytest.mark.e2e

RULE = {
    "name": "shop-lifecycle",
    "event_type": "order.status_changed",
    "filter": [{"field": "status", "op": "in", "value": ["payment_confirmed", "preparing", "ready"]}],
    "recipient": "customer_phone",
    "messages": {
        "pt_BR": {"text": "Oi {{ customer_name }}! O pedido {{ order_id }} está: {{ status | humanize }} 🍕"},
        "en": {"text": "Hi {{ customer_name }}! Order {{ order_id }} is now {{ status | humanize }} 🍕"},
    },
    "fallback_language": "en",
    "priority": 9,
}


def order_event(order_id: str, status: str, phone: str, **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/shop/orders",
        "type": "order.status_changed",
        "time": datetime.now(UTC).isoformat(),
        "data": {"order_id": order_id, "status": status, "customer_phone": phone, **data},
    }


def sandbox_texts(sender: httpx.Client) -> list[str]:
    return [m["text"] for m in sender.get("/v1/sandbox/messages", params={"limit": 1000}).json()["items"]]


def decisions(pipeline: httpx.Client, **params: str) -> list[dict[str, Any]]:
    return pipeline.get("/v1/rule-decisions", params=params).json()["items"]


@pytest.fixture(scope="module")
def shop(herald: Herald) -> dict[str, httpx.Client]:
    key = herald.create_tenant(f"rules-e2e-{uuid.uuid4().hex[:8]}")
    return {name: herald.client(name, key) for name in ("ingest", "pipeline", "sender")}


def test_orders_reach_customers_in_their_language_once_and_in_order(shop: dict[str, httpx.Client]):
    ingest, pipeline, sender = shop["ingest"], shop["pipeline"], shop["sender"]
    created = pipeline.post("/v1/rules", json=RULE)
    assert created.status_code == 201, created.text
    rule_id = created.json()["id"]
    phone_pt, phone_en = (f"+55119{random.randint(80_000_000, 99_999_999)}" for _ in range(2))
    pt_order, en_order = f"PT{uuid.uuid4().hex[:5]}", f"EN{uuid.uuid4().hex[:5]}"

    sample = order_event(pt_order, "ready", phone_pt, customer_name="Ana", language="pt_BR")["data"]
    preview = pipeline.post(f"/v1/rules/{rule_id}/preview", json={"data": sample})
    assert preview.status_code == 200, preview.text
    assert preview.json()["outcome"] == "sent" and preview.json()["language"] == "pt_BR"
    expected_pt = preview.json()["text"]
    assert expected_pt == f"Oi Ana! O pedido {pt_order} está: ready 🍕"
    assert expected_pt not in sandbox_texts(sender), "a preview sends nothing"

    pt = order_event(pt_order, "ready", phone_pt, customer_name="Ana", language="pt_BR")
    en = order_event(en_order, "preparing", phone_en, customer_name="Bob", language="en")
    for event in (pt, en):
        assert ingest.post("/v1/events", json=event).status_code == 202
    expected_en = f"Hi Bob! Order {en_order} is now preparing 🍕"
    wait_for(
        lambda: {expected_pt, expected_en} <= set(sandbox_texts(sender)), 60, "both notices in the sandbox"
    )

    # the order system reports "ready" again (another event id), then a late "payment_confirmed"
    again = order_event(pt_order, "ready", phone_pt, customer_name="Ana", language="pt_BR")
    late = order_event(pt_order, "payment_confirmed", phone_pt, customer_name="Ana", language="pt_BR")
    for event in (again, late):
        assert ingest.post("/v1/events", json=event).status_code == 202
    wait_for(
        lambda: decisions(pipeline, event_id=again["id"]) and decisions(pipeline, event_id=late["id"]),
        60,
        "the pipeline's decisions on the repeated and the late status",
    )
    (dup,) = decisions(pipeline, event_id=again["id"])
    assert dup["outcome"] == "duplicate" and "already notified" in dup["reason"]
    (stale,) = decisions(pipeline, event_id=late["id"])
    assert stale["outcome"] == "stale" and "after 'ready'" in stale["reason"]
    texts = sandbox_texts(sender)
    assert texts.count(expected_pt) == 1
    assert f"Oi Ana! O pedido {pt_order} está: payment confirmed 🍕" not in texts
    (sent,) = decisions(pipeline, event_id=pt["id"])
    assert sent["outcome"] == "sent" and sent["rule"] == "shop-lifecycle" and sent["message_id"]
    delivered = sender.get("/v1/sandbox/messages", params={"message_id": sent["message_id"]}).json()["items"]
    assert [m["text"] for m in delivered] == [expected_pt] and delivered[0]["to"] == phone_pt
    by_order = decisions(pipeline, order_id=pt_order)
    assert sorted(d["outcome"] for d in by_order) == ["duplicate", "sent", "stale"]


def test_an_untouched_default_still_speaks_portuguese(shop: dict[str, httpx.Client]):
    ingest, sender = shop["ingest"], shop["sender"]
    oid = f"D{uuid.uuid4().hex[:5]}"
    phone = f"+55119{random.randint(80_000_000, 99_999_999)}"
    event = order_event(oid, "out_for_delivery", phone, customer_name="Cris", language="pt_BR")
    assert ingest.post("/v1/events", json=event).status_code == 202
    expected = f"Olá, Cris! Seu pedido {oid} saiu para entrega."
    wait_for(lambda: expected in sandbox_texts(sender), 60, "the built-in pt_BR notice in the sandbox")


@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"recipient": "customer.mobile"}, "recipient", "no field 'customer.mobile'"),
        ({"messages": {"en": {"text": "Hi {{ first_name }}"}}}, "messages.en.text", "no field 'first_name'"),
        ({"filter": [{"field": "status", "op": "between", "value": [1, 2]}]}, "filter.0.op", "equals"),
        ({"filter": [{"field": "status", "op": "equals"}]}, "filter.0", "'equals' needs value"),
    ],
)
def test_bad_rules_are_refused_naming_it_and_nothing_is_stored(
    shop: dict[str, httpx.Client], change: dict[str, Any], field: str, words: str
):
    pipeline = shop["pipeline"]
    before = pipeline.get("/v1/rules").json()["items"]
    body = {**RULE, "name": f"bad-{uuid.uuid4().hex[:6]}", **change}
    if "messages" in change:
        body["fallback_language"] = "en"
    r = pipeline.post("/v1/rules", json=body)
    assert r.status_code == 422, r.text
    assert words in r.json()["message"]
    assert any(d["field"].startswith(field) for d in r.json()["details"])
    assert pipeline.get("/v1/rules").json()["items"] == before
