"""HTTP routes of the webhook side of ingest: the provider endpoints, webhook sources, contacts,
opt-out keywords, erasure and statistics."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.dialects import postgresql as pg

from services.ingest import handlers, verify
from services.ingest.channels import ChannelDirectory, SenderUnavailable, UnknownChannel
from services.ingest.models import (
    contacts,
    keyword_settings,
    webhook_sources,
)
from services.ingest.normalise import DEFAULT_OPT_IN, DEFAULT_OPT_OUT, keyword_form
from services.ingest.pipeline import WebhookPipeline
from services.ingest.settings import IngestSettings
from services.ingest.webhooks import (
    PROVIDERS,
)
from shared.api import ERROR_RESPONSES, ApiError, RequestModel
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


async def _check_channel(channels: ChannelDirectory, channel_id: uuid.UUID, request: Request) -> None:
    """The source's channel must be one of the caller's channels on the sender."""
    try:
        await channels.require(channel_id, request.headers.get("authorization", ""))
    except UnknownChannel:
        raise ApiError(
            422,
            "invalid_request",
            f"channel_id {channel_id} is not a channel of this tenant: use the id of one of your "
            "channels (GET /v1/channels on the sender), or leave channel_id out",
            [{"field": "channel_id", "problem": "not a channel of this tenant"}],
        ) from None
    except SenderUnavailable as exc:
        raise ApiError(
            503,
            "unavailable",
            f"the sender could not be reached to check channel_id ({exc}); nothing was created, retry",
        ) from None


def build_webhook_routes(
    runtime: ServiceRuntime,
    settings: IngestSettings,
    pipeline: WebhookPipeline,
    channels: ChannelDirectory,
) -> list[APIRouter]:
    directory = pipeline.directory
    hooks = APIRouter(prefix="/webhooks", tags=["webhooks"])

    async def post_webhook(provider: str, source_id: str, request: Request) -> JSONResponse:
        body = await request.body()  # size-checked by shared.door.DoorGuard
        return JSONResponse(await pipeline.process(provider, source_id, body, request.headers))

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
        source = await pipeline.source("meta", source_id)
        try:
            challenge = verify.verify_meta_handshake(source.secrets["verify_token"], request.query_params)
        except verify.Unverified as exc:
            await pipeline.record_rejection(source, exc.reason)
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
        body: WebhookSourceIn, request: Request, tenant: Tenant = Depends(runtime.auth)
    ) -> WebhookSourceOut:
        _validate_secrets(body)
        if body.channel_id is not None:
            await _check_channel(channels, body.channel_id, request)
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
        try:
            erased = await handlers.erase_user(runtime, pipeline, tenant.id, user_id)
        except handlers.NothingToErase:
            raise ApiError(
                404,
                "not_found",
                f"no contact is mapped to user {user_id!r}: map one with PUT /v1/contacts/{{phone}}",
            ) from None
        return {
            "user_id": erased.user_id,
            "webhooks_erased": erased.webhooks_erased,
            "media_erased": erased.media_erased,
        }

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
        return {"days": await handlers.inbound_stats(runtime, tenant.id, days)}

    return [hooks, api]
