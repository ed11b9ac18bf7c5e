"""Inbound conversations on real RabbitMQ and PostgreSQL: the pipeline runs in-process with its
real lifespan (broker, subscribers, outbox relay); inbound messages are published to
``herald.events`` as ingest publishes them; what the pipeline asks the sender to send is read
from a private queue bound to ``message.requested`` (and from the outbox, written in the same
transaction as each decision)."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import httpx
import pytest
import sqlalchemy as sa

from devtools.database import create_migrated_database, drop_database
from services.pipeline import inbound
from services.pipeline.app import build
from services.pipeline.models import conversations, outbox
from services.pipeline.settings import PipelineSettings
from shared.crypto import SecretBox
from shared.events import CloudEvent, InboundReceived, MessageStatusChanged, UserErased, new_event
from shared.tenancy import create_tenant
from tests.conftest import Infra

pytestmark = pytest.mark.integration

DEADLINE = 60.0
NOTES = [
    "Our new menu has a vegan feijoada that sold out on Friday",
    "Customers asked for the new menu in English too",
]


async def until(what: str, check: Callable[[], Awaitable[Any]], within: float = DEADLINE) -> Any:
    """Poll ``check`` until it returns something truthy (and return it), or fail saying what."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Pipe:
    runtime: Any
    client: httpx.AsyncClient
    tenant_id: uuid.UUID
    exchange: aio_pika.abc.AbstractExchange
    sent: aio_pika.abc.AbstractQueue
    received: list[dict[str, Any]]

    async def publish(self, event: CloudEvent[Any]) -> None:
        await self.exchange.publish(
            aio_pika.Message(
                event.model_dump_json().encode(),
                content_type="application/json",
                message_id=event.id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=event.type,
        )

    async def at_sender(self, phone: str, want: int) -> list[dict[str, Any]]:
        """The message requests to ``phone`` that reached RabbitMQ, once there are ``want``."""

        async def check() -> list[dict[str, Any]] | None:
            while (message := await self.sent.get(fail=False)) is not None:
                await message.ack()
                self.received.append(json.loads(message.body))
            mine = [e["data"] for e in self.received if e["data"]["to"] == phone]
            return mine if len(mine) >= want else None

        return await until(f"{want} message(s) to {phone} at the sender's queue", check)

    async def requested(self, phone: str) -> list[dict[str, Any]]:
        """Every message request to ``phone`` in the outbox (committed with its decision)."""
        async with self.runtime.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(outbox.c.body).where(outbox.c.routing_key == "message.requested.v1")
                )
            ).all()
        found = [json.loads(r.body) for r in rows]
        return [e["data"] for e in found if e["data"]["to"] == phone and e["tenantid"] == str(self.tenant_id)]

    async def context(self, user: str) -> Any:
        async with self.runtime.engine.connect() as conn:
            q = sa.select(conversations).where(
                conversations.c.tenant_id == self.tenant_id, conversations.c.user_id == user
            )
            return (await conn.execute(q)).first()

    async def notes(self, user: str) -> list[str]:
        return [n["body"] for n in (await self.client.get(f"/v1/users/{user}/notes")).json()]

    async def drafts(self, user: str) -> list[dict[str, Any]]:
        return (await self.client.get("/v1/drafts", params={"user_id": user})).json()

    async def user(self, *, notes: list[str] = NOTES, **profile: Any) -> tuple[str, str]:
        """A user with a profile and a phone of their own, and some notes stored through the API."""
        user = f"u-{uuid.uuid4().hex[:8]}"
        phone = f"+55119{random.randint(80_000_000, 99_999_999)}"
        body = {"phone": phone, "notify_on_ready": True, **profile}
        assert (await self.client.put(f"/v1/profiles/{user}", json=body)).status_code == 200
        for n in notes:
            assert (await self.client.post(f"/v1/users/{user}/notes", json={"body": n})).status_code == 201
        return user, phone


@pytest.fixture(scope="module")
def database_url(infra: Infra) -> Iterator[str]:
    name, url = create_migrated_database(infra.database_url, "herald_conv")
    try:
        yield url
    finally:
        drop_database(infra.database_url, name)


@pytest.fixture(scope="module")
async def pipe(database_url: str, infra: Infra) -> AsyncIterator[Pipe]:
    settings = PipelineSettings(
        database_url=database_url,
        amqp_url=infra.amqp_url,
        encryption_keys=SecretBox.generate_key(),
        secret_key=uuid.uuid4().hex,
        environment="test",
        outbox_poll_seconds=0.5,
    )
    runtime, app = build(settings)
    tenant, key = await create_tenant(runtime.engine, f"conv-{uuid.uuid4().hex[:8]}")
    async with runtime.lifespan(app):
        await asyncio.wait_for(runtime.broker_started.wait(), DEADLINE)
        connection = await aio_pika.connect(infra.amqp_url)
        channel = await connection.channel()
        exchange = await channel.get_exchange("herald.events")
        sent = await channel.declare_queue(exclusive=True)
        await sent.bind(exchange, routing_key="message.requested.v1")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://pipeline",
            headers={"Authorization": f"Bearer {key}"},
        ) as client:
            yield Pipe(runtime, client, tenant.id, exchange, sent, [])
        await connection.close()


def message(
    pipe: Pipe,
    user: str | None,
    phone: str,
    text: str | None = None,
    *,
    payload: str | None = None,
    title: str | None = None,
) -> CloudEvent[InboundReceived]:
    data = InboundReceived(
        provider="meta",
        provider_message_id=f"wamid.{uuid.uuid4().hex}",
        from_phone=phone,
        kind="interactive" if payload else "text",
        text=text,
        payload=payload,
        title=title,
        user_id=user,
        received_at=datetime.now(UTC),
    )
    return new_event(data, tenant_id=pipe.tenant_id, source="/herald/ingest")


async def test_a_note_is_stored_and_nothing_is_sent(pipe: Pipe) -> None:
    user, phone = await pipe.user(notes=[])
    await pipe.publish(message(pipe, user, phone, "The chef tested twelve desserts before choosing three"))
    await until("the note", lambda: pipe.notes(user))
    # the note and any message would have committed together: the decision is final
    assert await pipe.requested(phone) == []
    assert await pipe.context(user) is None


@pytest.mark.parametrize(
    ("answer", "how"),
    [
        ({"payload": "platform:instagram", "title": "Instagram"}, "by the list row's id"),
        ({"text": "instagran"}, "by its title, misspelt"),
        ({"text": "2"}, "by its number, from a gateway with numbered text"),
    ],
)
async def test_an_order_without_platform_gets_one_question_and_the_answer_runs_it(
    pipe: Pipe, answer: dict[str, str], how: str
) -> None:
    user, phone = await pipe.user()
    await pipe.publish(message(pipe, user, phone, "write me a post about our new menu"))
    [question] = await pipe.at_sender(phone, 1)
    content = question["content"]
    assert content["kind"] == "list" and content["body"] == "Which platform is this post for?"
    assert [r["title"] for r in content["sections"][0]["rows"]] == [
        "LinkedIn",
        "Instagram",
        "X (Twitter)",
        "Blog",
    ]
    assert question["origin"] == "pipeline"
    assert (await pipe.context(user)).field == "platform"

    await pipe.publish(message(pipe, user, phone, **answer))
    drafts = await until("the draft", lambda: _ready(pipe, user))
    [draft] = drafts
    assert draft["brief"]["platform"] == "instagram", how
    assert draft["brief"]["topic"] == "our new menu"
    assert "vegan feijoada" in draft["text"] and len(draft["text"]) <= 2200
    _, notice = await pipe.at_sender(phone, 2)
    assert (
        notice["text"]
        and draft["id"] in notice["text"]
        and notice["correlation_id"] == f"draft:{draft['id']}"
    )
    assert len(await pipe.requested(phone)) == 2, "one question, one ready notice: nothing else"
    await until("the context closed", lambda: _closed(pipe, user))


async def _ready(pipe: Pipe, user: str) -> list[dict[str, Any]] | None:
    drafts = await pipe.drafts(user)
    return drafts if drafts and all(d["status"] == "ready" for d in drafts) else None


async def _closed(pipe: Pipe, user: str) -> bool:
    return await pipe.context(user) is None


async def test_buttons_in_portuguese_for_a_profile_with_three_platforms(pipe: Pipe) -> None:
    user, phone = await pipe.user(platforms=["linkedin", "instagram", "x"], language="pt_BR")
    await pipe.publish(message(pipe, user, phone, "escreve um post curto sobre o cardápio"))
    [question] = await pipe.at_sender(phone, 1)
    content = question["content"]
    assert content["kind"] == "buttons" and content["body"] == "Para qual rede é este post?"
    assert [b["id"] for b in content["buttons"]] == ["platform:linkedin", "platform:instagram", "platform:x"]
    await pipe.publish(message(pipe, user, phone, payload="platform:x", title="X (Twitter)"))
    [draft] = await until("the draft", lambda: _ready(pipe, user))
    assert draft["brief"]["platform"] == "x" and draft["brief"]["length"] == "short"
    assert len(draft["text"]) <= 280


async def test_a_complete_order_runs_without_a_question(pipe: Pipe) -> None:
    user, phone = await pipe.user(notify_on_ready=False)
    await pipe.publish(message(pipe, user, phone, "write me a LinkedIn post about our new menu"))
    [draft] = await until("the draft", lambda: _ready(pipe, user))
    assert draft["brief"]["platform"] == "linkedin" and draft["notice_requested_at"] is None
    assert await pipe.requested(phone) == [], "not opted in: nothing is sent"


async def test_an_unmatched_answer_is_asked_once_more_then_dropped(pipe: Pipe) -> None:
    user, phone = await pipe.user()
    await pipe.publish(message(pipe, user, phone, "write a post about our new menu"))
    await pipe.at_sender(phone, 1)
    await pipe.publish(message(pipe, user, phone, "banana"))
    _, again = await pipe.at_sender(phone, 2)
    assert again["content"]["body"] == "Sorry, I didn't get that. Which platform is this post for?"
    assert (await pipe.context(user)).attempts == 2
    await pipe.publish(message(pipe, user, phone, "still banana"))
    *_, dropped = await pipe.at_sender(phone, 3)
    assert dropped["text"].startswith("I couldn't match that answer, so I dropped the order.")
    assert await pipe.context(user) is None
    assert await pipe.drafts(user) == []
    # the conversation is over: the next message is a note again, and nothing is sent
    await pipe.publish(message(pipe, user, phone, "Friday's lunch rush doubled"))
    await until("the note", lambda: _has_note(pipe, user, "Friday's lunch rush doubled"))
    assert len(await pipe.requested(phone)) == 3


async def _has_note(pipe: Pipe, user: str, body: str) -> bool:
    return body in await pipe.notes(user)


async def test_an_expired_context_starts_over(pipe: Pipe) -> None:
    user, phone = await pipe.user()
    await pipe.publish(message(pipe, user, phone, "write a post about our new menu"))
    await pipe.at_sender(phone, 1)
    async with pipe.runtime.engine.begin() as conn:  # 31 minutes later
        await conn.execute(
            sa.update(conversations)
            .where(conversations.c.user_id == user)
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    await pipe.publish(message(pipe, user, phone, "2"))
    await until("the late answer kept as a note", lambda: _has_note(pipe, user, "2"))
    assert await pipe.context(user) is None
    assert await pipe.drafts(user) == [] and len(await pipe.requested(phone)) == 1


async def test_a_redelivered_message_sends_nothing_twice(pipe: Pipe) -> None:
    user, phone = await pipe.user()
    order = message(pipe, user, phone, "write a post about our new menu")
    for _ in range(2):
        await pipe.publish(order)
    await pipe.at_sender(phone, 1)
    assert await inbound.on_inbound(pipe.runtime, order) == "duplicate"
    answer = message(pipe, user, phone, "LinkedIn")
    for _ in range(2):
        await pipe.publish(answer)
    [draft] = await until("the draft", lambda: _ready(pipe, user))
    await pipe.at_sender(phone, 2)
    assert await inbound.on_inbound(pipe.runtime, answer) == "duplicate"
    assert await inbound.on_inbound(pipe.runtime, order) == "duplicate"
    sent = await pipe.requested(phone)
    assert len(sent) == 2 and len({m["message_id"] for m in sent}) == 2
    assert [d["id"] for d in await pipe.drafts(user)] == [draft["id"]]


async def test_an_order_with_no_notes_gets_one_message_saying_what_to_do(pipe: Pipe) -> None:
    user, phone = await pipe.user(notes=[], language="pt_BR", topics=["cardápio"])
    order = message(pipe, user, phone, "escreve um post pro LinkedIn sobre o cardápio")
    await pipe.publish(order)
    [failure] = await pipe.at_sender(phone, 1)
    assert failure["text"].startswith("Não consegui escrever o post: ainda não há notas")
    [draft] = await pipe.drafts(user)
    assert draft["status"] == "failed" and draft["error"] == "no notes to write from"
    await pipe.publish(order)  # redelivered: no second message
    assert await inbound.on_inbound(pipe.runtime, order) == "duplicate"
    assert len(await pipe.requested(phone)) == 1


async def test_the_ready_notices_delivery_status_shows_on_the_draft(pipe: Pipe) -> None:
    user, phone = await pipe.user()
    await pipe.publish(message(pipe, user, phone, "write me a LinkedIn post about our new menu"))
    [draft] = await until("the draft", lambda: _ready(pipe, user))
    [notice] = await pipe.at_sender(phone, 1)
    now = datetime.now(UTC)
    for status, at in (("delivered", now), ("sent", now - timedelta(seconds=2))):  # out of order
        event = MessageStatusChanged(
            message_id=notice["message_id"], status=status, at=at, correlation_id=f"draft:{draft['id']}"
        )
        await pipe.publish(new_event(event, tenant_id=pipe.tenant_id, source="/herald/sender"))

    async def delivered() -> dict[str, Any] | None:
        d = (await pipe.client.get(f"/v1/drafts/{draft['id']}")).json()
        return d if d["notice_status"] == "delivered" else None

    shown = await until("the notice's status on the draft", delivered)
    assert shown["notice_status_at"] is not None
    read = MessageStatusChanged(message_id=notice["message_id"], status="read", at=now + timedelta(seconds=1))
    await pipe.publish(new_event(read, tenant_id=pipe.tenant_id, source="/herald/sender"))

    async def was_read() -> bool:
        d = (await pipe.client.get(f"/v1/drafts/{draft['id']}")).json()
        return d["notice_status"] == "read"

    await until("the notice read (matched by message id alone)", was_read)


async def test_an_unmapped_contacts_order_is_kept_as_a_note(pipe: Pipe) -> None:
    user, phone = await pipe.user(notes=[], phone=None)  # the phone is not mapped yet
    text = "write me a LinkedIn post about our new menu"
    await pipe.publish(message(pipe, None, phone, text))

    async def adopted() -> bool:
        # mapping the phone makes the contact's notes the user's
        await pipe.client.put(f"/v1/profiles/{user}", json={"phone": phone, "notify_on_ready": True})
        return text in await pipe.notes(user)

    await until("the order kept as the contact's note", adopted)
    assert await pipe.requested(phone) == [] and await pipe.drafts(user) == []


async def test_erasure_deletes_the_conversation(pipe: Pipe) -> None:
    user, phone = await pipe.user()
    await pipe.publish(message(pipe, user, phone, "write a post about our new menu"))
    await pipe.at_sender(phone, 1)
    assert await pipe.context(user) is not None
    erased = UserErased(user_id=user, phones=[phone], at=datetime.now(UTC))
    await pipe.publish(new_event(erased, tenant_id=pipe.tenant_id, source="/herald/ingest"))
    await until("the conversation erased", lambda: _closed(pipe, user))
    assert (await pipe.client.get(f"/v1/profiles/{user}")).status_code == 404


async def test_an_order_whose_job_stops_gets_one_message_and_a_failed_draft(
    pipe: Pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job raising (what a model unavailable after its retries looks like to the policy) is
    not a dead letter the user never hears of: one message, the draft failed, nothing else."""
    user, phone = await pipe.user()

    async def stops(*args: Any, **kwargs: Any) -> uuid.UUID:
        raise RuntimeError("the model answered 503 after its last retry")

    monkeypatch.setattr(inbound.handlers, "run_content_job", stops)
    order = message(pipe, user, phone, "write me a LinkedIn post about our new menu")
    await pipe.publish(order)
    [failure] = await pipe.at_sender(phone, 1)
    assert failure["text"] == (
        "I couldn't write the post right now: the writing service is unavailable. "
        "Please ask again in a few minutes."
    )
    assert await inbound.on_inbound(pipe.runtime, order) == "duplicate"
    assert len(await pipe.requested(phone)) == 1
