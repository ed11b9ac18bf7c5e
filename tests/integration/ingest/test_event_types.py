"""Ingest's ``POST /v1/events`` with a tenant's own event type: the schema is asked of a real
pipeline process (``herald run pipeline``) with the caller's key; what matches is published on
RabbitMQ as ``tenant.event.v1``, what does not is a 422 naming the field and nothing is published;
a pipeline that cannot answer (nothing listening, a local stand-in answering 500) is a 503."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from devtools.fake_media import FakeMedia
from devtools.processes import ServiceProcess, free_port
from services.ingest.app import build
from shared.tenancy import create_tenant
from tests.conftest import Infra
from tests.integration.ingest.conftest import ingest_settings

SCHEMA = {
    "type": "object",
    "required": ["ticket_id", "customer_phone"],
    "properties": {
        "ticket_id": {"type": "string"},
        "customer_phone": {"type": "string", "pattern": "^\\+[1-9][0-9]{7,14}$"},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
    },
}
GOOD = {"ticket_id": "T-7", "customer_phone": "+5511999998888", "priority": 2}


@pytest.fixture(scope="module")
def pipeline_process(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The real pipeline: it holds the tenants' event types. Per module, like the sender of the
    other ingest suites: a live pipeline works on the shared database and broker."""
    tmp = Path(tmp_path_factory.mktemp("ingest-pipeline"))
    pipeline = ServiceProcess("pipeline", free_port(), infra.service_env(), tmp / "pipeline.log")
    pipeline.start()
    try:
        pipeline.wait_ready(timeout=120)  # generous: the machine is shared
        yield pipeline
    finally:
        pipeline.terminate()


@dataclass
class Caller:
    client: httpx.AsyncClient
    tenant_id: uuid.UUID
    auth: dict[str, str]
    pipeline_url: str
    queue: aio_pika.abc.AbstractQueue

    async def register(self, name: str = "ticket.updated", schema: dict[str, Any] = SCHEMA) -> None:
        async with httpx.AsyncClient(base_url=self.pipeline_url, timeout=30) as http:
            answer = await http.post(
                "/v1/event-types", json={"name": name, "schema": schema}, headers=self.auth
            )
        assert answer.status_code == 201, answer.text

    async def post(self, data: Any, *, type_: str = "ticket.updated", **envelope: Any) -> httpx.Response:
        body = {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "/helpdesk",
            "type": type_,
            "time": datetime.now(UTC).isoformat(),
            "data": data,
            **envelope,
        }
        return await self.client.post("/v1/events", json=body, headers=self.auth)

    async def published(self, want: int, within: float = 30.0) -> list[dict[str, Any]]:
        """The tenant.event.v1 messages of this tenant that reached RabbitMQ, once ``want`` did
        (or ``within`` passed), then until the queue stays quiet for a moment."""
        got: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        idle_since = loop.time()
        while loop.time() < deadline and (len(got) < want or loop.time() - idle_since < 1.0):
            message = await self.queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            await message.ack()
            idle_since = loop.time()
            event = json.loads(message.body)
            if event.get("tenantid") == str(self.tenant_id):
                got.append(event)
        return got


async def _caller(infra: Infra, app: Any, runtime: Any, pipeline_url: str) -> AsyncIterator[Caller]:
    tenant, api_key = await create_tenant(runtime.engine, f"evtypes-{uuid.uuid4().hex[:8]}")
    connection = await aio_pika.connect(infra.amqp_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(await channel.get_exchange("herald.events"), routing_key="tenant.event.v1")
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield Caller(client, tenant.id, {"Authorization": f"Bearer {api_key}"}, pipeline_url, queue)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def ingest_app(
    infra: Infra,
    fake_media: FakeMedia,
    pipeline_process: ServiceProcess,
    tmp_path_factory: pytest.TempPathFactory,
):
    settings = ingest_settings(
        infra, fake_media, tmp_path_factory.mktemp("blobs"), pipeline_url=pipeline_process.url
    )
    runtime, app = build(settings)
    async with runtime.lifespan(app):
        await asyncio.wait_for(runtime.broker_started.wait(), 30)
        yield runtime, app


@pytest.fixture
async def caller(infra: Infra, ingest_app, pipeline_process: ServiceProcess) -> AsyncIterator[Caller]:
    runtime, app = ingest_app
    async for c in _caller(infra, app, runtime, pipeline_process.url):
        yield c


async def test_a_matching_event_is_published_as_a_tenant_event(caller: Caller):
    await caller.register()
    accepted = await caller.post(GOOD, id="ticket-7-updated")
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {"id": "ticket-7-updated", "type": "ticket.updated", "status": "accepted"}
    [event] = await caller.published(1)
    assert event["type"] == "tenant.event.v1" and event["id"] == "ticket-7-updated"
    assert event["source"] == "/helpdesk" and event["tenantid"] == str(caller.tenant_id)
    assert event["data"] == {"name": "ticket.updated", "data": GOOD}


async def test_data_that_does_not_match_is_422_naming_the_field_and_nothing_is_published(caller: Caller):
    await caller.register()
    refused = await caller.post({**GOOD, "customer_phone": "5511", "priority": 9})
    assert refused.status_code == 422, refused.text
    assert [d["field"] for d in refused.json()["details"]] == ["data.customer_phone", "data.priority"]
    assert "data.customer_phone" in refused.json()["message"]
    assert "data.priority" in refused.json()["message"]
    bad_envelope = await caller.post(GOOD, time="yesterday")
    assert bad_envelope.status_code == 422 and "time" in bad_envelope.json()["message"]
    assert await caller.published(0, within=2) == []


async def test_an_unregistered_type_and_another_tenants_are_422(caller: Caller, infra: Infra, ingest_app):
    refused = await caller.post(GOOD, type_="crm.lead_created")
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == "unknown_event_type"
    assert "crm.lead_created" in refused.json()["message"]

    runtime, app = ingest_app
    async for other in _caller(infra, app, runtime, caller.pipeline_url):
        await other.register("crm.lead_created", {"type": "object"})
        assert (await other.post({}, type_="crm.lead_created")).status_code == 202
    assert (await caller.post(GOOD, type_="crm.lead_created")).status_code == 422
    forged = await caller.post(GOOD, tenantid=str(uuid.uuid4()))
    assert forged.status_code == 403, forged.text


async def test_a_tenant_event_envelope_is_checked_the_same_way(caller: Caller):
    await caller.register()
    wrapped = await caller.post({"name": "ticket.updated", "data": GOOD}, type_="tenant.event")
    assert wrapped.status_code == 202, wrapped.text
    refused = await caller.post({"name": "ticket.updated", "data": {"ticket_id": "T"}}, type_="tenant.event")
    assert refused.status_code == 422
    assert [d["field"] for d in refused.json()["details"]] == ["data.customer_phone"]
    [event] = await caller.published(1)
    assert event["data"] == {"name": "ticket.updated", "data": GOOD}


class BrokenPipeline:
    """A local HTTP server on the pipeline's path that answers 500."""

    def __init__(self) -> None:
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BrokenPipeline:
        async def event_type(request: Request) -> JSONResponse:
            return JSONResponse({"error": "internal_error", "message": "boom", "details": []}, 500)

        app = Starlette(routes=[Route("/v1/event-types/{name}", event_type)])
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self._server.started, "the stand-in did not start"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@pytest.fixture(params=["unreachable", "5xx"])
async def ingest_without_pipeline(
    request: pytest.FixtureRequest, infra: Infra, fake_media: FakeMedia, tmp_path: Path
) -> AsyncIterator[Caller]:
    """A second ingest app on the same database whose pipeline cannot answer."""
    broken = BrokenPipeline().start() if request.param == "5xx" else None
    url = broken.url if broken else f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = ingest_settings(infra, fake_media, tmp_path, pipeline_url=url, pipeline_timeout_seconds=0.5)
    runtime, app = build(settings)
    try:
        async with runtime.lifespan(app):
            await asyncio.wait_for(runtime.broker_started.wait(), 30)
            async for c in _caller(infra, app, runtime, url):
                yield c
    finally:
        if broken:
            broken.stop()


async def test_a_pipeline_that_cannot_answer_is_503_and_nothing_is_published(
    ingest_without_pipeline: Caller,
):
    refused = await ingest_without_pipeline.post(GOOD)
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "2", "a 503 says when to retry"
    message = refused.json()["message"]
    assert "pipeline could not be reached" in message and "nothing was stored" in message
    # Herald's own types do not need the pipeline
    order = {"order_id": "1", "status": "ready", "customer_phone": "+5511999998888"}
    assert (await ingest_without_pipeline.post(order, type_="order.status_changed")).status_code == 202
    assert await ingest_without_pipeline.published(0, within=2) == []
