"""A webhook source's ``channel_id`` is checked against the sender's channels of the caller's
tenant: a real sender process answers; a stopped port and a local stand-in stand for a sender that
cannot answer (unreachable, 5xx, too slow)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

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
from tests.integration.ingest.conftest import SECRETS, Ingest, create_channel, ingest_settings


def source_body(channel_id: Any) -> dict[str, Any]:
    return {"provider": "chatwoot", "channel_id": str(channel_id), "secrets": SECRETS["chatwoot"]}


async def test_a_channel_of_the_tenant_is_accepted(ingest: Ingest):
    created = await ingest.client.post(
        "/v1/webhook-sources", json=source_body(ingest.channel_id), headers=ingest.auth
    )
    assert created.status_code == 201, created.text
    assert created.json()["channel_id"] == str(ingest.channel_id)
    listed = (await ingest.client.get("/v1/webhook-sources", headers=ingest.auth)).json()["items"]
    assert [s["channel_id"] for s in listed] == [str(ingest.channel_id)]


async def test_another_tenants_channel_is_refused(ingest: Ingest, sender_process: ServiceProcess):
    _, other_key = await create_tenant(ingest.runtime.engine, f"ingest-other-{uuid.uuid4().hex[:8]}")
    theirs = await create_channel(sender_process, other_key)
    refused = await ingest.client.post("/v1/webhook-sources", json=source_body(theirs), headers=ingest.auth)
    assert refused.status_code == 422, refused.text
    message = refused.json()["message"]
    assert "channel_id" in message and str(theirs) in message and "not a channel of this tenant" in message
    assert (await ingest.client.get("/v1/webhook-sources", headers=ingest.auth)).json()["items"] == []


async def test_a_random_channel_id_is_refused(ingest: Ingest):
    random_id = uuid.uuid4()
    refused = await ingest.client.post(
        "/v1/webhook-sources", json=source_body(random_id), headers=ingest.auth
    )
    assert refused.status_code == 422, refused.text
    assert "channel_id" in refused.json()["message"]
    assert refused.json()["details"] == [{"field": "channel_id", "problem": "not a channel of this tenant"}]


async def test_a_source_without_channel_id_needs_no_sender(ingest: Ingest):
    body = {"provider": "waha", "secrets": SECRETS["waha"]}
    created = await ingest.client.post("/v1/webhook-sources", json=body, headers=ingest.auth)
    assert created.status_code == 201, created.text
    assert created.json()["channel_id"] is None


class BrokenSender:
    """A local HTTP server on the sender's path that answers 500, or answers too late."""

    def __init__(self) -> None:
        self.port = free_port()
        self.delay = 0.0

    def _app(self) -> Starlette:
        async def channel(request: Request) -> JSONResponse:
            if self.delay:
                await asyncio.sleep(self.delay)
            return JSONResponse({"error": "internal_error", "message": "boom", "details": []}, 500)

        return Starlette(routes=[Route("/v1/channels/{channel_id}", channel)])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BrokenSender:
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
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


@pytest.fixture(scope="module")
def broken_sender() -> Iterator[BrokenSender]:
    server = BrokenSender().start()
    yield server
    server.stop()


@pytest.fixture(params=["unreachable", "5xx", "timeout"])
async def ingest_without_sender(
    request: pytest.FixtureRequest,
    infra: Infra,
    fake_media: FakeMedia,
    broken_sender: BrokenSender,
    tmp_path: Path,
) -> AsyncIterator[httpx.AsyncClient]:
    """A second ingest app on the same database whose sender cannot answer the check."""
    if request.param == "unreachable":
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    else:
        url = broken_sender.url
        broken_sender.delay = 2.0 if request.param == "timeout" else 0.0
    settings = ingest_settings(infra, fake_media, tmp_path, sender_url=url, sender_timeout_seconds=0.5)
    runtime, app = build(settings)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest") as c:
            yield c
    finally:
        broken_sender.delay = 0.0
        await runtime.engine.dispose()


async def test_a_sender_that_cannot_answer_is_503_and_nothing_is_created(
    ingest: Ingest, ingest_without_sender: httpx.AsyncClient
):
    refused = await ingest_without_sender.post(
        "/v1/webhook-sources", json=source_body(ingest.channel_id), headers=ingest.auth
    )
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "2", "a 503 says when to retry"
    message = refused.json()["message"]
    assert "sender could not be reached" in message and "retry" in message
    assert (await ingest.client.get("/v1/webhook-sources", headers=ingest.auth)).json()["items"] == []
