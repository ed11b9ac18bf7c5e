"""Composition root of the pipeline."""

from __future__ import annotations

from typing import Any

from services.pipeline import api as pipeline_api
from services.pipeline import api_analytics as analytics_api
from services.pipeline import api_event_types, api_rules, event_types, handlers, jobs, retention
from services.pipeline import inbound as conversation
from services.pipeline.models import SCHEMA, metadata
from services.pipeline.settings import PipelineSettings
from services.pipeline.templates_client import TemplateCatalogue
from shared.events import (
    CloudEvent,
    DraftReady,
    InboundReceived,
    MessageRequested,
    MessageStatusChanged,
    OrderStatusChanged,
    PacingDue,
    UserErased,
)
from shared.service import ServiceRuntime
from shared.topology import EVENTS, subscription


def build(settings: PipelineSettings | None = None) -> tuple[ServiceRuntime, Any]:
    settings = settings or PipelineSettings()
    runtime = ServiceRuntime(
        settings,
        schema=SCHEMA,
        metadata=metadata,
        title="Herald pipeline",
        description="Decides what to say: notification rules turn domain events into message requests.",
    )
    sub = subscription("pipeline", OrderStatusChanged)

    @runtime.broker.subscriber(
        sub.queue, EVENTS, title=sub.queue_name, description="An order changed status: tell the customer."
    )
    async def on_order_status_changed(event: CloudEvent[OrderStatusChanged]) -> None:
        await handlers.notify_order_status(runtime, event)

    pacing = subscription("pipeline", PacingDue)

    @runtime.broker.subscriber(
        pacing.queue, EVENTS, title=pacing.queue_name, description="A pacing slot fired: write a draft."
    )
    async def on_pacing_due(event: CloudEvent[PacingDue]) -> None:
        await handlers.on_pacing_due(runtime, event)

    inbound = subscription("pipeline", InboundReceived)

    @runtime.broker.subscriber(
        inbound.queue,
        EVENTS,
        title=inbound.queue_name,
        description="A user wrote: a note (stored silently), an order, or the answer to a clarification.",
    )
    async def on_inbound(event: CloudEvent[InboundReceived]) -> None:
        await conversation.on_inbound(runtime, event)

    status = subscription("pipeline", MessageStatusChanged)

    @runtime.broker.subscriber(
        status.queue,
        EVENTS,
        title=status.queue_name,
        description="A message changed status: a ready notice's delivery shows on its draft.",
    )
    async def on_message_status(event: CloudEvent[MessageStatusChanged]) -> None:
        await handlers.record_notice_status(runtime, event)

    erased = subscription("pipeline", UserErased)

    @runtime.broker.subscriber(
        erased.queue, EVENTS, title=erased.queue_name, description="A user was erased: delete their data."
    )
    async def on_user_erased(event: CloudEvent[UserErased]) -> None:
        await handlers.erase_user(runtime, event)

    event_types.subscribe(runtime)  # tenant.event: a tenant's own event types, checked and recorded
    runtime.add_loop("tenant-events-prune", lambda: retention.prune_forever(runtime))

    runtime.declare_publishes(MessageRequested, DraftReady)
    runtime.on_shutdown("model client", lambda: jobs.close_agents(runtime))
    catalogue = TemplateCatalogue(settings.sender_url, settings.sender_timeout_seconds)
    app = runtime.create_app(
        [
            *api_rules.routers(runtime, catalogue),
            *pipeline_api.routers(runtime),
            api_event_types.router(runtime),
            *analytics_api.routers(runtime),
        ]
    )
    return runtime, app
