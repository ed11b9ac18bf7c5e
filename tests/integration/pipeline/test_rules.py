"""Notification rules on a real PostgreSQL, with a local stand-in of the sender's template
catalogue (``GET /v1/templates`` as contracts.md gives it): rules checked when saved, an order's
statuses becoming messages once and in order, every decision visible."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import sqlalchemy as sa

from devtools.database import create_migrated_database, drop_database
from devtools.processes import free_port
from services.pipeline import handlers
from services.pipeline.app import build
from services.pipeline.models import outbox
from services.pipeline.settings import PipelineSettings
from shared.crypto import SecretBox
from shared.events import OrderStatusChanged, new_event
from shared.tenancy import create_tenant
from tests.conftest import Infra

pytestmark = pytest.mark.integration

PHONE = "+5511977776666"
TEMPLATE = {
    "id": str(uuid.uuid4()),
    "channel_id": None,
    "name": "order_ready",
    "language": "pt_BR",
    "category": "UTILITY",
    "status": "APPROVED",
    "reason": None,
    "header": None,
    "body": "Olá {{attendee_name}}, pedido {{order_number}} pronto",
    "footer": None,
    "buttons": [],
    "variables": ["attendee_name", "order_number"],
    "variable_style": "named",
    "examples": {},
    "created_at": datetime.now(UTC).isoformat(),
    "updated_at": datetime.now(UTC).isoformat(),
}


class Catalogue(BaseHTTPRequestHandler):
    """The sender's ``GET /v1/templates?name=&language=``; 401 without a bearer key."""

    def do_GET(self) -> None:
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            self._answer(401, {"error": "unauthorized", "message": "no key", "details": []})
            return
        found = [
            t
            for t in [TEMPLATE]
            if q.get("name") in (None, t["name"]) and q.get("language") in (None, t["language"])
        ]
        self._answer(200, {"templates": found})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def sender_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Catalogue)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def database_url(infra: Infra) -> Iterator[str]:
    name, url = create_migrated_database(infra.database_url, "herald_rules")
    try:
        yield url
    finally:
        drop_database(infra.database_url, name)


async def _system(
    database_url: str, infra: Infra, sender_url: str
) -> tuple[Any, uuid.UUID, httpx.AsyncClient]:
    settings = PipelineSettings(
        database_url=database_url,
        amqp_url=infra.amqp_url,
        encryption_keys=SecretBox.generate_key(),
        secret_key=uuid.uuid4().hex,
        environment="test",
        sender_url=sender_url,
    )
    runtime, app = build(settings)
    tenant, key = await create_tenant(runtime.engine, f"rules-{uuid.uuid4().hex[:8]}")
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://pipeline",
        headers={"Authorization": f"Bearer {key}"},
    )
    return runtime, tenant.id, client


@pytest.fixture
async def system(database_url: str, infra: Infra, sender_url: str) -> AsyncIterator[Any]:
    runtime, tenant_id, client = await _system(database_url, infra, sender_url)
    try:
        yield runtime, tenant_id, client
    finally:
        await client.aclose()
        await runtime.engine.dispose()


def order(tenant_id: uuid.UUID, order_id: str, status: str, **extra: Any) -> Any:
    data = OrderStatusChanged(order_id=order_id, status=status, customer_phone=PHONE, **extra)
    return new_event(data, tenant_id=tenant_id, source="/shop/orders")


async def requests_for(runtime: Any, order_id: str) -> list[dict[str, Any]]:
    async with runtime.engine.connect() as conn:
        rows = (await conn.execute(sa.select(outbox.c.body))).all()
    out = [json.loads(r.body) for r in rows]
    return [e["data"] for e in out if e.get("subject") == f"order/{order_id}"]


MINE = {
    "name": "order.ready",
    "event_type": "order.status_changed",
    "filter": [{"field": "status", "op": "in", "value": ["ready", "preparing"]}],
    "recipient": "customer_phone",
    "messages": {
        "pt_BR": {"text": "Oi {{ customer_name }}! Pedido {{ order_id }}: {{ status | humanize }}"},
        "en": {"text": "Hey {{ customer_name }}, order {{ order_id }}: {{ status | humanize }}"},
    },
    "fallback_language": "en",
}


async def test_a_tenant_rule_speaks_each_customers_language_and_previews_what_it_sends(system: Any) -> None:
    runtime, tenant_id, client = system
    r = await client.post("/v1/rules", json=MINE)
    assert r.status_code == 201, r.text
    rule = r.json()
    listed = (await client.get("/v1/rules")).json()["items"]
    names = [x["name"] for x in listed]
    assert (
        names.count("order.ready") == 1
        and not next(x for x in listed if x["name"] == "order.ready")["builtin"]
    )
    assert "order.delivered" in names, "the defaults it did not replace are still in force"

    sample = {
        "order_id": "P1",
        "status": "ready",
        "customer_phone": PHONE,
        "customer_name": "Ana",
        "language": "pt_BR",
    }
    preview = (await client.post(f"/v1/rules/{rule['id']}/preview", json={"data": sample})).json()
    assert preview["outcome"] == "sent" and preview["text"] == "Oi Ana! Pedido P1: ready"
    assert await requests_for(runtime, "P1") == [], "a preview sends nothing"

    pt = order(tenant_id, "P1", "ready", customer_name="Ana", language="pt_BR")
    en = order(tenant_id, "E1", "ready", customer_name="Bob", language="en_US")
    assert await handlers.notify_order_status(runtime, pt)
    assert await handlers.notify_order_status(runtime, en)
    assert not await handlers.notify_order_status(runtime, pt), "a redelivery is applied once"
    assert [m["text"] for m in await requests_for(runtime, "P1")] == [preview["text"]]
    assert [m["text"] for m in await requests_for(runtime, "E1")] == ["Hey Bob, order E1: ready"]

    decisions = (await client.get("/v1/rule-decisions", params={"event_id": pt.id})).json()["items"]
    assert [(d["rule"], d["outcome"], d["language"]) for d in decisions] == [("order.ready", "sent", "pt_BR")]


async def test_repeated_and_late_statuses_are_not_sent_and_say_why(system: Any) -> None:
    runtime, tenant_id, client = system
    oid = f"M{uuid.uuid4().hex[:6]}"
    for status in ("payment_confirmed", "ready"):
        assert await handlers.notify_order_status(runtime, order(tenant_id, oid, status))
    again = order(tenant_id, oid, "ready")  # the same status, another event id
    late = order(tenant_id, oid, "preparing")  # arrives after ready
    assert await handlers.notify_order_status(runtime, again)
    assert await handlers.notify_order_status(runtime, late)
    texts = [m["text"] for m in await requests_for(runtime, oid)]
    assert texts == [f"Your order {oid} is payment confirmed", f"Your order {oid} is ready"]

    by_event = {
        e.id: (await client.get("/v1/rule-decisions", params={"event_id": e.id})).json()["items"]
        for e in (again, late)
    }
    assert [d["outcome"] for d in by_event[again.id]] == ["duplicate"]
    assert "already notified" in by_event[again.id][0]["reason"]
    assert [d["outcome"] for d in by_event[late.id]] == ["stale"]
    assert "after 'ready'" in by_event[late.id][0]["reason"]
    history = (await client.get("/v1/rule-decisions", params={"order_id": oid})).json()["items"]
    assert sorted(d["outcome"] for d in history) == ["duplicate", "sent", "sent", "stale"]


async def test_two_replicas_handling_the_two_duplicates_at_once_send_once(
    database_url: str, infra: Infra, sender_url: str
) -> None:
    one = await _system(database_url, infra, sender_url)
    two = await _system(database_url, infra, sender_url)
    runtime, tenant_id, _ = one
    try:
        for _round in range(5):
            oid = f"C{uuid.uuid4().hex[:6]}"
            a, b = order(tenant_id, oid, "delivered"), order(tenant_id, oid, "delivered")
            assert all(
                await asyncio.gather(
                    handlers.notify_order_status(one[0], a), handlers.notify_order_status(two[0], b)
                )
            )
            assert len(await requests_for(runtime, oid)) == 1
            outcomes = (await one[2].get("/v1/rule-decisions", params={"order_id": oid})).json()["items"]
            assert sorted(d["outcome"] for d in outcomes) == ["duplicate", "sent"]
    finally:
        for rt, _, client in (one, two):
            await client.aclose()
            await rt.engine.dispose()


async def test_bad_rules_are_refused_naming_the_problem_and_nothing_is_stored(system: Any) -> None:
    _, _, client = system
    before = (await client.get("/v1/rules")).json()["items"]
    cases = [
        ({"recipient": "customer_email"}, "recipient", "customer_email"),
        ({"filter": [{"field": "state", "op": "equals", "value": "x"}]}, "filter.0.field", "state"),
        ({"filter": [{"field": "status", "op": "in", "value": "ready"}]}, "filter.0", "non-empty list"),
        ({"filter": [{"field": "status", "op": "like", "value": "r%"}]}, "filter.0.op", "equals"),
        ({"messages": {"en": {"text": "{{ total }}"}}}, "messages.en.text", "total"),
        ({"messages": {"en": {"text": "{{ oops"}}}, "messages.en", "not a valid template"),
        ({"event_type": "ticket.sold"}, "event_type", "ticket.sold"),
        ({"fallback_language": "es"}, "body", "fallback_language"),
        (
            {
                "messages": {
                    "pt_BR": {
                        "template": {
                            "name": "order_ready",
                            "variables": {"attendee_name": "customer_name", "seat": "order_id"},
                        }
                    }
                },
                "fallback_language": "pt_BR",
            },
            "messages.pt_BR.template.variables.seat",
            "does not declare variable 'seat'",
        ),
        (
            {"messages": {"en": {"template": {"name": "nope", "variables": {}}}}},
            "messages.en.template.name",
            "not in the sender's catalogue",
        ),
    ]
    for change, field, words in cases:
        r = await client.post("/v1/rules", json={**MINE, "name": f"bad-{uuid.uuid4().hex[:6]}", **change})
        assert r.status_code == 422, (change, r.text)
        body = r.json()
        assert any(d["field"].startswith(field) for d in body["details"]), (field, body)
        assert words in body["message"], (words, body["message"])
    assert (await client.get("/v1/rules")).json()["items"] == before


async def test_catalogue_template_rule_and_crud(system: Any) -> None:
    runtime, tenant_id, client = system
    body = {
        **MINE,
        "name": "order.ready.template",
        "messages": {
            "pt_BR": {
                "template": {
                    "name": "order_ready",
                    "variables": {"attendee_name": "customer_name", "order_number": "order_id"},
                }
            }
        },
        "fallback_language": "pt_BR",
        "filter": [{"field": "status", "op": "equals", "value": "out_for_delivery"}],
    }
    r = await client.post("/v1/rules", json=body)
    assert r.status_code == 201, r.text
    rule_id = r.json()["id"]
    assert (await client.post("/v1/rules", json=body)).status_code == 422, "one name per tenant"
    oid = f"T{uuid.uuid4().hex[:6]}"
    assert await handlers.notify_order_status(
        runtime, order(tenant_id, oid, "out_for_delivery", customer_name="Ana")
    )
    (sent,) = await requests_for(runtime, oid)
    assert sent["content"]["kind"] == "template" and sent["content"]["name"] == "order_ready"
    assert sent["content"]["variables"] == {"attendee_name": "Ana", "order_number": oid}

    patched = await client.patch(f"/v1/rules/{rule_id}", json={"enabled": False, "priority": 9})
    assert (
        patched.status_code == 200 and patched.json()["enabled"] is False and patched.json()["priority"] == 9
    )
    bad = await client.patch(f"/v1/rules/{rule_id}", json={"recipient": "nowhere"})
    assert bad.status_code == 422 and "nowhere" in bad.json()["message"]
    assert (await client.get(f"/v1/rules/{rule_id}")).json()["recipient"] == "customer_phone"
    assert (await client.delete(f"/v1/rules/{rule_id}")).status_code == 204
    assert (await client.get(f"/v1/rules/{rule_id}")).status_code == 404


async def test_an_unreachable_sender_is_a_503_and_nothing_is_stored(database_url: str, infra: Infra) -> None:
    runtime, _, client = await _system(database_url, infra, f"http://127.0.0.1:{free_port()}")
    try:
        body = {**MINE, "messages": {"en": {"template": {"name": "order_ready", "variables": {}}}}}
        r = await client.post("/v1/rules", json=body)
        assert r.status_code == 503 and "nothing was stored" in r.json()["message"]
        assert all(x["builtin"] for x in (await client.get("/v1/rules")).json()["items"])
    finally:
        await client.aclose()
        await runtime.engine.dispose()
