"""GET /v1/analytics/drafts: the tenant's drafts per local day (asked for, ready, failed), every day
of the period, beside the sender's delivery analytics; bad queries get a 422 naming the parameter."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from devtools.database import asyncpg_dsn
from devtools.processes import ServiceProcess, free_port, herald_cli
from tests.conftest import Infra

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pipeline(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, dict]]:
    env = infra.service_env()
    process = ServiceProcess(
        "pipeline", free_port(), env, Path(tmp_path_factory.mktemp("pipeline")) / "p.log"
    )
    process.start()
    try:
        process.wait_ready()
        yield process, env
    finally:
        process.terminate()


async def insert_drafts(database_url: str, tenant_id: str, rows: list[tuple[str, datetime]]) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.executemany(
            "INSERT INTO pipeline.drafts (id, tenant_id, user_id, job_key, status, created_at, updated_at) "
            "VALUES ($1, $2, 'u1', $3, $4, $5, $5)",
            [(uuid.uuid4(), uuid.UUID(tenant_id), uuid.uuid4().hex, s, at) for s, at in rows],
        )
    finally:
        await conn.close()


def test_drafts_per_local_day(infra: Infra, pipeline: tuple[ServiceProcess, dict]) -> None:
    process, env = pipeline
    tenant = json.loads(herald_cli(env, "tenant", "create", f"drafts-{uuid.uuid4().hex[:6]}", "--json"))
    other = json.loads(herald_cli(env, "tenant", "create", f"drafts-{uuid.uuid4().hex[:6]}", "--json"))
    # 02:30 UTC on 2 March is still 1 March in São Paulo (UTC-3)
    asyncio.run(
        insert_drafts(
            infra.database_url,
            tenant["tenant_id"],
            [
                ("ready", datetime(2026, 3, 2, 2, 30, tzinfo=UTC)),
                ("failed", datetime(2026, 3, 2, 12, 0, tzinfo=UTC)),
                ("ready", datetime(2026, 3, 2, 13, 0, tzinfo=UTC)),
                ("running", datetime(2026, 3, 2, 14, 0, tzinfo=UTC)),
            ],
        )
    )
    asyncio.run(
        insert_drafts(
            infra.database_url, other["tenant_id"], [("ready", datetime(2026, 3, 2, 12, tzinfo=UTC))]
        )
    )
    client = httpx.Client(
        base_url=process.url, headers={"Authorization": f"Bearer {tenant['api_key']}"}, timeout=10
    )
    r = client.get(
        "/v1/analytics/drafts", params={"from": "2026-03-01", "to": "2026-03-03", "tz": "America/Sao_Paulo"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["groups"] == [
        {"key": "2026-03-01", "drafts": 1, "ready": 1, "failed": 0},
        {"key": "2026-03-02", "drafts": 3, "ready": 1, "failed": 1},
        {"key": "2026-03-03", "drafts": 0, "ready": 0, "failed": 0},
    ]
    for params, field in [
        ({"tz": "Nowhere/Land"}, "tz"),
        ({"from": "2026-03-05", "to": "2026-03-01"}, "from"),
    ]:
        bad = client.get("/v1/analytics/drafts", params=params)
        assert bad.status_code == 422 and bad.json()["message"].startswith(f"{field}:"), bad.text
