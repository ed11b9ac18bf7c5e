"""Channels (limits, breaker, pause/resume, gateway session and QR code), templates (status,
create) and ingest's webhook sources with the URL each provider must call."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, JSONResponse, Response

from services.console.client import ApiRefused
from services.console.web import Page, page, redirect

router = APIRouter(include_in_schema=False)


async def _session(p: Page, channel: dict[str, Any]) -> dict[str, Any] | None:
    """The gateway session (sessions API), or what the channel view already carries; None when
    this Herald has no sessions API."""
    if channel.get("session"):
        return channel["session"]
    answer = await p.api.get("sender", f"/v1/channels/{channel['id']}/session")
    return answer.body if answer.ok else None


@router.get("/channels", response_class=HTMLResponse)
async def channels(p: Page = Depends(page)) -> HTMLResponse:
    items = (await p.api.collection("sender", "/v1/channels"))["items"]
    return p.render("channels.html", title="Channels", items=items)


@router.get("/channels/{channel_id}", response_class=HTMLResponse)
async def channel(channel_id: str, p: Page = Depends(page)) -> HTMLResponse:
    answer = await p.api.get("sender", f"/v1/channels/{channel_id}")
    if not answer.ok:
        raise ApiRefused(answer)
    return p.render(
        "channel.html", title="Channel", c=answer.body, session_state=await _session(p, answer.body)
    )


@router.get("/live/channels/{channel_id}/session")
async def live_session(channel_id: str, p: Page = Depends(page)) -> JSONResponse:
    answer = await p.api.get("sender", f"/v1/channels/{channel_id}/session")
    if answer.status == 404:
        return JSONResponse({"detail": "gateway sessions are not available on this Herald"}, status_code=404)
    return JSONResponse(answer.body, status_code=answer.status)


@router.post("/channels/{channel_id}/pause")
async def pause(channel_id: str, p: Page = Depends(page)) -> Response:
    return await _set_paused(p, channel_id, True)


@router.post("/channels/{channel_id}/resume")
async def resume(channel_id: str, p: Page = Depends(page)) -> Response:
    return await _set_paused(p, channel_id, False)


async def _set_paused(p: Page, channel_id: str, paused: bool) -> Response:
    await p.form()
    answer = await p.api.patch("sender", f"/v1/channels/{channel_id}", {"paused": paused})
    if not answer.ok:
        raise ApiRefused(answer)
    return redirect(f"/channels/{channel_id}")


@router.post("/channels/{channel_id}/limits")
async def limits(channel_id: str, p: Page = Depends(page)) -> Response:
    form = await p.form()
    body: dict[str, Any] = {}
    for field in ("throughput_per_second", "pair_interval_seconds"):
        if form.get(field):
            try:
                body[field] = float(form[field])
            except ValueError:
                body[field] = form[field]  # the sender's 422 names the field
    if form.get("tier") is not None:
        body["tier"] = int(form["tier"]) if form["tier"].isdigit() else None
    answer = await p.api.patch("sender", f"/v1/channels/{channel_id}", body)
    if not answer.ok:
        raise ApiRefused(answer)
    return redirect(f"/channels/{channel_id}")


# --- templates ------------------------------------------------------------------------------


def _template_items(body: Any) -> list[dict[str, Any]]:
    return body.get("templates") or body.get("items") or []


@router.get("/templates", response_class=HTMLResponse)
async def templates_page(p: Page = Depends(page), error: str | None = None) -> HTMLResponse:
    items = _template_items(await p.api.collection("sender", "/v1/templates"))
    channels = (await p.api.collection("sender", "/v1/channels"))["items"]
    return p.render("templates.html", title="Templates", items=items, channels=channels, error=error, form={})


@router.post("/templates")
async def create_template(p: Page = Depends(page)) -> Response:
    form = await p.form()
    body: dict[str, Any] = {
        k: form[k] for k in ("channel_id", "name", "language", "category", "body") if form.get(k)
    }
    answer = await p.api.post("sender", "/v1/templates", body)
    if answer.ok:
        return redirect("/templates")
    if answer.status in (404, 405):
        message = "Creating templates is not available on this Herald (the sender has no POST /v1/templates)."
    else:
        message = answer.message
    items = _template_items((await p.api.get("sender", "/v1/templates")).body or {})
    channels = (await p.api.collection("sender", "/v1/channels"))["items"]
    return p.render(
        "templates.html",
        status_code=answer.status if answer.status != 405 else 404,
        title="Templates",
        items=items,
        channels=channels,
        error=message,
        form=form,
    )


# --- webhook sources ------------------------------------------------------------------------


@router.get("/webhook-sources", response_class=HTMLResponse)
async def webhook_sources(p: Page = Depends(page)) -> HTMLResponse:
    items = (await p.api.collection("ingest", "/v1/webhook-sources"))["items"]
    base = p.console.settings.url_of("ingest")
    return p.render("webhook_sources.html", title="Webhook sources", items=items, base=base)
