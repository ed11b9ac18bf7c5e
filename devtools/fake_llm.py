"""A local OpenAI-compatible model for tests and benches: ``POST /v1/chat/completions`` answering
chat completion objects with ``usage``, and errors as ``{"error": {message, type, param, code}}``
(``../shared/contracts/openai/``, README section 7).

It answers the pipeline's model agents with valid JSON built from what they send (an order's
platform and topic; topic and angle; a post from the cited notes; a title and the post cut to its
limit). Modes, consumed one per
request from ``script(...)`` and then ``default``:

- ``ok``; ``slow`` (waits ``slow_seconds`` first, for a client timeout to trip);
- ``429`` (with ``Retry-After: retry_after``), ``500``, ``503``, ``401``;
- ``malformed`` (content that is not JSON), ``invalid`` (JSON that does not match the schema);
- a dict: that object as the answer's content (a scripted reading, right or wrong);
- ``reject_response_format=True``: any request carrying ``response_format`` gets 400, as servers
  without structured output answer.

``latency`` delays every answer (the bench's 300 ms model). In-process: ``async with FakeChatModel()
as llm: llm.base_url``; standalone: ``python -m devtools.fake_llm --port 8090 --latency 0.3``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any, Self

from aiohttp import web


def _free_port() -> int:
    from devtools.ports import free_port

    return free_port()


def _error(status: int, message: str, type_: str, code: str | None = None, **headers: str) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers or None)


def _schema_of(body: dict[str, Any]) -> dict[str, Any]:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return fmt["json_schema"].get("schema") or {}
    for m in reversed(body.get("messages", [])):  # the plain-instruction fallback
        content = m.get("content") or ""
        if m.get("role") == "system" and "JSON schema:\n" in content:
            return json.loads(content.split("JSON schema:\n", 1)[1])
    return {}


def _payload(body: dict[str, Any]) -> dict[str, Any]:
    for m in body.get("messages", []):
        if m.get("role") == "user":
            try:
                return json.loads(m["content"])
            except (ValueError, TypeError):
                return {}
    return {}


def answer_for(body: dict[str, Any]) -> dict[str, Any]:
    """A valid answer to one of the pipeline's agents, from the schema asked for and the payload."""
    props = set((_schema_of(body).get("properties") or {}).keys())
    payload = _payload(body)
    if "platform" in props:  # the order parser: a literal reading of the message
        words = str(payload.get("message", "")).lower().replace(",", " ").split()
        named = {
            "linkedin": "linkedin",
            "instagram": "instagram",
            "twitter": "x",
            "tweet": "x",
            "blog": "blog",
        }
        platform = next((named[w] for w in words if w in named), None)
        topic = " ".join(words[words.index("about") + 1 :]) if "about" in words else None
        return {"platform": platform, "length": None, "tone": None, "topic": topic or None}
    if "title" in props:
        limit = int(payload.get("limit") or 3000)
        topic = (payload.get("brief") or {}).get("topic") or "Notes"
        return {"title": topic.capitalize()[:80], "text": str(payload.get("post", ""))[:limit]}
    if "text" in props:
        notes = [c["note"] for c in payload.get("cited_notes", [])]
        topic = (payload.get("brief") or {}).get("topic") or "this"
        return {"text": "\n".join([f"Here is what we learned about {topic}.", *notes])}
    if "topic" in props:
        return {"topic": payload.get("suggested_topic") or "news", "angle": "what we learned"}
    return {}


class FakeChatModel:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        latency: float = 0.0,
        slow_seconds: float = 5.0,
        retry_after: str = "1",
        reject_response_format: bool = False,
        api_key: str | None = None,
    ) -> None:
        self.host, self.port = host, port or _free_port()
        self.latency = latency
        self.slow_seconds = slow_seconds
        self.retry_after = retry_after
        self.reject_response_format = reject_response_format
        self.api_key = api_key
        self.default = "ok"
        self._script: list[str | dict[str, Any]] = []
        #: seconds the next request asking for this json_schema name waits first (one request each:
        #: ``delay_next["WriterAnswer"] = 30`` holds the writer step while a test kills the process)
        self.delay_next: dict[str, float] = {}
        #: every request body, in order (failed attempts too)
        self.received: list[dict[str, Any]] = []
        #: the W3C ``traceparent`` header of every request, in order (None: not sent)
        self.traceparents: list[str | None] = []
        self.answered_at: list[float] = []
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def script(self, *modes: str | dict[str, Any]) -> None:
        """The next requests' modes, one each, before ``default`` applies again."""
        self._script.extend(modes)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        self.received.append(body)
        self.traceparents.append(request.headers.get("traceparent"))
        mode = self._script.pop(0) if self._script else self.default
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if mode == "401":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if mode == "429":
            return _error(
                429,
                "Rate limit reached for requests. Please try again later.",
                "requests",
                "rate_limit_exceeded",
                **{"Retry-After": self.retry_after},
            )
        if mode in ("500", "503"):
            return _error(int(mode), "The server had an error while processing your request.", "server_error")
        if not isinstance(body.get("messages"), list) or not body.get("model"):
            return _error(400, "'model' and 'messages' are required properties.", "invalid_request_error")
        if self.reject_response_format and "response_format" in body:
            return _error(400, "response_format is not supported by this model.", "invalid_request_error")
        schema_name = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
        if schema_name in self.delay_next:
            await asyncio.sleep(self.delay_next.pop(schema_name))
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        if isinstance(mode, dict):
            content = json.dumps(mode, ensure_ascii=False)
        elif mode == "malformed":
            content = 'Sure! Here is the JSON: {"text": "unterminated'
        elif mode == "invalid":
            content = json.dumps({"unexpected": "shape"})
        else:
            content = json.dumps(answer_for(body), ensure_ascii=False)
        prompt_tokens = sum(len(m.get("content") or "") for m in body["messages"]) // 4 + 1
        completion_tokens = len(content) // 4 + 1
        self.answered_at.append(time.monotonic())
        return web.json_response(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    args = parser.parse_args(argv)
    fake = FakeChatModel(host=args.host, port=args.port, latency=args.latency)
    web.run_app(fake.app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
