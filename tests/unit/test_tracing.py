"""Trace context in the CloudEvent envelope (``shared.tracing``): off by default and then
invisible, and when on, carried from the producer's span to the consumer's through the JSON."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared import tracing
from shared.db import UnitOfWork, outbox_table, processed_events_table
from shared.events import OrderStatusChanged, new_event, parse_event
from shared.logging import configure_logging

TENANT = uuid.uuid4()


def order_event():  # type: ignore[no-untyped-def]
    data = OrderStatusChanged(order_id="o-1", status="preparing", customer_phone="+5511999998888")
    return new_event(data, tenant_id=TENANT, source="/test")


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process with an in-memory exporter, off again afterwards."""
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    tracing.disable()
    exporter = InMemorySpanExporter()
    assert tracing.configure("test", exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.disable()


def test_tracing_is_off_by_default_and_leaves_envelopes_as_they_were(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    tracing.disable()
    assert tracing.configure("test") is False
    assert not tracing.enabled()
    event = order_event()
    with tracing.span("nothing") as span:
        assert span is None
        assert tracing.inject(event) is event
        assert tracing.current_traceparent() is None and tracing.trace_ids() is None
    body = json.loads(event.model_dump_json())
    assert "traceparent" not in body and "tracestate" not in body


@pytest.mark.parametrize("value", ["none", "", " none "])
def test_exporter_none_keeps_tracing_off(monkeypatch: pytest.MonkeyPatch, value: str):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", value)
    tracing.disable()
    assert tracing.configure("test") is False


def test_an_unknown_exporter_is_refused_with_the_ones_that_work(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    tracing.disable()
    with pytest.raises(ValueError, match="zipkin: Herald supports otlp, console or none"):
        tracing.configure("test")
    assert not tracing.enabled()


def test_inject_extract_round_trip_through_the_envelope_json(spans: InMemorySpanExporter):
    with tracing.span("ingest POST /v1/events", kind=SpanKind.SERVER) as producer:
        assert producer is not None
        sent = tracing.inject(order_event())
    raw = sent.model_dump_json()
    assert f'"traceparent":"00-{producer.get_span_context().trace_id:032x}-' in raw

    received = parse_event(raw)  # what a consumer reads off the broker
    assert received.traceparent == sent.traceparent
    with tracing.span("pipeline handle order.status_changed.v1", parent=tracing.extract(received)):
        pass
    # the decoded JSON (what the consumer middleware sees) gives the same parent
    assert tracing.extract(json.loads(raw)) is not None

    by_name = {s.name: s for s in spans.get_finished_spans()}
    consumer = by_name["pipeline handle order.status_changed.v1"]
    server = by_name["ingest POST /v1/events"]
    assert consumer.context.trace_id == server.context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == server.context.span_id


def test_an_event_queued_in_a_unit_of_work_carries_the_span_into_the_outbox(spans: InMemorySpanExporter):
    metadata = sa.MetaData()
    uow = UnitOfWork(None, "t", outbox_table(metadata, "t"), processed_events_table(metadata, "t"))  # type: ignore[arg-type]
    uow.add_event(order_event())  # outside any span: the body is unchanged
    with tracing.span("sender handle message.requested.v1") as current:
        assert current is not None
        uow.add_event(order_event())
    outside, inside = (json.loads(row["body"]) for row in uow._pending)
    assert "traceparent" not in outside
    assert inside["traceparent"].split("-")[1] == f"{current.get_span_context().trace_id:032x}"


def test_a_malformed_or_foreign_trace_context_never_refuses_the_event(spans: InMemorySpanExporter):
    body = json.loads(order_event().model_dump_json())
    for bad in ("garbage", 42, "x" * 600, None):
        event = parse_event({**body, "traceparent": bad, "tracestate": bad})
        assert tracing.extract(event) is None  # a fresh trace starts instead
    assert tracing.context_from("00-00000000000000000000000000000000-0000000000000000-01") is None


def test_log_lines_inside_a_span_carry_its_trace_and_span_ids(spans: InMemorySpanExporter):
    stream = io.StringIO()
    configure_logging("test", "INFO", "json")
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    log = structlog.get_logger("t")
    log.info("before")
    with tracing.span("work") as current:
        assert current is not None
        log.info("inside")
        logging.getLogger("stdlib").warning("inside too")
    before, inside, stdlib = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "trace_id" not in before
    ctx = current.get_span_context()
    for line in (inside, stdlib):
        assert line["trace_id"] == f"{ctx.trace_id:032x}" and line["span_id"] == f"{ctx.span_id:016x}"


def test_a_service_built_with_tracing_off_installs_no_tracing_at_all(monkeypatch: pytest.MonkeyPatch):
    """The hot paths stay as they were: no span-making consumer middleware (only the one that puts
    the event's ids on log lines), no tracer provider for FastAPI."""
    from opentelemetry import trace

    from services.sender.app import build

    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    tracing.disable()
    runtime, _app = build()
    names = [getattr(m, "__name__", type(m).__name__) for m in runtime.broker.middlewares]
    assert "ConsumerTracing" not in names and "ConsumerLogIds" in names, names
    assert not tracing.enabled()
    assert not trace.get_current_span().get_span_context().is_valid
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"


def test_a_service_built_with_tracing_on_traces_its_consumers(spans: InMemorySpanExporter):
    from services.sender.app import build

    runtime, _app = build()
    names = [getattr(m, "__name__", type(m).__name__) for m in runtime.broker.middlewares]
    assert "ConsumerTracing" in names and "ConsumerLogIds" not in names, names
