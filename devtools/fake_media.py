"""A local HTTP server that speaks the media side of the providers, for tests and benchmarks.

- Meta Graph: ``GET /v23.0/{media_id}`` (Bearer token) → ``{url, mime_type, file_size, id}``;
  ``GET /files/{media_id}`` with the same Bearer token → the bytes (401 without it).
- Chatwoot ActiveStorage: ``GET /rails/active_storage/blobs/redirect/{name}`` → 302 to ``/files/{name}``.
- WAHA: ``GET /api/files/{name}`` needs ``X-Api-Key``.
- OpenAI-compatible ``POST /v1/audio/transcriptions`` (multipart ``file`` + ``model``) → ``{"text"}``;
  ``transcribe_fail_next`` answers 500 with OpenAI's error body that many times first.

Media are registered with ``put(media_id, data, mime)``; requests are recorded in ``calls``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from devtools.processes import free_port


def _multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """The parts of a multipart/form-data body by field name (enough for a fake server)."""
    message = BytesParser(policy=default).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not message.is_multipart():
        return {}
    return {
        str(part.get_param("name", header="content-disposition")): part.get_payload(decode=True) or b""
        for part in message.iter_parts()
    }


@dataclass
class FakeMedia:
    token: str = "meta-token"
    waha_key: str = "waha-key"
    transcript: str = "I would like to move my appointment to Friday"
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    fail_next: int = 0
    #: transcriptions still to answer 500 (OpenAI's error shape) before answering again
    transcribe_fail_next: int = 0
    #: the headers of every transcription request, in order
    transcribe_headers: list[dict[str, str]] = field(default_factory=list)
    #: seconds every file download is held before it is answered (a slow CDN)
    file_delay: float = 0.0
    port: int = 0
    _server: Any = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def put(self, media_id: str, data: bytes, mime: str) -> None:
        self.files[media_id] = (data, mime)

    def _app(self) -> Starlette:
        async def graph(request: Request) -> Response:
            self.calls.append(("graph", request.path_params["media_id"]))
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return JSONResponse(
                    {
                        "error": {
                            "message": "Invalid OAuth access token.",
                            "type": "OAuthException",
                            "code": 190,
                        }
                    },
                    401,
                )
            media_id = request.path_params["media_id"]
            if media_id not in self.files:
                return JSONResponse(
                    {
                        "error": {
                            "message": "Unsupported get request.",
                            "type": "GraphMethodException",
                            "code": 100,
                        }
                    },
                    400,
                )
            data, mime = self.files[media_id]
            return JSONResponse(
                {
                    "messaging_product": "whatsapp",
                    "url": f"{self.url}/files/{media_id}",
                    "mime_type": mime,
                    "file_size": str(len(data)),
                    "id": media_id,
                }
            )

        async def files(request: Request) -> Response:
            name = request.path_params["name"]
            self.calls.append(("file", name))
            if self.file_delay:
                await asyncio.sleep(self.file_delay)
            if self.fail_next > 0:
                self.fail_next -= 1
                return Response("temporarily unavailable", 503)
            if name.startswith("meta-") and request.headers.get("authorization") != f"Bearer {self.token}":
                return Response("unauthorized", 401)
            if name not in self.files:
                return Response("not found", 404)
            data, mime = self.files[name]
            return Response(data, media_type=mime)

        async def redirect(request: Request) -> Response:
            self.calls.append(("redirect", request.path_params["name"]))
            return RedirectResponse(f"{self.url}/files/{request.path_params['name']}", 302)

        async def waha_files(request: Request) -> Response:
            self.calls.append(("waha", request.path_params["name"]))
            if request.headers.get("x-api-key") != self.waha_key:
                return JSONResponse({"statusCode": 401, "message": "Unauthorized"}, 401)
            name = request.path_params["name"]
            if name not in self.files:
                return Response("not found", 404)
            data, mime = self.files[name]
            return Response(data, media_type=mime)

        async def transcriptions(request: Request) -> Response:
            form = _multipart(request.headers.get("content-type", ""), await request.body())
            if not form.get("file") or not form.get("model"):
                return JSONResponse(
                    {"error": {"message": "file and model are required", "type": "invalid_request_error"}},
                    400,
                )
            self.calls.append(("transcribe", form["model"].decode()))
            self.transcribe_headers.append(dict(request.headers))
            if self.transcribe_fail_next > 0:
                self.transcribe_fail_next -= 1
                return JSONResponse(
                    {
                        "error": {
                            "message": "The server had an error while processing your request.",
                            "type": "server_error",
                            "param": None,
                            "code": None,
                        }
                    },
                    500,
                )
            return JSONResponse({"text": self.transcript})

        return Starlette(
            routes=[
                Route("/v23.0/{media_id}", graph),
                Route("/files/{name}", files),
                Route("/rails/active_storage/blobs/redirect/{name}", redirect),
                Route("/api/files/{name}", waha_files),
                Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
            ]
        )

    def start(self) -> FakeMedia:
        self.port = self.port or free_port()
        config = uvicorn.Config(
            self._app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
