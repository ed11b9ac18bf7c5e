"""Pure decisions of the template catalogue: which variables a template has and in which order,
what is wrong with a template as written, how a message's named variables map onto its
parameters, how it reads as plain text, and how it is written for Meta's Cloud API.

A template's variables are its ``{{…}}`` placeholders, header first, then body, in order of first
appearance: all positional (``{{1}}``, ``{{2}}``… numbered from 1 in order) or all named
(``{{attendee_name}}``).

Meta holds a template's variables in one of two ``parameter_format`` s. ``POSITIONAL``: header
and body are numbered separately ``{{1}}…`` and a send gives the parameters in that order.
``NAMED``: the text keeps ``{{first_name}}``, the examples are ``…_text_named_params``
(``[{"param_name", "example"}]``) and every parameter of a send carries its ``parameter_name``;
Meta refuses a send in the other format. A named template made in Herald is created NAMED;
templates created before Herald knew the format were renumbered and stay POSITIONAL (the
catalogue's ``parameter_format`` says which)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]*)\s*\}\}")
NAMED = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")
#: statuses of Meta's review under which an existing template may be edited (Meta refuses the
#: others: a PENDING one is still in review; a DISABLED one is gone for good)
EDITABLE_STATUSES = frozenset({"APPROVED", "REJECTED", "PAUSED", "LOCAL"})
#: a template kept in Herald only (its channel renders it as text; Meta reviews nothing)
LOCAL = "LOCAL"
#: Meta's ``parameter_format`` values
POSITIONAL, NAMED_FORMAT = "POSITIONAL", "NAMED"


def parameter_format_for(style: str) -> str:
    """The ``parameter_format`` a new template gets at Meta: NAMED when its variables are named."""
    return NAMED_FORMAT if style == "named" else POSITIONAL


def is_named(template: Any) -> bool:
    return str(getattr(template, "parameter_format", POSITIONAL) or POSITIONAL).upper() == NAMED_FORMAT


class TemplateInvalid(ValueError):
    """A template, or a message's variables for one, that cannot be used; names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def placeholders(text: str | None) -> list[str]:
    """The placeholders of ``text`` in order of first appearance (each once)."""
    seen: list[str] = []
    for m in PLACEHOLDER.finditer(text or ""):
        if m.group(1) not in seen:
            seen.append(m.group(1))
    return seen


@dataclass(frozen=True)
class Parts:
    header_vars: list[str]
    body_vars: list[str]
    style: str  # "named" | "positional"

    @property
    def variables(self) -> list[str]:
        return [*self.header_vars, *(v for v in self.body_vars if v not in self.header_vars)]


MEDIA_FORMATS = ("IMAGE", "VIDEO", "DOCUMENT")
HEADER_FORMATS = ("TEXT", *MEDIA_FORMATS)
#: a URL button's variable: one ``{{1}}``, at the end of the URL (Meta's dynamic URL suffix)
URL_VARIABLE = re.compile(r"\{\{\s*1\s*\}\}$")


def header_format_of(template: Any) -> str | None:
    """TEXT, IMAGE, VIDEO or DOCUMENT; None when the template has no header."""
    fmt = getattr(template, "header_format", None)
    if fmt:
        return str(fmt).upper()
    return "TEXT" if getattr(template, "header", None) else None


def check_buttons(buttons: Sequence[Mapping[str, Any]]) -> None:
    """A URL button may end in ``{{1}}`` (the per-message suffix) with one ``example``."""
    for i, b in enumerate(buttons):
        url = str(b.get("url") or "")
        names = placeholders(url)
        if not names:
            continue
        if str(b.get("type")).upper() != "URL" or names != ["1"] or not URL_VARIABLE.search(url):
            raise TemplateInvalid(
                f"buttons.{i}",
                "a button's only variable is a URL button's suffix: one {{1}} at the end of its url",
            )
        example = b.get("example")
        if not (isinstance(example, list) and len(example) == 1 and str(example[0]).strip()):
            raise TemplateInvalid(
                f"buttons.{i}.example",
                'give the URL variable one example, e.g. ["summer2023"] (Meta requires one)',
            )


def analyse(
    *,
    header: str | None,
    body: str,
    footer: str | None,
    declared: Sequence[str],
    examples: Mapping[str, str],
    header_format: str | None = None,
    buttons: Sequence[Mapping[str, Any]] = (),
) -> Parts:
    """Check a template as written; raises ``TemplateInvalid`` naming the field to fix."""
    fmt = (header_format or ("TEXT" if header else "")).upper() or None
    if fmt is not None and fmt not in HEADER_FORMATS:
        raise TemplateInvalid("header_format", f"one of {', '.join(HEADER_FORMATS)}")
    if fmt in MEDIA_FORMATS and header:
        raise TemplateInvalid(
            "header", f"an {fmt} header has no text: remove header (each message gives the media link)"
        )
    if fmt == "TEXT" and not header:
        raise TemplateInvalid("header", "a TEXT header needs its text")
    check_buttons(buttons)
    header_vars, body_vars = placeholders(header), placeholders(body)
    if placeholders(footer):
        raise TemplateInvalid("footer", "a footer cannot have variables: remove the {{…}}")
    if len(header_vars) > 1:
        raise TemplateInvalid("header", "a header has at most one variable")
    used = [*header_vars, *(v for v in body_vars if v not in header_vars)]
    for part, names in (("header", header_vars), ("body", body_vars)):
        for name in names:
            if not (name.isdigit() or NAMED.match(name)):
                raise TemplateInvalid(
                    part,
                    f"{{{{{name}}}}} is not a variable: use {{{{1}}}}, {{{{2}}}}… or lowercase "
                    "names like {{attendee_name}}",
                )
    positional = [v for v in used if v.isdigit()]
    if positional and len(positional) != len(used):
        raise TemplateInvalid("body", "use either positional ({{1}}) or named ({{name}}) variables, not both")
    style = "positional" if positional else "named"
    if positional:
        for part, names in (("header", header_vars), ("body", body_vars)):
            if names and names != [str(i) for i in range(1, len(names) + 1)]:
                raise TemplateInvalid(
                    part, f"positional variables must be {{{{1}}}}, {{{{2}}}}… in order; found {names}"
                )
    undeclared = [v for v in used if v not in declared]
    if undeclared:
        raise TemplateInvalid(
            "variables",
            f"{', '.join(repr(v) for v in undeclared)} used in the template but not declared: add to variables",
        )
    unused = [v for v in declared if v not in used]
    if unused:
        raise TemplateInvalid(
            "variables",
            f"{', '.join(repr(v) for v in unused)} declared but not used in header or body: remove it",
        )
    if len(set(declared)) != len(declared):
        raise TemplateInvalid("variables", "each variable once")
    missing = [v for v in used if not str(examples.get(v) or "").strip()]
    if missing:
        raise TemplateInvalid(
            "examples",
            f"give an example value for {', '.join(repr(v) for v in missing)} (Meta requires one per variable)",
        )
    extra = [k for k in examples if k not in used]
    if extra:
        raise TemplateInvalid(
            "examples", f"{', '.join(repr(k) for k in extra)} is not a variable of the template"
        )
    return Parts(header_vars=header_vars, body_vars=body_vars, style=style)


@dataclass(frozen=True)
class Mapped:
    header_text: str | None  # the header's parameter, when the header has a variable
    body_params: list[str]
    header_name: str | None  # the header's variable, when it has one
    body_names: list[str]  # the variable of each of body_params


def map_variables(template: Any, values: Mapping[str, str]) -> Mapped:
    """A message's named variables as the template's parameters, in the template's own order;
    ``TemplateInvalid`` names a missing or an unknown variable."""
    wanted = list(template.variables)
    missing = [v for v in wanted if v not in values]
    if missing:
        raise TemplateInvalid(
            "content.variables",
            f"missing {', '.join(repr(v) for v in missing)} for template {template.name!r} "
            f"({template.language}), which needs {wanted}",
        )
    extra = [k for k in values if k not in wanted]
    if extra:
        raise TemplateInvalid(
            "content.variables",
            f"{', '.join(repr(k) for k in extra)} is not a variable of template {template.name!r} "
            f"({template.language}), which has {wanted}",
        )
    header_vars = placeholders(template.header)
    body_vars = placeholders(template.body)
    return Mapped(
        header_text=values[header_vars[0]] if header_vars else None,
        body_params=[values[v] for v in body_vars],
        header_name=header_vars[0] if header_vars else None,
        body_names=body_vars,
    )


def check_request(template: Any, content: Any, where: str) -> None:
    """A message's ``header``, ``buttons`` and (positional) ``body_params`` against the
    template's declared components; ``TemplateInvalid`` names what is wrong, as Meta would
    refuse it (132000 / 132012) at send time."""
    label = f"template {template.name!r} ({template.language})"
    fmt = header_format_of(template)
    header = content.header
    header_vars = placeholders(template.header)
    if fmt in MEDIA_FORMATS:
        kind = fmt.lower()
        if header is None or header.type != kind:
            raise TemplateInvalid(
                f"{where}.header",
                f'{label} has an {fmt} header: give {{"type": "{kind}", "link": "https://…"}}',
            )
    elif header is not None and fmt is None:
        raise TemplateInvalid(f"{where}.header", f"{label} has no header: remove it")
    elif header is not None and content.variables is None:
        if header.type != "text" or not header_vars:
            raise TemplateInvalid(
                f"{where}.header",
                f"{label} has a TEXT header "
                + (
                    'with one variable: give {"type": "text", "text": …}'
                    if header_vars
                    else "without a variable: remove it"
                ),
            )
    elif fmt == "TEXT" and header_vars and header is None and content.variables is None:
        raise TemplateInvalid(
            f"{where}.header", f'{label}\'s header has a variable: give {{"type": "text", "text": …}}'
        )
    if content.variables is None:
        wanted = len(placeholders(template.body))
        if len(content.body_params) != wanted:
            raise TemplateInvalid(
                f"{where}.body_params",
                f"{label} has {wanted} body variable(s), {len(content.body_params)} given",
            )
    declared = list(template.buttons or [])
    given = {b.index: b for b in content.buttons}
    for index, b in given.items():
        if index >= len(declared):
            raise TemplateInvalid(
                f"{where}.buttons", f"{label} has {len(declared)} button(s): there is no button index {index}"
            )
        kind = str(declared[index].get("type")).upper()
        if kind == "URL" and placeholders(declared[index].get("url")):
            if b.sub_type != "url":
                raise TemplateInvalid(
                    f"{where}.buttons", f"button {index} of {label} is a URL button: sub_type url"
                )
        elif kind == "QUICK_REPLY":
            if b.sub_type != "quick_reply":
                raise TemplateInvalid(
                    f"{where}.buttons", f"button {index} of {label} is a quick reply: sub_type quick_reply"
                )
        else:
            raise TemplateInvalid(
                f"{where}.buttons", f"button {index} of {label} ({kind}) takes no variable: remove it"
            )
    missing = [
        i
        for i, d in enumerate(declared)
        if str(d.get("type")).upper() == "URL" and placeholders(d.get("url")) and i not in given
    ]
    if missing:
        raise TemplateInvalid(
            f"{where}.buttons",
            f"{label}'s URL button {missing[0]} ends in a variable: give "
            f'{{"index": {missing[0]}, "sub_type": "url", "parameter": "<url suffix>"}}',
        )


def _fill(text: str | None, values: Mapping[str, str]) -> str | None:
    if text is None:
        return None
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def render_text(
    template: Any,
    header_param: str | None,
    body_params: Sequence[str],
    *,
    header_link: str | None = None,
    buttons: Sequence[Any] = (),
) -> str:
    """The template as one plain text (header or the media link, body, footer, buttons),
    filled in: what a channel without Meta templates sends. A URL button shows its label and
    its URL with the message's suffix; a quick reply its label."""
    header_vars = placeholders(template.header)
    values = dict(zip(placeholders(template.body), body_params, strict=False))
    if header_vars and header_param is not None:
        values[header_vars[0]] = header_param
    header = header_link if header_format_of(template) in MEDIA_FORMATS else _fill(template.header, values)
    parts = [header, _fill(template.body, values), template.footer]
    suffixes = {b.index: b.parameter for b in buttons}
    labels = []
    for i, b in enumerate(template.buttons or []):
        if not (isinstance(b, dict) and b.get("text")):
            continue
        label = str(b["text"])
        if str(b.get("type")).upper() == "URL" and b.get("url"):
            url = str(b["url"])
            if placeholders(url) and i in suffixes:
                url = PLACEHOLDER.sub(suffixes[i], url)
            if not placeholders(url):
                label = f"{label}: {url}"
        labels.append(label)
    if labels:
        parts.append(" | ".join(labels))
    return "\n\n".join(p for p in parts if p)


def _numbered(text: str, names: Sequence[str]) -> str:
    index = {n: str(i) for i, n in enumerate(names, start=1)}
    return PLACEHOLDER.sub(lambda m: "{{" + index.get(m.group(1), m.group(1)) + "}}", text)


def meta_components(template: Any) -> list[dict[str, Any]]:
    """The template's ``components`` as ``POST /{WABA-ID}/message_templates`` takes them: in a
    NAMED template the names stay and the examples are ``header_text_named_params`` /
    ``body_text_named_params``; otherwise each part is renumbered ``{{1}}…``."""
    examples = template.examples or {}
    named = is_named(template)
    components: list[dict[str, Any]] = []
    fmt = header_format_of(template)
    if fmt in MEDIA_FORMATS:
        media: dict[str, Any] = {"type": "HEADER", "format": fmt}
        if getattr(template, "header_handle", None):
            media["example"] = {"header_handle": [template.header_handle]}
        components.append(media)
    elif template.header:
        names = placeholders(template.header)
        header: dict[str, Any] = {
            "type": "HEADER",
            "format": "TEXT",
            "text": template.header if named else _numbered(template.header, names),
        }
        if names and named:
            header["example"] = {
                "header_text_named_params": [{"param_name": n, "example": examples[n]} for n in names]
            }
        elif names:
            header["example"] = {"header_text": [examples[n] for n in names]}
        components.append(header)
    names = placeholders(template.body)
    body: dict[str, Any] = {
        "type": "BODY",
        "text": template.body if named else _numbered(template.body, names),
    }
    if names and named:
        body["example"] = {
            "body_text_named_params": [{"param_name": n, "example": examples[n]} for n in names]
        }
    elif names:
        body["example"] = {"body_text": [[examples[n] for n in names]]}
    components.append(body)
    if template.footer:
        components.append({"type": "FOOTER", "text": template.footer})
    if template.buttons:
        components.append({"type": "BUTTONS", "buttons": list(template.buttons)})
    return components


def meta_create_body(template: Any) -> dict[str, Any]:
    """``POST /{WABA-ID}/message_templates``: name, language, category, ``parameter_format``
    (only NAMED is written: POSITIONAL is Meta's default) and components."""
    body: dict[str, Any] = {
        "name": template.name,
        "language": template.language,
        "category": template.category,
    }
    if is_named(template):
        body["parameter_format"] = NAMED_FORMAT
    body["components"] = meta_components(template)
    return body


def _named_examples(example: Mapping[str, Any], key: str) -> dict[str, str]:
    return {
        str(p.get("param_name")): str(p.get("example"))
        for p in example.get(key) or []
        if isinstance(p, Mapping) and p.get("param_name")
    }


def from_meta(item: Mapping[str, Any]) -> dict[str, Any]:
    """A template as ``GET /{WABA-ID}/message_templates`` lists it, as catalogue fields (with
    Meta's ``parameter_format``; POSITIONAL when Meta does not say)."""
    fields: dict[str, Any] = {
        "header": None,
        "header_format": None,
        "header_handle": None,
        "body": "",
        "footer": None,
        "buttons": [],
        "examples": {},
    }
    for c in item.get("components") or []:
        kind = str(c.get("type", "")).upper()
        example = c.get("example") or {}
        if kind == "HEADER" and str(c.get("format", "TEXT")).upper() in MEDIA_FORMATS:
            fields["header_format"] = str(c["format"]).upper()
            fields["header_handle"] = next(iter(example.get("header_handle") or []), None)
        elif kind == "HEADER" and str(c.get("format", "TEXT")).upper() == "TEXT":
            fields["header_format"] = "TEXT"
            fields["header"] = c.get("text")
            for n, v in zip(placeholders(c.get("text")), example.get("header_text") or [], strict=False):
                fields["examples"][n] = v
            fields["examples"] |= _named_examples(example, "header_text_named_params")
        elif kind == "BODY":
            fields["body"] = c.get("text") or ""
            rows = example.get("body_text") or [[]]
            for n, v in zip(placeholders(c.get("text")), rows[0] if rows else [], strict=False):
                fields["examples"][n] = v
            fields["examples"] |= _named_examples(example, "body_text_named_params")
        elif kind == "FOOTER":
            fields["footer"] = c.get("text")
        elif kind == "BUTTONS":
            fields["buttons"] = list(c.get("buttons") or [])
    header_vars = placeholders(fields["header"])
    variables = [*header_vars, *(v for v in placeholders(fields["body"]) if v not in header_vars)]
    fields["variables"] = variables
    fields["variable_style"] = "positional" if all(v.isdigit() for v in variables) else "named"
    fmt = str(item.get("parameter_format") or POSITIONAL).upper()
    fields["parameter_format"] = NAMED_FORMAT if fmt == NAMED_FORMAT else POSITIONAL
    return fields
