"""Ingest's side of tenant event types, the pure part: which posted bodies are a tenant's own
type, and what a checked one becomes (``tenant.event.v1``) or why it is refused."""

from __future__ import annotations

import uuid

import pytest

from services.ingest.domain import EventRejected
from services.ingest.event_types import tenant_event, tenant_type_of, unregistered

TENANT = uuid.uuid4()
SCHEMA = {"type": "object", "required": ["ticket_id"], "properties": {"ticket_id": {"type": "string"}}}


def body(**fields):
    return {
        "specversion": "1.0",
        "id": "t-1",
        "source": "/helpdesk",
        "type": "ticket.updated",
        "time": "2026-12-03T12:00:00Z",
        "data": {"ticket_id": "T-1"},
        **fields,
    }


def test_herald_types_and_impossible_names_are_not_tenant_types():
    assert tenant_type_of(body(type="order.status_changed")) is None
    assert tenant_type_of(body(type="order.status_changed.v1")) is None
    assert tenant_type_of(body(type="Order Shipped")) is None  # validate_inbound_event refuses it
    assert tenant_type_of(body(type="")) is None


def test_a_tenant_type_and_a_tenant_event_envelope_name_the_type_and_the_payload():
    assert tenant_type_of(body()) == ("ticket.updated", {"ticket_id": "T-1"})
    wrapped = body(type="tenant.event", data={"name": "ticket.updated", "data": {"ticket_id": "T-2"}})
    assert tenant_type_of(wrapped) == ("ticket.updated", {"ticket_id": "T-2"})
    with pytest.raises(EventRejected) as refused:
        tenant_type_of(body(type="tenant.event.v1", data={"ticket_id": "T-2"}))
    assert refused.value.status == 422 and refused.value.details[0]["field"] == "data.name"


def test_a_checked_event_becomes_a_tenant_event_of_the_callers_tenant():
    event = tenant_event(body(), TENANT, "ticket.updated", {"ticket_id": "T-1"}, SCHEMA)
    assert event.type == "tenant.event.v1" and event.tenantid == TENANT
    assert (event.id, event.source) == ("t-1", "/helpdesk")
    assert event.data.name == "ticket.updated" and event.data.data == {"ticket_id": "T-1"}


def test_data_or_envelope_that_does_not_match_is_422_naming_the_field():
    with pytest.raises(EventRejected) as data:
        tenant_event(body(), TENANT, "ticket.updated", {"ticket_id": 7}, SCHEMA)
    assert data.value.status == 422 and [d["field"] for d in data.value.details] == ["data.ticket_id"]
    with pytest.raises(EventRejected) as not_object:
        tenant_event(body(), TENANT, "ticket.updated", "T-1", SCHEMA)
    assert [d["field"] for d in not_object.value.details] == ["data"]
    with pytest.raises(EventRejected) as envelope:
        tenant_event(body(id=""), TENANT, "ticket.updated", {"ticket_id": "T-1"}, SCHEMA)
    assert [d["field"] for d in envelope.value.details] == ["id"]


def test_an_unregistered_type_says_how_to_register_it():
    refused = unregistered("crm.deal_won")
    assert refused.status == 422 and refused.error == "unknown_event_type"
    assert (
        "unknown event type 'crm.deal_won'" in refused.message and "POST /v1/event-types" in refused.message
    )
