"""Delivery-status tracking: a ``message.status`` recorded on the occurrence or reminder that
requested the message (the history the API shows). Which events are ours and whether a status
moves forward are pure rules in ``domain.py`` (``is_scheduler_message``, ``delivery_moves``,
the one ranking of ``shared/delivery.py``)."""

from __future__ import annotations

from services.scheduler import repository as repo
from services.scheduler.context import Scheduler
from services.scheduler.domain import delivery_moves, is_scheduler_message
from shared.events import CloudEvent, MessageStatusChanged


async def follow_status(sched: Scheduler, event: CloudEvent[MessageStatusChanged]) -> bool:
    """Record a ``message.status`` on the occurrence or reminder it belongs to (matched by
    message_id). Messages the scheduler did not request are ignored. Idempotent: a status is
    only ever moved forward."""
    data = event.data
    if not is_scheduler_message(data.correlation_id):
        return False  # the sender echoes the request's correlation id: not one of ours

    async def apply() -> bool:
        async with sched.runtime.uow() as uow:
            changed = False
            for table, current in await repo.delivery_targets(uow.conn, data.message_id):
                if delivery_moves(current.delivery_status, data.status):
                    await repo.set_delivery(
                        uow.conn, table, data.message_id, data.status, data.reason, data.at
                    )
                    changed = True
            await uow.commit()
            return changed

    return await sched.runtime.with_db("follow message status", apply)
