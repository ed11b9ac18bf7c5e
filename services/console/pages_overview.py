"""The overview: messages per day by status, queue time, failures by reason, inbound per day.

From the sender's analytics API when this Herald has it; otherwise the per-day counts are taken
from the latest messages (so the page still shows something true, and says where it came from)."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse

from services.console import charts
from services.console.client import NotAvailable
from services.console.web import Page, page

router = APIRouter(include_in_schema=False)

STATUSES = ("sent", "delivered", "read", "failed")


def _days(first: date, last: date) -> list[str]:
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


async def _from_analytics(p: Page, first: date, last: date, tz: str) -> dict[str, Any]:
    body = await p.api.collection(
        "sender",
        "/v1/analytics/messages",
        group_by="day",
        tz=tz,
        **{"from": first.isoformat(), "to": last.isoformat()},
    )
    by_key = {g["key"][:10]: g for g in body.get("groups", [])}
    labels = _days(first, last)
    series = {s: [by_key.get(d, {}).get(s) or 0 for d in labels] for s in ("requested", *STATUSES)}
    queue = [((by_key.get(d, {}).get("queue_time_ms") or {}).get("p95") or 0) for d in labels]
    failures = [
        (f.get("meaning") or f.get("code") or "?", f.get("count", 0)) for f in body.get("top_failures", [])
    ]
    return {"labels": labels, "series": series, "queue": queue, "failures": failures, "source": "analytics"}


async def _from_messages(p: Page, first: date, last: date) -> dict[str, Any]:
    since = datetime.combine(first, datetime.min.time(), UTC)
    body = await p.api.collection("sender", "/v1/messages", limit=500, created_after=since.isoformat())
    labels = _days(first, last)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    reasons: Counter[str] = Counter()
    for m in body.get("items", []):
        day = m["created_at"][:10]
        status = m["status"] if m["status"] in STATUSES else "requested"
        counts[status][day] += 1
        if m["status"] == "failed":
            reasons[m.get("error_code") or (m.get("status_reason") or "unknown")[:40]] += 1
    series = {s: [counts[s][d] for d in labels] for s in ("requested", *STATUSES)}
    return {
        "labels": labels,
        "series": series,
        "queue": None,
        "failures": reasons.most_common(8),
        "source": "latest messages",
    }


@router.get("/", response_class=HTMLResponse)
async def overview(
    p: Page = Depends(page), days: int = Query(14, ge=1, le=90), tz: str = "UTC"
) -> HTMLResponse:
    last = datetime.now(UTC).date()
    first = last - timedelta(days=days - 1)
    try:
        data = await _from_analytics(p, first, last, tz)
    except NotAvailable:
        data = await _from_messages(p, first, last)
    try:
        inbound = (await p.api.collection("ingest", "/v1/inbound/stats", days=days)).get("days", [])
        by_day = {d["day"]: d.get("received", 0) for d in inbound}
        inbound_chart = charts.bars(
            "Inbound per day", data["labels"], [by_day.get(d, 0) for d in data["labels"]], "inbound"
        )
    except NotAvailable:
        inbound_chart = None
    try:
        drafts = await p.api.collection(
            "pipeline", "/v1/analytics/drafts", tz=tz, **{"from": first.isoformat(), "to": last.isoformat()}
        )
        by_draft = {g["key"][:10]: g for g in drafts.get("groups", [])}
        drafts_chart = charts.stacked_bars(
            "Drafts per day",
            data["labels"],
            {s: [by_draft.get(d, {}).get(s, 0) for d in data["labels"]] for s in ("ready", "failed")},
        )
    except NotAvailable:
        drafts_chart = None
    return p.render(
        "overview.html",
        title="Overview",
        days=days,
        source=data["source"],
        totals={s: sum(v) for s, v in data["series"].items()},
        per_day=charts.stacked_bars("Messages per day by status", data["labels"], data["series"]),
        queue=charts.bars("Queue time p95 (ms) per day", data["labels"], data["queue"])
        if data["queue"]
        else None,
        failures=charts.horizontal_bars("Failures by reason", data["failures"]),
        inbound=inbound_chart,
        drafts=drafts_chart,
    )
