"""The sender against a local Cloud API server: channels, every message kind, errors, retries,
dead letters, checks, statuses."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from devtools.database import asyncpg_dsn
from devtools.processes import wait_for
from tests.e2e.sender.conftest import TOKEN, SenderSystem, wait_status

pytestmark = pytest.mark.e2e


def phone(i: int) -> str:
    return f"+55119{i:08d}"


def test_channels_validate_per_provider_store_credentials_encrypted_and_never_return_them(
    system: SenderSystem,
):
    tenant_id, key = system.tenant("channels")
    client = system.client(key)
    created = system.meta_channel(client, name="main number")
    assert created["settings"]["api_version"] == "v23.0"
    assert created["credentials_set"] == ["access_token"]
    assert TOKEN not in str(created)
    assert created["breaker"] == "closed" and created["enforce_window"] is True

    defaults = client.post(
        "/v1/channels",
        json={
            "name": "m",
            "provider": "meta",
            "settings": {"phone_number_id": "1"},
            "credentials": {"access_token": "x"},
        },
    ).json()
    assert (defaults["throughput_per_second"], defaults["pair_interval_seconds"], defaults["tier"]) == (
        80,
        6,
        None,
    )
    assert defaults["base_url"] is None

    for body, problem in [
        ({"provider": "meta", "settings": {"phone_number_id": "1"}}, "a meta channel needs access_token"),
        (
            {
                "provider": "chatwoot",
                "settings": {"account_id": "1"},
                "credentials": {"api_access_token": "k"},
            },
            "inbox_id",
        ),
        (
            {
                "provider": "evolution",
                "settings": {"instance": "i", "colour": "red"},
                "credentials": {"api_key": "k"},
            },
            "colour",
        ),
        ({"provider": "telegram"}, "provider"),
        (
            {
                "provider": "meta",
                "tier": 300,
                "settings": {"phone_number_id": "1"},
                "credentials": {"access_token": "x"},
            },
            "tier",
        ),
    ]:
        response = client.post("/v1/channels", json={"name": "bad", **body})
        assert response.status_code == 422, response.text
        assert problem in response.json()["message"], response.json()

    for provider, settings, credentials in [
        ("chatwoot", {"account_id": "1", "inbox_id": "2"}, {"api_access_token": "cw"}),
        ("evolution", {"instance": "shop"}, {"api_key": "ev"}),
        ("waha", {}, {"api_key": "wa"}),
        ("sandbox", {}, {}),
    ]:
        response = client.post(
            "/v1/channels",
            json={
                "name": provider,
                "provider": provider,
                "base_url": "http://127.0.0.1:9",
                "settings": settings,
                "credentials": credentials,
            },
        )
        assert response.status_code == 201, response.text
        assert response.json()["enforce_window"] is False
    assert [
        c["settings"].get("session")
        for c in client.get("/v1/channels").json()["items"]
        if c["provider"] == "waha"
    ] == ["default"]

    async def stored() -> list[str]:
        conn = await asyncpg.connect(asyncpg_dsn(system.infra.database_url))
        try:
            rows = await conn.fetch(
                "SELECT credentials_enc FROM sender.channels WHERE tenant_id = $1", uuid.UUID(tenant_id)
            )
            return [r["credentials_enc"] or "" for r in rows]
        finally:
            await conn.close()

    assert all(TOKEN not in c and "cw" != c for c in asyncio.run(stored()))

    patched = client.patch(
        f"/v1/channels/{created['id']}",
        json={"throughput_per_second": 20, "credentials": {"access_token": "new"}},
    )
    assert patched.status_code == 200 and patched.json()["throughput_per_second"] == 20
    _, other_key = system.tenant("other")
    assert system.client(other_key).get(f"/v1/channels/{created['id']}").status_code == 404
    assert client.delete(f"/v1/channels/{created['id']}").status_code == 204
    assert client.get(f"/v1/channels/{created['id']}").status_code == 404


KINDS = [
    (
        {"kind": "text", "body": "Your order shipped"},
        {"type": "text", "text": {"body": "Your order shipped", "preview_url": False}},
    ),
    (
        {"kind": "image", "link": "https://cdn.example.com/p.jpg", "caption": "Receipt"},
        {"type": "image", "image": {"link": "https://cdn.example.com/p.jpg", "caption": "Receipt"}},
    ),
    (
        {
            "kind": "document",
            "link": "https://cdn.example.com/i.pdf",
            "filename": "invoice.pdf",
            "caption": "Invoice",
        },
        {
            "type": "document",
            "document": {
                "link": "https://cdn.example.com/i.pdf",
                "caption": "Invoice",
                "filename": "invoice.pdf",
            },
        },
    ),
    (
        {"kind": "audio", "link": "https://cdn.example.com/a.ogg"},
        {"type": "audio", "audio": {"link": "https://cdn.example.com/a.ogg"}},
    ),
    (
        {"kind": "video", "link": "https://cdn.example.com/v.mp4"},
        {"type": "video", "video": {"link": "https://cdn.example.com/v.mp4"}},
    ),
    (
        {
            "kind": "template",
            "name": "appointment_reminder",
            "language": "pt_BR",
            "header": {"type": "image", "link": "https://cdn.example.com/logo.png"},
            "body_params": ["Maria", "02/06 10:00"],
            "buttons": [
                {"index": 0, "parameter": "CONFIRM:123"},
                {"index": 1, "sub_type": "url", "parameter": "abc"},
            ],
        },
        {
            "type": "template",
            "template": {
                "name": "appointment_reminder",
                "language": {"code": "pt_BR"},
                "components": [
                    {
                        "type": "header",
                        "parameters": [
                            {"type": "image", "image": {"link": "https://cdn.example.com/logo.png"}}
                        ],
                    },
                    {
                        "type": "body",
                        "parameters": [
                            {"type": "text", "text": "Maria"},
                            {"type": "text", "text": "02/06 10:00"},
                        ],
                    },
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
                        "parameters": [{"type": "text", "text": "abc"}],
                    },
                ],
            },
        },
    ),
    (
        {
            "kind": "buttons",
            "body": "Confirm?",
            "buttons": [{"id": "yes", "title": "Yes"}, {"id": "no", "title": "No"}],
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "button",
                "body": {"text": "Confirm?"},
                "action": {
                    "buttons": [
                        {"type": "reply", "reply": {"id": "yes", "title": "Yes"}},
                        {"type": "reply", "reply": {"id": "no", "title": "No"}},
                    ]
                },
            },
        },
    ),
    (
        {
            "kind": "list",
            "body": "Pick a slot",
            "button": "Slots",
            "sections": [
                {"title": "Tomorrow", "rows": [{"id": "s1", "title": "09:00", "description": "Dr. Silva"}]}
            ],
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "list",
                "body": {"text": "Pick a slot"},
                "action": {
                    "button": "Slots",
                    "sections": [
                        {
                            "title": "Tomorrow",
                            "rows": [{"id": "s1", "title": "09:00", "description": "Dr. Silva"}],
                        }
                    ],
                },
            },
        },
    ),
]


def test_the_tier_belongs_to_the_portfolio_and_is_shared_by_its_numbers(system: SenderSystem):
    _, key = system.tenant("portfolio")
    client = system.client(key)

    def channel(name: str, **extra) -> dict:
        response = client.post("/v1/channels", json={"name": name, "provider": "sandbox", **extra})
        assert response.status_code == 201, response.text
        return response.json()

    def tiers() -> dict[str, int | None]:
        return {c["name"]: c["tier"] for c in client.get("/v1/channels").json()["items"]}

    channel("shop-1", portfolio="shop", tier=2000)
    channel("shop-2", portfolio="shop")  # joins the portfolio: takes its tier
    channel("other", tier=250)  # a portfolio of its own
    assert tiers() == {"shop-1": 2000, "shop-2": 2000, "other": 250}

    channel("shop-3", portfolio="shop", tier=10000)  # WhatsApp raised the portfolio's tier
    assert tiers() == {"shop-1": 10000, "shop-2": 10000, "shop-3": 10000, "other": 250}

    other = next(c for c in client.get("/v1/channels").json()["items"] if c["name"] == "other")
    moved = client.patch(f"/v1/channels/{other['id']}", json={"portfolio": "shop"})
    assert moved.status_code == 200 and moved.json()["tier"] == 10000
    unlimited = client.patch(f"/v1/channels/{other['id']}", json={"tier": None})
    assert unlimited.status_code == 200
    assert set(tiers().values()) == {None}
    alone = client.patch(f"/v1/channels/{other['id']}", json={"portfolio": None, "tier": 250})
    assert alone.json()["portfolio"] == other["id"]
    assert tiers() == {"shop-1": None, "shop-2": None, "shop-3": None, "other": 250}


def test_every_message_kind_reaches_the_cloud_api_in_its_shape(system: SenderSystem):
    tenant_id, key = system.tenant("kinds")
    client = system.client(key)
    channel = system.meta_channel(client)
    system.publish(
        "inbound.received.v1",
        tenant_id,
        {
            "provider": "meta",
            "provider_message_id": "wamid.in1",
            "from_phone": phone(1),
            "kind": "text",
            "text": "hi",
            "received_at": datetime.now(UTC).isoformat(),
        },
    )
    time.sleep(0.5)
    ids = []
    for content, _ in KINDS:
        r = client.post(
            "/v1/messages", json={"to": phone(1), "content": content, "channel_id": channel["id"]}
        )
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    sent = [wait_status(client, i, "sent") for i in ids]
    received = {r["id"]: r["body"] for r in system.meta.received_for(channel["settings"]["phone_number_id"])}
    for message, (_, expected) in zip(sent, KINDS, strict=True):
        assert message["provider"] == "meta" and message["provider_message_id"].startswith("wamid.")
        body = received[message["provider_message_id"]]
        assert body == {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "5511900000001",
            **expected,
        }

    bad = client.post(
        "/v1/messages", json={"to": phone(1), "content": {"kind": "buttons", "body": "x", "buttons": []}}
    )
    assert bad.status_code == 422 and "buttons" in bad.json()["message"]


def test_provider_errors_fail_retry_dead_letter_and_replay(system: SenderSystem):
    _, key = system.tenant("errors")
    client = system.client(key)
    channel = system.meta_channel(client, tier=None)
    pnid = channel["settings"]["phone_number_id"]

    def send(to: str, **extra: object) -> str:
        r = client.post(
            "/v1/messages",
            json={
                "to": to,
                "content": {"kind": "template", "name": "order_update", "language": "en_US"},
                "channel_id": channel["id"],
                **extra,
            },
        )
        assert r.status_code == 202, r.text
        return r.json()["id"]

    # permanent: fails at once with Meta's code and a readable reason, one call only
    system.meta.fail_next(131026, to=phone(10).lstrip("+"))
    failed = wait_status(client, send(phone(10)), "failed")
    assert failed["error_code"] == "131026" and "undeliverable" in failed["status_reason"]
    assert failed["attempts"] == 1 and failed["dead_letter"] is True

    # transient twice, then accepted: retried with backoff, one message at Meta
    system.meta.fail_next(130429, count=2, to=phone(11).lstrip("+"))
    retried = wait_status(client, send(phone(11)), "sent")
    assert [h["status"] for h in retried["history"]] == [
        "queued",
        "sending",
        "queued",
        "sending",
        "queued",
        "sending",
        "sent",
    ]
    assert "130429" in retried["history"][2]["reason"] and "retry in" in retried["history"][2]["reason"]
    assert retried["error_code"] is None, "a sent message keeps the error of a failed attempt"
    assert len([r for r in system.meta.received_for(pnid) if r["body"]["to"] == phone(11).lstrip("+")]) == 1

    # transient every time: a dead letter after max attempts (5 here), then replayed and sent
    system.meta.fail_next(131000, count=5, to=phone(12).lstrip("+"))
    dead_id = send(phone(12))
    dead = wait_status(client, dead_id, "failed")
    assert (
        dead["attempts"] == 5 and dead["dead_letter"] and "gave up after 5 attempts" in dead["status_reason"]
    )
    assert not [h["reason"] for h in dead["history"] if "will retry" in (h["reason"] or "")], dead["history"]
    letters = client.get("/v1/dead-letters").json()["items"]
    assert {m["id"] for m in letters} == {failed["id"], dead_id}
    assert client.post(f"/v1/dead-letters/{dead_id}/replay").json() == {"replayed": [dead_id]}
    replayed = wait_status(client, dead_id, "sent")
    assert replayed["dead_letter"] is False and "replayed" in replayed["history"][-3]["reason"]
    assert client.post(f"/v1/dead-letters/{dead_id}/replay").status_code == 404

    # replay by filter (error code)
    by_filter = client.post("/v1/dead-letters/replay", json={"error_code": "131026"}).json()
    assert by_filter == {"replayed": [failed["id"]]}
    wait_status(client, failed["id"], "sent")
    assert client.get("/v1/dead-letters").json()["items"] == []

    # 131050: the recipient opted out of marketing → failed and on the opt-out list
    system.meta.fail_next(131050, to=phone(13).lstrip("+"))
    opted = wait_status(client, send(phone(13)), "failed")
    assert opted["error_code"] == "131050" and opted["dead_letter"] is False
    assert phone(13) in [o["phone"] for o in client.get("/v1/opt-outs").json()["items"]]


def test_an_expired_token_pauses_the_channel_until_an_operator_resumes_it(system: SenderSystem):
    _, key = system.tenant("token")
    client = system.client(key)
    channel = system.meta_channel(client, credentials={"access_token": "expired"})
    first = client.post(
        "/v1/messages",
        json={
            "to": phone(20),
            "text": "a",
            "channel_id": channel["id"],
            "fallback_template": {"name": "hello", "language": "en"},
        },
    ).json()["id"]
    failed = wait_status(client, first, "failed")
    assert failed["error_code"] == "190" and "access token" in failed["status_reason"]
    view = client.get(f"/v1/channels/{channel['id']}").json()
    assert view["breaker"] == "paused" and "190" in view["pause_reason"]

    waiting = client.post(
        "/v1/messages",
        json={
            "to": phone(21),
            "content": {"kind": "template", "name": "hello", "language": "en"},
            "channel_id": channel["id"],
        },
    ).json()["id"]
    time.sleep(1.0)
    assert client.get(f"/v1/messages/{waiting}").json()["status"] == "queued"
    resumed = client.patch(
        f"/v1/channels/{channel['id']}", json={"paused": False, "credentials": {"access_token": TOKEN}}
    )
    assert resumed.json()["breaker"] == "closed"
    wait_status(client, waiting, "sent")


def test_window_closed_free_form_fails_or_falls_back_and_inbound_opens_it(system: SenderSystem):
    tenant_id, key = system.tenant("window")
    client = system.client(key)
    channel = system.meta_channel(client)
    pnid = channel["settings"]["phone_number_id"]
    closed = client.post(
        "/v1/messages", json={"to": "+5511987654321", "text": "hello", "channel_id": channel["id"]}
    ).json()["id"]
    failed = wait_status(client, closed, "failed")
    assert failed["error_code"] == "window_closed" and "24-hour" in failed["status_reason"]
    assert failed["attempts"] == 0 and system.meta.received_for(pnid) == []

    fallback = client.post(
        "/v1/messages",
        json={
            "to": "+5511987654321",
            "text": "hello",
            "channel_id": channel["id"],
            "fallback_template": {"name": "reopen", "language": "en_US"},
        },
    ).json()["id"]
    sent = wait_status(client, fallback, "sent")
    assert "fallback template" in sent["status_reason"]
    assert [r["body"]["type"] for r in system.meta.received_for(pnid)] == ["template"]

    system.publish(
        "inbound.received.v1",
        tenant_id,
        {
            "provider": "meta",
            "provider_message_id": "wamid.x",
            "from_phone": "+5511987654321",
            "kind": "text",
            "text": "oi",
            "received_at": datetime.now(UTC).isoformat(),
        },
    )

    # Brazilian number written without the ninth digit: the same recipient
    def opened() -> bool:
        r = client.post(
            "/v1/messages", json={"to": "+551187654321", "text": "inside", "channel_id": channel["id"]}
        ).json()["id"]
        for _ in range(50):
            m = client.get(f"/v1/messages/{r}").json()
            if m["status"] in ("sent", "failed"):
                return m["status"] == "sent"
            time.sleep(0.1)
        return False

    wait_for(opened, 10, "the inbound message to open the window")
    assert system.meta.received_for(pnid)[-1]["body"]["text"]["body"] == "inside"


def test_opt_outs_from_the_api_and_events_stop_messages_before_the_provider(system: SenderSystem):
    tenant_id, key = system.tenant("optout")
    client = system.client(key)
    channel = system.meta_channel(client)
    pnid = channel["settings"]["phone_number_id"]
    template = {"kind": "template", "name": "promo", "language": "en_US"}
    assert (
        client.post("/v1/opt-outs", json={"phone": phone(40), "reason": "asked by phone"}).status_code == 201
    )
    first = client.post(
        "/v1/messages", json={"to": phone(40), "content": template, "channel_id": channel["id"]}
    ).json()["id"]
    failed = wait_status(client, first, "failed")
    assert failed["error_code"] == "opted_out" and system.meta.received_for(pnid) == []
    assert client.delete(f"/v1/opt-outs/{phone(40)}").status_code == 204
    assert client.delete(f"/v1/opt-outs/{phone(40)}").status_code == 404
    again = client.post(
        "/v1/messages", json={"to": phone(40), "content": template, "channel_id": channel["id"]}
    ).json()["id"]
    wait_status(client, again, "sent")

    system.publish(
        "contact.opted_out.v1",
        tenant_id,
        {"phone": phone(41), "reason": "STOP", "at": datetime.now(UTC).isoformat()},
    )
    wait_for(
        lambda: phone(41) in [o["phone"] for o in client.get("/v1/opt-outs").json()["items"]],
        10,
        "the opt-out event",
    )
    blocked = client.post(
        "/v1/messages", json={"to": phone(41), "content": template, "channel_id": channel["id"]}
    ).json()["id"]
    assert wait_status(client, blocked, "failed")["error_code"] == "opted_out"
    system.publish(
        "contact.opted_in.v1", tenant_id, {"phone": phone(41), "at": datetime.now(UTC).isoformat()}
    )
    wait_for(
        lambda: phone(41) not in [o["phone"] for o in client.get("/v1/opt-outs").json()["items"]],
        10,
        "the opt-in event",
    )


def test_delivery_statuses_move_forward_only_with_history_and_filters(system: SenderSystem):
    tenant_id, key = system.tenant("status")
    client = system.client(key)
    channel = system.meta_channel(client)
    other = system.meta_channel(client)
    template = {"kind": "template", "name": "receipt", "language": "en_US"}
    message_id = client.post(
        "/v1/messages", json={"to": phone(50), "content": template, "channel_id": channel["id"]}
    ).json()["id"]
    wamid = wait_status(client, message_id, "sent")["provider_message_id"]
    now = datetime.now(UTC)
    for status, at in [
        ("delivered", now),
        ("read", now + timedelta(seconds=1)),
        ("delivered", now + timedelta(seconds=2)),
        ("failed", now + timedelta(seconds=3)),
    ]:
        system.publish(
            "delivery.status.v1",
            tenant_id,
            {"provider": "meta", "provider_message_id": wamid, "status": status, "at": at.isoformat()},
        )
    message = wait_status(client, message_id, "read")
    time.sleep(1.0)
    message = client.get(f"/v1/messages/{message_id}").json()
    assert message["status"] == "read"
    assert [h["status"] for h in message["history"]] == ["queued", "sending", "sent", "delivered", "read"]

    other_id = client.post(
        "/v1/messages", json={"to": phone(51), "content": template, "channel_id": other["id"]}
    ).json()["id"]
    wait_status(client, other_id, "sent")
    listed = lambda **p: [m["id"] for m in client.get("/v1/messages", params=p).json()["items"]]  # noqa: E731
    assert listed(status="read") == [message_id]
    assert listed(channel_id=other["id"]) == [other_id]
    assert listed(to=phone(51)) == [other_id]
    assert listed(created_after=(now + timedelta(minutes=1)).isoformat()) == []
    assert set(listed(created_after=(now - timedelta(minutes=1)).isoformat())) == {message_id, other_id}


def test_a_status_that_overtakes_the_send_answer_is_applied_once_the_send_is_recorded(
    system: SenderSystem,
):
    """Meta can deliver the ``delivered`` webhook before the sender has recorded the answer to its
    send (the status carries a wamid no message has yet): it is kept and applied, not lost."""
    tenant_id, key = system.tenant("early")
    client = system.client(key)
    channel = system.meta_channel(client)
    pnid = channel["settings"]["phone_number_id"]
    template = {"kind": "template", "name": "receipt", "language": "en_US"}
    # longer than the sending lease (3 s here): the live process renews it, so the slow send is
    # not taken for a crash and sent again (which would also orphan the early status)
    system.meta.fake.state.answer_delay = 4.0
    try:
        message_id = client.post(
            "/v1/messages", json={"to": phone(55), "content": template, "channel_id": channel["id"]}
        ).json()["id"]
        wait_for(lambda: system.meta.received_for(pnid), 10, "the fake Cloud API to get the send")
        wamid = system.meta.received_for(pnid)[0]["id"]
        system.publish(
            "delivery.status.v1",
            tenant_id,
            {
                "provider": "meta",
                "provider_message_id": wamid,
                "status": "delivered",
                "at": datetime.now(UTC).isoformat(),
            },
        )

        async def kept() -> int:
            conn = await asyncpg.connect(asyncpg_dsn(system.infra.database_url))
            try:
                return await conn.fetchval(
                    "SELECT count(*) FROM sender.pending_statuses WHERE provider_message_id = $1", wamid
                )
            finally:
                await conn.close()

        wait_for(lambda: asyncio.run(kept()) == 1, 10, "the early status to be kept")
        assert client.get(f"/v1/messages/{message_id}").json()["status"] == "sending"
    finally:
        system.meta.fake.state.answer_delay = 0.0
    message = wait_status(client, message_id, "delivered")
    assert [h["status"] for h in message["history"]] == ["queued", "sending", "sent", "delivered"]
    assert asyncio.run(kept()) == 0
    assert len(system.meta.received_for(pnid)) == 1, "sent twice: the live send's lease expired"


def test_a_meta_message_left_sending_by_a_crash_is_sent_again_and_counted(system: SenderSystem):
    """The crash rule for a provider that cannot be asked: Meta keeps no client reference, so a
    message found in 'sending' after its sender died is sent again (a possible duplicate rather
    than a silent loss), says so in its history, and is counted in the metric."""
    _, key = system.tenant("crash")
    client = system.client(key)
    channel = system.meta_channel(client)
    pnid = channel["settings"]["phone_number_id"]
    template = {"kind": "template", "name": "receipt", "language": "en_US"}
    system.meta.fake.state.answer_delay = 5.0
    try:
        message_id = client.post(
            "/v1/messages", json={"to": phone(56), "content": template, "channel_id": channel["id"]}
        ).json()["id"]
        wait_for(lambda: system.meta.received_for(pnid), 10, "the fake Cloud API to get the send")
        system.sender.kill()  # Meta has the message; its answer never reaches the sender
    finally:
        system.meta.fake.state.answer_delay = 0.0
        system.sender.start()
        system.sender.wait_ready()
    message = wait_status(client, message_id, "sent", timeout=30)
    reasons = [(h["status"], h["reason"]) for h in message["history"]]
    assert ("queued", "reconciled after a crash: sending again (resent_unverifiable)") in reasons, reasons
    assert len(system.meta.received_for(pnid)) == 2  # the documented possible duplicate
    counted = [
        float(line.split()[-1])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith('herald_sender_reconciled_total{outcome="resent_unverifiable"}')
    ]
    assert counted and counted[0] >= 1, counted  # (other orphans in the shared database may add)


def test_a_template_meta_paused_is_not_sent_and_is_replayed_once_reinstated(system: SenderSystem):
    """Meta's template.status_changed (published by ingest) feeds the sender's template catalogue:
    a paused template fails at once as a dead letter, without a call Meta would refuse (132015);
    once Meta reinstates it the dead letter is replayed and sent. An older update arriving late
    changes nothing."""
    tenant_id, key = system.tenant("templates")
    client = system.client(key)
    channel = system.meta_channel(client)
    pnid = channel["settings"]["phone_number_id"]
    now = datetime.now(UTC)

    def status(value: str, at: datetime, reason: str | None = None) -> None:
        data = {"template_name": "order_ready", "language": "pt_BR", "status": value, "at": at.isoformat()}
        system.publish("template.status_changed.v1", tenant_id, {**data, "reason": reason})

    def catalogue() -> list[dict]:
        return client.get("/v1/templates", params={"name": "order_ready"}).json()["items"]

    status("PAUSED", now, "Low quality: paused for 3 hours")
    wait_for(lambda: [t["status"] for t in catalogue()] == ["PAUSED"], 10, "the pause to be recorded")
    assert catalogue()[0]["sendable"] is False
    template = {"kind": "template", "name": "order_ready", "language": "pt_BR", "body_params": ["A17"]}
    other = {"kind": "template", "name": "order_ready", "language": "en_US", "body_params": ["A18"]}
    paused_id = client.post(
        "/v1/messages", json={"to": phone(57), "content": template, "channel_id": channel["id"]}
    ).json()["id"]
    other_id = client.post(
        "/v1/messages", json={"to": phone(58), "content": other, "channel_id": channel["id"]}
    ).json()["id"]
    failed = wait_status(client, paused_id, "failed")
    assert failed["error_code"] == "template_paused"
    assert "PAUSED at Meta" in failed["status_reason"] and "Low quality" in failed["status_reason"]
    wait_status(client, other_id, "sent")  # another language of the same name is another template
    sent_bodies = [r["body"] for r in system.meta.received_for(pnid)]
    assert [b["template"]["language"]["code"] for b in sent_bodies] == ["en_US"]
    assert paused_id in [d["id"] for d in client.get("/v1/dead-letters").json()["items"]]

    status("REINSTATED", now + timedelta(hours=3))
    status("PAUSED", now + timedelta(minutes=1), "a late copy of an older update")
    wait_for(lambda: [t["status"] for t in catalogue()] == ["REINSTATED"], 10, "the reinstatement")
    time.sleep(0.5)  # the late, older PAUSED has been consumed by now: it must not win
    assert [t["status"] for t in catalogue()] == ["REINSTATED"] and catalogue()[0]["sendable"] is True
    assert client.post(f"/v1/dead-letters/{paused_id}/replay").json() == {"replayed": [paused_id]}
    wait_status(client, paused_id, "sent")
    assert len(system.meta.received_for(pnid)) == 2


def test_metas_template_paused_error_updates_the_catalogue(system: SenderSystem):
    """Meta refuses a send with 132015 before its webhook told Herald: the catalogue learns it from
    the error, and the next message with that template fails without a call."""
    _, key = system.tenant("paused-error")
    client = system.client(key)
    channel = system.meta_channel(client)
    pnid = channel["settings"]["phone_number_id"]
    template = {"kind": "template", "name": "weekly_offer", "language": "es"}
    system.meta.fail_next(132015, to=phone(59).lstrip("+"))
    first = client.post(
        "/v1/messages", json={"to": phone(59), "content": template, "channel_id": channel["id"]}
    ).json()["id"]
    refused = wait_status(client, first, "failed")
    assert refused["error_code"] == "132015" and refused["dead_letter"] is True
    catalogue = client.get("/v1/templates", params={"name": "weekly_offer"}).json()["items"]
    assert [(t["language"], t["status"], t["sendable"]) for t in catalogue] == [("es", "PAUSED", False)]
    calls = len(system.meta.received_for(pnid))
    second = client.post(
        "/v1/messages", json={"to": phone(60), "content": template, "channel_id": channel["id"]}
    ).json()["id"]
    assert wait_status(client, second, "failed")["error_code"] == "template_paused"
    time.sleep(0.3)
    assert len(system.meta.received_for(pnid)) == calls  # no second call Meta would refuse


def test_the_same_request_event_twice_is_sent_once(system: SenderSystem):
    tenant_id, key = system.tenant("idem")
    client = system.client(key)
    channel = system.meta_channel(client)
    message_id = str(uuid.uuid4())
    data = {
        "message_id": message_id,
        "to": phone(60),
        "content": {"kind": "template", "name": "otp", "language": "en"},
        "channel_id": channel["id"],
        "origin": "test",
    }
    system.publish("message.requested.v1", tenant_id, data)
    system.publish("message.requested.v1", tenant_id, data)
    wait_status(client, message_id, "sent")
    time.sleep(0.5)
    assert len(system.meta.received_for(channel["settings"]["phone_number_id"])) == 1


def test_repeated_transient_failures_open_the_breaker_and_a_probe_closes_it(system: SenderSystem):
    _, key = system.tenant("breaker")
    client = system.client(key)
    channel = system.meta_channel(client)
    # 4 consecutive failures open it (threshold 4 here); the first two probes fail too
    system.meta.fail_next(131000, count=6, to=phone(70).lstrip("+"))
    template = {"kind": "template", "name": "b", "language": "en"}
    ids = [
        client.post(
            "/v1/messages", json={"to": phone(70), "content": template, "channel_id": channel["id"]}
        ).json()["id"]
        for i in range(4)
    ]
    # open (cooling down) or, once the short test cool-down is over, half-open (probing): both
    # mean the failures tripped it; a poll on a busy machine may miss the first
    wait_for(
        lambda: client.get(f"/v1/channels/{channel['id']}").json()["breaker"] in ("open", "half_open"),
        30,
        "the breaker to open",
    )
    metrics = system.client(key).get("/metrics").text
    state_line = f'herald_sender_channel_breaker_state{{channel="{channel["id"]}"}}'
    assert f"{state_line} 1.0" in metrics or f"{state_line} 2.0" in metrics, "open or probing"
    for i in ids:
        wait_status(client, i, "sent", timeout=60)
    assert client.get(f"/v1/channels/{channel['id']}").json()["breaker"] == "closed"
    metrics = system.client(key).get("/metrics").text
    assert f"{state_line} 0.0" in metrics
    assert (
        f'herald_sender_messages_total{{channel="{channel["id"]}",code="131000",outcome="retry",provider="meta"}} 6.0'
        in metrics
    )
