"""The four services as real processes (``herald run …``), against the session's infrastructure.

Every e2e module gets a database of its own (the ``infra`` fixture below overrides the session's):
service processes work on everything their database holds — queued messages, due schedules, open
conversations another module left — so a module sharing one would pay for the leftovers of all
the suites before it, and its timings would depend on the order the suite ran in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import httpx
import pytest

from devtools.database import create_migrated_database, drop_database
from devtools.processes import ServiceProcess, free_port, herald_cli, ingest_env, pipeline_env, wait_for
from herald.services import SERVICES
from shared.topology import SUBSCRIPTIONS
from tests.conftest import Infra

__all__ = ["Herald", "ServiceProcess", "herald_cli", "wait_for"]


@dataclass
class Herald:
    infra: Infra
    services: dict[str, ServiceProcess]
    env: dict[str, str]
    tmp: Path
    _keys: dict[str, str] = field(default_factory=dict)

    def create_tenant(self, name: str) -> str:
        data = json.loads(herald_cli(self.env, "tenant", "create", name, "--json"))
        self._keys[name] = data["api_key"]
        return data["api_key"]

    def client(self, service: str, api_key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.services[service].url, headers=headers, timeout=10)

    def stop(self) -> None:
        for svc in self.services.values():
            if svc.proc is not None and svc.proc.poll() is None:
                svc.terminate()


async def purge_service_queues(amqp_url: str) -> None:
    """Empty the services' durable queues: what earlier suites published and nobody consumed
    (inbound events, statuses, requests of tenants whose database is gone) would otherwise be
    worked through by this module's processes while its tests run."""
    connection = await aio_pika.connect(amqp_url)
    try:
        for sub in SUBSCRIPTIONS:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(sub.queue_name, passive=True)
                await queue.purge()
            except aio_pika.exceptions.ChannelClosed:
                pass  # not declared yet: nothing to purge
            finally:
                if not channel.is_closed:
                    await channel.close()
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def infra(infra: Infra) -> Iterator[Infra]:
    """The session's broker and PostgreSQL server, with a freshly migrated database for this module."""
    name, url = create_migrated_database(infra.database_url, "herald_e2e")
    asyncio.run(purge_service_queues(infra.amqp_url))
    try:
        yield Infra(database_url=url, amqp_url=infra.amqp_url, handle=infra.handle)
    finally:
        drop_database(infra.database_url, name)


@pytest.fixture(scope="module")
def herald(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Herald]:
    tmp = Path(tmp_path_factory.mktemp("herald"))
    ports = {name: free_port() for name in SERVICES}
    env = infra.service_env(
        SENDER_SENDING_LEASE_SECONDS="3",
        HERALD_GRACEFUL_TIMEOUT_SECONDS="10",
        **ingest_env(ports["sender"], pipeline_port=ports["pipeline"]),
        **pipeline_env(ports["sender"]),
    )
    services = {name: ServiceProcess(name, ports[name], env, tmp / f"{name}.log") for name in SERVICES}
    system = Herald(infra=infra, services=services, env=env, tmp=tmp)
    for svc in services.values():
        svc.start()
    try:
        for svc in services.values():
            svc.wait_ready()
        yield system
    finally:
        system.stop()
