from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import HeraldSettings


class IngestSettings(HeraldSettings):
    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore")
    service_name: ClassVar[str] = "ingest"

    port: int = 8001
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Larger request bodies get 413.")
