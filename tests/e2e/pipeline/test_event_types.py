"""Tenant event types with the four services as processes (``herald run``) on real RabbitMQ and
PostgreSQL: a tenant registers ``ticket.updated`` (a name and a JSON Schema) on the pipeline, a
ticketing app posts its events to ingest, and what does not match is refused naming the field —
at ingest's door (422, nothing stored or published) and on the broker (a dead letter with the
reason)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from tests.e2e.conftest import Herald, herald_cli, wait_for

pytestmark = pytest.mark.e2e

TICKET_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["ticket_id", "status", "customer"],
    "properties": {
        "ticket_id": {"type": "string", "minLength": 1},
        "status": {"enum": ["open", "pending", "solved"]},
        "customer": {
            "type": "object",
            "required": ["phone"],
            "properties": {
                "phone": {"type": "string", "pattern": "^\\+[1-9][0-9]{7,14}$"},
                "name": {"type": "string"},
            },
        },
    },
}
GOOD = {"ticket_id": "T-1", "status": "solved", "customer": {"phone": "+5511999998888", "name": "Ana"}}
BAD_PHONE = {"ticket_id": "T-2", "status": "open", "customer": {"phone": "11 9999-8888"}}


class Tenant:
    def __init__(self, herald: Herald) -> None:
        created = json.loads(
            herald_cli(herald.env, "tenant", "create", f"evtypes-{uuid.uuid4().hex[:8]}", "--json")
        )
        self.id = created["tenant_id"]
        self.ingest = herald.client("ingest", created["api_key"])
        self.pipeline = herald.client("pipeline", created["api_key"])

    def register(self, name: str = "ticket.updated", schema: dict[str, Any] | None = None) -> httpx.Response:
        return self.pipeline.post("/v1/event-types", json={"name": name, "schema": schema or TICKET_SCHEMA})

    def post(
        self, data: Any, *, event_id: str | None = None, type_: str = "ticket.updated"
    ) -> httpx.Response:
        return self.ingest.post(
            "/v1/events",
            json={
                "specversion": "1.0",
                "id": event_id or uuid.uuid4().hex,
                "source": "/helpdesk",
                "type": type_,
                "time": datetime.now(UTC).isoformat(),
                "data": data,
            },
        )

    def received(self, name: str = "ticket.updated") -> list[dict[str, Any]]:
        answer = self.pipeline.get(f"/v1/event-types/{name}/events")
        assert answer.status_code == 200, answer.text
        return answer.json()["events"]


def field_of(answer: httpx.Response) -> list[str]:
    return [d.get("field") for d in answer.json()["details"]]


async def outbox_rows(database_url: str, event_id: str) -> int:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg:", "postgresql:"))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM ingest.outbox WHERE event_id = $1", event_id))
    finally:
        await conn.close()


def test_a_registered_type_is_accepted_by_ingest_and_reaches_the_pipeline(herald: Herald):
    tenant = Tenant(herald)
    created = tenant.register()
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "ticket.updated" and created.json()["version"] == 1
    assert created.json()["schema"] == TICKET_SCHEMA
    assert [t["name"] for t in tenant.pipeline.get("/v1/event-types").json()["event_types"]] == [
        "ticket.updated"
    ]

    event_id = f"ticket-{uuid.uuid4().hex[:8]}"
    accepted = tenant.post(GOOD, event_id=event_id)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {"id": event_id, "type": "ticket.updated", "status": "accepted"}
    assert tenant.post(GOOD, event_id=event_id).json()["status"] == "duplicate"

    events = wait_for(
        tenant.received, 60, "the pipeline to receive the ticket event", herald.services["pipeline"]
    )
    assert [(e["event_key"], e["status"], e["data"]) for e in events] == [
        (f"/helpdesk:{event_id}", "received", GOOD)
    ]


def test_data_that_does_not_match_is_refused_naming_the_field_and_nothing_is_stored(herald: Herald):
    tenant = Tenant(herald)
    assert tenant.register().status_code == 201
    event_id = f"bad-{uuid.uuid4().hex[:8]}"

    refused = tenant.post(BAD_PHONE, event_id=event_id)
    assert refused.status_code == 422, refused.text
    assert "data.customer.phone" in refused.json()["message"]
    assert field_of(refused) == ["data.customer.phone"]
    missing = tenant.post({"status": "reopened", "customer": {}})
    assert missing.status_code == 422
    assert sorted(field_of(missing)) == ["data.customer.phone", "data.status", "data.ticket_id"]
    not_an_object = tenant.post(["T-3"])
    assert not_an_object.status_code == 422 and field_of(not_an_object) == ["data"]

    assert asyncio.run(outbox_rows(herald.infra.database_url, event_id)) == 0, "a refused event was queued"
    # nothing was remembered either: the same id with good data is a first, not a duplicate
    again = tenant.post(GOOD, event_id=event_id)
    assert again.status_code == 202 and again.json()["status"] == "accepted", again.text
    events = wait_for(tenant.received, 60, "the corrected event to reach the pipeline")
    assert [e["data"] for e in events] == [GOOD]


def test_an_unregistered_type_is_refused_and_a_type_is_the_tenants_own(herald: Herald):
    owner, other = Tenant(herald), Tenant(herald)
    assert owner.register("crm.deal_won", {"type": "object", "required": ["deal"]}).status_code == 201

    assert other.pipeline.get("/v1/event-types/crm.deal_won").status_code == 404
    assert other.pipeline.get("/v1/event-types").json() == {"event_types": []}
    theirs = other.post({"deal": "D-1"}, type_="crm.deal_won")
    assert theirs.status_code == 422, theirs.text
    assert theirs.json()["error"] == "unknown_event_type"
    assert "unknown event type 'crm.deal_won'" in theirs.json()["message"]
    assert "POST /v1/event-types" in theirs.json()["message"]

    assert owner.post({"deal": "D-1"}, type_="crm.deal_won").status_code == 202
    # the other tenant registers the same name with its own schema: each checks against its own
    assert other.register("crm.deal_won", {"type": "object", "required": ["amount"]}).status_code == 201
    assert field_of(other.post({"deal": "D-1"}, type_="crm.deal_won")) == ["data.amount"]


def test_a_bad_schema_or_name_is_refused_naming_the_problem_and_nothing_is_stored(herald: Herald):
    tenant = Tenant(herald)
    bad = tenant.register(schema={"type": "object", "properties": {"status": {"type": "strng"}}})
    assert bad.status_code == 422, bad.text
    assert field_of(bad) == ["schema.properties.status.type"]
    assert "not valid JSON Schema draft 2020-12" in bad.json()["message"]

    herald_own = tenant.register("order.status_changed")
    assert herald_own.status_code == 422 and field_of(herald_own) == ["name"]
    assert "one of Herald's own event types" in herald_own.json()["message"]
    draft7 = tenant.register(schema={"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"})
    assert draft7.status_code == 422 and field_of(draft7) == ["schema.$schema"]
    huge = {"type": "object", "properties": {f"field_{i}": {"type": "string"} for i in range(5000)}}
    assert tenant.register(schema=huge).status_code == 422
    assert tenant.pipeline.get("/v1/event-types").json() == {"event_types": []}


def test_replacing_a_schema_versions_it_and_deleting_refuses_its_events(herald: Herald):
    tenant = Tenant(herald)
    assert tenant.register().status_code == 201
    assert tenant.register().status_code == 409
    looser = {"type": "object", "required": ["ticket_id"]}
    replaced = tenant.pipeline.put("/v1/event-types/ticket.updated", json={"schema": looser})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["version"] == 2 and replaced.json()["schema"] == looser
    assert tenant.post({"ticket_id": "T-9"}).status_code == 202

    assert tenant.pipeline.delete("/v1/event-types/ticket.updated").status_code == 204
    assert tenant.pipeline.get("/v1/event-types/ticket.updated").status_code == 404
    assert tenant.pipeline.delete("/v1/event-types/ticket.updated").status_code == 404


async def publish_and_read_dead_letters(
    amqp_url: str, tenant_id: str, bodies: dict[str, dict[str, Any]], expected: set[str]
) -> dict[str, aio_pika.abc.AbstractIncomingMessage]:
    """Publish each tenant.event on the broker as another system would; return the pipeline's
    dead letters whose id is one of ours, once the ``expected`` ones are there."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("herald.events")
        for event_id, data in bodies.items():
            envelope = {
                "specversion": "1.0",
                "id": event_id,
                "source": "/crm",
                "type": "tenant.event.v1",
                "time": datetime.now(UTC).isoformat(),
                "tenantid": tenant_id,
                "data": data,
            }
            await exchange.publish(
                aio_pika.Message(
                    json.dumps(envelope).encode(),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key="tenant.event.v1",
            )
        dead = await channel.get_queue("pipeline.dead-letters")
        found: dict[str, aio_pika.abc.AbstractIncomingMessage] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while loop.time() < deadline and not expected <= set(found):
            message = await dead.get(fail=False)
            if message is None:
                await asyncio.sleep(0.1)
                continue
            await message.ack()
            event_id = json.loads(message.body).get("id") if message.body.startswith(b"{") else None
            if event_id in bodies:
                found[event_id] = message
        return found


def test_an_invalid_event_on_the_broker_is_dead_lettered_with_the_field_that_is_wrong(herald: Herald):
    tenant = Tenant(herald)
    assert tenant.register().status_code == 201
    good, bad, unknown = (f"{k}-{uuid.uuid4().hex[:8]}" for k in ("good", "bad", "unknown"))
    dead = asyncio.run(
        publish_and_read_dead_letters(
            herald.infra.amqp_url,
            tenant.id,
            {
                good: {"name": "ticket.updated", "data": GOOD},
                bad: {"name": "ticket.updated", "data": BAD_PHONE},
                unknown: {"name": "crm.unknown_thing", "data": {}},
            },
            expected={bad, unknown},
        )
    )
    assert set(dead) == {bad, unknown}, "the invalid and the unregistered event are dead letters, once each"
    reason = str(dead[bad].headers["x-herald-reason"])
    assert "data.customer.phone" in reason and "ticket.updated" in reason
    assert "has no event type 'crm.unknown_thing'" in str(dead[unknown].headers["x-herald-reason"])

    def seen() -> dict[str, dict[str, Any]]:
        return {e["event_key"]: e for e in tenant.received()}

    events = wait_for(lambda: (s := seen()) and f"/crm:{good}" in s and s, 60, "the broker's good event")
    assert events[f"/crm:{good}"]["status"] == "received"
    assert events[f"/crm:{bad}"]["status"] == "rejected"
    assert "data.customer.phone" in events[f"/crm:{bad}"]["reason"]


def test_a_rule_on_a_tenants_own_event_type_sends_its_message(herald: Herald):
    """The point of tenant event types: a ticketing app drives Herald with no code change — a
    rule matching ``ticket.updated`` sends its text to the customer when a ticket is solved, and
    not when it is only opened."""
    tenant = Tenant(herald)
    assert tenant.register().status_code == 201
    rule = {
        "name": "ticket-solved",
        "event_type": "ticket.updated",
        "filter": [{"field": "status", "op": "equals", "value": "solved"}],
        "recipient": "customer.phone",
        "messages": {"en": {"text": "Hi {{ customer.name }}, ticket {{ ticket_id }} is solved."}},
        "fallback_language": "en",
    }
    created = tenant.pipeline.post("/v1/rules", json=rule)
    assert created.status_code == 201, created.text
    phone = f"+55119{uuid.uuid4().int % 10**8:08d}"
    opened = {"ticket_id": "T-7", "status": "open", "customer": {"phone": phone, "name": "Ana"}}
    solved = {**opened, "status": "solved"}
    assert tenant.post(opened, event_id="t7-open").status_code == 202
    assert tenant.post(solved, event_id="t7-solved").status_code == 202
    sender = herald.client("sender", tenant.ingest.headers["Authorization"].removeprefix("Bearer "))

    def sent_to_phone() -> list[str]:
        items = sender.get("/v1/sandbox/messages", params={"limit": 1000}).json()["items"]
        return [m["text"] for m in items if m["to"] == phone]

    assert wait_for(sent_to_phone, 60, "the rule's message at the sandbox") == [
        "Hi Ana, ticket T-7 is solved."
    ]
    decisions = tenant.pipeline.get("/v1/rule-decisions", params={"event_id": "t7-open"}).json()
    assert [d["outcome"] for d in decisions["items"]] in (["filtered"], ["no_rule"]), decisions
