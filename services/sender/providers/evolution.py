"""Evolution API (v2, Baileys) adapter: ``POST /message/send…/{instance}`` with header ``apikey``.

Contract: ``../shared/contracts/README.md`` §4 (Evolution v2.3.6 source). Evolution answers 201
with the stored message; ``key.id`` is the id its ``messages.update`` webhooks carry.

Kinds: text → ``sendText``; image/document/video/audio by link → ``sendMedia`` (``mediatype``,
``media`` = the link). Baileys speaks WhatsApp Web's protocol, so there are no Meta templates
(→ ``unsupported_kind``) and WhatsApp does not render interactive buttons or lists sent by
unofficial clients: they are sent as numbered text (``SendResult.degraded``).
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

NAME = "Evolution API"


def classify_evolution_error(
    status: int, body: Any, headers: Mapping[str, str] | None = None, *, instance: str = ""
) -> ProviderError:
    """An Evolution error answer (``{"status", "error", "response": {"message": …}}``) as a failure.

    - 400 with ``response.message[].exists == false``: the number is not on WhatsApp → permanent
    - 404: the instance does not exist → permanent (fix the channel's ``instance``)
    - 400/422 otherwise: Evolution refused the request → permanent, with its message
    - 401/403: bad ``apikey`` → pause the channel
    - 500 ``Connection Closed``: the instance's WhatsApp session is down (``SessionDown``, retry:
      the sender requeues the message and pauses the channel until the instance is open again)
    - 429, 5xx (Evolution answers 500 while an instance reconnects) → retry
    """
    detail = gateway.error_detail(body, f"HTTP {status}")
    messages = body.get("response", {}).get("message") if isinstance(body, dict) else None
    if isinstance(body, dict) and not isinstance(body.get("response"), dict):
        messages = None
    if status == 400 and isinstance(messages, list):
        missing = [m for m in messages if isinstance(m, dict) and m.get("exists") is False]
        if missing:
            number = missing[0].get("number") or missing[0].get("jid") or "the recipient"
            return ProviderError(
                f"{number} is not a WhatsApp number (Evolution checked it before sending): "
                "correct the recipient",
                failure=Failure.PERMANENT,
                code="number_not_on_whatsapp",
                http_status=status,
            )
    if status == 404:
        return ProviderError(
            f"Evolution has no instance {instance!r} ({detail}): create it or fix the channel's "
            "'instance' setting",
            failure=Failure.PERMANENT,
            code="instance_not_found",
            http_status=status,
        )
    if status == 500 and "connection closed" in detail.lower():
        return gateway.SessionDown(
            f"{NAME} instance {instance!r} is not connected to WhatsApp ({detail}): scan its QR code "
            "if it does not reconnect by itself",
            failure=Failure.RETRY,
            code=str(status),
            http_status=status,
            state="disconnected",
        )
    return gateway.generic_http_error(NAME, status, detail, headers)


#: Baileys connection state → Herald's session state (services.ingest.normalise.evolution alike)
SESSION_STATES = {"open": "connected", "connecting": "connecting", "close": "disconnected"}


class EvolutionProvider:
    name = "evolution"

    def __init__(self, http: httpx.AsyncClient, store: MappingStore) -> None:
        self._http = http
        self._store = store  # unused: Evolution needs no mapping

    @staticmethod
    def request_for(instance: str, message: Outbound) -> tuple[str, dict[str, Any], str | None]:
        """(path, JSON body, degraded reason) for one message; raises for kinds it cannot send."""
        number = message.to.lstrip("+")
        content = message.content
        if isinstance(content, TextContent):
            return (
                f"/message/sendText/{instance}",
                {"number": number, "text": content.body, "linkPreview": content.preview_url},
                None,
            )
        if isinstance(content, MediaContent):
            body: dict[str, Any] = {
                "number": number,
                "mediatype": content.kind,
                "mimetype": gateway.media_mime_type(content),
                "media": content.link,
            }
            degraded = None
            if content.kind == "audio":
                if content.caption:
                    degraded = "WhatsApp audio carries no caption: the caption was dropped"
            elif content.caption:
                body["caption"] = content.caption
            if content.kind == "document":
                body["fileName"] = gateway.media_filename(content)
            return f"/message/sendMedia/{instance}", body, degraded
        if isinstance(content, ButtonsContent):
            return (
                f"/message/sendText/{instance}",
                {"number": number, "text": gateway.numbered_buttons(content)},
                gateway.DEGRADED_BUTTONS,
            )
        if isinstance(content, ListContent):
            return (
                f"/message/sendText/{instance}",
                {"number": number, "text": gateway.numbered_list(content)},
                gateway.DEGRADED_LIST,
            )
        if isinstance(content, TemplateContent):
            raise gateway.unsupported(
                NAME,
                "template",
                "a Baileys instance has no Meta templates; send it through a meta channel, or send "
                "text while the recipient's 24-hour window is open",
            )
        raise gateway.unsupported(NAME, getattr(content, "kind", "?"), "unknown message kind")

    async def send(self, channel: ChannelConfig, message: Outbound) -> SendResult:
        instance = channel.settings.get("instance") or ""
        if not instance:
            raise ProviderError(
                "the channel has no Evolution 'instance' setting: set it",
                failure=Failure.PAUSE_CHANNEL,
                code="channel_misconfigured",
            )
        path, body, degraded = self.request_for(instance, message)
        url = channel.base_url.rstrip("/") + path
        response = await gateway.call(
            NAME,
            self._http,
            "POST",
            url,
            json=body,
            headers={"apikey": channel.credentials.get("api_key", "")},
        )
        payload = gateway.json_body(response)
        if response.status_code not in (200, 201):
            raise classify_evolution_error(response.status_code, payload, response.headers, instance=instance)
        message_id = (payload or {}).get("key", {}).get("id") if isinstance(payload, dict) else None
        if not message_id:
            raise ProviderError(
                f"Evolution answered {response.status_code} without key.id ({str(payload)[:200]}): "
                "the message may have been sent; check the instance before replaying",
                failure=Failure.PERMANENT,
                code="bad_response",
                http_status=response.status_code,
            )
        return SendResult(provider_message_id=str(message_id), degraded=degraded)

    async def lookup(self, channel: ChannelConfig, message: Outbound) -> str | None:
        raise LookupUnsupported("Evolution keeps no client reference for a sent message")

    # --- the session (services.sender.sessions) ------------------------------------------

    async def _instance_get(self, channel: ChannelConfig, path: str) -> tuple[str, httpx.Response]:
        instance = channel.settings.get("instance") or ""
        response = await gateway.call(
            NAME,
            self._http,
            "GET",
            f"{channel.base_url.rstrip('/')}{path}/{instance}",
            headers={"apikey": channel.credentials.get("api_key", "")},
        )
        return instance, response

    async def session_state(self, channel: ChannelConfig) -> tuple[str, str]:
        """(Herald's state, Baileys' state) from ``GET /instance/connectionState/{instance}``
        (``{"instance": {"instanceName", "state"}}``); an instance Evolution does not have (404)
        is disconnected. Raises ``ProviderError`` when Evolution cannot tell."""
        instance, response = await self._instance_get(channel, "/instance/connectionState")
        payload = gateway.json_body(response)
        if response.status_code == 404:
            return "disconnected", "not_found"
        if response.status_code != 200 or not isinstance(payload, dict):
            raise classify_evolution_error(response.status_code, payload, response.headers, instance=instance)
        info = payload.get("instance") if isinstance(payload.get("instance"), dict) else payload
        state = str(info.get("state") or "").lower()
        return SESSION_STATES.get(state, "disconnected"), state or "unknown"

    async def session_qr(self, channel: ChannelConfig) -> str | None:
        """The QR code to scan as a PNG data URL from ``GET /instance/connect/{instance}``
        (``{"pairingCode", "code", "base64", "count"}``), or None (the instance is connected)."""
        _, response = await self._instance_get(channel, "/instance/connect")
        payload = gateway.json_body(response)
        if response.status_code != 200 or not isinstance(payload, dict):
            return None
        image = payload.get("base64")
        if not isinstance(image, str) or not image:
            return None
        return image if image.startswith("data:") else gateway.data_url("image/png", image)
