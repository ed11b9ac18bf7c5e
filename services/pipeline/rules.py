"""Notification rules, the use cases: an event becomes the messages its tenant's rules say, once
per order and status, never out of order; every decision is recorded; a rule is checked when it
is saved (field paths the event type can have, catalogue templates and their variables)."""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.pipeline import repository_rules as repo
from services.pipeline.domain import message_id_for
from services.pipeline.rules_domain import (
    ORDER_TYPE,
    Condition,
    MessageSpec,
    Rule,
    Verdict,
    base_type,
    builtins,
    effective,
    evaluate,
    is_stale,
    lifecycle_rank,
    missing_paths,
    model_has_path,
    schema_has_path,
)
from services.pipeline.templates_client import TemplateCatalogue
from shared.events import MessageRequested, OrderStatusChanged, TemplateContent, new_event
from shared.service import ServiceRuntime

SOURCE = "/herald/pipeline"
CONSUMER = "order-status-notifier"
DECISIONS = Counter("herald_pipeline_rule_decisions_total", "Rule decisions per event", ["outcome"])
NOTIFICATIONS = Counter("herald_pipeline_notifications_total", "Messages requested by rules", ["rule"])
log = logging.getLogger("herald.pipeline.rules")

#: built-in event types rules can match (the pipeline consumes them), by unversioned name
BUILTIN_TYPES = {ORDER_TYPE: OrderStatusChanged}


# --- rows ⇄ rules ------------------------------------------------------------------------------


#: rules already built from their rows, by (id, updated_at): a write changes updated_at, so an
#: edited rule is built again and an unchanged one costs a dictionary look-up per event
_BUILT: OrderedDict[tuple[Any, Any], Rule] = OrderedDict()
_BUILT_MAX = 20_000


def rule_from_row(row: Any) -> Rule:
    key = (row.id, row.updated_at)
    built = _BUILT.get(key)
    if built is None:
        built = _BUILT[key] = _build(row)
        if len(_BUILT) > _BUILT_MAX:
            _BUILT.popitem(last=False)
    return built


def _build(row: Any) -> Rule:
    return Rule(
        id=row.id,
        name=row.name,
        event_type=row.event_type,
        conditions=tuple(Condition(c["field"], c["op"], c.get("value")) for c in row.filter),
        recipient=row.recipient,
        language_field=row.language_field,
        messages={lang: spec_from_json(m) for lang, m in row.messages.items()},
        fallback_language=row.fallback_language,
        priority=row.priority,
        channel_id=row.channel_id,
        enabled=row.enabled,
    )


def spec_from_json(m: Mapping[str, Any]) -> MessageSpec:
    if m.get("template"):
        t = m["template"]
        return MessageSpec(template=t["name"], variables=dict(t.get("variables") or {}))
    return MessageSpec(text=m["text"])


def spec_to_json(spec: MessageSpec) -> dict[str, Any]:
    if spec.template is not None:
        return {"template": {"name": spec.template, "variables": dict(spec.variables)}}
    return {"text": spec.text}


def rule_values(rule: Rule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "event_type": rule.event_type,
        "filter": [{"field": c.field, "op": c.op, "value": c.value} for c in rule.conditions],
        "recipient": rule.recipient,
        "language_field": rule.language_field,
        "messages": {lang: spec_to_json(s) for lang, s in rule.messages.items()},
        "fallback_language": rule.fallback_language,
        "priority": rule.priority,
        "channel_id": rule.channel_id,
        "enabled": rule.enabled,
    }


async def load_rules(conn: AsyncConnection, tenant_id: uuid.UUID) -> list[Rule]:
    """The rules in force for the tenant: its own, and the built-in defaults it has not replaced
    (same name). One query per event, whatever the number of rules."""
    return effective([rule_from_row(r) for r in await repo.list_rules(conn, tenant_id)], builtins())


# --- validation on save ------------------------------------------------------------------------


class RuleProblems(Exception):
    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{p['field']}: {p['problem']}" for p in problems))
        self.problems = problems


async def tenant_schema(conn: AsyncConnection, tenant_id: uuid.UUID, name: str) -> dict[str, Any] | None:
    """The JSON Schema of a tenant's own event type, or None when it has not registered one (or
    the event-types module is not there)."""
    try:
        from services.pipeline import event_types  # written in a parallel branch: lazily
    except ImportError:
        return None
    schema_for = getattr(event_types, "schema_for", None)
    if schema_for is None:
        return None
    found = await schema_for(conn, tenant_id, name)
    return dict(found) if found is not None else None


async def path_checker(
    conn: AsyncConnection, tenant_id: uuid.UUID, event_type: str
) -> Callable[[str], bool] | None:
    """Whether a field path can exist on ``event_type``; None when the type is not known."""
    model = BUILTIN_TYPES.get(event_type)
    if model is not None:
        return lambda path: model_has_path(model, path)
    schema = await tenant_schema(conn, tenant_id, event_type)
    if schema is None:
        return None
    return lambda path: schema_has_path(schema, path)


async def check_rule(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    rule: Rule,
    catalogue: TemplateCatalogue,
    authorization: str,
) -> None:
    """Raise ``RuleProblems`` naming every field path the event type cannot have, a template the
    catalogue does not have, a variable it does not declare or one it needs that is not mapped.
    ``templates_client.SenderUnavailable`` when the catalogue cannot be asked."""
    problems: list[dict[str, str]] = []
    has_path = await path_checker(conn, tenant_id, rule.event_type)
    if has_path is None:
        known = ", ".join(sorted(BUILTIN_TYPES))
        problems.append(
            {
                "field": "event_type",
                "problem": f"{rule.event_type!r} is neither a built-in event type ({known}) nor one "
                "this tenant registered (POST /v1/event-types)",
            }
        )
    else:
        for where, path in missing_paths(rule, has_path):
            problems.append({"field": where, "problem": f"{rule.event_type} events have no field {path!r}"})
    for lang, spec in rule.messages.items():
        if spec.template is None:
            continue
        where = f"messages.{lang}.template"
        found = await catalogue.find(spec.template, lang, authorization)
        if found is None:
            problems.append(
                {
                    "field": f"{where}.name",
                    "problem": f"template {spec.template!r} in {lang} is not in the sender's catalogue "
                    "(see GET /v1/templates on the sender)",
                }
            )
            continue
        declared = list(found.get("variables") or [])
        for name in spec.variables:
            if name not in declared:
                problems.append(
                    {
                        "field": f"{where}.variables.{name}",
                        "problem": f"template {spec.template!r} does not declare variable {name!r} "
                        f"(it declares: {', '.join(declared) or 'none'})",
                    }
                )
        for name in declared:
            if name not in spec.variables:
                problems.append(
                    {
                        "field": f"{where}.variables",
                        "problem": f"template {spec.template!r} needs variable {name!r}: map it to an event field",
                    }
                )
    if problems:
        raise RuleProblems(problems)


# --- an event ----------------------------------------------------------------------------------


def requested(
    tenant_id: uuid.UUID, event_key: str, verdict: Verdict, data: Mapping[str, Any]
) -> MessageRequested:
    """The message request a ``sent`` verdict makes; raises ``ValidationError`` (e.g. not E.164)."""
    assert verdict.rule is not None and verdict.rendered is not None
    rule, rendered = verdict.rule, verdict.rendered
    order_id = data.get("order_id") if rule.event_type == ORDER_TYPE else None
    content = rendered.content
    body: dict[str, Any] = (
        {"text": content["body"]}
        if content["kind"] == "text"
        else {
            "content": TemplateContent(
                name=content["name"], language=content["language"], variables=content["variables"]
            )
        }
    )
    return MessageRequested(
        message_id=message_id_for(tenant_id, event_key, rule),
        to=rendered.to,
        priority=rule.priority,
        channel_id=rule.channel_id,
        origin="pipeline",
        correlation_id=f"order:{order_id}" if order_id else f"rule:{rule.name}"[:200],
        **body,
    )


async def on_event(
    runtime: ServiceRuntime,
    tenant_id: uuid.UUID,
    *,
    event_type: str,
    event_id: str,
    source: str,
    data: Mapping[str, Any],
) -> list[Verdict] | None:
    """Apply the tenant's rules to one event in one transaction (decisions, order progress and
    outbox rows commit together). None for a redelivery of an event already applied."""
    event_key = f"{source}:{event_id}"

    async def apply() -> list[Verdict] | None:
        async with runtime.uow() as uow:
            if not await uow.mark_processed(CONSUMER, event_key):
                return None
            final = await apply_rules(
                uow, tenant_id, event_type=event_type, event_id=event_id, source=source, data=data
            )
            await uow.commit()
            return final

    verdicts = await runtime.with_db("apply notification rules", apply)
    _count(verdicts or [])
    return verdicts


async def on_tenant_event(runtime: ServiceRuntime, uow: Any, event: Any) -> None:
    """The hook services.pipeline.event_types calls for a tenant's own event that matched its
    schema, inside the unit of work that records it (once per event): the rules apply there."""
    verdicts = await apply_rules(
        uow,
        event.tenantid,
        event_type=event.data.name,
        event_id=event.id,
        source=event.source,
        data=event.data.data,
    )
    _count(verdicts)


def _count(verdicts: list[Verdict]) -> None:
    for v in verdicts:
        DECISIONS.labels(v.outcome).inc()
        if v.outcome == "sent" and v.rule is not None:
            NOTIFICATIONS.labels(v.rule.name).inc()


async def apply_rules(
    uow: Any,
    tenant_id: uuid.UUID,
    *,
    event_type: str,
    event_id: str,
    source: str,
    data: Mapping[str, Any],
) -> list[Verdict]:
    """The rules' decisions for one event, written through ``uow`` (not committed here)."""
    kind = base_type(event_type)
    event_key = f"{source}:{event_id}"
    conn = uow.conn
    order_id = str(data["order_id"]) if kind == ORDER_TYPE and data.get("order_id") else None
    status = str(data.get("status") or "") if order_id else None
    verdicts: list[Verdict]
    if order_id and status:
        progress = await repo.lock_order(conn, tenant_id, order_id)
        if is_stale(status, progress.status, progress.rank):
            verdicts = [
                Verdict(
                    None,
                    "stale",
                    f"{status!r} arrived after {progress.status!r}: an earlier status, not sent",
                )
            ]
        else:
            rank = lifecycle_rank(status)
            if rank is not None and (progress.rank is None or rank > progress.rank):
                await repo.advance_order(conn, tenant_id, order_id, status, rank)
            verdicts = evaluate(await load_rules(conn, tenant_id), kind, data, _meta(kind, event_id, source))
    else:
        verdicts = evaluate(await load_rules(conn, tenant_id), kind, data, _meta(kind, event_id, source))
    final: list[Verdict] = []
    rows: list[dict[str, Any]] = []
    for v in verdicts:
        message_id = None
        if v.outcome == "sent":
            v, message_id = await _send(uow, tenant_id, event_key, event_id, order_id, status, v, data)
        final.append(v)
        rows.append(_decision(tenant_id, kind, event_id, source, order_id, status, v, message_id))
    await repo.insert_decisions(conn, rows)
    return final


def _meta(kind: str, event_id: str, source: str) -> dict[str, str]:
    return {"id": event_id, "type": kind, "source": source}


async def _send(
    uow: Any,
    tenant_id: uuid.UUID,
    event_key: str,
    event_id: str,
    order_id: str | None,
    status: str | None,
    v: Verdict,
    data: Mapping[str, Any],
) -> tuple[Verdict, uuid.UUID | None]:
    assert v.rule is not None
    try:
        request = requested(tenant_id, event_key, v, data)
    except ValidationError as exc:
        problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        return Verdict(v.rule, "unsendable", f"the message cannot be requested: {problem}", v.rendered), None
    if order_id and status:
        claimed = await repo.claim_notice(
            uow.conn,
            {
                "tenant_id": tenant_id,
                "order_id": order_id,
                "status": status,
                "rule_name": v.rule.name,
                "event_id": event_id,
                "message_id": request.message_id,
            },
        )
        if not claimed:
            reason = (
                f"order {order_id} was already notified of {status!r} (a repeated report): not sent again"
            )
            return Verdict(v.rule, "duplicate", reason, v.rendered), None
    subject = f"order/{order_id}" if order_id else f"rule/{v.rule.name}"
    uow.add_event(
        new_event(request, tenant_id=tenant_id, source=SOURCE, subject=subject), priority=v.rule.priority
    )
    return v, request.message_id


def _decision(
    tenant_id: uuid.UUID,
    kind: str,
    event_id: str,
    source: str,
    order_id: str | None,
    status: str | None,
    v: Verdict,
    message_id: uuid.UUID | None,
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "tenant_id": tenant_id,
        "event_id": event_id,
        "event_source": source,
        "event_type": kind,
        "order_id": order_id,
        "status": status,
        "rule_name": v.rule.name if v.rule else None,
        "outcome": v.outcome,
        "reason": v.reason[:1000],
        "language": v.rendered.language if v.rendered else None,
        "message_id": message_id,
        "content": v.rendered.content if v.rendered else None,
    }


# --- preview -----------------------------------------------------------------------------------


async def sample_problems(
    conn: AsyncConnection, tenant_id: uuid.UUID, event_type: str, data: Mapping[str, Any]
) -> list[dict[str, str]]:
    """What makes a sample event's data invalid for its type (the same check ingest makes)."""
    model = BUILTIN_TYPES.get(event_type)
    if model is not None:
        try:
            model.model_validate(data)
        except ValidationError as exc:
            return [
                {"field": "data." + ".".join(map(str, e["loc"])), "problem": e["msg"]} for e in exc.errors()
            ]
        return []
    schema = await tenant_schema(conn, tenant_id, event_type)
    if schema is None:
        return []
    import jsonschema

    return [
        {
            "field": "data." + ".".join(map(str, e.absolute_path)) if e.absolute_path else "data",
            "problem": e.message,
        }
        for e in jsonschema.Draft202012Validator(schema).iter_errors(dict(data))
    ]


def preview(rule: Rule, data: Mapping[str, Any], event_id: str, source: str) -> Verdict:
    """What ``rule`` would do with this event on its own: its message, or why it would not send.
    Nothing is stored or sent (order history — duplicates, stale statuses — is not consulted)."""
    trial = Rule(**{**rule.__dict__, "enabled": True, "builtin": False})
    verdict = evaluate([trial], rule.event_type, data, _meta(rule.event_type, event_id, source))[0]
    return Verdict(rule, verdict.outcome, verdict.reason, verdict.rendered)
