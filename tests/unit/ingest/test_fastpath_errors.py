"""The webhook fast path answers a refused webhook the way FastAPI's handlers do: same body, and a
503 tells the provider when to retry (Meta and Chatwoot retry on their own; ``Retry-After`` paces them)."""

from __future__ import annotations

import httpx

from services.ingest.fastpath import WebhookFastPath
from shared.api import ApiError


async def _unused_app(scope, receive, send) -> None:  # pragma: no cover - every request here is a webhook
    raise AssertionError("the fast path handed a webhook to FastAPI")


async def _post(process) -> httpx.Response:
    transport = httpx.ASGITransport(app=WebhookFastPath(process, _unused_app))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        return await client.post("/webhooks/meta/src-1", content=b'{"object": "whatsapp_business_account"}')


async def test_a_webhook_that_cannot_be_stored_is_a_503_with_retry_after() -> None:
    async def down(provider, source_id, body, headers):
        raise ApiError(503, "unavailable", "could not store the webhook; retry")

    refused = await _post(down)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "2"
    assert refused.json() == {
        "error": "unavailable",
        "message": "could not store the webhook; retry",
        "details": [],
    }


async def test_a_refused_signature_has_no_retry_after() -> None:
    async def bad_signature(provider, source_id, body, headers):
        raise ApiError(401, "bad_signature", "the X-Hub-Signature-256 does not match the body")

    refused = await _post(bad_signature)
    assert refused.status_code == 401 and "retry-after" not in refused.headers


async def test_a_stored_webhook_is_200_with_the_answer() -> None:
    async def stored(provider, source_id, body, headers):
        return {"stored": 1, "provider": provider, "source": source_id}

    ok = await _post(stored)
    assert ok.status_code == 200 and ok.json() == {"stored": 1, "provider": "meta", "source": "src-1"}
