"""HTTP routes of the webhook side of ingest: the provider endpoints, webhook sources, contacts,
opt-out keywords, erasure and statistics."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from services.ingest import handlers, repository, verify
from services.ingest.channels import ChannelDirectory, SenderUnavailable, UnknownChannel
from services.ingest.domain import KeywordClash, SourceRejected
from services.ingest.normalise import DEFAULT_OPT_IN, DEFAULT_OPT_OUT
from services.ingest.pipeline import WebhookPipeline
from services.ingest.settings import IngestSettings
from services.ingest.webhooks import PROVIDERS
from shared.api import ERROR_RESPONSES, ApiError, RequestModel
from shared.logging import get_logger
from shared.phone import InvalidPhoneNumber, normalize_e164
from shared.service import ServiceRuntime
from shared.tenancy import Tenant

log = get_logger(__name__)

Provider = Literal["meta", "chatwoot", "evolution", "waha"]


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


def _refused(exc: SourceRejected | UnknownChannel | SenderUnavailable, channel_id: Any) -> ApiError:
    """A source that was not created, as the caller should read it."""
    if isinstance(exc, UnknownChannel):
        return ApiError(
            422,
            "invalid_request",
            f"channel_id {channel_id} is not a channel of this tenant: use the id of one of your "
            "channels (GET /v1/channels on the sender), or leave channel_id out",
            [{"field": "channel_id", "problem": "not a channel of this tenant"}],
        )
    if isinstance(exc, SenderUnavailable):
        return ApiError(
            503,
            "unavailable",
            f"the sender could not be reached to check channel_id ({exc}); nothing was created, retry",
        )
    return ApiError(422, "invalid_request", str(exc))


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
        try:
            row = await handlers.create_source(
                runtime,
                channels,
                tenant.id,
                provider=body.provider,
                name=body.name,
                channel_id=body.channel_id,
                secrets=body.secrets,
                authorization=request.headers.get("authorization", ""),
            )
        except (SourceRejected, UnknownChannel, SenderUnavailable) as exc:
            raise _refused(exc, body.channel_id) from None
        return _out(row)

    @api.get("/webhook-sources", tags=["webhook sources"])
    async def list_sources(tenant: Tenant = Depends(runtime.auth)) -> dict[str, list[WebhookSourceOut]]:
        async with runtime.engine.connect() as conn:
            rows = await repository.list_sources(conn, tenant.id)
        return {"items": [_out(r) for r in rows]}

    @api.get("/webhook-sources/{source_id}", response_model=WebhookSourceOut, tags=["webhook sources"])
    async def get_source(source_id: uuid.UUID, tenant: Tenant = Depends(runtime.auth)) -> WebhookSourceOut:
        async with runtime.engine.connect() as conn:
            row = await repository.get_source(conn, tenant.id, source_id)
        if row is None:
            raise ApiError(404, "not_found", f"no webhook source {source_id}")
        return _out(row)

    @api.delete("/webhook-sources/{source_id}", status_code=204, tags=["webhook sources"])
    async def delete_source(source_id: uuid.UUID, tenant: Tenant = Depends(runtime.auth)) -> Response:
        if not await handlers.delete_source(runtime, directory, tenant.id, source_id):
            raise ApiError(404, "not_found", f"no webhook source {source_id}")
        return Response(status_code=204)

    # --- contacts ----------------------------------------------------------------------------

    @api.get("/contacts", tags=["contacts"])
    async def list_contacts(
        tenant: Tenant = Depends(runtime.auth),
        unmapped: bool = Query(False, description="Only contacts with no user id yet."),
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        async with runtime.engine.connect() as conn:
            rows = await repository.list_contacts(
                conn, tenant.id, unmapped=unmapped, limit=limit, offset=offset
            )
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
        try:
            e164 = normalize_e164(phone)
        except InvalidPhoneNumber as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        await handlers.map_contact(runtime, directory, tenant.id, e164, body.user_id)
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
            row = await repository.get_keywords(conn, tenant.id)
        return {
            "opt_out": list(row.opt_out if row else DEFAULT_OPT_OUT),
            "opt_in": list(row.opt_in if row else DEFAULT_OPT_IN),
        }

    @api.put("/opt-out-keywords", tags=["contacts"], summary="Set the tenant's opt-out and opt-in keywords")
    async def put_keywords(body: KeywordsIn, tenant: Tenant = Depends(runtime.auth)) -> dict[str, list[str]]:
        try:
            opt_out, opt_in = await handlers.set_keywords(
                runtime, directory, tenant.id, body.opt_out, body.opt_in
            )
        except KeywordClash as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        return {"opt_out": opt_out, "opt_in": opt_in}

    # --- stats -------------------------------------------------------------------------------

    @api.get("/inbound/stats", tags=["webhooks"], summary="Per-day webhook counts")
    async def stats(
        tenant: Tenant = Depends(runtime.auth), days: int = Query(7, ge=1, le=90)
    ) -> dict[str, Any]:
        return {"days": await handlers.inbound_stats(runtime, tenant.id, days)}

    return [hooks, api]
