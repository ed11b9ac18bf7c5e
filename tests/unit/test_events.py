import uuid

import pytest
from pydantic import ValidationError

from shared.events import (
    CATALOGUE,
    PUBLIC_INPUT_TYPES,
    CloudEvent,
    EventPublished,
    MessageRequested,
    OrderStatusChanged,
    UnknownEventType,
    canonical_type,
    new_event,
    parse_event,
)

ARCHITECTURE_TYPES = {
    "message.requested",
    "message.status",
    "inbound.received",
    "delivery.status",
    "contact.opted_out",
    "contact.opted_in",
    "pacing.due",
    "draft.ready",
    "order.status_changed",
    "event.published",
    "event.changed",
    "event.cancelled",
    "template.status_changed",
    # added by issue 11 (pipeline): ingest's erasure tells every service to forget the user
    "user.erased",
    # added by issue 12 (tenant event types): an event of a type a tenant registered itself
    "tenant.event",
    # added by issue 13 (sessions): a WhatsApp Web gateway's session connected or dropped
    "channel.session_changed",
}


def test_catalogue_has_a_versioned_model_for_every_architecture_event():
    assert {t.rsplit(".v", 1)[0] for t in CATALOGUE} == ARCHITECTURE_TYPES
    assert all(t.endswith(".v1") for t in CATALOGUE)


def test_event_round_trips_through_json_as_a_cloudevent():
    tenant = uuid.uuid4()
    event = new_event(
        OrderStatusChanged(order_id="1042", status="preparing", customer_phone="+55 11 99999-8888"),
        tenant_id=tenant,
        source="/shop",
    )
    parsed = parse_event(event.model_dump_json())
    assert parsed.specversion == "1.0"
    assert parsed.type == "order.status_changed.v1"
    assert parsed.tenantid == tenant
    assert isinstance(parsed.data, OrderStatusChanged)
    assert parsed.data.customer_phone == "+5511999998888"  # normalised to E.164


def test_models_are_frozen_and_ignore_unknown_fields_from_newer_producers():
    data = OrderStatusChanged.model_validate(
        {"order_id": "1", "status": "ready", "customer_phone": "+5511999998888", "added_in_v1_1": True}
    )
    with pytest.raises(ValidationError):
        data.status = "changed"  # type: ignore[misc]


def test_bare_type_name_means_first_version_and_unknown_types_are_named():
    assert canonical_type("order.status_changed") == "order.status_changed.v1"
    with pytest.raises(UnknownEventType, match=r"unknown event type 'order\.shipped'.*known types"):
        canonical_type("order.shipped")


def test_data_is_validated_against_its_types_model():
    body = new_event(
        MessageRequested(message_id=uuid.uuid4(), to="+5511999998888", text="hi"),
        tenant_id=uuid.uuid4(),
        source="/t",
    ).model_dump(mode="json")
    body["data"]["to"] = "12345"
    with pytest.raises(ValidationError, match=r"E\.164"):
        parse_event(body)


def test_envelope_requires_timezone_aware_time():
    with pytest.raises(ValidationError):
        CloudEvent[OrderStatusChanged].model_validate(
            {
                "id": "1",
                "source": "/s",
                "type": "order.status_changed",
                "time": "2026-01-01T00:00:00",
                "tenantid": str(uuid.uuid4()),
                "data": {"order_id": "1", "status": "ready", "customer_phone": "+5511999998888"},
            }
        )


def test_facts_only_herald_states_are_not_public_inputs():
    assert "delivery.status.v1" not in PUBLIC_INPUT_TYPES
    assert "message.status.v1" not in PUBLIC_INPUT_TYPES
    assert "inbound.received.v1" not in PUBLIC_INPUT_TYPES
    assert "order.status_changed.v1" in PUBLIC_INPUT_TYPES


@pytest.mark.parametrize("zone", ["America/Sao_Paolo", "Mars/Base", "", "+03:00", "GMT+3 "])
def test_an_event_with_an_unknown_time_zone_is_refused_with_what_to_use(zone):
    data = {
        "event_id": "launch",
        "name": "Launch",
        "starts_at": "2030-01-10T19:00:00-03:00",
        "timezone": zone,
    }
    with pytest.raises(ValidationError, match=r"use an IANA zone such as America/Sao_Paulo"):
        EventPublished.model_validate(data)
    assert (
        EventPublished.model_validate({**data, "timezone": "America/Sao_Paulo"}).timezone
        == "America/Sao_Paulo"
    )


def test_an_event_needs_a_name():
    with pytest.raises(ValidationError, match="name"):
        EventPublished.model_validate(
            {"event_id": "e", "name": "", "starts_at": "2030-01-10T19:00:00Z", "timezone": "UTC"}
        )
