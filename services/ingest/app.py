"""Composition root of ingest."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.ingest import handlers
from services.ingest.channels import ChannelDirectory
from services.ingest.domain import EventRejected, parse_event_body, validate_inbound_event
from services.ingest.event_types import EventTypeDirectory, check_tenant_event
from services.ingest.fastpath import WebhookFastPath
from services.ingest.models import SCHEMA, metadata
from services.ingest.pipeline import WebhookPipeline
from services.ingest.routes import build_webhook_routes
from services.ingest.settings import IngestSettings
from shared.api import ERROR_RESPONSES, ApiError
from shared.door import DoorGuard
from shared.events import (
    CATALOGUE,
    PUBLIC_INPUT_TYPES,
    ChannelSessionChanged,
    DeliveryStatus,
    InboundReceived,
    TemplateStatusChanged,
    TenantEvent,
    UserErased,
)
from shared.service import RequestIds, ServiceRuntime
from shared.tenancy import Tenant


class EventAccepted(BaseModel):
    id: str
    type: str
    status: Literal["accepted", "duplicate"]


EXAMPLE = {
    "specversion": "1.0",
    "id": "order-1042-ready",
    "source": "/shop/orders",
    "type": "order.status_changed.v1",
    "time": "2026-11-22T12:00:00Z",
    "data": {"order_id": "1042", "status": "ready_for_pickup", "customer_phone": "+5511999998888"},
}


def build(settings: IngestSettings | None = None) -> tuple[ServiceRuntime, Any]:
    settings = settings or IngestSettings()
    runtime = ServiceRuntime(
        settings,
        schema=SCHEMA,
        metadata=metadata,
        title="Herald ingest",
        description="Receives, verifies and stores everything that comes in, and turns it into events.",
    )
    api = APIRouter(
        prefix="/v1", tags=["events"], responses={**ERROR_RESPONSES, 413: {"description": "Body too large"}}
    )

    @api.post(
        "/events",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=EventAccepted,
        summary="Publish a CloudEvent from another system",
        description="Structured-mode CloudEvent 1.0 (JSON). Accepted types: "
        + ", ".join(sorted(PUBLIC_INPUT_TYPES))
        + ", and the tenant's own event types (registered on the pipeline's /v1/event-types: the "
        "data is checked against the type's JSON Schema, and published as tenant.event.v1). "
        "The bare name (order.status_changed) means v1. "
        "The event is stored and published atomically; the same (source, id) twice is published once.",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"type": "object"}, "example": EXAMPLE},
                    "application/cloudevents+json": {"schema": {"type": "object"}},
                },
            }
        },
    )
    async def post_event(request: Request, tenant: Tenant = Depends(runtime.auth)) -> JSONResponse:
        raw = await request.body()  # size, depth and UTF-8 checked by DoorGuard around the app
        try:
            body = parse_event_body(raw)
            auth = request.headers.get("authorization", "")
            event = await check_tenant_event(event_types, body, tenant.id, auth) or validate_inbound_event(
                body, tenant.id
            )
        except EventRejected as exc:
            raise ApiError(exc.status, exc.error, exc.message, exc.details) from exc
        accepted = await handlers.accept_event(runtime, tenant.id, event)
        return JSONResponse(
            status_code=202 if accepted else 200,
            content=EventAccepted(
                id=event.id,
                type=event.data.name if isinstance(event.data, TenantEvent) else event.type,
                status="accepted" if accepted else "duplicate",
            ).model_dump(),
        )

    # an event of a tenant's own type is checked against its schema, asked of the pipeline
    event_types = EventTypeDirectory(
        settings.pipeline_url, settings.pipeline_timeout_seconds, settings.cache_seconds
    )
    pipeline = WebhookPipeline(runtime, settings)
    # a source's channel_id is checked against the sender's channels of the caller's tenant
    channels = ChannelDirectory(settings.sender_url, settings.sender_timeout_seconds)
    webhook_routes = build_webhook_routes(runtime, settings, pipeline, channels)
    # what other systems may post, plus the facts ingest states from provider webhooks
    runtime.declare_publishes(
        *(CATALOGUE[t] for t in sorted(PUBLIC_INPUT_TYPES)),
        InboundReceived,
        DeliveryStatus,
        TemplateStatusChanged,
        ChannelSessionChanged,
        UserErased,
        TenantEvent,
    )
    app = runtime.create_app([api, *webhook_routes], guard=False)
    # provider webhooks skip FastAPI's per-request machinery (see services/ingest/fastpath.py), so
    # the one body guard (size, JSON depth, UTF-8) sits outside the fast path, in front of both,
    # and the request ids outside the guard
    fast = WebhookFastPath(pipeline.process, app)
    return runtime, RequestIds(DoorGuard(fast, max_body_bytes=settings.max_body_bytes))
