"""``GET /v1/analytics/messages``: the tenant's delivery figures for a period in a time zone,
grouped by local day or hour, channel, template or origin (definitions: services.sender.analytics)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError

from services.sender import analytics
from services.sender.context import Sender
from services.sender.repository import analytics as queries
from shared.api import ERROR_RESPONSES, ApiError
from shared.tenancy import Tenant


class QueueTime(BaseModel):
    mean: float | None
    p50: float | None
    p95: float | None


class DeliveryTime(BaseModel):
    p50: float | None
    p95: float | None


class Figures(BaseModel):
    key: str | None = Field(
        description="The local day (YYYY-MM-DD), local hour (YYYY-MM-DDTHH:00), channel id, template "
        "name (null: not a template) or origin; null in the totals"
    )
    requested: int = Field(description="Messages requested (created) in the period")
    sent: int = Field(
        description="Of those, the ones the provider has had (sent, delivered, read, or failed after the send)"
    )
    delivered: int = Field(description="Delivered or read")
    read: int
    failed: int = Field(description="Failed, before or after the send")
    queue_time_ms: QueueTime = Field(description="Accepted → sent; null when nothing was sent")
    delivery_time_ms: DeliveryTime = Field(description="Sent → delivered; null when nothing was delivered")
    read_rate: float | None = Field(description="read / delivered; null when nothing was delivered")


class Failure(BaseModel):
    code: str | None
    meaning: str | None = Field(description="Meta's meaning of its code, else the reason stored with it")
    count: int


class MessageAnalytics(BaseModel):
    from_: str = Field(alias="from", serialization_alias="from")
    to: str
    tz: str
    group_by: str
    groups: list[Figures]
    totals: Figures
    top_failures: list[Failure]


def routers(sender: Sender) -> list[APIRouter]:
    runtime = sender.runtime
    api = APIRouter(prefix="/v1/analytics", tags=["analytics"], responses=ERROR_RESPONSES)

    @api.get(
        "/messages",
        response_model=MessageAnalytics,
        response_model_by_alias=True,
        summary="Delivery figures for a period: counts, queue and delivery times, read rate, top failures",
        description="Days and hours are local to `tz`. A message counts in the period of its request "
        f"(`created_at`). At most {analytics.MAX_DAYS} days ({analytics.MAX_HOUR_DAYS} by hour); "
        f"the last {analytics.DEFAULT_DAYS} days by default.",
    )
    async def message_analytics(
        tenant: Tenant = Depends(runtime.auth),
        from_: str | None = Query(default=None, alias="from", description="First local day, YYYY-MM-DD"),
        to: str | None = Query(default=None, description="Last local day (inclusive), YYYY-MM-DD"),
        tz: str = Query(default="UTC", max_length=64, description="IANA time zone, e.g. Europe/Lisbon"),
        group_by: str = Query(default="day", description="day, hour, channel, template or origin"),
    ) -> dict[str, Any]:
        try:
            period = analytics.parse_period(from_, to, tz, group_by)
        except analytics.PeriodError as exc:
            raise ApiError(
                422, "invalid_request", f"{exc.field}: {exc}", [{"field": exc.field, "problem": str(exc)}]
            ) from None
        try:
            rows, failures = await queries.read(runtime.engine, tenant.id, period, group_by)
        except DBAPIError as exc:  # a zone Python knows and PostgreSQL does not
            if "time zone" not in str(exc):
                raise
            raise ApiError(
                422, "invalid_request", f"tz: time zone {tz!r} is not known to the database"
            ) from None
        by_key, totals = analytics.combine(rows)
        return {
            "from": period.start.isoformat(),
            "to": period.end.isoformat(),
            "tz": tz,
            "group_by": group_by,
            "groups": analytics.groups(period, group_by, by_key),
            "totals": analytics.group(None, totals),
            "top_failures": [
                {
                    "code": f["code"],
                    "meaning": analytics.meaning(f["code"], f["meta"], f["reason"]),
                    "count": f["count"],
                }
                for f in failures
            ],
        }

    return [api]
