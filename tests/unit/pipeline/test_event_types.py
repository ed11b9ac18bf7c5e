"""Tenant event types, the pure part: which names and schemas a tenant can register, and how data
that does not match is reported (each problem names its field path)."""

from __future__ import annotations

import pytest

from services.pipeline.event_types import MAX_SCHEMA_BYTES, check_name, check_schema, validate

TICKET = {
    "type": "object",
    "required": ["ticket_id", "status", "customer"],
    "additionalProperties": False,
    "properties": {
        "ticket_id": {"type": "string", "minLength": 1},
        "status": {"enum": ["open", "pending", "solved"]},
        "customer": {
            "type": "object",
            "required": ["phone"],
            "properties": {"phone": {"type": "string", "pattern": "^\\+[1-9][0-9]{7,14}$"}},
        },
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}


def fields(problems) -> list[str]:
    return [p.field for p in problems]


@pytest.mark.parametrize("name", ["ticket.updated", "crm.deal_won", "shop.order.refunded"])
def test_a_tenant_can_name_its_types_with_dotted_words(name: str):
    assert check_name(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("order.status_changed", "one of Herald's own event types"),
        ("message.requested.v1", "version"),
        ("tenant.event", "one of Herald's own"),
        ("ticket", "at least two words"),
        ("Ticket.Updated", "lower-case"),
        ("ticket..updated", "lower-case"),
        ("ticket.updated.v2", "must not end in a version"),
        ("a." + "b" * 120, "at most 100"),
    ],
)
def test_names_that_collide_or_are_malformed_are_refused_with_why(name: str, why: str):
    reason = check_name(name)
    assert reason is not None and why in reason


def test_a_valid_2020_12_schema_has_no_problems():
    assert check_schema(TICKET) == []
    assert check_schema({**TICKET, "$schema": "https://json-schema.org/draft/2020-12/schema"}) == []


def test_a_bad_schema_names_the_part_that_is_wrong():
    bad = {"type": "object", "properties": {"status": {"type": "strng"}}}
    [problem] = check_schema(bad)
    assert problem.field == "schema.properties.status.type"
    assert "not valid JSON Schema draft 2020-12" in problem.problem and "strng" in problem.problem


def test_another_draft_a_non_object_schema_and_a_huge_one_are_refused():
    [draft7] = check_schema({**TICKET, "$schema": "http://json-schema.org/draft-07/schema#"})
    assert draft7.field == "schema.$schema" and "2020-12" in draft7.problem
    [array] = check_schema({"type": "array"})
    assert array.field == "schema.type" and "object" in array.problem
    [not_object] = check_schema(["type", "object"])
    assert not_object.field == "schema"
    huge = {
        "type": "object",
        "properties": {f"f{i}": {"type": "string"} for i in range(MAX_SCHEMA_BYTES // 10)},
    }
    [too_big] = check_schema(huge)
    assert too_big.field == "schema" and f"at most {MAX_SCHEMA_BYTES} bytes" in too_big.problem


def test_matching_data_has_no_problems():
    data = {"ticket_id": "T-1", "status": "open", "customer": {"phone": "+5511999998888"}, "tags": ["vip"]}
    assert validate(TICKET, data) == []


def test_each_problem_names_its_field_path():
    data = {"ticket_id": "", "status": "closed", "customer": {"phone": "11 9999"}, "tags": ["ok", 7]}
    problems = validate(TICKET, data)
    assert fields(problems) == ["data.customer.phone", "data.status", "data.tags.1", "data.ticket_id"]
    by_field = {p.field: p.problem for p in problems}
    assert "closed" in by_field["data.status"] and "open" in by_field["data.status"]
    assert "not of type 'string'" in by_field["data.tags.1"]


def test_a_missing_field_and_an_extra_one_are_named_themselves_not_their_parent():
    problems = validate(TICKET, {"status": "open", "customer": {}, "priority": "high"})
    assert sorted(fields(problems)) == [
        "data.customer.phone",
        "data.priority",
        "data.ticket_id",
    ]
    by_field = {p.field: p.problem for p in problems}
    assert by_field["data.ticket_id"] == "required field is missing"
    assert "unknown field" in by_field["data.priority"]


def test_the_root_can_be_named_by_the_caller():
    [problem] = validate({"type": "object", "required": ["a"]}, {}, root="")
    assert problem.field == "a"
    [not_an_object] = validate({"type": "object"}, [1], root="")
    assert not_an_object.field == "(root)"
