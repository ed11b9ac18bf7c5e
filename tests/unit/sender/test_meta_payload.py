"""The Cloud API request body of a template send (``providers/meta_cloud.body_for``) in the
shapes of the spec's ``sendMessage`` examples: positional parameters, named parameters
(``parameter_name``, for templates with ``parameter_format: NAMED``), media headers and button
parameters."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.sender.providers.meta_cloud import body_for
from shared.events import TemplateButton, TemplateContent, TemplateHeader


def template_of(content: TemplateContent) -> dict:
    body = body_for("+5511999998888", content)
    assert body["messaging_product"] == "whatsapp" and body["to"] == "5511999998888"
    assert body["type"] == "template"
    return body["template"]


def test_positional_parameters_go_in_order_without_names():
    t = template_of(TemplateContent(name="ticket", language="en_US", body_params=["Maria", "B12"]))
    assert t == {
        "name": "ticket",
        "language": {"code": "en_US"},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "Maria"}, {"type": "text", "text": "B12"}],
            }
        ],
    }


def test_named_parameters_carry_their_parameter_name():
    content = TemplateContent(
        name="ticket",
        language="en_US",
        header=TemplateHeader(type="text", text="B12", parameter_name="seat"),
        body_params=["Maria", "PyCon"],
        body_param_names=["attendee_name", "event"],
    )
    assert template_of(content)["components"] == [
        {"type": "header", "parameters": [{"type": "text", "parameter_name": "seat", "text": "B12"}]},
        {
            "type": "body",
            "parameters": [
                {"type": "text", "parameter_name": "attendee_name", "text": "Maria"},
                {"type": "text", "parameter_name": "event", "text": "PyCon"},
            ],
        },
    ]


def test_media_header_and_button_parameters_follow_the_spec_example():
    content = TemplateContent(
        name="appointment_reminder",
        language="pt_BR",
        header=TemplateHeader(type="image", link="https://cdn.example.com/logo.png"),
        body_params=["Maria"],
        buttons=[
            TemplateButton(index=0, sub_type="quick_reply", parameter="CONFIRM:123"),
            TemplateButton(index=1, sub_type="url", parameter="order/123"),
        ],
    )
    assert template_of(content)["components"] == [
        {
            "type": "header",
            "parameters": [{"type": "image", "image": {"link": "https://cdn.example.com/logo.png"}}],
        },
        {"type": "body", "parameters": [{"type": "text", "text": "Maria"}]},
        {
            "type": "button",
            "sub_type": "quick_reply",
            "index": "0",
            "parameters": [{"type": "payload", "payload": "CONFIRM:123"}],
        },
        {
            "type": "button",
            "sub_type": "url",
            "index": "1",
            "parameters": [{"type": "text", "text": "order/123"}],
        },
    ]


def test_names_must_match_the_parameters_one_for_one():
    with pytest.raises(ValidationError, match="one name per parameter"):
        TemplateContent(name="t", language="en_US", body_params=["a", "b"], body_param_names=["x"])
    with pytest.raises(ValidationError, match="body_param_names"):
        TemplateContent(name="t", language="en_US", body_params=["a"], body_param_names=["Bad-Name"])
