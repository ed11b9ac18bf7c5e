"""Meta WhatsApp Cloud API adapter: ``POST /{version}/{phone_number_id}/messages``.

Request and answer shapes follow ``shared/contracts/meta-cloud-api/business-messaging-api_v23.0.yaml``
(operation ``sendMessage``); errors are Graph API errors ``{"error": {"code", "message",
"error_data": {"details"}, "fbtrace_id", ...}}`` and are classified by ``error.code`` (never by the
message text) with the retry classes of ``error-codes.json``:

- backoff (1, 2, 4, 80007, 130429, 131000, 131016, 131057), HTTP 5xx/429 without a known code,
  timeouts and connection errors → ``RETRY``;
- 131056 (pair rate limit) → ``RETRY_RECIPIENT``;
- 131050 (user stopped marketing messages) → ``OPTED_OUT``;
- stop-and-alert codes (0, 3, 10, 190, 368, 131005, 131031, 131042, 133010) and 131048 (spam
  rate limit) → ``PAUSE_CHANNEL``;
- everything else (100, 131026, 131047, 132000, 132001 …) → ``PERMANENT``.
"""

from __future__ import annotations

from typing import Any

import httpx

from services.sender.providers import gateway
from services.sender.providers.base import (
    ChannelConfig,
    Content,
    Failure,
    LookupUnsupported,
    MappingStore,
    Outbound,
    ProviderError,
    SendResult,
)

DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v23.0"

RETRY_CODES = frozenset({1, 2, 4, 80007, 130429, 131000, 131016, 131057})
PAUSE_CODES = frozenset({0, 3, 10, 190, 368, 131005, 131031, 131042, 131048, 133010})

#: readable reasons for the codes an operator meets most (Meta's titles, which it may drop)
TITLES: dict[int, str] = {
    0: "authentication failed (token expired or invalidated)",
    4: "app-level Graph API call rate limit reached",
    10: "permission denied",
    100: "invalid parameter",
    190: "access token expired or invalid: replace the channel's access_token",
    368: "the WhatsApp Business Account is temporarily blocked for policy violations",
    80007: "WhatsApp Business Account rate limit reached",
    130429: "throughput limit of this business number exceeded",
    130472: "recipient is part of a Meta experiment",
    130497: "business account is restricted from messaging users in this country",
    131000: "something went wrong at Meta",
    131005: "access denied",
    131008: "required parameter is missing",
    131009: "parameter value is not valid",
    131016: "Meta service temporarily unavailable",
    131021: "recipient cannot be the sender",
    131026: "message undeliverable (recipient not on WhatsApp, outdated client, or blocked)",
    131030: "recipient not in the test number's allowed list",
    131031: "business account locked",
    131042: "business eligibility payment issue",
    131047: "more than 24 hours since the recipient last wrote: send an approved template",
    131048: "spam rate limit hit: pause campaigns and check the number's quality rating",
    131049: "Meta chose not to deliver this marketing message",
    131050: "recipient stopped marketing messages",
    131053: "media upload error (bad URL, type or size)",
    131056: "pair rate limit: too many messages to this recipient in a short time",
    131057: "business number in maintenance mode",
    132000: "template parameter count does not match the approved template",
    132001: "template does not exist in this language",
    132005: "template text too long after parameters",
    132007: "template violates WhatsApp's format policy",
    132012: "template parameter format mismatch: parameters must match the approved template "
    "(NAMED or POSITIONAL, media header type): POST /v1/templates/sync so the catalogue knows it",
    132015: "template is paused",
    132016: "template is disabled",
    133010: "business phone number not registered",
}


def classify(code: int | None, http_status: int | None) -> Failure:
    if code is not None:
        if code == 130429:
            return Failure.THROTTLED
        if code in RETRY_CODES:
            return Failure.RETRY
        if code == 131056:
            return Failure.RETRY_RECIPIENT
        if code == 131050:
            return Failure.OPTED_OUT
        if code in PAUSE_CODES:
            return Failure.PAUSE_CHANNEL
        if code in TITLES:
            return Failure.PERMANENT
    if http_status is not None and (http_status >= 500 or http_status == 429):
        return Failure.RETRY
    if http_status in (401, 403):
        return Failure.PAUSE_CHANNEL
    return Failure.PERMANENT


def _text(value: str) -> dict[str, str]:
    return {"text": value}


def body_for(to: str, content: Content) -> dict[str, Any]:
    """The Cloud API request body for one message (``to`` in digits, as Meta's examples)."""
    base: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to.lstrip("+"),
    }
    kind = content.kind
    if kind == "text":
        return {**base, "type": "text", "text": {"body": content.body, "preview_url": content.preview_url}}
    if kind in ("image", "document", "audio", "video"):
        media: dict[str, Any] = {"link": content.link}
        if content.caption and kind != "audio":
            media["caption"] = content.caption
        if content.filename and kind == "document":
            media["filename"] = content.filename
        return {**base, "type": kind, kind: media}
    if kind == "template":
        components: list[dict[str, Any]] = []
        if content.header is not None:
            h = content.header
            param = (
                {"type": "text", "text": h.text}
                if h.type == "text"
                else {"type": h.type, h.type: {"link": h.link}}
            )
            if h.type == "text" and h.parameter_name:
                param = {"type": "text", "parameter_name": h.parameter_name, "text": h.text}
            components.append({"type": "header", "parameters": [param]})
        if content.body_params:
            names = content.body_param_names
            components.append(
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "parameter_name": names[i], "text": p}
                        if names
                        else {"type": "text", "text": p}
                        for i, p in enumerate(content.body_params)
                    ],
                }
            )
        for b in content.buttons:
            param = (
                {"type": "payload", "payload": b.parameter}
                if b.sub_type == "quick_reply"
                else {"type": "text", "text": b.parameter}
            )
            components.append(
                {"type": "button", "sub_type": b.sub_type, "index": str(b.index), "parameters": [param]}
            )
        template: dict[str, Any] = {"name": content.name, "language": {"code": content.language}}
        if components:
            template["components"] = components
        return {**base, "type": "template", "template": template}
    if kind == "buttons":
        interactive: dict[str, Any] = {
            "type": "button",
            "body": _text(content.body),
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": b.id, "title": b.title}} for b in content.buttons
                ]
            },
        }
        if content.header:
            interactive["header"] = {"type": "text", "text": content.header}
        if content.footer:
            interactive["footer"] = _text(content.footer)
        return {**base, "type": "interactive", "interactive": interactive}
    if kind == "list":
        sections = []
        for s in content.sections:
            section: dict[str, Any] = {
                "rows": [
                    {
                        "id": r.id,
                        "title": r.title,
                        **({"description": r.description} if r.description else {}),
                    }
                    for r in s.rows
                ]
            }
            if s.title:
                section["title"] = s.title
            sections.append(section)
        interactive = {
            "type": "list",
            "body": _text(content.body),
            "action": {"button": content.button, "sections": sections},
        }
        if content.header:
            interactive["header"] = {"type": "text", "text": content.header}
        if content.footer:
            interactive["footer"] = _text(content.footer)
        return {**base, "type": "interactive", "interactive": interactive}
    raise ProviderError(f"Meta cannot send kind {kind!r}", failure=Failure.PERMANENT, code="unsupported_kind")


class MetaCloudProvider:
    name = "meta"

    def __init__(self, *, http: httpx.AsyncClient, store: MappingStore | None = None) -> None:
        self._http = http
        self._store = store

    async def send(self, channel: ChannelConfig, message: Outbound) -> SendResult:
        version = channel.settings.get("api_version") or DEFAULT_API_VERSION
        phone_number_id = channel.settings.get("phone_number_id")
        token = channel.credentials.get("access_token")
        if not phone_number_id or not token:
            raise ProviderError(
                "the channel has no phone_number_id or access_token: PATCH the channel",
                failure=Failure.PAUSE_CHANNEL,
                code="config",
            )
        url = f"{channel.base_url.rstrip('/')}/{version}/{phone_number_id}/messages"
        body = body_for(message.to, message.content)
        try:
            response = await self._http.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
        except httpx.TransportError as exc:
            raise gateway.transport_error("Meta", exc) from exc
        except httpx.HTTPError as exc:  # an answer came but could not be read: it may have been sent
            raise ProviderError(
                f"Meta's answer could not be read: {type(exc).__name__}",
                failure=Failure.RETRY,
                code="bad_response",
                ambiguous=True,
            ) from exc
        if response.status_code == 200:
            try:
                return SendResult(provider_message_id=response.json()["messages"][0]["id"])
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise ProviderError(  # a 200 means Meta took it: a resend may arrive twice
                    "Meta answered 200 without messages[0].id",
                    failure=Failure.RETRY,
                    code="bad_response",
                    ambiguous=True,
                ) from exc
        raise self._error(response)

    @staticmethod
    def _error(response: httpx.Response) -> ProviderError:
        code: int | None = None
        reason = f"HTTP {response.status_code}"
        try:
            error = response.json()["error"]
            code = int(error["code"])
            details = (error.get("error_data") or {}).get("details")
            title = TITLES.get(code) or error.get("message") or reason
            reason = f"{title}" + (f" ({details})" if details else "")
            if error.get("fbtrace_id"):
                reason += f" [fbtrace_id {error['fbtrace_id']}]"
        except (ValueError, KeyError, TypeError):
            pass
        retry_after: float | None = None
        if "retry-after" in response.headers:
            try:
                retry_after = float(response.headers["retry-after"])
            except ValueError:
                retry_after = None
        return ProviderError(
            reason,
            failure=classify(code, response.status_code),
            code=str(code) if code is not None else str(response.status_code),
            retry_after=retry_after,
            http_status=response.status_code,
        )

    async def lookup(self, channel: ChannelConfig, message: Outbound) -> str | None:
        raise LookupUnsupported("the Cloud API keeps no client reference for a sent message")


class MetaTemplates:
    """A WABA's message templates (``/{WABA-ID}/message_templates`` and ``/{TEMPLATE-ID}``):
    create, list, edit, delete. Refusals raise ``ProviderError`` with Meta's code and message
    (``error_user_msg`` when Meta gives one: it says what to fix)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    @staticmethod
    def _where(channel: ChannelConfig) -> tuple[str, dict[str, str], str]:
        version = channel.settings.get("api_version") or DEFAULT_API_VERSION
        waba_id = channel.settings.get("waba_id")
        token = channel.credentials.get("access_token")
        if not waba_id or not token:
            raise ProviderError(
                "the Meta channel has no settings.waba_id (WhatsApp Business Account id) or access_token: "
                "PATCH the channel",
                failure=Failure.PERMANENT,
                code="config",
            )
        base = f"{channel.base_url.rstrip('/')}/{version}"
        return base, {"Authorization": f"Bearer {token}"}, waba_id

    async def _call(self, method: str, url: str, headers: dict[str, str], **kw: Any) -> Any:
        try:
            response = await self._http.request(method, url, headers=headers, **kw)
        except httpx.HTTPError as exc:
            raise ProviderError(
                f"could not reach Meta: {type(exc).__name__}", failure=Failure.RETRY, code="connection"
            ) from exc
        if response.status_code == 200:
            return response.json()
        error = MetaCloudProvider._error(response)
        try:
            user_msg = response.json()["error"].get("error_user_msg")
        except (ValueError, KeyError, TypeError, AttributeError):
            user_msg = None
        if user_msg:
            error.reason = f"{user_msg} ({error.reason})"
        raise error

    async def create(self, channel: ChannelConfig, body: dict[str, Any]) -> dict[str, Any]:
        """``{"id", "status", "category"}`` of the new template (status PENDING while in review)."""
        base, headers, waba = self._where(channel)
        return dict(await self._call("POST", f"{base}/{waba}/message_templates", headers, json=body))

    async def list_all(self, channel: ChannelConfig) -> list[dict[str, Any]]:
        """Every template of the WABA, following ``paging.next``."""
        base, headers, waba = self._where(channel)
        url: str | None = f"{base}/{waba}/message_templates"
        params: dict[str, Any] | None = {
            "limit": 100,
            "fields": "id,name,language,status,category,components,rejected_reason,parameter_format",
        }
        items: list[dict[str, Any]] = []
        while url and len(items) < 10_000:
            page = await self._call("GET", url, headers, params=params)
            items.extend(page.get("data") or [])
            url, params = (page.get("paging") or {}).get("next"), None
        return items

    async def edit(self, channel: ChannelConfig, template_id: str, body: dict[str, Any]) -> None:
        base, headers, _ = self._where(channel)
        await self._call("POST", f"{base}/{template_id}", headers, json=body)

    async def delete(self, channel: ChannelConfig, name: str, template_id: str | None) -> None:
        base, headers, waba = self._where(channel)
        params = {"name": name, **({"hsm_id": template_id} if template_id else {})}
        await self._call("DELETE", f"{base}/{waba}/message_templates", headers, params=params)
