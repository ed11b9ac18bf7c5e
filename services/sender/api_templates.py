"""``/v1/templates``: the tenant's template catalogue (issue 12 §2). Routes translate HTTP ⇄ the
use cases of services.sender.templates."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field, model_validator
from sqlalchemy.engine import Row

from services.sender import repository as repo
from services.sender import template_domain as td
from services.sender import templates as use
from services.sender.context import Sender
from services.sender.domain import UNSENDABLE_TEMPLATE_STATUSES
from services.sender.repository import template_catalogue as trepo
from services.sender.schemas import TemplateView as TemplateStatusView
from shared.api import ERROR_RESPONSES, ApiError, RequestModel
from shared.tenancy import Tenant

Category = Literal["MARKETING", "UTILITY", "AUTHENTICATION"]
HeaderFormat = Literal["TEXT", "IMAGE", "VIDEO", "DOCUMENT"]
NAME = r"^[a-z0-9_]{1,512}$"
LANGUAGE = r"^[a-z]{2,3}(_[A-Z]{2})?$"


class TemplateButtonSpec(RequestModel):
    type: Literal["QUICK_REPLY", "URL", "PHONE_NUMBER"]
    text: str = Field(min_length=1, max_length=25)
    url: str | None = Field(default=None, max_length=2000, pattern=r"^https?://")
    phone_number: str | None = Field(default=None, max_length=20)
    example: list[str] | None = Field(
        default=None,
        max_length=1,
        description='For a URL ending in {{1}} (a suffix each message gives): one example, e.g. ["summer2023"]',
    )

    @model_validator(mode="after")
    def _target(self) -> TemplateButtonSpec:
        if self.type == "URL" and not self.url:
            raise ValueError("a URL button needs 'url'")
        if self.type == "PHONE_NUMBER" and not self.phone_number:
            raise ValueError("a PHONE_NUMBER button needs 'phone_number'")
        return self


class TemplateFields(RequestModel):
    category: Category = Field(description="MARKETING, UTILITY or AUTHENTICATION (Meta's categories)")
    header: str | None = Field(
        default=None, min_length=1, max_length=60, description="Text header; ≤ 1 variable"
    )
    header_format: HeaderFormat | None = Field(
        default=None,
        description="TEXT (the header above; the default when header is given) or a media header: "
        "IMAGE, VIDEO, DOCUMENT, whose link each message gives in content.header",
    )
    header_handle: str | None = Field(
        default=None,
        max_length=4096,
        description="A media header's sample for Meta's review: the handle of Meta's Resumable "
        "Upload API (4::…). Required for a media header on a Meta channel.",
    )
    body: str = Field(
        min_length=1,
        max_length=1024,
        description="The text, with variables as {{1}}, {{2}}… or {{attendee_name}}",
        examples=["Hi {{attendee_name}}, your ticket for {{event}} is ready."],
    )
    footer: str | None = Field(default=None, min_length=1, max_length=60, description="No variables")
    buttons: list[TemplateButtonSpec] = Field(default_factory=list, max_length=10)
    variables: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Every variable the header and body use, e.g. ['attendee_name', 'event']",
    )
    examples: dict[str, str] = Field(
        default_factory=dict, description="An example value per variable (Meta's review requires them)"
    )


class TemplateCreate(TemplateFields):
    channel_id: uuid.UUID | None = Field(
        default=None,
        description="The channel whose number sends it (the tenant's default if omitted). On a Meta "
        "channel it is created on the channel's WABA (settings.waba_id) and reviewed by Meta; on "
        "other channels it is kept in Herald and sent as rendered text.",
    )
    name: str = Field(pattern=NAME, description="Lowercase letters, digits and _", examples=["ticket_ready"])
    language: str = Field(pattern=LANGUAGE, description="Meta's language code", examples=["en_US", "pt_BR"])


class TemplatePatch(RequestModel):
    category: Category | None = None
    header: str | None = Field(default=None, max_length=60)
    header_format: HeaderFormat | None = None
    header_handle: str | None = Field(default=None, max_length=4096)
    body: str | None = Field(default=None, min_length=1, max_length=1024)
    footer: str | None = Field(default=None, max_length=60)
    buttons: list[TemplateButtonSpec] | None = Field(default=None, max_length=10)
    variables: list[str] | None = Field(default=None, max_length=100)
    examples: dict[str, str] | None = None
    name: str | None = Field(default=None, description="Cannot change (Meta's rule): create a new template")
    language: str | None = Field(default=None, description="Cannot change: create a new template")


class Template(BaseModel):
    id: uuid.UUID
    channel_id: uuid.UUID | None
    name: str
    language: str
    category: str
    status: str = Field(description="Meta's review (PENDING, APPROVED, REJECTED, PAUSED, …) or LOCAL")
    reason: str | None
    header: str | None
    header_format: HeaderFormat | None = Field(description="TEXT, IMAGE, VIDEO, DOCUMENT; null: no header")
    header_handle: str | None
    body: str
    footer: str | None
    buttons: list[dict[str, Any]]
    variables: list[str] = Field(description="In the template's parameter order")
    variable_style: Literal["named", "positional"]
    parameter_format: Literal["POSITIONAL", "NAMED"] = Field(
        description="How Meta holds the variables: NAMED templates are sent with each parameter's "
        "parameter_name (Herald creates named templates NAMED), POSITIONAL ones in order"
    )
    examples: dict[str, str]
    created_at: datetime
    updated_at: datetime


class TemplateCatalogue(BaseModel):
    templates: list[Template]
    items: list[TemplateStatusView] = Field(
        description="Deprecated: Meta's status per (name, language) as template.status_changed said it"
    )


class SyncRequest(RequestModel):
    channel_id: uuid.UUID | None = Field(default=None, description="One Meta channel; all of them if omitted")


class Synced(BaseModel):
    synced: int
    templates: list[Template]


def template_view(r: Row[Any]) -> Template:
    return Template.model_validate({**r._mapping, "header_format": td.header_format_of(r)})


def template_routers(sender: Sender) -> list[APIRouter]:
    runtime = sender.runtime
    Auth = Depends(runtime.auth)
    tmpl = APIRouter(prefix="/v1/templates", tags=["templates"], responses=ERROR_RESPONSES)

    def api_error(exc: Exception) -> ApiError:
        if isinstance(exc, use.TemplateInvalid):
            return ApiError(
                422, "invalid_request", str(exc), details=[{"field": exc.field, "problem": exc.problem}]
            )
        if isinstance(exc, use.TemplateNotFound):
            return ApiError(404, "not_found", str(exc))
        if isinstance(exc, use.TemplateConflict):
            return ApiError(409, "conflict", str(exc))
        if isinstance(exc, use.MetaRefused):
            return ApiError(exc.status_code, "meta_refused", str(exc))
        raise exc

    errors = (use.TemplateInvalid, use.TemplateNotFound, use.TemplateConflict, use.MetaRefused)

    @tmpl.get("", response_model=TemplateCatalogue, summary="The tenant's templates")
    async def list_templates(
        tenant: Tenant = Auth,
        name: str | None = Query(default=None, max_length=512),
        language: str | None = Query(default=None, max_length=15),
        status: str | None = Query(default=None, max_length=40),
    ) -> TemplateCatalogue:
        wanted = status.upper() if status else None
        async with runtime.engine.connect() as conn:
            rows = await trepo.list_(conn, tenant.id, name=name, language=language, status=wanted)
            legacy = await repo.list_templates(conn, tenant.id, name=name, status=wanted)
        return TemplateCatalogue(
            templates=[template_view(r) for r in rows],
            items=[
                TemplateStatusView(
                    name=r.name,
                    language=r.language,
                    status=r.status,
                    reason=r.reason,
                    at=r.at,
                    sendable=r.status not in UNSENDABLE_TEMPLATE_STATUSES,
                )
                for r in legacy
                if not language or r.language == language
            ],
        )

    @tmpl.post(
        "",
        status_code=201,
        response_model=Template,
        summary="Add a template (on a Meta channel: submitted to Meta's review)",
        responses={502: {"description": "Meta could not be reached; nothing was stored"}},
    )
    async def create_template(body: TemplateCreate, tenant: Tenant = Auth) -> Template:
        data = body.model_dump(exclude_none=True)
        data["buttons"] = [b.model_dump(exclude_none=True) for b in body.buttons]
        try:
            return template_view(await use.create(sender, tenant.id, data))
        except errors as exc:
            raise api_error(exc) from exc

    @tmpl.post("/sync", response_model=Synced, summary="Read the templates and their status from Meta now")
    async def sync_templates(tenant: Tenant = Auth, body: SyncRequest | None = None) -> Synced:
        try:
            rows = await use.sync(sender, tenant.id, body.channel_id if body else None)
        except errors as exc:
            raise api_error(exc) from exc
        return Synced(synced=len(rows), templates=[template_view(r) for r in rows])

    @tmpl.get("/{template_id}", response_model=Template, summary="A template")
    async def get_template(template_id: uuid.UUID, tenant: Tenant = Auth) -> Template:
        try:
            return template_view(await use.get(sender, tenant.id, template_id))
        except errors as exc:
            raise api_error(exc) from exc

    @tmpl.patch(
        "/{template_id}",
        response_model=Template,
        summary="Change a template (on Meta: back to review; Meta refuses some edits)",
        responses={409: {"description": "Meta does not edit the template in its current status"}},
    )
    async def update_template(template_id: uuid.UUID, body: TemplatePatch, tenant: Tenant = Auth) -> Template:
        changes = body.model_dump(exclude_unset=True)
        for fixed in ("name", "language"):
            if fixed in changes:
                raise ApiError(
                    422,
                    "invalid_request",
                    f"{fixed}: a template's {fixed} cannot change (Meta's rule): create a new template",
                )
        if body.buttons is not None:
            changes["buttons"] = [b.model_dump(exclude_none=True) for b in body.buttons]
        for required in ("category", "body"):
            if required in changes and changes[required] is None:
                raise ApiError(422, "invalid_request", f"{required}: cannot be null")
        try:
            return template_view(await use.update(sender, tenant.id, template_id, changes))
        except errors as exc:
            raise api_error(exc) from exc

    @tmpl.delete("/{template_id}", status_code=204, summary="Delete a template (on Meta too)")
    async def delete_template(template_id: uuid.UUID, tenant: Tenant = Auth) -> Response:
        try:
            await use.delete(sender, tenant.id, template_id)
        except errors as exc:
            raise api_error(exc) from exc
        return Response(status_code=204)

    return [tmpl]
