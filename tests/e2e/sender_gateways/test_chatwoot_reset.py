"""A message never reaches the wrong person: the sender process against a local Chatwoot that is
reset between two messages to the same recipient, so the conversation id the sender cached for
them now belongs to a stranger (a Chatwoot reinstalled on a fresh database numbers from 1 again).

The second message must land in the recipient's own (new) conversation, the stranger's
conversation must receive nothing, and the message's history (``GET /v1/messages/{id}``) must
say the cached conversation was re-resolved.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from devtools.fake_providers.chatwoot import FakeChatwoot
from tests.e2e.conftest import Herald, herald_cli, wait_for

pytestmark = pytest.mark.e2e

PHONE = "+5511999990011"
STRANGER = "+5511977770022"
TOKEN = "cw-reset-token"
T = TypeVar("T")


class LocalChatwoot:
    """The local Chatwoot served from its own thread and event loop, so the test's sync HTTP calls
    never block it; ``call`` runs a change to its state on that loop, between two requests."""

    def __init__(self) -> None:
        self.fake = FakeChatwoot(api_access_token=TOKEN, account_id=1, inbox_ids=(7,))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chatwoot-reset", daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def call(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)


@pytest.fixture(scope="module")
def chatwoot() -> Iterator[LocalChatwoot]:
    local = LocalChatwoot()
    local.start()
    try:
        yield local
    finally:
        local.stop()


def _final(client: httpx.Client, message_id: str) -> dict[str, Any]:
    def check() -> dict | None:
        body = client.get(f"/v1/messages/{message_id}").json()
        return body if body.get("status") in ("sent", "delivered", "read", "failed") else None

    return wait_for(check, 30, f"message {message_id} to be sent or failed")


def _send(client: httpx.Client, channel_id: str, text: str) -> dict[str, Any]:
    accepted = client.post("/v1/messages", json={"to": PHONE, "text": text, "channel_id": channel_id})
    assert accepted.status_code == 202, accepted.text
    return _final(client, accepted.json()["id"])


def _sent_reason(message: dict[str, Any]) -> str | None:
    return next(h["reason"] for h in message["history"] if h["status"] == "sent")


def test_after_a_chatwoot_reset_the_message_reaches_the_recipient_not_the_stranger(
    herald: Herald, chatwoot: LocalChatwoot
) -> None:
    tenant = json.loads(
        herald_cli(herald.env, "tenant", "create", f"cw-reset-{uuid.uuid4().hex[:6]}", "--json")
    )
    sender = herald.client("sender", tenant["api_key"])
    created = sender.post(
        "/v1/channels",
        json={
            "name": "support inbox",
            "provider": "chatwoot",
            "is_default": False,
            "base_url": chatwoot.fake.base_url,
            "settings": {"account_id": "1", "inbox_id": "7"},
            "credentials": {"api_access_token": TOKEN},
        },
    )
    assert created.status_code == 201, created.text
    channel_id = created.json()["id"]

    # Chatwoot is not bound by the 24-hour window: no inbound message is needed first
    first = _send(sender, channel_id, "Your order has shipped")
    assert first["status"] == "sent", first
    assert _sent_reason(first) is None, first["history"]
    before = chatwoot.call(lambda: {c["id"]: c["contact_id"] for c in chatwoot.fake.conversations.values()})
    assert before == {1: 1}  # the sender now caches PHONE → contact 1, conversation 1

    def reset_and_give_the_ids_to_a_stranger() -> tuple[int, int]:
        chatwoot.fake.reset()
        stranger = chatwoot.fake.add_contact(STRANGER, name="Someone else")
        return stranger["id"], chatwoot.fake.add_conversation(stranger["id"], 7)["id"]

    assert chatwoot.call(reset_and_give_the_ids_to_a_stranger) == (1, 1)

    second = _send(sender, channel_id, "Your order was delivered")

    assert second["status"] == "sent", second
    assert _sent_reason(second) == (
        "cached Chatwoot conversation 1 belongs to another contact now: re-resolved to conversation 2"
    ), second["history"]

    def where_messages_went() -> dict[str, list[str]]:
        fake = chatwoot.fake
        owner = {cid: fake.contacts[c["contact_id"]]["phone_number"] for cid, c in fake.conversations.items()}
        landed: dict[str, list[str]] = {}
        for m in fake.messages:
            landed.setdefault(owner[m["conversation_id"]], []).append(m["content"])
        return landed

    assert chatwoot.call(where_messages_went) == {PHONE: ["Your order was delivered"]}
    assert second["provider_message_id"] == str(chatwoot.call(lambda: chatwoot.fake.messages[-1]["id"]))
