"""Notification rules, pure: does a rule match an event, in which language, what it says; which
field paths an event type can have; where an order status stands in the lifecycle. No I/O.

A rule's texts are Jinja2 templates rendered in an ``ImmutableSandboxedEnvironment`` with
``StrictUndefined``: a tenant's text can read the event's fields (``{{ customer_name }}``,
``{{ data.order_id }}``, ``{{ event.id }}``) and nothing else, and a field that is missing is an
error, not an empty string.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel

from services.pipeline.domain import humanize
from shared.events import OrderStatusChanged

Op = Literal["equals", "in", "not_in", "exists"]
Outcome = Literal["sent", "filtered", "stale", "duplicate", "no_rule", "unsendable"]
ORDER_TYPE = OrderStatusChanged.event_type

_MISSING = object()
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|\d+))*$")


# --- rules -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    field: str
    op: Op
    value: Any = None

    def __post_init__(self) -> None:
        # decided once per rule, not per event: a plain name is one dict look-up; a list of
        # hashable values is a set
        object.__setattr__(self, "_plain", "." not in self.field)
        members = self.value
        if isinstance(members, list | tuple):
            try:
                members = frozenset(members)
            except TypeError:
                members = tuple(members)
        object.__setattr__(self, "_members", members)

    def holds(self, data: Mapping[str, Any]) -> bool:
        found = data.get(self.field, _MISSING) if self._plain else get_path(data, self.field)  # type: ignore[attr-defined]
        if self.op == "exists":
            present = found is not _MISSING and found is not None
            return present is (self.value is not False)
        if found is _MISSING:
            return False
        if self.op == "equals":
            return bool(found == self.value)
        try:
            inside = found in self._members  # type: ignore[attr-defined]
        except TypeError:  # an unhashable value (a list, an object) is in no set of scalars
            inside = False
        return not inside if self.op == "not_in" else inside

    def describe(self) -> str:
        if self.op == "exists":
            return f"{self.field} {'exists' if self.value is not False else 'does not exist'}"
        if self.op == "equals":
            return f"{self.field} equals {self.value!r}"
        return f"{self.field} {self.op.replace('_', ' ')} {list(self.value)!r}"


@dataclass(frozen=True)
class MessageSpec:
    """One language's message: a text (Jinja2) or a catalogue template whose named variables are
    mapped from event field paths."""

    text: str | None = None
    template: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    name: str
    event_type: str
    conditions: tuple[Condition, ...]
    recipient: str
    messages: Mapping[str, MessageSpec]
    fallback_language: str
    priority: int = 8
    language_field: str | None = None
    channel_id: uuid.UUID | None = None
    enabled: bool = True
    id: uuid.UUID | None = None
    builtin: bool = False


@dataclass(frozen=True)
class Rendered:
    language: str
    to: Any
    #: ``{"kind": "text", "body"}`` or ``{"kind": "template", "name", "language", "variables"}``
    content: dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    rule: Rule | None
    outcome: Outcome
    reason: str
    rendered: Rendered | None = None


class RenderError(Exception):
    """A rule's message cannot be made from this event (a missing field, a sandbox refusal)."""


def get_path(data: Any, path: str) -> Any:
    """``customer.name`` / ``items.0.sku`` in ``data``; ``_MISSING`` when it is not there."""
    node = data
    for part in path.split("."):
        if isinstance(node, Mapping):
            if part not in node:
                return _MISSING
            node = node[part]
        elif isinstance(node, list | tuple) and part.isdigit():
            i = int(part)
            if i >= len(node):
                return _MISSING
            node = node[i]
        else:
            return _MISSING
    return node


def is_path(path: str) -> bool:
    return bool(_PATH.match(path))


def base_type(event_type: str) -> str:
    """``order.status_changed.v1`` → ``order.status_changed``: rules name the unversioned type."""
    return re.sub(r"\.v\d+$", "", event_type)


def choose_language(rule: Rule, data: Mapping[str, Any]) -> str:
    """The event's (customer's) language when the rule has a message in it — exactly, or by its
    base language (``en_US`` → ``en``, ``pt`` → ``pt_BR``) — else the rule's fallback."""
    wanted = get_path(data, rule.language_field or "language")
    if isinstance(wanted, str) and wanted:
        if wanted in rule.messages:
            return wanted
        base = re.split(r"[_-]", wanted)[0].lower()
        for lang in rule.messages:
            if re.split(r"[_-]", lang)[0].lower() == base:
                return lang
    return rule.fallback_language


# --- rendering ---------------------------------------------------------------------------------

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
_ENV.filters["humanize"] = humanize


@functools.lru_cache(maxsize=4096)
def compiled(source: str) -> Any:
    """A text's compiled template, once per distinct text (rule evaluation stays cheap)."""
    return _ENV.from_string(source)


def text_names(source: str) -> set[str]:
    """The top-level names a text reads (``{{ customer_name }}`` → ``customer_name``).
    Raises ``TemplateSyntaxError`` for a text that is not a template."""
    return set(meta.find_undeclared_variables(_ENV.parse(source)))


def syntax_problem(source: str) -> str | None:
    try:
        _ENV.parse(source)
    except TemplateSyntaxError as exc:
        return f"not a valid template (line {exc.lineno}: {exc.message})"
    return None


def context(data: Mapping[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
    """What a text can read: the event's data fields by name, ``data`` and ``event``."""
    return {**data, "data": data, "event": event}


def render(rule: Rule, data: Mapping[str, Any], event: Mapping[str, Any] | None = None) -> Rendered:
    """The message ``rule`` makes of an event's ``data``; raises ``RenderError``."""
    language = choose_language(rule, data)
    spec = rule.messages[language]
    to = get_path(data, rule.recipient)
    if to is _MISSING or to in (None, ""):
        raise RenderError(f"the event has no recipient at {rule.recipient!r}")
    if spec.template is not None:
        variables: dict[str, str] = {}
        for name, path in spec.variables.items():
            value = get_path(data, path)
            if value is _MISSING or value is None:
                raise RenderError(f"template variable {name!r}: the event has no {path!r}")
            variables[name] = str(value)
        content = {"kind": "template", "name": spec.template, "language": language, "variables": variables}
        return Rendered(language=language, to=to, content=content)
    try:
        body = compiled(spec.text or "").render(context(data, event or {})).strip()
    except (UndefinedError, SecurityError, TypeError, ValueError) as exc:
        raise RenderError(f"the {language} text cannot be rendered: {exc}") from exc
    if not body:
        raise RenderError(f"the {language} text renders empty for this event")
    return Rendered(language=language, to=to, content={"kind": "text", "body": body})


def evaluate(
    rules: list[Rule], event_type: str, data: Mapping[str, Any], event: Mapping[str, Any] | None = None
) -> list[Verdict]:
    """Every rule's decision for one event, highest priority first.

    The tenant's own enabled rules for the type are tried first; the built-in defaults only when
    none of them matches (a tenant's rule of a built-in's name replaces it, see ``effective``)."""
    kind = base_type(event_type)
    candidates = [r for r in rules if r.event_type == kind and r.enabled]
    if not candidates:
        return [Verdict(None, "no_rule", f"no enabled rule for {kind}")]
    verdicts: list[Verdict] = []
    for group in (
        [r for r in candidates if not r.builtin],
        [r for r in candidates if r.builtin],
    ):
        matched = False
        filtered: list[Verdict] = []
        for rule in sorted(group, key=lambda r: (-r.priority, r.name)):
            failed = next((c for c in rule.conditions if not c.holds(data)), None)
            if failed is not None:
                filtered.append(Verdict(rule, "filtered", f"filter not met: {failed.describe()}"))
                continue
            matched = True
            try:
                verdicts.append(Verdict(rule, "sent", "matched", render(rule, data, event)))
            except RenderError as exc:
                verdicts.append(Verdict(rule, "unsendable", str(exc)))
        # the tenant's own rules say why they did not match; the defaults only when none spoke
        if group and (not group[0].builtin or not matched):
            verdicts.extend(filtered)
        if matched:
            break
    return verdicts


def effective(tenant_rules: list[Rule], builtins: list[Rule]) -> list[Rule]:
    """A tenant's rules plus the built-in defaults it has not replaced (same name → the tenant's)."""
    names = {r.name for r in tenant_rules}
    return [*tenant_rules, *(b for b in builtins if b.name not in names)]


# --- which field paths an event type can have --------------------------------------------------


def model_has_path(model: type[BaseModel], path: str) -> bool:
    """Can an event of ``model`` carry ``path``? Walks nested models, lists (a number or the
    items' fields) and dicts (any key)."""
    return _annotation_has(model, path.split("."))


def _annotation_has(tp: Any, parts: list[str]) -> bool:
    if not parts:
        return True
    origin = get_origin(tp)
    if origin in (Union, UnionType):
        return any(_annotation_has(a, parts) for a in get_args(tp) if a is not type(None))
    if origin is not None and getattr(origin, "__name__", "") == "Annotated":
        return _annotation_has(get_args(tp)[0], parts)
    if hasattr(tp, "__metadata__"):  # typing.Annotated
        return _annotation_has(get_args(tp)[0], parts)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        info = tp.model_fields.get(parts[0])
        return info is not None and _annotation_has(info.annotation, parts[1:])
    if origin in (list, tuple, set, frozenset):
        args = get_args(tp)
        item = args[0] if args else Any
        rest = parts[1:] if parts[0].isdigit() else parts
        return _annotation_has(item, rest)
    if origin is dict or tp is dict:
        args = get_args(tp)
        return _annotation_has(args[1] if len(args) == 2 else Any, parts[1:])
    return tp is Any


def schema_has_path(schema: Mapping[str, Any], path: str) -> bool:
    """Can a document valid against JSON Schema ``schema`` carry ``path``?"""
    return _schema_has(schema, path.split("."))


def _schema_has(schema: Any, parts: list[str]) -> bool:
    if not parts:
        return True
    if not isinstance(schema, Mapping):
        return schema is True
    for key in ("allOf", "anyOf", "oneOf"):
        if any(_schema_has(s, parts) for s in schema.get(key) or []):
            return True
    props = schema.get("properties") or {}
    if parts[0] in props:
        return _schema_has(props[parts[0]], parts[1:])
    items = schema.get("items")
    if items is not None and parts[0].isdigit():
        return _schema_has(items, parts[1:])
    extra = schema.get("additionalProperties", None)
    if isinstance(extra, Mapping):
        return _schema_has(extra, parts[1:])
    # an object that lists no properties and does not forbid others can carry anything
    typ = schema.get("type")
    return not props and extra is not False and typ in (None, "object") and not schema.get("allOf")


def rule_paths(rule: Rule) -> list[tuple[str, str]]:
    """Every field path a rule reads, with where it is read (for a 422 that names it)."""
    out = [(f"filter.{i}.field", c.field) for i, c in enumerate(rule.conditions)]
    out.append(("recipient", rule.recipient))
    if rule.language_field:
        out.append(("language_field", rule.language_field))
    for lang, spec in rule.messages.items():
        for var, path in spec.variables.items():
            out.append((f"messages.{lang}.variables.{var}", path))
        if spec.text is not None and syntax_problem(spec.text) is None:
            for name in sorted(text_names(spec.text) - {"data", "event"}):
                out.append((f"messages.{lang}.text", name))
    return out


def missing_paths(rule: Rule, has_path: Callable[[str], bool]) -> list[tuple[str, str]]:
    return [(where, p) for where, p in rule_paths(rule) if not has_path(p)]


# --- the order lifecycle -----------------------------------------------------------------------

#: where each status stands; a status ranked below (or beside) the order's latest is stale
LIFECYCLE_RANK: dict[str, int] = {
    "payment_confirmed": 10,
    "preparing": 20,
    "ready": 30,
    "ready_for_pickup": 30,
    "out_for_delivery": 40,
    "delivered": 50,
    "cancelled": 50,
}


def lifecycle_rank(status: str) -> int | None:
    return LIFECYCLE_RANK.get(status)


def is_stale(status: str, latest_status: str | None, latest_rank: int | None) -> bool:
    """``preparing`` after ``ready`` is stale; so is anything after ``delivered``/``cancelled``
    other than a repeat of it. Statuses outside the lifecycle are never stale."""
    rank = lifecycle_rank(status)
    if rank is None or latest_rank is None or status == latest_status:
        return False
    return rank <= latest_rank


# --- the built-in defaults ---------------------------------------------------------------------

LIFECYCLE = ("payment_confirmed", "preparing", "ready", "out_for_delivery", "delivered", "cancelled")

_GREETING_EN = "{% if customer_name %}{{ customer_name }}, y{% else %}Y{% endif %}our order {{ order_id }}"
_GREETING_PT = "{% if customer_name %}Olá, {{ customer_name }}! {% endif %}Seu pedido {{ order_id }}"
_PT: dict[str, str] = {
    "payment_confirmed": " teve o pagamento confirmado.",
    "preparing": " está sendo preparado.",
    "ready": " está pronto.",
    "out_for_delivery": " saiu para entrega.",
    "delivered": " foi entregue.",
    "cancelled": " foi cancelado.",
}


def _order_rule(name: str, conditions: tuple[Condition, ...], pt: str) -> Rule:
    return Rule(
        name=name,
        event_type=ORDER_TYPE,
        conditions=conditions,
        recipient="customer_phone",
        messages={
            # the English sentence is the one Herald always sent: "Your order 1042 is ready"
            "en": MessageSpec(text=_GREETING_EN + " is {{ status | humanize }}"),
            "pt_BR": MessageSpec(text=_GREETING_PT + pt),
        },
        fallback_language="en",
        # order updates are transactional: they overtake marketing sends
        priority=8,
        builtin=True,
    )


#: every tenant has these until it saves a rule of the same name
BUILTIN_RULES: tuple[Rule, ...] = (
    *(_order_rule(f"order.{s}", (Condition("status", "equals", s),), _PT[s]) for s in LIFECYCLE),
    # any other status an order system reports ("ready_for_pickup") still reaches the customer
    _order_rule(
        "default-order-status",
        (Condition("status", "not_in", LIFECYCLE),),
        " mudou para: {{ status | humanize }}.",
    ),
)


def builtins() -> list[Rule]:
    """The defaults (mutually exclusive: ``default-order-status`` takes the statuses outside the
    lifecycle)."""
    return list(BUILTIN_RULES)
