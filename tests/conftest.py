"""Real infrastructure for every test that needs it, from one fixture.

``infra``: HERALD_TEST_DATABASE_URL + HERALD_TEST_AMQP_URL if set; else testcontainers where a
Docker engine answers; else the machine's own rabbitmq-server and PostgreSQL started under a
temporary folder on free ports (devtools.infra). Each session gets a fresh database, migrated
with the real migrations, and dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from devtools.infra import DockerInfra, LocalInfra, resolve_infra
from shared.crypto import SecretBox


@dataclass
class Infra:
    database_url: str
    amqp_url: str
    handle: LocalInfra | DockerInfra | None
    encryption_keys: str
    secret_key: str

    def service_env(self, **extra: str) -> dict[str, str]:
        """Environment for a Herald process pointed at this infrastructure (non-development:
        real secrets, exactly as production would configure it)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("HERALD_", "SENDER_", "SCHEDULER_", "PIPELINE_", "INGEST_"))
        }
        env.update(
            HERALD_ENVIRONMENT="test",
            HERALD_DATABASE_URL=self.database_url,
            HERALD_AMQP_URL=self.amqp_url,
            HERALD_ENCRYPTION_KEYS=self.encryption_keys,
            HERALD_SECRET_KEY=self.secret_key,
            HERALD_LOG_LEVEL="INFO",
        )
        env.update(extra)
        return env

    @property
    def can_stop_broker(self) -> bool:
        return self.handle is not None


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _create_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(
        _asyncpg_dsn(make_url(server_url).set(database="postgres").render_as_string(hide_password=False))
    )
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(
        _asyncpg_dsn(make_url(server_url).set(database="postgres").render_as_string(hide_password=False))
    )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    from shared.migrate import upgrade_all

    state = Path(tmp_path_factory.mktemp("infra"))
    urls, handle = resolve_infra(state)
    name = f"herald_test_{uuid.uuid4().hex[:8]}"
    asyncio.run(_create_database(urls.database_url, name))
    db_url = make_url(urls.database_url).set(database=name).render_as_string(hide_password=False)
    upgrade_all(db_url)
    try:
        yield Infra(
            database_url=db_url,
            amqp_url=urls.amqp_url,
            handle=handle,
            encryption_keys=SecretBox.generate_key(),
            secret_key=uuid.uuid4().hex,
        )
    finally:
        try:
            asyncio.run(_drop_database(urls.database_url, name))
        finally:
            if handle is not None:
                handle.stop()
