"""A local WhatsApp Cloud API: ``POST /{version}/{phone_number_id}/messages``.

It checks what Meta checks first (bearer token, ``messaging_product``, ``to``, ``type`` and the
object of that type), answers ``{"messaging_product", "contacts", "messages": [{"id": "wamid…"}]}``
and errors in Meta's shape (``{"error": {"message", "type", "code", "error_data", "fbtrace_id"}}``)
with the codes of ``error-codes.json``. It records every accepted message with its arrival time.

Control endpoints (not Meta's), for tests and the benchmark:
- ``POST /_fake/errors`` ``{"code": 131026, "count": 1, "to": "5511…"?, "http_status": 400?}``:
  the next ``count`` sends (to ``to`` only, if given) fail with that code;
- ``POST /_fake/latency`` ``{"seconds": 0.05}``; ``POST /_fake/reset``;
- ``POST /_fake/chaos`` ``{"error_rate": 0.3, "timeout_rate": 0.05, "timeout_seconds": 5}``: a
  share of sends answer 500 (131000) or 429 (#4), half each, and a share is accepted (recorded)
  but answered only after ``timeout_seconds`` (a client with a shorter timeout has lost the answer);
  ``{}`` turns it off (the fault suite's unreliable provider);
- ``GET /_fake/messages`` (everything received) and ``GET /_fake/stats`` (count, first/last time).

Message templates of a WABA (``POST|GET|DELETE /{version}/{waba_id}/message_templates``, edit
with ``POST /{version}/{template_id}``): a new template is ``PENDING``; its review ends
``review_seconds`` later (read lazily) as ``APPROVED``, or ``REJECTED`` (``INVALID_FORMAT``)
when its body matches ``reject_when`` (a regular expression the test sets). Refusals as Meta's:
a duplicate name+language, a bad name/category, variables without examples, an edit while in
review or of an APPROVED template's category. A media header (IMAGE/VIDEO/DOCUMENT) needs
``example.header_handle`` and, in a send, one parameter of its type with a ``link`` (else
132012); a URL button ending in ``{{1}}`` needs a ``button`` component of ``sub_type`` url at
its index (else 132000). A template is ``parameter_format`` POSITIONAL
(``{{1}}``, examples ``header_text``/``body_text``) or NAMED (``{{first_name}}``, examples
``header_text_named_params``/``body_text_named_params``). A send of a template the fake knows
and has not approved fails with 132001; parameters in the other format (no ``parameter_name``
for a NAMED template, one for a POSITIONAL template) with 132012; a wrong parameter count or a
name the template does not have with 132000. Control:
``POST /_fake/templates/review`` ``{"reject_when": "…", "review_seconds": 0.2}``.

In-process: ``async with FakeMeta() as meta: meta.url …`` (tests); as a process:
``python -m devtools.fake_providers.meta --port 9000 --token T`` (the benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ERRORS: dict[int, tuple[int, str, str]] = {
    # code: (http status, message, details) as Meta answers them
    0: (401, "(#0) AuthException", "Could not authenticate the app user."),
    4: (429, "(#4) Application request limit reached", "Too many calls."),
    100: (400, "(#100) Invalid parameter", "Parameter value is not valid."),
    190: (401, "Error validating access token: Session has expired", "Access token expired."),
    368: (403, "Temporarily blocked for policies violations", "The WABA is restricted."),
    80007: (400, "(#80007) Rate limit issues", "Business request limit reached."),
    130429: (400, "(#130429) Rate limit hit", "Cloud API message throughput has been reached."),
    131000: (500, "(#131000) Something went wrong", "Something went wrong."),
    131008: (400, "(#131008) Required parameter is missing", "A required parameter is missing."),
    131009: (400, "(#131009) Parameter value is not valid", "Parameter value is not valid."),
    131026: (400, "(#131026) Message Undeliverable", "Message failed to send."),
    131047: (400, "(#131047) Re-engagement message", "More than 24 hours have passed."),
    131048: (400, "(#131048) Spam rate limit hit", "Too many messages were flagged."),
    131050: (400, "(#131050) User stopped marketing messages", "The user opted out of marketing."),
    131056: (
        400,
        "(#131056) (Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone number "
        "to the same phone number in a short period of time.",
    ),
    132000: (
        400,
        "(#132000) Number of parameters does not match the expected number of params",
        "body: number of localizable_params (0) does not match the expected number of params (1)",
    ),
    132001: (404, "(#132001) Template name does not exist in the translation", "template not found"),
    132012: (400, "(#132012) Parameter format does not match format in the created template", "format"),
    132015: (400, "(#132015) Template is paused", "Template paused for low quality."),
    132016: (400, "(#132016) Template is disabled", "Template permanently disabled for low quality."),
}

MESSAGE_TYPES = ("text", "image", "document", "audio", "video", "template", "interactive")


def error_body(code: int, message: str, details: str) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": uuid.uuid4().hex[:22],
        }
    }


def graph_error(subcode: int, title: str, user_msg: str, code: int = 100, http: int = 400) -> web.Response:
    """A Graph API refusal of a template call, as Meta words them (``error_user_msg`` says what to fix)."""
    return web.json_response(
        {
            "error": {
                "message": "Invalid parameter",
                "type": "OAuthException",
                "code": code,
                "error_subcode": subcode,
                "is_transient": False,
                "error_user_title": title,
                "error_user_msg": user_msg,
                "fbtrace_id": uuid.uuid4().hex[:22],
            }
        },
        status=http,
    )


PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]*)\s*\}\}")
TEMPLATE_NAME = re.compile(r"^[a-z0-9_]{1,512}$")
CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")


FORMATS = ("POSITIONAL", "NAMED")
MEDIA_FORMATS = ("IMAGE", "VIDEO", "DOCUMENT")


def _template_problem(components: Any, parameter_format: str = "POSITIONAL") -> str | None:
    if not isinstance(components, list) or not any(
        isinstance(c, dict) and str(c.get("type")).upper() == "BODY" and c.get("text") for c in components
    ):
        return "components: a BODY component with text is required"
    named = parameter_format == "NAMED"
    for c in components:
        kind = str(c.get("type")).upper()
        if kind == "HEADER" and str(c.get("format", "TEXT")).upper() in MEDIA_FORMATS:
            if not (c.get("example") or {}).get("header_handle"):
                return f"HEADER: a {c['format']} header needs a sample in example.header_handle"
            continue
        names = PLACEHOLDER.findall(c.get("text") or "")
        if not names or kind not in ("HEADER", "BODY"):
            continue
        if any(n.isdigit() == named for n in names):
            return f"{kind}: a {parameter_format} template's variables must be " + (
                "lowercase names like {{first_name}}" if named else "numbers {{1}}, {{2}}…"
            )
        example = c.get("example") or {}
        if named:
            key = "header_text_named_params" if kind == "HEADER" else "body_text_named_params"
            given = {p.get("param_name") for p in example.get(key) or [] if isinstance(p, dict)}
            if not set(names) <= given:
                return f"{kind}: variables need sample values in example.{key}"
        else:
            given = example.get("header_text") if kind == "HEADER" else (example.get("body_text") or [[]])[0]
            if not given or len(given) < len(set(names)):
                return f"{kind}: variables need sample values in example"
    return None


def _template_view(t: dict[str, Any]) -> dict[str, Any]:
    return {
        k: t.get(k, "POSITIONAL" if k == "parameter_format" else None)
        for k in (
            "id",
            "name",
            "language",
            "status",
            "category",
            "parameter_format",
            "components",
            "rejected_reason",
        )
    }


@dataclass
class Injected:
    code: int
    count: int
    to: str | None
    http_status: int | None


@dataclass
class FakeMetaState:
    token: str | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    errors: list[Injected] = field(default_factory=list)
    latency: float = 0.0
    #: seconds between accepting a message (it is in ``received``, with its wamid) and answering:
    #: a status webhook for it can overtake the answer, as with the real Cloud API under load
    answer_delay: float = 0.0
    attempts: int = 0
    #: message templates by id (each with its ``waba_id``), and how their review ends
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    review_seconds: float = 0.2
    reject_when: str | None = None
    #: random failures (``/_fake/chaos``): shares of sends refused with 5xx/429, or answered late
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_seconds: float = 5.0
    chaos: random.Random = field(default_factory=lambda: random.Random(14))

    def reviewed(self, t: dict[str, Any]) -> dict[str, Any]:
        """The template with its review finished if its time has come."""
        if t["status"] == "PENDING" and time.time() >= t["review_at"]:
            body = next((c.get("text") or "" for c in t["components"] if c.get("type") == "BODY"), "")
            if self.reject_when and re.search(self.reject_when, body):
                t["status"], t["rejected_reason"] = "REJECTED", "INVALID_FORMAT"
            else:
                t["status"], t["rejected_reason"] = "APPROVED", "NONE"
        return t


def _invalid(details: str) -> web.Response:
    return web.json_response(error_body(100, "(#100) Invalid parameter", details), status=400)


def _check_body(body: Any) -> str | None:
    """What Meta would refuse with code 100, or None."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    if body.get("messaging_product") != "whatsapp":
        return "messaging_product must be 'whatsapp'"
    to = body.get("to")
    if not isinstance(to, str) or not to.lstrip("+").isdigit():
        return "to must be a phone number in international format"
    kind = body.get("type", "text")
    if kind not in MESSAGE_TYPES:
        return f"type {kind!r} is not supported"
    obj = body.get(kind)
    if not isinstance(obj, dict):
        return f"the {kind!r} object is required for type {kind!r}"
    if kind == "text" and not obj.get("body"):
        return "text.body is required"
    if kind in ("image", "document", "audio", "video") and not (obj.get("link") or obj.get("id")):
        return f"{kind}.link or {kind}.id is required"
    if kind == "template" and not (obj.get("name") and (obj.get("language") or {}).get("code")):
        return "template.name and template.language.code are required"
    if kind == "interactive":
        if obj.get("type") not in ("button", "list"):
            return "interactive.type must be 'button' or 'list'"
        if not (obj.get("body") or {}).get("text"):
            return "interactive.body.text is required"
        action = obj.get("action") or {}
        if obj["type"] == "button" and not 1 <= len(action.get("buttons") or []) <= 3:
            return "interactive buttons: 1 to 3 buttons"
        if obj["type"] == "list" and not (action.get("button") and action.get("sections")):
            return "interactive list: action.button and action.sections are required"
    return None


def _check_template_send(state: FakeMetaState, obj: dict[str, Any]) -> web.Response | None:
    """132001 for a template the fake knows but has not approved; 132000 for a wrong parameter count."""
    known = [
        t
        for t in state.templates.values()
        if (t["name"], t["language"]) == (obj.get("name"), (obj.get("language") or {}).get("code"))
    ]
    if not known:
        return None  # a template made before the fake learnt templates: accepted as before
    t = state.reviewed(known[0])
    if t["status"] != "APPROVED":
        status, message, _ = ERRORS[132001]
        return web.json_response(error_body(132001, message, f"template is {t['status']}"), status=status)
    fmt = t.get("parameter_format", "POSITIONAL")
    named = fmt == "NAMED"
    sent = obj.get("components") or []
    media = next(
        (
            str(c.get("format")).upper()
            for c in t["components"]
            if c.get("type") == "HEADER" and str(c.get("format", "TEXT")).upper() in MEDIA_FORMATS
        ),
        None,
    )
    if media is not None:
        params = next((c.get("parameters") or [] for c in sent if c.get("type") == "header"), [])
        kind = media.lower()
        if len(params) != 1 or params[0].get("type") != kind or not (params[0].get(kind) or {}).get("link"):
            details = f"header: template {t['name']!r} has an {media} header: one parameter of type {kind} with a link"
            return web.json_response(error_body(132012, ERRORS[132012][1], details), status=400)
    buttons = next((c.get("buttons") or [] for c in t["components"] if c.get("type") == "BUTTONS"), [])
    for index, button in enumerate(buttons):
        if str(button.get("type")).upper() != "URL" or not PLACEHOLDER.findall(button.get("url") or ""):
            continue
        given = [
            c
            for c in sent
            if c.get("type") == "button" and str(c.get("index")) == str(index) and c.get("sub_type") == "url"
        ]
        if not given or len(given[0].get("parameters") or []) != 1:
            details = f"button at index {index}: number of params (0) does not match the expected number of params (1)"
            return web.json_response(error_body(132000, ERRORS[132000][1], details), status=400)
    for kind in ("HEADER", "BODY"):
        if kind == "HEADER" and media is not None:
            continue
        text = next((c.get("text") or "" for c in t["components"] if c.get("type") == kind), "")
        expected = set(PLACEHOLDER.findall(text))
        params = next(
            (c.get("parameters") or [] for c in obj.get("components") or [] if c.get("type") == kind.lower()),
            [],
        )
        with_names = [p for p in params if isinstance(p, dict) and p.get("parameter_name")]
        if params and len(with_names) != (len(params) if named else 0):
            details = f"{kind.lower()}: template {t['name']!r} is {fmt}: " + (
                "every parameter needs parameter_name" if named else "parameters have no parameter_name"
            )
            return web.json_response(error_body(132012, ERRORS[132012][1], details), status=400)
        if len(params) != len(expected):
            details = (
                f"{kind.lower()}: number of localizable_params ({len(params)}) does not match the expected "
                f"number of params ({len(expected)})"
            )
            return web.json_response(error_body(132000, ERRORS[132000][1], details), status=400)
        unknown = sorted({p["parameter_name"] for p in with_names} - expected) if named else []
        if unknown:
            details = (
                f"{kind.lower()}: parameter_name {unknown} is not in the template (it has {sorted(expected)})"
            )
            return web.json_response(error_body(132000, ERRORS[132000][1], details), status=400)
    return None


def build_app(state: FakeMetaState) -> web.Application:
    async def send(request: web.Request) -> web.Response:
        state.attempts += 1
        if state.latency:
            await asyncio.sleep(state.latency)
        auth = request.headers.get("Authorization", "")
        if state.token is not None and auth != f"Bearer {state.token}":
            return web.json_response(
                error_body(190, "Invalid OAuth access token - Cannot parse access token", "bad token"),
                status=401,
            )
        try:
            body = await request.json()
        except ValueError:
            return _invalid("the request body is not JSON")
        problem = _check_body(body)
        if problem:
            return _invalid(problem)
        to = body["to"].lstrip("+")
        if body.get("type") == "template":
            refused = _check_template_send(state, body["template"])
            if refused is not None:
                return refused
        for injected in state.errors:
            if injected.count > 0 and (injected.to is None or injected.to.lstrip("+") == to):
                injected.count -= 1
                status, message, details = ERRORS.get(
                    injected.code, (400, f"(#{injected.code}) Error", "injected")
                )
                return web.json_response(
                    error_body(injected.code, message, details), status=injected.http_status or status
                )
        roll = state.chaos.random()
        if roll < state.error_rate:
            code = 131000 if roll < state.error_rate / 2 else 4
            status, message, details = ERRORS[code]
            return web.json_response(error_body(code, message, details), status=status)
        late = roll < state.error_rate + state.timeout_rate
        wamid = "wamid." + uuid.uuid4().hex
        state.received.append(
            {
                "at": time.time(),
                "version": request.match_info["version"],
                "phone_number_id": request.match_info["phone_number_id"],
                "id": wamid,
                "body": body,
                "traceparent": request.headers.get("traceparent"),  # W3C trace context, if sent
            }
        )
        if state.answer_delay:
            await asyncio.sleep(state.answer_delay)
        if late:
            await asyncio.sleep(state.timeout_seconds)
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": body["to"], "wa_id": to}],
                "messages": [{"id": wamid, "message_status": "accepted"}],
            }
        )

    async def inject(request: web.Request) -> web.Response:
        data = await request.json()
        state.errors.append(
            Injected(
                code=int(data["code"]),
                count=int(data.get("count", 1)),
                to=data.get("to"),
                http_status=data.get("http_status"),
            )
        )
        return web.json_response({"ok": True})

    async def latency(request: web.Request) -> web.Response:
        state.latency = float((await request.json())["seconds"])
        return web.json_response({"ok": True})

    async def chaos(request: web.Request) -> web.Response:
        data = await request.json()
        state.error_rate = float(data.get("error_rate", 0.0))
        state.timeout_rate = float(data.get("timeout_rate", 0.0))
        state.timeout_seconds = float(data.get("timeout_seconds", state.timeout_seconds))
        return web.json_response({"ok": True})

    async def reset(_: web.Request) -> web.Response:
        state.received.clear()
        state.errors.clear()
        state.latency = 0.0
        state.attempts = 0
        state.templates.clear()
        state.reject_when = None
        state.error_rate = state.timeout_rate = 0.0
        return web.json_response({"ok": True})

    async def messages(_: web.Request) -> web.Response:
        return web.json_response({"items": state.received})

    async def stats(_: web.Request) -> web.Response:
        times = [r["at"] for r in state.received]
        return web.json_response(
            {
                "count": len(times),
                "attempts": state.attempts,
                "first": min(times) if times else None,
                "last": max(times) if times else None,
            }
        )

    async def times(_: web.Request) -> web.Response:
        return web.json_response({"items": [[r["body"]["to"], r["at"]] for r in state.received]})

    def authorized(request: web.Request) -> web.Response | None:
        if state.token is not None and request.headers.get("Authorization", "") != f"Bearer {state.token}":
            return web.json_response(
                error_body(190, "Invalid OAuth access token - Cannot parse access token", "bad token"),
                status=401,
            )
        return None

    async def create_template(request: web.Request) -> web.Response:
        if (denied := authorized(request)) is not None:
            return denied
        waba = request.match_info["waba_id"]
        try:
            data = await request.json()
        except ValueError:
            return _invalid("the request body is not JSON")
        name, language = str(data.get("name") or ""), str(data.get("language") or "")
        category = str(data.get("category") or "").upper()
        if not TEMPLATE_NAME.match(name):
            return graph_error(
                2388001, "Invalid name", "Name can only have lowercase letters, numbers and underscores."
            )
        if category not in CATEGORIES:
            return graph_error(
                2388019, "Invalid category", f"Category must be one of {', '.join(CATEGORIES)}."
            )
        if not language:
            return graph_error(2388003, "Invalid language", "language is required.")
        parameter_format = str(data.get("parameter_format") or "POSITIONAL").upper()
        if parameter_format not in FORMATS:
            return graph_error(
                2388040, "Invalid parameter format", "parameter_format must be NAMED or POSITIONAL."
            )
        problem = _template_problem(data.get("components"), parameter_format)
        if problem:
            return graph_error(2388043, "Message template's variables need sample values", problem)
        if any(
            t["waba_id"] == waba and (t["name"], t["language"]) == (name, language)
            for t in state.templates.values()
        ):
            return graph_error(
                2388024,
                "Content in this language already exists",
                f"There is already {language} content for this template. Edit it, or pick another name.",
            )
        template_id = str(uuid.uuid4().int)[:15]
        state.templates[template_id] = {
            "id": template_id,
            "waba_id": waba,
            "name": name,
            "language": language,
            "category": category,
            "parameter_format": parameter_format,
            "components": data["components"],
            "status": "PENDING",
            "rejected_reason": "NONE",
            "review_at": time.time() + state.review_seconds,
        }
        return web.json_response({"id": template_id, "status": "PENDING", "category": category})

    async def list_templates(request: web.Request) -> web.Response:
        if (denied := authorized(request)) is not None:
            return denied
        waba = request.match_info["waba_id"]
        name = request.query.get("name")
        data = [
            _template_view(state.reviewed(t))
            for t in state.templates.values()
            if t["waba_id"] == waba and (name is None or t["name"] == name)
        ]
        return web.json_response(
            {"data": data, "paging": {"cursors": {"before": "MAZDZD", "after": "MjQZD"}}}
        )

    async def delete_template(request: web.Request) -> web.Response:
        if (denied := authorized(request)) is not None:
            return denied
        waba = request.match_info["waba_id"]
        name, hsm_id = request.query.get("name"), request.query.get("hsm_id")
        gone = [
            i
            for i, t in state.templates.items()
            if t["waba_id"] == waba and t["name"] == name and (hsm_id is None or i == hsm_id)
        ]
        if not name or not gone:
            return graph_error(2593002, "Message template not found", f"There is no template named {name!r}.")
        for i in gone:
            del state.templates[i]
        return web.json_response({"success": True})

    async def edit_template(request: web.Request) -> web.Response:
        if (denied := authorized(request)) is not None:
            return denied
        t = state.templates.get(request.match_info["template_id"])
        if t is None:
            return graph_error(
                33, "Object does not exist", "Unsupported post request: no template with this id."
            )
        state.reviewed(t)
        data = await request.json()
        if t["status"] not in ("APPROVED", "REJECTED", "PAUSED"):
            return graph_error(
                2388025, "Template can't be edited", f"A template that is {t['status']} can't be edited."
            )
        category = str(data.get("category") or t["category"]).upper()
        if t["status"] == "APPROVED" and category != t["category"]:
            return graph_error(
                2388026, "Category can't be changed", "An approved template's category can't change."
            )
        if "components" in data:
            problem = _template_problem(data["components"], t.get("parameter_format", "POSITIONAL"))
            if problem:
                return graph_error(2388043, "Message template's variables need sample values", problem)
            t["components"] = data["components"]
        t |= {"category": category, "status": "PENDING", "review_at": time.time() + state.review_seconds}
        return web.json_response({"success": True})

    async def review(request: web.Request) -> web.Response:
        data = await request.json()
        state.reject_when = data.get("reject_when")
        state.review_seconds = float(data.get("review_seconds", state.review_seconds))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/_fake/chaos", chaos)
    app.router.add_post("/{version}/{waba_id}/message_templates", create_template)
    app.router.add_get("/{version}/{waba_id}/message_templates", list_templates)
    app.router.add_delete("/{version}/{waba_id}/message_templates", delete_template)
    app.router.add_post("/_fake/templates/review", review)
    app.router.add_post("/{version}/{phone_number_id}/messages", send)
    app.router.add_post("/{version}/{template_id}", edit_template)
    app.router.add_post("/_fake/errors", inject)
    app.router.add_post("/_fake/latency", latency)
    app.router.add_post("/_fake/reset", reset)
    app.router.add_get("/_fake/messages", messages)
    app.router.add_get("/_fake/stats", stats)
    app.router.add_get("/_fake/times", times)
    return app


class FakeMeta:
    """The fake Cloud API inside the current event loop, on a free port."""

    def __init__(self, token: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = FakeMetaState(token=token)
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeMeta:
        self._runner = web.AppRunner(build_app(self.state), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{self._host}:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeMeta:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def fail_next(self, code: int, count: int = 1, to: str | None = None) -> None:
        self.state.errors.append(Injected(code=code, count=count, to=to, http_status=None))

    @property
    def received(self) -> list[dict[str, Any]]:
        return self.state.received


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--token", default=None, help="Accept only this bearer token")
    args = parser.parse_args(argv)
    web.run_app(
        build_app(FakeMetaState(token=args.token)),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
