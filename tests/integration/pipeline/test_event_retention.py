"""Retention of tenant events on real PostgreSQL: the prune deletes the rows older than
PIPELINE_TENANT_EVENTS_RETENTION_DAYS in batches and keeps the newer ones; the pipeline's
periodic loop does it by itself."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from devtools.database import create_migrated_database, drop_database
from services.pipeline import retention
from services.pipeline.app import build
from services.pipeline.event_types import tenant_events
from services.pipeline.settings import PipelineSettings
from shared.crypto import SecretBox
from tests.conftest import Infra

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def database_url(infra: Infra) -> Iterator[str]:
    name, url = create_migrated_database(infra.database_url, "herald_retention")
    try:
        yield url
    finally:
        drop_database(infra.database_url, name)


def settings_for(database_url: str, infra: Infra, **kw: Any) -> PipelineSettings:
    return PipelineSettings(
        database_url=database_url,
        amqp_url=infra.amqp_url,
        encryption_keys=SecretBox.generate_key(),
        secret_key=uuid.uuid4().hex,
        environment="test",
        **kw,
    )


@pytest.fixture
async def runtime(database_url: str, infra: Infra) -> AsyncIterator[Any]:
    runtime, _ = build(settings_for(database_url, infra, tenant_events_prune_seconds=0.2))
    try:
        yield runtime
    finally:
        await runtime.engine.dispose()


async def add_events(runtime: Any, tenant_id: uuid.UUID, ages_days: list[float], now: datetime) -> list[str]:
    keys = [f"test:{uuid.uuid4().hex}" for _ in ages_days]
    async with runtime.engine.begin() as conn:
        await conn.execute(
            sa.insert(tenant_events),
            [
                {
                    "id": uuid.uuid4(),
                    "tenant_id": tenant_id,
                    "name": "ticket.sold",
                    "event_key": key,
                    "status": "received",
                    "data": {"age_days": age},
                    "received_at": now - timedelta(days=age),
                }
                for key, age in zip(keys, ages_days, strict=True)
            ],
        )
    return keys


async def kept(runtime: Any, keys: list[str]) -> set[str]:
    async with runtime.engine.connect() as conn:
        q = sa.select(tenant_events.c.event_key).where(tenant_events.c.event_key.in_(keys))
        return set((await conn.execute(q)).scalars())


async def test_the_prune_deletes_events_older_than_the_window_in_batches_and_keeps_newer_ones(runtime: Any):
    tenant_a, tenant_b = uuid.uuid4(), uuid.uuid4()
    old = await add_events(runtime, tenant_a, [30.01, 31, 45, 90, 400], NOW)
    old += await add_events(runtime, tenant_b, [60], NOW)
    new = await add_events(runtime, tenant_a, [0, 1, 29.9], NOW)
    new += await add_events(runtime, tenant_b, [10], NOW)

    deleted = await retention.prune(runtime.engine, retention_days=30, batch=2, now=NOW)

    assert deleted == len(old)  # four batches: 2 + 2 + 2 + 0
    assert await kept(runtime, old + new) == set(new)
    assert await retention.prune(runtime.engine, retention_days=30, batch=2, now=NOW) == 0


async def test_the_pipelines_periodic_prune_removes_expired_events_by_itself(runtime: Any):
    assert "tenant-events-prune" in [name for name, _ in runtime._loops]
    now = datetime.now(UTC)
    tenant = uuid.uuid4()
    old = await add_events(runtime, tenant, [31, 365], now)
    new = await add_events(runtime, tenant, [0, 29], now)
    loop = asyncio.create_task(retention.prune_forever(runtime))
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while (left := await kept(runtime, old + new)) != set(new):
            assert asyncio.get_running_loop().time() < deadline, f"still there: {left - set(new)}"
            await asyncio.sleep(0.05)
    finally:
        runtime.stopping.set()
        await asyncio.wait_for(loop, 5)
    assert await kept(runtime, new) == set(new)


def test_the_retention_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIPELINE_TENANT_EVENTS_RETENTION_DAYS", "7")
    assert PipelineSettings(environment="development").tenant_events_retention_days == 7
    monkeypatch.delenv("PIPELINE_TENANT_EVENTS_RETENTION_DAYS")
    assert PipelineSettings(environment="development").tenant_events_retention_days == 30
