"""Messages (search, one message's timeline, send), their live statuses, and dead letters."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from services.console.client import ApiRefused
from services.console.web import Page, page, redirect

router = APIRouter(include_in_schema=False)

STATUSES = ["queued", "held", "sending", "sent", "delivered", "read", "failed"]
#: a message in one of these will not change any more (the page stops polling)
SETTLED = {"delivered", "read", "failed"}


def _day_bounds(day_from: str | None, day_to: str | None) -> tuple[str | None, str | None]:
    """``YYYY-MM-DD`` form fields → the sender's ``created_after``/``created_before`` (UTC days)."""

    def parse(value: str | None, field: str) -> datetime | None:
        if not value:
            return None
        try:
            return datetime.combine(datetime.strptime(value, "%Y-%m-%d").date(), time.min, UTC)
        except ValueError:
            raise DateError(f"{field}: use a date like 2026-12-03") from None

    start, end = parse(day_from, "from"), parse(day_to, "to")
    return (start.isoformat() if start else None, (end + timedelta(days=1)).isoformat() if end else None)


class DateError(Exception):
    """A date field of the search form that is not a date."""


async def _channels(p: Page) -> list[dict[str, Any]]:
    answer = await p.api.get("sender", "/v1/channels")
    return answer.body.get("items", []) if answer.ok else []


@router.get("/messages", response_class=HTMLResponse)
async def messages(
    p: Page = Depends(page),
    to: str | None = None,
    status: str | None = None,
    channel_id: str | None = None,
    day_from: str | None = Query(None, alias="from"),
    day_to: str | None = Query(None, alias="to_day"),
) -> HTMLResponse:
    error = None
    items: list[dict[str, Any]] = []
    try:
        after, before = _day_bounds(day_from, day_to)
        answer = await p.api.get(
            "sender",
            "/v1/messages",
            to=to,
            status=status,
            channel_id=channel_id,
            created_after=after,
            created_before=before,
            limit=100,
        )
        if answer.ok:
            items = answer.body["items"]
        else:
            error = answer.message
    except DateError as exc:
        error = str(exc)
    return p.render(
        "messages.html",
        status_code=422 if error else 200,
        title="Messages",
        items=items,
        error=error,
        statuses=STATUSES,
        channels=await _channels(p),
        q={
            "to": to or "",
            "status": status or "",
            "channel_id": channel_id or "",
            "from": day_from or "",
            "to_day": day_to or "",
        },
        settled=SETTLED,
    )


@router.get("/messages/new", response_class=HTMLResponse)
async def new_message(p: Page = Depends(page)) -> HTMLResponse:
    return p.render(
        "message_new.html", title="Send a message", channels=await _channels(p), form={}, error=None
    )


@router.post("/messages/new")
async def send_message(p: Page = Depends(page)) -> Response:
    form = await p.form()
    body: dict[str, Any] = {"to": form.get("to", ""), "text": form.get("text", "")}
    if form.get("channel_id"):
        body["channel_id"] = form["channel_id"]
    if form.get("priority"):
        body["priority"] = int(form["priority"]) if form["priority"].isdigit() else form["priority"]
    answer = await p.api.post("sender", "/v1/messages", body)
    if not answer.ok:
        return p.render(
            "message_new.html",
            status_code=answer.status,
            title="Send a message",
            channels=await _channels(p),
            form=form,
            error=answer.message,
        )
    return redirect(f"/messages/{answer.body['id']}")


@router.get("/messages/{message_id}", response_class=HTMLResponse)
async def message(message_id: str, p: Page = Depends(page)) -> HTMLResponse:
    answer = await p.api.get("sender", f"/v1/messages/{message_id}")
    if not answer.ok:
        raise ApiRefused(answer)
    return p.render("message.html", title="Message", m=answer.body, settled=SETTLED)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@router.get("/live/messages")
async def live_messages(p: Page = Depends(page), ids: str = "") -> JSONResponse:
    """Statuses of the messages on screen, for the page's polling (at most 100 ids)."""
    wanted = [i for i in ids.split(",") if _is_uuid(i)][:100]
    out: dict[str, Any] = {}
    answers = await asyncio.gather(*(p.api.get("sender", f"/v1/messages/{i}") for i in wanted))
    for message_id, answer in zip(wanted, answers, strict=True):
        if answer.ok and isinstance(answer.body, dict) and "status" in answer.body:
            m = answer.body
            out[message_id] = {
                "status": m["status"],
                "status_reason": m.get("status_reason"),
                "error_code": m.get("error_code"),
                "waiting": m.get("waiting"),
                "history": m.get("history") or [],
                "updated_at": m.get("updated_at"),
                "settled": m["status"] in SETTLED,
            }
    return JSONResponse({"messages": out})


# --- dead letters ---------------------------------------------------------------------------


def _filter(form: dict[str, str]) -> dict[str, Any]:
    return {k: form[k] for k in ("channel_id", "error_code") if form.get(k)}


@router.get("/dead-letters", response_class=HTMLResponse)
async def dead_letters(
    p: Page = Depends(page),
    channel_id: str | None = None,
    error_code: str | None = None,
    done: int | None = None,
) -> HTMLResponse:
    body = await p.api.collection("sender", "/v1/dead-letters", channel_id=channel_id, limit=200)
    items = [m for m in body["items"] if not error_code or m.get("error_code") == error_code]
    return p.render(
        "dead_letters.html",
        title="Dead letters",
        items=items,
        channels=await _channels(p),
        q={"channel_id": channel_id or "", "error_code": error_code or ""},
        done=done,
    )


@router.get("/dead-letters/replay", response_class=HTMLResponse)
async def confirm_replay(
    p: Page = Depends(page),
    message_id: str | None = None,
    channel_id: str | None = None,
    error_code: str | None = None,
) -> HTMLResponse:
    """Replaying is confirmed on a page of its own: it says exactly what will be sent again."""
    body = await p.api.collection("sender", "/v1/dead-letters", channel_id=channel_id, limit=500)
    items = [
        m
        for m in body["items"]
        if (not message_id or m["id"] == message_id) and (not error_code or m.get("error_code") == error_code)
    ]
    return p.render(
        "replay_confirm.html",
        title="Replay dead letters",
        items=items,
        message_id=message_id or "",
        q={"channel_id": channel_id or "", "error_code": error_code or ""},
    )


@router.post("/dead-letters/replay")
async def replay(p: Page = Depends(page)) -> Response:
    form = await p.form()
    if form.get("message_id"):
        answer = await p.api.post("sender", f"/v1/dead-letters/{form['message_id']}/replay")
    else:
        answer = await p.api.post("sender", "/v1/dead-letters/replay", _filter(form))
    if not answer.ok:
        raise ApiRefused(answer)
    return redirect(f"/dead-letters?done={len(answer.body.get('replayed', []))}")
