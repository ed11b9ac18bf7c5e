"""The webhook pipeline: everything a provider webhook needs, built once by ``app.py`` and passed
explicitly to the routes, the fast path and the erasure handler.

``WebhookPipeline.process`` is the one place a webhook is verified, stored and answered.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from services.ingest import verify
from services.ingest.blobs import BlobStore, GcsBlobStore, LocalBlobStore, S3BlobStore
from services.ingest.media import MediaWorker
from services.ingest.settings import IngestSettings
from services.ingest.webhooks import (
    CoalescingWaker,
    Directory,
    Malformed,
    Source,
    WebhookStore,
    check,
    receive,
    record_rejection,
)
from shared.api import ApiError
from shared.db import is_transient_db_error
from shared.logging import get_logger
from shared.service import ServiceRuntime

log = get_logger(__name__)


def make_blob_store(settings: IngestSettings) -> BlobStore:
    if settings.blob_store == "s3":
        return S3BlobStore(
            settings.blob_bucket,
            settings.blob_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
        )
    if settings.blob_store == "gcs":
        return GcsBlobStore(settings.blob_bucket, settings.blob_prefix)
    return LocalBlobStore(settings.blob_dir)


class WebhookPipeline:
    """The directory of sources, the webhook store, the blob store and the media worker."""

    def __init__(self, runtime: ServiceRuntime, settings: IngestSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.directory = Directory(
            runtime.engine, runtime.secrets, settings.secret_key.get_secret_value(), settings.cache_seconds
        )
        self.store = WebhookStore(
            settings.database_url, settings.webhook_pool_size, settings.webhook_timeout_seconds
        )
        self.blobs = make_blob_store(settings)
        self.worker = MediaWorker(runtime, settings, self.blobs, settings.secret_key.get_secret_value())
        self.relay_waker = CoalescingWaker(runtime.relay.wake, settings.relay_coalesce_seconds)
        runtime.add_loop("media-worker", self.worker.run)
        runtime.add_loop("webhook-pool", self._close_when_stopping)

    async def _close_when_stopping(self) -> None:
        try:
            await self.runtime.stopping.wait()
        finally:
            await self.store.close()
            await self.blobs.close()

    async def source(self, provider: str, source_id: str) -> Source:
        try:
            sid = uuid.UUID(source_id)
        except ValueError:
            raise ApiError(404, "not_found", f"no {provider} webhook source {source_id!r}") from None
        try:
            source = await self.directory.source(provider, sid)
        except Exception as exc:
            if is_transient_db_error(exc):
                raise ApiError(503, "unavailable", "the database is unavailable; retry") from exc
            raise
        if source is None:
            raise ApiError(
                404,
                "not_found",
                f"no {provider} webhook source {source_id}: create one with POST /v1/webhook-sources",
            )
        return source

    async def record_rejection(self, source: Source, reason: str) -> None:
        await record_rejection(self.runtime.engine, source, reason)

    async def process(
        self, provider: str, source_id: str, body: bytes, headers: Mapping[str, str]
    ) -> dict[str, Any]:
        """Verify, store and answer one webhook; raises ``ApiError`` for every refusal."""
        source = await self.source(provider, source_id)
        try:
            check(source, body, headers, chatwoot_skew=self.settings.chatwoot_max_skew_seconds)
        except verify.Unverified as exc:
            log.warning("webhook refused", provider=provider, source=str(source.id), reason=exc.reason)
            try:
                await self.record_rejection(source, exc.reason)
            except Exception as count_exc:  # the count is best effort; the answer is 401 regardless
                log.warning("could not count a rejection", error=str(count_exc)[:200])
            raise ApiError(401, "unauthorized", exc.message) from None
        try:
            received = await receive(
                source=source,
                body=body,
                headers=headers,
                directory=self.directory,
                store=self.store,
                wake_relay=self.relay_waker,
                wake_media=self.worker.wake,
            )
        except Malformed as exc:
            raise ApiError(400, "malformed_json", str(exc)) from None
        except Exception as exc:
            if is_transient_db_error(exc) or isinstance(exc, TimeoutError):
                raise ApiError(503, "unavailable", "could not store the webhook; retry") from exc
            raise
        return {"status": received.outcome, "events": received.events, "duplicates": received.duplicates}
