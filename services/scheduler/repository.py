"""Queries of the scheduler's own schema. Never commits: the unit of work does."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.models import cancelled_events as ce
from services.scheduler.models import event_reminder_policies as erp
from services.scheduler.models import occurrences as occ
from services.scheduler.models import pacing_schedules as ps
from services.scheduler.models import reminder_policies as rp
from services.scheduler.models import reminders as rm
from services.scheduler.models import scheduled_messages as sm
from shared import tracing

#: the NOTIFY channel that wakes the claim loop when something new may be due
DUE_CHANNEL = "scheduler_due"


async def notify_due(conn: AsyncConnection) -> None:
    """Wake every replica's claim loop at commit: a row may now be due sooner than it sleeps."""
    await conn.exec_driver_sql(f"NOTIFY {DUE_CHANNEL}")


# --- scheduled messages ----------------------------------------------------------------------


def _traced(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the active span's traceparent (None with tracing off), for the firing to link."""
    return values if "traceparent" in values else {**values, "traceparent": tracing.traceparent()}


async def insert(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(sa.insert(sm).values(**_traced(values)))


async def get(
    conn: AsyncConnection, tenant_id: uuid.UUID, schedule_id: uuid.UUID, *, lock: bool = False
) -> Row[Any] | None:
    q = sa.select(sm).where(sm.c.tenant_id == tenant_id, sm.c.id == schedule_id)
    if lock:
        q = q.with_for_update()
    return (await conn.execute(q)).first()


async def list_for_tenant(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    *,
    status: str | None,
    limit: int,
    recipient_hash: str | None = None,
) -> list[Row[Any]]:
    q = sa.select(sm).where(sm.c.tenant_id == tenant_id)
    if status:
        q = q.where(sm.c.status == status)
    if recipient_hash:
        q = q.where(sm.c.recipient_hash == recipient_hash)
    return list((await conn.execute(q.order_by(sm.c.send_at).limit(limit))).all())


async def update(conn: AsyncConnection, schedule_id: uuid.UUID, **values: Any) -> None:
    await conn.execute(sa.update(sm).where(sm.c.id == schedule_id).values(**values))


async def claim_due(conn: AsyncConnection, now: datetime, limit: int) -> list[Row[Any]]:
    """Lock due rows; rows another replica holds are skipped, never waited for."""
    return list(
        (
            await conn.execute(
                sa.select(sm)
                .where(sm.c.status == "pending", sm.c.send_at <= now)
                .order_by(sm.c.send_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
    )


#: every claimed schedule moved in ONE statement over arrays: an ``executemany`` of 2,000 UPDATEs
#: (and as many history INSERTs) was half of a 100,000-occurrence burst's claim time
_ADVANCE = f"""
UPDATE {sm.fullname} AS s SET
    send_at = u.send_at, status = u.status, message_id = u.message_id,
    published_at = coalesce(u.published_at, s.published_at),
    fired_count = s.fired_count + u.fired, missed_count = s.missed_count + u.missed,
    updated_at = u.now
FROM unnest(CAST(:ids AS uuid[]), CAST(:send_ats AS timestamptz[]), CAST(:statuses AS text[]),
            CAST(:message_ids AS uuid[]), CAST(:published AS timestamptz[]), CAST(:fired AS int[]),
            CAST(:missed AS int[]), CAST(:nows AS timestamptz[]))
     AS u(id, send_at, status, message_id, published_at, fired, missed, now)
WHERE s.id = u.id
"""

_RECORD = f"""
INSERT INTO {occ.fullname} (message_id, schedule_id, tenant_id, due_at, status, fired_at)
SELECT * FROM unnest(CAST(:message_ids AS uuid[]), CAST(:schedule_ids AS uuid[]),
                     CAST(:tenant_ids AS uuid[]), CAST(:due_ats AS timestamptz[]),
                     CAST(:statuses AS text[]), CAST(:fired_ats AS timestamptz[]))
ON CONFLICT (message_id) DO NOTHING
"""


def _columns(rows: list[dict[str, Any]], keys: dict[str, str]) -> dict[str, list[Any]]:
    return {param: [row[key] for row in rows] for param, key in keys.items()}


async def advance(conn: AsyncConnection, updates: list[dict[str, Any]]) -> None:
    """Move claimed schedules to their next occurrence (or finish them), one statement for all.
    Each update: ``b_id``, ``b_send_at``, ``b_status``, ``b_message_id``, ``b_published_at`` (kept
    when None), ``b_fired`` and ``b_missed`` (added to the counters), ``b_now``."""
    if not updates:
        return
    params = _columns(
        updates,
        {
            "ids": "b_id",
            "send_ats": "b_send_at",
            "statuses": "b_status",
            "message_ids": "b_message_id",
            "published": "b_published_at",
            "fired": "b_fired",
            "missed": "b_missed",
            "nows": "b_now",
        },
    )
    await conn.execute(sa.text(_ADVANCE), params)


async def record_occurrences(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """History rows, one statement for all; an occurrence already recorded is left as it is."""
    if rows:
        params = _columns(
            rows,
            {
                "message_ids": "message_id",
                "schedule_ids": "schedule_id",
                "tenant_ids": "tenant_id",
                "due_ats": "due_at",
                "statuses": "status",
                "fired_ats": "fired_at",
            },
        )
        await conn.execute(sa.text(_RECORD), params)


async def history(conn: AsyncConnection, schedule_id: uuid.UUID, limit: int = 50) -> list[Row[Any]]:
    q = sa.select(occ).where(occ.c.schedule_id == schedule_id).order_by(occ.c.due_at.desc()).limit(limit)
    return list((await conn.execute(q)).all())


async def next_due(conn: AsyncConnection) -> datetime | None:
    """The earliest pending item of any kind: the claim loop sleeps until then."""
    q = sa.select(
        sa.func.least(
            sa.select(sa.func.min(sm.c.send_at)).where(sm.c.status == "pending").scalar_subquery(),
            sa.select(sa.func.min(rm.c.due_at)).where(rm.c.status == "pending").scalar_subquery(),
            sa.select(sa.func.min(ps.c.next_at)).where(ps.c.active).scalar_subquery(),
        )
    )
    return (await conn.execute(q)).scalar_one_or_none()


# --- delivery status -------------------------------------------------------------------------


async def delivery_targets(conn: AsyncConnection, message_id: uuid.UUID) -> list[tuple[sa.Table, Row[Any]]]:
    out: list[tuple[sa.Table, Row[Any]]] = []
    for table, key in ((occ, occ.c.message_id), (rm, rm.c.message_id)):
        row = (
            await conn.execute(
                sa.select(table.c.delivery_status, table.c.delivery_updated_at)
                .where(key == message_id)
                .with_for_update()
            )
        ).first()
        if row is not None:
            out.append((table, row))
    return out


async def set_delivery(
    conn: AsyncConnection,
    table: sa.Table,
    message_id: uuid.UUID,
    status: str,
    reason: str | None,
    at: datetime,
) -> None:
    await conn.execute(
        sa.update(table)
        .where(table.c.message_id == message_id)
        .values(delivery_status=status, delivery_reason=reason, delivery_updated_at=at)
    )


# --- reminders --------------------------------------------------------------------------------


async def get_policy(conn: AsyncConnection, tenant_id: uuid.UUID) -> Row[Any] | None:
    return (await conn.execute(sa.select(rp).where(rp.c.tenant_id == tenant_id))).first()


async def get_event_policy(conn: AsyncConnection, tenant_id: uuid.UUID, event_id: str) -> Row[Any] | None:
    return (
        await conn.execute(sa.select(erp).where(erp.c.tenant_id == tenant_id, erp.c.event_id == event_id))
    ).first()


async def put_event_policy(
    conn: AsyncConnection, tenant_id: uuid.UUID, event_id: str, reminders: list[dict[str, Any]], now: datetime
) -> None:
    stmt = pg.insert(erp).values(tenant_id=tenant_id, event_id=event_id, reminders=reminders, updated_at=now)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["tenant_id", "event_id"], set_={"reminders": reminders, "updated_at": now}
        )
    )


async def delete_event_policy(conn: AsyncConnection, tenant_id: uuid.UUID, event_id: str) -> bool:
    result = await conn.execute(
        sa.delete(erp).where(erp.c.tenant_id == tenant_id, erp.c.event_id == event_id)
    )
    return bool(result.rowcount)


async def put_policy(
    conn: AsyncConnection, tenant_id: uuid.UUID, reminders: list[dict[str, Any]], now: datetime
) -> None:
    stmt = pg.insert(rp).values(tenant_id=tenant_id, reminders=reminders, updated_at=now)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["tenant_id"], set_={"reminders": reminders, "updated_at": now}
        )
    )


async def delete_policy(conn: AsyncConnection, tenant_id: uuid.UUID) -> None:
    await conn.execute(sa.delete(rp).where(rp.c.tenant_id == tenant_id))


async def reminders_for_event(conn: AsyncConnection, tenant_id: uuid.UUID, event_id: str) -> list[Row[Any]]:
    q = sa.select(rm).where(rm.c.tenant_id == tenant_id, rm.c.event_id == event_id).with_for_update()
    return list((await conn.execute(q)).all())


async def insert_reminders(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(sa.insert(rm), [_traced(r) for r in rows])


async def update_reminder(conn: AsyncConnection, reminder_id: uuid.UUID, **values: Any) -> None:
    await conn.execute(sa.update(rm).where(rm.c.id == reminder_id).values(**values))


async def cancel_pending_reminders(
    conn: AsyncConnection, tenant_id: uuid.UUID, event_id: str, now: datetime, event_time: datetime
) -> int:
    result = await conn.execute(
        sa.update(rm)
        .where(rm.c.tenant_id == tenant_id, rm.c.event_id == event_id, rm.c.status == "pending")
        .values(status="cancelled", updated_at=now, event_time=event_time)
    )
    return result.rowcount or 0


async def remember_cancellation(
    conn: AsyncConnection, tenant_id: uuid.UUID, event_id: str, event_time: datetime, now: datetime
) -> None:
    stmt = pg.insert(ce).values(
        tenant_id=tenant_id, event_id=event_id, event_time=event_time, cancelled_at=now
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[ce.c.tenant_id, ce.c.event_id],
            set_={
                "event_time": sa.func.greatest(ce.c.event_time, stmt.excluded.event_time),
                "cancelled_at": stmt.excluded.cancelled_at,
            },
        )
    )


async def cancellation_time(conn: AsyncConnection, tenant_id: uuid.UUID, event_id: str) -> datetime | None:
    return (
        await conn.execute(
            sa.select(ce.c.event_time).where(ce.c.tenant_id == tenant_id, ce.c.event_id == event_id)
        )
    ).scalar()


async def list_reminders(
    conn: AsyncConnection, tenant_id: uuid.UUID, *, event_id: str | None, status: str | None, limit: int
) -> list[Row[Any]]:
    q = sa.select(rm).where(rm.c.tenant_id == tenant_id)
    if event_id:
        q = q.where(rm.c.event_id == event_id)
    if status:
        q = q.where(rm.c.status == status)
    return list((await conn.execute(q.order_by(rm.c.due_at, rm.c.id).limit(limit))).all())


async def claim_due_reminders(conn: AsyncConnection, now: datetime, limit: int) -> list[Row[Any]]:
    q = (
        sa.select(rm)
        .where(rm.c.status == "pending", rm.c.due_at <= now)
        .order_by(rm.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await conn.execute(q)).all())


async def finish_reminders(conn: AsyncConnection, updates: list[dict[str, Any]]) -> None:
    if updates:
        stmt = (
            sa.update(rm)
            .where(rm.c.id == sa.bindparam("b_id"))
            .values(
                status=sa.bindparam("b_status"),
                published_at=sa.bindparam("b_published_at"),
                updated_at=sa.bindparam("b_now"),
            )
        )
        await conn.execute(stmt, updates)


# --- pacing -----------------------------------------------------------------------------------


async def insert_pacing(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(sa.insert(ps).values(**_traced(values)))


async def get_pacing(
    conn: AsyncConnection, tenant_id: uuid.UUID, pacing_id: uuid.UUID, *, lock: bool = False
) -> Row[Any] | None:
    q = sa.select(ps).where(ps.c.tenant_id == tenant_id, ps.c.id == pacing_id)
    if lock:
        q = q.with_for_update()
    return (await conn.execute(q)).first()


async def list_pacing(
    conn: AsyncConnection, tenant_id: uuid.UUID, user_id: str | None, limit: int
) -> list[Row[Any]]:
    q = sa.select(ps).where(ps.c.tenant_id == tenant_id)
    if user_id:
        q = q.where(ps.c.user_id == user_id)
    return list((await conn.execute(q.order_by(ps.c.created_at).limit(limit))).all())


async def update_pacing(conn: AsyncConnection, pacing_id: uuid.UUID, **values: Any) -> None:
    await conn.execute(sa.update(ps).where(ps.c.id == pacing_id).values(**values))


async def delete_pacing(conn: AsyncConnection, tenant_id: uuid.UUID, pacing_id: uuid.UUID) -> bool:
    result = await conn.execute(sa.delete(ps).where(ps.c.tenant_id == tenant_id, ps.c.id == pacing_id))
    return bool(result.rowcount)


async def claim_due_pacing(conn: AsyncConnection, now: datetime, limit: int) -> list[Row[Any]]:
    q = (
        sa.select(ps)
        .where(ps.c.active, ps.c.next_at <= now)
        .order_by(ps.c.next_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await conn.execute(q)).all())


async def advance_pacing(conn: AsyncConnection, updates: list[dict[str, Any]]) -> None:
    if updates:
        stmt = (
            sa.update(ps)
            .where(ps.c.id == sa.bindparam("b_id"))
            .values(
                next_at=sa.bindparam("b_next_at"),
                last_slot_at=sa.func.coalesce(
                    sa.bindparam("b_slot", type_=ps.c.last_slot_at.type), ps.c.last_slot_at
                ),
                updated_at=sa.bindparam("b_now"),
            )
        )
        await conn.execute(stmt, updates)
