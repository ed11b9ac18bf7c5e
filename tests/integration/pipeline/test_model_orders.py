"""An inbound order read by the language model when one is configured (the order parser), on real
RabbitMQ and PostgreSQL with the pipeline in-process and a local OpenAI-compatible stand-in: the
model's reading decides what is asked and what is written; an answer that is not JSON, does not
validate, or never comes leaves the order to the rule-based parser, and the order still runs."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
import pytest
import sqlalchemy as sa

from devtools.database import create_migrated_database, drop_database
from devtools.fake_llm import FakeChatModel
from services.pipeline.app import build
from services.pipeline.models import conversations
from services.pipeline.settings import PipelineSettings
from shared.crypto import SecretBox
from shared.events import InboundReceived, new_event
from shared.tenancy import create_tenant
from tests.conftest import Infra
from tests.integration.pipeline.test_conversation import until

pytestmark = pytest.mark.integration

NOTES = [
    "Our new menu has a vegan feijoada that sold out on Friday",
    "Customers asked for the new menu in English too",
]
MAX_ATTEMPTS = 3


class Pipe:
    def __init__(
        self, runtime: Any, client: httpx.AsyncClient, tenant_id: uuid.UUID, exchange: Any, llm: FakeChatModel
    ) -> None:
        self.runtime, self.client, self.tenant_id, self.exchange, self.llm = (
            runtime,
            client,
            tenant_id,
            exchange,
            llm,
        )

    async def context(self, user: str) -> Any:
        async with self.runtime.engine.connect() as conn:
            q = sa.select(conversations).where(
                conversations.c.tenant_id == self.tenant_id, conversations.c.user_id == user
            )
            return (await conn.execute(q)).first()

    async def drafts(self, user: str) -> list[dict[str, Any]]:
        return (await self.client.get("/v1/drafts", params={"user_id": user})).json()

    async def user(self) -> tuple[str, str]:
        user = f"u-{uuid.uuid4().hex[:8]}"
        phone = f"+55119{random.randint(80_000_000, 99_999_999)}"
        body = {"phone": phone, "notify_on_ready": False, "topics": ["new menu"]}
        assert (await self.client.put(f"/v1/profiles/{user}", json=body)).status_code == 200
        for n in NOTES:
            assert (await self.client.post(f"/v1/users/{user}/notes", json={"body": n})).status_code == 201
        return user, phone

    async def send(self, user: str, phone: str, text: str) -> None:
        data = InboundReceived(
            provider="meta",
            provider_message_id=f"wamid.{uuid.uuid4().hex}",
            from_phone=phone,
            kind="text",
            text=text,
            user_id=user,
            received_at=datetime.now(UTC),
        )
        event = new_event(data, tenant_id=self.tenant_id, source="/herald/ingest")
        await self.exchange.publish(
            aio_pika.Message(
                event.model_dump_json().encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=event.type,
        )

    async def draft(self, user: str) -> dict[str, Any]:
        async def ready() -> dict[str, Any] | None:
            drafts = await self.drafts(user)
            return drafts[0] if drafts and drafts[0]["status"] == "ready" else None

        return await until("the order's draft", ready)

    def parser_calls(self) -> list[dict[str, Any]]:
        return [b for b in self.llm.received if b["model"] == "parser-7b"]


@pytest.fixture(scope="module")
def database_url(infra: Infra) -> Iterator[str]:
    name, url = create_migrated_database(infra.database_url, "herald_pipe_orders")
    try:
        yield url
    finally:
        drop_database(infra.database_url, name)


@pytest.fixture(scope="module")
async def pipe(database_url: str, infra: Infra) -> AsyncIterator[Pipe]:
    async with FakeChatModel(retry_after="0") as llm:
        settings = PipelineSettings(
            database_url=database_url,
            amqp_url=infra.amqp_url,
            encryption_keys=SecretBox.generate_key(),
            secret_key=uuid.uuid4().hex,
            environment="test",
            outbox_poll_seconds=0.5,
            llm_base_url=llm.base_url,
            llm_model="offline",  # the writer flow stays offline: only the order parser asks the model
            llm_model_order_parser="parser-7b",
            llm_max_attempts=MAX_ATTEMPTS,
            llm_backoff_seconds=0.01,
            llm_timeout_seconds=3,
        )
        runtime, app = build(settings)
        tenant, key = await create_tenant(runtime.engine, f"orders-{uuid.uuid4().hex[:8]}")
        async with runtime.lifespan(app):
            await asyncio.wait_for(runtime.broker_started.wait(), 60)
            connection = await aio_pika.connect(infra.amqp_url)
            channel = await connection.channel()
            exchange = await channel.get_exchange("herald.events")
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://pipeline",
                headers={"Authorization": f"Bearer {key}"},
            ) as client:
                yield Pipe(runtime, client, tenant.id, exchange, llm)
            await connection.close()


@pytest.fixture(autouse=True)
def clean_script(pipe: Pipe) -> None:
    pipe.llm.default = "ok"
    pipe.llm._script.clear()
    pipe.llm.received.clear()


async def test_the_models_reading_of_an_order_is_the_brief(pipe: Pipe) -> None:
    user, phone = await pipe.user()
    # "the gram" names no platform the rule-based parser knows: it would ask which platform
    pipe.llm.script({"platform": "instagram", "length": "short", "tone": "casual", "topic": "our vegan menu"})
    await pipe.send(user, phone, "write me a post for the gram about our vegan menu, keep it chill")
    draft = await pipe.draft(user)
    brief = draft["brief"]
    assert (brief["platform"], brief["length"], brief["tone"]) == ("instagram", "short", "casual")
    assert brief["topic"] == "our vegan menu"
    [call] = pipe.parser_calls()
    assert call["response_format"]["type"] == "json_schema"
    assert json.loads(call["messages"][-1]["content"]) == {
        "message": "write me a post for the gram about our vegan menu, keep it chill"
    }


async def test_a_field_the_model_leaves_null_is_asked(pipe: Pipe) -> None:
    user, phone = await pipe.user()
    pipe.llm.script({"platform": None, "length": None, "tone": None, "topic": "our new menu"})
    await pipe.send(user, phone, "write me a post about our new menu")
    ctx = await until("the open question", lambda: pipe.context(user))
    assert ctx.field == "platform" and ctx.known == {"topic": "our new menu"}
    assert await pipe.drafts(user) == []


@pytest.mark.parametrize(
    "answers",
    [
        pytest.param(["malformed", "malformed"], id="not JSON, twice"),
        pytest.param(["invalid", {"platform": "myspace"}], id="does not validate, twice"),
        pytest.param(["500"] * MAX_ATTEMPTS, id="HTTP 500 on every attempt"),
        pytest.param(["429", "503", "500"], id="429 then 5xx"),
    ],
)
async def test_a_failed_or_invalid_answer_falls_back_to_the_rule_based_parser(
    pipe: Pipe, answers: list[Any]
) -> None:
    user, phone = await pipe.user()
    pipe.llm.script(*answers)
    await pipe.send(user, phone, "write me a short LinkedIn post about our new menu")
    draft = await pipe.draft(user)
    brief = draft["brief"]
    assert (brief["platform"], brief["length"], brief["topic"]) == ("linkedin", "short", "our new menu")
    assert len(pipe.parser_calls()) == len(answers), "asked again as the retry policy says, then given up"
    assert await pipe.context(user) is None, "nothing asked: the rule-based reading was complete"


async def test_a_note_costs_no_model_call(pipe: Pipe) -> None:
    user, phone = await pipe.user()
    await pipe.send(user, phone, "The chef tested twelve desserts before choosing three")

    async def stored() -> bool:
        notes = (await pipe.client.get(f"/v1/users/{user}/notes")).json()
        return len(notes) == len(NOTES) + 1

    await until("the note", stored)
    assert pipe.parser_calls() == []
