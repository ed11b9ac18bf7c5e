from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import HeraldSettings


class PipelineSettings(HeraldSettings):
    model_config = SettingsConfigDict(env_prefix="PIPELINE_", extra="ignore")
    service_name: ClassVar[str] = "pipeline"

    port: int = 8003
