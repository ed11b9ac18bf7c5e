"""One trace across the services as processes: an order event posted to ingest, decided in the
pipeline, accepted and sent by the sender, read back from the spans the three processes export.

The services run with ``OTEL_TRACES_EXPORTER=otlp`` pointed at a stand-in collector in this test
process that decodes OTLP/HTTP protobuf (``opentelemetry-proto``, the exporter's own schema), so
the spans of every process land in one place, as they would in a real collector."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from devtools.processes import ServiceProcess, free_port, herald_cli, ingest_env, pipeline_env, wait_for
from tests.conftest import Infra
from tests.e2e.sender.conftest import TOKEN as META_TOKEN
from tests.e2e.sender.conftest import MetaThread

pytestmark = pytest.mark.e2e
TRACED = ("ingest", "pipeline", "sender")
META_SECRET = "otel-meta-app-secret"


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    attributes: dict[str, Any]


class Collector:
    """An OTLP/HTTP trace receiver: ``POST /v1/traces`` with an ``ExportTraceServiceRequest``."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self.requests = 0
        lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest.FromString(body)
                with lock:
                    collector.requests += 1
                    collector.spans.extend(decode(request))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def trace(self, trace_id: str) -> list[ExportedSpan]:
        return [s for s in list(self.spans) if s.trace_id == trace_id]


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


def decode(request: ExportTraceServiceRequest) -> Iterator[ExportedSpan]:
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield ExportedSpan(
                    service=resource.get("service.name", "?"),
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    name=span.name,
                    kind=ProtoSpan.SpanKind.Name(span.kind),
                    attributes={a.key: _value(a.value) for a in span.attributes},
                )


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    c = Collector()
    c.thread.start()
    try:
        yield c
    finally:
        c.server.shutdown()


@pytest.fixture(scope="module")
def traced(
    infra: Infra, collector: Collector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Ingest, the pipeline and the sender as processes exporting their spans to ``collector``."""
    tmp = Path(tmp_path_factory.mktemp("traced"))
    ports = {name: free_port() for name in TRACED}
    env = infra.service_env(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",  # ms: export within a moment instead of every 5 s
        **ingest_env(ports["sender"], pipeline_port=ports["pipeline"]),
        **pipeline_env(ports["sender"]),
    )
    services = {name: ServiceProcess(name, ports[name], env, tmp / f"{name}.log") for name in TRACED}
    for svc in services.values():
        svc.start()
    try:
        for svc in services.values():
            svc.wait_ready()
        yield {"env": env, "services": services}
    finally:
        for svc in services.values():
            if svc.proc is not None and svc.proc.poll() is None:
                svc.terminate()


def clients(traced: dict[str, Any]) -> dict[str, httpx.Client]:
    """HTTP clients of the three services for a new tenant."""
    created = herald_cli(traced["env"], "tenant", "create", f"otel-{uuid.uuid4().hex[:6]}", "--json")
    key = json.loads(created)["api_key"]
    services: dict[str, ServiceProcess] = traced["services"]
    return {
        name: httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        for name, svc in services.items()
    }


def wait_trace(
    collector: Collector, trace_id: str, expected: set[tuple[str, str, str]]
) -> list[ExportedSpan]:
    """The spans of ``trace_id`` once all of ``expected`` (service, kind, name) were exported."""

    def whole_trace() -> list[ExportedSpan] | None:
        spans = collector.trace(trace_id)
        return spans if expected <= {(s.service, s.kind, s.name) for s in spans} else None

    try:
        return wait_for(whole_trace, 30, f"the spans of {sorted(expected)} in one trace")
    except Exception:
        seen = sorted({(s.service, s.kind, s.name) for s in collector.trace(trace_id)})
        raise AssertionError(
            f"trace {trace_id} has only {seen} ({len(collector.spans)} spans in all)"
        ) from None


def assert_one_tree(spans: list[ExportedSpan], root_parent: str) -> None:
    """Every span's parent is in the trace, down from the caller's span."""
    ids = {s.span_id for s in spans} | {root_parent}
    assert all(s.parent_span_id in ids for s in spans), [(s.name, s.parent_span_id) for s in spans]


def test_one_trace_holds_every_service_an_order_notice_crossed(traced: dict[str, Any], collector: Collector):
    c = clients(traced)
    ingest, pipeline, sender = c["ingest"], c["pipeline"], c["sender"]
    rule = {
        "name": "ready-notice",
        "event_type": "order.status_changed",
        "filter": [{"field": "status", "op": "in", "value": ["ready"]}],
        "recipient": "customer_phone",
        "messages": {"en": {"text": "Order {{ order_id }} is ready"}},
        "fallback_language": "en",
    }
    created = pipeline.post("/v1/rules", json=rule)
    assert created.status_code == 201, created.text

    # the caller's own trace: ingest continues it, so the test knows which trace to read back
    trace_id, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    order_id = f"T{uuid.uuid4().hex[:6]}"
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/shop/orders",
        "type": "order.status_changed",
        "time": datetime.now(UTC).isoformat(),
        "data": {
            "order_id": order_id,
            "status": "ready",
            "customer_phone": f"+55119{random.randint(80_000_000, 99_999_999)}",
        },
    }
    posted = ingest.post("/v1/events", json=event, headers={"traceparent": f"00-{trace_id}-{caller_span}-01"})
    assert posted.status_code == 202, posted.text

    def sent() -> list[dict[str, Any]] | None:
        items = sender.get("/v1/sandbox/messages", params={"limit": 100}).json()["items"]
        return [m for m in items if m["text"] == f"Order {order_id} is ready"] or None

    wait_for(sent, 60, "the notice at the sandbox provider")

    expected = {
        ("herald-ingest", "SPAN_KIND_SERVER", "POST /v1/events"),
        ("herald-pipeline", "SPAN_KIND_CONSUMER", "pipeline handle order.status_changed.v1"),
        ("herald-sender", "SPAN_KIND_CONSUMER", "sender handle message.requested.v1"),
        ("herald-sender", "SPAN_KIND_INTERNAL", "sender send"),
        ("herald-sender", "SPAN_KIND_CLIENT", "sandbox send"),
    }

    spans = wait_trace(collector, trace_id, expected)
    assert_one_tree(spans, caller_span)
    by_name = {s.name: s for s in spans}
    assert by_name["POST /v1/events"].parent_span_id == caller_span
    assert by_name["sandbox send"].parent_span_id == by_name["sender send"].span_id
    assert by_name["sender send"].parent_span_id == by_name["sender handle message.requested.v1"].span_id
    assert by_name["POST /v1/events"].attributes["http.response.status_code"] == 202


def test_a_webhook_continues_its_trace_into_every_consumer_of_the_inbound_message(
    traced: dict[str, Any], collector: Collector
):
    """The webhook fast path (outside FastAPI) opens the server span; the inbound event it stores
    carries it to the pipeline and the sender."""
    secret = "otel-app-secret"
    ingest = clients(traced)["ingest"]
    source = ingest.post(
        "/v1/webhook-sources",
        json={"provider": "meta", "secrets": {"app_secret": secret, "verify_token": "v"}},
    )
    assert source.status_code == 201, source.text
    phone = f"55119{random.randint(80_000_000, 99_999_999)}"
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Ana"}, "wa_id": phone}],
        "messages": [
            {
                "from": phone,
                "id": f"wamid.{uuid.uuid4().hex}",
                "timestamp": str(int(time.time())),
                "type": "text",
                "text": {"body": "hello"},
            }
        ],
    }
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
        }
    ).encode()
    trace_id, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    url = source.json()["url"]
    posted = httpx.post(
        f"{ingest.base_url}{url}" if url.startswith("/") else url,
        content=body,
        headers={
            "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json",
            "traceparent": f"00-{trace_id}-{caller_span}-01",
        },
        timeout=10,
    )
    assert posted.status_code == 200, posted.text

    spans = wait_trace(
        collector,
        trace_id,
        {
            ("herald-ingest", "SPAN_KIND_SERVER", "POST /webhooks/meta/{source_id}"),
            ("herald-pipeline", "SPAN_KIND_CONSUMER", "pipeline handle inbound.received.v1"),
            ("herald-sender", "SPAN_KIND_CONSUMER", "sender handle inbound.received.v1"),
        },
    )
    assert_one_tree(spans, caller_span)
    server = next(s for s in spans if s.kind == "SPAN_KIND_SERVER")
    assert server.parent_span_id == caller_span and server.attributes["http.response.status_code"] == 200


@pytest.fixture(scope="module")
def meta() -> Iterator[MetaThread]:
    """The fake Meta Cloud API (an HTTP provider) the sender sends to, in a thread of this process."""
    fake = MetaThread().start()
    try:
        yield fake
    finally:
        fake.stop()


def signed_meta_webhook(ingest: httpx.Client, url: str, phone: str, text: str, traceparent: str) -> None:
    """One signed Meta webhook carrying a text from ``phone``, in the caller's trace."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Ana"}, "wa_id": phone.lstrip("+")}],
        "messages": [
            {
                "from": phone.lstrip("+"),
                "id": f"wamid.{uuid.uuid4().hex}",
                "timestamp": str(int(time.time())),
                "type": "text",
                "text": {"body": text},
            }
        ],
    }
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
        }
    ).encode()
    posted = httpx.post(
        f"{ingest.base_url}{url}" if url.startswith("/") else url,
        content=body,
        headers={
            "X-Hub-Signature-256": "sha256="
            + hmac.new(META_SECRET.encode(), body, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json",
            "traceparent": traceparent,
        },
        timeout=10,
    )
    assert posted.status_code == 200, posted.text


def test_one_trace_from_a_webhook_to_the_http_provider_call_of_the_answer(
    traced: dict[str, Any], collector: Collector, meta: MetaThread
):
    """Issue 14 §3: a user's order arrives as a signed Meta webhook, the pipeline asks its one
    clarification question, the sender sends it to the Meta Cloud API (an HTTP provider): one
    trace holds ingest's server span, the pipeline's consumer span, the sender's consumer and send
    spans and the CLIENT span of the provider call, each the child of the one before; the call
    carries that CLIENT span's ``traceparent`` to the provider, and the ``message.status`` of the
    send continues the trace into its consumer (the pipeline)."""
    c = clients(traced)
    ingest, pipeline, sender = c["ingest"], c["pipeline"], c["sender"]
    pnid = uuid.uuid4().hex[:15]
    channel = sender.post(
        "/v1/channels",
        json={
            "name": "meta traced",
            "provider": "meta",
            "base_url": meta.url,
            "settings": {"phone_number_id": pnid},
            "credentials": {"access_token": META_TOKEN},
            "is_default": True,  # the pipeline's answer names no channel
            "throughput_per_second": 1000,
            "pair_interval_seconds": 0,
        },
    )
    assert channel.status_code == 201, channel.text
    source = ingest.post(
        "/v1/webhook-sources",
        json={
            "provider": "meta",
            "secrets": {"app_secret": META_SECRET, "verify_token": "v"},
            "channel_id": channel.json()["id"],  # the inbound opens the window of this number
        },
    )
    assert source.status_code == 201, source.text
    url = source.json()["url"]
    user, phone = f"user-{uuid.uuid4().hex[:6]}", f"+55119{random.randint(80_000_000, 99_999_999)}"
    assert ingest.put(f"/v1/contacts/{phone}", json={"user_id": user}).status_code == 200
    profile = pipeline.put(f"/v1/profiles/{user}", json={"phone": phone, "topics": []})
    assert profile.status_code == 200, profile.text

    # a first message (a note, stored silently) opens the 24-hour window: free-form text may go
    # out; waiting for the sender's span of it means the window is recorded before the order
    hello_trace = uuid.uuid4().hex
    signed_meta_webhook(
        ingest,
        url,
        phone,
        "the new menu has a vegan feijoada",
        f"00-{hello_trace}-{uuid.uuid4().hex[:16]}-01",
    )
    wait_trace(
        collector, hello_trace, {("herald-sender", "SPAN_KIND_CONSUMER", "sender handle inbound.received.v1")}
    )
    assert meta.received_for(pnid) == []

    trace_id, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    signed_meta_webhook(
        ingest, url, phone, "write me a post about our new menu", f"00-{trace_id}-{caller_span}-01"
    )
    [received] = wait_for(lambda: meta.received_for(pnid) or None, 60, "the clarification at the fake Meta")
    assert "Which platform is this post for?" in json.dumps(received["body"])

    spans = wait_trace(
        collector,
        trace_id,
        {
            ("herald-ingest", "SPAN_KIND_SERVER", "POST /webhooks/meta/{source_id}"),
            ("herald-pipeline", "SPAN_KIND_CONSUMER", "pipeline handle inbound.received.v1"),
            ("herald-sender", "SPAN_KIND_CONSUMER", "sender handle message.requested.v1"),
            ("herald-sender", "SPAN_KIND_INTERNAL", "sender send"),
            ("herald-sender", "SPAN_KIND_CLIENT", "meta send"),
        },
    )
    assert_one_tree(spans, caller_span)
    one = {s.name: s for s in spans if s.name != "pipeline handle message.status.v1.pipeline"}
    server = one["POST /webhooks/meta/{source_id}"]
    decided = one["pipeline handle inbound.received.v1"]
    accepted = one["sender handle message.requested.v1"]
    send, call = one["sender send"], one["meta send"]
    assert server.parent_span_id == caller_span and server.attributes["http.response.status_code"] == 200
    assert decided.parent_span_id == server.span_id
    assert accepted.parent_span_id == decided.span_id
    assert send.parent_span_id == accepted.span_id
    assert call.parent_span_id == send.span_id
    assert call.attributes["server.address"] == "127.0.0.1"
    assert call.attributes["herald.provider_message_id"] == received["id"]
    # the provider saw the CLIENT span as its caller (W3C trace context on the HTTP request)
    assert received["traceparent"].startswith(f"00-{trace_id}-{call.span_id}-")

    # the "sent" status event continues the send's span, into the pipeline that consumes it
    def status_after_send() -> list[ExportedSpan] | None:
        found = [
            s
            for s in collector.trace(trace_id)
            if s.name.startswith("pipeline handle message.status") and s.parent_span_id == send.span_id
        ]
        return found or None

    [status_span] = wait_for(status_after_send, 30, "the pipeline's span of the sent status")
    assert status_span.kind == "SPAN_KIND_CONSUMER"
