"""``/v1/campaigns``: one catalogue template to many recipients (issue 12 §3). Routes translate
HTTP ⇄ the use cases of services.sender.campaigns."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, Field, ValidationError

from services.sender import campaigns as use
from services.sender import repository as repo
from services.sender.context import Sender
from shared.api import ERROR_RESPONSES, ApiError, RequestModel
from shared.tenancy import Tenant

NAME = r"^[a-z0-9_]{1,512}$"
LANGUAGE = r"^[a-z]{2,3}(_[A-Z]{2})?$"
IdempotencyKey = Header(
    default=None,
    alias="Idempotency-Key",
    min_length=1,
    max_length=200,
    description="The same page again with the same key is answered as the first time; nothing is queued twice.",
)


class CampaignTemplate(RequestModel):
    name: str = Field(pattern=NAME, description="A template of the catalogue (POST /v1/templates)")
    language: str = Field(pattern=LANGUAGE, examples=["en_US", "pt_BR"])


class CampaignRecipientIn(RequestModel):
    to: str = Field(min_length=1, max_length=40, description="E.164, e.g. +5511999998888")
    variables: dict[str, str] = Field(default_factory=dict, max_length=100)


class CampaignCreate(RequestModel):
    name: str | None = Field(default=None, max_length=200)
    template: CampaignTemplate
    channel_id: uuid.UUID | None = Field(default=None, description="The tenant's default if omitted")
    priority: int = Field(
        default=1, ge=1, le=10, description="1 (bulk, the default: below transactional traffic) … 10"
    )
    send_at: AwareDatetime | None = Field(default=None, description="Not before this time; now if omitted")
    recipients: list[CampaignRecipientIn] = Field(
        default_factory=list,
        max_length=use.MAX_PAGE,
        description="The first page (≤ 1,000); more with /recipients",
    )


class RecipientsPage(RequestModel):
    recipients: list[CampaignRecipientIn] = Field(min_length=1, max_length=use.MAX_PAGE)


class Refusal(BaseModel):
    index: int = Field(description="Position in the page (0-based)")
    where: str = Field(description="recipients.<i>, or the CSV row number")
    to: str
    reason: Literal["not_e164", "opted_out", "duplicate"]
    detail: str


class PageAccepted(BaseModel):
    campaign_id: uuid.UUID
    queued: int
    refused: int
    refusals: list[Refusal]


class CampaignView(BaseModel):
    id: uuid.UUID
    name: str | None
    template: CampaignTemplate
    channel_id: uuid.UUID
    priority: int
    send_at: datetime | None
    state: Literal["active", "paused", "cancelled", "completed"]
    accepted: int
    refused: int
    counts: dict[str, int] = Field(
        description="The campaign's messages by status: queued, held (paused), sending, sent, "
        "delivered, read, failed, cancelled"
    )
    created_at: datetime
    updated_at: datetime


class CampaignCreated(CampaignView):
    page: PageAccepted


class CampaignList(BaseModel):
    items: list[CampaignView]


class StateChanged(BaseModel):
    id: uuid.UUID
    state: str
    messages: int = Field(description="How many messages were held, released or cancelled")


COUNTED = ("queued", "held", "sending", "sent", "delivered", "read", "failed", "cancelled")


def view(campaign: Mapping[str, Any], counts: Mapping[str, int] | None = None) -> CampaignView:
    c = campaign
    return CampaignView(
        id=c["id"],
        name=c["name"],
        template=CampaignTemplate(name=c["template_name"], language=c["template_language"]),
        channel_id=c["channel_id"],
        priority=c["priority"],
        send_at=c["send_at"],
        state=c["state"],
        accepted=c["accepted"],
        refused=c["refused"],
        counts={s: (counts or {}).get(s, 0) for s in COUNTED},
        created_at=c["created_at"],
        updated_at=c["updated_at"],
    )


def _recipients(items: list[CampaignRecipientIn]) -> list[use.Recipient]:
    return [use.Recipient(f"recipients.{i}", r.to, r.variables) for i, r in enumerate(items)]


def _page(campaign_id: uuid.UUID, result: use.PageResult) -> PageAccepted:
    return PageAccepted(
        campaign_id=campaign_id,
        queued=result.queued,
        refused=result.refused,
        refusals=[Refusal(**r) for r in result.refusals],
    )


def _errors(exc: Exception) -> ApiError:
    if isinstance(exc, use.CampaignInvalid):
        return ApiError(422, "invalid_request", exc.message, details=exc.details)
    if isinstance(exc, use.CampaignNotFound):
        return ApiError(404, "not_found", str(exc))
    return ApiError(409, "conflict", str(exc))


def campaign_router(sender: Sender) -> APIRouter:
    runtime = sender.runtime
    Auth = Depends(runtime.auth)
    api = APIRouter(prefix="/v1/campaigns", tags=["campaigns"], responses=ERROR_RESPONSES)
    failures = (use.CampaignInvalid, use.CampaignNotFound, use.CampaignConflict)

    @api.post(
        "",
        status_code=202,
        response_model=CampaignCreated,
        summary="Send a catalogue template to many recipients, each with their own variables",
        description="Creates the campaign with its first page of recipients (≤ 1,000, or none); "
        "append more with POST /v1/campaigns/{id}/recipients (JSON pages or a CSV). Each recipient "
        "becomes a message with every limit of a single message; refusals (not E.164, opted out, "
        "duplicate recipient) are listed with their reason.",
    )
    async def create_campaign(
        body: CampaignCreate,
        response: Response,
        tenant: Tenant = Auth,
        idempotency_key: str | None = IdempotencyKey,
    ) -> CampaignCreated:
        try:
            campaign, result = await use.create(
                sender,
                tenant.id,
                name=body.name,
                template_name=body.template.name,
                template_language=body.template.language,
                channel_id=body.channel_id,
                priority=body.priority,
                send_at=body.send_at,
                recipients=_recipients(body.recipients),
                idempotency_key=idempotency_key,
            )
        except failures as exc:
            raise _errors(exc) from exc
        if result.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return CampaignCreated(**view(campaign._mapping).model_dump(), page=_page(campaign.id, result))

    @api.post(
        "/{campaign_id}/recipients",
        status_code=202,
        response_model=PageAccepted,
        summary="Append recipients: a JSON page (≤ 1,000) or a CSV (text/csv or multipart 'file')",
        description="A CSV has a header with `to` and one column per template variable. It is "
        "checked whole first: a bad row gets 422 naming its row number and column, and nothing is "
        "stored.",
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": RecipientsPage.model_json_schema()},
                    "text/csv": {"schema": {"type": "string"}},
                }
            }
        },
    )
    async def add_recipients(
        campaign_id: uuid.UUID,
        request: Request,
        response: Response,
        tenant: Tenant = Auth,
        idempotency_key: str | None = IdempotencyKey,
    ) -> PageAccepted:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if kind in ("text/csv", "multipart/form-data"):
                data = await _csv_body(request, kind)
                async with runtime.engine.connect() as conn:
                    campaign = await repo.get_campaign(conn, tenant.id, campaign_id)
                    if campaign is None:
                        raise use.CampaignNotFound(f"no campaign {campaign_id} for this tenant")
                    template = await use.trepo.find(
                        conn, tenant.id, campaign.template_name, campaign.template_language
                    )
                variables = list(template.variables) if template is not None else []
                recipients = use.parse_csv(data, variables)
                if len(recipients) > use.MAX_RECIPIENTS:
                    raise use.CampaignInvalid(f"a CSV holds at most {use.MAX_RECIPIENTS:,} recipients")
            elif kind in ("application/json", ""):
                try:
                    page = RecipientsPage.model_validate_json(await request.body())
                except ValidationError as exc:
                    raise ApiError(
                        422,
                        "invalid_request",
                        f"{'.'.join(map(str, exc.errors()[0]['loc'])) or 'body'}: {exc.errors()[0]['msg']}",
                        details=[
                            {"field": ".".join(map(str, e["loc"])) or "body", "problem": e["msg"]}
                            for e in exc.errors()[:20]
                        ],
                    ) from exc
                recipients = _recipients(page.recipients)
            else:
                raise ApiError(
                    415,
                    "unsupported_media_type",
                    f"Content-Type {kind!r}: send application/json, text/csv or multipart/form-data",
                )
            result = await use.add_recipients(sender, tenant.id, campaign_id, recipients, idempotency_key)
        except failures as exc:
            raise _errors(exc) from exc
        if result.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return _page(campaign_id, result)

    @api.get("", response_model=CampaignList, summary="The tenant's campaigns, newest first (no counts)")
    async def list_campaigns(
        tenant: Tenant = Auth, limit: int = Query(default=50, ge=1, le=500)
    ) -> CampaignList:
        async with runtime.engine.connect() as conn:
            rows = await repo.list_campaigns(conn, tenant.id, limit)
        return CampaignList(items=[view(r._mapping) for r in rows])

    @api.get("/{campaign_id}", response_model=CampaignView, summary="A campaign with its counts by status")
    async def get_campaign(campaign_id: uuid.UUID, tenant: Tenant = Auth) -> CampaignView:
        try:
            campaign, counts = await use.show(sender, tenant.id, campaign_id)
        except failures as exc:
            raise _errors(exc) from exc
        return view(campaign, counts)

    def transition(verb: str, state: str, action: Any) -> None:
        @api.post(
            f"/{{campaign_id}}/{verb}",
            response_model=StateChanged,
            summary=f"{verb.capitalize()} the campaign",
            name=f"{verb}_campaign",
        )
        async def change(campaign_id: uuid.UUID, tenant: Tenant = Auth) -> StateChanged:
            try:
                n = await action(sender, tenant.id, campaign_id)
            except failures as exc:
                raise _errors(exc) from exc
            return StateChanged(id=campaign_id, state=state, messages=n)

    transition("pause", "paused", use.pause)
    transition("resume", "active", use.resume)
    transition("cancel", "cancelled", use.cancel)
    return api


async def _csv_body(request: Request, kind: str) -> bytes:
    if kind == "text/csv":
        return await request.body()
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise use.CampaignInvalid("multipart upload: put the CSV in a file field named 'file'")
    return await upload.read()
