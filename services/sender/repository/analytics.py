"""Queries of the delivery analytics: one aggregate over a tenant's messages of a period (groups
and totals in one scan of ``ix_messages_analytics``), and the top failure codes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.sender.models import messages as m

OUT = ("sent", "delivered", "read")


def _key(group_by: str, tz: str) -> sa.ColumnElement[Any]:
    local = sa.func.timezone(sa.literal(tz, sa.Text), m.c.created_at)  # created_at AT TIME ZONE tz
    if group_by == "day":
        return sa.func.to_char(local, "YYYY-MM-DD")
    if group_by == "hour":
        return sa.func.to_char(local, 'YYYY-MM-DD"T"HH24:00')
    if group_by == "channel":
        return sa.cast(m.c.channel_id, sa.Text)
    if group_by == "origin":
        return m.c.origin
    if group_by == "template":
        # the template that went out (a fallback), else the one requested; null: not a template
        content = sa.func.coalesce(m.c.sent_content, m.c.content)
        return sa.case((content["kind"].astext == "template", content["name"].astext), else_=None)
    raise ValueError(group_by)


def _in_period(tenant_id: uuid.UUID, since: datetime, until: datetime) -> tuple[sa.ColumnElement[bool], ...]:
    return (m.c.tenant_id == tenant_id, m.c.created_at >= since, m.c.created_at < until)


def _ms(later: sa.ColumnElement[Any], earlier: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return sa.extract("epoch", later - earlier) * 1000


async def message_figures(
    conn: AsyncConnection, tenant_id: uuid.UUID, since: datetime, until: datetime, group_by: str, tz: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(one row per group key, the totals row) of the tenant's messages created in [since, until)."""
    base = (
        sa.select(
            _key(group_by, tz).label("key"),
            m.c.status,
            _ms(m.c.sent_at, m.c.created_at).label("q"),
            _ms(m.c.delivered_at, m.c.sent_at).label("d"),
            m.c.sent_at,
        )
        .where(*_in_period(tenant_id, since, until))
        .subquery("m")
    )
    status, q, d = base.c.status, base.c.q, base.c.d
    stmt = sa.select(
        base.c.key,
        sa.func.grouping(base.c.key).label("total"),
        sa.func.count().label("requested"),
        sa.func.count(base.c.sent_at).label("sent"),
        sa.func.count().filter(status.in_(("delivered", "read"))).label("delivered"),
        sa.func.count().filter(status == "read").label("read"),
        sa.func.count().filter(status == "failed").label("failed"),
        sa.func.avg(q).label("q_mean"),
        sa.func.percentile_cont(0.5).within_group(q).label("q_p50"),
        sa.func.percentile_cont(0.95).within_group(q).label("q_p95"),
        sa.func.percentile_cont(0.5).within_group(d).label("d_p50"),
        sa.func.percentile_cont(0.95).within_group(d).label("d_p95"),
    ).group_by(sa.func.grouping_sets(sa.tuple_(base.c.key), sa.tuple_()))
    rows = [dict(r._mapping) for r in await conn.execute(stmt)]
    totals = next((r for r in rows if r["total"]), {})
    return [r for r in rows if not r["total"]], totals


async def top_failures(
    conn: AsyncConnection, tenant_id: uuid.UUID, since: datetime, until: datetime, limit: int
) -> list[dict[str, Any]]:
    """The commonest failure codes of the period: code, count, whether Meta gave it, a stored reason."""
    stmt = (
        sa.select(
            m.c.error_code.label("code"),
            sa.func.count().label("count"),
            sa.func.bool_or(m.c.provider == "meta").label("meta"),
            sa.func.min(m.c.status_reason).label("reason"),
        )
        .where(*_in_period(tenant_id, since, until), m.c.status == "failed")
        .group_by(m.c.error_code)
        .order_by(sa.func.count().desc(), m.c.error_code)
        .limit(limit)
    )
    return [dict(r._mapping) for r in await conn.execute(stmt)]
