"""Composition root of the scheduler: HTTP API, event subscribers and the claim loop."""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query, status

from services.scheduler import handlers
from services.scheduler import repository as repo
from services.scheduler.domain import (
    Recurrence,
    ScheduleError,
    pacing_recurrence,
    zone,
)
from services.scheduler.models import SCHEMA, metadata
from services.scheduler.schemas import (
    EditScheduleRequest,
    OccurrenceView,
    PacingEdit,
    PacingList,
    PacingRequest,
    PacingView,
    RecurrenceSpec,
    ReminderList,
    ReminderPolicy,
    ReminderPolicyView,
    ReminderView,
    ScheduledMessageDetail,
    ScheduledMessageList,
    ScheduledMessageView,
    ScheduleMessageRequest,
    ScheduleStatus,
)
from services.scheduler.settings import SchedulerSettings
from shared.api import ERROR_RESPONSES, ApiError
from shared.crypto import DecryptionError
from shared.events import (
    CloudEvent,
    EventCancelled,
    EventChanged,
    EventPublished,
    MessageRequested,
    MessageStatusChanged,
    PacingDue,
    utcnow,
)
from shared.phone import E164
from shared.service import ServiceRuntime
from shared.tenancy import Tenant
from shared.topology import EVENTS, subscription


def _unprocessable(exc: ScheduleError, field: str) -> ApiError:
    return ApiError(422, "invalid_request", f"{field}: {exc}", [{"field": field, "problem": str(exc)}])


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
    sched = handlers.Scheduler(
        runtime=runtime,
        batch_size=settings.claim_batch_size,
        max_sleep=settings.max_sleep_seconds,
        grace=timedelta(seconds=settings.grace_seconds),
        default_language=settings.default_language,
    )
    runtime.add_loop("claim-loop", lambda: handlers.run_claim_loop(sched))

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
        await handlers.plan_event_reminders(sched, event)

    @runtime.broker.subscriber(
        changed.queue,
        EVENTS,
        title=changed.queue_name,
        description="An event changed: re-plan the reminders that have not fired yet.",
    )
    async def on_event_changed(event: CloudEvent[EventChanged]) -> None:
        await handlers.plan_event_reminders(sched, event)

    cancelled = subscription("scheduler", EventCancelled)

    @runtime.broker.subscriber(
        cancelled.queue,
        EVENTS,
        title=cancelled.queue_name,
        description="An event was cancelled: cancel its reminders.",
    )
    async def on_event_cancelled(event: CloudEvent[EventCancelled]) -> None:
        await handlers.cancel_event_reminders(sched, event)

    statuses = subscription("scheduler", MessageStatusChanged)

    @runtime.broker.subscriber(
        statuses.queue,
        EVENTS,
        title=statuses.queue_name,
        description="Delivery status of the messages the scheduler requested, for the history.",
    )
    async def on_message_status(event: CloudEvent[MessageStatusChanged]) -> None:
        await handlers.follow_status(sched, event)

    def reveal(ciphertext: str) -> str:
        """The recipient, or a marker when it was encrypted with a key no longer configured (the
        listing must still answer)."""
        try:
            return runtime.secrets.decrypt(ciphertext)
        except DecryptionError:
            return "(encrypted with a key no longer configured)"

    # --- scheduled messages ---------------------------------------------------------------
    def view(row: Any) -> ScheduledMessageView:
        return ScheduledMessageView(
            id=row.id,
            to=reveal(row.recipient_enc),
            kind=row.kind,
            text=row.text,
            content=row.content,
            fallback_template=row.fallback_template,
            channel_id=row.channel_id,
            priority=row.priority,
            send_at=row.send_at,
            recurrence=row.recurrence,
            rule=row.rule,
            grace_seconds=row.grace_seconds,
            status=row.status,
            message_id=row.message_id,
            fired_count=row.fired_count,
            missed_count=row.missed_count,
            created_at=row.created_at,
            published_at=row.published_at,
            cancelled_at=row.cancelled_at,
        )

    api = APIRouter(prefix="/v1/scheduled-messages", tags=["scheduled messages"], responses=ERROR_RESPONSES)
    Auth = Depends(runtime.auth)

    def recurrence_from(spec: RecurrenceSpec) -> Recurrence:
        try:
            return spec.build()
        except ScheduleError as exc:
            raise _unprocessable(exc, "recurrence") from exc

    @api.post(
        "",
        status_code=status.HTTP_201_CREATED,
        response_model=ScheduledMessageView,
        summary="Schedule a message once (send_at) or on a recurrence",
    )
    async def create(body: ScheduleMessageRequest, tenant: Tenant = Auth) -> ScheduledMessageView:
        recurrence = recurrence_from(body.recurrence) if body.recurrence else None
        try:
            row = await handlers.create(
                sched,
                tenant.id,
                to=body.to,
                text=body.text,
                content=body.content.model_dump(mode="json", exclude_none=True) if body.content else None,
                fallback_template=body.fallback_template.model_dump(mode="json", exclude_none=True)
                if body.fallback_template
                else None,
                channel_id=body.channel_id,
                priority=body.priority,
                send_at=body.send_at,
                recurrence=recurrence,
                recurrence_spec=body.recurrence.model_dump(mode="json", exclude_none=True)
                if body.recurrence
                else None,
                grace_seconds=body.grace_seconds,
            )
        except ScheduleError as exc:
            raise _unprocessable(exc, "send_at" if body.send_at else "recurrence") from exc
        return view(row)

    @api.get("", response_model=ScheduledMessageList, summary="List this tenant's scheduled messages")
    async def list_(
        tenant: Tenant = Auth,
        status_: ScheduleStatus | None = Query(default=None, alias="status"),
        recipient: E164 | None = Query(default=None, description="Only those to this phone number"),
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> ScheduledMessageList:
        async with runtime.engine.connect() as conn:
            rows = await repo.list_for_tenant(
                conn,
                tenant.id,
                status=status_,
                limit=limit,
                recipient_hash=sched.hash(recipient) if recipient else None,
            )
        return ScheduledMessageList(items=[view(r) for r in rows])

    @api.get(
        "/{schedule_id}",
        response_model=ScheduledMessageDetail,
        summary="One scheduled message: its next five occurrences and its history",
    )
    async def get(schedule_id: uuid.UUID, tenant: Tenant = Auth) -> ScheduledMessageDetail:
        async with runtime.engine.connect() as conn:
            row = await repo.get(conn, tenant.id, schedule_id)
            if row is None:
                raise ApiError(404, "not_found", f"no scheduled message {schedule_id} for this tenant")
            past = await repo.history(conn, schedule_id)
        return ScheduledMessageDetail(
            **view(row).model_dump(),
            next_occurrences=handlers.next_five(row, handlers.recurrence_of(row)),
            history=[
                OccurrenceView(
                    due_at=o.due_at,
                    status=o.status,
                    message_id=o.message_id,
                    fired_at=o.fired_at,
                    delivery_status=o.delivery_status,
                    delivery_reason=o.delivery_reason,
                    delivery_updated_at=o.delivery_updated_at,
                )
                for o in past
            ],
        )

    @api.patch(
        "/{schedule_id}",
        response_model=ScheduledMessageView,
        summary="Edit a pending scheduled message",
        responses={409: {"description": "No longer pending"}},
    )
    async def patch(
        schedule_id: uuid.UUID, body: EditScheduleRequest, tenant: Tenant = Auth
    ) -> ScheduledMessageView:
        changes: dict[str, Any] = {}
        for key in body.model_fields_set:
            value = getattr(body, key)
            if value is None and key not in ("channel_id", "fallback_template", "grace_seconds"):
                raise ApiError(
                    422,
                    "invalid_request",
                    f"{key}: cannot be null",
                    [{"field": key, "problem": "cannot be null"}],
                )
            if key in ("content", "fallback_template") and value is not None:
                value = value.model_dump(mode="json", exclude_none=True)
            changes[key] = value
        if body.recurrence is not None:
            changes["recurrence"] = recurrence_from(body.recurrence)
            changes["recurrence_spec"] = body.recurrence.model_dump(mode="json", exclude_none=True)
        if not changes:
            raise ApiError(422, "invalid_request", "nothing to change: give at least one field", [])
        try:
            row = await handlers.edit(sched, tenant.id, schedule_id, changes)
        except handlers.NotEditable as exc:
            raise ApiError(409, "not_editable", str(exc)) from exc
        except ScheduleError as exc:
            raise _unprocessable(exc, "recurrence" if "recurrence" in changes else "send_at") from exc
        if row is None:
            raise ApiError(404, "not_found", f"no scheduled message {schedule_id} for this tenant")
        return view(row)

    @api.delete(
        "/{schedule_id}",
        response_model=ScheduledMessageView,
        summary="Cancel a pending scheduled message (every future occurrence)",
        responses={409: {"description": "Already published, completed or cancelled"}},
    )
    async def cancel(schedule_id: uuid.UUID, tenant: Tenant = Auth) -> ScheduledMessageView:
        try:
            row = await handlers.cancel(sched, tenant.id, schedule_id)
        except handlers.NotCancellable as exc:
            raise ApiError(409, "not_cancellable", str(exc)) from exc
        if row is None:
            raise ApiError(404, "not_found", f"no scheduled message {schedule_id} for this tenant")
        return view(row)

    # --- reminders ------------------------------------------------------------------------
    reminders_api = APIRouter(tags=["event reminders"], responses=ERROR_RESPONSES)

    def reminder_view(row: Any) -> ReminderView:
        return ReminderView(
            id=row.id,
            event_id=row.event_id,
            event_name=row.event_name,
            starts_at=row.starts_at,
            reminder=row.rule_name,
            to=reveal(row.recipient_enc),
            due_at=row.due_at,
            status=row.status,
            message_id=row.message_id,
            content=row.content,
            delivery_status=row.delivery_status,
            delivery_updated_at=row.delivery_updated_at,
        )

    @reminders_api.get(
        "/v1/reminders", response_model=ReminderList, summary="Planned and past event reminders"
    )
    async def list_reminders(
        tenant: Tenant = Auth,
        event_id: str | None = Query(default=None),
        status_: Literal["pending", "published", "missed", "cancelled"] | None = Query(
            default=None, alias="status"
        ),
        limit: int = Query(default=200, ge=1, le=1000),
    ) -> ReminderList:
        async with runtime.engine.connect() as conn:
            rows = await repo.list_reminders(conn, tenant.id, event_id=event_id, status=status_, limit=limit)
        return ReminderList(items=[reminder_view(r) for r in rows])

    def default_policy() -> list[dict[str, Any]]:
        return [
            {
                "name": r.name,
                "days_before": r.days_before,
                "at": r.at.isoformat(timespec="minutes") if r.at else None,
                "template": {"name": r.template_name, "language": None, "body_params": list(r.body_params)},
                "attendee_filter": {},
            }
            for r in handlers.policy_rules(None)
        ]

    @reminders_api.get(
        "/v1/reminder-policy",
        response_model=ReminderPolicyView,
        summary="This tenant's reminder offsets and templates",
    )
    async def get_policy(tenant: Tenant = Auth) -> ReminderPolicyView:
        async with runtime.engine.connect() as conn:
            row = await repo.get_policy(conn, tenant.id)
        if row is None:
            return ReminderPolicyView(builtin=True, reminders=default_policy())
        return ReminderPolicyView(builtin=False, reminders=row.reminders)

    @reminders_api.put(
        "/v1/reminder-policy",
        response_model=ReminderPolicyView,
        summary="Set the reminders planned for every event published from now on",
    )
    async def put_policy(body: ReminderPolicy = Body(...), tenant: Tenant = Auth) -> ReminderPolicyView:
        reminders = [r.model_dump(mode="json") for r in body.reminders]
        async with runtime.uow() as uow:
            await repo.put_policy(uow.conn, tenant.id, reminders, utcnow())
            await uow.commit()
        return ReminderPolicyView(builtin=False, reminders=reminders)

    @reminders_api.delete(
        "/v1/reminder-policy", response_model=ReminderPolicyView, summary="Go back to the built-in default"
    )
    async def delete_policy(tenant: Tenant = Auth) -> ReminderPolicyView:
        async with runtime.uow() as uow:
            await repo.delete_policy(uow.conn, tenant.id)
            await uow.commit()
        return ReminderPolicyView(builtin=True, reminders=default_policy())

    event_policy_path = "/v1/reminder-policy/events/{event_id}"

    @reminders_api.get(
        event_policy_path, response_model=ReminderPolicyView, summary="The reminders planned for one event"
    )
    async def get_event_policy(event_id: str, tenant: Tenant = Auth) -> ReminderPolicyView:
        async with runtime.engine.connect() as conn:
            row = await repo.get_event_policy(conn, tenant.id, event_id)
        if row is None:
            return await get_policy(tenant)
        return ReminderPolicyView(builtin=False, reminders=row.reminders)

    @reminders_api.put(
        event_policy_path,
        response_model=ReminderPolicyView,
        summary="Override the tenant's reminders for one event (applies when the event is next "
        "published or changed)",
    )
    async def put_event_policy(
        event_id: str, body: ReminderPolicy = Body(...), tenant: Tenant = Auth
    ) -> ReminderPolicyView:
        reminders = [r.model_dump(mode="json") for r in body.reminders]
        async with runtime.uow() as uow:
            await repo.put_event_policy(uow.conn, tenant.id, event_id, reminders, utcnow())
            await uow.commit()
        return ReminderPolicyView(builtin=False, reminders=reminders)

    @reminders_api.delete(
        event_policy_path, status_code=204, summary="Remove one event's override: the tenant's policy applies"
    )
    async def delete_event_policy(event_id: str, tenant: Tenant = Auth) -> None:
        async with runtime.uow() as uow:
            deleted = await repo.delete_event_policy(uow.conn, tenant.id, event_id)
            await uow.commit()
        if not deleted:
            raise ApiError(404, "not_found", f"event {event_id!r} has no reminder policy of its own")

    # --- pacing ---------------------------------------------------------------------------
    pacing_api = APIRouter(
        prefix="/v1/pacing-schedules", tags=["pacing schedules"], responses=ERROR_RESPONSES
    )

    def pacing_view(row: Any) -> PacingView:
        rec = Recurrence(timezone=row.timezone, start=row.start_local, rule=row.rule)
        upcoming: list[datetime] = []
        if row.active and row.next_at is not None:
            upcoming = [row.next_at, *rec.next_n(row.next_at, 4)]
        return PacingView(
            id=row.id,
            user_id=row.user_id,
            days=row.days,
            times=row.times,
            timezone=row.timezone,
            active=row.active,
            next_slots=upcoming,
            last_slot_at=row.last_slot_at,
            created_at=row.created_at,
        )

    def pacing_rule(timezone: str, days: list[str], times: list[time]) -> Recurrence:
        try:
            zone(timezone)
        except ScheduleError as exc:
            raise _unprocessable(exc, "timezone") from exc
        try:
            return pacing_recurrence(timezone, days, times, utcnow())
        except ScheduleError as exc:
            raise _unprocessable(exc, "times") from exc

    @pacing_api.post(
        "", status_code=201, response_model=PacingView, summary="Create a user's pacing schedule"
    )
    async def create_pacing(body: PacingRequest, tenant: Tenant = Auth) -> PacingView:
        rec = pacing_rule(body.timezone, list(body.days), body.times)
        now = utcnow()
        pacing_id = uuid.uuid4()
        async with runtime.uow() as uow:
            await repo.insert_pacing(
                uow.conn,
                {
                    "id": pacing_id,
                    "tenant_id": tenant.id,
                    "user_id": body.user_id,
                    "days": list(body.days),
                    "times": sorted({t.strftime("%H:%M") for t in body.times}),
                    "timezone": body.timezone,
                    "active": body.active,
                    "start_local": rec.start,
                    "rule": rec.rule,
                    "next_at": rec.next_after(now),
                    "created_at": now,
                    "updated_at": now,
                },
            )
            await uow.conn.exec_driver_sql(f"NOTIFY {handlers.DUE_CHANNEL}")
            await uow.commit()
            row = await repo.get_pacing(uow.conn, tenant.id, pacing_id)
        return pacing_view(row)

    @pacing_api.get("", response_model=PacingList, summary="This tenant's pacing schedules")
    async def list_pacing(
        tenant: Tenant = Auth,
        user_id: str | None = Query(default=None),
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> PacingList:
        async with runtime.engine.connect() as conn:
            rows = await repo.list_pacing(conn, tenant.id, user_id, limit)
        return PacingList(items=[pacing_view(r) for r in rows])

    @pacing_api.get(
        "/{pacing_id}", response_model=PacingView, summary="One pacing schedule and its next slots"
    )
    async def get_pacing(pacing_id: uuid.UUID, tenant: Tenant = Auth) -> PacingView:
        async with runtime.engine.connect() as conn:
            row = await repo.get_pacing(conn, tenant.id, pacing_id)
        if row is None:
            raise ApiError(404, "not_found", f"no pacing schedule {pacing_id} for this tenant")
        return pacing_view(row)

    @pacing_api.patch(
        "/{pacing_id}", response_model=PacingView, summary="Change days, times, zone or pause it"
    )
    async def patch_pacing(pacing_id: uuid.UUID, body: PacingEdit, tenant: Tenant = Auth) -> PacingView:
        async with runtime.uow() as uow:
            row = await repo.get_pacing(uow.conn, tenant.id, pacing_id, lock=True)
            if row is None:
                raise ApiError(404, "not_found", f"no pacing schedule {pacing_id} for this tenant")
            days = list(body.days) if body.days is not None else list(row.days)
            times = body.times if body.times is not None else [time.fromisoformat(t) for t in row.times]
            timezone = body.timezone if body.timezone is not None else row.timezone
            active = body.active if body.active is not None else row.active
            rec = pacing_rule(timezone, days, times)
            now = utcnow()
            await repo.update_pacing(
                uow.conn,
                pacing_id,
                days=days,
                times=sorted({t.strftime("%H:%M") for t in times}),
                timezone=timezone,
                active=active,
                start_local=rec.start,
                rule=rec.rule,
                next_at=rec.next_after(now),
                updated_at=now,
            )
            await uow.conn.exec_driver_sql(f"NOTIFY {handlers.DUE_CHANNEL}")
            await uow.commit()
            row = await repo.get_pacing(uow.conn, tenant.id, pacing_id)
        return pacing_view(row)

    @pacing_api.delete("/{pacing_id}", status_code=204, summary="Delete a pacing schedule")
    async def delete_pacing(pacing_id: uuid.UUID, tenant: Tenant = Auth) -> None:
        async with runtime.uow() as uow:
            deleted = await repo.delete_pacing(uow.conn, tenant.id, pacing_id)
            await uow.commit()
        if not deleted:
            raise ApiError(404, "not_found", f"no pacing schedule {pacing_id} for this tenant")

    runtime.declare_publishes(MessageRequested, PacingDue)
    app = runtime.create_app([api, reminders_api, pacing_api])
    return runtime, app
