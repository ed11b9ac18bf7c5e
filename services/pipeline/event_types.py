"""Tenant event types: a name and a JSON Schema a tenant registers, so that another system (a
ticketing app, a CRM) can drive Herald with its own events and no code change.

What lives here:

- the tables (``event_types``: one current schema per tenant and name, replaced as a whole with a
  new ``version``; ``tenant_events``: every tenant event the pipeline received or refused, with why);
- the pure checks, re-exported from ``event_schema`` (which ingest imports too): ``check_name``
  (no collision with Herald's own types), ``check_schema`` (JSON Schema draft 2020-12,
  size-limited) and ``validate`` (data against a schema, errors naming the field path);
- ``schema_for(conn, tenant_id, name)``: the schema the rules engineer's code imports;
- the consumer of ``tenant.event.v1`` (``receive``): the same schema check for what arrives on the
  broker, a dead letter with the reason for what does not match, and the rules hook.

Invariants: a tenant only ever sees and validates against its own types; a schema stored here has
passed ``check_schema``; an event recorded as ``received`` matched the schema in force then.
"""

from __future__ import annotations

import importlib
import importlib.util
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from faststream.rabbit.annotations import RabbitMessage
from prometheus_client import Counter
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.pipeline.models import metadata
from shared.db import UnitOfWork
from shared.event_schema import (
    MAX_SCHEMA_BYTES,
    Problem,
    check_name,
    check_schema,
    summary,
    validate,
)
from shared.events import CloudEvent, TenantEvent
from shared.logging import get_logger
from shared.service import ServiceRuntime
from shared.topology import DLX, EVENTS, subscription

log = get_logger(__name__)

__all__ = [
    "MAX_SCHEMA_BYTES",
    "Problem",
    "check_name",
    "check_schema",
    "schema_for",
    "subscribe",
    "summary",
    "validate",
]

RECEIVED = Counter("herald_pipeline_tenant_events_total", "Tenant events the pipeline consumed", ["outcome"])

event_types = sa.Table(
    "event_types",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("name", sa.Text(), primary_key=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("schema", pg.JSONB(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
)

tenant_events = sa.Table(
    "tenant_events",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tenant_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("event_key", sa.Text(), nullable=False),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("data", pg.JSONB(), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    sa.UniqueConstraint("tenant_id", "event_key", name="uq_tenant_events_key"),
    sa.Index("ix_tenant_events_name", "tenant_id", "name", "received_at"),
    #: the retention prune's range scan (services/pipeline/retention.py)
    sa.Index("ix_tenant_events_received_at", "received_at"),
)


# --- SQL ---------------------------------------------------------------------------------------


async def schema_for(conn: AsyncConnection, tenant_id: uuid.UUID, name: str) -> dict[str, Any] | None:
    """The JSON Schema of the tenant's event type ``name``, or None when the tenant registered none
    by that name (another tenant's type is None too)."""
    q = sa.select(event_types.c.schema).where(
        event_types.c.tenant_id == tenant_id, event_types.c.name == name
    )
    return (await conn.execute(q)).scalar_one_or_none()


async def get_type(conn: AsyncConnection, tenant_id: uuid.UUID, name: str) -> Row[Any] | None:
    q = sa.select(event_types).where(event_types.c.tenant_id == tenant_id, event_types.c.name == name)
    return (await conn.execute(q)).first()


async def list_types(conn: AsyncConnection, tenant_id: uuid.UUID) -> list[Row[Any]]:
    q = sa.select(event_types).where(event_types.c.tenant_id == tenant_id).order_by(event_types.c.name)
    return list((await conn.execute(q)).all())


async def insert_type(
    conn: AsyncConnection, tenant_id: uuid.UUID, name: str, schema: dict[str, Any], description: str | None
) -> Row[Any] | None:
    """The new type at version 1, or None when the tenant already has one by that name."""
    stmt = (
        pg.insert(event_types)
        .values(tenant_id=tenant_id, name=name, version=1, schema=schema, description=description)
        .on_conflict_do_nothing()
        .returning(*event_types.c)
    )
    return (await conn.execute(stmt)).first()


async def replace_type(
    conn: AsyncConnection, tenant_id: uuid.UUID, name: str, schema: dict[str, Any], description: str | None
) -> Row[Any]:
    """Create the type, or replace its schema with the next version."""
    stmt = pg.insert(event_types).values(
        tenant_id=tenant_id, name=name, version=1, schema=schema, description=description
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[event_types.c.tenant_id, event_types.c.name],
        set_={
            "schema": stmt.excluded.schema,
            "description": stmt.excluded.description,
            "version": event_types.c.version + 1,
            "updated_at": sa.func.now(),
        },
    ).returning(*event_types.c)
    return (await conn.execute(stmt)).one()


async def delete_type(conn: AsyncConnection, tenant_id: uuid.UUID, name: str) -> bool:
    res = await conn.execute(
        sa.delete(event_types).where(event_types.c.tenant_id == tenant_id, event_types.c.name == name)
    )
    return bool(res.rowcount)


async def record_event(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    name: str,
    event_key: str,
    status: str,
    data: Any,
    reason: str | None = None,
) -> bool:
    """Record a tenant event once per (tenant, source:id); False when it was already recorded."""
    stmt = (
        pg.insert(tenant_events)
        .values(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            name=name,
            event_key=event_key,
            status=status,
            reason=reason,
            data=data,
        )
        .on_conflict_do_nothing(constraint="uq_tenant_events_key")
        .returning(tenant_events.c.id)
    )
    return (await conn.execute(stmt)).first() is not None


async def list_events(conn: AsyncConnection, tenant_id: uuid.UUID, name: str, limit: int) -> list[Row[Any]]:
    q = (
        sa.select(tenant_events)
        .where(tenant_events.c.tenant_id == tenant_id, tenant_events.c.name == name)
        .order_by(tenant_events.c.received_at.desc())
        .limit(limit)
    )
    return list((await conn.execute(q)).all())


# --- the broker path ---------------------------------------------------------------------------

#: ``async def on_tenant_event(runtime, uow, event) -> None`` in ``services/pipeline/rules.py``
RulesHook = Callable[[ServiceRuntime, UnitOfWork, CloudEvent[TenantEvent]], Awaitable[None]]
_NO_HOOK = object()
_hook: Any = _NO_HOOK


def rules_hook() -> RulesHook | None:
    """``services.pipeline.rules.on_tenant_event`` when the rules module exists and defines it.

    The contract with the rules (another module, built separately): the consumer calls
    ``await on_tenant_event(runtime, uow, event)`` for every tenant event that matched its type's schema,
    inside the unit of work that records it, before the commit; ``event.data.name`` is the type
    (``ticket.updated``), ``event.data.data`` the payload, ``event.tenantid`` the tenant. What the
    hook adds to ``uow`` (message requests in the outbox, its decisions) commits with the record,
    once per event; an exception rolls both back and the broker redelivers the event.
    """
    global _hook
    if _hook is _NO_HOOK:
        found = None
        if importlib.util.find_spec("services.pipeline.rules") is not None:
            found = getattr(importlib.import_module("services.pipeline.rules"), "on_tenant_event", None)
        _hook = found
    return _hook  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Outcome:
    """What the consumer did: ``received`` (recorded, and given to the rules when they exist),
    ``duplicate`` (already recorded), or ``rejected`` with the reason the event is dead-lettered."""

    status: str
    reason: str | None = None


async def receive(runtime: ServiceRuntime, event: CloudEvent[TenantEvent]) -> Outcome:
    """Check a tenant event against its tenant's schema and record it; the caller dead-letters a
    ``rejected`` one with ``Outcome.reason``. Idempotent per (tenant, source, id)."""
    key = f"{event.source}:{event.id}"
    name = event.data.name

    async def apply() -> Outcome:
        async with runtime.uow() as uow:
            schema = await schema_for(uow.conn, event.tenantid, name)
            if schema is None:
                reason = (
                    f"tenant {event.tenantid} has no event type {name!r}: register it with "
                    "POST /v1/event-types on the pipeline, then publish again"
                )
                outcome = Outcome("rejected", reason)
            else:
                problems = validate(schema, event.data.data)
                outcome = (
                    Outcome("rejected", f"data does not match event type {name!r}: {summary(problems)}")
                    if problems
                    else Outcome("received")
                )
            if not await record_event(
                uow.conn, event.tenantid, name, key, outcome.status, event.data.data, outcome.reason
            ):
                return Outcome("duplicate")
            hook = rules_hook() if outcome.status == "received" else None
            if hook is not None:
                await hook(runtime, uow, event)
            await uow.commit()
            return outcome

    outcome = await runtime.with_db("receive a tenant event", apply)
    RECEIVED.labels(outcome.status).inc()
    if outcome.status == "rejected":
        log.warning("tenant event rejected", tenant=str(event.tenantid), type=name, reason=outcome.reason)
    return outcome


REASON_HEADER = "x-herald-reason"


def subscribe(runtime: ServiceRuntime) -> None:
    """The pipeline's consumer of ``tenant.event.v1``: what ingest accepted and what other systems
    publish on the broker themselves. An event that does not match its tenant's schema (or names
    a type the tenant has not registered) is recorded as ``rejected`` and dead-lettered to
    ``pipeline.dead-letters`` with the reason, naming the field, in the ``x-herald-reason`` header;
    an envelope that cannot be parsed at all is rejected by FastStream onto the same queue."""
    sub = subscription("pipeline", TenantEvent)

    @runtime.broker.subscriber(
        sub.queue,
        EVENTS,
        title=sub.queue_name,
        description="An event of a tenant's own type: checked against its JSON Schema, recorded, "
        "and given to the rules.",
    )
    async def on_tenant_event(event: CloudEvent[TenantEvent], message: RabbitMessage) -> None:
        outcome = await receive(runtime, event)
        if outcome.status != "rejected":
            return
        await runtime.broker.publish(
            message.body,
            exchange=DLX,
            routing_key=sub.queue_name,
            persist=True,
            content_type="application/json",
            message_id=event.id,
            headers={REASON_HEADER: outcome.reason or "rejected", "x-herald-queue": sub.queue_name},
        )
