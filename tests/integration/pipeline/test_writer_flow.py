"""The writer flow on a real PostgreSQL: profile, notes in, pacing slot, a draft citing the notes,
``draft.ready`` and the ready notice in the outbox (the rows the relay hands to RabbitMQ)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from devtools.database import create_migrated_database, drop_database
from services.pipeline import handlers
from services.pipeline.app import build
from services.pipeline.models import outbox
from services.pipeline.settings import PipelineSettings
from shared.crypto import SecretBox
from shared.events import InboundReceived, PacingDue, UserErased, new_event
from shared.tenancy import create_tenant
from tests.conftest import Infra

pytestmark = pytest.mark.integration

PHONE = "+5511988887777"


@pytest.fixture(scope="module")
def database_url(infra: Infra) -> Iterator[str]:
    name, url = create_migrated_database(infra.database_url, "herald_pipe")
    try:
        yield url
    finally:
        drop_database(infra.database_url, name)


@pytest.fixture
async def system(database_url: str, infra: Infra) -> AsyncIterator[tuple[Any, uuid.UUID, httpx.AsyncClient]]:
    settings = PipelineSettings(
        database_url=database_url,
        amqp_url=infra.amqp_url,
        encryption_keys=SecretBox.generate_key(),
        secret_key=uuid.uuid4().hex,
        environment="test",
    )
    runtime, app = build(settings)
    tenant, key = await create_tenant(runtime.engine, f"pipe-{uuid.uuid4().hex[:8]}")
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://pipeline",
        headers={"Authorization": f"Bearer {key}"},
    )
    try:
        yield runtime, tenant.id, client
    finally:
        await client.aclose()
        await runtime.engine.dispose()


def inbound(tenant_id: uuid.UUID, user_id: str | None, text: str, *, mid: str | None = None) -> Any:
    data = InboundReceived(
        provider="meta",
        provider_message_id=mid or uuid.uuid4().hex,
        from_phone=PHONE,
        kind="text",
        text=text,
        user_id=user_id,
        received_at=datetime.now(UTC),
    )
    return new_event(data, tenant_id=tenant_id, source="/herald/ingest")


def pacing(tenant_id: uuid.UUID, user_id: str) -> Any:
    data = PacingDue(user_id=user_id, schedule_id=uuid.uuid4(), slot_at=datetime.now(UTC))
    return new_event(data, tenant_id=tenant_id, source="/herald/scheduler")


async def published(runtime: Any, subject: str) -> list[dict[str, Any]]:
    async with runtime.engine.connect() as conn:
        rows = (await conn.execute(sa.select(outbox.c.routing_key, outbox.c.body))).all()
    out = []
    for r in rows:
        body = json.loads(r.body)
        if body.get("subject") == subject:
            out.append({**body, "type": r.routing_key.removesuffix(".v1")})
    return out


async def test_notes_become_a_cited_draft_and_one_ready_notice(system: Any) -> None:
    runtime, tenant_id, client = system
    user = f"u-{uuid.uuid4().hex[:6]}"
    r = await client.put(
        f"/v1/profiles/{user}",
        json={
            "platforms": ["linkedin"],
            "tone": "friendly",
            "topics": ["new menu"],
            "phone": PHONE,
            "notify_on_ready": True,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["has_phone"] is True and "phone" not in r.json()

    notes = [
        "Our new menu has a vegan feijoada that sold out on Friday",
        "Customers asked for the new menu in English too",
        "The chef tested twelve desserts before choosing three",
    ]
    events = [inbound(tenant_id, user, n) for n in notes]
    assert all([await handlers.store_note(runtime, e) for e in events])
    assert not await handlers.store_note(runtime, events[0]), "a redelivered message is stored once"
    listed = (await client.get(f"/v1/users/{user}/notes")).json()
    assert sorted(n["body"] for n in listed) == sorted(notes)
    found = (await client.get(f"/v1/users/{user}/notes", params={"q": "feijoada"})).json()
    assert found[0]["body"] == notes[0]

    slot = pacing(tenant_id, user)
    draft_id = await handlers.on_pacing_due(runtime, slot)
    assert await handlers.on_pacing_due(runtime, slot) == draft_id, "redelivery: the same draft"
    draft_id = str(draft_id)

    draft = (await client.get(f"/v1/drafts/{draft_id}")).json()
    assert draft["status"] == "ready"
    assert [s["agent"] for s in draft["steps"]] == ["order_builder", "retrieval", "writer", "editor"]
    assert all(s["status"] == "done" for s in draft["steps"])
    assert "vegan feijoada" in draft["text"] and draft["title"] == "New menu"
    assert {c["text"] for c in draft["citations"]} >= {notes[0], notes[1]}
    assert len(draft["text"]) <= 3000 and draft["notice_requested_at"]

    sent = await published(runtime, f"draft/{draft_id}")
    assert sorted(e["type"] for e in sent) == ["draft.ready", "message.requested"]
    notice = next(e for e in sent if e["type"] == "message.requested")["data"]
    assert notice["to"] == PHONE and draft_id in notice["text"] and "New menu" in notice["text"]

    drafts = (await client.get("/v1/drafts", params={"user_id": user, "status": "ready"})).json()
    assert [d["id"] for d in drafts] == [draft_id]


async def test_no_notice_when_not_opted_in_and_x_fits_280(system: Any) -> None:
    runtime, tenant_id, client = system
    user = f"u-{uuid.uuid4().hex[:6]}"
    r = await client.put(
        f"/v1/profiles/{user}",
        json={
            "platforms": ["x"],
            "length": "long",
            "topics": ["coffee"],
            "phone": PHONE,
            "notify_on_ready": False,
        },
    )
    assert r.status_code == 200
    for i in range(6):
        await handlers.store_note(
            runtime, inbound(tenant_id, user, f"coffee fact number {i}: " + "beans " * 20)
        )
    draft_id = await handlers.on_pacing_due(runtime, pacing(tenant_id, user))
    draft = (await client.get(f"/v1/drafts/{draft_id}")).json()
    assert draft["status"] == "ready" and len(draft["text"]) <= 280
    assert draft["notice_requested_at"] is None
    assert [e["type"] for e in await published(runtime, f"draft/{draft_id}")] == ["draft.ready"]


async def test_bad_profile_values_are_422(system: Any) -> None:
    _, _, client = system
    for bad in ({"tone": "sarcastic"}, {"platforms": ["myspace"]}, {"language": "fr"}, {"phone": "123"}):
        assert (await client.put("/v1/profiles/someone", json=bad)).status_code == 422, bad


async def test_no_notes_fails_the_draft_and_erasure_removes_everything(system: Any) -> None:
    runtime, tenant_id, client = system
    empty = f"u-{uuid.uuid4().hex[:6]}"
    draft_id = await handlers.on_pacing_due(runtime, pacing(tenant_id, empty))
    draft = (await client.get(f"/v1/drafts/{draft_id}")).json()
    assert draft["status"] == "failed" and draft["error"] == "no notes to write from"

    user = f"u-{uuid.uuid4().hex[:6]}"
    await client.put(f"/v1/profiles/{user}", json={"topics": ["travel"]})
    await handlers.store_note(runtime, inbound(tenant_id, user, "Lisbon trip: trams and pastries"))
    await handlers.store_note(runtime, inbound(tenant_id, None, "an unmapped contact's note"))
    ready = await handlers.on_pacing_due(runtime, pacing(tenant_id, user))
    erased = UserErased(user_id=user, phones=[PHONE], at=datetime.now(UTC))
    for _ in range(2):  # idempotent
        await handlers.erase_user(runtime, new_event(erased, tenant_id=tenant_id, source="/herald/ingest"))
    assert (await client.get(f"/v1/users/{user}/notes")).json() == []
    assert (await client.get(f"/v1/drafts/{ready}")).status_code == 404
    assert (await client.get(f"/v1/profiles/{user}")).status_code == 404
