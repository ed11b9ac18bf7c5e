"""The scheduler's API and claim on a real PostgreSQL, with a controllable clock.

The app runs in-process (httpx ASGI transport) on its own throw-away database, so the claim
(``fire_due(now=…)``) sees only this module's rows. What is published is read from the outbox:
the row the relay hands to RabbitMQ.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from devtools.database import create_migrated_database, drop_database
from services.scheduler import delivery, firing
from services.scheduler.app import build
from services.scheduler.context import Scheduler
from services.scheduler.domain import occurrence_message_id
from services.scheduler.models import outbox
from services.scheduler.reminders import cancel_event_reminders, plan_event_reminders
from services.scheduler.settings import SchedulerSettings
from shared import tracing
from shared.crypto import SecretBox
from shared.events import (
    Attendee,
    EventCancelled,
    EventChanged,
    EventPublished,
    MessageStatusChanged,
    new_event,
    utcnow,
)
from shared.tenancy import create_tenant
from tests.conftest import Infra

pytestmark = pytest.mark.integration

SP = ZoneInfo("America/Sao_Paulo")
PHONE = "+5511999990001"


@pytest.fixture(scope="module")
def database_url(infra: Infra) -> Iterator[str]:
    name, url = create_migrated_database(infra.database_url, "herald_sched")
    try:
        yield url
    finally:
        drop_database(infra.database_url, name)


@pytest.fixture
async def system(database_url: str, infra: Infra) -> AsyncIterator[tuple[Any, Scheduler, httpx.AsyncClient]]:
    settings = SchedulerSettings(
        database_url=database_url,
        amqp_url=infra.amqp_url,
        encryption_keys=SecretBox.generate_key(),
        secret_key=uuid.uuid4().hex,
        environment="test",
    )
    runtime, app = build(settings)
    sched = Scheduler(runtime=runtime, batch_size=100, max_sleep=1.0)
    _, key = await create_tenant(runtime.engine, f"sched-{uuid.uuid4().hex[:8]}")
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://scheduler",
        headers={"Authorization": f"Bearer {key}"},
    )
    try:
        yield runtime, sched, client
    finally:
        await client.aclose()
        await runtime.engine.dispose()


async def published(runtime: Any, routing_key: str = "message.requested.v1") -> list[dict[str, Any]]:
    async with runtime.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(outbox.c.body).where(outbox.c.routing_key == routing_key).order_by(outbox.c.id)
            )
        ).all()
    return [json.loads(r.body)["data"] for r in rows]


def sp_tomorrow_at(hour: int) -> datetime:
    """Tomorrow at ``hour`` local São Paulo time, naive (as the API's recurrence.start)."""
    day = (utcnow().astimezone(SP) + timedelta(days=1)).date()
    return datetime(day.year, day.month, day.day, hour, 0)


async def test_recurring_schedule_fires_each_occurrence_once_at_9_local(system):
    runtime, sched, client = system
    start = sp_tomorrow_at(9)
    r = await client.post(
        "/v1/scheduled-messages",
        json={
            "to": PHONE,
            "content": {
                "kind": "template",
                "name": "daily_digest",
                "language": "pt_BR",
                "body_params": ["Ana"],
            },
            "recurrence": {"timezone": "America/Sao_Paulo", "start": start.isoformat(), "preset": "daily"},
        },
    )
    assert r.status_code == 201, r.text
    schedule = r.json()
    first = start.replace(tzinfo=SP).astimezone(UTC)
    assert datetime.fromisoformat(schedule["send_at"]) == first
    detail = (await client.get(f"/v1/scheduled-messages/{schedule['id']}")).json()
    assert [
        datetime.fromisoformat(t).astimezone(SP).strftime("%H:%M") for t in detail["next_occurrences"]
    ] == ["09:00"] * 5

    before = len(await published(runtime))
    assert await firing.fire_due(sched, now=first - timedelta(seconds=1)) == 0
    await firing.fire_due(sched, now=first + timedelta(milliseconds=300))
    await firing.fire_due(sched, now=first + timedelta(seconds=1))  # same instant again: nothing
    sent = (await published(runtime))[before:]
    assert [s["message_id"] for s in sent] == [str(occurrence_message_id(uuid.UUID(schedule["id"]), first))]
    assert sent[0]["content"]["body_params"] == ["Ana"] and sent[0]["to"] == PHONE

    second = first + timedelta(days=1)
    await firing.fire_due(sched, now=second + timedelta(seconds=0.5))
    detail = (await client.get(f"/v1/scheduled-messages/{schedule['id']}")).json()
    assert detail["status"] == "pending" and detail["fired_count"] == 2
    assert [h["status"] for h in detail["history"]] == ["published", "published"]
    assert datetime.fromisoformat(detail["send_at"]) == second + timedelta(days=1)


async def test_downtime_fires_within_grace_once_and_records_older_as_missed(system):
    runtime, sched, client = system
    start = sp_tomorrow_at(8)
    r = await client.post(
        "/v1/scheduled-messages",
        json={
            "to": PHONE,
            "text": "stand-up",
            "recurrence": {"timezone": "America/Sao_Paulo", "start": start.isoformat(), "preset": "daily"},
        },
    )
    schedule = r.json()
    first = datetime.fromisoformat(schedule["send_at"])
    before = len(await published(runtime))
    # the scheduler was down for three days and comes back 20 minutes after the fourth occurrence
    now = first + timedelta(days=3, minutes=20)
    await firing.fire_due(sched, now=now)
    await firing.fire_due(sched, now=now)
    sent = (await published(runtime))[before:]
    assert [s["message_id"] for s in sent] == [
        str(occurrence_message_id(uuid.UUID(schedule["id"]), first + timedelta(days=3)))
    ]
    detail = (await client.get(f"/v1/scheduled-messages/{schedule['id']}")).json()
    assert [(h["status"], h["due_at"][:10]) for h in detail["history"]] == [
        ("published", (first + timedelta(days=3)).isoformat()[:10]),
        ("missed", (first + timedelta(days=2)).isoformat()[:10]),
        ("missed", (first + timedelta(days=1)).isoformat()[:10]),
        ("missed", first.isoformat()[:10]),
    ]
    assert detail["missed_count"] == 3 and detail["fired_count"] == 1


async def test_one_off_past_its_grace_is_missed_and_never_sent(system):
    runtime, sched, client = system
    send_at = utcnow() + timedelta(hours=2)
    late = (
        await client.post(
            "/v1/scheduled-messages",
            json={"to": PHONE, "text": "late", "send_at": send_at.isoformat(), "grace_seconds": 60},
        )
    ).json()
    before = len(await published(runtime))
    await firing.fire_due(sched, now=send_at + timedelta(minutes=5))
    assert (await published(runtime))[before:] == []
    detail = (await client.get(f"/v1/scheduled-messages/{late['id']}")).json()
    assert detail["status"] == "missed" and [h["status"] for h in detail["history"]] == ["missed"]


async def test_count_ends_the_recurrence(system):
    _, sched, client = system
    start = sp_tomorrow_at(7)
    schedule = (
        await client.post(
            "/v1/scheduled-messages",
            json={
                "to": PHONE,
                "text": "twice",
                "recurrence": {
                    "timezone": "America/Sao_Paulo",
                    "start": start.isoformat(),
                    "rrule": "FREQ=WEEKLY;COUNT=2",
                },
            },
        )
    ).json()
    first = datetime.fromisoformat(schedule["send_at"])
    await firing.fire_due(sched, now=first)
    await firing.fire_due(sched, now=first + timedelta(days=7))
    detail = (await client.get(f"/v1/scheduled-messages/{schedule['id']}")).json()
    assert detail["status"] == "completed" and detail["fired_count"] == 2 and detail["next_occurrences"] == []


async def test_bad_schedules_get_422_saying_what_is_wrong(system):
    _, _, client = system
    start = sp_tomorrow_at(9).isoformat()
    cases = [
        (
            {"recurrence": {"timezone": "Mars/Olympus", "start": start, "preset": "daily"}},
            "unknown time zone",
        ),
        ({"recurrence": {"timezone": "UTC", "start": start, "rrule": "FREQ=FORTNIGHTLY"}}, "invalid rrule"),
        (
            {"recurrence": {"timezone": "UTC", "start": start, "rrule": "FREQ=DAILY;UNTIL=20200101T000000"}},
            "recurrence",
        ),
        ({"send_at": (utcnow() - timedelta(hours=1)).isoformat()}, "in the past"),
        ({"send_at": "2030-01-01T09:00:00"}, "send_at"),
        (
            {
                "send_at": "2030-01-01T09:00:00Z",
                "recurrence": {"timezone": "UTC", "start": start, "preset": "daily"},
            },
            "exactly one",
        ),
    ]
    for extra, problem in cases:
        r = await client.post("/v1/scheduled-messages", json={"to": PHONE, "text": "x", **extra})
        assert r.status_code == 422, (extra, r.text)
        assert problem in r.json()["message"], r.json()


async def test_edit_while_pending_then_cancel(system):
    runtime, sched, client = system
    send_at = utcnow() + timedelta(days=2)
    schedule = (
        await client.post(
            "/v1/scheduled-messages", json={"to": PHONE, "text": "v1", "send_at": send_at.isoformat()}
        )
    ).json()
    start = sp_tomorrow_at(18)
    edited = await client.patch(
        f"/v1/scheduled-messages/{schedule['id']}",
        json={
            "content": {"kind": "buttons", "body": "Coming?", "buttons": [{"id": "y", "title": "Yes"}]},
            "recurrence": {"timezone": "America/Sao_Paulo", "start": start.isoformat(), "preset": "weekdays"},
        },
    )
    assert edited.status_code == 200, edited.text
    body = edited.json()
    assert body["kind"] == "recurring" and body["text"] is None and body["content"]["kind"] == "buttons"
    assert datetime.fromisoformat(body["send_at"]).astimezone(SP).hour == 18
    listed = (
        await client.get("/v1/scheduled-messages", params={"status": "pending", "recipient": PHONE})
    ).json()
    assert schedule["id"] in [s["id"] for s in listed["items"]]
    assert (await client.delete(f"/v1/scheduled-messages/{schedule['id']}")).json()["status"] == "cancelled"
    again = await client.patch(f"/v1/scheduled-messages/{schedule['id']}", json={"text": "v3"})
    assert again.status_code == 409 and "cancelled" in again.json()["message"]
    await firing.fire_due(sched, now=utcnow() + timedelta(days=30))
    assert str(schedule["id"]) not in json.dumps(await published(runtime))


async def test_history_follows_delivery_status(system):
    runtime, sched, client = system
    send_at = utcnow() + timedelta(hours=3)
    schedule = (
        await client.post(
            "/v1/scheduled-messages", json={"to": PHONE, "text": "hi", "send_at": send_at.isoformat()}
        )
    ).json()
    await firing.fire_due(sched, now=send_at)
    assert (await published(runtime))[-1]["message_id"] == schedule["message_id"]
    for status in ("sent", "delivered", "sent"):  # out of order: the furthest one stays
        await delivery.follow_status(
            sched,
            new_event(
                MessageStatusChanged(
                    message_id=uuid.UUID(schedule["message_id"]), status=status, at=utcnow()
                ),
                tenant_id=uuid.uuid4(),
                source="/herald/sender",
            ),
        )
    detail = (await client.get(f"/v1/scheduled-messages/{schedule['id']}")).json()
    assert [h["delivery_status"] for h in detail["history"]] == ["delivered"]


# --- event reminders ---------------------------------------------------------------------


async def _tenant_id(runtime: Any, client: httpx.AsyncClient) -> uuid.UUID:
    return (await runtime.auth(_request(client.headers["Authorization"]))).id


def _request(header: str) -> Any:
    from starlette.requests import Request

    return Request(
        {"type": "http", "headers": [(b"authorization", header.encode())], "method": "GET", "path": "/"}
    )


def concert(event_id: str, starts_at: datetime, cls: type = EventPublished) -> Any:
    return cls(
        event_id=event_id,
        name="Jazz Night",
        starts_at=starts_at,
        timezone="Europe/Lisbon",
        attendees=[
            Attendee(phone="+351912345001", name="Ana", language="pt_PT", attributes={"ticket_type": "VIP"}),
            Attendee(phone="+351912345002", name="Rui", attributes={"ticket_type": "standard"}),
        ],
    )


async def test_reminders_published_moved_and_cancelled(system):
    runtime, sched, client = system
    tenant_id = await _tenant_id(runtime, client)
    policy = {
        "reminders": [
            {"name": "7d", "days_before": 7, "template": {"name": "event_reminder"}},
            {"name": "1d", "days_before": 1, "template": {"name": "event_reminder"}},
            {"name": "day_of", "days_before": 0, "at": "09:00", "template": {"name": "event_reminder"}},
            {
                "name": "vip_lounge",
                "minutes_before": 60,
                "template": {
                    "name": "vip_lounge",
                    "language": "en_US",
                    "body_params": ["{attendee.name}", "{attendee.ticket_type}"],
                },
                "attendee_filter": {"ticket_type": "VIP"},
            },
        ]
    }
    assert (await client.put("/v1/reminder-policy", json=policy)).status_code == 200
    lisbon = ZoneInfo("Europe/Lisbon")
    day = (utcnow() + timedelta(days=10)).astimezone(lisbon).date()
    starts = datetime(day.year, day.month, day.day, 20, 0, tzinfo=lisbon)
    event_id = f"ev-{uuid.uuid4().hex[:6]}"
    published_event = new_event(concert(event_id, starts), tenant_id=tenant_id, source="/ticketing")
    assert await plan_event_reminders(sched, published_event)
    assert not await plan_event_reminders(sched, published_event)  # redelivery: nothing new

    items = (await client.get("/v1/reminders", params={"event_id": event_id})).json()["items"]
    by = {(i["to"], i["reminder"]): i for i in items}
    assert sorted(by) == sorted(
        [(p, r) for p in ("+351912345001", "+351912345002") for r in ("7d", "1d", "day_of")]
        + [("+351912345001", "vip_lounge")]
    )
    assert (
        datetime.fromisoformat(by[("+351912345002", "day_of")]["due_at"]).astimezone(lisbon).strftime("%H:%M")
        == "09:00"
    )
    assert by[("+351912345001", "vip_lounge")]["content"]["body_params"] == ["Ana", "VIP"]
    assert by[("+351912345001", "7d")]["content"]["language"] == "pt_PT"
    assert by[("+351912345001", "7d")]["content"]["body_params"][:2] == ["Ana", "Jazz Night"]

    # the 7-day reminders fire
    seven = datetime.fromisoformat(by[("+351912345001", "7d")]["due_at"])
    before = len(await published(runtime))
    await firing.fire_due_reminders(sched, now=seven + timedelta(seconds=1))
    fired = (await published(runtime))[before:]
    assert sorted(f["to"] for f in fired) == ["+351912345001", "+351912345002"]

    # the event moves a day later: the reminders not yet fired move, the 7-day ones are not repeated
    moved = new_event(
        concert(event_id, starts + timedelta(days=1), EventChanged), tenant_id=tenant_id, source="/ticketing"
    )
    await plan_event_reminders(sched, moved)
    items = (await client.get("/v1/reminders", params={"event_id": event_id})).json()["items"]
    after = {(i["to"], i["reminder"]): i for i in items}
    for key, item in after.items():
        if key[1] == "7d":
            assert item["status"] == "published" and item["due_at"] == by[key]["due_at"]
        else:
            assert item["status"] == "pending"
            assert datetime.fromisoformat(item["due_at"]) == datetime.fromisoformat(
                by[key]["due_at"]
            ) + timedelta(days=1)
            assert item["message_id"] != by[key]["message_id"]
    await firing.fire_due_reminders(sched, now=seven + timedelta(days=1, seconds=1))
    assert len(await published(runtime)) == before + 2  # nothing more at the old 7-day time + 1 day

    cancelled = new_event(EventCancelled(event_id=event_id), tenant_id=tenant_id, source="/ticketing")
    assert await cancel_event_reminders(sched, cancelled) == 5
    await firing.fire_due_reminders(sched, now=starts + timedelta(days=2))
    assert len(await published(runtime)) == before + 2
    statuses = {
        i["status"]
        for i in (await client.get("/v1/reminders", params={"event_id": event_id})).json()["items"]
    }
    assert statuses == {"published", "cancelled"}


async def test_pacing_slots_publish_pacing_due(system):
    runtime, sched, client = system
    created = await client.post(
        "/v1/pacing-schedules",
        json={
            "user_id": "u-1",
            "days": ["MO", "WE", "FR"],
            "times": ["09:00", "17:30"],
            "timezone": "Europe/Lisbon",
        },
    )
    assert created.status_code == 201, created.text
    pacing = created.json()
    slots = [datetime.fromisoformat(s) for s in pacing["next_slots"]]
    assert len(slots) == 5 and {s.astimezone(ZoneInfo("Europe/Lisbon")).strftime("%H:%M") for s in slots} == {
        "09:00",
        "17:30",
    }
    before = len(await published(runtime, "pacing.due.v1"))
    await firing.fire_due_pacing(sched, now=slots[0] + timedelta(seconds=0.2))
    await firing.fire_due_pacing(sched, now=slots[0] + timedelta(seconds=0.4))
    due = (await published(runtime, "pacing.due.v1"))[before:]
    assert [(d["user_id"], datetime.fromisoformat(d["slot_at"])) for d in due] == [("u-1", slots[0])]
    paused = await client.patch(f"/v1/pacing-schedules/{pacing['id']}", json={"active": False})
    assert paused.json()["next_slots"] == []
    bad = await client.post(
        "/v1/pacing-schedules",
        json={"user_id": "u-1", "days": ["MO"], "times": ["09:00"], "timezone": "Lisboa"},
    )
    assert bad.status_code == 422 and "unknown time zone" in bad.json()["message"]


async def test_a_row_that_cannot_be_fired_is_marked_failed_and_does_not_stall_the_others(system):
    runtime, sched, client = system
    send_at = utcnow() + timedelta(hours=5)
    bad, good = [
        (
            await client.post(
                "/v1/scheduled-messages", json={"to": PHONE, "text": t, "send_at": send_at.isoformat()}
            )
        ).json()
        for t in ("bad", "good")
    ]
    from services.scheduler.models import scheduled_messages

    async with runtime.engine.begin() as conn:  # a recipient encrypted with a key since removed
        await conn.execute(
            sa.update(scheduled_messages)
            .where(scheduled_messages.c.id == uuid.UUID(bad["id"]))
            .values(recipient_enc=SecretBox(SecretBox.generate_key()).encrypt(PHONE))
        )
    await firing.fire_due(sched, now=send_at)
    assert (await published(runtime))[-1]["message_id"] == good["message_id"]
    assert (await client.get(f"/v1/scheduled-messages/{bad['id']}")).json()["status"] == "failed"
    assert (await client.get(f"/v1/scheduled-messages/{good['id']}")).json()["status"] == "published"


async def test_an_event_can_override_the_tenant_policy(system):
    runtime, sched, client = system
    tenant_id = await _tenant_id(runtime, client)
    event_id = f"ev-{uuid.uuid4().hex[:6]}"
    override = {"reminders": [{"name": "2h", "minutes_before": 120, "template": {"name": "doors_open"}}]}
    put = await client.put(f"/v1/reminder-policy/events/{event_id}", json=override)
    assert put.status_code == 200, put.text
    bad = await client.put(
        f"/v1/reminder-policy/events/{event_id}",
        json={"reminders": [{"name": "x", "template": {"name": "t"}}]},
    )
    assert bad.status_code == 422 and "days_before" in bad.json()["message"]
    starts = utcnow() + timedelta(days=3)
    await plan_event_reminders(sched, new_event(concert(event_id, starts), tenant_id=tenant_id, source="/t"))
    items = (await client.get("/v1/reminders", params={"event_id": event_id})).json()["items"]
    assert {(i["reminder"], i["content"]["name"]) for i in items} == {("2h", "doors_open")}
    assert len(items) == 2  # both attendees
    assert datetime.fromisoformat(items[0]["due_at"]) == starts - timedelta(hours=2)


async def test_a_cancellation_that_arrives_first_is_not_undone_by_the_late_publication(system):
    """Several publishers, or a redelivery, can put event.cancelled ahead of the event.published it
    cancels: the late publication plans no reminder. Publishing the event again afterwards (a
    newer event.published: it is on again) plans them."""
    runtime, sched, client = system
    tenant_id = await _tenant_id(runtime, client)
    lisbon = ZoneInfo("Europe/Lisbon")
    day = (utcnow() + timedelta(days=10)).astimezone(lisbon).date()
    starts = datetime(day.year, day.month, day.day, 20, 0, tzinfo=lisbon)
    event_id = f"ev-{uuid.uuid4().hex[:6]}"

    publication = new_event(concert(event_id, starts), tenant_id=tenant_id, source="/ticketing")
    cancellation = new_event(EventCancelled(event_id=event_id), tenant_id=tenant_id, source="/ticketing")
    assert cancellation.time > publication.time
    assert await cancel_event_reminders(sched, cancellation) == 0  # nothing planned yet
    assert not await plan_event_reminders(sched, publication)  # the older event, late
    reminders = (await client.get("/v1/reminders", params={"event_id": event_id})).json()["items"]
    assert reminders == []

    # a late event.changed older than the cancellation cannot bring it back either
    older_change = new_event(
        concert(event_id, starts + timedelta(days=1), EventChanged), tenant_id=tenant_id, source="/ticketing"
    ).model_copy(update={"time": publication.time + timedelta(microseconds=1)})
    assert not await plan_event_reminders(sched, older_change)
    assert (await client.get("/v1/reminders", params={"event_id": event_id})).json()["items"] == []

    # the organiser puts the event on again: a newer publication plans its reminders
    again = new_event(concert(event_id, starts), tenant_id=tenant_id, source="/ticketing")
    assert await plan_event_reminders(sched, again)
    planned = (await client.get("/v1/reminders", params={"event_id": event_id})).json()["items"]
    assert planned and {i["status"] for i in planned} == {"pending"}

    # and a cancellation issued before that re-publication, delivered late, is ignored
    stale_cancel = cancellation.model_copy(update={"id": str(uuid.uuid4())})
    assert await cancel_event_reminders(sched, stale_cancel) == 0
    still = (await client.get("/v1/reminders", params={"event_id": event_id})).json()["items"]
    assert {i["status"] for i in still} == {"pending"}


async def test_each_firing_is_a_new_trace_whose_producer_span_the_event_carries(system, monkeypatch):
    """Tracing on: an occurrence that fires gets a PRODUCER span of its own (a new root, whatever
    is current), and the published ``message.requested`` carries its traceparent, so the sender's
    spans join the scheduler's trace. Tracing off: the event has no traceparent."""
    runtime, sched, client = system

    async def one_off(label: str) -> tuple[dict[str, Any], datetime]:
        send_at = utcnow() + timedelta(hours=3)
        r = await client.post(
            "/v1/scheduled-messages", json={"to": PHONE, "text": label, "send_at": send_at.isoformat()}
        )
        assert r.status_code == 201, r.text
        return r.json(), datetime.fromisoformat(r.json()["send_at"])

    async def bodies() -> list[dict[str, Any]]:
        async with runtime.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(outbox.c.body)
                    .where(outbox.c.routing_key == "message.requested.v1")
                    .order_by(outbox.c.id)
                )
            ).all()
        return [json.loads(r.body) for r in rows]

    untraced, at = await one_off("untraced")
    before = len(await bodies())
    await firing.fire_due(sched, now=at + timedelta(seconds=0.1))
    [off] = (await bodies())[before:]
    assert off["data"]["message_id"] == str(occurrence_message_id(uuid.UUID(untraced["id"]), at))
    assert "traceparent" not in off

    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    tracing.disable()
    exporter = InMemorySpanExporter()
    assert tracing.configure("scheduler", exporter=exporter)
    try:
        # the request that creates it (the app was built with tracing off: no FastAPI span of its own)
        with tracing.span("POST /v1/scheduled-messages", kind=SpanKind.SERVER) as created:
            assert created is not None
            schedule, at = await one_off("traced")
        before = len(await bodies())
        with tracing.span("an unrelated span") as unrelated:  # the firing does not continue it
            assert unrelated is not None
            await firing.fire_due(sched, now=at + timedelta(seconds=0.1))
    finally:
        tracing.disable()
    [event] = (await bodies())[before:]
    [fired] = [s for s in exporter.get_finished_spans() if s.name == "scheduler fire message.requested.v1"]
    assert fired.kind == SpanKind.PRODUCER and fired.parent is None
    ctx = fired.get_span_context()
    assert ctx.trace_id != unrelated.get_span_context().trace_id
    assert event["traceparent"].startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
    message_id = str(occurrence_message_id(uuid.UUID(schedule["id"]), at))
    assert event["data"]["message_id"] == message_id
    assert fired.attributes["herald.schedule_id"] == schedule["id"]
    assert fired.attributes["herald.message_id"] == message_id
    assert fired.attributes["messaging.message.id"] == event["id"]
    # the sender's consumer continues it: the envelope's context names the scheduler's span
    parent = tracing.extract(event)
    assert parent is not None and trace.get_current_span(parent).get_span_context().span_id == ctx.span_id
    # and it links to the request that created the schedule (another trace, long finished)
    made = created.get_span_context()
    assert [(link.context.trace_id, link.context.span_id) for link in fired.links] == [
        (made.trace_id, made.span_id)
    ]
    assert made.trace_id != ctx.trace_id
