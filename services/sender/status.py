"""The one way a message's status changes.

``record`` writes, in the caller's unit of work, the three things a status change is: the row's
new status (with what it clears: the reason, the error code and the dead-letter flag always
describe the new status, never an earlier attempt), its history line, and the ``message.status``
outbox event. Every path — acceptance, the claim, the provider's answer, retries, dead letters,
delivery statuses, reconciliation, replay, a deleted channel — goes through it.

The ``message.status`` event continues the message's trace, whatever span (if any) records it:
the send's span for the provider's answer (``Change.traceparent``), else the span that accepted
the message (``messages.traceparent``). Results are recorded in batches outside any span, and a
delivery status arrives in the webhook's own trace; a consumer of ``message.status`` still joins
the message's trace. With tracing off the column is empty and the event is as it always was.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ClauseElement

from services.sender import repository as repo
from shared import tracing
from shared.db import UnitOfWork, notify_channel
from shared.events import CloudEvent, MessageStatusChanged, new_event, utcnow
from shared.service import ServiceRuntime
from shared.topology import routing_key

SOURCE = "/herald/sender"


def facts(row: Row[Any] | Mapping[str, Any]) -> Mapping[str, Any]:
    """The fields of a message a status event needs, from a row or a dict."""
    return row._mapping if isinstance(row, Row) else row


@dataclass(frozen=True)
class Change:
    """One message moving from ``previous`` to ``status``.

    ``message`` needs id, tenant_id, provider, channel_id and correlation_id. ``values`` are the
    other columns that change with the status (``not_before``, ``attempts``, …). ``row_reason``
    is what the row's ``status_reason`` keeps when it differs from the history line (a sent
    fallback keeps why the fallback was sent). ``at`` is when it happened (a provider's
    timestamp); the default is the time of recording. ``traceparent`` is the span the event
    continues (the send's); the default is ``message["traceparent"]``, the accepting span's."""

    message: Mapping[str, Any]
    status: str
    previous: str | None
    reason: str | None = None
    error_code: str | None = None
    dead_letter: bool = False
    provider_message_id: str | None = None
    at: datetime | None = None
    row_reason: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    traceparent: str | None = None

    @property
    def id(self) -> uuid.UUID:
        return self.message["id"]

    def history(self, now: datetime) -> dict[str, Any]:
        return {"message_id": self.id, "status": self.status, "reason": self.reason, "at": self.at or now}

    @property
    def routing_key(self) -> str:
        """``message.status.v1.<origin>``: a consumer binds to the origins it cares about."""
        return routing_key(MessageStatusChanged, self.message.get("origin"))

    def columns(self, now: datetime) -> dict[str, Any]:
        cols: dict[str, Any] = {
            "status": self.status,
            "status_reason": self.row_reason if self.row_reason is not None else self.reason,
            "error_code": self.error_code,
            "dead_letter": self.dead_letter,
            "updated_at": now,
            **self.values,
        }
        if self.provider_message_id is not None:
            cols["provider_message_id"] = self.provider_message_id
        return cols

    def event(self, now: datetime) -> CloudEvent[Any]:
        m = self.message
        event = new_event(
            MessageStatusChanged(
                message_id=m["id"],
                status=self.status,
                previous_status=self.previous,
                at=self.at or now,
                reason=self.reason,
                error_code=self.error_code,
                dead_letter=self.dead_letter,
                provider=self.values.get("provider", m.get("provider")),
                provider_message_id=self.provider_message_id,
                channel_id=m.get("channel_id"),
                correlation_id=m.get("correlation_id"),
                origin=m.get("origin"),
            ),
            tenant_id=m["tenant_id"],
            source=SOURCE,
            subject=str(m["id"]),
        )
        parent = self.traceparent or m.get("traceparent")
        # explicit, so that tracing.inject (in UnitOfWork.add_event) keeps it over the current span
        return event.model_copy(update={"traceparent": parent}) if parent else event


def _same(value: Any) -> Any:
    """A hashable stand-in for a column value, to find changes that write the same values."""
    if isinstance(value, ClauseElement):
        return ("sql", id(value))
    if isinstance(value, dict | list):
        return ("json", repr(value))
    return value


async def record(uow: UnitOfWork, changes: Sequence[Change], *, inserted: bool = False) -> None:
    """Record ``changes`` in ``uow``: row updates (guarded by the previous status, grouped so a
    batch costs a statement per distinct set of values), history lines, outbox events.

    ``inserted``: the rows were just inserted with this status (acceptance) — no update."""
    if not changes:
        return
    now = utcnow()
    if not inserted:
        groups: dict[tuple[Any, ...], list[Change]] = {}
        for c in changes:
            cols = c.columns(now)
            key = (c.previous, *sorted((k, _same(v)) for k, v in cols.items()))
            groups.setdefault(key, []).append(c)
        varied: dict[tuple[Any, ...], list[Change]] = {}
        for group in groups.values():
            if len(group) > 1:
                await repo.set_status_many(
                    uow.conn, [c.id for c in group], group[0].previous, group[0].columns(now)
                )
            else:
                c = group[0]
                varied.setdefault((c.previous, *sorted(c.columns(now))), []).append(c)
        for group in varied.values():
            await repo.set_status_each(uow.conn, [(c.id, c.previous, c.columns(now)) for c in group])
    await repo.add_histories(uow.conn, [c.history(now) for c in changes])
    for c in changes:
        uow.add_event(c.event(now), routing_key=c.routing_key)


async def record_accepted(
    runtime: ServiceRuntime, conn: AsyncConnection, change: Change, row: dict[str, Any]
) -> bool:
    """Acceptance of one message (``row``, inserted with ``change.status``) as one statement on
    ``conn`` (in autocommit: its own transaction) that writes what ``record`` would: the row, its
    history line and its ``message.status`` outbox event. False if the id or idempotency key
    already exists (nothing written)."""
    now = utcnow()
    event = tracing.inject(change.event(now))
    return await repo.insert_queued(
        conn,
        row,
        change.history(now),
        {
            "event_id": event.id,
            "routing_key": change.routing_key,
            "body": event.model_dump_json().encode(),
            "priority": None,
        },
        outbox=runtime.outbox,
        outbox_channel=notify_channel(runtime.schema),
    )
