from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import DEV_SECRET_KEY, HeraldSettings


class ConsoleSettings(HeraldSettings):
    """``CONSOLE_*`` (``HERALD_*`` as fallback). The console holds no data: it needs the four
    services' addresses and a secret to sign its session cookies with."""

    model_config = SettingsConfigDict(env_prefix="CONSOLE_", extra="ignore")
    service_name: ClassVar[str] = "console"

    port: int = 8005
    ingest_url: str = Field(default="http://127.0.0.1:8001", description="Ingest's HTTP API")
    scheduler_url: str = Field(default="http://127.0.0.1:8002", description="Scheduler's HTTP API")
    pipeline_url: str = Field(default="http://127.0.0.1:8003", description="Pipeline's HTTP API")
    sender_url: str = Field(default="http://127.0.0.1:8004", description="Sender's HTTP API")
    session_hours: float = Field(default=12.0, gt=0, description="A sign-in lasts this long.")
    cookie_secure: bool = Field(
        default=False, description="Mark cookies Secure (set true when the console is served over HTTPS)."
    )
    api_timeout_seconds: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> ConsoleSettings:
        # the console signs cookies with secret_key (CONSOLE_SECRET_KEY); it encrypts nothing at
        # rest, so the encryption keys are not its concern
        if self.environment != "development" and self.secret_key.get_secret_value() == DEV_SECRET_KEY:
            raise ValueError(
                "CONSOLE_SECRET_KEY (or HERALD_SECRET_KEY) still holds the public development default "
                f"while environment is {self.environment!r}: set a random secret (e.g. "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        return self

    def url_of(self, service: str) -> str:
        """Base URL of one of the four services (``sender`` …), without a trailing slash."""
        return str(getattr(self, f"{service}_url")).rstrip("/")
