"""The sender's dependencies, given explicitly to every use case (no globals, no hidden state)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport
from pydantic import TypeAdapter

from services.sender.providers.base import ChannelConfig
from services.sender.providers.registry import SPECS, load_adapter_class
from services.sender.providers.sandbox import SandboxProvider
from services.sender.providers.store import PostgresMappingStore
from services.sender.settings import SenderSettings
from shared import tracing
from shared.crypto import lookup_hash
from shared.events import MessageContent
from shared.service import ServiceRuntime

#: a stored message's content (or fallback template), parsed back into the shared kinds
CONTENT = TypeAdapter(MessageContent)


@dataclass
class Sender:
    """Runtime (database, broker, secrets), settings, the provider adapters and two small caches:
    decrypted channel configurations (keyed by the row's ``updated_at``, so an edit is seen at
    once) and each tenant's default channel (5 s)."""

    runtime: ServiceRuntime
    settings: SenderSettings
    lease: timedelta
    http: httpx.AsyncClient | None = None
    _providers: dict[str, Any] = field(default_factory=dict)
    _configs: dict[tuple[uuid.UUID, datetime], ChannelConfig] = field(default_factory=dict)
    default_channels: dict[uuid.UUID, tuple[float, uuid.UUID]] = field(default_factory=dict)

    def hash_phone(self, phone: str) -> str:
        return lookup_hash(self.runtime.settings.secret_key.get_secret_value(), phone)

    def http_client(self) -> httpx.AsyncClient:
        if self.http is None:
            limits = httpx.Limits(
                max_connections=self.settings.http_max_connections,
                max_keepalive_connections=self.settings.http_max_connections,
            )
            self.http = httpx.AsyncClient(
                transport=AiohttpTransport(limits=limits),
                timeout=self.settings.http_timeout_seconds,
                # the provider call carries the CLIENT span's traceparent (only when tracing is on)
                event_hooks=tracing.http_event_hooks(),
            )
        return self.http

    def provider(self, name: str) -> Any:
        """The adapter for ``name`` (one per provider, shared by its channels)."""
        adapter = self._providers.get(name)
        if adapter is None:
            if name == "sandbox":
                adapter = SandboxProvider(self.runtime.engine, self.runtime.secrets)
            else:
                cls = load_adapter_class(name)
                adapter = cls(http=self.http_client(), store=PostgresMappingStore(self.runtime.engine))
            self._providers[name] = adapter
        return adapter

    def channel_config(self, row: Any) -> ChannelConfig:
        key = (row.id, row.updated_at)
        config = self._configs.get(key)
        if config is None:
            config = ChannelConfig(
                id=row.id,
                tenant_id=row.tenant_id,
                provider=row.provider,
                base_url=row.base_url or SPECS[row.provider].default_base_url or "",
                settings=dict(row.settings or {}),
                credentials=self.credentials(row),
            )
            self._configs = {k: v for k, v in self._configs.items() if k[0] != row.id}
            self._configs[key] = config
        return config

    def credentials(self, row: Any) -> dict[str, str]:
        """A channel row's credentials, decrypted (raises when the key that encrypted them is gone)."""
        return json.loads(self.runtime.secrets.decrypt(row.credentials_enc)) if row.credentials_enc else {}

    async def close(self) -> None:
        if self.http is not None:
            await self.http.aclose()
