"""Real ``herald run scheduler`` processes on their own throw-away database, and a real queue
bound to the events exchange that records every ``message.requested`` the scheduler publishes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest

from devtools.database import asyncpg_dsn, create_migrated_database, drop_database
from devtools.processes import ServiceProcess, free_port, herald_env
from services.scheduler.domain import occurrence_message_id
from shared.crypto import SecretBox
from tests.conftest import Infra


@dataclass
class SchedulerSystem:
    database_url: str
    amqp_url: str
    env: dict[str, str]
    tmp: Path
    processes: list[ServiceProcess] = field(default_factory=list)

    def start(self, name: str, **extra: str) -> ServiceProcess:
        proc = ServiceProcess("scheduler", free_port(), {**self.env, **extra}, self.tmp / f"{name}.log")
        proc.start()
        self.processes.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.processes:
            if proc.proc is not None and proc.proc.poll() is None:
                proc.terminate(timeout=20)

    async def insert_due(self, count: int, due_at: datetime, *, text: str = "due") -> set[uuid.UUID]:
        """``count`` daily recurring schedules all due at ``due_at``, written straight into the
        table (as 100,000 POSTs would take longer than the claim being tested). Returns the
        message ids the first occurrences must be published with."""
        box = SecretBox(self.env["HERALD_ENCRYPTION_KEYS"])
        recipient = box.encrypt("+5511999990002")
        tenant = uuid.uuid4()
        start_local = due_at.replace(tzinfo=None)
        records = []
        expected = set()
        for _ in range(count):
            sid = uuid.uuid4()
            mid = occurrence_message_id(sid, due_at)
            expected.add(mid)
            records.append(
                (
                    sid,
                    tenant,
                    recipient,
                    "bench",
                    text,
                    5,
                    due_at,
                    "pending",
                    mid,
                    "recurring",
                    "UTC",
                    start_local,
                    "FREQ=DAILY",
                    due_at,
                    due_at,
                )
            )
        conn = await asyncpg.connect(asyncpg_dsn(self.database_url))
        try:
            await conn.copy_records_to_table(
                "scheduled_messages",
                schema_name="scheduler",
                columns=[
                    "id",
                    "tenant_id",
                    "recipient_enc",
                    "recipient_hash",
                    "text",
                    "priority",
                    "send_at",
                    "status",
                    "message_id",
                    "kind",
                    "timezone",
                    "start_local",
                    "rule",
                    "created_at",
                    "updated_at",
                ],
                records=records,
            )
            await conn.execute("NOTIFY scheduler_due")
        finally:
            await conn.close()
        return expected


@pytest.fixture(scope="module")
def scheduler_system(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchedulerSystem]:
    name, url = create_migrated_database(infra.database_url, "herald_sched_e2e")
    env = herald_env(url, infra.amqp_url, HERALD_GRACEFUL_TIMEOUT_SECONDS="5")
    system = SchedulerSystem(url, infra.amqp_url, env, Path(tmp_path_factory.mktemp("scheduler")))
    try:
        yield system
    finally:
        system.stop_all()
        drop_database(infra.database_url, name)


@dataclass
class Recorder:
    """Every message published on ``routing_key``, as (message_id, event id) per delivery."""

    deliveries: list[tuple[str, str]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def message_ids(self) -> Counter[str]:
        return Counter(m for m, _ in self.deliveries)

    async def wait_for(self, count: int, within: float) -> None:
        """Until ``count`` distinct messages arrived, or ``within`` seconds passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while len(self.message_ids()) < count:
                    self.changed.clear()
                    await self.changed.wait()


@contextlib.asynccontextmanager
async def record(amqp_url: str, routing_key: str = "message.requested.v1") -> AsyncIterator[Recorder]:
    recorder = Recorder()
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        exchange = await channel.get_exchange("herald.events", ensure=True)
        queue = await channel.declare_queue(
            f"test.scheduler.{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True
        )
        await queue.bind(exchange, routing_key=routing_key)
        loop = asyncio.get_running_loop()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            body = json.loads(message.body)
            recorder.deliveries.append((str(body["data"].get("message_id")), body["id"]))
            recorder.bodies.append(body)
            recorder.arrived.append(loop.time())
            recorder.changed.set()
            await message.ack()

        await queue.consume(on_message)
        yield recorder
    finally:
        await connection.close()


async def publish(amqp_url: str, routing_key: str, body: dict[str, Any]) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange("herald.events", ensure=True)
        await exchange.publish(
            aio_pika.Message(
                json.dumps(body, default=str).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )
    finally:
        await connection.close()


def soon(seconds: float) -> datetime:
    from shared.events import utcnow

    return (utcnow() + timedelta(seconds=seconds)).replace(microsecond=0)
