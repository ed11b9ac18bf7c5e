"""The pure checks of tenant event types (no I/O), shared by the pipeline, which stores the
types, and ingest, which checks ``POST /v1/events`` against them: which names a tenant may use,
which schemas it may register (JSON Schema draft 2020-12, size-limited), and what is wrong with
data that does not match, each problem naming its field path."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from shared.events import CATALOGUE

#: a serialised schema larger than this is refused: it is stored per tenant and checked per event
MAX_SCHEMA_BYTES = 64 * 1024
MAX_ERRORS = 20
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
#: Herald's own event types, unversioned (``order.status_changed``) and versioned
HERALD_TYPES: frozenset[str] = frozenset({*CATALOGUE, *(t.rsplit(".v", 1)[0] for t in CATALOGUE)})


@dataclass(frozen=True)
class Problem:
    """What is wrong and where: ``field`` is a dotted path (``data.customer.phone``)."""

    field: str
    problem: str

    def as_detail(self) -> dict[str, str]:
        return {"field": self.field, "problem": self.problem}


def check_name(name: str) -> str | None:
    """Why ``name`` cannot be a tenant event type, or None when it can."""
    if len(name) > 100:
        return "at most 100 characters"
    if not NAME_PATTERN.match(name):
        return (
            "lower-case words of letters, digits and _ joined by dots, at least two words, "
            "e.g. ticket.updated"
        )
    if re.search(r"\.v[0-9]+$", name):
        return "must not end in a version (.v1): replace the schema to change the type instead"
    if name in HERALD_TYPES:
        return f"{name} is one of Herald's own event types: choose another name, e.g. crm.{name}"
    return None


def _path(prefix: str, parts: Any) -> str:
    words = [prefix, *(str(p) for p in parts)] if prefix else [str(p) for p in parts]
    return ".".join(words) or "(root)"


def check_schema(schema: Any) -> list[Problem]:
    """Problems that keep ``schema`` from being a tenant's event type: not an object, too large,
    another draft named in ``$schema``, or not a valid JSON Schema draft 2020-12 (the field of the
    schema that is wrong is named, e.g. ``schema.properties.status.type``)."""
    if not isinstance(schema, dict):
        return [Problem("schema", 'must be a JSON Schema object, e.g. {"type": "object", ...}')]
    size = len(json.dumps(schema, separators=(",", ":")).encode())
    if size > MAX_SCHEMA_BYTES:
        return [Problem("schema", f"is {size} bytes; at most {MAX_SCHEMA_BYTES} bytes: simplify it")]
    declared = schema.get("$schema")
    if declared is not None and str(declared).rstrip("#") != DRAFT_2020_12:
        return [
            Problem(
                "schema.$schema",
                f"{declared!r} is not supported: use {DRAFT_2020_12!r} (draft 2020-12) or leave $schema out",
            )
        ]
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return [Problem(_path("schema", exc.path), f"not valid JSON Schema draft 2020-12: {exc.message}")]
    if schema.get("type", "object") != "object":
        return [Problem("schema.type", 'an event\'s data is a JSON object: use "type": "object"')]
    return []


@functools.lru_cache(maxsize=1024)
def _validator(schema_json: str) -> Draft202012Validator:
    """One validator per distinct schema: building one (and the references it resolves) costs far
    more than checking an event with it."""
    return Draft202012Validator(json.loads(schema_json), format_checker=Draft202012Validator.FORMAT_CHECKER)


def validate(schema: dict[str, Any], data: Any, *, root: str = "data") -> list[Problem]:
    """Every way ``data`` does not match ``schema`` (already checked), at most ``MAX_ERRORS``, each
    naming the field path below ``root``: a missing required field and an extra field are named
    themselves (``data.customer_phone``), not their parent."""
    validator = _validator(json.dumps(schema, sort_keys=True, separators=(",", ":")))
    problems: list[Problem] = []
    for error in sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        parts = list(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [k for k in error.validator_value if k not in error.instance]
            problems.extend(Problem(_path(root, [*parts, k]), "required field is missing") for k in missing)
            continue
        if (
            error.validator == "additionalProperties"
            and isinstance(error.instance, dict)
            and not error.schema.get("patternProperties")
        ):
            known = set(error.schema.get("properties", {}))
            extra = sorted(k for k in error.instance if k not in known)
            problems.extend(
                Problem(_path(root, [*parts, k]), "unknown field: the event type does not allow it")
                for k in extra
            )
            continue
        problems.append(Problem(_path(root, parts), error.message))
    return problems[:MAX_ERRORS]


def summary(problems: list[Problem]) -> str:
    return "; ".join(f"{p.field}: {p.problem}" for p in problems[:5])
