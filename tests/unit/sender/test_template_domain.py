"""The template catalogue's pure rules: variables, validation, mapping, rendering, Meta's shape."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from services.sender import template_domain as td

BODY = "Hi {{attendee_name}}, your seat for {{event}} is {{seat}}. See you, {{attendee_name}}!"
EXAMPLES = {"attendee_name": "Ana", "event": "PyCon", "seat": "A7"}


def template(**kw):
    base = dict(
        name="ticket",
        language="en_US",
        header=None,
        body=BODY,
        footer="Herald",
        buttons=[],
        examples=EXAMPLES,
    )
    base |= kw
    parts = td.analyse(
        header=base["header"],
        body=base["body"],
        footer=base["footer"],
        declared=list(base["examples"]),
        examples=base["examples"],
    )
    return SimpleNamespace(**base, variables=parts.variables, variable_style=parts.style)


def test_variables_are_in_order_of_first_appearance_header_first():
    t = template(header="For {{seat}}")
    assert t.variables == ["seat", "attendee_name", "event"]
    assert t.variable_style == "named"


@pytest.mark.parametrize(
    ("kw", "field", "words"),
    [
        (
            {"declared": ["attendee_name", "event"]},
            "variables",
            "'seat' used in the template but not declared",
        ),
        ({"declared": [*EXAMPLES, "extra"]}, "variables", "'extra' declared but not used"),
        ({"examples": {"attendee_name": "Ana", "event": "PyCon"}}, "examples", "'seat'"),
        ({"footer": "bye {{attendee_name}}"}, "footer", "cannot have variables"),
        ({"body": "Hi {{1}} and {{name}}"}, "body", "not both"),
        ({"body": "Hi {{2}}"}, "body", "in order"),
        ({"body": "Hi {{Bad-Name}}"}, "body", "not a variable"),
    ],
)
def test_bad_templates_name_the_field_to_fix(kw, field, words):
    args = dict(header=None, body=BODY, footer=None, declared=list(EXAMPLES), examples=EXAMPLES)
    args |= kw
    if "body" in kw and "declared" not in kw:
        args["declared"] = td.placeholders(kw["body"])
        args["examples"] = {v: "x" for v in args["declared"]}
    with pytest.raises(td.TemplateInvalid) as err:
        td.analyse(**args)
    assert err.value.field == field and words in str(err.value), str(err.value)


def test_named_variables_map_in_the_templates_order_and_missing_or_extra_ones_are_named():
    t = template(header="Seat {{seat}}")
    mapped = td.map_variables(t, {"event": "PyCon", "seat": "A7", "attendee_name": "Ana"})
    assert mapped.header_text == "A7"
    assert mapped.body_params == ["Ana", "PyCon", "A7"]
    with pytest.raises(td.TemplateInvalid, match="missing 'event'"):
        td.map_variables(t, {"seat": "A7", "attendee_name": "Ana"})
    with pytest.raises(td.TemplateInvalid, match="'colour' is not a variable"):
        td.map_variables(t, {**EXAMPLES, "colour": "red"})


def test_rendered_text_fills_header_body_and_keeps_footer_and_button_labels():
    t = template(header="Seat {{seat}}", buttons=[{"type": "QUICK_REPLY", "text": "Got it"}])
    text = td.render_text(t, "A7", ["Ana", "PyCon", "A7"])
    assert text == "Seat A7\n\nHi Ana, your seat for PyCon is A7. See you, Ana!\n\nHerald\n\nGot it"


def test_meta_components_are_positional_with_examples_in_order():
    t = template(header="Seat {{seat}}")
    header, body, footer = td.meta_components(t)
    assert header == {
        "type": "HEADER",
        "format": "TEXT",
        "text": "Seat {{1}}",
        "example": {"header_text": ["A7"]},
    }
    assert body["text"] == "Hi {{1}}, your seat for {{2}} is {{3}}. See you, {{1}}!"
    assert body["example"] == {"body_text": [["Ana", "PyCon", "A7"]]}
    assert footer == {"type": "FOOTER", "text": "Herald"}
    back = td.from_meta({"components": [header, body, footer]})
    assert back["variables"] == ["1", "2", "3"] and back["variable_style"] == "positional"


def test_a_named_template_is_created_named_at_meta_with_named_examples():
    t = template(header="Seat {{seat}}", category="UTILITY")
    t.parameter_format = td.parameter_format_for(t.variable_style)
    assert t.parameter_format == "NAMED"
    body = td.meta_create_body(t)
    assert body["parameter_format"] == "NAMED"
    header, text, footer = body["components"]
    assert header == {
        "type": "HEADER",
        "format": "TEXT",
        "text": "Seat {{seat}}",
        "example": {"header_text_named_params": [{"param_name": "seat", "example": "A7"}]},
    }
    assert text == {
        "type": "BODY",
        "text": BODY,
        "example": {
            "body_text_named_params": [
                {"param_name": "attendee_name", "example": "Ana"},
                {"param_name": "event", "example": "PyCon"},
                {"param_name": "seat", "example": "A7"},
            ]
        },
    }
    back = td.from_meta({**body, "components": [header, text, footer]})
    assert back["parameter_format"] == "NAMED"
    assert back["variables"] == ["seat", "attendee_name", "event"]
    assert back["examples"] == {"seat": "A7", "attendee_name": "Ana", "event": "PyCon"}


def test_a_positional_template_has_no_parameter_format_and_maps_with_names_for_named_sends():
    t = template(category="UTILITY", body="Hi {{1}}, seat {{2}}", examples={"1": "Ana", "2": "A7"})
    t.parameter_format = td.parameter_format_for(t.variable_style)
    assert t.parameter_format == "POSITIONAL" and "parameter_format" not in td.meta_create_body(t)
    assert td.from_meta({"components": td.meta_components(t)})["parameter_format"] == "POSITIONAL"
    mapped = td.map_variables(template(header="Seat {{seat}}"), {**EXAMPLES})
    assert mapped.header_name == "seat" and mapped.body_names == ["attendee_name", "event", "seat"]


OFFER_BUTTONS = [
    {"type": "QUICK_REPLY", "text": "Stop"},
    {"type": "URL", "text": "Shop", "url": "https://shop.example/offer?promo={{1}}", "example": ["summer"]},
    {"type": "PHONE_NUMBER", "text": "Call", "phone_number": "16467043595"},
]


def offer(**kw):
    t = template(header=None, buttons=OFFER_BUTTONS, **kw)
    t.header_format = kw.get("header_format", "IMAGE")
    t.header_handle = "4::aW1hZ2UvanBn:ARY"
    return t


def request(**kw):
    from shared.events import TemplateContent

    base = {"name": "ticket", "language": "en_US", "body_params": ["Ana", "PyCon", "A7"]}
    return TemplateContent.model_validate(base | kw)


IMAGE = {"type": "image", "link": "https://cdn.example/p.png"}
SUFFIX = {"index": 1, "sub_type": "url", "parameter": "ana-10"}


def test_a_media_header_and_a_url_variable_are_written_for_meta_and_read_back():
    t = offer()
    header, _body, _footer, buttons = td.meta_components(t)
    assert header == {
        "type": "HEADER",
        "format": "IMAGE",
        "example": {"header_handle": ["4::aW1hZ2UvanBn:ARY"]},
    }
    assert buttons == {"type": "BUTTONS", "buttons": OFFER_BUTTONS}
    back = td.from_meta({"components": td.meta_components(t)})
    assert (back["header_format"], back["header_handle"], back["header"]) == (
        "IMAGE",
        "4::aW1hZ2UvanBn:ARY",
        None,
    )
    assert back["buttons"][1]["example"] == ["summer"]


@pytest.mark.parametrize(
    ("kw", "field", "words"),
    [
        ({"header_format": "IMAGE", "header": "Hi"}, "header", "an IMAGE header has no text"),
        ({"header_format": "TEXT"}, "header", "a TEXT header needs its text"),
        (
            {"buttons": [{"type": "URL", "text": "Go", "url": "https://x.example/{{1}}"}]},
            "buttons.0.example",
            "one example",
        ),
        (
            {
                "buttons": [
                    {"type": "URL", "text": "Go", "url": "https://x.example/{{1}}/a", "example": ["a"]}
                ]
            },
            "buttons.0",
            "at the end",
        ),
    ],
)
def test_bad_media_headers_and_button_variables_name_the_field(kw, field, words):
    args = dict(header=None, body=BODY, footer=None, declared=list(EXAMPLES), examples=EXAMPLES) | kw
    with pytest.raises(td.TemplateInvalid) as err:
        td.analyse(**args)
    assert err.value.field == field and words in str(err.value), str(err.value)


def test_a_request_is_checked_against_the_templates_header_and_buttons():
    t = offer()
    td.check_request(t, request(header=IMAGE, buttons=[SUFFIX]), "content")  # all there
    td.check_request(
        t,
        request(
            header=IMAGE, buttons=[SUFFIX, {"index": 0, "sub_type": "quick_reply", "parameter": "STOP:1"}]
        ),
        "content",
    )
    for kw, field, words in [
        ({"buttons": [SUFFIX]}, "content.header", 'an IMAGE header: give {"type": "image"'),
        (
            {"header": {"type": "video", "link": "https://v.example/a.mp4"}, "buttons": [SUFFIX]},
            "content.header",
            "IMAGE header",
        ),
        ({"header": IMAGE}, "content.buttons", "URL button 1 ends in a variable"),
        (
            {"header": IMAGE, "buttons": [SUFFIX, {"index": 2, "sub_type": "url", "parameter": "x"}]},
            "content.buttons",
            "PHONE_NUMBER",
        ),
        (
            {"header": IMAGE, "buttons": [SUFFIX, {"index": 5, "parameter": "x"}]},
            "content.buttons",
            "no button index 5",
        ),
        (
            {"header": IMAGE, "buttons": [{**SUFFIX, "sub_type": "quick_reply"}]},
            "content.buttons",
            "sub_type url",
        ),
        (
            {"header": IMAGE, "buttons": [SUFFIX], "body_params": ["Ana"]},
            "content.body_params",
            "3 body variable(s), 1 given",
        ),
    ]:
        with pytest.raises(td.TemplateInvalid) as err:
            td.check_request(t, request(**kw), "content")
        assert err.value.field == field and words in str(err.value), (kw, str(err.value))
    plain = template()
    with pytest.raises(td.TemplateInvalid, match="has no header: remove it"):
        td.check_request(plain, request(header={"type": "text", "text": "x"}), "content")


def test_locally_a_media_header_is_its_link_and_a_url_button_its_filled_url():
    t = offer()
    text = td.render_text(
        t, None, ["Ana", "PyCon", "A7"], header_link=IMAGE["link"], buttons=request(buttons=[SUFFIX]).buttons
    )
    assert text == (
        "https://cdn.example/p.png\n\nHi Ana, your seat for PyCon is A7. See you, Ana!\n\nHerald\n\n"
        "Stop | Shop: https://shop.example/offer?promo=ana-10 | Call"
    )
