"""Every service's door against the real apps on the real infra: a 5,000-deep JSON body, an
oversized body and invalid UTF-8 get a 4xx saying what to fix (never a 500); a normal request
still works."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.scheduler.app import build as build_scheduler
from services.scheduler.settings import SchedulerSettings
from services.sender.app import build as build_sender
from services.sender.settings import SenderSettings
from shared.crypto import SecretBox
from shared.tenancy import create_tenant
from tests.conftest import Infra
from tests.integration.ingest.conftest import (  # noqa: F401  (fixtures)
    Ingest,
    fake_media,
    ingest,
    ingest_app,
    sender_process,
)

DEEP = b"[" * 5000 + b"]" * 5000
BAD_UTF8 = b'{"text": "caf\xe9"}'
DEPTH_MESSAGE = "JSON is nested deeper than 64 levels: flatten it"
UTF8_MESSAGE = "body is not valid UTF-8: encode it as UTF-8"
JSON = {"Content-Type": "application/json"}


def assert_error(response: httpx.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] and message in body["message"], body


@pytest.fixture
async def client_for(infra: Infra) -> AsyncIterator:
    opened: list[tuple[object, httpx.AsyncClient]] = []

    async def make(service: str) -> httpx.AsyncClient:
        common = {
            "database_url": infra.database_url,
            "amqp_url": infra.amqp_url,
            "encryption_keys": SecretBox.generate_key(),
            "secret_key": uuid.uuid4().hex,
            "environment": "test",
        }
        if service == "sender":
            runtime, app = build_sender(SenderSettings(**common))
        else:
            runtime, app = build_scheduler(SchedulerSettings(**common))
        _, key = await create_tenant(runtime.engine, f"door-{uuid.uuid4().hex[:8]}")
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=f"http://{service}",
            headers={"Authorization": f"Bearer {key}"},
        )
        opened.append((runtime, client))
        return client

    yield make
    for runtime, client in opened:
        await client.aclose()
        await runtime.engine.dispose()  # type: ignore[attr-defined]


ENDPOINTS = {"sender": "/v1/opt-outs", "scheduler": "/v1/scheduled-messages"}


@pytest.mark.parametrize("service", ["sender", "scheduler"])
async def test_sender_and_scheduler_doors(client_for, service: str) -> None:
    client = await client_for(service)
    path = ENDPOINTS[service]
    assert_error(await client.post(path, content=DEEP, headers=JSON), 400, DEPTH_MESSAGE)
    assert_error(await client.post(path, content=b"x" * 20_000_000, headers=JSON), 413, "send less")
    assert_error(await client.post(path, content=BAD_UTF8, headers=JSON), 400, UTF8_MESSAGE)

    if service == "sender":
        normal = await client.post(path, json={"phone": "+5511999990001", "reason": "door test"})
        assert normal.status_code == 201, normal.text
    else:
        start = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None, microsecond=0).isoformat()
        normal = await client.post(
            path,
            json={
                "to": "+5511999990001",
                "content": {
                    "kind": "template",
                    "name": "daily_digest",
                    "language": "pt_BR",
                    "body_params": ["Ana"],
                },
                "recurrence": {"timezone": "America/Sao_Paulo", "start": start, "preset": "daily"},
            },
        )
        assert normal.status_code == 201, normal.text


async def test_ingest_events_door(ingest: Ingest) -> None:  # noqa: F811 (fixture)
    post = ingest.client.post
    auth = {**ingest.auth, **JSON}
    assert_error(await post("/v1/events", content=DEEP, headers=auth), 400, DEPTH_MESSAGE)
    assert_error(await post("/v1/events", content=b"x" * 2 * 1_048_576, headers=auth), 413, "send less")
    assert_error(await post("/v1/events", content=BAD_UTF8, headers=auth), 400, UTF8_MESSAGE)
    event = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "door-test",
        "type": "order.status_changed",
        "time": datetime.now(UTC).isoformat(),
        "data": {"order_id": "1042", "status": "ready_for_pickup", "customer_phone": "+5511999998888"},
    }
    normal = await post("/v1/events", content=json.dumps(event).encode(), headers=auth)
    assert normal.status_code == 202, normal.text


async def test_signed_webhook_door(ingest: Ingest) -> None:  # noqa: F811 (fixture)
    for raw, status, message in (
        (DEEP, 400, DEPTH_MESSAGE),
        (b"x" * 2 * 1_048_576, 413, "send less"),
        (BAD_UTF8, 400, UTF8_MESSAGE),
    ):
        # correctly signed: the guard, not the signature check, answers
        assert_error(await ingest.post("meta", None, raw=raw), status, message)
    normal = await ingest.post("meta", {"object": "whatsapp_business_account", "entry": []})
    assert normal.status_code == 200, normal.text
