from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import HeraldSettings


class SchedulerSettings(HeraldSettings):
    model_config = SettingsConfigDict(env_prefix="SCHEDULER_", extra="ignore")
    service_name: ClassVar[str] = "scheduler"

    port: int = 8002
    claim_batch_size: int = Field(default=500, ge=1, description="Due rows claimed per transaction.")
    max_sleep_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest sleep of the claim loop when nothing is due (a safety net; "
        "new schedules wake it through NOTIFY).",
    )
    grace_seconds: int = Field(
        default=3600,
        ge=0,
        description="An occurrence missed (downtime) by less than this fires once; an older one is "
        "recorded missed. A scheduled message can set its own grace_seconds.",
    )
    default_language: str = Field(
        default="en_US",
        description="Template language of a reminder when neither policy nor attendee names one.",
    )
