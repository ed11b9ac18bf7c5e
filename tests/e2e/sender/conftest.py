"""The sender as a real process (one or two) against the session's infrastructure, and the fake
Meta Cloud API running in a background thread of the test process."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from devtools.database import asyncpg_dsn
from devtools.fake_providers.meta import FakeMeta
from devtools.processes import ServiceProcess, free_port, herald_cli, wait_for
from tests.conftest import Infra

TOKEN = "test-access-token"

SENDER_ENV = {
    "SENDER_SENDING_LEASE_SECONDS": "3",
    "SENDER_MAX_ATTEMPTS": "5",
    "SENDER_BACKOFF_BASE_SECONDS": "0.1",
    "SENDER_BACKOFF_CAP_SECONDS": "0.4",
    "SENDER_BREAKER_THRESHOLD": "4",
    "SENDER_BREAKER_COOLDOWN_SECONDS": "1.5",
    "SENDER_CLAIM_HORIZON_SECONDS": "0.2",
    "HERALD_GRACEFUL_TIMEOUT_SECONDS": "10",
}


class MetaThread:
    """``FakeMeta`` served by its own event loop in a thread, so sync tests can use it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.fake = FakeMeta(token=TOKEN)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> MetaThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return self.fake.url

    def fail_next(self, code: int, count: int = 1, to: str | None = None) -> None:
        self.loop.call_soon_threadsafe(self.fake.fail_next, code, count, to)

    def received_for(self, phone_number_id: str) -> list[dict[str, Any]]:
        return [r for r in list(self.fake.received) if r["phone_number_id"] == phone_number_id]


@dataclass
class SenderSystem:
    infra: Infra
    env: dict[str, str]
    sender: ServiceProcess
    meta: MetaThread
    tmp: Path

    def tenant(self, label: str = "t") -> tuple[str, str]:
        data = json.loads(
            herald_cli(self.env, "tenant", "create", f"{label}-{uuid.uuid4().hex[:6]}", "--json")
        )
        return data["tenant_id"], data["api_key"]

    def client(self, api_key: str, url: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=url or self.sender.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10
        )

    def meta_channel(self, client: httpx.Client, **extra: Any) -> dict[str, Any]:
        body = {
            "name": "meta test",
            "provider": "meta",
            "base_url": self.meta.url,
            "settings": {"phone_number_id": uuid.uuid4().hex[:15]},
            "credentials": {"access_token": TOKEN},
            "throughput_per_second": 1000,
            "pair_interval_seconds": 0,
            **extra,
        }
        response = client.post("/v1/channels", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def publish(self, event_type: str, tenant_id: str, data: dict[str, Any]) -> None:
        async def go() -> None:
            connection = await aio_pika.connect(self.infra.amqp_url)
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                exchange = await channel.get_exchange("herald.events")
                event = {
                    "specversion": "1.0",
                    "id": str(uuid.uuid4()),
                    "source": "/tests/sender",
                    "type": event_type,
                    "time": datetime.now(UTC).isoformat(),
                    "tenantid": tenant_id,
                    "data": data,
                }
                await exchange.publish(
                    aio_pika.Message(
                        json.dumps(event).encode(),
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=event_type,
                )

        asyncio.run(go())


def wait_status(client: httpx.Client, message_id: str, status: str, timeout: float = 10.0) -> dict:
    def check() -> dict | None:
        body = client.get(f"/v1/messages/{message_id}").json()
        return body if body.get("status") == status else None

    try:
        return wait_for(check, timeout, f"message {message_id} to be {status}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; it is: {client.get(f'/v1/messages/{message_id}').json()}") from None


@pytest.fixture(scope="module")
def system(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SenderSystem]:
    tmp = Path(tmp_path_factory.mktemp("sender"))
    env = infra.service_env(**SENDER_ENV)
    meta = MetaThread().start()
    sender = ServiceProcess("sender", free_port(), env, tmp / "sender.log")
    sender.start()
    try:
        sender.wait_ready()
        yield SenderSystem(infra=infra, env=env, sender=sender, meta=meta, tmp=tmp)
    finally:
        sender.terminate()
        # the session's database outlives this module: its channels must not keep messages
        # (e.g. ones held by quiet hours or the tier) for the next module's processes to claim
        asyncio.run(pause_channels(infra.database_url, meta.url))
        meta.stop()


async def pause_channels(database_url: str, base_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute("UPDATE sender.channels SET paused = true WHERE base_url = $1", base_url)
    finally:
        await conn.close()
