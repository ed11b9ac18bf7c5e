"""With the four services: a recurring template message is sent by the real sender (sandbox
provider), and its delivery status comes back into the schedule's history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.conftest import Herald, wait_for

pytestmark = pytest.mark.e2e


def test_recurring_message_is_sent_and_its_history_shows_the_delivery(herald: Herald):
    key = herald.create_tenant("scheduler-with-sender")
    scheduler = herald.client("scheduler", key)
    sender = herald.client("sender", key)
    start = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    created = scheduler.post(
        "/v1/scheduled-messages",
        json={
            "to": "+5511999997777",
            "text": "Your weekly summary",
            "recurrence": {
                "timezone": "UTC",
                "start": start.replace(tzinfo=None).isoformat(),
                "rrule": "FREQ=WEEKLY;COUNT=3",
            },
        },
    )
    assert created.status_code == 201, created.text
    schedule = created.json()
    first_message = schedule["message_id"]

    def history() -> list[dict] | None:
        items = scheduler.get(f"/v1/scheduled-messages/{schedule['id']}").json()["history"]
        return items if items and items[0]["delivery_status"] in ("sent", "delivered", "read") else None

    items = wait_for(
        history, 90, "the first occurrence's delivery status in the history", herald.services["scheduler"]
    )
    assert [(h["status"], h["message_id"]) for h in items] == [("published", first_message)]
    message = sender.get(f"/v1/messages/{first_message}").json()
    assert message["status"] in ("sent", "delivered", "read")
    detail = scheduler.get(f"/v1/scheduled-messages/{schedule['id']}").json()
    assert detail["status"] == "pending" and len(detail["next_occurrences"]) == 2
    assert datetime.fromisoformat(detail["send_at"]) == start + timedelta(days=7)
