"""Real scheduler processes: two side by side, a SIGKILL mid-batch, and the broker wiring
(event reminders in, message.status in, message.requested out)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from devtools.processes import herald_cli
from shared.events import utcnow
from tests.e2e.scheduler.conftest import SchedulerSystem, publish, record, soon

pytestmark = pytest.mark.e2e


def exactly_once(recorder, expected: set[uuid.UUID]) -> None:
    """Every expected occurrence arrived, nothing else did, and any redelivery is the SAME message
    (same message id and event id: the relay is at-least-once and the sender drops a repeat)."""
    ids = recorder.message_ids()
    assert set(ids) == {str(m) for m in expected}, f"missing {len({str(m) for m in expected} - set(ids))}"
    events_per_message: dict[str, set[str]] = {}
    for message_id, event_id in recorder.deliveries:
        events_per_message.setdefault(message_id, set()).add(event_id)
    assert all(len(e) == 1 for e in events_per_message.values()), "an occurrence was fired twice"


async def test_two_processes_publish_10000_due_occurrences_exactly_once(scheduler_system: SchedulerSystem):
    a = scheduler_system.start("two-a", SCHEDULER_CLAIM_BATCH_SIZE="500")
    b = scheduler_system.start("two-b", SCHEDULER_CLAIM_BATCH_SIZE="500")
    a.wait_ready()
    b.wait_ready()
    async with record(scheduler_system.amqp_url) as recorder:
        expected = await scheduler_system.insert_due(10_000, soon(3))
        await recorder.wait_for(len(expected), within=120)
        await asyncio.sleep(2)  # a late duplicate would arrive now
    exactly_once(recorder, expected)
    assert len(recorder.deliveries) == len(expected), "redeliveries without a crash"
    fired = [_fired(p.url) for p in (a, b)]
    print(f"occurrences fired by process a/b: {fired}")
    assert sum(fired) == 10_000
    a.terminate()
    b.terminate()


def _fired(url: str) -> int:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith('herald_scheduler_fired_total{kind="scheduled"}'):
            return int(float(line.split()[-1]))
    return 0


async def test_sigkill_mid_batch_then_restart_loses_nothing_and_fires_nothing_twice(
    scheduler_system: SchedulerSystem,
):
    first = scheduler_system.start("kill-1", SCHEDULER_CLAIM_BATCH_SIZE="200", HERALD_OUTBOX_BATCH_SIZE="100")
    first.wait_ready()
    async with record(scheduler_system.amqp_url) as recorder:
        expected = await scheduler_system.insert_due(6_000, soon(3))
        await recorder.wait_for(300, within=60)
        first.kill()  # SIGKILL while batches are being claimed and relayed
        at_kill = len(recorder.message_ids())
        assert 0 < at_kill < len(expected), f"the kill came too late to prove anything ({at_kill})"
        second = scheduler_system.start("kill-2", SCHEDULER_CLAIM_BATCH_SIZE="200")
        second.wait_ready()
        await recorder.wait_for(len(expected), within=120)
        await asyncio.sleep(2)
    exactly_once(recorder, expected)
    # a copy is only possible for rows the relay had published but not yet marked: one batch at most
    assert len(recorder.deliveries) - len(expected) <= 100
    print(f"killed after {at_kill} arrived; {len(recorder.deliveries) - len(expected)} relay redeliveries")
    second.terminate()


async def test_broker_wiring_reminders_statuses_and_on_time_firing(scheduler_system: SchedulerSystem):
    proc = scheduler_system.start("wiring")
    proc.wait_ready()
    key = json.loads(
        herald_cli(scheduler_system.env, "tenant", "create", f"s-{uuid.uuid4().hex[:6]}", "--json")
    )
    client = httpx.AsyncClient(
        base_url=proc.url, headers={"Authorization": f"Bearer {key['api_key']}"}, timeout=10
    )
    tenant_id = key["tenant_id"]
    async with record(scheduler_system.amqp_url) as recorder:
        # a one-off published at its time (within about a second), through the real loop and relay
        send_at = soon(3)
        created = await client.post(
            "/v1/scheduled-messages",
            json={"to": "+5511999990003", "text": "on time", "send_at": send_at.isoformat()},
        )
        created = created.json()
        await recorder.wait_for(1, within=15)
        assert recorder.message_ids() == {created["message_id"]: 1}
        lateness = recorder.bodies[0]["time"]
        print(f"one-off published at {lateness} for {send_at.isoformat()}")

        # message.status from the sender lands in the history
        await publish(
            scheduler_system.amqp_url,
            "message.status.v1",
            {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "source": "/herald/sender",
                "type": "message.status.v1",
                "time": utcnow().isoformat(),
                "tenantid": tenant_id,
                "data": {
                    "message_id": created["message_id"],
                    "status": "delivered",
                    "at": utcnow().isoformat(),
                },
            },
        )

        async def delivered() -> bool:
            history = (await client.get(f"/v1/scheduled-messages/{created['id']}")).json()["history"]
            return [h["delivery_status"] for h in history] == ["delivered"]

        await _eventually(delivered, 10)

        # an event published on the broker gets its reminders planned; cancelled, they are gone
        lisbon = ZoneInfo("Europe/Lisbon")
        starts = (
            (utcnow() + timedelta(days=9))
            .astimezone(lisbon)
            .replace(hour=21, minute=0, second=0, microsecond=0)
        )
        event_id = f"ev-{uuid.uuid4().hex[:6]}"
        envelope = {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/ticketing",
            "type": "event.published",
            "time": utcnow().isoformat(),
            "tenantid": tenant_id,
            "data": {
                "event_id": event_id,
                "name": "Fado",
                "starts_at": starts.isoformat(),
                "timezone": "Europe/Lisbon",
                "attendees": [{"phone": "+351912345009", "name": "Inês"}],
            },
        }
        await publish(scheduler_system.amqp_url, "event.published.v1", envelope)

        async def planned() -> list:
            answer = await client.get("/v1/reminders", params={"event_id": event_id, "status": "pending"})
            return answer.json()["items"]

        items = await _eventually(planned, 10)
        assert sorted(i["reminder"] for i in items) == ["1d", "7d", "day_of"]
        await publish(
            scheduler_system.amqp_url,
            "event.cancelled.v1",
            {**envelope, "id": str(uuid.uuid4()), "type": "event.cancelled", "data": {"event_id": event_id}},
        )

        async def none_planned() -> bool:
            return not await planned()

        await _eventually(none_planned, 10)
    await client.aclose()
    proc.terminate()


async def _eventually(predicate, within: float):
    """The first truthy answer of ``predicate`` (polled: it asks the HTTP API)."""
    result = None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            for _ in iter(int, 1):
                result = await predicate()
                if result:
                    break
                await asyncio.sleep(0.2)
    assert result, "condition not met in time"
    return result
