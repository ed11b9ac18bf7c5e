"""What every page handler shares: the signed-in tenant's ``Page`` (its API client, its CSRF
token, rendering), and the answers for a missing sign-in, a refused token or a missing API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from services.console.client import Api, ApiRefused, NotAvailable, ServiceDown
from services.console.session import CsrfRefused, NotSignedIn, Session, Sessions
from services.console.settings import ConsoleSettings

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))

#: the navigation, in order: (path, label)
NAV = [
    ("/", "Overview"),
    ("/messages", "Messages"),
    ("/dead-letters", "Dead letters"),
    ("/schedules", "Scheduled"),
    ("/pacing", "Pacing & reminders"),
    ("/channels", "Channels"),
    ("/templates", "Templates"),
    ("/rules", "Rules"),
    ("/drafts", "Drafts"),
    ("/webhook-sources", "Webhook sources"),
]


@dataclass
class Console:
    settings: ConsoleSettings
    http: httpx.AsyncClient
    sessions: Sessions


def console_of(request: Request) -> Console:
    return request.app.state.console


@dataclass
class Page:
    request: Request
    console: Console
    session: Session

    @property
    def api(self) -> Api:
        return Api(self.console.http, self.console.settings, self.session.api_key)

    def render(self, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(
            self.request,
            name,
            {"session": self.session, "csrf": self.session.csrf, "nav": NAV, **context},
            status_code=status_code,
        )

    async def form(self) -> dict[str, str]:
        """The posted form, after its CSRF token was checked (403 without a valid one)."""
        form = await self.request.form()
        data = {k: v for k, v in form.items() if isinstance(v, str)}
        self.console.sessions.check(self.session, data.pop("csrf", None))
        return data


def page(request: Request) -> Page:
    """Dependency of every signed-in page: no valid session cookie → the sign-in page."""
    console = console_of(request)
    session = console.sessions.read(request)
    if session is None:
        raise NotSignedIn()
    return Page(request=request, console=console, session=session)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/live/")


def install_handlers(app: FastAPI) -> None:
    def bare(request: Request, name: str, status_code: int, **context: Any) -> HTMLResponse:
        console = console_of(request)
        session = console.sessions.read(request)
        return templates.TemplateResponse(
            request,
            name,
            {"session": session, "csrf": session.csrf if session else "", "nav": NAV, **context},
            status_code=status_code,
        )

    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, _: NotSignedIn) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": "not signed in: sign in again at /sign-in"}, status_code=401)
        return redirect("/sign-in")

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, _: CsrfRefused) -> Response:
        return bare(
            request,
            "error.html",
            403,
            title="Form refused",
            message="This form had no valid security (CSRF) token. Reload the page and submit it again.",
        )

    @app.exception_handler(NotAvailable)
    async def _not_available(request: Request, exc: NotAvailable) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": f"not available on this Herald: {exc}"}, status_code=404)
        return bare(
            request, "unavailable.html", 200, title="Not available", service=exc.service, path=exc.path
        )

    @app.exception_handler(ServiceDown)
    async def _down(request: Request, exc: ServiceDown) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": str(exc)}, status_code=503)
        return bare(
            request,
            "error.html",
            503,
            title="Service unavailable",
            message=f"{exc}. Check that the {exc.service} is running, then reload.",
        )

    @app.exception_handler(ApiRefused)
    async def _refused(request: Request, exc: ApiRefused) -> Response:
        status = exc.answer.status if 400 <= exc.answer.status < 600 else 502
        if _wants_json(request):
            return JSONResponse({"detail": exc.answer.message}, status_code=status)
        return bare(request, "error.html", status, title="Refused", message=exc.answer.message)
