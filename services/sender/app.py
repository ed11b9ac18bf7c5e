"""Composition root of the sender: wiring only — the runtime, the use cases' dependencies, the
subscribers, the routes and the loops. Every decision lives elsewhere (README.md has the map)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from fastapi import FastAPI

from services.sender import accept, catalogues, outcomes, reconcile, rollup, sessions, templates
from services.sender.context import Sender
from services.sender.dispatch import Dispatcher
from services.sender.models import SCHEMA, metadata
from services.sender.routes import routers
from services.sender.schemas import Recipient, normalize_recipient
from services.sender.settings import SenderSettings
from shared.events import (
    ChannelSessionChanged,
    CloudEvent,
    ContactOptedIn,
    ContactOptedOut,
    DeliveryStatus,
    InboundReceived,
    MessageRequested,
    MessageStatusChanged,
    TemplateStatusChanged,
)
from shared.service import ServiceRuntime
from shared.topology import EVENTS, subscription

__all__ = ["Recipient", "build", "normalize_recipient"]


def build(settings: SenderSettings | None = None) -> tuple[ServiceRuntime, Any]:
    settings = settings or SenderSettings()
    runtime = ServiceRuntime(
        settings,
        schema=SCHEMA,
        metadata=metadata,
        title="Herald sender",
        description="Delivers every requested WhatsApp message once, and says what happened to it.",
    )
    sender = Sender(
        runtime=runtime, settings=settings, lease=timedelta(seconds=settings.sending_lease_seconds)
    )
    dispatcher = Dispatcher(sender)
    runtime.add_loop("dispatcher", dispatcher.run)
    runtime.add_loop("result-recorder", dispatcher.flush_forever)
    runtime.add_loop("lease-renewer", dispatcher.renew_leases_forever)
    runtime.add_loop("orphan-sweeper", lambda: reconcile.sweep_orphans_forever(sender, dispatcher.live))
    runtime.add_loop("session-poll", lambda: sessions.poll_forever(sender))
    runtime.add_loop("template-sync", lambda: templates.sync_forever(sender))
    runtime.add_loop(
        "analytics-fold",
        lambda: rollup.fold_forever(
            runtime.engine,
            runtime.stopping,
            settings.analytics_rollup_seconds,
            settings.analytics_rollup_batch,
        ),
    )

    def subscriber(event: type, description: str) -> Any:
        sub = subscription("sender", event)
        return runtime.broker.subscriber(sub.queue, EVENTS, title=sub.queue_name, description=description)

    @subscriber(MessageRequested, "Store a send request (priority queue 1–10); the dispatcher sends it.")
    async def on_message_requested(event: CloudEvent[MessageRequested]) -> None:
        await accept.on_requested(sender, event)

    @subscriber(DeliveryStatus, "Move a message forward (sent → delivered → read, or failed) by provider id.")
    async def on_delivery_status(event: CloudEvent[DeliveryStatus]) -> None:
        await outcomes.on_delivery_status(sender, event)

    @subscriber(InboundReceived, "The recipient wrote: open their 24-hour customer-service window.")
    async def on_inbound_received(event: CloudEvent[InboundReceived]) -> None:
        await catalogues.on_inbound(sender, event)

    @subscriber(ContactOptedOut, "Add the recipient to the tenant's opt-out list.")
    async def on_contact_opted_out(event: CloudEvent[ContactOptedOut]) -> None:
        await catalogues.on_opted_out(sender, event)

    @subscriber(ContactOptedIn, "Remove the recipient from the tenant's opt-out list.")
    async def on_contact_opted_in(event: CloudEvent[ContactOptedIn]) -> None:
        await catalogues.on_opted_in(sender, event)

    @subscriber(TemplateStatusChanged, "Record Meta's status of a template; unsendable ones are not sent.")
    async def on_template_status_changed(event: CloudEvent[TemplateStatusChanged]) -> None:
        await catalogues.on_template_status(sender, event)

    @subscriber(ChannelSessionChanged, "A gateway's WhatsApp session changed: pause or resume its channel.")
    async def on_channel_session_changed(event: CloudEvent[ChannelSessionChanged]) -> None:
        await sessions.on_session_changed(sender, event)

    runtime.declare_publishes(MessageStatusChanged)
    app = runtime.create_app(routers(sender))

    # drain on shutdown: stop claiming, let in-flight sends finish and be recorded, then let the
    # runtime stop the broker and the loops (a message is never left 'sending' by a clean stop)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        async with inner(application) as state:
            try:
                yield state
            finally:
                runtime.stopping.set()
                await dispatcher.drain(settings.graceful_timeout_seconds)
                await sender.close()

    app.router.lifespan_context = lifespan
    return runtime, app
