"""Queries of the sender schema. Functions take the unit of work's connection and never commit."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.sender.models import (
    channels,
    message_history,
    messages,
    opt_outs,
    pair_pacing,
    pending_statuses,
    sandbox_messages,
    templates,
    tier_recipients,
    windows,
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


# --- channels ----------------------------------------------------------------------------------


async def default_channel(conn: AsyncConnection, tenant_id: uuid.UUID) -> uuid.UUID | None:
    return (
        await conn.execute(
            sa.select(channels.c.id).where(
                channels.c.tenant_id == tenant_id, channels.c.is_default, channels.c.deleted_at.is_(None)
            )
        )
    ).scalar_one_or_none()


async def channel_exists(conn: AsyncConnection, tenant_id: uuid.UUID, channel_id: uuid.UUID) -> bool:
    return (await get_channel(conn, tenant_id, channel_id)) is not None


async def get_channel(conn: AsyncConnection, tenant_id: uuid.UUID, channel_id: uuid.UUID) -> Row[Any] | None:
    return (
        await conn.execute(
            sa.select(channels).where(
                channels.c.tenant_id == tenant_id,
                channels.c.id == channel_id,
                channels.c.deleted_at.is_(None),
            )
        )
    ).first()


async def get_channel_any(conn: AsyncConnection, channel_id: uuid.UUID) -> Row[Any] | None:
    return (await conn.execute(sa.select(channels).where(channels.c.id == channel_id))).first()


async def list_channels(conn: AsyncConnection, tenant_id: uuid.UUID) -> list[Row[Any]]:
    return list(
        (
            await conn.execute(
                sa.select(channels)
                .where(channels.c.tenant_id == tenant_id, channels.c.deleted_at.is_(None))
                .order_by(channels.c.created_at)
            )
        ).all()
    )


async def list_opt_outs(conn: AsyncConnection, tenant_id: uuid.UUID, limit: int) -> list[Row[Any]]:
    return list(
        (
            await conn.execute(
                sa.select(opt_outs)
                .where(opt_outs.c.tenant_id == tenant_id)
                .order_by(opt_outs.c.at.desc())
                .limit(limit)
            )
        ).all()
    )


async def insert_channel(conn: AsyncConnection, values: dict[str, Any], *, if_absent: bool = False) -> None:
    stmt = pg.insert(channels).values(**values)
    await conn.execute(stmt.on_conflict_do_nothing() if if_absent else stmt)


async def update_channel(conn: AsyncConnection, channel_id: uuid.UUID, **values: Any) -> None:
    await conn.execute(sa.update(channels).where(channels.c.id == channel_id).values(**values))


async def unset_other_defaults(conn: AsyncConnection, tenant_id: uuid.UUID, keep: uuid.UUID) -> None:
    await conn.execute(
        sa.update(channels)
        .where(channels.c.tenant_id == tenant_id, channels.c.id != keep, channels.c.is_default)
        .values(is_default=False)
    )


def _portfolio_peers(tenant_id: uuid.UUID, channel_id: uuid.UUID, portfolio: str) -> tuple[Any, ...]:
    return (
        channels.c.tenant_id == tenant_id,
        channels.c.portfolio == portfolio,
        channels.c.id != channel_id,
        channels.c.deleted_at.is_(None),
    )


async def set_portfolio_tier(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    channel_id: uuid.UUID,
    portfolio: str,
    tier: int | None,
    at: datetime,
) -> None:
    """The tier on every other live channel of the portfolio."""
    await conn.execute(
        sa.update(channels)
        .where(*_portfolio_peers(tenant_id, channel_id, portfolio))
        .values(tier=tier, updated_at=at)
    )


async def portfolio_tier(
    conn: AsyncConnection, tenant_id: uuid.UUID, channel_id: uuid.UUID, portfolio: str
) -> tuple[bool, int | None]:
    """(whether another live channel is in the portfolio, its tier)."""
    row = (
        await conn.execute(
            sa.select(channels.c.tier).where(*_portfolio_peers(tenant_id, channel_id, portfolio)).limit(1)
        )
    ).first()
    return (row is not None, row.tier if row is not None else None)


async def lock_queued_on_channel(conn: AsyncConnection, channel_id: uuid.UUID) -> list[Row[Any]]:
    return list(
        (
            await conn.execute(
                sa.select(messages)
                .where(messages.c.channel_id == channel_id, messages.c.status == "queued")
                .with_for_update()
            )
        ).all()
    )


# --- the claim -----------------------------------------------------------------------------------


def _has_due_messages(now: datetime) -> sa.Exists:
    """Correlated EXISTS: the channel row has a queued message whose time has come."""
    return (
        sa.select(sa.literal(1))
        .where(
            messages.c.channel_id == channels.c.id,
            messages.c.status == "queued",
            messages.c.not_before <= now,
        )
        .exists()
    )


async def lock_due_channels(conn: AsyncConnection, now: datetime, horizon: float) -> list[Row[Any]]:
    """Channels with due messages that may send now (live, not paused, breaker not cooling down,
    a slot inside the horizon), locked ``SKIP LOCKED``: each is claimed by one process at a time."""
    return list(
        (
            await conn.execute(
                sa.select(channels)
                .where(
                    channels.c.deleted_at.is_(None),
                    channels.c.paused.is_(False),
                    sa.or_(channels.c.breaker_open_until.is_(None), channels.c.breaker_open_until <= now),
                    sa.or_(
                        channels.c.next_slot.is_(None),
                        channels.c.next_slot < now + timedelta(seconds=horizon),
                    ),
                    _has_due_messages(now),
                )
                .order_by(channels.c.id)
                .with_for_update(skip_locked=True, of=channels)
            )
        ).all()
    )


async def next_due(conn: AsyncConnection, now: datetime, horizon: float) -> list[datetime]:
    """When a claim pass is next useful: the earliest future ``not_before``, and the earliest time a
    channel with due messages gets a slot inside the horizon or ends its cool-down."""
    future = (
        await conn.execute(
            sa.select(sa.func.min(messages.c.not_before)).where(
                messages.c.status == "queued", messages.c.not_before > now
            )
        )
    ).scalar()
    ahead = timedelta(seconds=horizon)
    busy = (
        await conn.execute(
            sa.select(
                sa.func.min(
                    sa.func.greatest(
                        sa.func.coalesce(channels.c.next_slot, now) - ahead,
                        sa.func.coalesce(channels.c.breaker_open_until, now),
                    )
                )
            ).where(channels.c.deleted_at.is_(None), channels.c.paused.is_(False), _has_due_messages(now))
        )
    ).scalar()
    return [t for t in (future, busy) if t is not None]


async def hold_queued_until(conn: AsyncConnection, channel_id: uuid.UUID, until: datetime) -> int:
    """Quiet hours: the channel's queued messages due before ``until`` wait for it; how many."""
    result = await conn.execute(
        sa.update(messages)
        .where(
            messages.c.channel_id == channel_id, messages.c.status == "queued", messages.c.not_before < until
        )
        .values(not_before=until)
    )
    return result.rowcount or 0


async def lock_due_messages(
    conn: AsyncConnection, channel_id: uuid.UUID, now: datetime, limit: int
) -> list[Row[Any]]:
    return list(
        (
            await conn.execute(
                sa.select(messages)
                .where(
                    messages.c.channel_id == channel_id,
                    messages.c.status == "queued",
                    messages.c.not_before <= now,
                )
                .order_by(messages.c.priority.desc(), messages.c.not_before)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
    )


async def opted_out_among(conn: AsyncConnection, tenant_id: uuid.UUID, hashes: list[str]) -> set[str]:
    return set(
        (
            await conn.execute(
                sa.select(opt_outs.c.recipient_hash).where(
                    opt_outs.c.tenant_id == tenant_id, opt_outs.c.recipient_hash.in_(hashes)
                )
            )
        ).scalars()
    )


async def templates_with_status(
    conn: AsyncConnection, tenant_id: uuid.UUID, names: set[str], statuses: frozenset[str]
) -> dict[tuple[str, str], Row[Any]]:
    """The tenant's templates among ``names`` whose status is one of ``statuses``, by (name, language)."""
    if not names:
        return {}
    found = await conn.execute(
        sa.select(templates).where(
            templates.c.tenant_id == tenant_id,
            templates.c.name.in_(sorted(names)),
            templates.c.status.in_(sorted(statuses)),
        )
    )
    return {(t.name, t.language): t for t in found}


async def open_windows_among(
    conn: AsyncConnection, tenant_id: uuid.UUID, channel_id: uuid.UUID, hashes: list[str], since: datetime
) -> set[str]:
    """Recipients who wrote (on this channel, or on one ingest could not tell) since ``since``."""
    return set(
        (
            await conn.execute(
                sa.select(windows.c.recipient_hash).where(
                    windows.c.tenant_id == tenant_id,
                    windows.c.recipient_hash.in_(hashes),
                    windows.c.channel_key.in_([channel_id, NIL]),
                    windows.c.last_inbound_at > since,
                )
            )
        ).scalars()
    )


async def pair_next_among(
    conn: AsyncConnection, channel_id: uuid.UUID, hashes: list[str]
) -> dict[str, datetime]:
    return dict(
        (
            await conn.execute(
                sa.select(pair_pacing.c.recipient_hash, pair_pacing.c.next_at).where(
                    pair_pacing.c.channel_id == channel_id, pair_pacing.c.recipient_hash.in_(hashes)
                )
            )
        ).all()
    )


async def tier_usage(
    conn: AsyncConnection, tenant_id: uuid.UUID, portfolio: str, since: datetime, hashes: list[str]
) -> tuple[int, datetime | None, set[str]]:
    """The portfolio's unique recipients since ``since``: (count, oldest last send, those among
    ``hashes``). Takes the portfolio's advisory lock until the transaction ends, so two channels
    of one portfolio never count the same tier twice."""
    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"{tenant_id}:{portfolio}"))))
    scope = (
        tier_recipients.c.tenant_id == tenant_id,
        tier_recipients.c.portfolio == portfolio,
        tier_recipients.c.last_at > since,
    )
    count, oldest = (
        await conn.execute(sa.select(sa.func.count(), sa.func.min(tier_recipients.c.last_at)).where(*scope))
    ).one()
    known = set(
        (
            await conn.execute(
                sa.select(tier_recipients.c.recipient_hash).where(
                    *scope, tier_recipients.c.recipient_hash.in_(hashes)
                )
            )
        ).scalars()
    )
    return count, oldest, known


async def set_not_before_each(conn: AsyncConnection, rows: list[tuple[uuid.UUID, datetime]]) -> None:
    if rows:
        await conn.execute(
            sa.update(messages)
            .where(messages.c.id == sa.bindparam("_id"))
            .values(not_before=sa.bindparam("nb")),
            [{"_id": i, "nb": t} for i, t in rows],
        )


async def set_contents(conn: AsyncConnection, rows: list[tuple[uuid.UUID, dict[str, Any]]]) -> None:
    """What was really sent (the fallback template instead of free-form text)."""
    if rows:
        await conn.execute(
            sa.update(messages).where(messages.c.id == sa.bindparam("_id")).values(content=sa.bindparam("c")),
            [{"_id": i, "c": c} for i, c in rows],
        )


async def upsert_pair_next(
    conn: AsyncConnection, channel_id: uuid.UUID, next_at: dict[str, datetime]
) -> None:
    if next_at:
        stmt = pg.insert(pair_pacing)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[pair_pacing.c.channel_id, pair_pacing.c.recipient_hash],
                set_={"next_at": stmt.excluded.next_at},
            ),
            [{"channel_id": channel_id, "recipient_hash": h, "next_at": t} for h, t in next_at.items()],
        )


async def upsert_tier_recipients(
    conn: AsyncConnection, tenant_id: uuid.UUID, portfolio: str, hashes: list[str], at: datetime
) -> None:
    if hashes:
        stmt = pg.insert(tier_recipients)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[
                    tier_recipients.c.tenant_id,
                    tier_recipients.c.portfolio,
                    tier_recipients.c.recipient_hash,
                ],
                set_={"last_at": stmt.excluded.last_at},
            ),
            [
                {"tenant_id": tenant_id, "portfolio": portfolio, "recipient_hash": h, "last_at": at}
                for h in hashes
            ],
        )


async def renew_leases(conn: AsyncConnection, ids: list[uuid.UUID], now: datetime) -> None:
    await conn.execute(
        sa.update(messages)
        .where(messages.c.id.in_(ids), messages.c.status == "sending")
        .values(sending_started_at=now)
    )


async def still_sending(conn: AsyncConnection, ids: list[uuid.UUID]) -> list[Row[Any]]:
    """Those of ``ids`` still ``sending``, locked (what a release or a reconciliation may change)."""
    return list(
        (
            await conn.execute(
                sa.select(messages)
                .where(messages.c.id.in_(ids), messages.c.status == "sending")
                .with_for_update()
            )
        ).all()
    )


# --- the breaker ---------------------------------------------------------------------------------


async def close_breaker(conn: AsyncConnection, channel_id: uuid.UUID) -> bool:
    """A success resets the failure count; True when the breaker was open or counting."""
    result = await conn.execute(
        sa.update(channels)
        .where(
            channels.c.id == channel_id,
            sa.or_(channels.c.consecutive_failures > 0, channels.c.breaker_open_until.is_not(None)),
        )
        .values(consecutive_failures=0, breaker_open_until=None)
    )
    return bool(result.rowcount)


async def count_channel_failure(conn: AsyncConnection, channel_id: uuid.UUID) -> int | None:
    """One more transient failure in a row; the new count (None if the channel is gone)."""
    row = (
        await conn.execute(
            sa.update(channels)
            .where(channels.c.id == channel_id)
            .values(consecutive_failures=channels.c.consecutive_failures + 1)
            .returning(channels.c.consecutive_failures)
        )
    ).first()
    return row.consecutive_failures if row is not None else None


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


# --- catalogues: templates, windows, opt-outs --------------------------------------------------------


async def upsert_template(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    name: str,
    language: str,
    status: str,
    reason: str | None,
    at: datetime,
) -> None:
    """Record Meta's word on a template; an older word arriving late changes nothing."""
    stmt = pg.insert(templates).values(
        tenant_id=tenant_id, name=name, language=language, status=status, reason=reason, at=at
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[templates.c.tenant_id, templates.c.name, templates.c.language],
            set_={"status": stmt.excluded.status, "reason": stmt.excluded.reason, "at": stmt.excluded.at},
            where=templates.c.at <= stmt.excluded.at,
        )
    )


async def list_templates(
    conn: AsyncConnection, tenant_id: uuid.UUID, *, name: str | None, status: str | None
) -> list[Row[Any]]:
    q = sa.select(templates).where(templates.c.tenant_id == tenant_id)
    if name:
        q = q.where(templates.c.name == name)
    if status:
        q = q.where(templates.c.status == status)
    return list((await conn.execute(q.order_by(templates.c.name, templates.c.language).limit(1000))).all())


async def open_window(
    conn: AsyncConnection, tenant_id: uuid.UUID, recipient_hash: str, channel_key: uuid.UUID, at: datetime
) -> None:
    stmt = pg.insert(windows).values(
        tenant_id=tenant_id, recipient_hash=recipient_hash, channel_key=channel_key, last_inbound_at=at
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[windows.c.tenant_id, windows.c.recipient_hash, windows.c.channel_key],
            set_={
                "last_inbound_at": sa.func.greatest(windows.c.last_inbound_at, stmt.excluded.last_inbound_at)
            },
        )
    )


async def upsert_opt_out(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    recipient_hash: str,
    recipient_enc: str,
    reason: str | None,
    at: datetime,
) -> None:
    """Add (or refresh) an opt-out; an older one arriving late changes nothing."""
    stmt = pg.insert(opt_outs).values(
        tenant_id=tenant_id, recipient_hash=recipient_hash, recipient_enc=recipient_enc, reason=reason, at=at
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[opt_outs.c.tenant_id, opt_outs.c.recipient_hash],
            set_={"reason": stmt.excluded.reason, "at": stmt.excluded.at},
            where=opt_outs.c.at <= stmt.excluded.at,
        )
    )


async def delete_opt_out(
    conn: AsyncConnection, tenant_id: uuid.UUID, recipient_hash: str, at: datetime | None
) -> bool:
    """Remove an opt-out (one made after ``at`` stays: a late opt-in does not undo a newer opt-out)."""
    q = sa.delete(opt_outs).where(
        opt_outs.c.tenant_id == tenant_id, opt_outs.c.recipient_hash == recipient_hash
    )
    if at is not None:
        q = q.where(opt_outs.c.at <= at)
    return bool((await conn.execute(q)).rowcount)


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
