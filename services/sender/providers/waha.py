"""WAHA (WhatsApp HTTP API) adapter: ``POST /api/send…`` with header ``X-Api-Key``.

Contract: ``../shared/contracts/waha/waha-openapi-v2024.9.json``. The session travels in the body,
the recipient as ``chatId`` = ``<digits>@c.us``; WAHA answers 201 with the message.

Kinds: text → ``sendText``; image → ``sendImage``; document → ``sendFile``; video → ``sendVideo``;
audio → ``sendVoice`` when it is OGG/Opus (a voice note, WhatsApp's only playable audio from
WhatsApp Web), else ``sendFile`` (degraded). WAHA 2024.9 has no endpoint for templates
(→ ``unsupported_kind``) nor for buttons or lists (→ numbered text, degraded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from services.sender.providers import gateway
from services.sender.providers.base import (
    ChannelConfig,
    Failure,
    LookupUnsupported,
    MappingStore,
    Outbound,
    ProviderError,
    SendResult,
)
from shared.events import ButtonsContent, ListContent, MediaContent, TemplateContent, TextContent

NAME = "WAHA"
DEFAULT_SESSION = "default"
VOICE_MIME = "audio/ogg; codecs=opus"
#: session states that come back by themselves: retry; the others need an operator
_TRANSIENT_SESSION_STATES = frozenset({"STARTING"})
#: WAHA's session status → Herald's session state (services.ingest.normalise.waha maps alike)
SESSION_STATES = {
    "WORKING": "connected",
    "STARTING": "connecting",
    "SCAN_QR_CODE": "qr",
    "PASSKEY_REQUIRED": "qr",
    "PASSKEY_CONFIRMATION_REQUIRED": "qr",
    "STOPPED": "disconnected",
    "FAILED": "disconnected",
}


def classify_waha_error(
    status: int, body: Any, headers: Mapping[str, str] | None = None, *, session: str = ""
) -> ProviderError:
    """A WAHA error answer (NestJS: ``{"statusCode", "message", "error"}``) as a failure.

    - 404: no such session → permanent (start the session or fix the channel's ``session``)
    - 422 with ``status``: the session is not WORKING (``SessionDown``: the sender requeues the
      message and pauses the channel until the session is back). STARTING → retry; SCAN_QR_CODE,
      STOPPED, FAILED → pause the channel (someone must scan the QR code or restart it)
    - 400/422 otherwise: WAHA refused the request (bad chatId, bad file) → permanent
    - 501: the engine or edition cannot do this → permanent
    - 401/403: bad ``X-Api-Key`` → pause the channel; 429, 5xx → retry
    """
    detail = gateway.error_detail(body, f"HTTP {status}")
    if status == 404:
        return ProviderError(
            f"WAHA has no session {session!r} ({detail}): start it or fix the channel's 'session' setting",
            failure=Failure.PERMANENT,
            code="session_not_found",
            http_status=status,
        )
    if status == 422 and isinstance(body, dict) and body.get("status"):
        state = str(body["status"])
        if state in _TRANSIENT_SESSION_STATES:
            return gateway.SessionDown(
                f"WAHA session {session!r} is {state}, not WORKING",
                failure=Failure.RETRY,
                code=f"session_{state.lower()}",
                retry_after=gateway.parse_retry_after((headers or {}).get("retry-after")) or 5.0,
                http_status=status,
                state=SESSION_STATES.get(state, "connecting"),
            )
        return gateway.SessionDown(
            f"WAHA session {session!r} is {state}, not WORKING: "
            + ("scan its QR code" if state == "SCAN_QR_CODE" else "restart the session")
            + " and resume the channel",
            failure=Failure.PAUSE_CHANNEL,
            code=f"session_{state.lower()}",
            http_status=status,
            state=SESSION_STATES.get(state, "disconnected"),
        )
    if status == 501:
        return ProviderError(
            f"this WAHA engine or edition cannot send it ({detail}): use another engine/edition "
            "or another message kind",
            failure=Failure.PERMANENT,
            code="not_implemented",
            http_status=status,
        )
    return gateway.generic_http_error(NAME, status, detail, headers)


def waha_message_id(payload: Any, chat_id: str) -> str | None:
    """The serialized id WAHA's ``message.ack`` webhooks carry (``true_<chatId>_<id>``).

    The 2024.9 spec answers a ``WAMessage`` with a string ``id``; engines differ in practice:
    WEBJS gives ``id`` as an object with ``_serialized``, NOWEB a Baileys ``key``.
    """
    if not isinstance(payload, dict):
        return None
    value = payload.get("id")
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and value.get("_serialized"):
        return str(value["_serialized"])
    key = payload.get("key")
    if isinstance(key, dict) and key.get("id"):
        return f"true_{chat_id}_{key['id']}"
    return None


class WahaProvider:
    name = "waha"

    def __init__(self, http: httpx.AsyncClient, store: MappingStore) -> None:
        self._http = http
        self._store = store  # unused: WAHA needs no mapping

    @staticmethod
    def request_for(session: str, message: Outbound) -> tuple[str, dict[str, Any], str | None]:
        """(path, JSON body, degraded reason) for one message; raises for kinds it cannot send."""
        chat_id = f"{message.to.lstrip('+')}@c.us"
        base = {"session": session, "chatId": chat_id}
        content = message.content
        if isinstance(content, TextContent):
            return "/api/sendText", {**base, "text": content.body}, None
        if isinstance(content, MediaContent):
            mime = gateway.media_mime_type(content)
            file: dict[str, Any] = {"mimetype": mime, "url": content.link}
            caption = {"caption": content.caption} if content.caption else {}
            if content.kind == "image":
                if content.filename:
                    file["filename"] = content.filename
                return "/api/sendImage", {**base, "file": file, **caption}, None
            if content.kind == "video":
                file["filename"] = gateway.media_filename(content)
                return "/api/sendVideo", {**base, "file": file, **caption}, None
            if content.kind == "audio":
                if mime.split(";")[0].strip() in ("audio/ogg", "audio/opus"):
                    degraded = (
                        "WhatsApp voice notes carry no caption: the caption was dropped" if caption else None
                    )
                    return (
                        "/api/sendVoice",
                        {**base, "file": {"mimetype": VOICE_MIME, "url": content.link}},
                        degraded,
                    )
                file["filename"] = gateway.media_filename(content)
                return (
                    "/api/sendFile",
                    {**base, "file": file, **caption},
                    f"audio in {mime} sent as a file: WAHA sends voice notes only as OGG/Opus",
                )
            file["filename"] = gateway.media_filename(content)
            return "/api/sendFile", {**base, "file": file, **caption}, None
        if isinstance(content, ButtonsContent):
            return (
                "/api/sendText",
                {**base, "text": gateway.numbered_buttons(content)},
                gateway.DEGRADED_BUTTONS,
            )
        if isinstance(content, ListContent):
            return "/api/sendText", {**base, "text": gateway.numbered_list(content)}, gateway.DEGRADED_LIST
        if isinstance(content, TemplateContent):
            raise gateway.unsupported(
                NAME,
                "template",
                "WAHA drives WhatsApp Web, which has no Meta templates; send it through a meta "
                "channel, or send text while the recipient's 24-hour window is open",
            )
        raise gateway.unsupported(NAME, getattr(content, "kind", "?"), "unknown message kind")

    async def send(self, channel: ChannelConfig, message: Outbound) -> SendResult:
        session = channel.settings.get("session") or DEFAULT_SESSION
        path, body, degraded = self.request_for(session, message)
        response = await gateway.call(
            NAME,
            self._http,
            "POST",
            channel.base_url.rstrip("/") + path,
            json=body,
            headers={"X-Api-Key": channel.credentials.get("api_key", "")},
        )
        payload = gateway.json_body(response)
        if response.status_code not in (200, 201):
            error = classify_waha_error(response.status_code, payload, response.headers, session=session)
            if response.status_code >= 500 and await self._not_on_whatsapp(channel, session, message.to):
                raise ProviderError(
                    f"{message.to} has no WhatsApp account (WAHA check-exists: numberExists false; "
                    f"the send failed with {error}): fix the number",
                    failure=Failure.PERMANENT,
                    code="not_on_whatsapp",
                    http_status=response.status_code,
                ) from error
            raise error
        message_id = waha_message_id(payload, body["chatId"])
        if not message_id:
            raise ProviderError(
                f"WAHA answered {response.status_code} without a message id ({str(payload)[:200]}): "
                "the message may have been sent; check the session before replaying",
                failure=Failure.PERMANENT,
                code="bad_response",
                http_status=response.status_code,
            )
        return SendResult(provider_message_id=message_id, degraded=degraded)

    async def _not_on_whatsapp(self, channel: ChannelConfig, session: str, to: str) -> bool:
        """After a server error: does the number have no WhatsApp account? WhatsApp Web answers a
        send to such a number with an engine error (500), which would otherwise be retried until
        it is a dead letter. Only a clear ``numberExists: false`` counts; any other answer keeps
        the original (retryable) error."""
        try:
            response = await self._http.get(
                channel.base_url.rstrip("/") + "/api/contacts/check-exists",
                params={"phone": to.lstrip("+"), "session": session},
                headers={"X-Api-Key": channel.credentials.get("api_key", "")},
            )
        except httpx.HTTPError:
            return False
        payload = gateway.json_body(response)
        return (
            response.status_code == 200 and isinstance(payload, dict) and payload.get("numberExists") is False
        )

    async def lookup(self, channel: ChannelConfig, message: Outbound) -> str | None:
        raise LookupUnsupported("WAHA keeps no client reference for a sent message")

    # --- the session (services.sender.sessions) ------------------------------------------

    def _session_get(self, channel: ChannelConfig, path: str, **kwargs: Any) -> Any:
        return gateway.call(
            NAME,
            self._http,
            "GET",
            channel.base_url.rstrip("/") + path,
            headers={"X-Api-Key": channel.credentials.get("api_key", ""), **kwargs.pop("headers", {})},
            **kwargs,
        )

    async def session_state(self, channel: ChannelConfig) -> tuple[str, str]:
        """(Herald's state, WAHA's status) from ``GET /api/sessions/{session}``; a session WAHA
        does not have (404) is disconnected. Raises ``ProviderError`` when WAHA cannot tell."""
        session = channel.settings.get("session") or DEFAULT_SESSION
        response = await self._session_get(channel, f"/api/sessions/{session}")
        payload = gateway.json_body(response)
        if response.status_code == 404:
            return "disconnected", "NOT_FOUND"
        if response.status_code != 200 or not isinstance(payload, dict):
            raise classify_waha_error(response.status_code, payload, response.headers, session=session)
        status = str(payload.get("status") or "").upper()
        return SESSION_STATES.get(status, "disconnected"), status or "UNKNOWN"

    async def session_qr(self, channel: ChannelConfig) -> str | None:
        """The QR code to scan as a PNG data URL (``GET /api/{session}/auth/qr?format=image``),
        or None when WAHA has none (the session is not waiting for a scan)."""
        session = channel.settings.get("session") or DEFAULT_SESSION
        response = await self._session_get(
            channel, f"/api/{session}/auth/qr", params={"format": "image"}, headers={"Accept": "image/png"}
        )
        if response.status_code != 200:
            return None
        kind = response.headers.get("content-type", "").split(";")[0].strip()
        if kind.startswith("image/"):
            return gateway.data_url(kind, response.content)
        payload = gateway.json_body(response)  # Base64File {mimetype, data}
        if isinstance(payload, dict) and payload.get("data"):
            return gateway.data_url(str(payload.get("mimetype") or "image/png"), str(payload["data"]))
        return None
