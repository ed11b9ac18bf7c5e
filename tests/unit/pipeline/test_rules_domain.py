"""Rules, pure: filters, language choice, sandboxed rendering, field paths, the lifecycle."""

from __future__ import annotations

import pytest

from services.pipeline.domain import DEFAULT_ORDER_RULE
from services.pipeline.rules_domain import (
    Condition,
    MessageSpec,
    Rule,
    builtins,
    effective,
    evaluate,
    is_stale,
    missing_paths,
    model_has_path,
    render,
    schema_has_path,
    syntax_problem,
)
from shared.events import OrderStatusChanged

ORDER = "order.status_changed"
PHONE = "+5511999998888"


def order(status: str, **extra: object) -> dict[str, object]:
    data = OrderStatusChanged(order_id="1042", status=status, customer_phone=PHONE, **extra)  # type: ignore[arg-type]
    return data.model_dump(mode="json")


def rule(**kw: object) -> Rule:
    base: dict[str, object] = {
        "name": "mine",
        "event_type": ORDER,
        "conditions": (Condition("status", "in", ["ready"]),),
        "recipient": "customer_phone",
        "messages": {"en": MessageSpec(text="Hi {{ customer_name }}, {{ order_id }} is ready")},
        "fallback_language": "en",
    }
    return Rule(**{**base, **kw})  # type: ignore[arg-type]


def test_builtin_english_keeps_the_sentence_herald_always_sent():
    for status in ("ready_for_pickup", "payment_confirmed", "preparing"):
        (v,) = [v for v in evaluate(builtins(), ORDER, order(status)) if v.outcome == "sent"]
        expected = DEFAULT_ORDER_RULE.render(OrderStatusChanged.model_validate(order(status)))
        assert v.rendered is not None and v.rendered.content == {"kind": "text", "body": expected}


def test_builtin_speaks_portuguese_with_the_customers_name():
    verdicts = evaluate(builtins(), ORDER, order("out_for_delivery", customer_name="Ana", language="pt_BR"))
    sent = [v for v in verdicts if v.outcome == "sent"]
    assert len(sent) == 1 and sent[0].rule is not None and sent[0].rule.name == "order.out_for_delivery"
    assert sent[0].rendered is not None
    assert sent[0].rendered.content["body"] == "Olá, Ana! Seu pedido 1042 saiu para entrega."
    en = evaluate(builtins(), ORDER, order("delivered", customer_name="Ana", language="en_US"))
    assert [v.rendered.content["body"] for v in en if v.rendered] == ["Ana, your order 1042 is delivered"]


def test_a_tenant_rule_replaces_the_default_of_its_name_and_wins_over_defaults():
    mine = rule(name="order.ready")
    rules = effective([mine], builtins())
    assert [r.name for r in rules].count("order.ready") == 1
    verdicts = evaluate(rules, ORDER, order("ready", customer_name="Bo"))
    assert [(v.rule.name, v.outcome) for v in verdicts if v.rule] == [("order.ready", "sent")]
    # its own rule filtered out → the defaults speak
    other = evaluate(effective([mine], builtins()), ORDER, order("preparing"))
    assert ("order.ready", "filtered") in [(v.rule.name, v.outcome) for v in other if v.rule]
    assert any(v.outcome == "sent" and v.rule and v.rule.name == "order.preparing" for v in other)
    # a disabled rule of a default's name silences that default
    silent = evaluate(effective([rule(name="order.ready", enabled=False)], builtins()), ORDER, order("ready"))
    assert not any(v.outcome == "sent" for v in silent)


def test_no_rule_for_an_unknown_type():
    (v,) = evaluate(builtins(), "ticket.sold", {"x": 1})
    assert v.outcome == "no_rule"


@pytest.mark.parametrize(
    "cond, data, holds",
    [
        (Condition("status", "equals", "ready"), {"status": "ready"}, True),
        (Condition("status", "in", ["a", "b"]), {"status": "c"}, False),
        (Condition("status", "not_in", ["a"]), {"status": "c"}, True),
        (Condition("customer.vip", "exists"), {"customer": {"vip": True}}, True),
        (Condition("customer.vip", "exists"), {"customer": {}}, False),
        (Condition("customer.vip", "exists", False), {"customer": {}}, True),
        (Condition("items.0.sku", "equals", "X"), {"items": [{"sku": "X"}]}, True),
    ],
)
def test_filters(cond: Condition, data: dict[str, object], holds: bool):
    assert cond.holds(data) is holds


def test_language_falls_back_and_missing_fields_are_errors_not_blanks():
    r = rule(
        messages={"en": MessageSpec(text="{{ order_id }}"), "pt_BR": MessageSpec(text="pt {{ order_id }}")}
    )
    assert render(r, order("ready", language="pt")).content["body"] == "pt 1042"
    assert render(r, order("ready", language="fr")).language == "en"
    bad = rule(messages={"en": MessageSpec(text="{{ nope }}")})
    (v,) = evaluate([bad], ORDER, order("ready"))
    assert v.outcome == "unsendable" and "nope" in v.reason


def test_the_sandbox_refuses_to_reach_python_internals():
    r = rule(messages={"en": MessageSpec(text="{{ order_id.__class__.__mro__ }}")})
    (v,) = evaluate([r], ORDER, order("ready"))
    assert v.outcome == "unsendable"
    mutate = rule(messages={"en": MessageSpec(text="{{ data.update({'x': 1}) }}")})
    (v,) = evaluate([mutate], ORDER, order("ready"))
    assert v.outcome == "unsendable"


def test_template_message_maps_variables_from_fields():
    r = rule(messages={"en": MessageSpec(template="order_ready", variables={"name": "customer_name"})})
    out = render(r, order("ready", customer_name="Ana"))
    assert out.content == {
        "kind": "template",
        "name": "order_ready",
        "language": "en",
        "variables": {"name": "Ana"},
    }


def test_field_paths_an_event_type_cannot_have():
    assert model_has_path(OrderStatusChanged, "customer_phone")
    assert not model_has_path(OrderStatusChanged, "customer_email")
    assert not model_has_path(OrderStatusChanged, "status.code")
    r = rule(
        conditions=(Condition("state", "equals", "x"),),
        messages={"en": MessageSpec(text="{{ order_id }} {{ total }}")},
    )
    assert missing_paths(r, lambda p: model_has_path(OrderStatusChanged, p)) == [
        ("filter.0.field", "state"),
        ("messages.en.text", "total"),
    ]
    schema = {"type": "object", "properties": {"attendee": {"type": "object", "properties": {"name": {}}}}}
    assert schema_has_path(schema, "attendee.name") and not schema_has_path(schema, "attendee.phone")
    assert syntax_problem("{{ oops") is not None and syntax_problem("{{ ok }}") is None


def test_lifecycle_staleness():
    assert is_stale("preparing", "ready", 30)
    assert not is_stale("ready", "ready", 30)  # a repeat is a duplicate, not stale
    assert not is_stale("delivered", "ready", 30)
    assert is_stale("cancelled", "delivered", 50)
    assert not is_stale("ready_to_ship", "delivered", 50)  # outside the lifecycle
    assert not is_stale("preparing", None, None)
