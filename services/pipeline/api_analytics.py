"""``GET /v1/analytics/drafts``: the tenant's drafts per local day of a period — created, ready,
failed (by the day the draft was asked for), beside the sender's delivery analytics."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from services.pipeline.models import drafts
from shared.api import ERROR_RESPONSES, ApiError
from shared.service import ServiceRuntime
from shared.tenancy import Tenant

MAX_DAYS = 366
DEFAULT_DAYS = 7


class DraftDay(BaseModel):
    key: str
    drafts: int
    ready: int
    failed: int


class DraftAnalytics(BaseModel):
    groups: list[DraftDay]


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_request", f"{field}: {message}", [{"field": field, "problem": message}])


def _day(value: str | None, field: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _invalid(field, f"give a date YYYY-MM-DD, not {value!r}") from None


def period(start: str | None, end: str | None, tz: str) -> tuple[date, date, ZoneInfo]:
    """Local days from/to (inclusive; the last 7 days by default), checked."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise _invalid("tz", f"unknown time zone {tz!r}: give an IANA name such as Europe/Lisbon") from None
    first, last = _day(start, "from"), _day(end, "to")
    if last is None:
        last = datetime.now(zone).date() if first is None else first + timedelta(days=DEFAULT_DAYS - 1)
    if first is None:
        first = last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise _invalid("from", f"from ({first}) is after to ({last})")
    if (last - first).days + 1 > MAX_DAYS:
        raise _invalid("to", f"the period is {(last - first).days + 1} days; at most {MAX_DAYS}")
    return first, last, zone


async def drafts_per_day(
    conn: AsyncConnection, tenant_id: uuid.UUID, since: datetime, until: datetime, tz: str
) -> dict[date, Any]:
    day = sa.cast(sa.func.timezone(sa.literal(tz, sa.Text), drafts.c.created_at), sa.Date).label("day")
    inner = (
        sa.select(day, drafts.c.status)
        .where(drafts.c.tenant_id == tenant_id, drafts.c.created_at >= since, drafts.c.created_at < until)
        .subquery()
    )
    stmt = sa.select(
        inner.c.day,
        sa.func.count().label("drafts"),
        sa.func.count().filter(inner.c.status == "ready").label("ready"),
        sa.func.count().filter(inner.c.status == "failed").label("failed"),
    ).group_by(inner.c.day)
    return {r.day: r for r in await conn.execute(stmt)}


def routers(runtime: ServiceRuntime) -> list[APIRouter]:
    api = APIRouter(prefix="/v1/analytics", tags=["analytics"], responses=ERROR_RESPONSES)

    @api.get(
        "/drafts",
        response_model=DraftAnalytics,
        summary="Drafts per local day: asked for, ready, failed",
        description=f"Days are local to `tz`; at most {MAX_DAYS} days, the last {DEFAULT_DAYS} by default.",
    )
    async def draft_analytics(
        tenant: Tenant = Depends(runtime.auth),
        from_: str | None = Query(default=None, alias="from", description="First local day, YYYY-MM-DD"),
        to: str | None = Query(default=None, description="Last local day (inclusive), YYYY-MM-DD"),
        tz: str = Query(default="UTC", max_length=64, description="IANA time zone, e.g. Europe/Lisbon"),
    ) -> DraftAnalytics:
        first, last, zone = period(from_, to, tz)
        since = datetime.combine(first, time(0), tzinfo=zone)
        until = datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone)
        async with runtime.engine.connect() as conn:
            found = await drafts_per_day(conn, tenant.id, since, until, tz)
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        return DraftAnalytics(
            groups=[
                DraftDay(
                    key=d.isoformat(),
                    drafts=found[d].drafts if d in found else 0,
                    ready=found[d].ready if d in found else 0,
                    failed=found[d].failed if d in found else 0,
                )
                for d in days
            ]
        )

    return [api]
