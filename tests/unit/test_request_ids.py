"""A request id on every HTTP request, tracing on or off: the caller's ``X-Request-ID`` when it is
sane, else a fresh one; echoed back in the response and bound to every log line of the request."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import httpx
import pytest
import structlog

from shared.logging import configure_logging
from shared.service import RequestIds


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    structlog.get_logger("t").info("handled")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def lines() -> Any:
    stream = io.StringIO()
    configure_logging("test", "INFO", "json")
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    return lambda: [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_the_callers_request_id_is_kept_echoed_and_logged(lines: Any):
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=RequestIds(app)), base_url="http://t"
    ) as c:
        kept = await c.get("/", headers={"X-Request-ID": "req-42.abc"})
        fresh = await c.get("/")
        hostile = await c.get("/", headers={"X-Request-ID": 'x" injected=1\nfake line'})
    assert kept.headers["x-request-id"] == "req-42.abc"
    assert len(fresh.headers["x-request-id"]) == 32
    assert hostile.headers["x-request-id"] not in ('x" injected=1\nfake line', fresh.headers["x-request-id"])
    assert [line["request_id"] for line in lines() if line["event"] == "handled"] == [
        "req-42.abc",
        fresh.headers["x-request-id"],
        hostile.headers["x-request-id"],
    ]
    structlog.get_logger("t").info("outside")
    assert "request_id" not in lines()[-1]


async def test_every_service_app_answers_with_a_request_id(monkeypatch: pytest.MonkeyPatch):
    """The service apps (the sender's here; ingest's wraps its webhook fast path the same way)."""
    from services.ingest.app import build as build_ingest
    from services.sender.app import build as build_sender

    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    for build in (build_sender, build_ingest):
        _runtime, service = build()
        transport = httpx.ASGITransport(app=service)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            answer = await c.get("/livez", headers={"X-Request-ID": "from-the-caller"})
            refused = await c.post("/webhooks/meta/nope", content=b"{", headers={"X-Request-ID": "r2"})
        assert answer.status_code == 200 and answer.headers["x-request-id"] == "from-the-caller"
        assert refused.headers["x-request-id"] == "r2"
