"""A voice note's transcription as a CLIENT span (services.ingest.media): in the trace of the
span that asked (the media job's, itself in the webhook's trace), with the model and the
outcome but never the audio or its words, and the request carrying the trace context. Against
the OpenAI-compatible transcription stand-in (devtools.fake_media), its 500 included."""

from __future__ import annotations

import types
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import SecretStr

from devtools.fake_media import FakeMedia
from services.ingest.media import MediaWorker
from services.ingest.settings import IngestSettings
from shared import tracing

AUDIO = b"OggS\x00\x02" + bytes(200)


@pytest.fixture
def fake() -> Iterator[FakeMedia]:
    media = FakeMedia(transcript="move my appointment to Friday").start()
    yield media
    media.stop()


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


def worker(fake: FakeMedia) -> MediaWorker:
    settings = IngestSettings.model_construct(
        transcription_url=f"{fake.url}/v1",
        transcription_api_key=SecretStr("sk-test"),
        transcription_model="whisper-1",
        media_types="audio/",
    )
    # transcribe() uses the settings alone; the runtime only lends its secret box
    return MediaWorker(types.SimpleNamespace(secrets=None), settings, blobs=None, secret_key="k")  # type: ignore[arg-type]


async def test_a_transcription_is_a_client_span_in_the_media_jobs_trace(
    fake: FakeMedia, spans: InMemorySpanExporter
) -> None:
    async with httpx.AsyncClient() as http:
        with tracing.span("media voice") as job:
            assert job is not None
            text = await worker(fake).transcribe(http, AUDIO, "audio/ogg", ".ogg")
    assert text == "move my appointment to Friday"
    (call,) = [s for s in spans.get_finished_spans() if s.name == "transcription whisper-1"]
    assert call.kind is SpanKind.CLIENT
    assert call.parent is not None and call.parent.span_id == job.get_span_context().span_id
    assert call.context.trace_id == job.get_span_context().trace_id
    attributes = dict(call.attributes or {})
    assert attributes["gen_ai.request.model"] == "whisper-1"
    assert attributes["gen_ai.operation.name"] == "transcription"
    assert attributes["http.response.status_code"] == 200
    assert attributes["herald.audio.bytes"] == len(AUDIO)
    assert "move my appointment" not in repr(attributes)  # never the words
    assert call.status.status_code is not StatusCode.ERROR
    (headers,) = fake.transcribe_headers
    assert headers["traceparent"].split("-")[1] == f"{job.get_span_context().trace_id:032x}"
    assert headers["traceparent"].split("-")[2] == f"{call.context.span_id:016x}"


async def test_a_failed_transcription_marks_its_span_and_lets_the_message_go_without(
    fake: FakeMedia, spans: InMemorySpanExporter
) -> None:
    fake.transcribe_fail_next = 1
    async with httpx.AsyncClient() as http:
        with tracing.span("media voice"):
            assert await worker(fake).transcribe(http, AUDIO, "audio/ogg", ".ogg") is None
    (call,) = [s for s in spans.get_finished_spans() if s.name == "transcription whisper-1"]
    assert call.status.status_code is StatusCode.ERROR
    assert dict(call.attributes or {})["error.type"] == "500"
    assert dict(call.attributes or {})["http.response.status_code"] == 500


async def test_with_tracing_off_the_request_carries_no_trace_context(
    fake: FakeMedia, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    tracing.disable()
    async with httpx.AsyncClient() as http:
        assert (
            await worker(fake).transcribe(http, AUDIO, "audio/ogg", ".ogg") == "move my appointment to Friday"
        )
    (headers,) = fake.transcribe_headers
    assert "traceparent" not in headers
    assert headers["authorization"] == "Bearer sk-test"
