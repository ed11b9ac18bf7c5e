"""Scheduler use cases: create, cancel, and fire due scheduled messages exactly once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy.engine import Row

from services.scheduler import repository as repo
from services.scheduler.domain import can_cancel, check_send_at
from shared.crypto import lookup_hash
from shared.events import MessageRequested, new_event, utcnow
from shared.logging import get_logger
from shared.notify import Wakeup
from shared.service import ServiceRuntime

log = get_logger(__name__)
SOURCE = "/herald/scheduler"
DUE_CHANNEL = "scheduler_due"

FIRED = Counter("herald_scheduler_fired_total", "Scheduled occurrences published", ["kind"])
LATENESS = Histogram(
    "herald_scheduler_lateness_seconds",
    "How late an occurrence was published after it was due",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 60, 600),
)


@dataclass
class Scheduler:
    runtime: ServiceRuntime
    batch_size: int
    max_sleep: float


class NotCancellable(Exception):
    pass


async def create(
    sched: Scheduler, tenant_id: uuid.UUID, *, to: str, text: str, priority: int, send_at: datetime
) -> Row[Any]:
    now = utcnow()
    check_send_at(send_at, now)
    schedule_id = uuid.uuid4()
    values = {
        "id": schedule_id,
        "tenant_id": tenant_id,
        "recipient_enc": sched.runtime.secrets.encrypt(to),
        "recipient_hash": lookup_hash(sched.runtime.settings.secret_key.get_secret_value(), to),
        "text": text,
        "priority": priority,
        "send_at": send_at,
        "status": "pending",
        # the sender is idempotent on message_id: a re-fired occurrence can never send twice
        "message_id": uuid.uuid4(),
        "created_at": now,
        "updated_at": now,
    }
    async with sched.runtime.uow() as uow:
        await repo.insert(uow.conn, values)
        await uow.conn.exec_driver_sql(f"NOTIFY {DUE_CHANNEL}")
        await uow.commit()
        row = await repo.get(uow.conn, tenant_id, schedule_id)
    assert row is not None
    return row


async def cancel(sched: Scheduler, tenant_id: uuid.UUID, schedule_id: uuid.UUID) -> Row[Any] | None:
    async with sched.runtime.uow() as uow:
        row = await repo.get(uow.conn, tenant_id, schedule_id, lock=True)
        if row is None:
            return None
        if not can_cancel(row.status):
            raise NotCancellable(
                f"scheduled message {schedule_id} is {row.status} and can no longer be cancelled"
            )
        now = utcnow()
        await repo.update(uow.conn, schedule_id, status="cancelled", cancelled_at=now, updated_at=now)
        await uow.commit()
        return await repo.get(uow.conn, tenant_id, schedule_id)


async def fire_due(sched: Scheduler, now: datetime | None = None) -> int:
    """Claim one batch of due rows and publish them, all in one transaction.

    The claim (row lock), the status change and the outbox rows commit together: two replicas
    cannot both fire a row, and a crash before the commit leaves the row pending for the next pass.
    """
    now = now or utcnow()
    async with sched.runtime.uow() as uow:
        rows = await repo.claim_due(uow.conn, now, sched.batch_size)
        if not rows:
            return 0
        for row in rows:
            request = MessageRequested(
                message_id=row.message_id,
                to=sched.runtime.secrets.decrypt(row.recipient_enc),
                text=row.text,
                priority=row.priority,
                origin="scheduler",
                correlation_id=str(row.id),
            )
            uow.add_event(
                new_event(request, tenant_id=row.tenant_id, source=SOURCE, subject=str(row.id)),
                priority=row.priority,
            )
        await repo.mark_published(uow.conn, [r.id for r in rows], now)
        await uow.commit()
    FIRED.labels("one_off").inc(len(rows))
    for row in rows:
        LATENESS.observe(max(0.0, (now - row.send_at).total_seconds()))
    return len(rows)


async def run_claim_loop(sched: Scheduler) -> None:
    """Fire due rows; sleep exactly until the next one is due, or until a new schedule notifies."""
    runtime = sched.runtime
    wakeup = Wakeup(runtime.engine, DUE_CHANNEL)
    try:
        while not runtime.stopping.is_set():
            try:
                await wakeup.ensure_listening()
                fired = await fire_due(sched)
                if fired >= sched.batch_size:
                    continue
                async with runtime.engine.connect() as conn:
                    upcoming = await repo.next_due(conn)
                sleep = sched.max_sleep
                if upcoming is not None:
                    sleep = min(sleep, max(0.0, (upcoming - utcnow()).total_seconds()))
                await wakeup.wait(sleep)
            except Exception as exc:
                log.warning("claim loop pass failed", error=repr(exc)[:200])
                await wakeup.close()
                await wakeup.wait(1.0)
    finally:
        await wakeup.close()
