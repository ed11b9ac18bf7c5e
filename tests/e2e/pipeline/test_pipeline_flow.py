"""The pipeline with the four services as processes (``herald run``) on real RabbitMQ/PostgreSQL:
signed Meta webhooks through ingest, a pacing slot from the scheduler, drafts in the pipeline, and
what a user would see at the sender's sandbox provider."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Herald, wait_for

pytestmark = pytest.mark.e2e
SECRET = "pipeline-e2e-app-secret"
NOTES = [
    "Our new menu has a vegan feijoada that sold out on Friday",
    "Customers asked for the new menu in English too",
    "The chef tested twelve desserts for the new menu before choosing three",
]


class User:
    """A tenant with a Meta webhook source in ingest, and one user whose phone is mapped."""

    def __init__(self, herald: Herald, **profile: Any) -> None:
        key = herald.create_tenant(f"pipe-e2e-{uuid.uuid4().hex[:8]}")
        self.ingest = herald.client("ingest", key)
        self.pipeline = herald.client("pipeline", key)
        self.scheduler = herald.client("scheduler", key)
        self.sender = herald.client("sender", key)
        self.id = f"user-{uuid.uuid4().hex[:6]}"
        self.phone = f"+55119{random.randint(80_000_000, 99_999_999)}"
        source = self.ingest.post(
            "/v1/webhook-sources",
            json={"provider": "meta", "secrets": {"app_secret": SECRET, "verify_token": "v"}},
        )
        assert source.status_code == 201, source.text
        self.webhook_url = source.json()["url"]
        assert self.ingest.put(f"/v1/contacts/{self.phone}", json={"user_id": self.id}).status_code == 200
        body = {"phone": self.phone, "notify_on_ready": True, "topics": ["new menu"], **profile}
        r = self.pipeline.put(f"/v1/profiles/{self.id}", json=body)
        assert r.status_code == 200, r.text

    def send(self, message: dict[str, Any]) -> str:
        """One signed Meta webhook carrying ``message`` from the user's phone; returns its wamid."""
        wamid = f"wamid.{uuid.uuid4().hex}"
        message = {"from": self.phone.lstrip("+"), "id": wamid, "timestamp": str(int(time.time())), **message}
        value = {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Ana"}, "wa_id": self.phone.lstrip("+")}],
            "messages": [message],
        }
        body = json.dumps(
            {
                "object": "whatsapp_business_account",
                "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
            }
        ).encode()
        signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        r = httpx.post(
            f"{self.ingest.base_url}{self.webhook_url}"
            if self.webhook_url.startswith("/")
            else self.webhook_url,
            content=body,
            headers={"X-Hub-Signature-256": f"sha256={signature}", "Content-Type": "application/json"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        return wamid

    def text(self, body: str) -> str:
        return self.send({"type": "text", "text": {"body": body}})

    def list_reply(self, row_id: str, title: str) -> str:
        return self.send(
            {
                "type": "interactive",
                "interactive": {"type": "list_reply", "list_reply": {"id": row_id, "title": title}},
            }
        )

    def sandbox(self) -> list[dict[str, Any]]:
        """What the user received (the tenant has no other recipient), oldest first."""
        items = self.sender.get("/v1/sandbox/messages", params={"limit": 100}).json()["items"]
        return sorted(items, key=lambda m: m.get("received_at") or "")

    def notes(self) -> list[str]:
        return [n["body"] for n in self.pipeline.get(f"/v1/users/{self.id}/notes").json()]

    def drafts(self) -> list[dict[str, Any]]:
        return self.pipeline.get("/v1/drafts", params={"user_id": self.id}).json()

    def ready_draft(self) -> dict[str, Any] | None:
        drafts = self.drafts()
        return drafts[0] if drafts and drafts[0]["status"] == "ready" else None


def test_notes_through_ingest_a_pacing_slot_a_cited_draft_and_the_ready_notice(herald: Herald) -> None:
    user = User(herald, platforms=["linkedin"])
    for note in NOTES:
        user.text(note)
    wait_for(lambda: sorted(user.notes()) == sorted(NOTES), 60, "the three notes in the pipeline")
    assert user.sandbox() == [], "a note is stored silently"

    # a pacing slot at the next whole minute at least 15 s away
    slot = (datetime.now(UTC) + timedelta(seconds=75)).replace(second=0, microsecond=0)
    r = user.scheduler.post(
        "/v1/pacing-schedules",
        json={
            "user_id": user.id,
            "days": ["MO", "TU", "WE", "TH", "FR", "SA", "SU"],
            "times": [slot.strftime("%H:%M")],
            "timezone": "UTC",
        },
    )
    assert r.status_code == 201, r.text
    draft = wait_for(user.ready_draft, 150, "the draft of the pacing slot")
    assert "vegan feijoada" in draft["text"]
    assert {c["text"] for c in draft["citations"]} <= set(NOTES) and draft["citations"]

    def notice() -> list[dict[str, Any]]:
        return [m for m in user.sandbox() if draft["id"] in m["text"]]

    [received] = wait_for(notice, 60, "the ready notice at the sandbox")
    assert received["text"].startswith("Your LinkedIn draft")

    def delivery_shown() -> dict[str, Any] | None:
        d = user.pipeline.get(f"/v1/drafts/{draft['id']}").json()
        return d if d["notice_status"] in ("sent", "delivered", "read") else None

    wait_for(delivery_shown, 60, "the notice's delivery status on the draft")
    assert len(user.sandbox()) == 1, "one notice and nothing else"


def test_an_order_through_ingest_gets_one_question_and_the_answer_makes_the_draft(herald: Herald) -> None:
    user = User(herald, topics=[])
    for note in NOTES:
        user.text(note)
    wait_for(lambda: len(user.notes()) == 3, 60, "the notes in the pipeline")
    user.text("write me a post about our new menu")
    [question] = wait_for(user.sandbox, 60, "the clarification at the sandbox")
    assert question["text"] == "Which platform is this post for?"
    user.list_reply("platform:instagram", "Instagram")
    draft = wait_for(user.ready_draft, 60, "the draft of the order")
    assert draft["brief"]["platform"] == "instagram" and draft["brief"]["topic"] == "our new menu"

    # the sender paces a recipient to one message every few seconds: the notice follows
    def two() -> list[dict[str, Any]] | None:
        received = user.sandbox()
        return received if len(received) >= 2 else None

    messages = wait_for(two, 60, "the ready notice")
    assert messages[0]["text"] == "Which platform is this post for?"
    assert draft["id"] in messages[1]["text"] and len(messages) == 2
