"""The transactional outbox against a real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest
import sqlalchemy as sa
from faststream.exceptions import FastStreamException
from faststream.rabbit import Channel, RabbitBroker

from services.sender.models import outbox, processed_events
from shared.db import UnitOfWork, create_engine
from shared.events import OrderStatusChanged, new_event
from shared.outbox import OutboxRelay
from shared.topology import declare_shared
from tests.conftest import Infra

pytestmark = pytest.mark.integration


def order_event(order_id: str):
    return new_event(
        OrderStatusChanged(order_id=order_id, status="ready", customer_phone="+5511999998888"),
        tenant_id=uuid.uuid4(),
        source="/tests",
    )


@pytest.fixture
async def engine(infra: Infra):
    engine = create_engine(infra.database_url, pool_size=4)
    yield engine
    await engine.dispose()


@pytest.fixture
async def broker(infra: Infra):
    broker = RabbitBroker(infra.amqp_url, default_channel=Channel(on_return_raises=True))
    await broker.connect()
    await declare_shared(broker, "tests")
    yield broker
    await broker.stop()


@pytest.fixture
async def probe_queue(infra: Infra, broker):
    """A private queue bound to order.status_changed.v1, to see what the relay publishes."""
    connection = await aio_pika.connect(infra.amqp_url)
    channel = await connection.channel()
    exchange = await channel.get_exchange("herald.events")
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, routing_key="order.status_changed.v1")
    yield queue
    await connection.close()


def uow(engine) -> UnitOfWork:
    return UnitOfWork(engine, "sender", outbox, processed_events)


async def drain(
    queue: aio_pika.abc.AbstractQueue, want: int, within: float = 5.0
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    deadline = asyncio.get_running_loop().time() + within
    while len(got) < want and asyncio.get_running_loop().time() < deadline:
        message = await queue.get(fail=False)
        if message is None:
            await asyncio.sleep(0.02)
            continue
        await message.ack()
        got.append(message)
    return got


async def test_committed_events_are_published_persistent_and_marked(engine, broker, probe_queue):
    event = order_event("committed")
    async with uow(engine) as work:
        work.add_event(event)
        await work.commit()
    relay = OutboxRelay(service="test", engine=engine, outbox=outbox, broker=broker)
    assert await relay.relay_once() >= 1

    messages = await drain(probe_queue, 1)
    mine = [m for m in messages if m.message_id == event.id]
    assert mine, "the committed event was not published"
    assert mine[0].delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert b'"order_id":"committed"' in mine[0].body
    async with engine.connect() as conn:
        published_at = (
            await conn.execute(sa.select(outbox.c.published_at).where(outbox.c.event_id == event.id))
        ).scalar_one()
    assert published_at is not None


async def test_rolled_back_work_publishes_nothing(engine, broker, probe_queue):
    event = order_event("rolled-back")
    async with uow(engine) as work:
        work.add_event(event)
        # leaving without commit: an exception or an early return
    relay = OutboxRelay(service="test", engine=engine, outbox=outbox, broker=broker)
    await relay.relay_once()
    assert [m for m in await drain(probe_queue, 1, within=0.5) if m.message_id == event.id] == []
    async with engine.connect() as conn:
        assert (
            await conn.execute(sa.select(sa.func.count()).where(outbox.c.event_id == event.id))
        ).scalar_one() == 0


async def test_rows_stay_unpublished_while_the_broker_cannot_confirm(engine, infra):
    event = order_event("no-broker")
    async with uow(engine) as work:
        work.add_event(event)
        await work.commit()
    closed = RabbitBroker(infra.amqp_url)  # never connected: publishing cannot be confirmed
    relay = OutboxRelay(service="test", engine=engine, outbox=outbox, broker=closed, publish_timeout=1)
    with pytest.raises(FastStreamException):
        await relay.relay_once()
    async with engine.connect() as conn:
        published_at = (
            await conn.execute(sa.select(outbox.c.published_at).where(outbox.c.event_id == event.id))
        ).scalar_one()
    assert published_at is None, "a row was marked sent without a broker confirm"


async def test_relay_wakes_on_commit_without_waiting_for_its_poll(engine, broker, probe_queue):
    relay = OutboxRelay(service="test", engine=engine, outbox=outbox, broker=broker, poll_seconds=30)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.3)  # relay is now asleep on LISTEN, for up to 30 s
        await drain(probe_queue, 10_000, within=0.2)
        event = order_event("woken")
        started = asyncio.get_running_loop().time()
        async with uow(engine) as work:
            work.add_event(event)
            await work.commit()
        got = [m for m in await drain(probe_queue, 1, within=5) if m.message_id == event.id]
        assert got, "relay did not publish after the commit notified it"
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        await relay.stop()
        await asyncio.wait_for(task, 10)


async def test_an_event_nobody_consumes_is_kept_in_herald_unrouted(engine, broker, infra):
    connection = await aio_pika.connect(infra.amqp_url)
    async with connection:
        channel = await connection.channel()
        unrouted = await channel.get_queue("herald.unrouted")
        from shared.events import DraftReady

        event = new_event(
            DraftReady(draft_id=uuid.uuid4(), user_id="u1", title="t"),
            tenant_id=uuid.uuid4(),
            source="/tests",
        )
        async with uow(engine) as work:
            work.add_event(event)
            await work.commit()
        relay = OutboxRelay(service="test", engine=engine, outbox=outbox, broker=broker)
        await relay.relay_once()  # must not raise: the alternate exchange takes it
        # the queue also keeps what earlier tests left unconsumed: read until this event turns
        # up, however many come before it
        loop = asyncio.get_running_loop()
        deadline, found = loop.time() + 30, False
        while not found and loop.time() < deadline:
            batch = await drain(unrouted, 1000, within=1)
            found = any(m.message_id == event.id for m in batch)
        assert found


def status_event(origin: str):
    from datetime import UTC, datetime

    from shared.events import MessageStatusChanged

    return new_event(
        MessageStatusChanged(message_id=uuid.uuid4(), status="sent", at=datetime.now(UTC), origin=origin),
        tenant_id=uuid.uuid4(),
        source="/tests",
    )


async def test_api_statuses_reach_a_consumer_that_binds_them_and_stay_out_of_herald_unrouted(
    engine, broker, infra
):
    from shared.events import MessageStatusChanged
    from shared.topology import routing_key

    relay = OutboxRelay(service="test", engine=engine, outbox=outbox, broker=broker)

    async def publish(event) -> None:  # one relay pass each: the broker routes them in this order
        async with uow(engine) as work:
            work.add_event(event, routing_key=routing_key(MessageStatusChanged, event.data.origin))
            await work.commit()
        await relay.relay_once()

    connection = await aio_pika.connect(infra.amqp_url)
    async with connection:
        channel = await connection.channel()
        unrouted = await channel.get_queue("herald.unrouted")
        unread, read, elsewhere = status_event("api"), status_event("api"), status_event("shop-system")
        await publish(unread)  # nobody outside Herald reads API statuses yet
        external = await channel.declare_queue(exclusive=True)  # now a system does
        await external.bind(await channel.get_exchange("herald.events"), routing_key="message.status.v1.api")
        await publish(read)
        await publish(elsewhere)
        got = await drain(external, 1, within=10)
        assert [m.message_id for m in got] == [read.id]
        # a status of another origin nobody binds is still kept in herald.unrouted; read until it
        # turns up: the API ones, routed before it, never went there
        loop = asyncio.get_running_loop()
        deadline, seen = loop.time() + 30, set()
        while elsewhere.id not in seen and loop.time() < deadline:
            seen |= {m.message_id for m in await drain(unrouted, 1000, within=1)}
        assert elsewhere.id in seen
        assert unread.id not in seen and read.id not in seen
