"""A queued message says why it waits and until when (quiet hours, pair interval, throughput, a
paused channel) in GET /v1/messages/{id}, and a sent one says what actually went out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devtools.processes import wait_for
from tests.e2e.sender.conftest import SenderSystem, wait_status

pytestmark = pytest.mark.e2e

TEMPLATE = {"kind": "template", "name": "order_update", "language": "en_US"}


def phone(i: int) -> str:
    return f"+55319{i:08d}"


def waiting_for(client, message_id: str, reason: str, timeout: float = 30.0) -> dict:
    def check() -> dict | None:
        body = client.get(f"/v1/messages/{message_id}").json()
        return body if (body.get("waiting") or {}).get("reason") == reason else None

    try:
        return wait_for(check, timeout, f"message {message_id} to wait for {reason}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; it is: {client.get(f'/v1/messages/{message_id}').json()}") from None


def send(client, channel: dict, to: str, **extra) -> str:
    r = client.post(
        "/v1/messages", json={"to": to, "content": TEMPLATE, "channel_id": channel["id"], **extra}
    )
    assert r.status_code == 202, r.text
    return r.json()["id"]


def test_quiet_hours_say_until_when(system: SenderSystem):
    _, key = system.tenant("wait-quiet")
    client = system.client(key)
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(hours=2)
    channel = system.meta_channel(
        client,
        quiet_hours={"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M"), "timezone": "UTC"},
    )
    body = waiting_for(client, send(client, channel, phone(1)), "quiet_hours")
    assert body["status"] == "queued"
    until = datetime.fromisoformat(body["waiting"]["until"])
    assert until == end.replace(second=0, microsecond=0)
    assert body["sent_content"] is None
    listed = client.get("/v1/messages", params={"channel_id": channel["id"]}).json()["items"]
    assert listed[0]["waiting"]["reason"] == "quiet_hours"


def test_the_pair_interval_says_until_the_recipient_may_get_the_next(system: SenderSystem):
    _, key = system.tenant("wait-pair")
    client = system.client(key)
    channel = system.meta_channel(client, pair_interval_seconds=120)
    first = send(client, channel, phone(2))
    sent = wait_status(client, first, "sent", 30)
    assert sent["waiting"] is None
    second = send(client, channel, phone(2))
    body = waiting_for(client, second, "pair_interval")
    until = datetime.fromisoformat(body["waiting"]["until"])
    sent_at = datetime.fromisoformat(sent["updated_at"])
    assert sent_at + timedelta(seconds=100) < until < sent_at + timedelta(seconds=130)


def test_a_slow_channel_says_throughput_and_a_paused_one_says_paused(system: SenderSystem):
    _, key = system.tenant("wait-slow")
    client = system.client(key)
    channel = system.meta_channel(client, throughput_per_second=0.05)  # one slot every 20 s
    ids = [send(client, channel, phone(10 + i)) for i in range(3)]
    wait_status(client, ids[0], "sent", 30)
    body = waiting_for(client, ids[2], "throughput")
    assert datetime.fromisoformat(body["waiting"]["until"]) > datetime.now(UTC)

    paused = client.patch(f"/v1/channels/{channel['id']}", json={"paused": True})
    assert paused.status_code == 200, paused.text
    body = waiting_for(client, ids[2], "paused")
    assert body["waiting"]["until"] is None

    fast = client.patch(
        f"/v1/channels/{channel['id']}", json={"paused": False, "throughput_per_second": 1000}
    )
    assert fast.status_code == 200, fast.text
    done = wait_status(client, ids[2], "sent", 60)
    assert done["waiting"] is None


def test_a_fallback_template_is_what_the_message_says_went_out(system: SenderSystem):
    _, key = system.tenant("wait-fallback")
    client = system.client(key)
    channel = system.meta_channel(client)
    fallback = {"kind": "template", "name": "reopen", "language": "en_US"}
    r = client.post(
        "/v1/messages",
        json={
            "to": phone(20),
            "text": "hello there",
            "channel_id": channel["id"],
            "fallback_template": fallback,
        },
    )
    body = wait_status(client, r.json()["id"], "sent", 30)
    assert body["text"] == "hello there"
    assert body["sent_content"]["kind"] == "template" and body["sent_content"]["name"] == "reopen"

    plain = wait_status(client, send(client, channel, phone(21)), "sent", 30)
    assert plain["sent_content"]["name"] == "order_update"
