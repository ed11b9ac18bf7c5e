"""OpenTelemetry traces across the services, with the W3C trace context inside the CloudEvent.

The context travels in the envelope's ``traceparent``/``tracestate`` extension attributes (the
CloudEvents distributed-tracing extension), not in AMQP headers: an event is serialised into the
outbox inside the business transaction and relayed later as raw bytes, so only what is in the body
crosses that crash-safe hop. One trace then reads webhook → ingest → pipeline → sender → provider.

Configured by the standard variables, once per process (``configure``):

- ``OTEL_TRACES_EXPORTER``: ``none`` (the default: tracing off), ``otlp`` (OTLP over HTTP/protobuf;
  ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``…_HEADERS`` are read
  by the exporter itself) or ``console`` (spans as JSON on stdout);
- ``OTEL_SERVICE_NAME``: defaults to ``herald-<service>``; ``OTEL_RESOURCE_ATTRIBUTES``,
  ``OTEL_TRACES_SAMPLER`` and ``OTEL_BSP_*`` are read by the SDK.

HTTP server spans come from FastAPI's own telemetry (``FASTAPI_TELEMETRY``), which uses the global
provider installed here; ingest's webhook fast path, which bypasses FastAPI, opens its own
(``server_span``).

Invariant: with tracing off no span object is ever made and no provider is installed; the cost
left on a hot path is a check of ``enabled()`` where an event is queued or sent, and the consumer
middleware ``ConsumerLogIds``, which puts the event's ids on the log lines from strings it has
at hand (the envelope is decoded once, for the handler too). Log lines then carry the same
``trace_id`` as with tracing on: the one the envelope's ``traceparent`` names.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from faststream import BaseMiddleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from shared.events import CloudEvent

E = TypeVar("E", bound="CloudEvent[Any]")

_PROPAGATOR = TraceContextTextMapPropagator()
_enabled = False
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: Any = None  # the SDK's TracerProvider once configured


def enabled() -> bool:
    return _enabled


def configure(service: str, *, exporter: SpanExporter | None = None) -> bool:
    """Set up the process's tracer provider from ``OTEL_*``; returns whether tracing is on.

    Only the first call in a process installs a provider (OpenTelemetry allows one global one);
    later calls (several runtimes built side by side in a test) share it. ``exporter`` replaces
    the one the environment names, with a synchronous processor, and leaves the global provider
    alone (tests read spans back at once, then ``disable``).
    """
    global _enabled, _tracer, _provider
    if _enabled:
        return True
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    # a comma-separated list, as the specification allows ("otlp,console")
    names = {n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")} - {"", "none"}
    if exporter is None and not names:
        return False
    unknown = names - {"otlp", "console"}
    if unknown:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER names {', '.join(sorted(unknown))}: Herald supports otlp, console or none"
        )

    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or f"herald-{service}"})
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        if "otlp" in names:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        if "console" in names:
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    if exporter is None:
        trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer("herald")
    _enabled = True
    return True


def disable() -> None:
    """Turn tracing off again in this process (tests that enabled it with their own exporter)."""
    global _enabled, _tracer, _provider
    _enabled = False
    _tracer = trace.NoOpTracer()
    _provider = None


def shutdown() -> None:
    """Flush the spans still buffered (at process exit: the batch processor exports every few
    seconds, and the last ones would be lost)."""
    if _provider is not None:
        _provider.force_flush()


def tracer() -> trace.Tracer:
    return _tracer


# --- the context in the envelope ----------------------------------------------------------


def current_traceparent() -> tuple[str, str | None] | None:
    """``(traceparent, tracestate)`` of the active span, or None (tracing off, or no span)."""
    if not _enabled:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    parent = carrier.get("traceparent")
    return (parent, carrier.get("tracestate")) if parent else None


def traceparent() -> str | None:
    """The active span's ``traceparent`` (to store with a row a later span continues), or None."""
    found = current_traceparent()
    return found[0] if found else None


def inject(event: E) -> E:
    """``event`` carrying the active span's context; unchanged when there is none (so an envelope
    made with tracing off is byte for byte what it was before tracing existed)."""
    if not _enabled or event.traceparent is not None:
        return event
    found = current_traceparent()
    if found is None:
        return event
    return event.model_copy(update={"traceparent": found[0], "tracestate": found[1]})


async def inject_http_headers(request: Any) -> None:
    """httpx ``request`` event hook: the W3C ``traceparent``/``tracestate`` of the active span on
    an outgoing call (a provider's API), so a provider or proxy that traces joins the trace.
    Installed on a client only while tracing is on (``http_event_hooks``)."""
    found = current_traceparent()
    if found is not None:
        request.headers["traceparent"] = found[0]
        if found[1]:
            request.headers["tracestate"] = found[1]


def http_event_hooks() -> dict[str, list[Any]]:
    """``httpx.AsyncClient(event_hooks=…)``: the trace context on every request when tracing is
    on; nothing at all when it is off."""
    return {"request": [inject_http_headers]} if _enabled else {}


def link_current(traceparent: str | None) -> None:
    """Link the active span to the span ``traceparent`` names (another trace the work concerns:
    a delivery status in the webhook's trace links to the message's own); no-op when off."""
    if not _enabled or not traceparent:
        return
    ctx = context_from(traceparent)
    current = trace.get_current_span()
    if ctx is not None and current.is_recording():
        current.add_link(trace.get_current_span(ctx).get_span_context())


def context_from(traceparent: str | None, tracestate: str | None = None) -> otel_context.Context | None:
    """The remote parent a ``traceparent`` names, or None when absent or malformed."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    ctx = _PROPAGATOR.extract(carrier)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def extract(event: CloudEvent[Any] | dict[str, Any]) -> otel_context.Context | None:
    """The context an envelope (model or decoded JSON) carries, for a span continuing its trace."""
    if isinstance(event, dict):
        parent, state = event.get("traceparent"), event.get("tracestate")
        return context_from(
            parent if isinstance(parent, str) else None, state if isinstance(state, str) else None
        )
    return context_from(event.traceparent, event.tracestate)


_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()
#: ``span(parent=NEW_TRACE)``: a root span whatever is current (a new causal chain, such as one
#: occurrence of a schedule)
NEW_TRACE = otel_context.Context()


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: otel_context.Context | None = None,
    attributes: dict[str, Any] | None = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """A span made current for the block (None, at no cost, when tracing is off); an exception
    leaving the block is recorded on it and marks it failed."""
    if not _enabled:
        return _OFF
    return _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes)


def trace_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` in hex of the active span, for log lines."""
    if not _enabled:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def add_trace_ids(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: ``trace_id`` and ``span_id`` on every line logged inside a span."""
    ids = trace_ids()
    if ids is not None:
        event_dict.setdefault("trace_id", ids[0])
        event_dict.setdefault("span_id", ids[1])
    return event_dict


# --- consumers and HTTP -------------------------------------------------------------------


_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


def log_ids(decoded: Any, *, with_trace: bool = True) -> dict[str, str]:
    """The ids a log line written while handling an event carries: ``event_id``, the
    ``correlation_id`` of its data and (``with_trace``) the ``trace_id`` of its ``traceparent``,
    read from the decoded JSON envelope without any tracing object."""
    ids: dict[str, str] = {}
    if not isinstance(decoded, dict):
        return ids
    if isinstance(decoded.get("id"), str):
        ids["event_id"] = decoded["id"]
    data = decoded.get("data")
    if isinstance(data, dict) and isinstance(data.get("correlation_id"), str):
        ids["correlation_id"] = data["correlation_id"]
    parent = decoded.get("traceparent")
    if with_trace and isinstance(parent, str) and (found := _TRACEPARENT.fullmatch(parent)):
        if found.group(1) != "0" * 32:
            ids["trace_id"] = found.group(1)
    return ids


class ConsumerLogIds(BaseMiddleware):
    """FastStream middleware installed while tracing is off: the event's ``event_id``,
    ``correlation_id`` and ``trace_id`` (from its ``traceparent``) on every log line written while
    it is handled. No span, no context object: structlog context variables for the handler."""

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        try:
            ids = log_ids(await msg.decode())
        except Exception:  # a body that does not decode fails in the handler, with its reason
            ids = {}
        if not ids:
            return await call_next(msg)
        with structlog.contextvars.bound_contextvars(**ids):
            return await call_next(msg)


def consumer_middleware(service: str) -> type[BaseMiddleware]:
    """FastStream middleware: one CONSUMER span per delivered event, child of the context the
    envelope carries (``<service> handle <routing key>``); log lines written meanwhile carry the
    event's id and correlation id besides the trace's. Installed only when tracing is on."""

    class ConsumerTracing(BaseMiddleware):
        async def consume_scope(self, call_next: Any, msg: Any) -> Any:
            routing_key = getattr(msg.raw_message, "routing_key", None) or "event"
            parent = None
            try:
                decoded = await msg.decode()
                if isinstance(decoded, dict):
                    parent = extract(decoded)
            except Exception:  # a body that does not decode fails in the handler, with its reason
                decoded = None
            attributes: dict[str, Any] = {
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "process",
                "messaging.destination.name": routing_key,
                "messaging.rabbitmq.destination.routing_key": routing_key,
            }
            # for the log lines written while the event is handled (trace_id: add_trace_ids, from the span)
            ids = log_ids(decoded, with_trace=False)
            if "event_id" in ids:
                attributes["messaging.message.id"] = ids["event_id"]
            if "correlation_id" in ids:
                attributes["herald.correlation_id"] = ids["correlation_id"]
            with (
                _tracer.start_as_current_span(
                    f"{service} handle {routing_key}",
                    context=parent,
                    kind=SpanKind.CONSUMER,
                    attributes=attributes,
                ),
                structlog.contextvars.bound_contextvars(**ids),
            ):
                return await call_next(msg)

    return ConsumerTracing


#: operations endpoints polled every few seconds: a span each would bury the traces that matter
UNTRACED_PATHS = frozenset({"/livez", "/readyz", "/metrics"})

#: ``FastAPI(telemetry=…)``: FastAPI (0.165+) makes the SERVER span of each request itself, from
#: the global tracer provider ``configure`` installs (nothing at all while tracing is off); the
#: per-dependency and per-endpoint spans are left out, so a trace reads one span per hop
FASTAPI_TELEMETRY: dict[str, Any] = {
    "operation_spans": False,
    "exclude": lambda scope: scope.get("path") in UNTRACED_PATHS,
}


def server_span(scope: dict[str, Any], route: str) -> contextlib.AbstractContextManager[Span | None]:
    """A SERVER span for an HTTP request an ASGI app answers without FastAPI (ingest's webhook
    fast path), continuing the caller's ``traceparent`` header; None at no cost when off."""
    if not _enabled:
        return _OFF
    parent = tracestate = None
    for key, value in scope.get("headers", ()):
        name = key.lower()
        if name == b"traceparent":
            parent = value.decode("latin-1")
        elif name == b"tracestate":
            tracestate = value.decode("latin-1")
    method = scope.get("method", "HTTP")
    return _tracer.start_as_current_span(
        f"{method} {route}",
        context=context_from(parent, tracestate),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "http.route": route, "url.path": scope.get("path", "")},
    )


def record_status(span: Span | None, status: int) -> None:
    """The HTTP status on a server span; a 5xx marks it failed (a 4xx is the caller's error)."""
    if span is None:
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


__all__ = [
    "FASTAPI_TELEMETRY",
    "NEW_TRACE",
    "UNTRACED_PATHS",
    "ConsumerLogIds",
    "add_trace_ids",
    "configure",
    "consumer_middleware",
    "context_from",
    "current_traceparent",
    "disable",
    "enabled",
    "extract",
    "http_event_hooks",
    "inject",
    "inject_http_headers",
    "link_current",
    "log_ids",
    "record_status",
    "server_span",
    "shutdown",
    "span",
    "trace_ids",
    "traceparent",
    "tracer",
]
