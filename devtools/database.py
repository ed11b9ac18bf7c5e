"""Throw-away databases on a PostgreSQL server: one per test session or benchmark run, migrated
with the real migrations, so runs never see each other's rows."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from sqlalchemy.engine import make_url


def asyncpg_dsn(url: str, database: str | None = None) -> str:
    """A SQLAlchemy URL (``postgresql+asyncpg://…``) as a DSN asyncpg accepts."""
    u = make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


async def _execute_on_server(server_url: str, sql: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(server_url, "postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_migrated_database(server_url: str, prefix: str) -> tuple[str, str]:
    """Create ``<prefix>_<random>`` on the server of ``server_url`` and migrate every schema.

    Returns (name, SQLAlchemy URL of the new database). Call outside a running event loop (the
    migrations run their own)."""
    from herald.migrate import upgrade_all

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_execute_on_server(server_url, f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    upgrade_all(url)
    return name, url


def drop_database(server_url: str, name: str) -> None:
    asyncio.run(_execute_on_server(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
