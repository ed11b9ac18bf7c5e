"""``/v1/event-types``: a tenant's own event types (a name and a JSON Schema), tenant-scoped by the
caller's API key. Ingest asks ``GET /v1/event-types/{name}`` with the caller's key before it
accepts an event of such a type; the rules match them by name."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from services.pipeline import event_types as et
from shared.api import ERROR_RESPONSES, ApiError
from shared.service import ServiceRuntime
from shared.tenancy import Tenant

EXAMPLE_SCHEMA = {
    "type": "object",
    "required": ["ticket_id", "status", "customer_phone"],
    "properties": {
        "ticket_id": {"type": "string"},
        "status": {"enum": ["open", "pending", "solved"]},
        "customer_phone": {"type": "string", "pattern": "^\\+[1-9][0-9]{7,14}$"},
    },
}


class EventTypeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=3, max_length=100, examples=["ticket.updated"])
    description: str | None = Field(default=None, max_length=1000)
    json_schema: dict[str, Any] = Field(
        alias="schema",
        description=f"JSON Schema draft 2020-12 of the event's data (an object), at most "
        f"{et.MAX_SCHEMA_BYTES} bytes.",
        examples=[EXAMPLE_SCHEMA],
    )


class EventTypeReplace(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    description: str | None = Field(default=None, max_length=1000)
    json_schema: dict[str, Any] = Field(alias="schema", examples=[EXAMPLE_SCHEMA])


class EventTypeView(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    version: int = Field(description="1 when created; each replacement of the schema adds one.")
    description: str | None
    json_schema: dict[str, Any] = Field(alias="schema", serialization_alias="schema")
    created_at: datetime
    updated_at: datetime


class EventTypeList(BaseModel):
    event_types: list[EventTypeView]


class TenantEventView(BaseModel):
    event_key: str = Field(description="The CloudEvent's source:id.")
    status: Literal["received", "rejected"]
    reason: str | None
    data: Any
    received_at: datetime


class TenantEventList(BaseModel):
    events: list[TenantEventView]


def _view(row: Any) -> EventTypeView:
    return EventTypeView(
        name=row.name,
        version=row.version,
        description=row.description,
        json_schema=row.schema,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _checked(name: str, schema: dict[str, Any]) -> None:
    """422 naming the problem: a name that cannot be a tenant type, or a schema that is not valid."""
    why = et.check_name(name)
    if why is not None:
        msg = f"name {name!r} cannot be an event type: {why}"
        raise ApiError(422, "invalid_request", msg, [{"field": "name", "problem": why}])
    problems = et.check_schema(schema)
    if problems:
        raise ApiError(
            422,
            "invalid_schema",
            f"schema is not usable: {et.summary(problems)}",
            [p.as_detail() for p in problems],
        )


def _not_found(name: str) -> ApiError:
    return ApiError(
        404, "not_found", f"no event type {name!r} for this tenant: register it with POST /v1/event-types"
    )


def router(runtime: ServiceRuntime) -> APIRouter:
    api = APIRouter(prefix="/v1/event-types", tags=["event types"], responses=ERROR_RESPONSES)

    @api.post(
        "",
        status_code=201,
        response_model=EventTypeView,
        response_model_by_alias=True,
        summary="Register an event type of this tenant (a name and a JSON Schema)",
        responses={409: {"description": "The tenant already has a type by that name"}},
    )
    async def create(body: EventTypeIn, tenant: Tenant = Depends(runtime.auth)) -> EventTypeView:
        _checked(body.name, body.json_schema)
        async with runtime.engine.begin() as conn:
            row = await et.insert_type(conn, tenant.id, body.name, body.json_schema, body.description)
        if row is None:
            raise ApiError(
                409,
                "conflict",
                f"event type {body.name!r} already exists: replace its schema with "
                f"PUT /v1/event-types/{body.name}",
            )
        return _view(row)

    @api.get(
        "", response_model=EventTypeList, response_model_by_alias=True, summary="This tenant's event types"
    )
    async def list_all(tenant: Tenant = Depends(runtime.auth)) -> EventTypeList:
        async with runtime.engine.connect() as conn:
            rows = await et.list_types(conn, tenant.id)
        return EventTypeList(event_types=[_view(r) for r in rows])

    @api.get(
        "/{name}",
        response_model=EventTypeView,
        response_model_by_alias=True,
        summary="One event type of this tenant (404 for another tenant's)",
        responses={404: {"description": "No such type for this tenant"}},
    )
    async def get_one(name: str, tenant: Tenant = Depends(runtime.auth)) -> EventTypeView:
        async with runtime.engine.connect() as conn:
            row = await et.get_type(conn, tenant.id, name)
        if row is None:
            raise _not_found(name)
        return _view(row)

    @api.put(
        "/{name}",
        response_model=EventTypeView,
        response_model_by_alias=True,
        summary="Create the type or replace its schema (the version goes up by one)",
    )
    async def replace(
        name: str, body: EventTypeReplace, tenant: Tenant = Depends(runtime.auth)
    ) -> EventTypeView:
        _checked(name, body.json_schema)
        async with runtime.engine.begin() as conn:
            row = await et.replace_type(conn, tenant.id, name, body.json_schema, body.description)
        return _view(row)

    @api.delete(
        "/{name}", status_code=204, summary="Delete an event type: its events are refused from then on"
    )
    async def delete(name: str, tenant: Tenant = Depends(runtime.auth)) -> Response:
        async with runtime.engine.begin() as conn:
            if not await et.delete_type(conn, tenant.id, name):
                raise _not_found(name)
        return Response(status_code=204)

    @api.get(
        "/{name}/events",
        response_model=TenantEventList,
        summary="The latest events of this type the pipeline received or refused (with why)",
    )
    async def events(
        name: str, tenant: Tenant = Depends(runtime.auth), limit: int = Query(50, ge=1, le=500)
    ) -> TenantEventList:
        async with runtime.engine.connect() as conn:
            rows = await et.list_events(conn, tenant.id, name, limit)
        return TenantEventList(
            events=[
                TenantEventView(
                    event_key=r.event_key,
                    status=r.status,
                    reason=r.reason,
                    data=r.data,
                    received_at=r.received_at,
                )
                for r in rows
            ]
        )

    return api
