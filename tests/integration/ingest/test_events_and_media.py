"""Opt-outs, template statuses, media downloads and transcription, contacts and erasure."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from services.ingest.models import media_jobs, webhook_deliveries
from tests.integration.ingest.conftest import Ingest, example

pytestmark = pytest.mark.integration
OGG = b"OggS\x00\x02" + bytes(range(200))
JPEG = b"\xff\xd8\xff\xe0" + bytes(300)


def meta_text(text: str, wamid: str, phone: str = "16505551234") -> dict:
    body = example("meta-webhooks/meta-openapi__inbound_text.json")
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    message.update(id=wamid, text={"body": text}, **{"from": phone})
    return body


def by_type(events: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for event in events:
        out.setdefault(event["type"], []).append(event["data"])
    return out


async def test_opt_out_and_opt_in_keywords_default_and_per_tenant(ingest: Ingest):
    for i, text in enumerate(["Stop!", "please don't stop", "  voltar ", "Parar"]):
        assert (await ingest.post("meta", meta_text(text, f"wamid.k{i}"))).status_code == 200
    got = by_type(await ingest.events(7) + await ingest.drain(0.3))
    assert len(got["inbound.received.v1"]) == 4
    assert [e["reason"] for e in got["contact.opted_out.v1"]] == ["keyword STOP", "keyword PARAR"]
    assert [e["reason"] for e in got["contact.opted_in.v1"]] == ["keyword VOLTAR"]
    assert {e["phone"] for e in got["contact.opted_out.v1"]} == {"+16505551234"}
    assert got["contact.opted_out.v1"][0]["channel_id"] == str(ingest.channel_id)

    put = await ingest.client.put(
        "/v1/opt-out-keywords", json={"opt_out": ["BASTA"], "opt_in": ["ANCORA"]}, headers=ingest.auth
    )
    assert put.status_code == 200
    for i, text in enumerate(["basta", "stop"]):
        await ingest.post("meta", meta_text(text, f"wamid.t{i}"))
    got = by_type(await ingest.events(3) + await ingest.drain(0.3))
    assert [e["reason"] for e in got["contact.opted_out.v1"]] == ["keyword BASTA"], (
        "STOP is no longer a keyword"
    )
    clash = await ingest.client.put(
        "/v1/opt-out-keywords", json={"opt_out": ["X"], "opt_in": ["x"]}, headers=ingest.auth
    )
    assert clash.status_code == 422


async def test_meta_marketing_preferences_and_template_status(ingest: Ingest):
    prefs = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "user_preferences",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": "106540352242922",
                            },
                            "contacts": [{"wa_id": "16505551234", "profile": {"name": "Sheena"}}],
                            "user_preferences": [
                                {
                                    "wa_id": "16505551234",
                                    "detail": "User requested to stop marketing messages",
                                    "category": "marketing_messages",
                                    "value": "stop",
                                    "timestamp": 1731705721,
                                },
                                {
                                    "wa_id": "16505551234",
                                    "detail": "User requested to resume marketing messages",
                                    "category": "marketing_messages",
                                    "value": "resume",
                                    "timestamp": 1731705799,
                                },
                            ],
                        },
                    }
                ],
            }
        ],
    }
    template = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "time": 1731705800,
                "changes": [
                    {
                        "field": "message_template_status_update",
                        "value": {
                            "event": "REJECTED",
                            "message_template_id": 1234,
                            "message_template_name": "order_ready",
                            "message_template_language": "pt_BR",
                            "reason": "INCORRECT_CATEGORY",
                        },
                    }
                ],
            }
        ],
    }
    assert (await ingest.post("meta", prefs)).json()["events"] == 2
    assert (await ingest.post("meta", template)).json()["events"] == 1
    got = by_type(await ingest.events(3) + await ingest.drain(0.3))
    assert got["contact.opted_out.v1"][0]["phone"] == "+16505551234"
    assert "stop marketing" in got["contact.opted_out.v1"][0]["reason"]
    assert got["contact.opted_in.v1"][0]["phone"] == "+16505551234"
    assert got["template.status_changed.v1"] == [
        {
            "template_name": "order_ready",
            "language": "pt_BR",
            "status": "REJECTED",
            "reason": "INCORRECT_CATEGORY",
            "at": "2024-11-15T21:23:20Z",
        }
    ]


async def test_evolution_lid_sender_is_resolved_and_waha_c_us_is_a_phone(ingest: Ingest):
    await ingest.post(
        "evolution", example("evolution-api/examples/webhook_messages_upsert_text.constructed.json")
    )
    lid = example("evolution-api/examples/webhook_messages_upsert_text.constructed.json")
    lid["data"]["key"].update(
        id="LID1",
        remoteJid="123456789012345@lid",
        remoteJidAlt="5511988887777@s.whatsapp.net",
        addressingMode="lid",
    )
    await ingest.post("evolution", lid)
    no_alt = copy.deepcopy(lid)
    no_alt["data"]["key"].update(id="LID2")
    del no_alt["data"]["key"]["remoteJidAlt"]
    assert (await ingest.post("evolution", no_alt)).json()["status"] == "unrecognised"
    await ingest.post("waha", example("waha/examples/webhook_message.constructed.json"))
    got = await ingest.events(3) + await ingest.drain(0.3)
    assert sorted(e["data"]["from_phone"] for e in got) == [
        "+5511988887777",
        "+5511999998888",
        "+5511999998888",
    ]
    assert {e["data"]["text"] for e in got} == {"Hi, is my order ready?"}


async def stored_blob(ingest: Ingest, key: str) -> bytes:
    return (Path(ingest.blob_dir) / key).read_bytes()


async def test_meta_image_and_voice_are_downloaded_stored_and_the_voice_note_transcribed(ingest: Ingest):
    image = example("meta-webhooks/meta-openapi__inbound_image.json")
    media_id = image["entry"][0]["changes"][0]["value"]["messages"][0]["image"]["id"]
    ingest.media.put(f"meta-{media_id}", JPEG, "image/jpeg")
    image["entry"][0]["changes"][0]["value"]["messages"][0]["image"]["id"] = f"meta-{media_id}"
    voice = example("meta-webhooks/pywa__inbound_voice.json")
    voice = json.loads(json.dumps(voice).replace("972987654321", "5511999998888"))
    voice["entry"][0]["changes"][0]["value"]["messages"][0]["audio"]["id"] = "meta-voice-1"
    ingest.media.put("meta-voice-1", OGG, "audio/ogg")
    assert (await ingest.post("meta", image)).status_code == 200
    assert (await ingest.post("meta", voice)).status_code == 200
    got = {e["data"]["kind"]: e["data"] for e in await ingest.events(2, within=20)}
    assert await stored_blob(ingest, got["image"]["media"]["blob_key"]) == JPEG
    assert got["image"]["media"]["mime_type"] == "image/jpeg" and "pending" not in got["image"]["media"]
    assert await stored_blob(ingest, got["voice"]["media"]["blob_key"]) == OGG
    assert got["voice"]["transcript"] == ingest.media.transcript
    assert got["voice"]["media"]["blob_key"].startswith(f"{ingest.tenant_id}/p-")


async def test_chatwoot_redirect_evolution_base64_and_waha_files_are_stored(ingest: Ingest):
    chatwoot = example("chatwoot/examples/webhook_message_created_incoming_audio.constructed.json")
    chatwoot["attachments"][0]["data_url"] = (
        f"{ingest.media.url}/rails/active_storage/blobs/redirect/cw-voice.ogg"
    )
    ingest.media.put("cw-voice.ogg", OGG, "audio/ogg")
    evolution = example("evolution-api/examples/webhook_messages_upsert_voice_note.constructed.json")
    evolution["data"]["message"]["base64"] = base64.b64encode(OGG).decode()
    waha = example("waha/examples/webhook_message_voice.constructed.json")
    waha["payload"]["media"]["url"] = f"{ingest.media.url}/api/files/waha-voice.oga"
    ingest.media.put("waha-voice.oga", OGG, "audio/ogg")
    for provider, body in (("chatwoot", chatwoot), ("evolution", evolution), ("waha", waha)):
        assert (await ingest.post(provider, body)).status_code == 200, provider
    got = {e["data"]["provider"]: e["data"] for e in await ingest.events(3, within=20)}
    assert set(got) == {"chatwoot", "evolution", "waha"}
    for data in got.values():
        assert "error" not in data["media"], data["media"]
        assert await stored_blob(ingest, data["media"]["blob_key"]) == OGG
        assert data["transcript"] == ingest.media.transcript
    assert "base64" not in json.dumps(got["evolution"]), "inline media never travels in the event"


async def test_media_that_cannot_be_fetched_is_retried_then_published_with_the_error(ingest: Ingest):
    ingest.media.put("flaky.ogg", OGG, "audio/ogg")
    ingest.media.fail_next = 1
    flaky = example("chatwoot/examples/webhook_message_created_incoming_audio.constructed.json")
    flaky["attachments"][0]["data_url"] = f"{ingest.media.url}/files/flaky.ogg"
    missing = copy.deepcopy(flaky)
    missing["id"] = 9999
    missing["attachments"][0]["data_url"] = f"{ingest.media.url}/files/never-there.ogg"
    await ingest.post("chatwoot", flaky)
    await ingest.post("chatwoot", missing)
    got = {e["data"]["provider_message_id"]: e["data"] for e in await ingest.events(2, within=20)}
    assert "blob_key" in got["9001"]["media"], "a 503 is retried"
    assert "404" in got["9999"]["media"]["error"], "a message is published even when its media is gone"
    async with ingest.runtime.engine.connect() as conn:
        states = dict(
            (
                await conn.execute(
                    sa.select(media_jobs.c.event_id, media_jobs.c.state).where(
                        media_jobs.c.tenant_id == ingest.tenant_id
                    )
                )
            ).all()
        )
    assert sorted(states.values()) == ["done", "failed"]


async def test_contacts_are_listed_mapped_to_users_and_a_users_data_erased(ingest: Ingest):
    ingest.media.put("meta-erase", JPEG, "image/jpeg")
    await ingest.post("meta", meta_text("hello", "wamid.c1", "5511999998888"))
    await ingest.post("meta", meta_text("hi", "wamid.c2", "5511988887777"))
    await ingest.events(2)
    unmapped = (
        await ingest.client.get("/v1/contacts", params={"unmapped": True}, headers=ingest.auth)
    ).json()["items"]
    assert sorted(c["phone"] for c in unmapped) == ["+5511988887777", "+5511999998888"]
    put = await ingest.client.put(
        "/v1/contacts/+5511999998888", json={"user_id": "user-42"}, headers=ingest.auth
    )
    assert put.status_code == 200
    unmapped = (
        await ingest.client.get("/v1/contacts", params={"unmapped": True}, headers=ingest.auth)
    ).json()["items"]
    assert [c["phone"] for c in unmapped] == ["+5511988887777"]

    image = example("meta-webhooks/meta-openapi__inbound_image.json")
    message = image["entry"][0]["changes"][0]["value"]["messages"][0]
    message.update(id="wamid.c3", **{"from": "5511999998888"})
    message["image"]["id"] = "meta-erase"
    await ingest.post("meta", image)
    event = (await ingest.events(1, within=20))[0]["data"]
    assert event["user_id"] == "user-42"
    assert event["media"]["blob_key"].startswith(f"{ingest.tenant_id}/u-user-42/")
    blob = Path(ingest.blob_dir) / event["media"]["blob_key"]
    assert blob.exists()

    erased = await ingest.client.delete("/v1/users/user-42/data", headers=ingest.auth)
    assert erased.status_code == 200, erased.text
    assert erased.json()["webhooks_erased"] == 2 and erased.json()["media_erased"] == 1
    assert not blob.exists()
    async with ingest.runtime.engine.connect() as conn:
        bodies = (
            (
                await conn.execute(
                    sa.select(webhook_deliveries.c.body).where(
                        webhook_deliveries.c.tenant_id == ingest.tenant_id
                    )
                )
            )
            .scalars()
            .all()
        )
    assert len(bodies) == 1 and b"5511988887777" in bytes(bodies[0]), (
        "only the other contact's webhook is left"
    )
    assert (await ingest.client.delete("/v1/users/user-42/data", headers=ingest.auth)).status_code == 404
    other = await ingest.client.get("/v1/contacts", headers={"Authorization": "Bearer hk_wrong"})
    assert other.status_code == 401


async def test_a_user_erased_while_their_media_downloads_gets_nothing_stored_or_published(ingest: Ingest):
    await ingest.post("meta", meta_text("hello", "wamid.e1", "5511977776666"))
    await ingest.events(1)
    put = await ingest.client.put(
        "/v1/contacts/+5511977776666", json={"user_id": "user-77"}, headers=ingest.auth
    )
    assert put.status_code == 200
    ingest.media.put("meta-slow", JPEG, "image/jpeg")
    ingest.media.file_delay = 1.5  # the download is under way when the erasure comes
    try:
        image = example("meta-webhooks/meta-openapi__inbound_image.json")
        message = image["entry"][0]["changes"][0]["value"]["messages"][0]
        message.update(id="wamid.e2", **{"from": "5511977776666"})
        message["image"]["id"] = "meta-slow"
        assert (await ingest.post("meta", image)).status_code == 200
        for _ in range(200):
            if ("file", "meta-slow") in ingest.media.calls:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the media worker never started the download")
        erased = await ingest.client.delete("/v1/users/user-77/data", headers=ingest.auth)
        assert erased.status_code == 200, erased.text
        assert erased.json()["webhooks_erased"] == 2
        late = await ingest.events(1, within=4)  # the download finishes meanwhile
    finally:
        ingest.media.file_delay = 0.0
    assert late == [], "the erased user's message was published after the erasure"
    user_dir = Path(ingest.blob_dir) / str(ingest.tenant_id) / "u-user-77"
    assert not user_dir.exists() or not any(p.is_file() for p in user_dir.rglob("*")), (
        "the erased user's media was stored after the erasure"
    )
    async with ingest.runtime.engine.connect() as conn:
        jobs = (
            await conn.execute(sa.select(sa.func.count()).where(media_jobs.c.tenant_id == ingest.tenant_id))
        ).scalar()
    assert jobs == 0


async def test_media_of_a_type_not_accepted_is_not_stored_and_the_message_says_why(ingest: Ingest):
    ingest.media.put("tool.exe", b"MZ" + bytes(100), "application/x-msdownload")
    body = example("chatwoot/examples/webhook_message_created_incoming_audio.constructed.json")
    body["attachments"][0].update(file_type="file", data_url=f"{ingest.media.url}/files/tool.exe")
    await ingest.post("chatwoot", body)
    data = (await ingest.events(1, within=20))[0]["data"]
    assert data["kind"] == "document"
    assert "application/x-msdownload" in data["media"]["error"] and "blob_key" not in data["media"]


async def test_chatwoot_quick_reply_answer_and_outgoing_status(ingest: Ingest):
    select = example("chatwoot/examples/webhook_message_created_outgoing_agent_input_select.constructed.json")
    answered = {
        **select,
        "event": "message_updated",
        "content_attributes": {
            **select["content_attributes"],
            "submitted_values": [{"title": "Reschedule", "value": "reschedule"}],
        },
    }
    delivered = {
        **select,
        "event": "message_updated",
        "content_type": "text",
        "status": "delivered",
        "source_id": "wamid.out1",
    }
    assert (await ingest.post("chatwoot", answered)).json()["events"] == 1
    assert (await ingest.post("chatwoot", delivered)).json()["events"] == 1
    got = {e["type"]: e["data"] for e in await ingest.events(2)}
    reply = got["inbound.received.v1"]
    assert (reply["kind"], reply["payload"], reply["title"], reply["from_phone"]) == (
        "interactive",
        "reschedule",
        "Reschedule",
        "+5511999998888",
    )
    assert got["delivery.status.v1"]["status"] == "delivered"
    assert got["delivery.status.v1"]["provider_message_id"] == "wamid.out1"
