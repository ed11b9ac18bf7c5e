"""Queries of messages: acceptance, status changes (only through services.sender.status), reads, delivery statuses waiting for their send, dead letters."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.sender.models import (
    message_history,
    messages,
    pair_pacing,
    pending_statuses,
    sandbox_messages,
)

#: LISTEN/NOTIFY channel: a message became due (a new request, a retry, a resumed channel)
DUE_CHANNEL = "sender_due"
NIL = uuid.UUID(int=0)


async def notify_due(conn: AsyncConnection) -> None:
    """Wake every sender's claim loop when the transaction commits."""
    await conn.execute(sa.select(sa.func.pg_notify(DUE_CHANNEL, "")))


# --- status changes (written only through services.sender.status.record) -----------------------


async def set_status_many(
    conn: AsyncConnection, ids: list[uuid.UUID], previous: str | None, values: dict[str, Any]
) -> None:
    """The same new values on every message of ``ids`` still in status ``previous``."""
    await conn.execute(
        sa.update(messages).where(messages.c.id.in_(ids), messages.c.status == previous).values(**values)
    )


async def set_status_each(
    conn: AsyncConnection, rows: list[tuple[uuid.UUID, str | None, dict[str, Any]]]
) -> None:
    """Per-message values (same columns) on messages still in their previous status: one statement."""
    if len(rows) == 1:
        message_id, previous, values = rows[0]
        await set_status_many(conn, [message_id], previous, values)
        return
    names = sorted(rows[0][2])
    stmt = (
        sa.update(messages)
        .where(messages.c.id == sa.bindparam("_id"), messages.c.status == sa.bindparam("_prev"))
        .values({n: sa.bindparam(f"v_{n}") for n in names})
    )
    await conn.execute(stmt, [{"_id": i, "_prev": p, **{f"v_{n}": v[n] for n in names}} for i, p, v in rows])


async def insert_message(conn: AsyncConnection, values: dict[str, Any]) -> bool:
    """Insert unless the id or the tenant's idempotency key exists; True if inserted."""
    stmt = pg.insert(messages).values(**values).on_conflict_do_nothing().returning(messages.c.id)
    return (await conn.execute(stmt)).first() is not None


async def insert_messages(conn: AsyncConnection, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
    """Insert many; the ids actually inserted (an existing id or idempotency key is skipped)."""
    if not rows:
        return set()
    stmt = pg.insert(messages).values(rows).on_conflict_do_nothing().returning(messages.c.id)
    return {r.id for r in await conn.execute(stmt)}


async def add_histories(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await conn.execute(sa.insert(message_history), rows)


async def find_by_idempotency_key(conn: AsyncConnection, tenant_id: uuid.UUID, key: str) -> Row[Any] | None:
    return (
        await conn.execute(
            sa.select(messages).where(messages.c.tenant_id == tenant_id, messages.c.idempotency_key == key)
        )
    ).first()


async def get_message(conn: AsyncConnection, tenant_id: uuid.UUID, message_id: uuid.UUID) -> Row[Any] | None:
    return (
        await conn.execute(
            sa.select(messages).where(messages.c.tenant_id == tenant_id, messages.c.id == message_id)
        )
    ).first()


async def lock_message(conn: AsyncConnection, message_id: uuid.UUID) -> Row[Any] | None:
    return (
        await conn.execute(sa.select(messages).where(messages.c.id == message_id).with_for_update())
    ).first()


async def pair_next_at(conn: AsyncConnection, channel_id: uuid.UUID, recipient_hash: str) -> datetime | None:
    """When the channel may next send to this recipient (the pair interval), if it has sent to them."""
    return (
        await conn.execute(
            sa.select(pair_pacing.c.next_at).where(
                pair_pacing.c.channel_id == channel_id, pair_pacing.c.recipient_hash == recipient_hash
            )
        )
    ).scalar()


async def history(conn: AsyncConnection, message_id: uuid.UUID) -> list[Row[Any]]:
    return list(
        (
            await conn.execute(
                sa.select(message_history.c.status, message_history.c.reason, message_history.c.at)
                .where(message_history.c.message_id == message_id)
                .order_by(message_history.c.id)
            )
        ).all()
    )


async def list_messages(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    *,
    status: str | None,
    recipient_hash: str | None,
    channel_id: uuid.UUID | None = None,
    dead_letter: bool | None = None,
    created_before: datetime | None,
    created_after: datetime | None,
    limit: int,
) -> list[Row[Any]]:
    q = sa.select(messages).where(messages.c.tenant_id == tenant_id)
    if status:
        q = q.where(messages.c.status == status)
    if recipient_hash:
        q = q.where(messages.c.recipient_hash == recipient_hash)
    if channel_id:
        q = q.where(messages.c.channel_id == channel_id)
    if dead_letter is not None:
        q = q.where(messages.c.dead_letter.is_(dead_letter))
    if created_before:
        q = q.where(messages.c.created_at < created_before)
    if created_after:
        q = q.where(messages.c.created_at >= created_after)
    return list((await conn.execute(q.order_by(messages.c.created_at.desc()).limit(limit))).all())


async def orphaned_sending(conn: AsyncConnection, cutoff: datetime, limit: int) -> list[Row[Any]]:
    """Messages stuck in ``sending`` since before ``cutoff``, locked (``SKIP LOCKED``: two
    replicas sweeping at once split the orphans instead of reconciling one twice)."""
    return list(
        (
            await conn.execute(
                sa.select(messages)
                .where(messages.c.status == "sending", messages.c.sending_started_at < cutoff)
                .order_by(messages.c.sending_started_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
    )


async def list_sandbox(
    conn: AsyncConnection, tenant_id: uuid.UUID, *, message_id: uuid.UUID | None, limit: int
) -> list[Row[Any]]:
    q = sa.select(sandbox_messages).where(sandbox_messages.c.tenant_id == tenant_id)
    if message_id:
        q = q.where(sandbox_messages.c.message_id == message_id)
    return list((await conn.execute(q.order_by(sandbox_messages.c.id.desc()).limit(limit))).all())


# --- delivery statuses -----------------------------------------------------------------------------


async def lock_by_provider_message_id(conn: AsyncConnection, provider_message_id: str) -> Row[Any] | None:
    return (
        await conn.execute(
            sa.select(messages).where(messages.c.provider_message_id == provider_message_id).with_for_update()
        )
    ).first()


async def pending_for(conn: AsyncConnection, provider_message_ids: list[str]) -> list[Row[Any]]:
    return list(
        (
            await conn.execute(
                sa.select(pending_statuses).where(
                    pending_statuses.c.provider_message_id.in_(provider_message_ids)
                )
            )
        ).all()
    )


async def keep_pending(conn: AsyncConnection, **values: Any) -> None:
    """A status for a provider id no message has yet (the send is not recorded yet)."""
    await conn.execute(sa.insert(pending_statuses).values(**values))


async def drop_pending(conn: AsyncConnection, pending_id: int) -> None:
    await conn.execute(sa.delete(pending_statuses).where(pending_statuses.c.id == pending_id))


# --- dead letters --------------------------------------------------------------------------------------


async def dead_letter_ids(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    *,
    channel_id: uuid.UUID | None,
    error_code: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    limit: int,
) -> list[uuid.UUID]:
    q = sa.select(messages.c.id).where(messages.c.tenant_id == tenant_id, messages.c.dead_letter.is_(True))
    if channel_id:
        q = q.where(messages.c.channel_id == channel_id)
    if error_code:
        q = q.where(messages.c.error_code == error_code)
    if created_after:
        q = q.where(messages.c.created_at >= created_after)
    if created_before:
        q = q.where(messages.c.created_at < created_before)
    return list((await conn.execute(q.limit(limit))).scalars())


async def lock_dead_letters(
    conn: AsyncConnection, tenant_id: uuid.UUID, ids: list[uuid.UUID]
) -> list[Row[Any]]:
    return list(
        (
            await conn.execute(
                sa.select(messages)
                .where(
                    messages.c.tenant_id == tenant_id,
                    messages.c.id.in_(ids),
                    messages.c.dead_letter.is_(True),
                )
                .with_for_update(skip_locked=True)
            )
        ).all()
    )


async def insert_queued(
    conn: AsyncConnection,
    row: dict[str, Any],
    history: dict[str, Any],
    event: dict[str, Any],
    *,
    outbox: sa.Table,
    outbox_channel: str,
) -> bool:
    """Accept one message in one statement: the row (unless its id or the tenant's idempotency
    key exists), its history line, its outbox event, and the NOTIFYs that wake the dispatchers
    and the relay. True if inserted; then all of it was written, else none of it.

    On a connection in autocommit the statement is its own transaction: one round trip instead
    of eight (BEGIN, insert, notify, history, outbox, notify, COMMIT). The history and outbox
    rows select from the inserted row, so a conflict writes neither, and the NOTIFYs are
    delivered at its commit, when the rows are visible."""
    m = pg.insert(messages).values(**row).on_conflict_do_nothing().returning(messages.c.id).cte("m")
    h = (
        sa.insert(message_history)
        .from_select(
            ["message_id", "status", "reason", "at"],
            sa.select(
                m.c.id,
                sa.literal(history["status"], sa.Text),
                sa.literal(history["reason"], sa.Text),
                sa.literal(history["at"], sa.DateTime(timezone=True)),
            ),
        )
        .cte("h")
    )
    o = (
        sa.insert(outbox)
        .from_select(
            ["event_id", "routing_key", "body", "priority"],
            sa.select(
                sa.literal(event["event_id"], sa.Text),
                sa.literal(event["routing_key"], sa.Text),
                sa.literal(event["body"], sa.LargeBinary),
                sa.literal(event["priority"], sa.SmallInteger),
            ).select_from(m),
        )
        .cte("o")
    )
    stmt = sa.select(
        m.c.id, sa.func.pg_notify(DUE_CHANNEL, ""), sa.func.pg_notify(outbox_channel, "")
    ).add_cte(h, o)
    return (await conn.execute(stmt)).first() is not None
