"""With tracing off, every log line written while a consumed event is handled carries the event's
id, its correlation id and the trace id of its ``traceparent`` (issue 14 §3: "logs carry the trace
and correlation ids"), from a real RabbitMQ delivery through the middleware every service installs.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import uuid
from typing import Any

import pytest
import structlog
from faststream.rabbit import RabbitBroker, RabbitQueue

from shared import tracing
from shared.logging import configure_logging
from tests.conftest import Infra

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def wait_until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_log_lines_of_a_handled_event_carry_its_ids_with_tracing_off(
    infra: Infra, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    tracing.disable()
    stream = io.StringIO()
    configure_logging("test", "INFO", "json")
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    log = structlog.get_logger("handler")

    broker = RabbitBroker(infra.amqp_url, middlewares=[tracing.ConsumerLogIds])
    queue = RabbitQueue(f"test.log-ids.{uuid.uuid4().hex[:8]}", auto_delete=True)
    handled: list[str] = []

    @broker.subscriber(queue)
    async def on_event(body: dict[str, Any]) -> None:
        log.info("handling", step=body["id"])
        logging.getLogger("stdlib").info("a library line")
        handled.append(body["id"])

    traced = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "type": "order.status_changed.v1",
        "source": "/test",
        "data": {"order_id": "o-1", "correlation_id": "order:o-1"},
        "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
    }
    plain = {**traced, "id": str(uuid.uuid4()), "traceparent": None, "data": {"order_id": "o-2"}}
    async with broker:
        await broker.start()
        await broker.publish(traced, queue=queue)
        await broker.publish(plain, queue=queue)
        await wait_until(lambda: len(handled) == 2, 15, "both events handled")
    log.info("after")  # outside the handler: nothing of the events is left bound

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [line for line in lines if line.get("event") in ("handling", "a library line", "after")]
    first, library, second, _library2, after = mine
    for line in (first, library):
        assert line["event_id"] == traced["id"] and line["correlation_id"] == "order:o-1"
        assert line["trace_id"] == TRACE_ID
        assert "span_id" not in line  # no span: tracing is off
    assert second["event_id"] == plain["id"]
    assert "trace_id" not in second and "correlation_id" not in second
    assert not {"event_id", "trace_id", "correlation_id"} & set(after)
    assert not tracing.enabled()


def test_log_ids_read_only_a_well_formed_traceparent():
    base = {"id": "e-1", "data": {"correlation_id": "c"}}
    assert (
        tracing.log_ids({**base, "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})["trace_id"] == TRACE_ID
    )
    for bad in (
        "garbage",
        f"00-{'0' * 32}-00f067aa0ba902b7-01",
        42,
        f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01",
    ):
        assert "trace_id" not in tracing.log_ids({**base, "traceparent": bad})
    assert tracing.log_ids("not an envelope") == {}
    assert tracing.log_ids(
        {**base, "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}, with_trace=False
    ) == {
        "event_id": "e-1",
        "correlation_id": "c",
    }
