"""Media downloads outside the webhook request, and voice-note transcription.

Decision: an inbound message with media is published *after* its media is handled, so the event
carries the blob key (and the transcript of a voice note). The webhook transaction writes the
finished event minus media into ``media_jobs`` instead of the outbox; this worker claims due jobs
(``FOR UPDATE SKIP LOCKED``, so replicas share the work), downloads, checks size and type, stores
the blob, transcribes, and writes the event to the outbox in the same transaction that marks the
job done. A download that keeps failing is retried with backoff ``media_attempts`` times; then the
message is published anyway with ``media.error`` — a message is never held back for good.

With tracing on, a job is a span ``media {kind}`` in the webhook's trace (the stored event
carries its ``traceparent``), and a transcription is a CLIENT span ``transcription {model}`` under
it, whose request carries the trace context; neither holds the audio or its words.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import mimetypes
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter

from services.ingest import repository
from services.ingest.blobs import BlobStore
from services.ingest.settings import IngestSettings
from shared import tracing
from shared.crypto import SecretBox
from shared.logging import get_logger
from shared.service import ServiceRuntime

log = get_logger(__name__)
MEDIA = Counter("herald_ingest_media_total", "Media downloads by outcome", ["outcome"])
TRANSCRIBED = frozenset({"voice", "audio"})


class MediaRefused(Exception):
    """The media cannot be stored (too large, a type not accepted): retrying will not help."""


@dataclass(frozen=True)
class Fetched:
    data: bytes
    mime_type: str


def user_prefix(tenant_id: Any, user_id: str | None, phone_hash: str | None) -> str:
    if user_id:
        safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in user_id)[:200] or "_"
        return f"{tenant_id}/u-{safe}"
    return f"{tenant_id}/p-{phone_hash or 'unknown'}"


class MediaWorker:
    def __init__(
        self, runtime: ServiceRuntime, settings: IngestSettings, blobs: BlobStore, secret_key: str
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.blobs = blobs
        self.secret_key = secret_key
        self.box: SecretBox = runtime.secrets
        self._wake = asyncio.Event()
        self.types = tuple(t.strip() for t in settings.media_types.split(",") if t.strip())

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Claim loop: woken at once by this replica's webhook path (``wake``), and polling every
        ``media_poll_seconds`` for jobs stored by other replicas and retries that came due. (The
        webhook statement has no NOTIFY on purpose, see webhooks.py, so there is nothing to
        LISTEN for.)"""
        async with httpx.AsyncClient(timeout=30, follow_redirects=True) as http:
            while not self.runtime.stopping.is_set():
                self._wake.clear()
                if await self.run_once(http):
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.media_poll_seconds)

    async def run_once(self, http: httpx.AsyncClient, batch: int = 8) -> int:
        async with self.runtime.engine.begin() as conn:
            # leased: another replica does not take them while we work
            rows = await repository.claim_media_jobs(conn, batch, lease=timedelta(minutes=5))
        for row in rows:
            await self.handle(http, row)
        return len(rows)

    async def handle(self, http: httpx.AsyncClient, job: Any) -> None:
        event = json.loads(job.event)
        kind = str(event.get("data", {}).get("kind") or "media")
        with tracing.span(
            f"media {kind}",
            parent=tracing.extract(event),
            attributes={"herald.media.attempt": job.attempts + 1, "cloudevents.event_id": str(job.event_id)},
        ):
            await self._handle(http, job, event)

    async def _handle(self, http: httpx.AsyncClient, job: Any, event: dict[str, Any]) -> None:
        data = event["data"]
        media = dict(data.get("media") or {})
        pending = media.pop("pending", None) or {}
        error: str | None = None
        blob_key: str | None = None
        transcript: str | None = data.get("transcript")
        try:
            source = await self._source(job.source_id)
            fetched = await self.fetch(http, pending, media, source)
            if len(fetched.data) > self.settings.media_max_bytes:
                raise MediaRefused(
                    f"media is {len(fetched.data)} bytes, over the {self.settings.media_max_bytes}-byte limit"
                )
            mime = (
                (fetched.mime_type or media.get("mime_type") or "application/octet-stream")
                .split(";")[0]
                .strip()
            )
            if not any(mime.startswith(t) for t in self.types):
                raise MediaRefused(f"media type {mime!r} is not accepted (INGEST_MEDIA_TYPES)")
            prefix = await self._prefix(job.tenant_id, data)
            ext = mimetypes.guess_extension(mime) or ".bin"
            blob_key = f"{prefix}/{job.event_id}{ext}"
            await self.blobs.put(blob_key, fetched.data, mime)
            media.update(
                blob_key=blob_key,
                size=len(fetched.data),
                sha256_stored=hashlib.sha256(fetched.data).hexdigest(),
            )
            media.setdefault("mime_type", fetched.mime_type or mime)
            if data.get("kind") in TRANSCRIBED and self.settings.transcription_url and not transcript:
                transcript = await self.transcribe(http, fetched.data, mime, ext)
        except MediaRefused as exc:
            error = str(exc)
            MEDIA.labels("refused").inc()
        except Exception as exc:  # network, provider error, blob store: retry later
            if job.attempts + 1 < self.settings.media_attempts:
                delay = self.settings.media_retry_seconds * 2**job.attempts
                log.warning(
                    "media download failed, will retry", job=job.id, error=str(exc)[:200], retry_in=delay
                )
                MEDIA.labels("retry").inc()
                async with self.runtime.engine.begin() as conn:
                    await repository.retry_media_job(
                        conn,
                        job.id,
                        job.attempts + 1,
                        str(exc),
                        datetime.now(UTC) + timedelta(seconds=delay),
                    )
                return
            error = f"download failed after {job.attempts + 1} attempts: {exc}"[:500]
            MEDIA.labels("failed").inc()
        if error:
            media["error"] = error
        else:
            MEDIA.labels("stored").inc()
        data["media"] = media
        if transcript:
            data["transcript"] = transcript
        body = json.dumps(event, separators=(",", ":")).encode()
        async with self.runtime.uow() as uow:
            if not await repository.lock_media_job(uow.conn, job.id):
                # the user was erased (DELETE /v1/users/{id}/data) while this download ran: the
                # message is not published and what was just stored goes too (leaving the block
                # without commit rolls the transaction back)
                if blob_key is not None:
                    await self.blobs.delete(blob_key)
                MEDIA.labels("erased").inc()
                log.info("media job erased during its download: nothing published", job=job.id)
                return
            await repository.finish_media_job(
                uow.conn,
                self.runtime.outbox,
                self.runtime.schema,
                job.id,
                event_id=job.event_id,
                routing_key=event["type"],
                body=body,
                error=error,
                blob_key=blob_key,
                attempts=job.attempts + 1,
            )
            await uow.commit()

    async def _source(self, source_id: Any) -> dict[str, Any]:
        async with self.runtime.engine.connect() as conn:
            row = await repository.find_source(conn, source_id)
        return json.loads(self.box.decrypt(row.secrets)) if row else {}

    async def _prefix(self, tenant_id: Any, data: dict[str, Any]) -> str:
        from shared.crypto import lookup_hash

        phone_hash = lookup_hash(self.secret_key, data["from_phone"])
        user_id = data.get("user_id")
        if not user_id:
            async with self.runtime.engine.connect() as conn:
                user_id = await repository.contact_user_id(conn, tenant_id, phone_hash)
        return user_prefix(tenant_id, user_id, phone_hash)

    async def fetch(
        self, http: httpx.AsyncClient, pending: dict[str, Any], media: dict[str, Any], secrets: dict[str, Any]
    ) -> Fetched:
        via = pending.get("via")
        limit = self.settings.media_max_bytes
        if via == "meta":
            token = secrets.get("access_token")
            if not token:
                raise MediaRefused("the Meta source has no access_token to download media with")
            headers = {"Authorization": f"Bearer {token}"}
            url = pending.get("url")
            if not url:
                graph = str(secrets.get("graph_url") or "https://graph.facebook.com/v23.0").rstrip("/")
                meta = await http.get(f"{graph}/{pending.get('id')}", headers=headers)
                meta.raise_for_status()
                info = meta.json()
                url = info["url"]
                if int(info.get("file_size") or 0) > limit:
                    raise MediaRefused(f"media is {info['file_size']} bytes, over the {limit}-byte limit")
            return await self._download(http, url, headers)
        if via == "evolution":
            if pending.get("base64"):
                return Fetched(base64.b64decode(pending["base64"]), media.get("mime_type", ""))
            if pending.get("media_url"):
                return await self._download(http, pending["media_url"], {})
            api_key = secrets.get("api_key")
            if not (api_key and pending.get("server_url") and pending.get("instance")):
                raise MediaRefused(
                    "Evolution sent no base64 or mediaUrl and the source has no api_key to fetch it"
                )
            response = await http.post(
                f"{pending['server_url'].rstrip('/')}/chat/getBase64FromMediaMessage/{pending['instance']}",
                headers={"apikey": api_key},
                json={"message": {"key": pending.get("key")}, "convertToMp4": False},
            )
            response.raise_for_status()
            answer = response.json()
            return Fetched(
                base64.b64decode(answer["base64"]), answer.get("mimetype") or media.get("mime_type", "")
            )
        if via == "waha":
            headers = {"X-Api-Key": secrets["api_key"]} if secrets.get("api_key") else {}
            if not pending.get("url"):
                raise MediaRefused("WAHA did not download this media (media.url is null)")
            return await self._download(http, pending["url"], headers)
        if via == "url":
            if not pending.get("url"):
                raise MediaRefused("the attachment has no URL")
            return await self._download(http, pending["url"], {})
        raise MediaRefused(f"no way to fetch media via {via!r}")

    async def _download(self, http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> Fetched:
        limit = self.settings.media_max_bytes
        async with http.stream("GET", url, headers=headers) as response:
            if response.status_code in (401, 403, 404, 410):
                raise MediaRefused(f"the provider answered {response.status_code} for the media URL")
            response.raise_for_status()
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise MediaRefused(f"media is {declared} bytes, over the {limit}-byte limit")
            chunks = bytearray()
            async for chunk in response.aiter_bytes():
                chunks += chunk
                if len(chunks) > limit:
                    raise MediaRefused(f"media is over the {limit}-byte limit")
            return Fetched(bytes(chunks), response.headers.get("content-type", ""))

    async def transcribe(self, http: httpx.AsyncClient, audio: bytes, mime: str, ext: str) -> str | None:
        """OpenAI-compatible ``POST {url}/audio/transcriptions`` (multipart ``file`` + ``model``).
        A transcription failure never holds the message back: it is published without one."""
        url = str(self.settings.transcription_url).rstrip("/")
        key = self.settings.transcription_api_key.get_secret_value()
        model = self.settings.transcription_model
        attributes = {
            "gen_ai.operation.name": "transcription",
            "gen_ai.provider.name": "openai",  # the API spoken: OpenAI's, or a compatible server
            "gen_ai.request.model": model,
            "server.address": httpx.URL(url).host,
            "herald.audio.bytes": len(audio),
        }
        with tracing.span(f"transcription {model}", kind=SpanKind.CLIENT, attributes=attributes) as span:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            found = tracing.current_traceparent()
            if found is not None:
                headers["traceparent"] = found[0]
                if found[1]:
                    headers["tracestate"] = found[1]
            try:
                response = await http.post(
                    f"{url}/audio/transcriptions",
                    headers=headers,
                    files={"file": (f"voice{ext}", audio, mime)},
                    data={"model": model, "response_format": "json"},
                )
                if span is not None:
                    span.set_attribute("http.response.status_code", response.status_code)
                response.raise_for_status()
                return str(response.json().get("text") or "") or None
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("transcription failed", error=str(exc)[:200])
                MEDIA.labels("transcription_failed").inc()
                if span is not None:
                    status = getattr(getattr(exc, "response", None), "status_code", None)
                    span.set_attribute("error.type", str(status) if status else type(exc).__name__)
                    span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
                return None
