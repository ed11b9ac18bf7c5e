"""Typed settings shared by every Herald service.

Each service has its own env prefix (``SENDER_``, ``SCHEDULER_`` …). Values common to all
services are read from ``HERALD_`` as a fallback, so one ``HERALD_DATABASE_URL`` serves all four
while ``SENDER_DATABASE_URL`` can still override it for one service.

Invariant: outside ``development`` a service refuses to start with a default secret.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

# Published development defaults. They are public (they are in this file), so they must never
# protect real data: the validator below refuses them outside development.
DEV_ENCRYPTION_KEY = "ZGV2LW9ubHktaGVyYWxkLWtleS1kby1ub3QtdXNlLSE="
DEV_SECRET_KEY = "dev-only-herald-secret-do-not-use"

Environment = Literal["development", "test", "production"]


class HeraldSettings(BaseSettings):
    """Settings every service has. Subclasses set ``model_config['env_prefix']``."""

    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore", case_sensitive=False)

    #: the shared fallback prefix read after the service's own prefix
    common_prefix: ClassVar[str] = "HERALD_"
    #: the service name (``sender`` …); ``platform`` for tools that are not a service
    service_name: ClassVar[str] = "platform"

    environment: Environment = "development"
    database_url: str = "postgresql+asyncpg://herald:herald@127.0.0.1:5432/herald"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    encryption_keys: SecretStr = Field(
        default=SecretStr(DEV_ENCRYPTION_KEY),
        description="Comma-separated Fernet keys; the first encrypts, all decrypt (key rotation).",
    )
    secret_key: SecretStr = Field(
        default=SecretStr(DEV_SECRET_KEY),
        description="HMAC key for keyed lookups (phone-number hashes). Changing it orphans lookups.",
    )
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    host: str = "0.0.0.0"
    port: int = 8000
    reuse_port: bool = Field(
        default=False,
        description="Bind with SO_REUSEPORT, so several processes of one service can share the port "
        "on one machine (the kernel spreads connections between them).",
    )
    graceful_timeout_seconds: float = Field(
        default=20.0, gt=0, description="Time given to in-flight messages on SIGTERM before exit."
    )
    prefetch_count: int = Field(
        default=16,
        ge=1,
        description="Unacked messages per consumer: enough to hide database latency; more only "
        "competes for the event loop with the outbox relay and the HTTP handlers.",
    )
    db_pool_size: int = Field(default=10, ge=1)
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Larger request bodies get 413 (shared.door.DoorGuard)."
    )
    outbox_batch_size: int = Field(default=200, ge=1)
    outbox_poll_seconds: float = Field(
        default=2.0, gt=0, description="Fallback poll of the outbox; NOTIFY wakes the relay at once."
    )

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> HeraldSettings:
        if self.environment == "development":
            return self
        prefix = self.model_config.get("env_prefix", self.common_prefix)
        defaults = []
        if DEV_ENCRYPTION_KEY in self.encryption_keys.get_secret_value().split(","):
            defaults.append(f"{self.common_prefix}ENCRYPTION_KEYS")
        if self.secret_key.get_secret_value() == DEV_SECRET_KEY:
            defaults.append(f"{self.common_prefix}SECRET_KEY")
        if defaults:
            raise ValueError(
                f"{', '.join(defaults)} still hold the public development default while "
                f"environment is {self.environment!r}: set real secrets (generate a Fernet key with "
                "`herald keys generate`), or set HERALD_ENVIRONMENT=development for local use only "
                f"(prefix {prefix} overrides per service)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("env_prefix") != cls.common_prefix:
            sources.append(EnvSettingsSource(settings_cls, env_prefix=cls.common_prefix))
        sources += [dotenv_settings, file_secret_settings]
        return tuple(sources)
