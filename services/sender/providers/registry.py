"""Which adapter serves which provider name, imported lazily (an adapter's module is loaded the
first time a channel of its provider sends), plus the per-provider channel settings schema."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

ADAPTERS: dict[str, str] = {
    "meta": "services.sender.providers.meta_cloud:MetaCloudProvider",
    "sandbox": "services.sender.providers.sandbox:SandboxProvider",
    "chatwoot": "services.sender.providers.chatwoot:ChatwootProvider",
    "evolution": "services.sender.providers.evolution:EvolutionProvider",
    "waha": "services.sender.providers.waha:WahaProvider",
}

PROVIDERS = tuple(ADAPTERS)


@dataclass(frozen=True)
class ProviderSpec:
    """What ``POST /v1/channels`` requires per provider: settings and credentials keys, defaults."""

    default_base_url: str | None
    settings: tuple[str, ...] = ()
    credentials: tuple[str, ...] = ()
    setting_defaults: tuple[tuple[str, str], ...] = ()
    #: settings a channel may have (meta: ``waba_id``, the WhatsApp Business Account of its templates)
    optional_settings: tuple[str, ...] = ()
    #: whether WhatsApp's 24-hour customer-service window applies (official Cloud API only)
    enforce_window: bool = False


SPECS: dict[str, ProviderSpec] = {
    "meta": ProviderSpec(
        "https://graph.facebook.com",
        settings=("phone_number_id", "api_version"),
        optional_settings=("waba_id",),
        credentials=("access_token",),
        setting_defaults=(("api_version", "v23.0"),),
        enforce_window=True,
    ),
    "chatwoot": ProviderSpec(
        "https://app.chatwoot.com", settings=("account_id", "inbox_id"), credentials=("api_access_token",)
    ),
    "evolution": ProviderSpec("http://localhost:8080", settings=("instance",), credentials=("api_key",)),
    "waha": ProviderSpec(
        "http://localhost:3000",
        settings=("session",),
        credentials=("api_key",),
        setting_defaults=(("session", "default"),),
    ),
    "sandbox": ProviderSpec("sandbox:"),
}


def load_adapter_class(provider: str) -> Any:
    """The adapter class for ``provider``; raises ImportError if its module is not installed."""
    module_name, _, attr = ADAPTERS[provider].partition(":")
    return getattr(importlib.import_module(module_name), attr)
