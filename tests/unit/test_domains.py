"""Pure rules of the four services."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.ingest.domain import EventRejected, validate_inbound_event
from services.pipeline.domain import DEFAULT_ORDER_RULE, message_id_for
from services.scheduler.domain import ScheduleError, can_cancel, check_send_at
from services.sender.domain import can_move, request_fingerprint
from shared.events import OrderStatusChanged

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "current, new, allowed",
    [
        ("queued", "sending", True),
        ("sending", "sent", True),
        ("sent", "delivered", True),
        ("delivered", "read", True),
        ("read", "delivered", False),
        ("sent", "sending", False),
        ("failed", "sent", False),
        ("sending", "failed", True),
        ("read", "failed", False),
    ],
)
def test_status_never_moves_backwards(current, new, allowed):
    assert can_move(current, new) is allowed


def test_request_fingerprint_distinguishes_requests():
    assert request_fingerprint("+1", "a", 5) == request_fingerprint("+1", "a", 5)
    assert request_fingerprint("+1", "a", 5) != request_fingerprint("+1", "b", 5)


def test_send_at_in_the_past_is_refused_with_the_server_time():
    check_send_at(NOW + timedelta(minutes=1), NOW)
    check_send_at(NOW - timedelta(seconds=2), NOW)  # clock skew tolerated
    with pytest.raises(ScheduleError, match=r"in the past.*server time"):
        check_send_at(NOW - timedelta(minutes=1), NOW)
    assert can_cancel("pending") and not can_cancel("published") and not can_cancel("cancelled")


def test_default_order_rule_reads_like_a_sentence_and_ids_are_stable():
    event = OrderStatusChanged(order_id="1042", status="ready_for_pickup", customer_phone="+5511999998888")
    assert DEFAULT_ORDER_RULE.render(event) == "Your order 1042 is ready for pickup"
    tenant = uuid.uuid4()
    assert message_id_for(tenant, "e1", DEFAULT_ORDER_RULE) == message_id_for(
        tenant, "e1", DEFAULT_ORDER_RULE
    )
    assert message_id_for(tenant, "e1", DEFAULT_ORDER_RULE) != message_id_for(
        tenant, "e2", DEFAULT_ORDER_RULE
    )


TENANT = uuid.uuid4()
GOOD = (
    b'{"specversion":"1.0","id":"1","source":"/shop","type":"order.status_changed",'
    b'"time":"2026-11-22T12:00:00Z","data":{"order_id":"1","status":"ready","customer_phone":"+5511999998888"}}'
)


def test_inbound_event_is_stamped_with_the_callers_tenant():
    event = validate_inbound_event(GOOD, TENANT)
    assert event.tenantid == TENANT and event.type == "order.status_changed.v1"


@pytest.mark.parametrize(
    "raw, status, error, text",
    [
        (b'{"id": ', 400, "malformed_json", "not valid JSON"),
        (b"[1,2]", 422, "invalid_event", "JSON object"),
        (GOOD.replace(b"order.status_changed", b"order.shipped"), 422, "unknown_event_type", "order.shipped"),
        (
            GOOD.replace(b"order.status_changed", b"delivery.status"),
            422,
            "event_type_not_accepted",
            "stated by Herald",
        ),
        (GOOD.replace(b"+5511999998888", b"999"), 422, "invalid_event", "data.customer_phone"),
        (GOOD.replace(b'"id":"1",', b""), 422, "invalid_event", "id"),
    ],
)
def test_bad_inbound_events_are_rejected_with_a_reason(raw, status, error, text):
    with pytest.raises(EventRejected) as info:
        validate_inbound_event(raw, TENANT)
    assert info.value.status == status and info.value.error == error
    assert text in info.value.message


def test_inbound_event_for_another_tenant_is_forbidden():
    raw = GOOD.replace(b'"time"', f'"tenantid":"{uuid.uuid4()}","time"'.encode())
    with pytest.raises(EventRejected) as info:
        validate_inbound_event(raw, TENANT)
    assert info.value.status == 403
