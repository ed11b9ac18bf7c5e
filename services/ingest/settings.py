from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import HeraldSettings


class IngestSettings(HeraldSettings):
    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore")
    service_name: ClassVar[str] = "ingest"

    port: int = 8001
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Larger request bodies get 413.")
    webhook_pool_size: int = Field(
        default=20, ge=1, description="asyncpg connections of the webhook hot path (one statement each)."
    )
    webhook_timeout_seconds: float = Field(
        default=4.0,
        gt=0,
        description="A webhook not stored within this time gets 503, inside Chatwoot's 5 s timeout (it does "
        "not retry, Meta/Evolution/WAHA do; a store that committed anyway makes the retry a duplicate).",
    )
    chatwoot_max_skew_seconds: float = Field(
        default=300, gt=0, description="X-Chatwoot-Timestamp further than this from now is a replay: 401."
    )
    cache_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How long a replica keeps a webhook source, a tenant's keywords and contact map in memory.",
    )
    sender_url: str = Field(
        # the sender's default port (services/sender/settings.py, herald/services.py) on this host
        default="http://127.0.0.1:8004",
        pattern=r"^https?://",
        description="Base URL of the sender: a webhook source's channel_id is checked there "
        "(GET /v1/channels/{id} with the caller's key).",
    )
    sender_timeout_seconds: float = Field(
        default=5.0, gt=0, description="A channel check the sender has not answered within this time is 503."
    )
    pipeline_url: str = Field(
        # the pipeline's default port (services/pipeline/settings.py, herald/services.py) on this host
        default="http://127.0.0.1:8003",
        pattern=r"^https?://",
        description="Base URL of the pipeline: an event of a tenant's own type is checked against the "
        "type's JSON Schema, asked there (GET /v1/event-types/{name} with the caller's key).",
    )
    pipeline_timeout_seconds: float = Field(
        default=5.0, gt=0, description="An event type the pipeline has not answered within this time is 503."
    )
    relay_coalesce_seconds: float = Field(
        default=0.25, ge=0, description="Webhook commits within this time wake the outbox relay once."
    )
    # --- media ---
    blob_store: Literal["local", "s3", "gcs"] = "local"
    blob_dir: Path = Path(".herald/blobs")
    blob_bucket: str = ""
    blob_prefix: str = "herald/"
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    media_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1, description="Larger media are not stored.")
    media_types: str = Field(
        default="image/,audio/,video/,application/pdf,application/vnd.,application/msword,text/plain",
        description="Comma-separated MIME type prefixes accepted into the blob store.",
    )
    media_attempts: int = Field(
        default=5, ge=1, description="Downloads tried before the message is published without its media."
    )
    media_poll_seconds: float = Field(default=5.0, gt=0)
    media_retry_seconds: float = Field(
        default=2.0, gt=0, description="First retry delay; doubles per attempt."
    )
    transcription_url: str | None = Field(
        default=None, description="OpenAI-compatible base URL (…/v1); voice notes are transcribed when set."
    )
    transcription_api_key: SecretStr = SecretStr("")
    transcription_model: str = "whisper-1"
