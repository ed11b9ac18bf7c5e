"""The scheduler's HTTP API: each route translates HTTP ⇄ a use case (``schedules``,
``reminders``, ``policies``, ``pacing``) and rows into response models. No SQL, no decisions."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query, status

from services.scheduler import pacing, policies, reminders, schedules
from services.scheduler.context import Scheduler
from services.scheduler.domain import Recurrence, ScheduleError, pacing_slots, refused_null
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
from shared.api import ERROR_RESPONSES, ApiError
from shared.phone import E164
from shared.tenancy import Tenant


def _unprocessable(exc: ScheduleError, field: str) -> ApiError:
    return ApiError(422, "invalid_request", f"{field}: {exc}", [{"field": field, "problem": str(exc)}])


def _dump(model: Any) -> dict[str, Any] | None:
    return model.model_dump(mode="json", exclude_none=True) if model is not None else None


def _recurrence(spec: RecurrenceSpec) -> Recurrence:
    try:
        return spec.build()
    except ScheduleError as exc:
        raise _unprocessable(exc, "recurrence") from exc


def routers(sched: Scheduler) -> list[APIRouter]:
    Auth = Depends(sched.runtime.auth)
    return [_schedule_routes(sched, Auth), _reminder_routes(sched, Auth), _pacing_routes(sched, Auth)]


# --- scheduled messages -----------------------------------------------------------------------


def _schedule_routes(sched: Scheduler, Auth: Any) -> APIRouter:
    api = APIRouter(prefix="/v1/scheduled-messages", tags=["scheduled messages"], responses=ERROR_RESPONSES)

    def view(row: Any) -> ScheduledMessageView:
        return ScheduledMessageView(
            id=row.id,
            to=sched.reveal(row.recipient_enc),
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

    def not_found(schedule_id: uuid.UUID) -> ApiError:
        return ApiError(404, "not_found", f"no scheduled message {schedule_id} for this tenant")

    @api.post(
        "",
        status_code=status.HTTP_201_CREATED,
        response_model=ScheduledMessageView,
        summary="Schedule a message once (send_at) or on a recurrence",
    )
    async def create(body: ScheduleMessageRequest, tenant: Tenant = Auth) -> ScheduledMessageView:
        recurrence = _recurrence(body.recurrence) if body.recurrence else None
        try:
            row = await schedules.create(
                sched,
                tenant.id,
                to=body.to,
                text=body.text,
                content=_dump(body.content),
                fallback_template=_dump(body.fallback_template),
                channel_id=body.channel_id,
                priority=body.priority,
                send_at=body.send_at,
                recurrence=recurrence,
                recurrence_spec=_dump(body.recurrence),
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
        rows = await schedules.list_schedules(
            sched, tenant.id, status=status_, recipient=recipient, limit=limit
        )
        return ScheduledMessageList(items=[view(r) for r in rows])

    @api.get(
        "/{schedule_id}",
        response_model=ScheduledMessageDetail,
        summary="One scheduled message: its next five occurrences and its history",
    )
    async def get(schedule_id: uuid.UUID, tenant: Tenant = Auth) -> ScheduledMessageDetail:
        found = await schedules.detail(sched, tenant.id, schedule_id)
        if found is None:
            raise not_found(schedule_id)
        return ScheduledMessageDetail(
            **view(found.row).model_dump(),
            next_occurrences=found.next_occurrences,
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
                for o in found.history
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
        changes: dict[str, Any] = {key: getattr(body, key) for key in body.model_fields_set}
        field = refused_null(changes)
        if field is not None:
            raise ApiError(
                422,
                "invalid_request",
                f"{field}: cannot be null",
                [{"field": field, "problem": "cannot be null"}],
            )
        for key in ("content", "fallback_template"):
            if changes.get(key) is not None:
                changes[key] = _dump(changes[key])
        if body.recurrence is not None:
            changes["recurrence"] = _recurrence(body.recurrence)
            changes["recurrence_spec"] = _dump(body.recurrence)
        if not changes:
            raise ApiError(422, "invalid_request", "nothing to change: give at least one field", [])
        try:
            row = await schedules.edit(sched, tenant.id, schedule_id, changes)
        except schedules.NotEditable as exc:
            raise ApiError(409, "not_editable", str(exc)) from exc
        except ScheduleError as exc:
            raise _unprocessable(exc, "recurrence" if "recurrence" in changes else "send_at") from exc
        if row is None:
            raise not_found(schedule_id)
        return view(row)

    @api.delete(
        "/{schedule_id}",
        response_model=ScheduledMessageView,
        summary="Cancel a pending scheduled message (every future occurrence)",
        responses={409: {"description": "Already published, completed or cancelled"}},
    )
    async def cancel(schedule_id: uuid.UUID, tenant: Tenant = Auth) -> ScheduledMessageView:
        try:
            row = await schedules.cancel(sched, tenant.id, schedule_id)
        except schedules.NotCancellable as exc:
            raise ApiError(409, "not_cancellable", str(exc)) from exc
        if row is None:
            raise not_found(schedule_id)
        return view(row)

    return api


# --- event reminders and their policies -------------------------------------------------------


def _reminder_routes(sched: Scheduler, Auth: Any) -> APIRouter:
    api = APIRouter(tags=["event reminders"], responses=ERROR_RESPONSES)

    def reminder_view(row: Any) -> ReminderView:
        return ReminderView(
            id=row.id,
            event_id=row.event_id,
            event_name=row.event_name,
            starts_at=row.starts_at,
            reminder=row.rule_name,
            to=sched.reveal(row.recipient_enc),
            due_at=row.due_at,
            status=row.status,
            message_id=row.message_id,
            content=row.content,
            delivery_status=row.delivery_status,
            delivery_updated_at=row.delivery_updated_at,
        )

    def policy_view(policy: policies.Policy) -> ReminderPolicyView:
        return ReminderPolicyView(builtin=policy.builtin, reminders=policy.reminders)

    @api.get("/v1/reminders", response_model=ReminderList, summary="Planned and past event reminders")
    async def list_reminders(
        tenant: Tenant = Auth,
        event_id: str | None = Query(default=None),
        status_: Literal["pending", "published", "missed", "cancelled"] | None = Query(
            default=None, alias="status"
        ),
        limit: int = Query(default=200, ge=1, le=1000),
    ) -> ReminderList:
        rows = await reminders.list_reminders(
            sched, tenant.id, event_id=event_id, status=status_, limit=limit
        )
        return ReminderList(items=[reminder_view(r) for r in rows])

    @api.get(
        "/v1/reminder-policy",
        response_model=ReminderPolicyView,
        summary="This tenant's reminder offsets and templates",
    )
    async def get_policy(tenant: Tenant = Auth) -> ReminderPolicyView:
        return policy_view(await policies.tenant_policy(sched, tenant.id))

    @api.put(
        "/v1/reminder-policy",
        response_model=ReminderPolicyView,
        summary="Set the reminders planned for every event published from now on",
    )
    async def put_policy(body: ReminderPolicy = Body(...), tenant: Tenant = Auth) -> ReminderPolicyView:
        stored = [r.model_dump(mode="json") for r in body.reminders]
        return policy_view(await policies.set_tenant_policy(sched, tenant.id, stored))

    @api.delete(
        "/v1/reminder-policy", response_model=ReminderPolicyView, summary="Go back to the built-in default"
    )
    async def delete_policy(tenant: Tenant = Auth) -> ReminderPolicyView:
        return policy_view(await policies.reset_tenant_policy(sched, tenant.id))

    event_policy_path = "/v1/reminder-policy/events/{event_id}"

    @api.get(
        event_policy_path, response_model=ReminderPolicyView, summary="The reminders planned for one event"
    )
    async def get_event_policy(event_id: str, tenant: Tenant = Auth) -> ReminderPolicyView:
        return policy_view(await policies.event_policy(sched, tenant.id, event_id))

    @api.put(
        event_policy_path,
        response_model=ReminderPolicyView,
        summary="Override the tenant's reminders for one event (applies when the event is next "
        "published or changed)",
    )
    async def put_event_policy(
        event_id: str, body: ReminderPolicy = Body(...), tenant: Tenant = Auth
    ) -> ReminderPolicyView:
        stored = [r.model_dump(mode="json") for r in body.reminders]
        return policy_view(await policies.set_event_policy(sched, tenant.id, event_id, stored))

    @api.delete(
        event_policy_path, status_code=204, summary="Remove one event's override: the tenant's policy applies"
    )
    async def delete_event_policy(event_id: str, tenant: Tenant = Auth) -> None:
        if not await policies.delete_event_policy(sched, tenant.id, event_id):
            raise ApiError(404, "not_found", f"event {event_id!r} has no reminder policy of its own")

    return api


# --- pacing -----------------------------------------------------------------------------------


def _pacing_routes(sched: Scheduler, Auth: Any) -> APIRouter:
    api = APIRouter(prefix="/v1/pacing-schedules", tags=["pacing schedules"], responses=ERROR_RESPONSES)

    def pacing_view(row: Any) -> PacingView:
        rec = Recurrence(timezone=row.timezone, start=row.start_local, rule=row.rule)
        return PacingView(
            id=row.id,
            user_id=row.user_id,
            days=row.days,
            times=row.times,
            timezone=row.timezone,
            active=row.active,
            next_slots=pacing_slots(row.active, row.next_at, rec),
            last_slot_at=row.last_slot_at,
            created_at=row.created_at,
        )

    def not_found(pacing_id: uuid.UUID) -> ApiError:
        return ApiError(404, "not_found", f"no pacing schedule {pacing_id} for this tenant")

    @api.post("", status_code=201, response_model=PacingView, summary="Create a user's pacing schedule")
    async def create_pacing(body: PacingRequest, tenant: Tenant = Auth) -> PacingView:
        try:
            row = await pacing.create(
                sched,
                tenant.id,
                user_id=body.user_id,
                days=list(body.days),
                times=body.times,
                timezone=body.timezone,
                active=body.active,
            )
        except ScheduleError as exc:
            raise _unprocessable(exc, exc.field or "times") from exc
        return pacing_view(row)

    @api.get("", response_model=PacingList, summary="This tenant's pacing schedules")
    async def list_pacing(
        tenant: Tenant = Auth,
        user_id: str | None = Query(default=None),
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> PacingList:
        rows = await pacing.list_pacing(sched, tenant.id, user_id=user_id, limit=limit)
        return PacingList(items=[pacing_view(r) for r in rows])

    @api.get("/{pacing_id}", response_model=PacingView, summary="One pacing schedule and its next slots")
    async def get_pacing(pacing_id: uuid.UUID, tenant: Tenant = Auth) -> PacingView:
        row = await pacing.get(sched, tenant.id, pacing_id)
        if row is None:
            raise not_found(pacing_id)
        return pacing_view(row)

    @api.patch("/{pacing_id}", response_model=PacingView, summary="Change days, times, zone or pause it")
    async def patch_pacing(pacing_id: uuid.UUID, body: PacingEdit, tenant: Tenant = Auth) -> PacingView:
        try:
            row = await pacing.edit(
                sched,
                tenant.id,
                pacing_id,
                days=list(body.days) if body.days is not None else None,
                times=body.times,
                timezone=body.timezone,
                active=body.active,
            )
        except ScheduleError as exc:
            raise _unprocessable(exc, exc.field or "times") from exc
        if row is None:
            raise not_found(pacing_id)
        return pacing_view(row)

    @api.delete("/{pacing_id}", status_code=204, summary="Delete a pacing schedule")
    async def delete_pacing(pacing_id: uuid.UUID, tenant: Tenant = Auth) -> None:
        if not await pacing.delete(sched, tenant.id, pacing_id):
            raise not_found(pacing_id)

    return api
