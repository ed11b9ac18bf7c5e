"""Tenants and their API keys.

The ``tenancy`` schema is the one table set every service reads: each ``/v1`` request carries
``Authorization: Bearer <key>`` and is scoped to the key's tenant. Only the ``herald tenant``
command writes it. Keys are 256-bit random tokens, stored as SHA-256 (a slow hash buys nothing
for a token with that much entropy and would cost every request).
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from fastapi import HTTPException, Request, status
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncEngine

SCHEMA = "tenancy"
metadata = sa.MetaData(schema=SCHEMA)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column(
        "tenant_id", pg.UUID(as_uuid=True), sa.ForeignKey(tenants.c.id, ondelete="CASCADE"), nullable=False
    ),
    sa.Column("key_hash", sa.Text, nullable=False, unique=True),
    sa.Column("prefix", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

KEY_PREFIX = "hk_"


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True)
class Tenant:
    id: uuid.UUID
    name: str


class TenantExists(Exception):
    pass


async def create_tenant(engine: AsyncEngine, name: str) -> tuple[Tenant, str]:
    """Create a tenant and its first API key; the key is returned once and never stored."""
    api_key = KEY_PREFIX + secrets.token_urlsafe(32)
    tenant = Tenant(id=uuid.uuid4(), name=name)
    async with engine.begin() as conn:
        exists = (await conn.execute(sa.select(tenants.c.id).where(tenants.c.name == name))).first()
        if exists:
            raise TenantExists(f"a tenant named {name!r} already exists")
        await conn.execute(sa.insert(tenants).values(id=tenant.id, name=name))
        await conn.execute(
            sa.insert(api_keys).values(
                id=uuid.uuid4(), tenant_id=tenant.id, key_hash=hash_key(api_key), prefix=api_key[:7]
            )
        )
    return tenant, api_key


class TenantAuth:
    """FastAPI dependency: resolves the bearer key to its tenant or answers 401.

    Successful look-ups are cached for ``ttl`` seconds so that a busy endpoint does not query the
    database per request; a revoked key stops working within that time.
    """

    def __init__(self, engine: AsyncEngine, ttl: float = 30.0) -> None:
        self._engine = engine
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Tenant]] = {}

    async def __call__(self, request: Request) -> Tenant:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized(
                "missing API key: send 'Authorization: Bearer <key>' (create one with `herald tenant create NAME`)"
            )
        digest = hash_key(token.strip())
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached and cached[0] > now:
            return cached[1]
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(tenants.c.id, tenants.c.name)
                    .join(api_keys, api_keys.c.tenant_id == tenants.c.id)
                    .where(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
                )
            ).first()
        if row is None:
            raise _unauthorized("invalid or revoked API key")
        tenant = Tenant(id=row.id, name=row.name)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self._ttl, tenant)
        return tenant


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=message,
        headers={"WWW-Authenticate": "Bearer"},
    )
