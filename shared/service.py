"""The runtime every service process is built from.

``ServiceRuntime`` owns what one process holds — settings, the database engine, the RabbitMQ
broker, the outbox relay, background loops — and builds the FastAPI app whose lifespan starts and
stops them in the right order. It holds no business logic: each service's ``app.py`` composes its
routes and subscribers on top of it.

Start-up never blocks on the broker or the database: the HTTP server comes up at once (``/livez``
200, ``/readyz`` 503) and the broker connection is retried in the background. Once connected,
aio-pika's robust connection re-declares the topology and resumes consumers after an outage.

Shutdown on SIGTERM (uvicorn): new HTTP requests are refused, consumers stop taking messages and
in-flight handlers get ``graceful_timeout_seconds`` to finish (FastStream), background loops are
cancelled, and whatever an unfinished handler did not commit is redelivered by the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
import structlog
import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import HTMLResponse, JSONResponse
from faststream.rabbit import Channel, RabbitBroker
from faststream.rabbit.prometheus import RabbitPrometheusMiddleware
from faststream.specification import AsyncAPI
from faststream.specification.asyncapi.site import get_asyncapi_html
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

from shared import tracing
from shared.api import install_error_handlers
from shared.crypto import SecretBox
from shared.db import UnitOfWork, create_engine, retry_transient
from shared.door import DoorGuard
from shared.events import CloudEvent, EventData
from shared.logging import configure_logging, get_logger
from shared.outbox import OutboxRelay
from shared.settings import HeraldSettings
from shared.tenancy import TenantAuth
from shared.topology import EVENTS, declare_shared

log = get_logger(__name__)
T = TypeVar("T")

HTTP_REQUESTS = Counter(
    "herald_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "herald_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BROKER_CONNECTED = Gauge("herald_broker_connected", "1 while the broker connection is up", ["service"])

_consumer_metrics: RabbitPrometheusMiddleware | None = None


class HttpMetrics:
    """Request count and latency per route template, as plain ASGI middleware.

    Starlette's ``BaseHTTPMiddleware`` (``@app.middleware("http")``) runs the app in a task behind
    a memory stream per request; a pure ASGI wrapper costs a fraction of that on hot endpoints.
    The route template is read after the app ran: the router writes it into the shared scope.
    """

    def __init__(self, app: Any, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            HTTP_LATENCY.labels(self.service, method, path).observe(time.perf_counter() - started)
            HTTP_REQUESTS.labels(self.service, method, path, str(status)).inc()


#: an ``X-Request-ID`` a caller sends is kept when it is this tame (it goes into every log line of
#: the request); anything else is replaced by a fresh id
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")


class RequestIds:
    """``request_id`` on every log line written while an HTTP request is handled, tracing on or
    off: the caller's ``X-Request-ID`` when it sends a sane one, else a fresh one; the response
    echoes it in ``X-Request-ID`` so the caller can quote it. Plain ASGI and outermost (a request
    the body guard refuses has an id too); the cost is one header scan and a context variable."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for key, value in scope.get("headers", ()):
            if key.lower() == b"x-request-id":
                if _REQUEST_ID.fullmatch(value):
                    request_id = value
                break
        if request_id is None:
            request_id = uuid.uuid4().hex.encode()

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id.decode("latin-1")):
            await self.app(scope, receive, send_with_id)


def _consumer_metrics_middleware(service: str) -> RabbitPrometheusMiddleware:
    """FastStream's consumer metrics. Metric families are process-global, so one middleware serves
    every runtime in a process (one in production; several when tests build apps side by side)."""
    global _consumer_metrics
    if _consumer_metrics is None:
        _consumer_metrics = RabbitPrometheusMiddleware(
            registry=REGISTRY, app_name=f"herald-{service}", metrics_prefix="herald_consumer"
        )
    return _consumer_metrics


class ServiceRuntime:
    def __init__(
        self,
        settings: HeraldSettings,
        *,
        schema: str,
        metadata: sa.MetaData,
        title: str,
        description: str,
        version: str = "0.1.0",
    ) -> None:
        self.settings = settings
        self.service = settings.service_name
        self.schema = schema
        self.title = title
        self.description = description
        self.version = version
        # before the broker: its consumer middleware exists only when tracing is on
        traced = tracing.configure(self.service)
        self.engine = create_engine(
            settings.database_url, pool_size=settings.db_pool_size, application_name=f"herald-{self.service}"
        )
        # every service's models.py defines both tables in its schema (so Alembic migrates them)
        self.outbox = metadata.tables[f"{schema}.outbox"]
        self.processed = metadata.tables[f"{schema}.processed_events"]
        self.broker = RabbitBroker(
            settings.amqp_url,
            default_channel=Channel(
                prefetch_count=settings.prefetch_count, publisher_confirms=True, on_return_raises=True
            ),
            graceful_timeout=settings.graceful_timeout_seconds,
            app_id=f"herald-{self.service}",
            fail_fast=True,
            reconnect_interval=1.0,
            logger=get_logger(f"herald.{self.service}.broker"),
            # per-message "Received/Processed" lines: DEBUG, or they dominate the cost of a send
            log_level=logging.DEBUG,
            middlewares=[
                _consumer_metrics_middleware(self.service),
                # the event's ids on the log lines: from the span when tracing, else from the envelope
                tracing.consumer_middleware(self.service) if traced else tracing.ConsumerLogIds,
            ],
            description=description,
        )
        self.relay = OutboxRelay(
            service=self.service,
            engine=self.engine,
            outbox=self.outbox,
            broker=self.broker,
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
        )
        self.secrets = SecretBox(settings.encryption_keys.get_secret_value())
        self.auth = TenantAuth(self.engine)
        self.stopping = asyncio.Event()
        self.broker_started = asyncio.Event()
        self._loops: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self._on_shutdown: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self._tasks: list[asyncio.Task[Any]] = []

    # --- building blocks for handlers ----------------------------------------------------

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.engine, self.schema, self.outbox, self.processed)

    async def with_db(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a consumer's transaction, waiting out a database outage instead of failing the
        message (it stays unacked, so nothing is lost if the process dies meanwhile)."""
        return await retry_transient(operation, what=what, stopping=self.stopping)

    def declare_publishes(self, *events: type[EventData]) -> None:
        """Document in the AsyncAPI spec the events this service publishes (through its outbox).

        The relay publishes raw outbox rows, so these publisher objects exist for the contract:
        the same exchange, routing key and persistence the relay uses, with the event's schema.
        """
        for event in events:
            self.broker.publisher(
                exchange=EVENTS,
                routing_key=event.type_name(),
                persist=True,
                title=f"{self.service}:{event.type_name()}",
                description=(event.__doc__ or "").strip() or None,
                schema=CloudEvent[event],  # type: ignore[valid-type]
            )

    def add_loop(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Register a long-running coroutine (a claim loop, a sweeper) started with the app."""
        self._loops.append((name, loop))

    def on_shutdown(self, name: str, close: Callable[[], Awaitable[None]]) -> None:
        """Register a coroutine run once at shutdown, after the consumers and loops stopped and
        before the database engine is disposed (a service's own clients: an HTTP pool, …)."""
        self._on_shutdown.append((name, close))

    # --- lifecycle -----------------------------------------------------------------------

    async def _connect_broker(self) -> None:
        delay = 0.5
        while not self.stopping.is_set():
            try:
                await self.broker.start()
                await declare_shared(self.broker, self.service)
                self.broker_started.set()
                self.relay.wake()
                log.info("broker connected")
                return
            except Exception as exc:
                log.warning("broker not reachable, retrying", error=repr(exc)[:200], retry_in=delay)
                with contextlib.suppress(Exception):
                    await self.broker.stop()
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)

    async def _relay_once_connected(self) -> None:
        # Rows committed before the broker answers wait in the outbox; the relay starts with the
        # first connection and from then on rides out outages with its own backoff.
        await self.broker_started.wait()
        await self.relay.run()

    async def _run_loop(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        while not self.stopping.is_set():
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background loop crashed, restarting", loop=name)
                await asyncio.sleep(1.0)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        self._tasks = [
            asyncio.create_task(self._connect_broker(), name="broker-connect"),
            asyncio.create_task(
                self._run_loop("outbox-relay", self._relay_once_connected), name="outbox-relay"
            ),
            *(asyncio.create_task(self._run_loop(n, fn), name=n) for n, fn in self._loops),
        ]
        # Everything built so far (modules, the app, libphonenumber's metadata, the models) lives
        # as long as the process. Freezing it takes it out of the collector's generations: a full
        # collection under load no longer walks those objects, which showed as a ~100 ms stall
        # every few seconds (ingest at 32 concurrent webhooks: p99 114-127 ms without, 33-44 ms
        # with; CPU per webhook 0.46-0.54 ms without, 0.39-0.50 ms with).
        # The young generation is then collected every 20,000 allocations instead of 700: a
        # request allocates hundreds of short-lived objects that reference counting frees anyway
        # (ingest: 0.32-0.42 ms of CPU per webhook instead of 0.39-0.50, 1,761-2,301 req/s
        # instead of 1,488-1,841, in four runs each).
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        log.info("service started", port=self.settings.port)
        try:
            yield
        finally:
            log.info("service stopping: draining in-flight work")
            self.stopping.set()
            await self.relay.stop()
            with contextlib.suppress(Exception):
                await self.broker.stop()  # waits up to graceful_timeout for running handlers
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for name, close in self._on_shutdown:
                try:
                    await close()
                except Exception:
                    log.exception("shutdown hook failed", hook=name)
            await self.engine.dispose()
            tracing.shutdown()
            log.info("service stopped")

    # --- health --------------------------------------------------------------------------

    async def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        broker_ok = self.broker_started.is_set() and await self.broker.ping(timeout=1.0)
        BROKER_CONNECTED.labels(self.service).set(1 if broker_ok else 0)
        checks["broker"] = "ok" if broker_ok else "unavailable"
        try:
            async with asyncio.timeout(2.0):
                async with self.engine.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # any failure means not ready; the reason goes to the answer
            checks["database"] = f"unavailable: {type(exc).__name__}"
        return checks

    def asyncapi(self) -> Any:
        return AsyncAPI(
            self.broker, title=f"Herald {self.service}", version=self.version, description=self.description
        ).to_specification()

    # --- the app -------------------------------------------------------------------------

    def create_app(
        self,
        routers: Sequence[APIRouter],
        *,
        openapi_tags: list[dict[str, Any]] | None = None,
        guard: bool = True,
    ) -> FastAPI:
        """The service's FastAPI app. ``guard`` puts ``DoorGuard`` (body size, JSON depth, UTF-8)
        outermost, and ``RequestIds`` outside it; pass False when something else wraps the app and
        both go outside that."""
        app = FastAPI(
            title=self.title,
            description=self.description,
            version=self.version,
            lifespan=self.lifespan,
            openapi_tags=openapi_tags,
            telemetry=tracing.FASTAPI_TELEMETRY,  # type: ignore[arg-type]
        )
        install_error_handlers(app)
        service = self.service

        app.add_middleware(HttpMetrics, service=service)
        if guard:  # added last: outermost, before metrics and routing see the body
            app.add_middleware(DoorGuard, max_body_bytes=self.settings.max_body_bytes)
            app.add_middleware(RequestIds)

        ops = APIRouter(tags=["operations"])

        @ops.get("/livez", summary="The process is alive")
        async def livez() -> dict[str, str]:
            return {"status": "alive"}

        @ops.get(
            "/readyz", summary="Broker and database answer", responses={503: {"description": "Not ready"}}
        )
        async def readyz() -> JSONResponse:
            checks = await self.readiness()
            ready = all(v == "ok" for v in checks.values())
            return JSONResponse(
                status_code=200 if ready else 503,
                content={"status": "ready" if ready else "unavailable", "checks": checks},
            )

        @ops.get("/metrics", summary="Prometheus metrics")
        async def metrics() -> Response:
            return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

        @ops.get(
            "/asyncapi.json", summary="AsyncAPI document: the events this service consumes and publishes"
        )
        async def asyncapi_json() -> JSONResponse:
            return JSONResponse(self.asyncapi().to_jsonable())

        @ops.get("/asyncapi", summary="AsyncAPI document, rendered", response_class=HTMLResponse)
        async def asyncapi_html() -> HTMLResponse:
            return HTMLResponse(get_asyncapi_html(self.asyncapi(), try_it_out_path=None))

        app.include_router(ops)
        for router in routers:
            app.include_router(router)
        return app

    def serve(self, app: FastAPI) -> None:
        """Run the app under uvicorn in this process until SIGTERM/SIGINT."""
        config = uvicorn.Config(
            app,
            host=self.settings.host,
            port=self.settings.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=int(self.settings.graceful_timeout_seconds),
            server_header=False,
        )
        if not self.settings.reuse_port:
            uvicorn.Server(config).run()
            return
        sock = socket.socket(socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.settings.host, self.settings.port))
        uvicorn.Server(config).run(sockets=[sock])


def bootstrap(settings: HeraldSettings) -> None:
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
