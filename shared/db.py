"""Database access: one async engine per process, a unit of work per transaction.

Invariants:
- repositories receive the unit of work's connection and never commit; only ``UnitOfWork.commit``
  does, so a business write and its outbox rows are committed together or not at all;
- every service owns one PostgreSQL schema and touches no other (``tenancy`` is read by all for
  API-key checks and written only by the ``herald tenant`` command).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction, create_async_engine

from shared import tracing
from shared.events import CloudEvent
from shared.logging import get_logger

log = get_logger(__name__)
T = TypeVar("T")


def create_engine(url: str, *, pool_size: int = 10, application_name: str = "herald") -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: it costs a round trip on every checkout. A connection the server dropped
        # fails its next statement, is invalidated by SQLAlchemy, and the caller's retry (HTTP 503
        # with Retry-After, or retry_transient in consumers and loops) gets a fresh one.
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": application_name}, "timeout": 5},
    )


def processed_events_table(metadata: sa.MetaData, schema: str) -> sa.Table:
    """Ids of events a consumer has already applied (idempotent consumers)."""
    return sa.Table(
        "processed_events",
        metadata,
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=schema,
    )


def outbox_table(metadata: sa.MetaData, schema: str) -> sa.Table:
    """Events waiting for the relay. ``published_at`` is set only after the broker confirmed."""
    table = sa.Table(
        "outbox",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("routing_key", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("priority", sa.SmallInteger, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        schema=schema,
    )
    sa.Index("ix_outbox_unpublished", table.c.id, postgresql_where=table.c.published_at.is_(None))
    return table


def notify_channel(schema: str) -> str:
    return f"{schema}_outbox"


class UnitOfWork:
    """One database transaction, with an outbox to publish events atomically with the writes.

    Usage::

        async with runtime.uow() as uow:
            await repo.insert(uow.conn, ...)
            uow.add_event(event)
            await uow.commit()

    Leaving the block without ``commit`` rolls back (an exception, or an early return).
    """

    def __init__(self, engine: AsyncEngine, schema: str, outbox: sa.Table, processed: sa.Table) -> None:
        self._engine = engine
        self.schema = schema
        self._outbox = outbox
        self._processed = processed
        self._conn: AsyncConnection | None = None
        self._tx: AsyncTransaction | None = None
        self._pending: list[dict[str, Any]] = []
        self.committed = False

    @property
    def conn(self) -> AsyncConnection:
        assert self._conn is not None, "UnitOfWork used outside its async with block"
        return self._conn

    async def __aenter__(self) -> UnitOfWork:
        self._conn = await self._engine.connect()
        self._tx = await self._conn.begin()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._tx is not None and self._tx.is_active and not self.committed:
                await self._tx.rollback()
        finally:
            if self._conn is not None:
                await self._conn.close()

    def add_event(
        self, event: CloudEvent[Any], *, priority: int | None = None, routing_key: str | None = None
    ) -> None:
        """Queue ``event`` to be written to the outbox at commit; ``routing_key`` defaults to the
        event type (``shared.topology.routing_key`` for the events routed by origin). Queued inside
        a span, the event carries its trace context through the outbox."""
        event = tracing.inject(event)
        self._pending.append(
            {
                "event_id": event.id,
                "routing_key": routing_key or event.type,
                "body": event.model_dump_json().encode(),
                "priority": priority,
            }
        )

    async def mark_processed(self, consumer: str, event_id: str) -> bool:
        """Record that ``consumer`` applied ``event_id``; False if it already had (a redelivery)."""
        stmt = (
            pg.insert(self._processed)
            .values(consumer=consumer, event_id=event_id)
            .on_conflict_do_nothing()
            .returning(self._processed.c.event_id)
        )
        return (await self.conn.execute(stmt)).first() is not None

    async def commit(self) -> None:
        if len(self._pending) == 1:
            await self.conn.execute(sa.insert(self._outbox), self._pending)
        elif self._pending:
            # one INSERT over arrays: an executemany runs the statement once per row (a claim
            # of 2,000 schedules spent a tenth of its time here)
            await self.conn.execute(
                sa.text(
                    f"INSERT INTO {self._outbox.fullname} (event_id, routing_key, body, priority) "
                    "SELECT * FROM unnest(CAST(:event_ids AS text[]), CAST(:routing_keys AS text[]), "
                    "CAST(:bodies AS bytea[]), CAST(:priorities AS smallint[]))"
                ),
                {
                    "event_ids": [p["event_id"] for p in self._pending],
                    "routing_keys": [p["routing_key"] for p in self._pending],
                    "bodies": [p["body"] for p in self._pending],
                    "priorities": [p["priority"] for p in self._pending],
                },
            )
        if self._pending:
            # NOTIFY is delivered at commit: the relay wakes only when the rows are visible.
            await self.conn.execute(sa.select(sa.func.pg_notify(notify_channel(self.schema), "")))
            self._pending = []
        assert self._tx is not None
        await self._tx.commit()
        self.committed = True


_TRANSIENT_ASYNCPG = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
)


def is_transient_db_error(exc: BaseException) -> bool:
    """True for errors that a retry can cure: the database is away, restarting or contended."""
    if isinstance(exc, (ConnectionError, OSError, asyncio.TimeoutError, *_TRANSIENT_ASYNCPG)):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return isinstance(exc.orig, (*_TRANSIENT_ASYNCPG, OSError)) or is_transient_db_error(
            getattr(exc.orig, "__cause__", None) or Exception()
        )
    if isinstance(exc, (sa_exc.InterfaceError, sa_exc.OperationalError)):
        return True
    return False


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    stopping: asyncio.Event | None = None,
    max_delay: float = 10.0,
) -> T:
    """Run ``operation`` until it succeeds or fails for a reason a retry cannot cure.

    A consumer holding a message while the database is away keeps it unacked and retries here,
    instead of rejecting (which would dead-letter an accepted message) or spinning.
    """
    delay = 0.2
    while True:
        try:
            return await operation()
        except Exception as exc:
            if not is_transient_db_error(exc) or (stopping is not None and stopping.is_set()):
                raise
            log.warning("database unavailable, retrying", what=what, error=str(exc)[:200], delay=delay)
            await asyncio.sleep(delay)
            delay = min(max_delay, delay * 2)
