import uuid

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from fastapi import HTTPException
from starlette.requests import Request

from herald.migrate import alembic_config
from shared.db import create_engine
from shared.tenancy import TenantAuth, TenantExists, api_keys, create_tenant, hash_key
from tests.conftest import Infra

pytestmark = pytest.mark.integration


def request_with(header: str | None) -> Request:
    headers = [(b"authorization", header.encode())] if header else []
    return Request({"type": "http", "headers": headers, "method": "GET", "path": "/"})


async def test_api_key_is_stored_hashed_and_resolves_to_its_tenant(infra: Infra):
    engine = create_engine(infra.database_url, pool_size=2)
    try:
        name = f"t-{uuid.uuid4().hex[:6]}"
        tenant, key = await create_tenant(engine, name)
        assert key.startswith("hk_") and len(key) > 40
        async with engine.connect() as conn:
            stored = (
                await conn.execute(sa.select(api_keys.c.key_hash).where(api_keys.c.tenant_id == tenant.id))
            ).scalar_one()
        assert stored == hash_key(key) and key not in stored

        auth = TenantAuth(engine)
        assert (await auth(request_with(f"Bearer {key}"))).id == tenant.id
        for bad in (None, "Bearer ", f"Basic {key}", "Bearer hk_wrong"):
            with pytest.raises(HTTPException) as info:
                await auth(request_with(bad))
            assert info.value.status_code == 401
        with pytest.raises(TenantExists):
            await create_tenant(engine, name)
    finally:
        await engine.dispose()


async def test_every_schema_is_migrated_to_head(infra: Infra):
    engine = create_engine(infra.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            for schema in ("tenancy", "ingest", "scheduler", "pipeline", "sender"):
                version = (
                    await conn.execute(sa.text(f'SELECT version_num FROM "{schema}".alembic_version'))
                ).scalar_one()
                # the head of that schema's own migration scripts (services add 0002_… and later)
                head = ScriptDirectory.from_config(
                    alembic_config(schema, infra.database_url)
                ).get_current_head()
                assert version == head, f"{schema} is at {version}, its migrations' head is {head}"
    finally:
        await engine.dispose()
