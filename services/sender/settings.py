from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import HeraldSettings


class SenderSettings(HeraldSettings):
    model_config = SettingsConfigDict(env_prefix="SENDER_", extra="ignore")
    service_name: ClassVar[str] = "sender"

    port: int = 8004
    default_provider: str = Field(
        default="sandbox", description="Provider used when a message names no channel."
    )
    sending_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A message left in 'sending' longer than this is presumed orphaned by a crash and reconciled.",
    )
