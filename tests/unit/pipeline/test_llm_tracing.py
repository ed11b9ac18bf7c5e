"""The language-model calls as CLIENT spans (OpenTelemetry GenAI conventions): one per HTTP
attempt, child of the span that asked (the pipeline's consumer span), with the model, the agent,
the attempt, the outcome and the tokens; the request carries its traceparent. Nothing with
tracing off."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from devtools.fake_llm import FakeChatModel
from services.pipeline.llm import ChatClient, ModelRejected
from shared import tracing


class Topic(BaseModel):
    topic: str
    angle: str


MESSAGES = [
    {"role": "system", "content": "plan a post"},
    {"role": "user", "content": '{"suggested_topic": "new menu"}'},
]


async def no_wait(_seconds: float) -> None:
    pass


@pytest.fixture
async def llm() -> AsyncIterator[FakeChatModel]:
    async with FakeChatModel(api_key="sk-test") as fake:
        yield fake


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


def client(llm: FakeChatModel) -> ChatClient:
    return ChatClient(base_url=llm.base_url, api_key="sk-test", timeout=2, max_attempts=3, sleep=no_wait)


async def test_each_attempt_is_a_client_span_with_the_genai_attributes(
    llm: FakeChatModel, spans: InMemorySpanExporter
) -> None:
    c = client(llm)  # built with tracing on: its requests carry the trace context
    llm.script("500")
    try:
        with tracing.span("pipeline handle inbound.received.v1") as parent:
            assert parent is not None
            got = await c.structured("order_builder", "small-model", MESSAGES, Topic, temperature=0.2)
    finally:
        await c.aclose()
    finished = spans.get_finished_spans()
    failed, answered = (s for s in finished if s.kind == SpanKind.CLIENT)
    for span, attempt in ((failed, 1), (answered, 2)):
        assert span.name == "chat small-model"
        assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
        a = span.attributes
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "small-model"
        assert a["gen_ai.agent.name"] == "order_builder" and a["herald.attempt"] == attempt
        assert a["gen_ai.request.temperature"] == 0.2 and a["gen_ai.output.type"] == "json"
        assert a["server.address"] == "127.0.0.1" and a["server.port"] == llm.port
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.attributes["error.type"] == "500" and failed.status.status_code == StatusCode.ERROR
    assert "http.request.resend_count" not in failed.attributes

    a = answered.attributes
    assert answered.status.status_code == StatusCode.UNSET and "error.type" not in a
    assert a["http.response.status_code"] == 200 and a["http.request.resend_count"] == 1
    assert a["gen_ai.response.model"] == "small-model" and a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["gen_ai.usage.input_tokens"] + a["gen_ai.usage.output_tokens"] == got.tokens
    # no prompt or answer on a span: they carry note bodies and drafts
    assert not any("new menu" in str(v) for s in finished for v in s.attributes.values())

    # the model server saw each attempt's own span as the caller
    ctx = [s.get_span_context() for s in (failed, answered)]
    sent = [t.rsplit("-", 1)[0] if t else t for t in llm.traceparents]
    assert sent == [f"00-{x.trace_id:032x}-{x.span_id:016x}" for x in ctx]


async def test_a_refused_request_fails_its_span_and_is_not_retried(
    llm: FakeChatModel, spans: InMemorySpanExporter
) -> None:
    c = client(llm)
    llm.script("401")
    try:
        with pytest.raises(ModelRejected):
            await c.structured("writer", "m", MESSAGES, Topic)
    finally:
        await c.aclose()
    [span] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert span.attributes["error.type"] == "401" and span.status.status_code == StatusCode.ERROR


async def test_with_tracing_off_no_span_and_no_trace_header(
    llm: FakeChatModel, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    tracing.disable()
    c = client(llm)
    try:
        assert (await c.structured("writer", "m", MESSAGES, Topic)).value.topic == "new menu"
    finally:
        await c.aclose()
    assert llm.traceparents == [None]
    assert not tracing.enabled()
