"""Composition root of the scheduler: wiring only — the runtime, the use cases' dependencies, the
subscribers, the routes and the claim loop. Every decision lives elsewhere (README.md has the map)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from services.scheduler import delivery, firing, reminders
from services.scheduler.context import Scheduler
from services.scheduler.models import SCHEMA, metadata
from services.scheduler.routes import routers
from services.scheduler.settings import SchedulerSettings
from shared.events import (
    CloudEvent,
    EventCancelled,
    EventChanged,
    EventPublished,
    MessageRequested,
    MessageStatusChanged,
    PacingDue,
)
from shared.service import ServiceRuntime
from shared.topology import EVENTS, subscription


def build(settings: SchedulerSettings | None = None) -> tuple[ServiceRuntime, Any]:
    settings = settings or SchedulerSettings()
    runtime = ServiceRuntime(
        settings,
        schema=SCHEMA,
        metadata=metadata,
        title="Herald scheduler",
        description="Fires every scheduled message, recurring message, pacing slot and event reminder "
        "exactly once, on time, in the user's time zone.",
    )
    sched = Scheduler(
        runtime=runtime,
        batch_size=settings.claim_batch_size,
        max_sleep=settings.max_sleep_seconds,
        grace=timedelta(seconds=settings.grace_seconds),
        default_language=settings.default_language,
    )
    runtime.add_loop("claim-loop", lambda: firing.run_claim_loop(sched))

    # --- subscribers ----------------------------------------------------------------------
    published = subscription("scheduler", EventPublished)
    changed = subscription("scheduler", EventChanged)

    @runtime.broker.subscriber(
        published.queue,
        EVENTS,
        title=published.queue_name,
        description="An event was published: plan its reminders.",
    )
    async def on_event_published(event: CloudEvent[EventPublished]) -> None:
        await reminders.plan_event_reminders(sched, event)

    @runtime.broker.subscriber(
        changed.queue,
        EVENTS,
        title=changed.queue_name,
        description="An event changed: re-plan the reminders that have not fired yet.",
    )
    async def on_event_changed(event: CloudEvent[EventChanged]) -> None:
        await reminders.plan_event_reminders(sched, event)

    cancelled = subscription("scheduler", EventCancelled)

    @runtime.broker.subscriber(
        cancelled.queue,
        EVENTS,
        title=cancelled.queue_name,
        description="An event was cancelled: cancel its reminders.",
    )
    async def on_event_cancelled(event: CloudEvent[EventCancelled]) -> None:
        await reminders.cancel_event_reminders(sched, event)

    # the message.status binding: which statuses reach the scheduler (recorded by delivery.py)
    statuses = subscription("scheduler", MessageStatusChanged)

    @runtime.broker.subscriber(
        statuses.queue,
        EVENTS,
        title=statuses.queue_name,
        description="Delivery status of the messages the scheduler requested, for the history.",
    )
    async def on_message_status(event: CloudEvent[MessageStatusChanged]) -> None:
        await delivery.follow_status(sched, event)

    runtime.declare_publishes(MessageRequested, PacingDue)
    app = runtime.create_app(routers(sched))
    return runtime, app
