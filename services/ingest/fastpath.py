"""The webhook POST path as a plain ASGI app in front of FastAPI.

Provider webhooks are the only high-volume traffic ingest serves. ``WebhookFastPath`` takes
``POST /webhooks/{provider}/{source_id}`` straight from the server, without FastAPI's routing,
dependency resolution and response models (the body is raw bytes that must be verified before it
is parsed anyway), records the same HTTP metrics, and hands everything else (the Meta GET
handshake, ``/v1``, health, lifespan) to FastAPI, where the same routes are declared for the
OpenAPI document.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from services.ingest.webhooks import PROVIDERS
from shared import tracing
from shared.api import ApiError
from shared.door import send_json
from shared.logging import get_logger
from shared.service import HTTP_LATENCY, HTTP_REQUESTS

log = get_logger(__name__)
Process = Callable[[str, str, bytes, Mapping[str, str]], Awaitable[dict[str, Any]]]
ROUTES = {p: f"/webhooks/{p}/{{source_id}}" for p in PROVIDERS}


class _Headers(dict[str, str]):
    """Request headers, lower-case names (as the ASGI server gives them)."""


class WebhookFastPath:
    def __init__(self, process: Process, app: Any) -> None:
        # body size (and JSON depth, UTF-8) is checked by shared.door.DoorGuard outside this wrapper
        self.process = process
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/webhooks/"):
            await self.app(scope, receive, send)
            return
        parts = scope["path"].split("/")
        if len(parts) != 4 or parts[2] not in ROUTES:
            await self.app(scope, receive, send)
            return
        provider, source_id = parts[2], parts[3]
        started = time.perf_counter()
        with tracing.server_span(scope, ROUTES[provider]) as span:  # FastAPI's telemetry is skipped too
            status, answer, headers = await self._handle(provider, source_id, scope, receive)
            tracing.record_status(span, status)
            await send_json(send, status, answer, extra_headers=headers)
        HTTP_LATENCY.labels("ingest", "POST", ROUTES[provider]).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels("ingest", "POST", ROUTES[provider], str(status)).inc()

    async def _handle(
        self, provider: str, source_id: str, scope: dict[str, Any], receive: Any
    ) -> tuple[int, dict[str, Any], dict[str, str] | None]:
        headers = _Headers((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"])
        try:
            chunks = bytearray()
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return (
                        400,
                        {"error": "disconnected", "message": "the client went away", "details": []},
                        None,
                    )
                chunks += message.get("body", b"")
                if not message.get("more_body"):
                    break
            return 200, await self.process(provider, source_id, bytes(chunks), headers), None
        except ApiError as exc:
            body = {"error": exc.error, "message": exc.message, "details": exc.details}
            return exc.status_code, body, exc.headers
        except Exception:
            log.exception("webhook failed", provider=provider)
            body = {
                "error": "internal_error",
                "message": "unexpected error; the webhook was not stored",
                "details": [],
            }
            return 500, body, None
