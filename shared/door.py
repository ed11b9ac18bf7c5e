"""One guard at every door: body size, JSON nesting depth and UTF-8, checked before any app code.

``DoorGuard`` is plain ASGI so it can sit outside FastAPI and outside ingest's webhook fast path
alike. A request with a body is read (at most ``max_body_bytes``), checked, and replayed to the app
as one ``http.request`` message; a bodyless request passes untouched. Failures answer in Herald's
error shape (``shared.api.ErrorBody``) with a message that says what to fix — never a 500 from a
``RecursionError`` deep inside a JSON parser.
"""

from __future__ import annotations

import json
import re
from typing import Any

_JSON_TYPES = ("application/json",)


#: a JSON string (escapes included, unterminated allowed) or one bracket: the scan below walks
#: these tokens in C instead of every byte in Python
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_OPENERS = frozenset(b"{[")


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """True when ``body`` nests objects/arrays deeper than ``limit``.

    Non-recursive, so it cannot overflow the stack whatever the input. Cheap on the hot path: a
    body with no more opening brackets than the limit (nearly every webhook and request) is
    answered by two C-level counts; otherwise one regex pass over strings and brackets.
    """
    if body.count(b"{") + body.count(b"[") <= limit:
        return False
    depth = 0
    for match in _TOKENS.finditer(body):
        first = body[match.start()]
        if first in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif first != 0x22:  # a closing bracket
            depth -= 1
    return False


def is_json_content_type(content_type: str) -> bool:
    """application/json, application/*+json, or no content type at all."""
    media = content_type.split(";", 1)[0].strip().lower()
    if not media:
        return True
    return media in _JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def send_json(
    send: Any, status: int, payload: Any, *, close: bool = False, extra_headers: dict[str, str] | None = None
) -> None:
    """Answer an ASGI request with a JSON body, straight from a raw ASGI app."""
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (extra_headers or {}).items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class DoorGuard:
    def __init__(self, app: Any, *, max_body_bytes: int, max_json_depth: int = 64) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    async def _reject(self, send: Any, status: int, error: str, message: str) -> None:
        # the unread rest of the body makes the connection unusable for another request
        await send_json(send, status, {"error": error, "message": message}, close=True)

    def _too_large(self) -> str:
        return f"body exceeds {self.max_body_bytes} bytes: send less or split the batch"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        chunked = "chunked" in (_header(scope, b"transfer-encoding") or "").lower()
        if declared is None and not chunked:
            await self.app(scope, receive, send)  # bodyless
            return
        if declared is not None and declared.strip().isdigit():
            size = int(declared)
            if size == 0:
                await self.app(scope, receive, send)
                return
            if size > self.max_body_bytes:
                await self._reject(send, 413, "payload_too_large", self._too_large())
                return

        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await self._reject(send, 413, "payload_too_large", self._too_large())
                return
            if not message.get("more_body", False):
                break
        raw = bytes(body)

        if raw and is_json_content_type(_header(scope, b"content-type") or ""):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                await self._reject(send, 400, "malformed_json", "body is not valid UTF-8: encode it as UTF-8")
                return
            if json_depth_exceeds(raw, self.max_json_depth):
                await self._reject(
                    send,
                    400,
                    "malformed_json",
                    f"JSON is nested deeper than {self.max_json_depth} levels: flatten it",
                )
                return

        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
