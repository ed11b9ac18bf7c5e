"""The template catalogue (issue 12 §2) through the real sender process and the Meta stand-in:
Meta's review, named variables mapped in the template's order, rejected templates blocking
sends, local rendering on channels without Meta templates, and bad input refused."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from devtools.processes import ServiceProcess, free_port, wait_for
from tests.e2e.sender.conftest import SenderSystem, wait_status

pytestmark = pytest.mark.e2e


def phone(i: int) -> str:
    return f"+551197{i:07d}"


TICKET = {
    "name": "ticket_ready",
    "language": "en_US",
    "category": "UTILITY",
    "header": "Seat {{seat}}",
    "body": "Hi {{attendee_name}}, your ticket for {{event}} is ready. Your seat: {{seat}}.",
    "footer": "Herald events",
    "buttons": [{"type": "QUICK_REPLY", "text": "Thanks"}],
    "variables": ["seat", "attendee_name", "event"],
    "examples": {"seat": "A7", "attendee_name": "Ana", "event": "PyCon"},
}
VALUES = {"event": "PyCon Lisbon", "attendee_name": "Maria", "seat": "B12"}  # not the template's order


def waba_channel(system: SenderSystem, client: httpx.Client) -> dict[str, Any]:
    return system.meta_channel(
        client, settings={"phone_number_id": uuid.uuid4().hex[:15], "waba_id": uuid.uuid4().hex[:15]}
    )


def synced_status(client: httpx.Client, template_id: str, status: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        response = client.post("/v1/templates/sync", json={})
        assert response.status_code == 200, response.text
        current = client.get(f"/v1/templates/{template_id}").json()
        return current if current["status"] == status else None

    return wait_for(check, 30, f"template {template_id} to be {status}")


def test_a_meta_template_is_reviewed_then_sent_with_named_variables_in_the_templates_order(
    system: SenderSystem,
):
    _, key = system.tenant("tmpl-meta")
    client = system.client(key)
    channel = waba_channel(system, client)
    pnid = channel["settings"]["phone_number_id"]

    created = client.post("/v1/templates", json={**TICKET, "channel_id": channel["id"]})
    assert created.status_code == 201, created.text
    template = created.json()
    assert template["status"] == "PENDING"
    assert template["variables"] == ["seat", "attendee_name", "event"]
    assert template["variable_style"] == "named" and template["parameter_format"] == "NAMED"
    at_meta = next(t for t in system.meta.fake.state.templates.values() if t["name"] == "ticket_ready")
    assert at_meta["parameter_format"] == "NAMED"
    assert at_meta["components"][1]["text"] == TICKET["body"]  # the names stay at Meta
    listed = client.get("/v1/templates", params={"name": "ticket_ready", "language": "en_US"}).json()
    assert [t["id"] for t in listed["templates"]] == [template["id"]]

    approved = synced_status(client, template["id"], "APPROVED")
    assert approved["body"] == TICKET["body"]

    content = {"kind": "template", "name": "ticket_ready", "language": "en_US", "variables": VALUES}
    response = client.post(
        "/v1/messages", json={"to": phone(1), "content": content, "channel_id": channel["id"]}
    )
    assert response.status_code == 202, response.text
    wait_status(client, response.json()["id"], "sent", timeout=30)
    sent = system.meta.received_for(pnid)[-1]["body"]["template"]
    assert sent["name"] == "ticket_ready" and sent["language"]["code"] == "en_US"
    assert sent["components"] == [
        {"type": "header", "parameters": [{"type": "text", "parameter_name": "seat", "text": "B12"}]},
        {
            "type": "body",
            "parameters": [
                {"type": "text", "parameter_name": "attendee_name", "text": "Maria"},
                {"type": "text", "parameter_name": "event", "text": "PyCon Lisbon"},
                {"type": "text", "parameter_name": "seat", "text": "B12"},
            ],
        },
    ]

    # Meta's rules on changes: a duplicate is refused, name/language never change, and an
    # APPROVED template's category does not either; a body edit goes back to review
    duplicate = client.post("/v1/templates", json={**TICKET, "channel_id": channel["id"]})
    assert duplicate.status_code == 422 and "name" in duplicate.json()["message"]
    renamed = client.patch(f"/v1/templates/{template['id']}", json={"name": "other"})
    assert renamed.status_code == 422 and "name" in renamed.json()["message"]
    recategorised = client.patch(f"/v1/templates/{template['id']}", json={"category": "MARKETING"})
    assert recategorised.status_code == 422 and "category" in recategorised.json()["message"]
    edited = client.patch(
        f"/v1/templates/{template['id']}",
        json={"body": "Hello {{attendee_name}}: {{event}}, seat {{seat}}."},
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["status"] == "PENDING"
    in_review = client.patch(f"/v1/templates/{template['id']}", json={"footer": "bye"})
    assert in_review.status_code == 409 and "PENDING" in in_review.json()["message"]

    assert client.delete(f"/v1/templates/{template['id']}").status_code == 204
    assert client.get(f"/v1/templates/{template['id']}").status_code == 404
    waba = channel["settings"]["waba_id"]
    assert [t for t in system.meta.fake.state.templates.values() if t["waba_id"] == waba] == []


def test_a_rejected_template_blocks_sends_with_a_clear_reason(system: SenderSystem):
    _, key = system.tenant("tmpl-rejected")
    client = system.client(key)
    channel = waba_channel(system, client)
    pnid = channel["settings"]["phone_number_id"]
    system.meta.fake.state.reject_when = r"lottery"
    try:
        body = {
            **TICKET,
            "name": "prize",
            "header": None,
            "body": "{{attendee_name}}, you won the lottery at {{event}}!",
            "variables": ["attendee_name", "event"],
            "examples": {"attendee_name": "Ana", "event": "PyCon"},
            "channel_id": channel["id"],
        }
        template = client.post("/v1/templates", json=body).json()
        rejected = synced_status(client, template["id"], "REJECTED")
    finally:
        system.meta.fake.state.reject_when = None
    assert "INVALID_FORMAT" in rejected["reason"]
    calls = len(system.meta.received_for(pnid))
    content = {
        "kind": "template",
        "name": "prize",
        "language": "en_US",
        "variables": {"attendee_name": "Rui", "event": "PyCon"},
    }
    message_id = client.post(
        "/v1/messages", json={"to": phone(2), "content": content, "channel_id": channel["id"]}
    ).json()["id"]
    failed = wait_status(client, message_id, "failed", timeout=30)
    assert failed["error_code"] == "template_rejected"
    assert "REJECTED" in failed["status_reason"] and "INVALID_FORMAT" in failed["status_reason"]
    # refused before any call: the sender records `sending` before every provider call
    assert "sending" not in [h["status"] for h in failed["history"]], failed["history"]
    assert len(system.meta.received_for(pnid)) == calls  # no call Meta would refuse


def test_metas_status_update_reaches_the_catalogue(system: SenderSystem):
    tenant_id, key = system.tenant("tmpl-webhook")
    client = system.client(key)
    channel = waba_channel(system, client)
    template = client.post(
        "/v1/templates", json={**TICKET, "name": "paused_one", "channel_id": channel["id"]}
    ).json()
    system.publish(
        "template.status_changed.v1",
        tenant_id,
        {
            "template_name": "paused_one",
            "language": "en_US",
            "status": "PAUSED",
            "reason": "low quality",
            "at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 5)),
        },
    )
    wait_for(
        lambda: client.get(f"/v1/templates/{template['id']}").json()["status"] == "PAUSED",
        30,
        "the webhook's PAUSED in the catalogue",
    )


def test_on_a_sandbox_channel_the_template_arrives_as_rendered_text(system: SenderSystem):
    _, key = system.tenant("tmpl-sandbox")
    client = system.client(key)
    sandbox = client.post("/v1/channels", json={"name": "sb", "provider": "sandbox"}).json()
    created = client.post("/v1/templates", json={**TICKET, "channel_id": sandbox["id"]})
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "LOCAL"
    content = {"kind": "template", "name": "ticket_ready", "language": "en_US", "variables": VALUES}
    message_id = client.post(
        "/v1/messages", json={"to": phone(3), "content": content, "channel_id": sandbox["id"]}
    ).json()["id"]
    sent = wait_status(client, message_id, "sent", timeout=30)
    received = client.get("/v1/sandbox/messages", params={"message_id": message_id}).json()["items"]
    assert [r["text"] for r in received] == [
        "Seat B12\n\nHi Maria, your ticket for PyCon Lisbon is ready. Your seat: B12.\n\nHerald events\n\nThanks"
    ]
    assert any("rendered locally and sent as text" in (h["reason"] or "") for h in sent["history"]), sent


def test_bad_input_is_refused_naming_what_to_fix_and_nothing_is_stored(system: SenderSystem):
    tenant_id, key = system.tenant("tmpl-bad")
    client = system.client(key)
    sandbox = client.post("/v1/channels", json={"name": "sb", "provider": "sandbox"}).json()

    for change, words in [
        ({"category": "PROMO"}, "category"),
        ({"name": "Ticket Ready"}, "name"),
        ({"variables": ["seat", "attendee_name"]}, "'event' used in the template but not declared"),
        ({"variables": [*TICKET["variables"], "colour"]}, "'colour' declared but not used"),
        ({"examples": {"seat": "A7", "attendee_name": "Ana"}}, "examples: give an example value for 'event'"),
    ]:
        response = client.post("/v1/templates", json={**TICKET, **change, "channel_id": sandbox["id"]})
        assert response.status_code == 422, (change, response.text)
        assert words in response.json()["message"], (change, response.json())
    assert client.get("/v1/templates").json()["templates"] == []

    assert client.post("/v1/templates", json={**TICKET, "channel_id": sandbox["id"]}).status_code == 201
    base = {"kind": "template", "name": "ticket_ready", "language": "en_US"}
    for variables, words in [
        ({"attendee_name": "Maria", "event": "PyCon"}, "missing 'seat'"),
        ({**VALUES, "colour": "red"}, "'colour' is not a variable"),
    ]:
        response = client.post(
            "/v1/messages",
            json={"to": phone(4), "content": {**base, "variables": variables}, "channel_id": sandbox["id"]},
        )
        assert response.status_code == 422, response.text
        assert "content.variables" in response.json()["message"] and words in response.json()["message"]
    unknown = client.post(
        "/v1/messages",
        json={"to": phone(4), "content": {**base, "name": "nope", "variables": VALUES}},
    )
    assert unknown.status_code == 422 and "no template 'nope'" in unknown.json()["message"]
    assert client.get("/v1/messages").json()["items"] == []

    # the broker path stores the request and refuses it with the same reason
    message_id = str(uuid.uuid4())
    system.publish(
        "message.requested.v1",
        tenant_id,
        {
            "message_id": message_id,
            "to": phone(5),
            "content": {**base, "variables": {"attendee_name": "Maria"}},
            "channel_id": sandbox["id"],
            "origin": "test",
        },
    )
    refused = wait_status(client, message_id, "failed", timeout=30)
    assert refused["error_code"] == "template_variables"
    assert "missing 'seat', 'event'" in refused["status_reason"]


def test_a_periodic_sync_brings_metas_review_without_asking(system: SenderSystem):
    """SENDER_TEMPLATE_SYNC_SECONDS: a sender syncing every 0.3 s sees the review end by itself."""
    env = {**system.env, "SENDER_TEMPLATE_SYNC_SECONDS": "0.3"}
    syncing = ServiceProcess("sender", free_port(), env, system.tmp / "sender-sync.log")
    syncing.start()
    try:
        syncing.wait_ready()
        _, key = system.tenant("tmpl-periodic")
        client = system.client(key, url=syncing.url)
        channel = waba_channel(system, client)
        template = client.post(
            "/v1/templates", json={**TICKET, "name": "periodic", "channel_id": channel["id"]}
        ).json()
        assert template["status"] == "PENDING"
        wait_for(
            lambda: client.get(f"/v1/templates/{template['id']}").json()["status"] == "APPROVED",
            30,
            "the periodic sync to bring APPROVED",
        )
    finally:
        syncing.terminate()


def test_meta_refuses_a_named_template_sent_by_position_and_takes_it_by_name(system: SenderSystem):
    """A NAMED template made in Meta's UI: before the catalogue knows it, a send by position
    (body_params) is refused by Meta with 132012; once synced, the sender sends its parameters
    by name, from content.variables or from body_params in the template's order."""
    _, key = system.tenant("tmpl-named")
    client = system.client(key)
    channel = waba_channel(system, client)
    pnid, waba = channel["settings"]["phone_number_id"], channel["settings"]["waba_id"]
    system.meta.fake.state.templates["987650001"] = {
        "id": "987650001",
        "waba_id": waba,
        "name": "order_named",
        "language": "pt_BR",
        "category": "UTILITY",
        "parameter_format": "NAMED",
        "components": [
            {
                "type": "BODY",
                "text": "Olá {{first_name}}, o pedido {{order_id}} saiu.",
                "example": {
                    "body_text_named_params": [
                        {"param_name": "first_name", "example": "Ana"},
                        {"param_name": "order_id", "example": "123"},
                    ]
                },
            }
        ],
        "status": "APPROVED",
        "rejected_reason": "NONE",
        "review_at": 0,
    }
    base = {"kind": "template", "name": "order_named", "language": "pt_BR"}
    by_position = {**base, "body_params": ["Rui", "77"]}
    named_params = [
        {"type": "text", "parameter_name": "first_name", "text": "Rui"},
        {"type": "text", "parameter_name": "order_id", "text": "77"},
    ]

    unknown = client.post(
        "/v1/messages", json={"to": phone(6), "content": by_position, "channel_id": channel["id"]}
    )
    assert unknown.status_code == 202, unknown.text
    refused = wait_status(client, unknown.json()["id"], "failed", timeout=30)
    assert refused["error_code"] == "132012", refused
    assert "parameter format mismatch" in refused["status_reason"]
    assert "every parameter needs parameter_name" in refused["status_reason"]

    synced = client.post("/v1/templates/sync", json={"channel_id": channel["id"]})
    assert synced.status_code == 200, synced.text
    [imported] = [t for t in synced.json()["templates"] if t["name"] == "order_named"]
    assert imported["parameter_format"] == "NAMED" and imported["variables"] == ["first_name", "order_id"]
    assert imported["examples"] == {"first_name": "Ana", "order_id": "123"}

    for content in (by_position, {**base, "variables": {"order_id": "77", "first_name": "Rui"}}):
        response = client.post(
            "/v1/messages", json={"to": phone(7), "content": content, "channel_id": channel["id"]}
        )
        assert response.status_code == 202, response.text
        wait_status(client, response.json()["id"], "sent", timeout=30)
        sent = system.meta.received_for(pnid)[-1]["body"]["template"]
        assert sent["components"] == [{"type": "body", "parameters": named_params}], content


OFFER = {
    "name": "summer_offer",
    "language": "en_US",
    "category": "MARKETING",
    "header_format": "IMAGE",
    "header_handle": "4::aW1hZ2UvanBn:ARYytyb0kLp5htbBB8vWlclG5M9gMBxiEyt4FNCvrueWBOmFmRAztEuNtPGUnEC22Etc",
    "body": "Hi {{1}}! Our {{2}} sale is on.",
    "variables": ["1", "2"],
    "examples": {"1": "Mark", "2": "summer"},
    "footer": "Reply STOP to opt out",
    "buttons": [
        {"type": "QUICK_REPLY", "text": "Stop promos"},
        {
            "type": "URL",
            "text": "Shop now",
            "url": "https://shop.example/offer?promo={{1}}",
            "example": ["summer23"],
        },
    ],
}
IMAGE = {"type": "image", "link": "https://cdn.example/summer.png"}
BUTTONS = [
    {"index": 0, "sub_type": "quick_reply", "parameter": "STOP:42"},
    {"index": 1, "sub_type": "url", "parameter": "rui-10"},
]


def test_a_media_header_and_button_variables_are_checked_at_the_request_and_sent_as_components(
    system: SenderSystem,
):
    _, key = system.tenant("tmpl-media")
    client = system.client(key)
    channel = waba_channel(system, client)
    pnid = channel["settings"]["phone_number_id"]

    no_sample = client.post(
        "/v1/templates", json={**OFFER, "header_handle": None, "channel_id": channel["id"]}
    )
    assert no_sample.status_code == 422 and "header_handle" in no_sample.json()["message"], no_sample.text
    created = client.post("/v1/templates", json={**OFFER, "channel_id": channel["id"]})
    assert created.status_code == 201, created.text
    assert created.json()["header_format"] == "IMAGE" and created.json()["header"] is None
    at_meta = next(t for t in system.meta.fake.state.templates.values() if t["name"] == "summer_offer")
    assert at_meta["components"][0] == {
        "type": "HEADER",
        "format": "IMAGE",
        "example": {"header_handle": [OFFER["header_handle"]]},
    }
    synced_status(client, created.json()["id"], "APPROVED")

    base = {"kind": "template", "name": "summer_offer", "language": "en_US", "body_params": ["Rui", "summer"]}
    for content, words in [
        (
            {**base, "buttons": BUTTONS},
            'content.header: template \'summer_offer\' (en_US) has an IMAGE header: give {"type": "image"',
        ),
        (
            {**base, "header": {"type": "document", "link": "https://cdn.example/a.pdf"}, "buttons": BUTTONS},
            "IMAGE header",
        ),
        (
            {**base, "header": IMAGE, "buttons": BUTTONS[:1]},
            "content.buttons: template 'summer_offer' (en_US)'s URL button 1 ends in a variable",
        ),
        (
            {**base, "header": IMAGE, "buttons": [*BUTTONS, {"index": 2, "parameter": "x"}]},
            "no button index 2",
        ),
        (
            {**base, "header": IMAGE, "buttons": BUTTONS, "body_params": ["Rui"]},
            "2 body variable(s), 1 given",
        ),
    ]:
        response = client.post(
            "/v1/messages", json={"to": phone(8), "content": content, "channel_id": channel["id"]}
        )
        assert response.status_code == 422, (content, response.text)
        assert words in response.json()["message"], (content, response.json())
    batch = client.post(
        "/v1/messages/batch",
        json={
            "messages": [
                {
                    "to": phone(8),
                    "content": {**base, "header": IMAGE, "buttons": BUTTONS},
                    "channel_id": channel["id"],
                },
                {"to": phone(8), "content": {**base, "header": IMAGE}, "channel_id": channel["id"]},
            ]
        },
    )
    assert batch.status_code == 422, batch.text
    assert batch.json()["message"].startswith("messages.1.content.buttons: "), batch.json()
    assert client.get("/v1/messages").json()["items"] == []

    ok = client.post(
        "/v1/messages",
        json={
            "to": phone(8),
            "content": {**base, "header": IMAGE, "buttons": BUTTONS},
            "channel_id": channel["id"],
        },
    )
    assert ok.status_code == 202, ok.text
    wait_status(client, ok.json()["id"], "sent", timeout=30)
    sent = system.meta.received_for(pnid)[-1]["body"]["template"]
    assert sent["components"] == [
        {"type": "header", "parameters": [{"type": "image", "image": {"link": IMAGE["link"]}}]},
        {"type": "body", "parameters": [{"type": "text", "text": "Rui"}, {"type": "text", "text": "summer"}]},
        {
            "type": "button",
            "sub_type": "quick_reply",
            "index": "0",
            "parameters": [{"type": "payload", "payload": "STOP:42"}],
        },
        {
            "type": "button",
            "sub_type": "url",
            "index": "1",
            "parameters": [{"type": "text", "text": "rui-10"}],
        },
    ]


def test_the_meta_stand_in_refuses_a_media_header_or_url_variable_left_out(system: SenderSystem):
    """What the sender's request check prevents, the stand-in refuses as Meta does (for templates
    the catalogue does not have yet)."""
    _, key = system.tenant("tmpl-media-meta")
    client = system.client(key)
    channel = waba_channel(system, client)
    waba = channel["settings"]["waba_id"]
    system.meta.fake.state.templates["987650002"] = {
        "id": "987650002",
        "waba_id": waba,
        "name": "elsewhere_offer",
        "language": "en_US",
        "category": "MARKETING",
        "parameter_format": "POSITIONAL",
        "components": [
            {"type": "HEADER", "format": "IMAGE", "example": {"header_handle": ["4::x"]}},
            {"type": "BODY", "text": "Hi {{1}}!", "example": {"body_text": [["Mark"]]}},
            {"type": "BUTTONS", "buttons": OFFER["buttons"]},
        ],
        "status": "APPROVED",
        "rejected_reason": "NONE",
        "review_at": 0,
    }
    base = {"kind": "template", "name": "elsewhere_offer", "language": "en_US", "body_params": ["Rui"]}
    for content, code in [({**base, "buttons": BUTTONS}, "132012"), ({**base, "header": IMAGE}, "132000")]:
        response = client.post(
            "/v1/messages", json={"to": phone(9), "content": content, "channel_id": channel["id"]}
        )
        assert response.status_code == 202, response.text
        failed = wait_status(client, response.json()["id"], "failed", timeout=30)
        assert failed["error_code"] == code, failed


def test_on_a_sandbox_channel_the_media_link_and_the_filled_url_are_in_the_text(system: SenderSystem):
    _, key = system.tenant("tmpl-media-sandbox")
    client = system.client(key)
    sandbox = client.post("/v1/channels", json={"name": "sb", "provider": "sandbox"}).json()
    created = client.post("/v1/templates", json={**OFFER, "header_handle": None, "channel_id": sandbox["id"]})
    assert created.status_code == 201, created.text
    content = {
        "kind": "template",
        "name": "summer_offer",
        "language": "en_US",
        "variables": {"1": "Rui", "2": "summer"},
        "header": IMAGE,
        "buttons": BUTTONS,
    }
    message_id = client.post(
        "/v1/messages", json={"to": phone(10), "content": content, "channel_id": sandbox["id"]}
    ).json()["id"]
    wait_status(client, message_id, "sent", timeout=30)
    received = client.get("/v1/sandbox/messages", params={"message_id": message_id}).json()["items"]
    assert [r["text"] for r in received] == [
        "https://cdn.example/summer.png\n\nHi Rui! Our summer sale is on.\n\nReply STOP to opt out\n\n"
        "Stop promos | Shop now: https://shop.example/offer?promo=rui-10"
    ]
