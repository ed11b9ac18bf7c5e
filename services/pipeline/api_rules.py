"""HTTP API of notification rules: ``/v1/rules`` (CRUD, preview) and ``/v1/rule-decisions``,
tenant-scoped by the caller's API key."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field, field_validator, model_validator

from services.pipeline import repository_rules as repo
from services.pipeline import rules
from services.pipeline.rules_domain import (
    Condition,
    MessageSpec,
    Op,
    Rule,
    Verdict,
    base_type,
    builtins,
    is_path,
    syntax_problem,
)
from services.pipeline.templates_client import SenderUnavailable, TemplateCatalogue
from shared.api import ERROR_RESPONSES, ApiError, RequestModel
from shared.service import ServiceRuntime
from shared.tenancy import Tenant

_LANGUAGE = re.compile(r"^[a-z]{2,3}([_-][A-Za-z0-9]{2,8})?$")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
Scalar = str | int | float | bool


def _path(value: str) -> str:
    if not is_path(value):
        raise ValueError(
            f"{value!r} is not a field path: use names joined by dots, e.g. customer.phone or items.0.sku"
        )
    return value


class ConditionIn(RequestModel):
    field: str = Field(min_length=1, max_length=200, examples=["status"])
    op: Op = Field(
        description="equals (value: one value), in / not_in (value: a list), exists (value: true/false)"
    )
    value: Scalar | list[Scalar] | None = Field(
        default=None, examples=[["payment_confirmed", "preparing", "ready"]]
    )

    _field = field_validator("field")(_path)

    @model_validator(mode="after")
    def _value_fits_op(self) -> ConditionIn:
        if self.op in ("in", "not_in"):
            if not isinstance(self.value, list) or not self.value:
                raise ValueError(f'{self.op!r} needs value: a non-empty list, e.g. ["ready", "delivered"]')
        elif self.op == "equals":
            if self.value is None or isinstance(self.value, list):
                raise ValueError("'equals' needs value: one string, number or boolean (use 'in' for a list)")
        elif self.value is not None and not isinstance(self.value, bool):
            raise ValueError("'exists' takes value true, false or nothing")
        return self


class TemplateRef(RequestModel):
    name: str = Field(min_length=1, max_length=512, pattern=r"^[a-z0-9_]+$", examples=["order_ready"])
    variables: dict[str, str] = Field(
        default_factory=dict,
        max_length=100,
        description="The template's named variables, each mapped from an event field path.",
        examples=[{"customer_name": "customer_name", "order_number": "order_id"}],
    )

    @field_validator("variables")
    @classmethod
    def _paths(cls, value: dict[str, str]) -> dict[str, str]:
        for path in value.values():
            _path(path)
        return value


class MessageIn(RequestModel):
    """Give exactly one: a text (Jinja2, e.g. ``Olá {{ customer_name }}``) or a catalogue template."""

    text: str | None = Field(default=None, min_length=1, max_length=4096)
    template: TemplateRef | None = None

    @model_validator(mode="after")
    def _one(self) -> MessageIn:
        if (self.text is None) == (self.template is None):
            raise ValueError("give exactly one of 'text' or 'template'")
        if self.text is not None and (problem := syntax_problem(self.text)):
            raise ValueError(f"text is {problem}")
        return self


class RuleIn(RequestModel):
    name: str = Field(
        pattern=_NAME, examples=["order.ready"], description="A built-in default's name replaces it."
    )
    event_type: str = Field(min_length=1, max_length=200, examples=["order.status_changed"])
    filter: list[ConditionIn] = Field(default_factory=list, max_length=20, description="All must hold.")
    recipient: str = Field(
        default="customer_phone", max_length=200, description="Field path of the E.164 phone."
    )
    language_field: str | None = Field(
        default=None,
        max_length=200,
        description="Field path of the customer's language (default: 'language').",
    )
    messages: dict[str, MessageIn] = Field(
        min_length=1, max_length=20, description="Per language, e.g. pt_BR, en."
    )
    fallback_language: str = Field(
        examples=["en"], description="Used when the event's language has no message."
    )
    priority: int = Field(
        default=8, ge=1, le=10, description="Priority of the messages it requests (10 first)."
    )
    channel_id: uuid.UUID | None = None
    enabled: bool = True

    _recipient = field_validator("recipient")(_path)

    @field_validator("language_field")
    @classmethod
    def _language_field(cls, value: str | None) -> str | None:
        return _path(value) if value is not None else None

    @field_validator("event_type")
    @classmethod
    def _event_type(cls, value: str) -> str:
        return base_type(value)

    @field_validator("messages")
    @classmethod
    def _languages(cls, value: dict[str, MessageIn]) -> dict[str, MessageIn]:
        for lang in value:
            if not _LANGUAGE.match(lang):
                raise ValueError(f"{lang!r} is not a language code: use e.g. pt_BR, en, en_US")
        return value

    @model_validator(mode="after")
    def _fallback(self) -> RuleIn:
        if self.fallback_language not in self.messages:
            raise ValueError(
                f"fallback_language {self.fallback_language!r} has no message: use one of {sorted(self.messages)}"
            )
        return self

    def to_rule(self, rule_id: uuid.UUID | None = None) -> Rule:
        return Rule(
            id=rule_id,
            name=self.name,
            event_type=self.event_type,
            conditions=tuple(Condition(c.field, c.op, c.value) for c in self.filter),
            recipient=self.recipient,
            language_field=self.language_field,
            messages={
                lang: MessageSpec(text=m.text)
                if m.template is None
                else MessageSpec(template=m.template.name, variables=dict(m.template.variables))
                for lang, m in self.messages.items()
            },
            fallback_language=self.fallback_language,
            priority=self.priority,
            channel_id=self.channel_id,
            enabled=self.enabled,
        )


class RulePatch(RequestModel):
    """Any of a rule's fields; the result is checked as a whole, like a new rule."""

    name: str | None = None
    event_type: str | None = None
    filter: list[dict[str, Any]] | None = None
    recipient: str | None = None
    language_field: str | None = None
    messages: dict[str, dict[str, Any]] | None = None
    fallback_language: str | None = None
    priority: int | None = None
    channel_id: uuid.UUID | None = None
    enabled: bool | None = None


class RuleView(BaseModel):
    id: uuid.UUID | None = Field(description="None for a built-in default (replace it by saving its name).")
    name: str
    event_type: str
    filter: list[dict[str, Any]]
    recipient: str
    language_field: str | None
    messages: dict[str, dict[str, Any]]
    fallback_language: str
    priority: int
    channel_id: uuid.UUID | None
    enabled: bool
    builtin: bool
    created_at: datetime | None = None
    updated_at: datetime | None = None


class RuleList(BaseModel):
    items: list[RuleView]


class PreviewIn(RequestModel):
    data: dict[str, Any] = Field(description="The sample event's data, as it would be posted to ingest.")
    id: str = Field(default="preview", max_length=200)
    source: str = Field(default="/preview", max_length=500)


class PreviewView(BaseModel):
    rule: str
    outcome: str = Field(description="sent (what it would send), filtered or unsendable")
    reason: str
    to: str | None
    language: str | None
    content: dict[str, Any] | None = Field(
        description="{kind: text, body} or {kind: template, name, language, variables}"
    )
    text: str | None = Field(description="The text's body, when the message is a text.")


class DecisionView(BaseModel):
    event_id: str
    event_source: str
    event_type: str
    order_id: str | None
    status: str | None
    rule: str | None
    outcome: str = Field(description="sent, filtered, stale, duplicate, no_rule or unsendable")
    reason: str
    language: str | None
    message_id: uuid.UUID | None
    content: dict[str, Any] | None
    created_at: datetime


class DecisionList(BaseModel):
    items: list[DecisionView]


def _view(rule: Rule, row: Any = None) -> RuleView:
    values = rules.rule_values(rule)
    return RuleView(
        id=rule.id,
        builtin=rule.builtin,
        created_at=row.created_at if row is not None else None,
        updated_at=row.updated_at if row is not None else None,
        **values,
    )


def _preview_view(v: Verdict) -> PreviewView:
    r = v.rendered
    return PreviewView(
        rule=v.rule.name if v.rule else "",
        outcome=v.outcome,
        reason=v.reason,
        to=str(r.to) if r else None,
        language=r.language if r else None,
        content=r.content if r else None,
        text=r.content.get("body") if r and r.content["kind"] == "text" else None,
    )


def _invalid(problems: list[dict[str, str]]) -> ApiError:
    summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
    return ApiError(422, "invalid_request", f"rule is invalid: {summary}; nothing was stored", problems)


def _not_found(rule_id: uuid.UUID) -> ApiError:
    return ApiError(404, "not_found", f"no rule {rule_id} for this tenant (GET /v1/rules lists them)")


def routers(runtime: ServiceRuntime, catalogue: TemplateCatalogue) -> list[APIRouter]:
    auth = Depends(runtime.auth)
    api = APIRouter(prefix="/v1/rules", tags=["rules"], responses=ERROR_RESPONSES)
    decisions = APIRouter(prefix="/v1/rule-decisions", tags=["rules"], responses=ERROR_RESPONSES)

    async def save(tenant: Tenant, body: RuleIn, request: Request, rule_id: uuid.UUID | None) -> RuleView:
        new_id = rule_id or uuid.uuid4()
        rule = body.to_rule(new_id)
        async with runtime.uow() as uow:
            if rule_id is not None and await repo.get_rule(uow.conn, tenant.id, rule_id) is None:
                raise _not_found(rule_id)
            try:
                await rules.check_rule(
                    uow.conn, tenant.id, rule, catalogue, request.headers.get("authorization", "")
                )
            except rules.RuleProblems as exc:
                raise _invalid(exc.problems) from None
            except SenderUnavailable as exc:
                raise ApiError(
                    503,
                    "unavailable",
                    f"the sender could not be asked about the rule's templates ({exc}); nothing was stored, retry",
                ) from None
            values = rules.rule_values(rule)
            try:
                if rule_id is None:
                    await repo.insert_rule(uow.conn, {"id": new_id, "tenant_id": tenant.id, **values})
                else:
                    await repo.update_rule(uow.conn, tenant.id, rule_id, values)
            except repo.NameTaken:
                raise _invalid(
                    [
                        {
                            "field": "name",
                            "problem": f"this tenant already has a rule named {rule.name!r}: pick another",
                        }
                    ]
                ) from None
            row = await repo.get_rule(uow.conn, tenant.id, new_id)
            await uow.commit()
        return _view(rules.rule_from_row(row), row)

    @api.get(
        "", response_model=RuleList, summary="Rules in force: the tenant's, then the defaults not replaced"
    )
    async def list_rules(tenant: Tenant = auth) -> RuleList:
        async with runtime.engine.connect() as conn:
            rows = await repo.list_rules(conn, tenant.id)
        own = [_view(rules.rule_from_row(r), r) for r in rows]
        names = {r.name for r in rows}
        return RuleList(items=[*own, *(_view(b) for b in builtins() if b.name not in names)])

    @api.post(
        "",
        response_model=RuleView,
        status_code=201,
        summary="Create a rule",
        description="422 naming the problem (a field path the event type cannot have, a template the "
        "sender's catalogue does not have, a variable it does not declare, a bad filter); 503 when the "
        "sender cannot be asked about a template. Nothing is stored unless it is valid.",
        responses={503: {"description": "the sender could not be asked; nothing stored"}},
    )
    async def create_rule(body: RuleIn, request: Request, tenant: Tenant = auth) -> RuleView:
        return await save(tenant, body, request, None)

    @api.get("/{rule_id}", response_model=RuleView, summary="A rule", responses={404: {}})
    async def get_rule(rule_id: uuid.UUID, tenant: Tenant = auth) -> RuleView:
        async with runtime.engine.connect() as conn:
            row = await repo.get_rule(conn, tenant.id, rule_id)
        if row is None:
            raise _not_found(rule_id)
        return _view(rules.rule_from_row(row), row)

    @api.patch("/{rule_id}", response_model=RuleView, summary="Change a rule", responses={404: {}})
    async def patch_rule(
        rule_id: uuid.UUID, body: RulePatch, request: Request, tenant: Tenant = auth
    ) -> RuleView:
        async with runtime.engine.connect() as conn:
            row = await repo.get_rule(conn, tenant.id, rule_id)
        if row is None:
            raise _not_found(rule_id)
        merged = {**rules.rule_values(rules.rule_from_row(row)), **body.model_dump(exclude_unset=True)}
        try:
            full = RuleIn.model_validate(merged)
        except ValueError as exc:
            errors = getattr(exc, "errors", lambda: [])()
            problems = [
                {
                    "field": ".".join(map(str, e["loc"])) or "body",
                    "problem": str(e["msg"]).removeprefix("Value error, "),
                }
                for e in errors
            ] or [{"field": "body", "problem": str(exc)}]
            raise _invalid(problems) from None
        return await save(tenant, full, request, rule_id)

    @api.delete("/{rule_id}", status_code=204, summary="Delete a rule (a replaced default is back)")
    async def delete_rule(rule_id: uuid.UUID, tenant: Tenant = auth) -> Response:
        async with runtime.uow() as uow:
            found = await repo.delete_rule(uow.conn, tenant.id, rule_id)
            await uow.commit()
        if not found:
            raise _not_found(rule_id)
        return Response(status_code=204)

    @api.post(
        "/{rule_id}/preview",
        response_model=PreviewView,
        summary="The message a rule would send for a sample event; nothing is sent or stored",
        responses={404: {}},
    )
    async def preview_rule(rule_id: uuid.UUID, body: PreviewIn, tenant: Tenant = auth) -> PreviewView:
        async with runtime.engine.connect() as conn:
            row = await repo.get_rule(conn, tenant.id, rule_id)
            if row is None:
                raise _not_found(rule_id)
            rule = rules.rule_from_row(row)
            problems = await rules.sample_problems(conn, tenant.id, rule.event_type, body.data)
        if problems:
            summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
            raise ApiError(
                422, "invalid_request", f"the sample is not a valid {rule.event_type}: {summary}", problems
            )
        return _preview_view(rules.preview(rule, body.data, body.id, body.source))

    @decisions.get(
        "",
        response_model=DecisionList,
        summary="What the rules decided for each event: sent, filtered, stale, duplicate, no_rule, unsendable",
    )
    async def list_decisions(
        event_id: str | None = Query(None, max_length=200, description="The event's id as it was posted"),
        order_id: str | None = Query(None, max_length=200),
        limit: int = Query(100, ge=1, le=1000),
        tenant: Tenant = auth,
    ) -> DecisionList:
        async with runtime.engine.connect() as conn:
            rows = await repo.list_decisions(
                conn, tenant.id, event_id=event_id, order_id=order_id, limit=limit
            )
        return DecisionList(
            items=[
                DecisionView(
                    event_id=r.event_id,
                    event_source=r.event_source,
                    event_type=r.event_type,
                    order_id=r.order_id,
                    status=r.status,
                    rule=r.rule_name,
                    outcome=r.outcome,
                    reason=r.reason,
                    language=r.language,
                    message_id=r.message_id,
                    content=r.content,
                    created_at=r.created_at,
                )
                for r in rows
            ]
        )

    return [api, decisions]
