"""The body of every Alembic ``env.py``: one environment per schema, each with its own
``alembic_version`` table inside that schema, so a schema's migrations never depend on another's.

Which schemas exist and where their folders are is the entry package's business
(``herald/migrate.py``); this module knows none of them.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

#: one PostgreSQL advisory lock serialises concurrent runs (a compose ``migrate`` service and a
#: Kubernetes Job started twice must not race); any constant shared by all migrate runs
_LOCK_ID = 0x4E52414C44  # "HERALD"-ish


def run_env(metadata: sa.MetaData, schema: str) -> None:
    """Body of every migrations/env.py: migrate ``schema`` online through asyncpg."""
    from alembic import context

    url = context.config.get_main_option("sqlalchemy.url")

    def include_name(name: str | None, type_: str, _parent: object) -> bool:
        return type_ != "schema" or name == schema

    def do_run(connection: sa.Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=True,
            include_name=include_name,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    if context.is_offline_mode():
        context.configure(
            url=url,
            target_metadata=metadata,
            version_table_schema=schema,
            literal_binds=True,
            include_schemas=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return

    async def run() -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": _LOCK_ID})
                await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                await conn.commit()
                await conn.run_sync(do_run)
                await conn.commit()
                await conn.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": _LOCK_ID})
        finally:
            await engine.dispose()

    asyncio.run(run())
