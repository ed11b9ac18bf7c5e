"""Accepting one message in one statement writes exactly what the general path writes: the row,
one ``queued`` history line and one ``message.status`` event in the outbox, or nothing at all
(a repeated idempotency key)."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest

from devtools.database import asyncpg_dsn
from tests.e2e.sender.conftest import SenderSystem, wait_status

pytestmark = pytest.mark.e2e

TEMPLATE = {"kind": "template", "name": "otp", "language": "en"}


async def written(database_url: str, message_id: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(history statuses, (status, routing key) of its outbox events), oldest first."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        history = await conn.fetch(
            "SELECT status FROM sender.message_history WHERE message_id = $1 ORDER BY id",
            uuid.UUID(message_id),
        )
        events = await conn.fetch(
            """SELECT routing_key, convert_from(body, 'UTF8') AS body FROM sender.outbox
               WHERE convert_from(body, 'UTF8')::jsonb ->> 'subject' = $1 ORDER BY id""",
            message_id,
        )
    finally:
        await conn.close()
    return [h["status"] for h in history], [
        (json.loads(e["body"])["data"]["status"], e["routing_key"]) for e in events
    ]


def test_one_message_is_stored_with_its_history_and_event_once(system: SenderSystem):
    _, key = system.tenant("at-once")
    client = system.client(key)
    channel = system.meta_channel(client)
    body = {"to": "+5511977770001", "content": TEMPLATE, "channel_id": channel["id"], "idempotency_key": "k1"}

    first = client.post("/v1/messages", json=body)
    assert first.status_code == 202, first.text
    message_id = first.json()["id"]
    wait_status(client, message_id, "sent", timeout=30)
    again = client.post("/v1/messages", json=body)
    assert again.status_code == 202 and again.json()["id"] == message_id

    history, events = asyncio.run(written(system.infra.database_url, message_id))
    assert history == ["queued", "sending", "sent"]
    assert events == [
        ("queued", "message.status.v1.api"),
        ("sending", "message.status.v1.api"),
        ("sent", "message.status.v1.api"),
    ]
    changed = client.post("/v1/messages", json={**body, "to": "+5511977770002"})
    assert changed.status_code == 409, changed.text
