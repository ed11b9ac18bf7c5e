"""Events of a tenant's own types (``ticket.updated``) posted to ``POST /v1/events``.

Only the pipeline knows a tenant's event types. ``EventTypeDirectory`` asks it
(``GET {pipeline_url}/v1/event-types/{name}``) with the caller's own ``Authorization`` header, so
the pipeline's tenant scoping decides: 200 is a type of this tenant (its JSON Schema), 404 is not
(another tenant's type answers 404 there too). A schema is kept ``cache_seconds``: a replaced
schema is in force here within that time; a miss is never cached, so a type registered a moment
ago is accepted at once. Built once in ``app.py``, like ``channels.ChannelDirectory``.

``tenant_event`` (pure) checks the envelope and the data against the schema and wraps the event as
``tenant.event.v1``, the one envelope the pipeline consumes for every tenant type.
"""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from services.ingest.domain import EventRejected, stamp_tenant
from shared.event_schema import check_name, summary, validate
from shared.events import CATALOGUE, CloudEvent, TenantEvent, UnknownEventType, canonical_type
from shared.logging import get_logger

log = get_logger(__name__)


class UnregisteredEventType(Exception):
    """The pipeline has no event type by that name for the caller's tenant."""


class PipelineUnavailable(Exception):
    """The pipeline could not answer (unreachable, timed out, 5xx or an unexpected status)."""


class EventTypeDirectory:
    def __init__(self, pipeline_url: str, timeout_seconds: float, cache_seconds: float) -> None:
        self.pipeline_url = pipeline_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple[uuid.UUID, str], tuple[float, dict[str, Any]]] = {}

    async def schema(self, tenant_id: uuid.UUID, name: str, authorization: str) -> dict[str, Any]:
        """The JSON Schema of the tenant's type ``name``; raises ``UnregisteredEventType`` or
        ``PipelineUnavailable``."""
        key = (tenant_id, name)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        url = f"{self.pipeline_url}/v1/event-types/{quote(name, safe='')}"
        try:
            async with httpx.AsyncClient(timeout=self.timeout_seconds) as http:
                answer = await http.get(url, headers={"Authorization": authorization})
        except httpx.HTTPError as exc:
            log.warning("pipeline unreachable for an event type", url=url, error=repr(exc)[:200])
            raise PipelineUnavailable(f"{type(exc).__name__} calling {self.pipeline_url}") from exc
        if answer.status_code == 404:
            self._cache.pop(key, None)
            raise UnregisteredEventType(name)
        if answer.status_code != 200:
            log.warning("pipeline refused an event type lookup", url=url, status=answer.status_code)
            raise PipelineUnavailable(f"the pipeline answered {answer.status_code}")
        try:
            schema = answer.json()["schema"]
        except (ValueError, KeyError, TypeError) as exc:
            raise PipelineUnavailable("the pipeline's answer has no schema") from exc
        if self.cache_seconds > 0:
            self._cache[key] = (time.monotonic() + self.cache_seconds, schema)
        return schema  # type: ignore[no-any-return]


def tenant_type_of(body: dict[str, Any]) -> tuple[str, Any] | None:
    """``(name, data)`` when ``body`` is an event of a tenant's own type — its ``type`` is not one of
    Herald's and could name a tenant type, or it is a ``tenant.event`` envelope — else None (the
    event is Herald's own, or its type cannot be anyone's: ``validate_inbound_event`` refuses it)."""
    value = str(body.get("type", ""))
    try:
        own = canonical_type(value)
    except UnknownEventType:
        return (value, body.get("data")) if check_name(value) is None else None
    if own != TenantEvent.type_name():
        return None
    wrapped = body.get("data")
    if isinstance(wrapped, dict) and isinstance(wrapped.get("name"), str):
        return wrapped["name"], wrapped.get("data")
    msg = 'a tenant.event names its type and payload: "data": {"name": "ticket.updated", "data": {...}}'
    raise EventRejected(422, "invalid_event", msg, [{"field": "data.name", "problem": msg}])


def unregistered(name: str) -> EventRejected:
    msg = (
        f"unknown event type {name!r}: it is not one of Herald's ({', '.join(sorted(CATALOGUE))}) and "
        f"this tenant has not registered it: register it with POST /v1/event-types on the pipeline"
    )
    return EventRejected(422, "unknown_event_type", msg, [{"field": "type", "problem": msg}])


def tenant_event(
    body: dict[str, Any], tenant_id: uuid.UUID, name: str, data: Any, schema: dict[str, Any]
) -> CloudEvent[TenantEvent]:
    """The event as ``tenant.event.v1``, stamped with the caller's tenant; ``EventRejected`` (422)
    naming each field when the envelope or the data does not match (``data.customer.phone``)."""
    if not isinstance(data, dict):
        msg = f"data of a {name} event is a JSON object matching the type's schema"
        raise EventRejected(422, "invalid_event", msg, [{"field": "data", "problem": msg}])
    try:
        envelope = CloudEvent[dict[str, Any]].model_validate(  # type: ignore[type-var]
            {**body, "type": TenantEvent.type_name(), "tenantid": str(tenant_id), "data": {}}
        )
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "problem": e["msg"]} for e in exc.errors()
        ]
        text = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
        raise EventRejected(422, "invalid_event", f"not a CloudEvent: {text}", details) from exc
    problems = validate(schema, data)
    if problems:
        raise EventRejected(
            422,
            "invalid_event",
            f"event does not match {name}: {summary(problems)}",
            [p.as_detail() for p in problems],
        )
    return CloudEvent[TenantEvent](
        **envelope.model_dump(exclude={"data"}), data=TenantEvent(name=name, data=data)
    )


async def check_tenant_event(
    directory: EventTypeDirectory, body: dict[str, Any], tenant_id: uuid.UUID, authorization: str
) -> CloudEvent[TenantEvent] | None:
    """The posted ``body`` as a checked ``tenant.event.v1`` when its type is a tenant's own, None
    when it is Herald's (``validate_inbound_event`` takes it). ``EventRejected``: 422 for a type
    the tenant has not registered or data that does not match (naming the field), 403 for another
    tenant's ``tenantid``, 503 when the pipeline cannot say (nothing is stored)."""
    found = tenant_type_of(body)
    if found is None:
        return None
    name, data = found
    stamp_tenant(body, tenant_id)
    try:
        schema = await directory.schema(tenant_id, name, authorization)
    except UnregisteredEventType:
        raise unregistered(name) from None
    except PipelineUnavailable as exc:
        raise EventRejected(
            503,
            "unavailable",
            f"the pipeline could not be reached to check event type {name!r} ({exc}); nothing was "
            "stored, retry",
        ) from exc
    return tenant_event(body, tenant_id, name, data, schema)
