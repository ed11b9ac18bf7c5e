"""``message.status`` events continue the message's trace (issue 14 §3): the result of a send
carries the traceparent of its ``sender send`` span, every other change the accepting span's,
whatever span (if any) is current where the change is recorded."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.sender import status
from services.sender.claim import Job
from services.sender.dispatch import Dispatcher
from services.sender.providers.base import ChannelConfig, Outbound
from shared import tracing
from shared.db import UnitOfWork, outbox_table, processed_events_table
from shared.events import TextContent

ACCEPTED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    tracing.disable()
    exporter = InMemorySpanExporter()
    assert tracing.configure("test", exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.disable()


def message(traceparent: str | None = ACCEPTED) -> dict:
    return {
        "id": uuid.uuid4(),
        "tenant_id": uuid.uuid4(),
        "provider": "meta",
        "channel_id": uuid.uuid4(),
        "correlation_id": "order:1",
        "origin": "pipeline",
        "traceparent": traceparent,
    }


def job() -> Job:
    m = message()
    channel = ChannelConfig(
        id=m["channel_id"],
        tenant_id=m["tenant_id"],
        provider="meta",
        base_url="http://meta",
        settings={},
        credentials={},
    )
    return Job(
        id=m["id"],
        tenant_id=m["tenant_id"],
        channel=channel,
        provider="meta",
        outbound=Outbound(m["id"], m["tenant_id"], "+5511999998888", TextContent(body="hi")),
        slot=0.0,
        created_at=NOW,
        attempts=1,
        correlation_id="order:1",
        origin="pipeline",
        pair_interval=0.0,
        recipient_hash="h",
        traceparent=ACCEPTED,
    )


def test_a_status_event_continues_the_accepting_span_and_an_explicit_one_wins():
    assert status.Change(message(), "sending", "queued").event(NOW).traceparent == ACCEPTED
    send = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
    assert status.Change(message(), "failed", "sending", traceparent=send).event(NOW).traceparent == send
    # a message accepted with tracing off: the event is as it always was
    assert status.Change(message(None), "sent", "sending").event(NOW).traceparent is None


def test_the_current_span_does_not_take_a_status_event_out_of_the_message_trace(spans: InMemorySpanExporter):
    """A delivery status is recorded in the webhook's trace; its event still joins the message's."""
    metadata = sa.MetaData()
    uow = UnitOfWork(None, "t", outbox_table(metadata, "t"), processed_events_table(metadata, "t"))  # type: ignore[arg-type]
    with tracing.span("sender handle delivery.status.v1"):
        uow.add_event(status.Change(message(), "delivered", "sent").event(NOW))
    assert json.loads(uow._pending[0]["body"])["traceparent"] == ACCEPTED


async def test_the_result_of_a_send_carries_the_traceparent_of_its_send_span(spans: InMemorySpanExporter):
    dispatcher = Dispatcher(SimpleNamespace(settings=None, runtime=None))  # type: ignore[arg-type]
    sent = job()

    async def send(j: Job) -> None:  # the provider call and the recording are tested elsewhere
        pass

    dispatcher._send = send  # type: ignore[method-assign]
    await dispatcher._send_traced(sent)
    [span] = spans.get_finished_spans()
    assert span.name == "sender send"
    ctx = span.get_span_context()
    assert sent.send_traceparent.startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
    assert f"{ctx.trace_id:032x}" == ACCEPTED.split("-")[1]  # the send continues the accepting trace
    # what Dispatcher.record builds the "sent" change from
    assert status.Change(sent.message, "sent", "sending").event(NOW).traceparent == sent.send_traceparent


def test_a_delivery_status_span_links_to_the_message_trace(spans: InMemorySpanExporter):
    """apply_delivery_status runs in the webhook's trace: its span keeps a link to the message's."""
    with tracing.span("sender handle delivery.status.v1"):
        tracing.link_current(ACCEPTED)
        tracing.link_current("not a traceparent")  # ignored
        tracing.link_current(None)
    [span] = spans.get_finished_spans()
    [link] = span.links
    assert f"{link.context.trace_id:032x}-{link.context.span_id:016x}" == "-".join(ACCEPTED.split("-")[1:3])
