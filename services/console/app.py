"""Composition root of the console: wiring only — settings, the HTTP client to the services,
the sessions, the pages' routers and the static assets (all in this folder: it needs no internet)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from services.console import (
    auth,
    pages_channels,
    pages_messages,
    pages_overview,
    pages_pipeline,
    pages_schedules,
)
from services.console.session import Sessions
from services.console.settings import ConsoleSettings
from services.console.web import HERE, Console, install_handlers


@dataclass
class ConsoleRuntime:
    """What ``herald run console`` needs: settings and a way to serve (no broker, no database)."""

    settings: ConsoleSettings

    def serve(self, app: FastAPI) -> None:
        uvicorn.Server(
            uvicorn.Config(
                app,
                host=self.settings.host,
                port=self.settings.port,
                log_config=None,
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=int(self.settings.graceful_timeout_seconds),
                server_header=False,
            )
        ).run()


def build(settings: ConsoleSettings | None = None) -> tuple[ConsoleRuntime, Any]:
    settings = settings or ConsoleSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=settings.api_timeout_seconds) as http:
            app.state.console = Console(settings=settings, http=http, sessions=Sessions(settings))
            yield

    app = FastAPI(
        title="Herald console",
        description="The operators' web console: pages over the four services' HTTP APIs.",
        lifespan=lifespan,
        docs_url="/docs",
    )
    install_handlers(app)
    ops = APIRouter(tags=["operations"])

    @ops.get("/livez", summary="The process is alive")
    async def livez() -> dict[str, str]:
        return {"status": "alive"}

    @ops.get("/readyz", summary="The console serves pages (it holds no connection of its own)")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    app.include_router(ops)
    for module in (auth, pages_overview, pages_messages, pages_schedules, pages_channels, pages_pipeline):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    return ConsoleRuntime(settings), app
