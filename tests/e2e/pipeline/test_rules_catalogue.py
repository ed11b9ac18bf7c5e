"""A rule that names a template of the sender's catalogue, end to end: checked against the
catalogue when saved (a template that does not exist, a variable it does not declare → 422), and
an order event sends it with its named variables mapped from the event — on the sandbox channel
the sender renders the body as text (issue 12 §2).
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from tests.e2e.conftest import Herald, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shop(herald: Herald) -> dict[str, httpx.Client]:
    key = herald.create_tenant(f"rules-cat-{uuid.uuid4().hex[:8]}")
    clients = {name: herald.client(name, key) for name in ("ingest", "pipeline", "sender")}
    return clients


def test_a_catalogue_template_rule_is_checked_and_sent_with_mapped_variables(shop: dict[str, httpx.Client]):
    ingest, pipeline, sender = shop["ingest"], shop["pipeline"], shop["sender"]
    name = f"order_ready_{uuid.uuid4().hex[:6]}"
    made = sender.post(
        "/v1/templates",
        json={
            "name": name,
            "language": "pt_BR",
            "category": "UTILITY",
            "body": "Olá {{attendee_name}}, seu pedido {{order_number}} está pronto",
            "variables": ["attendee_name", "order_number"],
            "examples": {"attendee_name": "Ana", "order_number": "1042"},
        },
    )
    assert made.status_code == 201, made.text
    assert made.json()["variables"] == ["attendee_name", "order_number"]

    rule = {
        "name": "order.ready",
        "event_type": "order.status_changed",
        "filter": [{"field": "status", "op": "equals", "value": "ready"}],
        "recipient": "customer_phone",
        "messages": {
            "pt_BR": {
                "template": {
                    "name": name,
                    "variables": {"attendee_name": "customer_name", "order_number": "order_id"},
                }
            }
        },
        "fallback_language": "pt_BR",
    }
    undeclared = {
        "template": {"name": name, "variables": {"attendee_name": "customer_name", "seat": "order_id"}}
    }
    bad = pipeline.post("/v1/rules", json={**rule, "messages": {"pt_BR": undeclared}})
    assert bad.status_code == 422 and "does not declare variable 'seat'" in bad.json()["message"]
    missing = pipeline.post(
        "/v1/rules", json={**rule, "messages": {"pt_BR": {"template": {"name": "no_such_template"}}}}
    )
    assert missing.status_code == 422 and "not in the sender's catalogue" in missing.json()["message"]

    created = pipeline.post("/v1/rules", json=rule)
    assert created.status_code == 201, created.text
    oid = f"K{uuid.uuid4().hex[:5]}"
    phone = f"+55119{random.randint(80_000_000, 99_999_999)}"
    data = {
        "order_id": oid,
        "status": "ready",
        "customer_phone": phone,
        "customer_name": "Ana",
        "language": "pt_BR",
    }
    preview = pipeline.post(f"/v1/rules/{created.json()['id']}/preview", json={"data": data}).json()
    assert preview["content"] == {
        "kind": "template",
        "name": name,
        "language": "pt_BR",
        "variables": {"attendee_name": "Ana", "order_number": oid},
    }
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/shop/orders",
        "type": "order.status_changed",
        "time": datetime.now(UTC).isoformat(),
        "data": data,
    }
    assert ingest.post("/v1/events", json=event).status_code == 202
    expected = f"Olá Ana, seu pedido {oid} está pronto"

    def texts() -> list[str]:
        return [m["text"] for m in sender.get("/v1/sandbox/messages", params={"limit": 1000}).json()["items"]]

    wait_for(lambda: expected in texts(), 60, "the template rendered as text in the sandbox")
