"""Pure decisions of ingest (no I/O): what another system may post (``validate_inbound_event``),
which secrets a webhook source needs (``check_source_secrets``), and a tenant's keyword lists
(``keyword_lists``)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import ValidationError

from services.ingest.normalise import keyword_form
from shared.events import PUBLIC_INPUT_TYPES, CloudEvent, UnknownEventType, canonical_type, parse_event


class EventRejected(ValueError):
    def __init__(self, status: int, error: str, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.details = details or []


def parse_event_body(raw: bytes) -> dict[str, Any]:
    """The posted body as a JSON object: malformed JSON is 400, anything but an object 422."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise EventRejected(400, "malformed_json", f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise EventRejected(
            422,
            "invalid_event",
            "a CloudEvent is a JSON object with specversion, id, source, type, time and data",
        )
    return body


def stamp_tenant(body: dict[str, Any], tenant_id: uuid.UUID) -> None:
    """The event is the caller's tenant's: a ``tenantid`` naming another is 403."""
    claimed = body.get("tenantid")
    if claimed is not None and str(claimed) != str(tenant_id):
        raise EventRejected(
            403, "forbidden", "tenantid does not match the API key's tenant; omit it or use your own"
        )
    body["tenantid"] = str(tenant_id)


def validate_inbound_event(raw: bytes | dict[str, Any], tenant_id: uuid.UUID) -> CloudEvent[Any]:
    """Parse a structured-mode CloudEvent from another system and stamp it with the caller's tenant.

    Rejects: malformed JSON (400); a non-object; an unknown type, or one only Herald may state
    (422); a body that does not match the type's schema (422, naming each field); a ``tenantid``
    that is not the caller's (403). ``raw`` may be the body already parsed by ``parse_event_body``.
    (A tenant's own event types are checked in ``event_types.tenant_event``.)
    """
    body = raw if isinstance(raw, dict) else parse_event_body(raw)
    try:
        event_type = canonical_type(str(body.get("type", "")))
    except UnknownEventType as exc:
        raise EventRejected(
            422, "unknown_event_type", str(exc), [{"field": "type", "problem": str(exc)}]
        ) from exc
    if event_type not in PUBLIC_INPUT_TYPES:
        msg = (
            f"event type {event_type!r} is stated by Herald itself and cannot be posted; "
            f"accepted types: {', '.join(sorted(PUBLIC_INPUT_TYPES))}"
        )
        raise EventRejected(422, "event_type_not_accepted", msg, [{"field": "type", "problem": msg}])
    stamp_tenant(body, tenant_id)
    try:
        return parse_event(body)
    except ValidationError as exc:
        details = [
            {
                "field": ".".join(str(p) for p in e["loc"]) or "body",
                "problem": e["msg"].removeprefix("Value error, "),
            }
            for e in exc.errors()
        ]
        summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
        raise EventRejected(
            422, "invalid_event", f"event does not match {event_type}: {summary}", details
        ) from exc


#: provider: (required secrets, optional secrets) of a webhook source
SOURCE_SECRETS: dict[str, tuple[set[str], set[str]]] = {
    "meta": ({"app_secret", "verify_token"}, {"access_token", "graph_url"}),
    "chatwoot": ({"webhook_secret"}, set()),
    "waha": ({"hmac_key"}, {"api_key"}),
    "evolution": (set(), {"header_name", "header_value", "jwt_key", "api_key"}),
}


class SourceRejected(ValueError):
    """A webhook source that cannot work as given; the message says what to fix."""


def check_source_secrets(provider: str, secrets: dict[str, str]) -> None:
    required, optional = SOURCE_SECRETS[provider]
    unknown = set(secrets) - required - optional
    if unknown:
        raise SourceRejected(
            f"unknown secrets for {provider}: {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(required | optional))}"
        )
    missing = [k for k in sorted(required) if not secrets.get(k)]
    if missing:
        raise SourceRejected(f"a {provider} source needs secrets: {', '.join(missing)}")
    if provider == "evolution" and not (secrets.get("header_value") or secrets.get("jwt_key")):
        raise SourceRejected(
            "an evolution source needs header_value (a static header Evolution "
            "sends, named by header_name, default apikey) or jwt_key (Evolution's JWT webhook auth)"
        )


class KeywordClash(ValueError):
    """The same keyword would both opt out and opt in."""


def keyword_lists(opt_out: list[str], opt_in: list[str]) -> tuple[list[str], list[str]]:
    """The lists as stored (trimmed, upper case, without words that are no keyword at all)."""
    outs = [w.strip().upper() for w in opt_out if keyword_form(w)]
    ins = [w.strip().upper() for w in opt_in if keyword_form(w)]
    clash = {keyword_form(w) for w in outs} & {keyword_form(w) for w in ins}
    if clash:
        raise KeywordClash(f"a keyword cannot both opt out and opt in: {', '.join(sorted(clash))}")
    return outs, ins
