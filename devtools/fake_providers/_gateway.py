"""What the fake Chatwoot, Evolution API and WAHA servers share: an aiohttp server on a free port
that records every request and lets a test inject failures.

A fake runs in-process (``async with FakeWaha() as waha: …``, ``waha.base_url``) or on its own
(``python -m devtools.fake_providers.waha --port 3000``). Faults are consumed in order by the
requests whose path contains the fault's ``path`` (every request when None):

- ``fail(status, body, headers)``: answer with that status and body instead of handling it
- ``delay(seconds)``: hold the answer (a client timeout shorter than that sees a timeout)
- ``drop()``: close the connection without an answer

Requests are recorded before faults apply, so a test sees each attempt, failed or not. The fake
also serves media at ``/_media/<name>`` (no auth) so a link in a message can point at it.

Webhooks: with ``webhook_url`` set (``configure_webhook``), ``send_webhook`` posts a body there as
the gateway would (the subclass signs it or adds its headers) and records the answer in
``webhooks``. WAHA and Evolution use it for their session webhooks (``drop_session`` …).
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

import aiohttp
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class UploadedFile:
    field: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Received:
    """One request as the fake saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)


@dataclass
class Fault:
    kind: str  # "status" | "delay" | "drop"
    path: str | None = None
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    times: int = 1


#: where the middleware leaves the parsed request for the handlers
RECEIVED = web.RequestKey("received", Received)


def _free_port() -> int:
    from devtools.ports import free_port

    return free_port()


def tiny_png() -> bytes:
    """A valid 1×1 PNG: the stand-in for a QR code image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )


QR_PNG = tiny_png()
QR_DATA_URL = "data:image/png;base64," + base64.b64encode(QR_PNG).decode()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


class FakeGateway:
    """Base of the three fakes: subclasses add their routes in ``routes()``."""

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or _free_port()
        self.received: list[Received] = []
        self.faults: list[Fault] = []
        self.media: dict[str, tuple[bytes, str]] = {}
        self.webhook_url: str | None = None
        self.webhook_headers: dict[str, str] = {}
        #: (HTTP status of the receiver's answer, body) of each webhook sent
        self.webhooks: list[tuple[int, Any]] = []
        self._runner: web.AppRunner | None = None

    # --- what a test uses -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def media_url(self, name: str) -> str:
        return f"{self.base_url}/_media/{name}"

    def add_media(self, name: str, data: bytes, content_type: str) -> str:
        self.media[name] = (data, content_type)
        return self.media_url(name)

    def fail(
        self,
        status: int,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        path: str | None = None,
        times: int = 1,
    ) -> None:
        self.faults.append(
            Fault("status", path, status=status, body=body, headers=headers or {}, times=times)
        )

    def delay(self, seconds: float, *, path: str | None = None, times: int = 1) -> None:
        self.faults.append(Fault("delay", path, seconds=seconds, times=times))

    def drop(self, *, path: str | None = None, times: int = 1) -> None:
        self.faults.append(Fault("drop", path, times=times))

    def requests_to(self, fragment: str, method: str | None = None) -> list[Received]:
        return [r for r in self.received if fragment in r.path and (method is None or r.method == method)]

    def configure_webhook(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.webhook_url = url
        self.webhook_headers = dict(headers or {})

    def sign(self, raw: bytes) -> dict[str, str]:
        """Headers the gateway adds to a webhook it sends (subclasses sign)."""
        return dict(self.webhook_headers)

    async def send_webhook(self, body: Any) -> int | None:
        """Post ``body`` to the configured webhook URL; the receiver's status (None: none set)."""
        if self.webhook_url is None:
            return None
        raw = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **self.sign(raw)}
        async with aiohttp.ClientSession() as client:
            async with client.post(self.webhook_url, data=raw, headers=headers) as response:
                await response.read()
                self.webhooks.append((response.status, body))
                return response.status

    def clear(self) -> None:
        self.received.clear()
        self.faults.clear()

    # --- server ---------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_and_inject], client_max_size=200 * 1024 * 1024)
        app.router.add_get("/_media/{name}", self._serve_media)
        self.routes(app)
        return app

    async def start(self) -> Self:
        self._runner = web.AppRunner(self.build_app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve_media(self, request: web.Request) -> web.StreamResponse:
        item = self.media.get(request.match_info["name"])
        if item is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=item[0], content_type=item[1])

    @web.middleware
    async def _record_and_inject(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/_media/"):
            received = await self._record(request)
            request[RECEIVED] = received  # the body is read once: handlers use this
            self.received.append(received)
        fault = self._take_fault(request.path)
        if fault is not None:
            if fault.kind == "drop":
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError
            if fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
            else:
                return json_response(fault.body, status=fault.status, headers=fault.headers)
        return await handler(request)

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.path is None or fault.path in path:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    @staticmethod
    async def _record(request: web.Request) -> Received:
        received = Received(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                data = await part.read()  # type: ignore[union-attr]
                if part.filename:  # type: ignore[union-attr]
                    received.files.append(
                        UploadedFile(
                            part.name or "", part.filename, part.headers.get("Content-Type"), bytes(data)
                        )  # type: ignore[union-attr]
                    )
                else:
                    received.form[part.name or ""] = bytes(data).decode()  # type: ignore[union-attr]
        elif request.can_read_body:
            raw = await request.read()
            try:
                received.json = json.loads(raw) if raw else None
            except ValueError:
                received.json = raw.decode(errors="replace")
        return received


def run_standalone(fake: FakeGateway) -> None:
    """Serve a fake until interrupted (for ``python -m devtools.fake_providers.<name>``)."""
    web.run_app(fake.build_app(), host=fake.host, port=fake.port)
