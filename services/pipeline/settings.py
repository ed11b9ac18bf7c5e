from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import HeraldSettings

#: the agents that can be model-backed (retrieval is SQL)
MODEL_AGENTS = ("order_builder", "writer", "editor", "order_parser")


class PipelineSettings(HeraldSettings):
    """``PIPELINE_…`` (``HERALD_…`` as fallback). With no ``llm_base_url`` every agent is offline."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_", extra="ignore")
    service_name: ClassVar[str] = "pipeline"

    port: int = 8003
    sender_url: str = Field(
        # the sender's default port (services/sender/settings.py, herald/services.py) on this host
        default="http://127.0.0.1:8004",
        pattern=r"^https?://",
        description="Base URL of the sender: a rule's catalogue template is checked there "
        "(GET /v1/templates?name=&language= with the caller's key).",
    )
    sender_timeout_seconds: float = Field(
        default=5.0, gt=0, description="A template check the sender has not answered within this time is 503."
    )
    tenant_events_retention_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="Days a tenant event (tenant_events: received or refused, with why) is kept; the "
        "periodic prune deletes older ones. It is also the dedupe record: an event redelivered later "
        "is recorded again.",
    )
    tenant_events_prune_seconds: float = Field(
        default=3600.0, ge=0, description="Seconds between retention prunes of tenant_events (0: never)."
    )
    tenant_events_prune_batch: int = Field(
        default=5000, ge=1, le=100_000, description="Rows the prune deletes per transaction."
    )
    llm_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible API root, e.g. https://api.openai.com/v1 or "
        "http://127.0.0.1:11434/v1 (Ollama). Unset: the offline writer and editor.",
    )
    llm_api_key: SecretStr = Field(
        default=SecretStr(""), description="Bearer key; most local servers take any."
    )
    llm_model: str = Field(default="gpt-4o-mini", description="Model of every agent without an override.")
    llm_model_order_builder: str | None = Field(
        default=None, description="'offline' keeps the agent offline."
    )
    llm_model_writer: str | None = Field(default=None, description="'offline' keeps the agent offline.")
    llm_model_editor: str | None = Field(default=None, description="'offline' keeps the agent offline.")
    llm_model_order_parser: str | None = Field(
        default=None,
        description="Reads an inbound order's platform, length, tone and topic; 'offline' keeps the "
        "rule-based parser.",
    )
    llm_timeout_seconds: float = Field(default=60.0, gt=0, description="Per HTTP attempt.")
    llm_concurrency: int = Field(default=8, ge=1, description="Model calls in flight, all agents together.")
    llm_max_attempts: int = Field(default=4, ge=1, description="Attempts per call on 429/5xx/timeouts.")
    llm_backoff_seconds: float = Field(default=0.5, ge=0, description="First backoff; doubles, with jitter.")
    llm_retry_after_cap_seconds: float = Field(
        default=30.0, ge=0, description="Longest wait a Retry-After header can impose."
    )

    def model_for(self, agent: str) -> str | None:
        """The model an agent calls, or None when it runs offline."""
        if not self.llm_base_url:
            return None
        override = getattr(self, f"llm_model_{agent}", None)
        model = override or self.llm_model
        return None if model == "offline" else model
