"""HTTP routes of the webhook side of ingest: the provider endpoints, webhook sources, contacts,
opt-out keywords, erasure and statistics."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.dialects import postgresql as pg

from services.ingest import verify
from services.ingest.blobs import BlobStore, GcsBlobStore, LocalBlobStore, S3BlobStore
from services.ingest.fastpath import WebhookFastPath
from services.ingest.media import MediaWorker, user_prefix
from services.ingest.models import (
    contacts,
    keyword_settings,
    media_jobs,
    rejections,
    webhook_deliveries,
    webhook_keys,
    webhook_sources,
)
from services.ingest.normalise import DEFAULT_OPT_IN, DEFAULT_OPT_OUT, keyword_form
from services.ingest.settings import IngestSettings
from services.ingest.webhooks import (
    PROVIDERS,
    CoalescingWaker,
    Directory,
    Malformed,
    WebhookStore,
    check,
    receive,
    record_rejection,
)
from shared.api import ERROR_RESPONSES, ApiError, RequestModel
from shared.db import is_transient_db_error
from shared.logging import get_logger
from shared.service import ServiceRuntime
from shared.tenancy import Tenant

log = get_logger(__name__)

Provider = Literal["meta", "chatwoot", "evolution", "waha"]
SECRETS: dict[str, tuple[set[str], set[str]]] = {
    # provider: (required, optional)
    "meta": ({"app_secret", "verify_token"}, {"access_token", "graph_url"}),
    "chatwoot": ({"webhook_secret"}, set()),
    "waha": ({"hmac_key"}, {"api_key"}),
    "evolution": (set(), {"header_name", "header_value", "jwt_key", "api_key"}),
}


class WebhookSourceIn(RequestModel):
    provider: Provider
    name: str | None = Field(default=None, max_length=200)
    channel_id: uuid.UUID | None = Field(default=None, description="The sender channel this source feeds.")
    secrets: dict[str, str] = Field(
        description="meta: app_secret, verify_token (+ access_token, graph_url for media); chatwoot: "
        "webhook_secret; waha: hmac_key (+ api_key for media); evolution: header_value (+ header_name, "
        "default apikey) or jwt_key (+ api_key for media)."
    )


class WebhookSourceOut(BaseModel):
    id: uuid.UUID
    provider: str
    name: str | None
    channel_id: uuid.UUID | None
    url: str
    secrets: list[str] = Field(description="Names of the secrets stored (values are never returned).")
    created_at: datetime


class ContactIn(RequestModel):
    user_id: str = Field(min_length=1, max_length=200)


class KeywordsIn(RequestModel):
    opt_out: list[str] = Field(min_length=1, max_length=50)
    opt_in: list[str] = Field(max_length=50)


def _validate_secrets(body: WebhookSourceIn) -> None:
    required, optional = SECRETS[body.provider]
    unknown = set(body.secrets) - required - optional
    if unknown:
        raise ApiError(
            422,
            "invalid_request",
            f"unknown secrets for {body.provider}: {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(required | optional))}",
        )
    missing = [k for k in sorted(required) if not body.secrets.get(k)]
    if missing:
        raise ApiError(
            422, "invalid_request", f"a {body.provider} source needs secrets: {', '.join(missing)}"
        )
    if body.provider == "evolution" and not (body.secrets.get("header_value") or body.secrets.get("jwt_key")):
        raise ApiError(
            422,
            "invalid_request",
            "an evolution source needs header_value (a static header Evolution "
            "sends, named by header_name, default apikey) or jwt_key (Evolution's JWT webhook auth)",
        )


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


def build_webhook_routes(runtime: ServiceRuntime, settings: IngestSettings) -> list[APIRouter]:
    directory = Directory(
        runtime.engine, runtime.secrets, settings.secret_key.get_secret_value(), settings.cache_seconds
    )
    store = WebhookStore(settings.database_url, settings.webhook_pool_size, settings.webhook_timeout_seconds)
    blobs = make_blob_store(settings)
    worker = MediaWorker(runtime, settings, blobs, settings.secret_key.get_secret_value())
    runtime.add_loop("media-worker", worker.run)

    async def close_pool() -> None:
        try:
            await runtime.stopping.wait()
        finally:
            await store.close()
            await blobs.close()

    runtime.add_loop("webhook-pool", close_pool)
    relay_waker = CoalescingWaker(runtime.relay.wake, settings.relay_coalesce_seconds)
    runtime.webhooks = (directory, store, worker, blobs)  # type: ignore[attr-defined]

    hooks = APIRouter(prefix="/webhooks", tags=["webhooks"])

    async def _source(provider: str, source_id: str):  # type: ignore[no-untyped-def]
        try:
            sid = uuid.UUID(source_id)
        except ValueError:
            raise ApiError(404, "not_found", f"no {provider} webhook source {source_id!r}") from None
        try:
            source = await directory.source(provider, sid)
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

    async def process(
        provider: str, source_id: str, body: bytes, headers: Mapping[str, str]
    ) -> dict[str, Any]:
        """Verify, store and answer one webhook; raises ``ApiError`` for every refusal."""
        source = await _source(provider, source_id)
        try:
            check(source, body, headers, chatwoot_skew=settings.chatwoot_max_skew_seconds)
        except verify.Unverified as exc:
            log.warning("webhook refused", provider=provider, source=str(source.id), reason=exc.reason)
            try:
                await record_rejection(runtime.engine, source, exc.reason)
            except Exception as count_exc:  # the count is best effort; the answer is 401 regardless
                log.warning("could not count a rejection", error=str(count_exc)[:200])
            raise ApiError(401, "unauthorized", exc.message) from None
        try:
            received = await receive(
                source=source,
                body=body,
                headers=headers,
                directory=directory,
                store=store,
                wake_relay=relay_waker,
                wake_media=worker.wake,
            )
        except Malformed as exc:
            raise ApiError(400, "malformed_json", str(exc)) from None
        except Exception as exc:
            if is_transient_db_error(exc) or isinstance(exc, TimeoutError):
                raise ApiError(503, "unavailable", "could not store the webhook; retry") from exc
            raise
        return {"status": received.outcome, "events": received.events, "duplicates": received.duplicates}

    async def post_webhook(provider: str, source_id: str, request: Request) -> JSONResponse:
        body = await request.body()  # size-checked by shared.door.DoorGuard
        return JSONResponse(await process(provider, source_id, body, request.headers))

    runtime.webhook_fast_path = WebhookFastPath(process)  # type: ignore[attr-defined]

    for name in PROVIDERS:

        def make(provider: str):  # type: ignore[no-untyped-def]
            async def endpoint(source_id: str, request: Request) -> JSONResponse:
                return await post_webhook(provider, source_id, request)

            return endpoint

        hooks.add_api_route(
            f"/{name}/{{source_id}}",
            make(name),
            methods=["POST"],
            summary=f"Receive a {name} webhook",
            responses={400: {}, 401: {}, 404: {}, 413: {}, 503: {}},
        )

    @hooks.get("/meta/{source_id}", summary="Meta's subscription handshake", response_class=PlainTextResponse)
    async def meta_handshake(source_id: str, request: Request) -> Response:
        source = await _source("meta", source_id)
        try:
            challenge = verify.verify_meta_handshake(source.secrets["verify_token"], request.query_params)
        except verify.Unverified as exc:
            await record_rejection(runtime.engine, source, exc.reason)
            return JSONResponse(
                status_code=403, content={"error": "forbidden", "message": exc.message, "details": []}
            )
        return PlainTextResponse(challenge)

    api = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)

    def _out(row: Any) -> WebhookSourceOut:
        names = sorted(json.loads(runtime.secrets.decrypt(row.secrets)))
        return WebhookSourceOut(
            id=row.id,
            provider=row.provider,
            name=row.name,
            channel_id=row.channel_id,
            url=f"/webhooks/{row.provider}/{row.id}",
            secrets=names,
            created_at=row.created_at,
        )

    @api.post("/webhook-sources", status_code=201, response_model=WebhookSourceOut, tags=["webhook sources"])
    async def create_source(
        body: WebhookSourceIn, tenant: Tenant = Depends(runtime.auth)
    ) -> WebhookSourceOut:
        _validate_secrets(body)
        async with runtime.engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.insert(webhook_sources)
                    .values(
                        id=uuid.uuid4(),
                        tenant_id=tenant.id,
                        provider=body.provider,
                        name=body.name,
                        channel_id=body.channel_id,
                        secrets=runtime.secrets.encrypt(json.dumps(body.secrets)),
                    )
                    .returning(webhook_sources)
                )
            ).one()
        return _out(row)

    @api.get("/webhook-sources", tags=["webhook sources"])
    async def list_sources(tenant: Tenant = Depends(runtime.auth)) -> dict[str, list[WebhookSourceOut]]:
        async with runtime.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(webhook_sources)
                .where(webhook_sources.c.tenant_id == tenant.id)
                .order_by(webhook_sources.c.created_at)
            )
            return {"items": [_out(r) for r in rows]}

    @api.get("/webhook-sources/{source_id}", response_model=WebhookSourceOut, tags=["webhook sources"])
    async def get_source(source_id: uuid.UUID, tenant: Tenant = Depends(runtime.auth)) -> WebhookSourceOut:
        async with runtime.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(webhook_sources).where(
                        webhook_sources.c.id == source_id, webhook_sources.c.tenant_id == tenant.id
                    )
                )
            ).first()
        if row is None:
            raise ApiError(404, "not_found", f"no webhook source {source_id}")
        return _out(row)

    @api.delete("/webhook-sources/{source_id}", status_code=204, tags=["webhook sources"])
    async def delete_source(source_id: uuid.UUID, tenant: Tenant = Depends(runtime.auth)) -> Response:
        async with runtime.engine.begin() as conn:
            gone = (
                await conn.execute(
                    sa.delete(webhook_sources)
                    .where(webhook_sources.c.id == source_id, webhook_sources.c.tenant_id == tenant.id)
                    .returning(webhook_sources.c.id)
                )
            ).first()
        if gone is None:
            raise ApiError(404, "not_found", f"no webhook source {source_id}")
        directory.sources.drop(source_id)
        return Response(status_code=204)

    # --- contacts ----------------------------------------------------------------------------

    @api.get("/contacts", tags=["contacts"])
    async def list_contacts(
        tenant: Tenant = Depends(runtime.auth),
        unmapped: bool = Query(False, description="Only contacts with no user id yet."),
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        query = sa.select(contacts).where(contacts.c.tenant_id == tenant.id)
        if unmapped:
            query = query.where(contacts.c.user_id.is_(None))
        async with runtime.engine.connect() as conn:
            rows = (
                await conn.execute(
                    query.order_by(contacts.c.first_seen_at, contacts.c.phone_hash)
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return {
            "items": [
                {
                    "phone": runtime.secrets.decrypt(r.phone),
                    "user_id": r.user_id,
                    "first_seen_at": r.first_seen_at.isoformat(),
                    "mapped_at": r.mapped_at.isoformat() if r.mapped_at else None,
                }
                for r in rows
            ]
        }

    @api.put("/contacts/{phone}", tags=["contacts"], summary="Map a contact's phone to the tenant's user id")
    async def map_contact(
        phone: str, body: ContactIn, tenant: Tenant = Depends(runtime.auth)
    ) -> dict[str, Any]:
        from shared.phone import InvalidPhoneNumber, normalize_e164

        try:
            e164 = normalize_e164(phone)
        except InvalidPhoneNumber as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        ph = directory.phone_hash(e164)
        stmt = pg.insert(contacts).values(
            tenant_id=tenant.id,
            phone_hash=ph,
            phone=runtime.secrets.encrypt(e164),
            user_id=body.user_id,
            mapped_at=sa.func.now(),
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[contacts.c.tenant_id, contacts.c.phone_hash],
            set_={"user_id": body.user_id, "mapped_at": sa.func.now()},
        )
        async with runtime.engine.begin() as conn:
            await conn.execute(stmt)
        directory.forget_tenant(tenant.id)
        return {"phone": e164, "user_id": body.user_id}

    @api.delete(
        "/users/{user_id}/data", tags=["contacts"], summary="Erase a user's inbound messages and media"
    )
    async def erase_user(user_id: str, tenant: Tenant = Depends(runtime.auth)) -> dict[str, Any]:
        async with runtime.engine.begin() as conn:
            hashes = (
                (
                    await conn.execute(
                        sa.select(contacts.c.phone_hash).where(
                            contacts.c.tenant_id == tenant.id, contacts.c.user_id == user_id
                        )
                    )
                )
                .scalars()
                .all()
            )
            if not hashes:
                raise ApiError(
                    404,
                    "not_found",
                    f"no contact is mapped to user {user_id!r}: map one with PUT /v1/contacts/{{phone}}",
                )
            deliveries = sa.select(webhook_keys.c.delivery_id).where(
                webhook_keys.c.tenant_id == tenant.id, webhook_keys.c.phone_hash.in_(hashes)
            )
            erased = (
                (
                    await conn.execute(
                        sa.delete(webhook_deliveries)
                        .where(
                            webhook_deliveries.c.tenant_id == tenant.id,
                            webhook_deliveries.c.id.in_(deliveries),
                        )
                        .returning(webhook_deliveries.c.id)
                    )
                )
                .scalars()
                .all()
            )
            # pending jobs too: their event (text included) is never published, and a download
            # under way finds its job gone and deletes what it stored (MediaWorker.handle)
            await conn.execute(
                sa.delete(media_jobs).where(
                    media_jobs.c.tenant_id == tenant.id,
                    media_jobs.c.delivery_id.in_(erased),
                )
            )
            await conn.execute(
                webhook_keys.update()
                .where(webhook_keys.c.tenant_id == tenant.id, webhook_keys.c.phone_hash.in_(hashes))
                .values(phone_hash=None)
            )
            await conn.execute(
                sa.delete(contacts).where(
                    contacts.c.tenant_id == tenant.id, contacts.c.phone_hash.in_(hashes)
                )
            )
        blobs_deleted = await blobs.delete_prefix(user_prefix(tenant.id, user_id, None))
        for ph in hashes:
            blobs_deleted += await blobs.delete_prefix(user_prefix(tenant.id, None, ph))
        directory.forget_tenant(tenant.id)
        return {"user_id": user_id, "webhooks_erased": len(erased), "media_erased": blobs_deleted}

    # --- keywords ----------------------------------------------------------------------------

    @api.get("/opt-out-keywords", tags=["contacts"])
    async def get_keywords(tenant: Tenant = Depends(runtime.auth)) -> dict[str, list[str]]:
        async with runtime.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(keyword_settings).where(keyword_settings.c.tenant_id == tenant.id)
                )
            ).first()
        return {
            "opt_out": list(row.opt_out if row else DEFAULT_OPT_OUT),
            "opt_in": list(row.opt_in if row else DEFAULT_OPT_IN),
        }

    @api.put("/opt-out-keywords", tags=["contacts"], summary="Set the tenant's opt-out and opt-in keywords")
    async def put_keywords(body: KeywordsIn, tenant: Tenant = Depends(runtime.auth)) -> dict[str, list[str]]:
        opt_out = [w.strip().upper() for w in body.opt_out if keyword_form(w)]
        opt_in = [w.strip().upper() for w in body.opt_in if keyword_form(w)]
        clash = {keyword_form(w) for w in opt_out} & {keyword_form(w) for w in opt_in}
        if clash:
            raise ApiError(
                422,
                "invalid_request",
                f"a keyword cannot both opt out and opt in: {', '.join(sorted(clash))}",
            )
        stmt = pg.insert(keyword_settings).values(tenant_id=tenant.id, opt_out=opt_out, opt_in=opt_in)
        stmt = stmt.on_conflict_do_update(
            index_elements=[keyword_settings.c.tenant_id], set_={"opt_out": opt_out, "opt_in": opt_in}
        )
        async with runtime.engine.begin() as conn:
            await conn.execute(stmt)
        directory.forget_tenant(tenant.id)
        return {"opt_out": opt_out, "opt_in": opt_in}

    # --- stats -------------------------------------------------------------------------------

    @api.get("/inbound/stats", tags=["webhooks"], summary="Per-day webhook counts")
    async def stats(
        tenant: Tenant = Depends(runtime.auth), days: int = Query(7, ge=1, le=90)
    ) -> dict[str, Any]:
        since = datetime.now(UTC).date() - timedelta(days=days - 1)
        day = sa.cast(sa.func.timezone("UTC", webhook_deliveries.c.received_at), sa.Date).label("day")
        async with runtime.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(
                    day,
                    sa.func.count().label("received"),
                    sa.func.count().filter(webhook_deliveries.c.outcome == "duplicate").label("duplicates"),
                    sa.func.count()
                    .filter(webhook_deliveries.c.outcome == "unrecognised")
                    .label("unrecognised"),
                )
                .where(webhook_deliveries.c.tenant_id == tenant.id, webhook_deliveries.c.received_at >= since)
                .group_by(day)
            )
            by_day: dict[date, dict[str, Any]] = {
                r.day: {
                    "received": r.received,
                    "duplicates": r.duplicates,
                    "unrecognised": r.unrecognised,
                    "rejected": 0,
                }
                for r in rows
            }
            for r in await conn.execute(
                sa.select(rejections.c.day, sa.func.sum(rejections.c.count).label("n"))
                .where(rejections.c.tenant_id == tenant.id, rejections.c.day >= since)
                .group_by(rejections.c.day)
            ):
                by_day.setdefault(r.day, {"received": 0, "duplicates": 0, "unrecognised": 0, "rejected": 0})[
                    "rejected"
                ] = int(r.n)
        return {"days": [{"day": d.isoformat(), **v} for d, v in sorted(by_day.items())]}

    return [hooks, api]
