"""Scheduled messages (list, create, edit, cancel, the next five occurrences), pacing schedules
and event reminders."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from services.console.client import ApiRefused
from services.console.web import Page, page, redirect

router = APIRouter(include_in_schema=False)

PRESETS = ["", "daily", "weekdays", "weekly", "monthly", "first_weekday_of_month", "last_weekday_of_month"]


class FormError(Exception):
    pass


def _send_at(local: str, tz: str) -> str:
    """``2026-12-03T18:30`` (the browser's datetime-local) in ``tz`` → ISO-8601 with its offset."""
    from datetime import datetime

    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise FormError(f"time zone {tz!r} is unknown: use an IANA name such as Europe/Lisbon") from None
    try:
        when = datetime.fromisoformat(local)
    except ValueError:
        raise FormError("send at: pick a date and a time") from None
    return when.replace(tzinfo=zone).isoformat()


def _schedule_body(form: dict[str, str], editing: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for field in ("to", "text"):
        if form.get(field) or not editing:
            body[field] = form.get(field, "")
    tz = form.get("timezone") or "UTC"
    if form.get("preset"):
        body["recurrence"] = {"timezone": tz, "start": form.get("send_at", ""), "preset": form["preset"]}
        if form.get("count"):
            body["recurrence"]["count"] = int(form["count"]) if form["count"].isdigit() else form["count"]
    elif form.get("send_at"):
        body["send_at"] = _send_at(form["send_at"], tz)
    elif not editing:
        raise FormError("send at: pick when to send it")
    return body


@router.get("/schedules", response_class=HTMLResponse)
async def schedules(p: Page = Depends(page), status: str | None = None) -> HTMLResponse:
    body = await p.api.collection("scheduler", "/v1/scheduled-messages", status=status)
    return p.render("schedules.html", title="Scheduled messages", items=body["items"], status=status or "")


def _form_page(
    p: Page, form: dict[str, str], error: str | None, status_code: int, item: Any = None
) -> HTMLResponse:
    return p.render(
        "schedule_form.html",
        status_code=status_code,
        title="Edit scheduled message" if item else "Schedule a message",
        form=form,
        error=error,
        presets=PRESETS,
        item=item,
    )


@router.get("/schedules/new", response_class=HTMLResponse)
async def new_schedule(p: Page = Depends(page)) -> HTMLResponse:
    return _form_page(p, {"timezone": "UTC"}, None, 200)


@router.post("/schedules/new")
async def create_schedule(p: Page = Depends(page)) -> Response:
    form = await p.form()
    try:
        body = _schedule_body(form)
    except FormError as exc:
        return _form_page(p, form, str(exc), 422)
    answer = await p.api.post("scheduler", "/v1/scheduled-messages", body)
    if not answer.ok:
        return _form_page(p, form, answer.message, answer.status)
    return redirect(f"/schedules/{answer.body['id']}")


@router.get("/schedules/{schedule_id}", response_class=HTMLResponse)
async def schedule(schedule_id: str, p: Page = Depends(page)) -> HTMLResponse:
    answer = await p.api.get("scheduler", f"/v1/scheduled-messages/{schedule_id}")
    if not answer.ok:
        raise ApiRefused(answer)
    return p.render("schedule.html", title="Scheduled message", s=answer.body)


@router.get("/schedules/{schedule_id}/edit", response_class=HTMLResponse)
async def edit_schedule(schedule_id: str, p: Page = Depends(page)) -> HTMLResponse:
    answer = await p.api.get("scheduler", f"/v1/scheduled-messages/{schedule_id}")
    if not answer.ok:
        raise ApiRefused(answer)
    s = answer.body
    form = {"to": s["to"], "text": s.get("text") or "", "timezone": "UTC", "send_at": s["send_at"][:16]}
    recurrence = s.get("recurrence") or {}
    if recurrence.get("preset"):
        form.update(
            timezone=recurrence.get("timezone") or "UTC",
            send_at=str(recurrence.get("start") or "")[:16],
            preset=recurrence["preset"],
            count=str(recurrence.get("count") or ""),
        )
    return _form_page(p, form, None, 200, item=s)


@router.post("/schedules/{schedule_id}/edit")
async def save_schedule(schedule_id: str, p: Page = Depends(page)) -> Response:
    form = await p.form()
    current = await p.api.get("scheduler", f"/v1/scheduled-messages/{schedule_id}")
    if not current.ok:
        raise ApiRefused(current)
    try:
        body = _schedule_body(form, editing=True)
    except FormError as exc:
        return _form_page(p, form, str(exc), 422, item=current.body)
    answer = await p.api.patch("scheduler", f"/v1/scheduled-messages/{schedule_id}", body)
    if not answer.ok:
        return _form_page(p, form, answer.message, answer.status, item=current.body)
    return redirect(f"/schedules/{schedule_id}")


@router.post("/schedules/{schedule_id}/cancel")
async def cancel_schedule(schedule_id: str, p: Page = Depends(page)) -> Response:
    await p.form()
    answer = await p.api.delete("scheduler", f"/v1/scheduled-messages/{schedule_id}")
    if not answer.ok:
        raise ApiRefused(answer)
    return redirect(f"/schedules/{schedule_id}")


@router.get("/pacing", response_class=HTMLResponse)
async def pacing(p: Page = Depends(page)) -> HTMLResponse:
    schedules = (await p.api.collection("scheduler", "/v1/pacing-schedules"))["items"]
    reminders = (await p.api.collection("scheduler", "/v1/reminders"))["items"]
    policy = await p.api.get("scheduler", "/v1/reminder-policy")
    return p.render(
        "pacing.html",
        title="Pacing schedules & reminders",
        schedules=schedules,
        reminders=reminders,
        policy=policy.body if policy.ok else None,
    )
