"""Real infrastructure for every test that needs it, from one fixture.

``infra``: HERALD_TEST_DATABASE_URL + HERALD_TEST_AMQP_URL if set; else testcontainers where a
Docker engine answers; else the machine's own rabbitmq-server and PostgreSQL started under a
temporary folder on free ports (devtools.infra). Each session gets a fresh database, migrated
with the real migrations, and dropped at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.database import create_migrated_database, drop_database
from devtools.infra import DockerInfra, LocalInfra, resolve_infra
from devtools.processes import herald_env


@dataclass
class Infra:
    database_url: str
    amqp_url: str
    handle: LocalInfra | DockerInfra | None

    def service_env(self, **extra: str) -> dict[str, str]:
        """Environment for a Herald process on this infrastructure (``test``: real secrets, as
        production would configure it)."""
        return herald_env(self.database_url, self.amqp_url, **extra)

    @property
    def can_stop_broker(self) -> bool:
        return self.handle is not None


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    urls, handle = resolve_infra(Path(tmp_path_factory.mktemp("infra")))
    try:
        name, db_url = create_migrated_database(urls.database_url, "herald_test")
        try:
            yield Infra(database_url=db_url, amqp_url=urls.amqp_url, handle=handle)
        finally:
            drop_database(urls.database_url, name)
    finally:
        if handle is not None:
            handle.stop()
