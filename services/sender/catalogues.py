"""The catalogues admission reads: Meta's template statuses, opt-outs and 24-hour windows.

Each is written from events (``template.status_changed``, ``contact.opted_out``/``opted_in``,
``inbound.received``), from the API, or from what a provider's refusal says; the claim reads
them in bulk (services.sender.repository). The breaker lives on the channel row (dispatch)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from services.sender import repository as repo
from services.sender.context import Sender
from services.sender.repository import template_catalogue as trepo
from shared.events import (
    CloudEvent,
    ContactOptedIn,
    ContactOptedOut,
    InboundReceived,
    TemplateStatusChanged,
)

# --- templates ------------------------------------------------------------------------------------


async def record_template_status(
    conn: Any, tenant_id: uuid.UUID, name: str, language: str, status: str, reason: str | None, at: datetime
) -> None:
    """Record Meta's word on a template; an older word arriving late changes nothing."""
    await repo.upsert_template(conn, tenant_id, name, language, status.upper(), reason, at)
    await trepo.set_status_by_name(conn, tenant_id, name, language, status.upper(), reason, at)


async def on_template_status(sender: Sender, event: CloudEvent[TemplateStatusChanged]) -> None:
    data = event.data

    async def write() -> None:
        async with sender.runtime.engine.begin() as conn:
            await record_template_status(
                conn, event.tenantid, data.template_name, data.language, data.status, data.reason, data.at
            )

    await sender.runtime.with_db("template status", write)


# --- 24-hour windows ----------------------------------------------------------------------------


async def on_inbound(sender: Sender, event: CloudEvent[InboundReceived]) -> None:
    """The recipient wrote: their 24-hour customer-service window (re)opens."""
    d = event.data

    async def write() -> None:
        async with sender.runtime.engine.begin() as conn:
            await repo.open_window(
                conn, event.tenantid, sender.hash_phone(d.from_phone), d.channel_id or repo.NIL, d.received_at
            )

    await sender.runtime.with_db("open window", write)


# --- opt-outs -----------------------------------------------------------------------------------


async def record_opt_out(
    sender: Sender, conn: Any, tenant_id: uuid.UUID, phone: str, reason: str | None, at: datetime
) -> None:
    await repo.upsert_opt_out(
        conn, tenant_id, sender.hash_phone(phone), sender.runtime.secrets.encrypt(phone), reason, at
    )


async def opt_out(sender: Sender, tenant_id: uuid.UUID, phone: str, reason: str | None, at: datetime) -> None:
    async def write() -> None:
        async with sender.runtime.engine.begin() as conn:
            await record_opt_out(sender, conn, tenant_id, phone, reason, at)

    await sender.runtime.with_db("opt out", write)


async def opt_in(sender: Sender, tenant_id: uuid.UUID, phone: str, at: datetime | None = None) -> bool:
    async def write() -> bool:
        async with sender.runtime.engine.begin() as conn:
            return await repo.delete_opt_out(conn, tenant_id, sender.hash_phone(phone), at)

    return await sender.runtime.with_db("opt in", write)


async def on_opted_out(sender: Sender, event: CloudEvent[ContactOptedOut]) -> None:
    await opt_out(
        sender, event.tenantid, event.data.phone, event.data.reason or "contact.opted_out", event.data.at
    )


async def on_opted_in(sender: Sender, event: CloudEvent[ContactOptedIn]) -> None:
    await opt_in(sender, event.tenantid, event.data.phone, event.data.at)
