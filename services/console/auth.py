"""Sign-in with a tenant API key (checked against the sender), sign-out."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from services.console.client import ServiceDown, verify_key
from services.console.web import NAV, Page, console_of, page, redirect, templates

router = APIRouter(include_in_schema=False)


def _sign_in_form(request: Request, status_code: int = 200, error: str | None = None) -> HTMLResponse:
    sessions = console_of(request).sessions
    token, signed = sessions.pre_token()
    response = templates.TemplateResponse(
        request, "sign_in.html", {"session": None, "nav": NAV, "error": error, "csrf": token}, status_code
    )
    sessions.set_pre_cookie(response, signed)
    return response


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request) -> Response:
    if console_of(request).sessions.read(request) is not None:
        return redirect("/")
    return _sign_in_form(request)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    console = console_of(request)
    form = await request.form()
    console.sessions.check_pre(request, str(form.get("csrf") or ""))
    key = str(form.get("api_key") or "").strip()
    if not key:
        return _sign_in_form(
            request, 422, "Enter your tenant's API key (`herald tenant create NAME` prints one)."
        )
    try:
        answer = await verify_key(console.http, console.settings, key)
    except ServiceDown as exc:
        return _sign_in_form(request, 503, f"{exc}; the key could not be checked. Try again shortly.")
    if answer.status in (401, 403):
        return _sign_in_form(request, 401, "That API key is not valid: check it, or create a new one.")
    if not answer.ok:
        return _sign_in_form(request, 502, f"The sender could not check the key: {answer.message}")
    response = redirect("/")
    console.sessions.start(response, key)
    return response


@router.post("/sign-out")
async def sign_out(p: Page = Depends(page)) -> Response:
    await p.form()
    response = redirect("/sign-in")
    p.console.sessions.end(response, p.session)
    return response
