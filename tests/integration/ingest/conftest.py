"""Ingest in-process (ASGI) against the session's real PostgreSQL and RabbitMQ.

The app runs its real lifespan (broker connection, outbox relay, media worker); requests go
through ``httpx.ASGITransport``; a private queue bound to everything ingest publishes shows what
reaches RabbitMQ.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from devtools.fake_media import FakeMedia
from devtools.processes import ServiceProcess, free_port
from services.ingest.app import build
from services.ingest.settings import IngestSettings
from shared.crypto import SecretBox
from shared.tenancy import create_tenant
from tests.conftest import Infra

CONTRACTS = Path(__file__).resolve().parents[3].parent / "shared" / "contracts"
if not CONTRACTS.exists():  # a worktree under /work/wt/<name>: the handbook is /work/shared
    CONTRACTS = Path("/work/shared/contracts")
ROUTING_KEYS = (
    "inbound.received.v1",
    "delivery.status.v1",
    "contact.opted_out.v1",
    "contact.opted_in.v1",
    "template.status_changed.v1",
    "channel.session_changed.v1",
)
SECRETS = {
    "meta": {"app_secret": "meta-app-secret", "verify_token": "verify-me", "access_token": "meta-token"},
    "chatwoot": {"webhook_secret": "chatwoot-secret"},
    "waha": {"hmac_key": "waha-hmac", "api_key": "waha-key"},
    "evolution": {"header_value": "evo-key"},
}


def example(relative: str) -> Any:
    body = json.loads((CONTRACTS / relative).read_text())
    if isinstance(body, dict):
        body.pop("_comment", None)
    return body


def signed_headers(provider: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    s = SECRETS[provider]
    if provider == "meta":
        sig = hmac.new(s["app_secret"].encode(), body, hashlib.sha256).hexdigest()
        return {"X-Hub-Signature-256": f"sha256={sig}", "Content-Type": "application/json"}
    if provider == "chatwoot":
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        sig = hmac.new(s["webhook_secret"].encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return {
            "X-Chatwoot-Timestamp": stamp,
            "X-Chatwoot-Signature": f"sha256={sig}",
            "Content-Type": "application/json",
        }
    if provider == "waha":
        sig = hmac.new(s["hmac_key"].encode(), body, hashlib.sha512).hexdigest()
        return {
            "X-Webhook-Hmac": sig,
            "X-Webhook-Hmac-Algorithm": "sha512",
            "Content-Type": "application/json",
        }
    return {"apikey": s["header_value"], "Content-Type": "application/json"}


@dataclass
class Ingest:
    client: httpx.AsyncClient
    api_key: str
    tenant_id: uuid.UUID
    runtime: Any
    queue: aio_pika.abc.AbstractQueue
    media: FakeMedia
    blob_dir: Path
    #: a sandbox channel of this tenant on the real sender (a source's channel_id is checked there)
    channel_id: uuid.UUID
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    async def source(self, provider: str, **secrets: str) -> str:
        body = {
            "provider": provider,
            "channel_id": str(self.channel_id),
            "secrets": secrets or SECRETS[provider],
        }
        if provider == "meta" and not secrets:
            body["secrets"] = {**SECRETS["meta"], "graph_url": f"{self.media.url}/v23.0"}
        response = await self.client.post("/v1/webhook-sources", json=body, headers=self.auth)
        assert response.status_code == 201, response.text
        return response.json()["url"]

    async def url(self, provider: str) -> str:
        if provider not in self.sources:
            self.sources[provider] = await self.source(provider)
        return self.sources[provider]

    async def post(
        self, provider: str, payload: Any, *, raw: bytes | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        body = raw if raw is not None else json.dumps(payload).encode()
        return await self.client.post(
            await self.url(provider), content=body, headers=headers or signed_headers(provider, body)
        )

    async def events(self, want: int, within: float = 10.0) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + within
        while len(got) < want and asyncio.get_running_loop().time() < deadline:
            message = await self.queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.02)
                continue
            await message.ack()
            event = json.loads(message.body)
            if event.get("tenantid") == str(self.tenant_id):  # a late event of an earlier test
                got.append(event)
        return got

    async def drain(self, quiet: float = 0.5) -> list[dict[str, Any]]:
        """Everything published until the queue stays empty for ``quiet`` seconds."""
        got: list[dict[str, Any]] = []
        idle_since = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - idle_since < quiet:
            message = await self.queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.02)
                continue
            await message.ack()
            event = json.loads(message.body)
            if event.get("tenantid") == str(self.tenant_id):
                got.append(event)
            idle_since = asyncio.get_running_loop().time()
        return got


@pytest.fixture(scope="session")
def fake_media() -> AsyncIterator[FakeMedia]:
    server = FakeMedia().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sender_process(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The real sender (``herald run sender``): ingest asks it whether a channel_id is the tenant's.

    Per module, not per session: a live sender works on the shared test database and broker (its
    relay publishes the sender outbox's rows, it consumes ``message.requested``), so it must be gone
    before the suites that own those run."""
    tmp = Path(tmp_path_factory.mktemp("ingest-sender"))
    sender = ServiceProcess("sender", free_port(), infra.service_env(), tmp / "sender.log")
    sender.start()
    try:
        sender.wait_ready(timeout=120)  # generous: the machine is shared
        yield sender
    finally:
        sender.terminate()


async def create_channel(sender: ServiceProcess, api_key: str) -> uuid.UUID:
    """A sandbox channel of the key's tenant, created through the sender's API."""
    async with httpx.AsyncClient(base_url=sender.url, timeout=30) as http:
        answer = await http.post(
            "/v1/channels",
            json={"name": f"ingest-test-{uuid.uuid4().hex[:6]}", "provider": "sandbox"},
            headers={"Authorization": f"Bearer {api_key}"},
        )
    assert answer.status_code == 201, answer.text
    return uuid.UUID(answer.json()["id"])


def ingest_settings(infra: Infra, fake_media: FakeMedia, blob_dir: Path, **extra: Any) -> IngestSettings:
    return IngestSettings(
        database_url=infra.database_url,
        amqp_url=infra.amqp_url,
        environment="test",
        encryption_keys=SecretBox.generate_key(),
        secret_key=uuid.uuid4().hex,
        blob_dir=blob_dir,
        transcription_url=f"{fake_media.url}/v1",
        media_retry_seconds=0.2,
        media_poll_seconds=0.5,
        outbox_poll_seconds=0.5,
        cache_seconds=0.0,
        **extra,
    )


@pytest.fixture(scope="module")
async def ingest_app(
    infra: Infra,
    fake_media: FakeMedia,
    sender_process: ServiceProcess,
    tmp_path_factory: pytest.TempPathFactory,
):
    blob_dir = tmp_path_factory.mktemp("blobs")
    settings = ingest_settings(infra, fake_media, blob_dir, sender_url=sender_process.url)
    runtime, app = build(settings)
    async with runtime.lifespan(app):
        await asyncio.wait_for(runtime.broker_started.wait(), 30)
        yield runtime, app, blob_dir


@pytest.fixture
async def ingest(
    infra: Infra, ingest_app, fake_media: FakeMedia, sender_process: ServiceProcess
) -> AsyncIterator[Ingest]:
    runtime, app, blob_dir = ingest_app
    tenant, api_key = await create_tenant(runtime.engine, f"ingest-{uuid.uuid4().hex[:8]}")
    channel_id = await create_channel(sender_process, api_key)
    connection = await aio_pika.connect(infra.amqp_url)
    channel = await connection.channel()
    exchange = await channel.get_exchange("herald.events")
    queue = await channel.declare_queue(exclusive=True)
    for key in ROUTING_KEYS:
        await queue.bind(exchange, routing_key=key)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        yield Ingest(client, api_key, tenant.id, runtime, queue, fake_media, blob_dir, channel_id)
    await connection.close()
