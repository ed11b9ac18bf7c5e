"""Alembic migrations, one environment per schema, run as their own step (``herald migrate``).

Each schema (``tenancy`` and one per service) has its own migration folder and its own
``alembic_version`` table inside that schema, so a service's migrations never depend on another's.
A PostgreSQL advisory lock serialises concurrent runs (a compose ``migrate`` service and a
Kubernetes Job started twice must not race).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
#: schema → folder holding its env.py and versions/, in the order they are applied
MIGRATIONS: dict[str, Path] = {
    "tenancy": ROOT / "shared" / "migrations",
    "ingest": ROOT / "services" / "ingest" / "migrations",
    "scheduler": ROOT / "services" / "scheduler" / "migrations",
    "pipeline": ROOT / "services" / "pipeline" / "migrations",
    "sender": ROOT / "services" / "sender" / "migrations",
}
_LOCK_ID = 0x4E52414C44  # "HERALD"-ish; any constant shared by all migrate runs


def alembic_config(schema: str, database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS[schema]))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    cfg.attributes["schema"] = schema
    return cfg


def upgrade_all(database_url: str, revision: str = "head", schemas: list[str] | None = None) -> list[str]:
    done = []
    for schema in schemas or list(MIGRATIONS):
        command.upgrade(alembic_config(schema, database_url), revision)
        done.append(schema)
    return done


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
