"""PostgreSQL LISTEN as an asyncio wake-up: loops sleep until a commit notifies them, instead of
polling. A lost connection wakes the waiter too, so it re-checks (and re-listens) at once."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class Wakeup:
    def __init__(self, engine: AsyncEngine, channel: str) -> None:
        self._engine = engine
        self._channel = channel
        self._event = asyncio.Event()
        self._conn: AsyncConnection | None = None

    def set(self) -> None:
        self._event.set()

    async def ensure_listening(self) -> None:
        """(Re)open the LISTEN connection; raises if the database is unreachable."""
        if self._conn is not None and not self._conn.closed:
            return
        conn = await self._engine.connect()
        try:
            driver = (await conn.get_raw_connection()).driver_connection
            await driver.add_listener(self._channel, lambda *_: self._event.set())
            driver.add_termination_listener(lambda *_: self._lost())
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    def _lost(self) -> None:
        self._conn = None
        self._event.set()

    async def wait(self, max_seconds: float) -> None:
        """Sleep until notified or ``max_seconds`` pass."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout=max(0.0, max_seconds))
        self._event.clear()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()
