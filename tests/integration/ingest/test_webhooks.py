"""Provider webhooks through the real endpoint, stored in PostgreSQL, published on RabbitMQ."""

from __future__ import annotations

import copy
import json
import time

import pytest
import sqlalchemy as sa

from services.ingest.models import webhook_deliveries
from tests.integration.ingest.conftest import Ingest, example, signed_headers

pytestmark = pytest.mark.integration

# example file → what a user expects on the broker: (type, kind or status) per event
EXAMPLES = {
    ("meta", "meta-webhooks/meta-openapi__inbound_text.json"): [("inbound.received.v1", "text")],
    ("meta", "meta-webhooks/meta-openapi__inbound_image.json"): [("inbound.received.v1", "image")],
    ("meta", "meta-webhooks/meta-openapi__inbound_interactive_button_reply.json"): [
        ("inbound.received.v1", "interactive")
    ],
    ("meta", "meta-webhooks/meta-openapi__inbound_interactive_list_reply.json"): [
        ("inbound.received.v1", "interactive")
    ],
    ("meta", "meta-webhooks/meta-openapi__inbound_reaction.json"): [("inbound.received.v1", "reaction")],
    ("meta", "meta-webhooks/meta-openapi__inbound_template_quick_reply_button.json"): [
        ("inbound.received.v1", "button")
    ],
    ("meta", "meta-webhooks/meta-openapi__inbound_unsupported_with_errors.json"): [
        ("inbound.received.v1", "unsupported")
    ],
    ("meta", "meta-webhooks/meta-openapi__system_user_changed_number.json"): [],
    ("meta", "meta-webhooks/pywa__status_sent.json"): [("delivery.status.v1", "sent")],
    ("meta", "meta-webhooks/pywa__status_delivered.json"): [("delivery.status.v1", "delivered")],
    ("meta", "meta-webhooks/pywa__status_read.json"): [("delivery.status.v1", "read")],
    ("meta", "meta-webhooks/pywa__status_failed.json"): [("delivery.status.v1", "failed")],
    ("chatwoot", "chatwoot/examples/webhook_message_created_incoming_audio.constructed.json"): [
        ("inbound.received.v1", "audio")
    ],
    (
        "chatwoot",
        "chatwoot/examples/webhook_message_created_outgoing_agent_input_select.constructed.json",
    ): [],
    ("chatwoot", "chatwoot/examples/webhook_conversation_status_changed.constructed.json"): [],
    ("evolution", "evolution-api/examples/webhook_messages_upsert_text.constructed.json"): [
        ("inbound.received.v1", "text")
    ],
    ("evolution", "evolution-api/examples/webhook_messages_upsert_voice_note.constructed.json"): [
        ("inbound.received.v1", "voice")
    ],
    ("evolution", "evolution-api/examples/webhook_messages_update_read.constructed.json"): [
        ("delivery.status.v1", "read")
    ],
    ("evolution", "evolution-api/examples/webhook_connection_update_open.constructed.json"): [
        ("channel.session_changed.v1", "connected")
    ],
    ("evolution", "evolution-api/examples/webhook_qrcode_updated.constructed.json"): [
        ("channel.session_changed.v1", "qr")
    ],
    ("waha", "waha/examples/webhook_message.constructed.json"): [("inbound.received.v1", "text")],
    ("waha", "waha/examples/webhook_message_voice.constructed.json"): [("inbound.received.v1", "voice")],
    ("waha", "waha/examples/webhook_message_ack.constructed.json"): [("delivery.status.v1", "read")],
    ("waha", "waha/examples/webhook_session_status.constructed.json"): [
        ("channel.session_changed.v1", "connected")
    ],
}
# pywa's inbound fixtures come from +972987654321, which is not a valid Israeli number: Herald
# stores them flagged (nothing is dropped), and the same payloads from a valid number are published.
PYWA_INBOUND = {
    "pywa__inbound_text.json": "text",
    "pywa__inbound_image.json": "image",
    "pywa__inbound_audio.json": "audio",
    "pywa__inbound_voice.json": "voice",
    "pywa__inbound_document.json": "document",
    "pywa__inbound_interactive_button_reply.json": "interactive",
    "pywa__inbound_interactive_list_reply.json": "interactive",
    "pywa__inbound_template_quick_reply_button.json": "button",
    "pywa__inbound_reply_with_context.json": "text",
    "pywa__inbound_interactive_with_errors.json": "unsupported",
}


def kind_of(event: dict) -> str:
    return event["data"].get("kind") or event["data"].get("status") or event["data"].get("state")


async def deliveries(ingest: Ingest) -> list:
    async with ingest.runtime.engine.connect() as conn:
        return (
            await conn.execute(
                sa.select(webhook_deliveries)
                .where(webhook_deliveries.c.tenant_id == ingest.tenant_id)
                .order_by(webhook_deliveries.c.id)
            )
        ).all()


@pytest.mark.parametrize(("provider", "path"), list(EXAMPLES), ids=[p.split("/")[-1] for _, p in EXAMPLES])
async def test_every_example_payload_is_stored_verbatim_and_published(
    ingest: Ingest, provider: str, path: str
):
    payload = example(path)
    raw = json.dumps(payload).encode()
    response = await ingest.post(provider, payload, raw=raw)
    assert response.status_code == 200, response.text
    expected = EXAMPLES[(provider, path)]
    published = await ingest.events(len(expected), within=15) if expected else []
    published += await ingest.drain(quiet=0.3)
    assert sorted((e["type"], kind_of(e)) for e in published) == sorted(expected)
    for event in published:
        assert event["data"].get("channel_id") == str(ingest.channel_id)
        assert event["data"]["provider"] == provider
        if event["type"] == "inbound.received.v1":
            assert event["data"]["from_phone"].startswith("+")
    stored = await deliveries(ingest)
    assert [bytes(r.body) for r in stored] == [raw], "the raw body is stored verbatim, once"
    assert stored[0].outcome == "accepted"


@pytest.mark.parametrize("name", list(PYWA_INBOUND))
async def test_pywa_inbound_payloads_from_an_invalid_number_are_flagged_and_from_a_valid_one_published(
    ingest: Ingest, name: str
):
    payload = example(f"meta-webhooks/{name}")
    response = await ingest.post("meta", payload)
    assert response.status_code == 200
    assert response.json()["status"] == "unrecognised"
    stored = await deliveries(ingest)
    assert stored[-1].outcome == "unrecognised" and "+972987654321" in stored[-1].note

    valid = json.loads(
        json.dumps(payload).replace("972987654321", "5511999998888").replace("wamid.xyzxyz", "wamid.valid")
    )
    assert (await ingest.post("meta", valid)).status_code == 200
    published = await ingest.events(1, within=15)
    assert [kind_of(e) for e in published] == [PYWA_INBOUND[name]]
    data = published[0]["data"]
    assert data["from_phone"] == "+5511999998888"
    assert data["profile_name"] == "Test Name"
    if name == "pywa__inbound_reply_with_context.json":
        assert data["reply_to"] == "wamid.valid=="
    if name == "pywa__inbound_template_quick_reply_button.json":
        assert data["payload"] and data["title"]


async def test_the_same_message_or_status_twice_is_stored_once_and_published_once(ingest: Ingest):
    text = example("meta-webhooks/meta-openapi__inbound_text.json")
    status = example("meta-webhooks/pywa__status_read.json")
    for _ in range(2):
        assert (await ingest.post("meta", text)).status_code == 200
        assert (await ingest.post("meta", status)).status_code == 200
    published = await ingest.events(2) + await ingest.drain()
    assert sorted(e["type"] for e in published) == ["delivery.status.v1", "inbound.received.v1"]
    outcomes = [r.outcome for r in await deliveries(ingest)]
    assert outcomes == ["accepted", "accepted", "duplicate", "duplicate"]
    assert [bytes(r.body) for r in await deliveries(ingest)][2:] == [b"", b""], (
        "a duplicate body is not kept twice"
    )
    # the same wamid with a new status is news
    delivered = json.loads(json.dumps(status).replace('"read"', '"delivered"'))
    assert (await ingest.post("meta", delivered)).json()["events"] == 1


async def test_a_batch_with_several_entries_messages_and_statuses_publishes_each(ingest: Ingest):
    text = example("meta-webhooks/meta-openapi__inbound_text.json")
    reaction = example("meta-webhooks/meta-openapi__inbound_reaction.json")
    sent = example("meta-webhooks/pywa__status_sent.json")
    batch = copy.deepcopy(text)
    reaction["entry"][0]["changes"][0]["value"]["messages"][0]["id"] = (
        "wamid.reaction"  # the spec reuses one id
    )
    batch["entry"].append(reaction["entry"][0])
    batch["entry"][0]["changes"][0]["value"]["statuses"] = sent["entry"][0]["changes"][0]["value"]["statuses"]
    second = copy.deepcopy(text["entry"][0]["changes"][0]["value"]["messages"][0])
    second["id"] = "wamid.second"
    second["text"] = {"body": "and another"}
    batch["entry"][0]["changes"][0]["value"]["messages"].append(second)
    response = await ingest.post("meta", batch)
    assert response.json() == {"status": "accepted", "events": 4, "duplicates": 0}
    published = await ingest.events(4) + await ingest.drain(0.3)
    assert sorted(kind_of(e) for e in published) == ["reaction", "sent", "text", "text"]


@pytest.mark.parametrize("provider", ["meta", "chatwoot", "waha", "evolution"])
async def test_a_bad_signature_gets_401_and_nothing_is_stored(ingest: Ingest, provider: str):
    body = json.dumps({"object": "whatsapp_business_account", "entry": [], "event": "message"}).encode()
    headers = signed_headers(provider, body + b" ")  # signed over other bytes
    if provider == "evolution":
        headers = {"apikey": "not-the-key"}
    response = await ingest.post(provider, None, raw=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    unsigned = await ingest.post(provider, None, raw=body, headers={"Content-Type": "application/json"})
    assert unsigned.status_code == 401
    assert await deliveries(ingest) == []
    day = (await ingest.client.get("/v1/inbound/stats", headers=ingest.auth)).json()["days"][-1]
    assert day["rejected"] == 2 and day["received"] == 0


async def test_a_stale_chatwoot_timestamp_is_a_replay(ingest: Ingest):
    body = json.dumps(
        example("chatwoot/examples/webhook_message_created_incoming_audio.constructed.json")
    ).encode()
    stale = signed_headers("chatwoot", body, timestamp=int(time.time()) - 3600)
    response = await ingest.post("chatwoot", None, raw=body, headers=stale)
    assert response.status_code == 401
    assert "X-Chatwoot-Timestamp" in response.json()["message"]
    assert await deliveries(ingest) == []


async def test_oversized_malformed_and_unknown_source(ingest: Ingest):
    huge = b'{"object":"whatsapp_business_account","pad":"' + b"x" * 1_100_000 + b'"}'
    assert (await ingest.post("meta", None, raw=huge)).status_code == 413
    bad = b'{"object": "whatsapp_business_account", "entry": ['
    response = await ingest.post("meta", None, raw=bad)
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"
    assert await deliveries(ingest) == []
    missing = await ingest.client.post("/webhooks/meta/00000000-0000-0000-0000-000000000000", content=b"{}")
    assert missing.status_code == 404
    # a source of another provider is not found under this provider's path
    url = await ingest.url("waha")
    assert (await ingest.client.post(url.replace("/waha/", "/meta/"), content=b"{}")).status_code == 404


async def test_a_verified_body_of_unknown_shape_is_stored_and_flagged(ingest: Ingest):
    for payload in ({"object": "page", "entry": []}, [1, 2, 3], "just a string"):
        assert (await ingest.post("meta", payload)).json()["status"] == "unrecognised"
    unknown_field = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "account_update", "value": {}}]}],
    }
    assert (await ingest.post("meta", unknown_field)).json()["status"] == "unrecognised"
    stored = await deliveries(ingest)
    assert [r.outcome for r in stored] == ["unrecognised"] * 4
    assert "account_update" in stored[-1].note
    day = (await ingest.client.get("/v1/inbound/stats", headers=ingest.auth)).json()["days"][-1]
    assert day["unrecognised"] == 4 and day["received"] == 4


async def test_a_verified_body_with_a_field_of_the_wrong_type_is_stored_not_a_500(ingest: Ingest):
    # found by the property test: Chatwoot's attachment ``file_type`` as a list crashed the reader
    body = {
        "event": "message_created",
        "id": 9001,
        "message_type": "incoming",
        "content": "hello",
        "conversation": {"id": 7, "contact_inbox": {"source_id": "5511987654321"}},
        "sender": {"id": 3, "phone_number": "+5511987654321", "name": "Ana"},
        "attachments": [{"file_type": ["image"], "data_url": "https://example.test/a.jpg"}],
    }
    response = await ingest.post("chatwoot", body)
    assert response.status_code == 200, response.text
    stored = await deliveries(ingest)
    assert stored and stored[-1].outcome in ("unrecognised", "accepted"), stored


async def test_meta_subscription_handshake(ingest: Ingest):
    url = await ingest.url("meta")
    ok = await ingest.client.get(
        url, params={"hub.mode": "subscribe", "hub.verify_token": "verify-me", "hub.challenge": "1158201444"}
    )
    assert ok.status_code == 200 and ok.text == "1158201444"
    wrong = await ingest.client.get(
        url, params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"}
    )
    assert wrong.status_code == 403


async def test_sources_are_the_tenants_own_and_secrets_are_never_returned(ingest: Ingest):
    url = await ingest.url("meta")
    listed = (await ingest.client.get("/v1/webhook-sources", headers=ingest.auth)).json()["items"]
    assert [s["url"] for s in listed] == [url]
    assert listed[0]["secrets"] == ["access_token", "app_secret", "graph_url", "verify_token"]
    assert "meta-app-secret" not in json.dumps(listed)
    missing = await ingest.client.post(
        "/v1/webhook-sources", json={"provider": "meta", "secrets": {"app_secret": "x"}}, headers=ingest.auth
    )
    assert missing.status_code == 422 and "verify_token" in missing.json()["message"]
    source_id = listed[0]["id"]
    assert (
        await ingest.client.delete(f"/v1/webhook-sources/{source_id}", headers=ingest.auth)
    ).status_code == 204
    body = json.dumps(example("meta-webhooks/meta-openapi__inbound_text.json")).encode()
    gone = await ingest.client.post(url, content=body, headers=signed_headers("meta", body))
    assert gone.status_code == 404
