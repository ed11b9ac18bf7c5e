"""An OpenAI-compatible chat-completions client (OpenAI, Ollama, vLLM, llama.cpp, LM Studio).

``POST {base_url}/chat/completions`` per ``../shared/contracts/openai/``. Invariants:

- one semaphore bounds the calls in flight across every agent (held only while a request is on
  the wire, never while backing off);
- 429 (honouring ``Retry-After``, seconds or an HTTP date, capped), 408/5xx, timeouts and connection
  errors are retried with exponential backoff and full jitter, up to ``max_attempts``; any other 4xx
  fails at once with the server's own message;
- structured output asks for ``response_format`` ``json_schema``; a server that rejects it (400) is
  asked again with a plain JSON instruction, and is not asked for ``response_format`` again;
- an answer that is not JSON or does not validate gets one corrective retry, then the call fails;
- prompts and answers are never logged (they carry note bodies and drafts), nor put on spans;
- with tracing on, each HTTP attempt is a CLIENT span ``chat {model}`` with the OpenTelemetry
  GenAI attributes (``gen_ai.request.model``, ``gen_ai.usage.input_tokens``, …), the agent and
  the attempt, and the request carries its ``traceparent``; with tracing off, nothing of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import httpx
from httpx_aiohttp import AiohttpTransport
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError

from shared import tracing

T = TypeVar("T", bound=BaseModel)
log = logging.getLogger("herald.pipeline.llm")

LATENCY = Histogram(
    "herald_pipeline_llm_seconds",
    "Time of one agent's model call, retries included",
    ["agent"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80),
)
TOKENS = Counter("herald_pipeline_llm_tokens_total", "Tokens used (usage.total_tokens)", ["agent"])
FAILURES = Counter("herald_pipeline_llm_failures_total", "Model calls that failed", ["agent", "reason"])
ATTEMPTS = Counter(
    "herald_pipeline_llm_http_attempts_total", "HTTP attempts by outcome", ["agent", "outcome"]
)

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class LLMError(Exception):
    """A model call that failed; ``str()`` is a sentence a user can read."""

    reason = "error"
    #: tokens the failed call spent anyway (answers that did not validate)
    tokens = 0


class ModelUnavailable(LLMError):
    reason = "unavailable"


class ModelRejected(LLMError):
    reason = "rejected"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the language model refused the request: HTTP {status}: {message}")
        self.status = status
        self.server_message = message


class InvalidAnswer(LLMError):
    reason = "invalid"


@dataclass(frozen=True)
class Completion:
    content: str
    model: str
    tokens: int
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None


@dataclass(frozen=True)
class Structured(Generic[T]):
    value: T
    model: str
    tokens: int


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _is_timeout(exc: httpx.TransportError) -> bool:
    """Whether no answer came in time. httpx-aiohttp maps every aiohttp connection error (a
    refused connection too) to ``ConnectTimeout``: the aiohttp cause tells the two apart."""
    cause = exc.__cause__
    if cause is not None and type(cause).__module__.startswith("aiohttp"):
        return isinstance(cause, TimeoutError)
    return isinstance(exc, httpx.TimeoutException)


def _server_message(resp: httpx.Response) -> str:
    """The ``error.message`` of an error object, else the start of the body."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200].strip() or resp.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
        if body.get("message"):
            return str(body["message"])[:500]
    return resp.reason_phrase


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_json(content: str) -> Any:
    """The JSON of an answer; tolerates a markdown fence around it (small local models add one)."""
    text = content.strip()
    fenced = _FENCE.match(text)
    return json.loads(fenced.group(1) if fenced else text)


class ChatClient:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str = "",
        timeout: float = 60.0,
        concurrency: int = 8,
        max_attempts: int = 4,
        backoff: float = 0.5,
        retry_after_cap: float = 30.0,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.retry_after_cap = retry_after_cap
        self.timeout = timeout
        self.gate = asyncio.Semaphore(concurrency)
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        # httpx on aiohttp's transport, as the sender runs: httpx's own pool is several times
        # slower with dozens of calls in flight (bench/pipeline)
        self._http = http or httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits),
            timeout=httpx.Timeout(timeout),
            headers=headers,
            event_hooks=tracing.http_event_hooks(),
        )
        where = urlsplit(self.url)
        #: the server attributes of the CLIENT spans (built once: nothing per call when tracing is off)
        self._server = {"server.address": where.hostname or "", "server.port": where.port or 443}
        #: False once the server rejected ``response_format``: ask with a plain instruction after that
        self.supports_response_format = True

    async def aclose(self) -> None:
        await self._http.aclose()

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        return random.uniform(0, self.backoff * 2 ** (attempt - 1))

    async def complete(self, agent: str, body: dict[str, Any]) -> Completion:
        """One chat completion with the retry policy above."""
        last = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            retry_after: float | None = None
            with self._span(agent, body, attempt) as span:
                try:
                    async with self.gate:
                        resp = await self._http.post(self.url, json=body)
                except httpx.TransportError as exc:
                    if _is_timeout(exc):
                        last = f"no answer within {self.timeout:g} s"
                        ATTEMPTS.labels(agent, "timeout").inc()
                        _failed(span, "timeout", last)
                    else:
                        last = f"could not connect ({type(exc.__cause__ or exc).__name__})"
                        ATTEMPTS.labels(agent, "connection").inc()
                        _failed(span, "connection", last)
                else:
                    ATTEMPTS.labels(agent, str(resp.status_code)).inc()
                    if span is not None:
                        span.set_attribute("http.response.status_code", resp.status_code)
                    if resp.status_code == 200:
                        completion = self._completion(resp, body["model"])
                        if completion is not None:
                            if span is not None:
                                _answered(span, completion)
                            return completion
                        last = "HTTP 200 with a body that is not a chat completion"
                        _failed(span, "invalid_response", last)
                    elif resp.status_code in RETRY_STATUSES or resp.status_code >= 500:
                        last = f"HTTP {resp.status_code} ({_server_message(resp)})"
                        _failed(span, str(resp.status_code), last)
                        if resp.status_code == 429:
                            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    else:
                        _failed(span, str(resp.status_code), f"HTTP {resp.status_code}")
                        raise ModelRejected(resp.status_code, _server_message(resp))
            if attempt < self.max_attempts:
                await self._sleep(self._delay(attempt, retry_after))
        raise ModelUnavailable(
            f"the language model did not answer after {self.max_attempts} attempts: {last}"
        )

    def _span(self, agent: str, body: dict[str, Any], attempt: int) -> Any:
        """The CLIENT span of one HTTP attempt (GenAI semantic conventions); None when off."""
        if not tracing.enabled():
            return tracing.span("")  # the no-op block
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",  # the API spoken: OpenAI's, or a compatible server
            "gen_ai.request.model": str(body.get("model", "")),
            "gen_ai.agent.name": agent,
            "herald.attempt": attempt,
            **self._server,
        }
        if "temperature" in body:
            attributes["gen_ai.request.temperature"] = body["temperature"]
        if "response_format" in body:
            attributes["gen_ai.output.type"] = "json"
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        return tracing.span(
            f"chat {attributes['gen_ai.request.model']}", kind=SpanKind.CLIENT, attributes=attributes
        )

    @staticmethod
    def _completion(resp: httpx.Response, model: str) -> Completion | None:
        try:
            body = resp.json()
            content = body["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return None
        if not isinstance(content, str):
            return None
        usage = body.get("usage") or {}
        if not isinstance(usage, dict):
            usage = {}
        prompt, answer = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
        tokens = _count(usage.get("total_tokens")) or prompt + answer
        finish = body["choices"][0].get("finish_reason")
        return Completion(
            content=content,
            model=str(body.get("model") or model),
            tokens=tokens,
            input_tokens=prompt,
            output_tokens=answer,
            finish_reason=finish if isinstance(finish, str) else None,
        )

    async def structured(
        self,
        agent: str,
        model: str,
        messages: list[dict[str, str]],
        output: type[T],
        *,
        context: dict[str, Any] | None = None,
        temperature: float = 0.4,
    ) -> Structured[T]:
        """An answer validated as ``output`` (``context`` goes to its validators)."""
        t0 = time.perf_counter()
        try:
            result = await self._structured(agent, model, messages, output, context, temperature)
        except LLMError as exc:
            FAILURES.labels(agent, exc.reason).inc()
            log.warning("model call failed", extra={"agent": agent, "model": model, "reason": exc.reason})
            raise
        finally:
            LATENCY.labels(agent).observe(time.perf_counter() - t0)
        TOKENS.labels(agent).inc(result.tokens)
        return result

    async def _structured(
        self,
        agent: str,
        model: str,
        messages: list[dict[str, str]],
        output: type[T],
        context: dict[str, Any] | None,
        temperature: float,
    ) -> Structured[T]:
        schema = output.model_json_schema()
        tokens = 0
        conversation = list(messages)
        for turn in range(2):  # the answer, then one corrective retry
            completion = await self._ask(agent, model, conversation, schema, output.__name__, temperature)
            tokens += completion.tokens
            try:
                value = output.model_validate(parse_json(completion.content), context=context)
            except (ValueError, ValidationError) as exc:
                problem = _problem(exc)
                if turn == 1:
                    invalid = InvalidAnswer(
                        f"the language model's answer was not valid after a corrective retry: {problem}"
                    )
                    invalid.tokens = tokens
                    raise invalid from None
                conversation = [
                    *conversation,
                    {"role": "assistant", "content": completion.content},
                    {
                        "role": "user",
                        "content": f"That answer is not valid: {problem}. Answer again with only the "
                        "JSON object, matching the schema exactly.",
                    },
                ]
                continue
            return Structured(value=value, model=completion.model, tokens=tokens)
        raise AssertionError("unreachable")

    async def _ask(
        self,
        agent: str,
        model: str,
        messages: list[dict[str, str]],
        schema: dict[str, Any],
        name: str,
        temperature: float,
    ) -> Completion:
        body: dict[str, Any] = {"model": model, "messages": messages, "temperature": temperature}
        if self.supports_response_format:
            fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": False}}
            try:
                return await self.complete(agent, {**body, "response_format": fmt})
            except ModelRejected as exc:
                if exc.status != 400:
                    raise
                # the server does not take response_format (or this schema): say it in words instead
                self.supports_response_format = False
                log.info("the model server rejected response_format; asking for JSON in the prompt")
        instruction = (
            "Answer with only one JSON object, no prose and no code fence, matching this JSON schema:\n"
            + json.dumps(schema)
        )
        return await self.complete(
            agent, {**body, "messages": [*messages, {"role": "system", "content": instruction}]}
        )


def _count(value: Any) -> int:
    """A token count from ``usage`` (a server may leave one out, or send null)."""
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _answered(span: Span, completion: Completion) -> None:
    span.set_attribute("gen_ai.response.model", completion.model)
    span.set_attribute("gen_ai.usage.input_tokens", completion.input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", completion.output_tokens)
    if completion.finish_reason:
        span.set_attribute("gen_ai.response.finish_reasons", [completion.finish_reason])


def _failed(span: Span | None, error_type: str, description: str) -> None:
    """An attempt that got no usable answer: ``error.type`` and the span failed (the retry, if
    any, is the next span)."""
    if span is not None:
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, description))


def _problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors()[:3]:
            where = ".".join(str(p) for p in err["loc"]) or "the answer"
            parts.append(f"{where}: {err['msg']}")
        return "; ".join(parts)
    return f"not JSON ({exc})"[:200]
