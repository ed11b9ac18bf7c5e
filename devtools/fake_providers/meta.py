"""A local WhatsApp Cloud API: ``POST /{version}/{phone_number_id}/messages``.

It checks what Meta checks first (bearer token, ``messaging_product``, ``to``, ``type`` and the
object of that type), answers ``{"messaging_product", "contacts", "messages": [{"id": "wamid…"}]}``
and errors in Meta's shape (``{"error": {"message", "type", "code", "error_data", "fbtrace_id"}}``)
with the codes of ``error-codes.json``. It records every accepted message with its arrival time.

Control endpoints (not Meta's), for tests and the benchmark:
- ``POST /_fake/errors`` ``{"code": 131026, "count": 1, "to": "5511…"?, "http_status": 400?}``:
  the next ``count`` sends (to ``to`` only, if given) fail with that code;
- ``POST /_fake/latency`` ``{"seconds": 0.05}``; ``POST /_fake/reset``;
- ``GET /_fake/messages`` (everything received) and ``GET /_fake/stats`` (count, first/last time).

In-process: ``async with FakeMeta() as meta: meta.url …`` (tests); as a process:
``python -m devtools.fake_providers.meta --port 9000 --token T`` (the benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ERRORS: dict[int, tuple[int, str, str]] = {
    # code: (http status, message, details) as Meta answers them
    0: (401, "(#0) AuthException", "Could not authenticate the app user."),
    4: (429, "(#4) Application request limit reached", "Too many calls."),
    100: (400, "(#100) Invalid parameter", "Parameter value is not valid."),
    190: (401, "Error validating access token: Session has expired", "Access token expired."),
    368: (403, "Temporarily blocked for policies violations", "The WABA is restricted."),
    80007: (400, "(#80007) Rate limit issues", "Business request limit reached."),
    130429: (400, "(#130429) Rate limit hit", "Cloud API message throughput has been reached."),
    131000: (500, "(#131000) Something went wrong", "Something went wrong."),
    131008: (400, "(#131008) Required parameter is missing", "A required parameter is missing."),
    131009: (400, "(#131009) Parameter value is not valid", "Parameter value is not valid."),
    131026: (400, "(#131026) Message Undeliverable", "Message failed to send."),
    131047: (400, "(#131047) Re-engagement message", "More than 24 hours have passed."),
    131048: (400, "(#131048) Spam rate limit hit", "Too many messages were flagged."),
    131050: (400, "(#131050) User stopped marketing messages", "The user opted out of marketing."),
    131056: (
        400,
        "(#131056) (Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone number "
        "to the same phone number in a short period of time.",
    ),
    132000: (
        400,
        "(#132000) Number of parameters does not match the expected number of params",
        "body: number of localizable_params (0) does not match the expected number of params (1)",
    ),
    132001: (404, "(#132001) Template name does not exist in the translation", "template not found"),
    132015: (400, "(#132015) Template is paused", "Template paused for low quality."),
    132016: (400, "(#132016) Template is disabled", "Template permanently disabled for low quality."),
}

MESSAGE_TYPES = ("text", "image", "document", "audio", "video", "template", "interactive")


def error_body(code: int, message: str, details: str) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": uuid.uuid4().hex[:22],
        }
    }


@dataclass
class Injected:
    code: int
    count: int
    to: str | None
    http_status: int | None


@dataclass
class FakeMetaState:
    token: str | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    errors: list[Injected] = field(default_factory=list)
    latency: float = 0.0
    #: seconds between accepting a message (it is in ``received``, with its wamid) and answering:
    #: a status webhook for it can overtake the answer, as with the real Cloud API under load
    answer_delay: float = 0.0
    attempts: int = 0


def _invalid(details: str) -> web.Response:
    return web.json_response(error_body(100, "(#100) Invalid parameter", details), status=400)


def _check_body(body: Any) -> str | None:
    """What Meta would refuse with code 100, or None."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    if body.get("messaging_product") != "whatsapp":
        return "messaging_product must be 'whatsapp'"
    to = body.get("to")
    if not isinstance(to, str) or not to.lstrip("+").isdigit():
        return "to must be a phone number in international format"
    kind = body.get("type", "text")
    if kind not in MESSAGE_TYPES:
        return f"type {kind!r} is not supported"
    obj = body.get(kind)
    if not isinstance(obj, dict):
        return f"the {kind!r} object is required for type {kind!r}"
    if kind == "text" and not obj.get("body"):
        return "text.body is required"
    if kind in ("image", "document", "audio", "video") and not (obj.get("link") or obj.get("id")):
        return f"{kind}.link or {kind}.id is required"
    if kind == "template" and not (obj.get("name") and (obj.get("language") or {}).get("code")):
        return "template.name and template.language.code are required"
    if kind == "interactive":
        if obj.get("type") not in ("button", "list"):
            return "interactive.type must be 'button' or 'list'"
        if not (obj.get("body") or {}).get("text"):
            return "interactive.body.text is required"
        action = obj.get("action") or {}
        if obj["type"] == "button" and not 1 <= len(action.get("buttons") or []) <= 3:
            return "interactive buttons: 1 to 3 buttons"
        if obj["type"] == "list" and not (action.get("button") and action.get("sections")):
            return "interactive list: action.button and action.sections are required"
    return None


def build_app(state: FakeMetaState) -> web.Application:
    async def send(request: web.Request) -> web.Response:
        state.attempts += 1
        if state.latency:
            await asyncio.sleep(state.latency)
        auth = request.headers.get("Authorization", "")
        if state.token is not None and auth != f"Bearer {state.token}":
            return web.json_response(
                error_body(190, "Invalid OAuth access token - Cannot parse access token", "bad token"),
                status=401,
            )
        try:
            body = await request.json()
        except ValueError:
            return _invalid("the request body is not JSON")
        problem = _check_body(body)
        if problem:
            return _invalid(problem)
        to = body["to"].lstrip("+")
        for injected in state.errors:
            if injected.count > 0 and (injected.to is None or injected.to.lstrip("+") == to):
                injected.count -= 1
                status, message, details = ERRORS.get(
                    injected.code, (400, f"(#{injected.code}) Error", "injected")
                )
                return web.json_response(
                    error_body(injected.code, message, details), status=injected.http_status or status
                )
        wamid = "wamid." + uuid.uuid4().hex
        state.received.append(
            {
                "at": time.time(),
                "version": request.match_info["version"],
                "phone_number_id": request.match_info["phone_number_id"],
                "id": wamid,
                "body": body,
            }
        )
        if state.answer_delay:
            await asyncio.sleep(state.answer_delay)
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": body["to"], "wa_id": to}],
                "messages": [{"id": wamid, "message_status": "accepted"}],
            }
        )

    async def inject(request: web.Request) -> web.Response:
        data = await request.json()
        state.errors.append(
            Injected(
                code=int(data["code"]),
                count=int(data.get("count", 1)),
                to=data.get("to"),
                http_status=data.get("http_status"),
            )
        )
        return web.json_response({"ok": True})

    async def latency(request: web.Request) -> web.Response:
        state.latency = float((await request.json())["seconds"])
        return web.json_response({"ok": True})

    async def reset(_: web.Request) -> web.Response:
        state.received.clear()
        state.errors.clear()
        state.latency = 0.0
        state.attempts = 0
        return web.json_response({"ok": True})

    async def messages(_: web.Request) -> web.Response:
        return web.json_response({"items": state.received})

    async def stats(_: web.Request) -> web.Response:
        times = [r["at"] for r in state.received]
        return web.json_response(
            {
                "count": len(times),
                "attempts": state.attempts,
                "first": min(times) if times else None,
                "last": max(times) if times else None,
            }
        )

    async def times(_: web.Request) -> web.Response:
        return web.json_response({"items": [[r["body"]["to"], r["at"]] for r in state.received]})

    app = web.Application()
    app.router.add_post("/{version}/{phone_number_id}/messages", send)
    app.router.add_post("/_fake/errors", inject)
    app.router.add_post("/_fake/latency", latency)
    app.router.add_post("/_fake/reset", reset)
    app.router.add_get("/_fake/messages", messages)
    app.router.add_get("/_fake/stats", stats)
    app.router.add_get("/_fake/times", times)
    return app


class FakeMeta:
    """The fake Cloud API inside the current event loop, on a free port."""

    def __init__(self, token: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = FakeMetaState(token=token)
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeMeta:
        self._runner = web.AppRunner(build_app(self.state), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{self._host}:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeMeta:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def fail_next(self, code: int, count: int = 1, to: str | None = None) -> None:
        self.state.errors.append(Injected(code=code, count=count, to=to, http_status=None))

    @property
    def received(self) -> list[dict[str, Any]]:
        return self.state.received


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--token", default=None, help="Accept only this bearer token")
    args = parser.parse_args(argv)
    web.run_app(
        build_app(FakeMetaState(token=args.token)),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
